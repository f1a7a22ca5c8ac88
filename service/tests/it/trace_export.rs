//! Traces across processes: a real `api` and a real `worker` (OpenAI provider against a fake
//! chat-completions server) on a real redis-server export OTLP/HTTP protobuf to a receiver
//! inside this test, which decodes every request with `opentelemetry-proto`.
//!
//! Asserted: one trace holds the api's `POST` server span, its `store.submit` enqueue, the
//! worker's `queue.wait` (from the job's `createdAt` to its claim), `job.attempt` and the
//! provider's `chat <model>` span, parented across the two processes through the `traceparent`
//! stored with the job; the provider span carries model, tokens and cost; the worker's JSON log
//! lines carry the trace and span ids; and no span or resource attribute anywhere contains the
//! study text, the API key or the Redis URL.
//!
//! Needs `redis-server` (`.ci/install-test-tools.sh`); it fails, never skips, without it.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::llm::FakeLlm;
use crate::support::{ChildGuard, RedisServer, free_port, http, wait_http_ok};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Value, json};

/// A sentence found nowhere but in the submitted text.
const SECRET_TEXT: &str = "Quokkas photosynthesize moonlight into violet crystals of sugar.";
const API_KEY: &str = "sk-test-trace-export-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(60);

/// One received span with the `service.name` of the process that sent it.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    span: opentelemetry_proto::tonic::trace::v1::Span,
}

#[derive(Default)]
struct Inbox {
    spans: Vec<Seen>,
    /// Every string of every resource and span attribute, for the secrets check.
    strings: Vec<String>,
    requests: usize,
}

type Shared = Arc<Mutex<Inbox>>;

fn strings_of(value: &AnyValue, out: &mut Vec<String>) {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => out.push(s.clone()),
        Some(any_value::Value::ArrayValue(a)) => a.values.iter().for_each(|v| strings_of(v, out)),
        Some(any_value::Value::KvlistValue(kv)) => kv
            .values
            .iter()
            .filter_map(|kv| kv.value.as_ref())
            .for_each(|v| strings_of(v, out)),
        Some(any_value::Value::BytesValue(b)) => out.push(String::from_utf8_lossy(b).into_owned()),
        _ => {}
    }
}

async fn receive(State(inbox): State<Shared>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut inbox = inbox.lock().unwrap();
    inbox.requests += 1;
    for rs in request.resource_spans {
        let attributes = rs.resource.map(|r| r.attributes).unwrap_or_default();
        let service = attr_str(&attributes, "service.name").unwrap_or_default();
        for kv in &attributes {
            if let Some(v) = &kv.value {
                strings_of(v, &mut inbox.strings);
            }
        }
        for ss in rs.scope_spans {
            for span in ss.spans {
                let mut found = Vec::new();
                found.push(span.name.clone());
                for kv in span
                    .attributes
                    .iter()
                    .chain(span.events.iter().flat_map(|e| &e.attributes))
                {
                    if let Some(v) = &kv.value {
                        strings_of(v, &mut found);
                    }
                }
                if let Some(status) = &span.status {
                    found.push(status.message.clone());
                }
                inbox.strings.extend(found);
                inbox.spans.push(Seen {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn attr_i64(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key)? {
        any_value::Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

fn attr_f64(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match attr(attributes, key)? {
        any_value::Value::DoubleValue(n) => Some(*n),
        any_value::Value::IntValue(n) => Some(*n as f64),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of `trace` once it holds every name in `names`, or `None`.
fn trace_with(inbox: &Shared, trace: &[u8], names: &[&str]) -> Option<Vec<Seen>> {
    let inbox = inbox.lock().unwrap();
    let spans: Vec<Seen> = inbox
        .spans
        .iter()
        .filter(|s| s.span.trace_id == trace)
        .cloned()
        .collect();
    names
        .iter()
        .all(|n| spans.iter().any(|s| s.span.name == *n))
        .then_some(spans)
}

fn one<'a>(spans: &'a [Seen], name: &str, service: &str) -> &'a Seen {
    let found: Vec<&Seen> = spans.iter().filter(|s| s.span.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span expected: {found:#?}");
    assert_eq!(
        found[0].service, service,
        "`{name}` came from the wrong process"
    );
    found[0]
}

fn duration_ms(s: &Seen) -> f64 {
    (s.span
        .end_time_unix_nano
        .saturating_sub(s.span.start_time_unix_nano)) as f64
        / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_the_post_the_queue_wait_the_attempt_and_the_provider_call() {
    let started = Instant::now();
    let inbox: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(inbox.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let redis = RedisServer::start();
    let llm = FakeLlm::start().await;
    let env = [
        ("REDIS_URL", redis.url()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.clone()),
        // Export every 200 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        ("OPENAI_API_KEY", API_KEY.to_owned()),
        ("RATE_LIMIT_JOBS", "0".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let dir = std::env::temp_dir().join(format!("fc-trace-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spawn = |mode: &str, port: u16, extra: &[String]| {
        let log = std::fs::File::create(dir.join(format!("{mode}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_flashcard-service"));
        command
            .args([mode, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json"])
            .args(extra)
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("SENTRY_DSN")
            .env_remove("ADMIN_TOKEN")
            .stdout(log)
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        for (k, v) in &env {
            command.env(k, v);
        }
        ChildGuard(command.spawn().expect("start flashcard-service"))
    };
    let api_port = free_port();
    let worker_port = free_port();
    let _api = spawn("api", api_port, &[]);
    let mut worker_args = llm.provider_args();
    worker_args.extend(
        [
            "--price-input-per-1k",
            "0.5",
            "--price-output-per-1k",
            "1.5",
        ]
        .map(String::from),
    );
    let _worker = spawn("worker", worker_port, &worker_args);
    let base = format!("http://127.0.0.1:{api_port}");
    wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(30)).await;
    wait_http_ok(
        &format!("http://127.0.0.1:{worker_port}/healthz"),
        Duration::from_secs(30),
    )
    .await;

    let response = http()
        .post(format!("{base}/api/ai/generate-flashcards"))
        .json(&json!({
            "content": SECRET_TEXT, "subject": "biology", "topic": "quokkas",
            "userId": "tracer", "cardCount": 3,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned();

    // The job's status, with the store's timestamps.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let status: Value = http()
            .get(format!("{base}/api/job-status/{job_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "completed" {
            break status;
        }
        assert_ne!(status["status"], "failed", "{status}");
        assert!(Instant::now() < deadline, "job not completed: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The POST's trace, once both processes exported their part of it.
    let post_name = "POST /api/ai/generate-flashcards";
    let provider_name = "chat fake-model";
    let names = [
        post_name,
        "store.submit",
        "queue.wait",
        "job.attempt",
        provider_name,
        "store.finish",
    ];
    let deadline = Instant::now() + WAIT;
    let spans = loop {
        let trace = {
            let inbox = inbox.lock().unwrap();
            inbox
                .spans
                .iter()
                .find(|s| s.span.name == post_name)
                .map(|s| s.span.trace_id.clone())
        };
        if let Some(spans) = trace.and_then(|t| trace_with(&inbox, &t, &names)) {
            break spans;
        }
        if Instant::now() > deadline {
            let inbox = inbox.lock().unwrap();
            let seen: Vec<(String, String, String)> = inbox
                .spans
                .iter()
                .map(|s| {
                    (
                        s.service.clone(),
                        s.span.name.clone(),
                        hex(&s.span.trace_id),
                    )
                })
                .collect();
            panic!(
                "no trace with {names:?} within {WAIT:?} ({} export requests); spans: {seen:#?}",
                inbox.requests
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let trace_id = hex(&spans[0].span.trace_id);

    // Who is whose parent, across the two processes.
    let post = one(&spans, post_name, "flashcard-api");
    let submit = one(&spans, "store.submit", "flashcard-api");
    let wait = one(&spans, "queue.wait", "flashcard-worker");
    let attempt = one(&spans, "job.attempt", "flashcard-worker");
    let provider = one(&spans, provider_name, "flashcard-worker");
    let finish = one(&spans, "store.finish", "flashcard-worker");
    assert!(post.span.parent_span_id.is_empty(), "the POST is the root");
    assert_eq!(post.span.kind, SpanKind::Server as i32);
    for child in [submit, wait, attempt] {
        assert_eq!(
            child.span.parent_span_id, post.span.span_id,
            "`{}` is not a child of the POST",
            child.span.name
        );
    }
    for child in [provider, finish] {
        assert_eq!(
            child.span.parent_span_id, attempt.span.span_id,
            "`{}` is not a child of the attempt",
            child.span.name
        );
    }

    // What each span says.
    let a = &post.span.attributes;
    assert_eq!(
        attr_str(a, "http.route").as_deref(),
        Some("/api/ai/generate-flashcards")
    );
    assert_eq!(attr_str(a, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(attr_i64(a, "http.response.status_code"), Some(202), "{a:?}");
    let a = &submit.span.attributes;
    assert_eq!(submit.span.kind, SpanKind::Client as i32);
    assert_eq!(attr_str(a, "db.system.name").as_deref(), Some("redis"));
    assert_eq!(
        attr_str(a, "flashcards.store.script").as_deref(),
        Some("submit")
    );
    let a = &attempt.span.attributes;
    assert_eq!(attempt.span.kind, SpanKind::Consumer as i32);
    assert_eq!(
        attr_str(a, "flashcards.job.id").as_deref(),
        Some(job_id.as_str())
    );
    assert_eq!(attr_i64(a, "flashcards.job.attempt"), Some(1));
    assert_eq!(
        attr_str(a, "flashcards.job.outcome").as_deref(),
        Some("completed")
    );
    let a = &provider.span.attributes;
    assert_eq!(provider.span.kind, SpanKind::Client as i32);
    assert_eq!(
        attr_str(a, "gen_ai.request.model").as_deref(),
        Some("fake-model")
    );
    assert_eq!(
        attr_str(a, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    let input = attr_i64(a, "gen_ai.usage.input_tokens").unwrap_or(0);
    let output = attr_i64(a, "gen_ai.usage.output_tokens").unwrap_or(0);
    assert!(input > 0 && output > 0, "tokens {input} / {output}");
    let result = &status["result"];
    assert_eq!(input, result["usage"]["inputTokens"].as_i64().unwrap());
    assert_eq!(output, result["usage"]["outputTokens"].as_i64().unwrap());
    let cost = attr_f64(a, "flashcards.cost_usd").unwrap_or(0.0);
    let recorded = result["costMicros"].as_f64().unwrap() / 1e6;
    assert!(
        cost > 0.0 && (cost - recorded).abs() < 1e-9,
        "cost {cost} vs {recorded}"
    );
    assert_eq!(attr_i64(a, "flashcards.request.cards"), Some(3));

    // The queue wait spans createdAt -> startedAt of the store's record.
    let parse = |field: &str| {
        status[field]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond() as u64)
            .unwrap_or_else(|e| panic!("{field}: {e}"))
    };
    let (created, claimed) = (parse("createdAt"), parse("startedAt"));
    assert_eq!(wait.span.start_time_unix_nano / 1_000_000, created);
    assert_eq!(wait.span.end_time_unix_nano / 1_000_000, claimed);
    assert_eq!(
        attr_i64(&wait.span.attributes, "flashcards.queue.wait_ms"),
        Some((claimed - created) as i64)
    );
    // The attempt contains the provider call.
    assert!(attempt.span.start_time_unix_nano <= provider.span.start_time_unix_nano);
    assert!(attempt.span.end_time_unix_nano >= provider.span.end_time_unix_nano);

    // The worker's log lines of the attempt carry its trace and span ids.
    let logs = std::fs::read_to_string(dir.join("worker.log")).unwrap();
    let started_line: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "job started" && l["job"] == job_id.as_str())
        .unwrap_or_else(|| panic!("no `job started` line for {job_id}:\n{logs}"));
    assert_eq!(
        started_line["trace_id"],
        trace_id.as_str(),
        "{started_line}"
    );
    assert_eq!(
        started_line["span_id"],
        hex(&attempt.span.span_id).as_str(),
        "{started_line}"
    );

    // Nothing secret in any attribute of any span received.
    let inbox_guard = inbox.lock().unwrap();
    let redis_url = redis.url();
    let redis_port = format!(":{}", redis.port);
    for text in &inbox_guard.strings {
        for (needle, what) in [
            (SECRET_TEXT, "the study text"),
            ("Quokkas", "the study text"),
            (API_KEY, "the API key"),
            (redis_url.as_str(), "the Redis URL"),
            (redis_port.as_str(), "the Redis address"),
        ] {
            assert!(
                !text.contains(needle),
                "{what} in a span attribute: {text:?}"
            );
        }
    }
    let spans_total = inbox_guard.spans.len();
    drop(inbox_guard);
    let by_name: HashMap<String, (String, f64)> = spans
        .iter()
        .map(|s| (s.span.name.clone(), (s.service.clone(), duration_ms(s))))
        .collect();
    eprintln!(
        "trace {trace_id}: {} spans in the job's trace ({spans_total} received), {by_name:#?}; \
         took {:?}",
        spans.len(),
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
    receiver.abort();
}
