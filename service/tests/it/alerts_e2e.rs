//! End to end: the real service (api + worker on Redis), a real Prometheus scraping it with the
//! rules from `flashcard_monitoring`, and a real Alertmanager routing to a webhook receiver
//! inside this test.
//!
//! Jobs are enqueued with no worker running until `FlashcardQueueDepthHigh` fires and the webhook
//! receives it; then a worker drains the queue and the webhook receives the resolved notification.
//!
//! Needs `redis-server`, `prometheus` and `prometheus-alertmanager` (`.ci/install-alert-tools.sh`);
//! a missing tool fails the test. Every wait is bounded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

use crate::support::tools::{ScratchDir, spawn_tool};
use crate::support::{ChildGuard, RedisServer, free_port, http, wait_http_ok};
use flashcard_monitoring::{
    AlertThresholds, AlertTimings, RuleOptions, rule_groups_with, rules_file_yaml,
};

const PIPELINE: &str = "e2e";
const NAMESPACE: &str = "e2e-ns";
const ALERT: &str = "FlashcardQueueDepthHigh";
/// Bound of each wait for a notification (Prometheus scrapes a new target only after ~5 s).
const WAIT: Duration = Duration::from_secs(90);

const INSTALL_HINT: &str =
    "run .ci/install-alert-tools.sh (Debian packages prometheus, prometheus-alertmanager)";

/// Notifications received by the webhook, newest last.
type Inbox = Arc<Mutex<Vec<Value>>>;

async fn receive(State(inbox): State<Inbox>, Json(body): Json<Value>) -> &'static str {
    inbox.lock().unwrap().push(body);
    "ok"
}

/// The first alert named `ALERT` with `status` in any notification so far.
fn find_alert(inbox: &Inbox, status: &str) -> Option<(Value, Value)> {
    let notifications = inbox.lock().unwrap();
    notifications.iter().find_map(|n| {
        n["alerts"].as_array()?.iter().find_map(|a| {
            (a["labels"]["alertname"] == ALERT && a["status"] == status)
                .then(|| (n.clone(), a.clone()))
        })
    })
}

async fn wait_for_alert(inbox: &Inbox, status: &str, dir: &Path, what: &str) -> (Value, Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = find_alert(inbox, status) {
            return found;
        }
        if Instant::now() > deadline {
            let logs: String = ["prometheus.log", "alertmanager.log"]
                .iter()
                .map(|f| {
                    let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    format!("--- {f} (last lines, newest first)\n{}\n", tail.join("\n"))
                })
                .collect();
            panic!(
                "no {status} {ALERT} notification within {WAIT:?} ({what}); received: {:#?}\n{logs}",
                inbox.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts `flashcard-service <mode>` on `port` with `env` and waits for `/healthz`.
async fn start_service(mode: &str, port: u16, env: &[(&str, &str)]) -> ChildGuard {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flashcard-service"));
    command
        .args([mode, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "text"])
        .env("RUST_LOG", "warn")
        .env_remove("ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = ChildGuard(command.spawn().unwrap());
    wait_http_ok(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(30),
    )
    .await;
    child
}

/// Submits one job as the seed's curl loop does; expects 202.
async fn submit(base: &str, i: u32) {
    let user = format!("u-{i}");
    let response = http()
        .post(format!("{base}/api/ai/generate-flashcards"))
        .header("user-id", &user)
        .json(&serde_json::json!({
            "content": format!("test {i}: Photosynthesis is the process by which green plants \
                use sunlight to make glucose. Chlorophyll is the green pigment that absorbs light."),
            "subject": "s", "topic": "t", "userId": user,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "job {i} was not accepted");
}

async fn waiting_jobs(base: &str) -> u64 {
    let stats: Value = http()
        .get(format!("{base}/api/queue/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["stats"]["waiting"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_alert_fires_and_resolves_through_alertmanager() {
    let started = Instant::now();
    let dir = ScratchDir::new("fc-alerts-e2e");

    // Webhook receiver.
    let inbox: Inbox = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(inbox.clone());
    let hook = tokio::spawn(async move { axum::serve(listener, app).await });

    // Redis and the api (no worker yet).
    let redis = RedisServer::start();
    let service_env = [
        ("REDIS_URL", redis.url()),
        ("PIPELINE", PIPELINE.to_string()),
        ("RATE_LIMIT_JOBS", "0".to_string()),
        ("ALERT_QUEUE_DEPTH_HIGH", "50".to_string()),
    ];
    let env: Vec<(&str, &str)> = service_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api_port = free_port();
    let base = format!("http://127.0.0.1:{api_port}");
    let _api = start_service("api", api_port, &env).await;
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap();
    assert!(
        metrics.status().is_success(),
        "the api serves no /metrics ({}): the e2e alert test needs it",
        metrics.status()
    );
    let worker_port = free_port();

    // Rules from the Rust source: the shipped expressions and thresholds, with short `for:`s for
    // the queue-depth alerts and long ones for the rest (which must not fire here).
    let mut timings = AlertTimings::all(Duration::from_secs(3600));
    timings.queue_depth_high = Duration::from_secs(2);
    timings.queue_depth_critical = Duration::from_secs(2);
    let options = RuleOptions {
        timings,
        ..RuleOptions::default()
    };
    let groups = rule_groups_with(&AlertThresholds::default(), &options);
    std::fs::write(dir.0.join("rules.yaml"), rules_file_yaml(&groups)).unwrap();

    // Alertmanager: fast grouping, webhook with resolved notifications.
    let am_port = free_port();
    std::fs::write(
        dir.0.join("alertmanager.yaml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, pipeline]\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 4h\nreceivers:\n  - name: hook\n    \
             webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/hook\n        \
             send_resolved: true\n"
        ),
    )
    .unwrap();
    let _alertmanager = spawn_tool(
        &dir.0,
        "alertmanager",
        "prometheus-alertmanager",
        &[
            "--config.file=alertmanager.yaml".into(),
            "--storage.path=am-data".into(),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        INSTALL_HINT,
    );

    // Prometheus: scrape api and (later) worker every second, evaluate every second.
    let prom_port = free_port();
    std::fs::write(
        dir.0.join("prometheus.yaml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: \
             [rules.yaml]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - \
             targets: ['127.0.0.1:{am_port}']\nscrape_configs:\n  - job_name: flashcards\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}', '127.0.0.1:{worker_port}']\n     \
             \x20  labels: {{namespace: {NAMESPACE}}}\n",
            api_port
        ),
    )
    .unwrap();
    let _prometheus = spawn_tool(
        &dir.0,
        "prometheus",
        "prometheus",
        &[
            "--config.file=prometheus.yaml".into(),
            "--storage.tsdb.path=prom-data".into(),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        INSTALL_HINT,
    );
    wait_http_ok(
        &format!("http://127.0.0.1:{am_port}/-/ready"),
        Duration::from_secs(30),
    )
    .await;
    wait_http_ok(
        &format!("http://127.0.0.1:{prom_port}/-/ready"),
        Duration::from_secs(30),
    )
    .await;

    // 60 jobs, one user each (the seed's loop), with no worker to take them.
    for i in 1..=60 {
        submit(&base, i).await;
    }
    assert_eq!(waiting_jobs(&base).await, 60);
    let enqueued = started.elapsed();

    let (notification, alert) = wait_for_alert(&inbox, "firing", &dir.0, "queue at 60").await;
    let fired = started.elapsed();
    assert_eq!(alert["labels"]["pipeline"], PIPELINE);
    assert_eq!(alert["labels"]["namespace"], NAMESPACE);
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(notification["receiver"], "hook");
    let description = alert["annotations"]["description"].as_str().unwrap_or("");
    assert!(
        description.contains("has 60 waiting jobs, more than 50"),
        "{description}"
    );
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or("")
            .ends_with("RUNBOOK.md#flashcardqueuedepthhigh")
    );
    assert!(
        find_alert(&inbox, "resolved").is_none(),
        "resolved before any worker ran"
    );
    // Only the queue-depth-high alert may have fired (the others have a 1h `for:` or no cause).
    for n in inbox.lock().unwrap().iter() {
        for a in n["alerts"].as_array().into_iter().flatten() {
            assert_eq!(a["labels"]["alertname"], ALERT, "unexpected alert {a}");
        }
    }

    // A worker drains the queue; the alert resolves.
    let worker = start_service("worker", worker_port, &env).await;
    let deadline = Instant::now() + WAIT;
    while waiting_jobs(&base).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the worker did not drain the queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = started.elapsed();
    let (_, resolved) = wait_for_alert(&inbox, "resolved", &dir.0, "queue drained").await;
    let resolved_at = started.elapsed();
    assert_eq!(resolved["labels"]["pipeline"], PIPELINE);
    assert!(
        !resolved["endsAt"]
            .as_str()
            .unwrap_or("")
            .starts_with("0001")
    );

    eprintln!(
        "alerts e2e: enqueued at {enqueued:?}, firing notification at {fired:?}, queue drained at \
         {drained:?}, resolved notification at {resolved_at:?}"
    );
    drop(worker);
    hook.abort();
}
