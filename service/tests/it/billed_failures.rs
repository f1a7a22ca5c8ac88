//! Spend is never hidden: a provider that bills but returns nothing usable (empty content after
//! reasoning, a reply cut off at the token limit, a refusal, text that is not JSON), a call that
//! times out after it was sent, a reply cut midway and a call cancelled by shutdown all count
//! against the budget, with real `api` and `worker` processes on a real `redis-server` and a
//! fake OpenAI-compatible provider that keeps its own bill.
//!
//! Each case runs the drill: budget $0.20, $0.05 per 1K input and $0.01 per 1K output
//! tokens, jobs of 10 cards, one worker. The promise checked: the spend counted is at least the
//! provider's bill minus one job's reservation; once the bill passes the limit the kill-switch
//! is on and a new POST gets `429 BUDGET_LIMIT_EXCEEDED`; every job ends, each with its code; no
//! reservation is left behind. Run with `--nocapture` for the measured table.

use std::time::{Duration, Instant};

use crate::support::llm::{FakeLlm, ReplyKind};
use crate::support::{RedisServer, Service, http};
use flashcard_core::budget::{Prices, usd_to_micros};
use flashcard_core::job::{JobRequest, input_bytes};
use flashcard_core::keyspace::PipelineId;
use flashcard_provider::Provider;
use flashcard_provider::openai::{OpenAiConfig, OpenAiProvider};
use flashcard_store::Store;
use flashcard_store::redis::RedisStore;
use serde_json::{Value, json};

const PRICE_IN: f64 = 0.05;
const PRICE_OUT: f64 = 0.01;
const LIMIT_USD: f64 = 0.20;
const CARDS: u32 = 10;
const JOBS: usize = 60;
const ADMIN_TOKEN: &str = "billed-failures-admin";
const CONTENT: &str = "Photosynthesis is the process by which green plants use sunlight to \
synthesize glucose from carbon dioxide and water. Chlorophyll is the green pigment that absorbs \
light energy.";

/// One job's reservation under these prices: the bound the worker settles a call of unknown
/// cost at, and the most the budget may be overshot by.
fn reservation() -> u64 {
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        model: "fake-model".into(),
        api_key: None,
        timeout: Duration::from_secs(1),
        reasoning_effort: None,
        reasoning_tokens: 0,
    })
    .unwrap();
    let prices = Prices {
        input_per_1k: PRICE_IN,
        output_per_1k: PRICE_OUT,
    };
    let request = JobRequest {
        content: CONTENT.into(),
        subject: "biology".into(),
        topic: "plants".into(),
        user_id: "u".into(),
        card_count: CARDS,
    };
    prices
        .pricing(provider.token_bounds())
        .reservation(input_bytes(&request), CARDS)
}

fn pipeline() -> PipelineId {
    PipelineId::new(Some("billing"), "drill").unwrap()
}

async fn start(mode: &str, redis: &RedisServer, llm: &FakeLlm, extra: &[&str]) -> Service {
    let url = redis.url();
    let (price_in, price_out, limit) = (
        PRICE_IN.to_string(),
        PRICE_OUT.to_string(),
        LIMIT_USD.to_string(),
    );
    let mut args: Vec<String> = [
        "--redis-url",
        url.as_str(),
        "--pipeline",
        "drill",
        "--pipeline-namespace",
        "billing",
        "--rate-limit-jobs",
        "0",
        "--price-input-per-1k",
        price_in.as_str(),
        "--price-output-per-1k",
        price_out.as_str(),
        "--budget-limit-usd",
        limit.as_str(),
        "--backoff-ms",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(llm.provider_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Service::start(mode, &args, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await
}

async fn budget_status(api: &Service) -> Value {
    let response = http()
        .get(api.url("/api/admin/budget/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn job_body(n: usize) -> Value {
    json!({"content": CONTENT, "subject": "biology", "topic": "plants",
        "userId": format!("student-{n}"), "cardCount": CARDS})
}

/// What one drill measured.
struct Drill {
    calls: u64,
    bill_micros: f64,
    counted_micros: u64,
    at_bound_calls: u64,
    kill_switch: bool,
    codes: Vec<String>,
    took: Duration,
}

/// Submits [`JOBS`] jobs against a provider answering `kind`, waits until every one has ended
/// (at most 90 s), and checks the promise. A failure worth retrying runs with one attempt per
/// job, so a job that meets it ends with its code rather than with the budget's: the budget
/// covers about two jobs.
async fn drill(kind: ReplyKind, expected_code: &str, retried: bool) -> Drill {
    let redis = RedisServer::start();
    let llm = FakeLlm::start().await;
    llm.set_reply(kind);
    // A real provider's replies use about a third of the output bound.
    llm.set_usage_percent(35);
    // Attempts are fixed when a job is submitted: the api's flag decides.
    let attempts: &[&str] = if retried {
        &["--max-attempts", "1"]
    } else {
        &[]
    };
    let api = start("api", &redis, &llm, attempts).await;
    // The whole backlog is queued before the worker starts, as in the drill.
    let mut ids = Vec::new();
    for n in 0..JOBS {
        let response = api.post_job(job_body(n)).await.unwrap();
        assert_eq!(response.status(), 202);
        ids.push(
            response.json::<Value>().await.unwrap()["jobId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let worker_args = [
        "--worker-concurrency",
        "4",
        "--provider-timeout-seconds",
        "1",
    ];
    let started = Instant::now();
    let _worker = start("worker", &redis, &llm, &worker_args).await;
    let mut codes = Vec::new();
    for id in &ids {
        let remaining = Duration::from_secs(90).saturating_sub(started.elapsed());
        let job = api.wait_finished(id, remaining).await;
        assert_eq!(
            job["status"], "failed",
            "no usable card was ever returned: {job}"
        );
        let code = job["code"].as_str().unwrap_or("").to_owned();
        assert!(
            code == expected_code || code == "BUDGET_LIMIT_EXCEEDED",
            "job {id} failed with code {code:?}, expected {expected_code}: {job}"
        );
        codes.push(code);
    }
    let took = started.elapsed();
    assert!(
        codes.iter().any(|c| c == expected_code),
        "some job ran into the provider's failure: {codes:?}"
    );

    let reserve = reservation();
    let prices = (PRICE_IN, PRICE_OUT);
    let bill = llm.bill_micros(prices.0, prices.1);
    let status = budget_status(&api).await;
    let counted = usd_to_micros(status["budget"]["spentUsd"].as_f64().unwrap());
    let at_bound_calls = status["budget"]["settledAtBoundCalls"].as_u64().unwrap();
    assert!(
        counted as f64 >= bill - reserve as f64,
        "{kind:?}: counted {counted} µ$ hides the bill {bill:.0} µ$ (reservation {reserve})"
    );
    // The budget cannot cover another job (it covers about two): the stop is on, whether the
    // bill passed the limit or the next reservation could not fit.
    let kill_switch = status["killSwitch"]["enabled"] == true;
    assert!(
        kill_switch,
        "{kind:?}: the budget is spent, kill-switch off: {status}"
    );
    assert_eq!(status["killSwitch"]["setBy"], "budget", "{status}");
    let refused = api.post_job(job_body(999)).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "BUDGET_LIMIT_EXCEEDED");
    assert!(
        counted <= usd_to_micros(LIMIT_USD) + reserve,
        "{kind:?}: overshoot beyond one reservation ({counted} µ$)"
    );
    assert_eq!(
        status["budget"]["reservedUsd"].as_f64(),
        Some(0.0),
        "no reservation left behind: {status}"
    );
    // The store's figures, as the operator reads them, are the same.
    let store = RedisStore::connect(&redis.url(), &pipeline())
        .await
        .unwrap();
    let state = store.budget_state().await.unwrap();
    assert_eq!(state.spend.spent_micros, counted);
    assert_eq!(state.spend.bound_calls, at_bound_calls);
    Drill {
        calls: llm.calls(),
        bill_micros: bill,
        counted_micros: counted,
        at_bound_calls,
        kill_switch,
        codes,
        took,
    }
}

fn report(kind: &str, d: &Drill) {
    let terminal = d.codes.len();
    println!(
        "| {kind} | {} | ${:.4} | ${:.4} | {} | {} | {terminal} of {terminal} terminal in {:.1} s |",
        d.calls,
        d.bill_micros / 1e6,
        d.counted_micros as f64 / 1e6,
        d.at_bound_calls,
        if d.kill_switch { "on" } else { "off" },
        d.took.as_secs_f64(),
    );
}

#[tokio::test]
async fn empty_content_after_reasoning_is_counted_and_fails_truncated() {
    let d = drill(ReplyKind::EmptyAfterReasoning, "OUTPUT_TRUNCATED", false).await;
    assert_eq!(d.at_bound_calls, 0, "usage was reported");
    report("empty content (reasoning)", &d);
}

#[tokio::test]
async fn truncated_json_is_counted_and_fails_truncated() {
    let d = drill(ReplyKind::Truncated, "OUTPUT_TRUNCATED", false).await;
    assert_eq!(d.at_bound_calls, 0);
    report("truncated (`length`)", &d);
}

#[tokio::test]
async fn a_refusal_is_counted_and_fails_refused() {
    let d = drill(ReplyKind::Refusal, "PROVIDER_REFUSED", false).await;
    assert_eq!(d.at_bound_calls, 0);
    report("refusal", &d);
}

#[tokio::test]
async fn text_that_is_not_json_is_counted_and_fails_as_bad_output() {
    let d = drill(ReplyKind::NotJson, "PROVIDER_BAD_OUTPUT", true).await;
    assert_eq!(d.at_bound_calls, 0);
    report("not JSON", &d);
}

#[tokio::test]
async fn a_timeout_after_the_request_was_sent_settles_the_reservation() {
    let d = drill(ReplyKind::Hang, "PROVIDER_UNAVAILABLE", true).await;
    assert!(
        d.at_bound_calls > 0,
        "timed-out calls are settled at the bound"
    );
    assert_eq!(
        d.counted_micros,
        d.at_bound_calls * reservation(),
        "each timed-out call counts its whole reservation"
    );
    report("timeout after send", &d);
}

#[tokio::test]
async fn a_reply_cut_midway_settles_the_reservation() {
    let d = drill(ReplyKind::CutMidway, "PROVIDER_UNAVAILABLE", true).await;
    assert!(d.at_bound_calls > 0);
    assert_eq!(d.counted_micros, d.at_bound_calls * reservation());
    report("cut mid-reply", &d);
}

/// A call cancelled because the shutdown grace ran out may have been billed: the release
/// settles the job's reservation, and the job waits for another worker with its attempt intact.
#[tokio::test]
async fn a_call_cancelled_by_shutdown_settles_the_reservation() {
    let redis = RedisServer::start();
    let llm = FakeLlm::start().await;
    llm.set_reply(ReplyKind::Hang);
    let api = start("api", &redis, &llm, &[]).await;
    let mut worker = start(
        "worker",
        &redis,
        &llm,
        &[
            "--provider-timeout-seconds",
            "60",
            "--shutdown-grace-seconds",
            "0",
        ],
    )
    .await;
    let response = api.post_job(job_body(0)).await.unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while llm.in_flight() == 0 {
        assert!(Instant::now() < deadline, "the call never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = worker.child.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while worker.child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the worker did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = budget_status(&api).await;
    assert_eq!(
        usd_to_micros(status["budget"]["spentUsd"].as_f64().unwrap()),
        reservation(),
        "the cancelled call counts its reservation: {status}"
    );
    assert_eq!(status["budget"]["settledAtBoundCalls"], 1);
    assert_eq!(status["budget"]["reservedUsd"].as_f64(), Some(0.0));
    let job = api.get_json(&format!("/api/job-status/{id}")).await;
    assert_eq!(job["status"], "waiting", "given back: {job}");
    assert_eq!(job["attemptsMade"], 0, "a released attempt does not count");
}
