//! The Grafana dashboard (`alerts/grafana-dashboard.json`) against a real Prometheus: every
//! query of every panel, and the `pipeline` variable's query, run through Prometheus' query API
//! while it scrapes a real `api` and `worker` (on a real redis-server) that have run jobs.
//!
//! Each query must be valid PromQL (Prometheus answers `success`, not `bad_data`), and each
//! query over the service's metrics must return series. The queries over the operator's metrics
//! (workers desired / current / max, reconciles) need a running operator, which needs a
//! Kubernetes API server: they are checked for validity here, and the test names them so a new
//! service query cannot hide among them.
//!
//! Needs `redis-server` and `prometheus` (`.ci/install-test-tools.sh`); a missing tool fails the
//! test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::tools::{ScratchDir, spawn_tool};
use crate::support::{ChildGuard, RedisServer, free_port, http, wait_http_ok};
use flashcard_core::metric_names as names;
use serde_json::Value;

const PIPELINE: &str = "dash";
const WAIT: Duration = Duration::from_secs(90);

const INSTALL_HINT: &str = "run .ci/install-alert-tools.sh (prometheus)";

async fn start_service(mode: &str, port: u16, redis: &str) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_flashcard-service"))
        .args([mode, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "text", "--rate-limit-jobs", "0"])
        .env("REDIS_URL", redis)
        .env("PIPELINE", PIPELINE)
        .env("RUST_LOG", "warn")
        .env_remove("ADMIN_TOKEN")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let child = ChildGuard(child);
    wait_http_ok(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(30),
    )
    .await;
    child
}

/// A panel query as Grafana would send it: its variables filled in.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$pipeline", PIPELINE)
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs an instant query; returns (status, errorType/error, number of series).
async fn query(prometheus: &str, expr: &str) -> (String, String, usize) {
    let response = http()
        .get(format!("{prometheus}/api/v1/query?query={}", encode(expr)))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let series = body["data"]["result"].as_array().map_or(0, Vec::len);
    (
        body["status"].as_str().unwrap_or("no status").to_owned(),
        format!("{} {}", body["errorType"], body["error"]),
        series,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_is_valid_promql_and_returns_series() {
    let started = Instant::now();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../alerts/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut targets: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            targets.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    assert!(targets.len() >= 15, "{} queries only", targets.len());

    let dir = ScratchDir::new("fc-dash");
    let redis = RedisServer::start();
    let api_port = free_port();
    let worker_port = free_port();
    let _api = start_service("api", api_port, &redis.url()).await;
    let _worker = start_service("worker", worker_port, &redis.url()).await;
    let base = format!("http://127.0.0.1:{api_port}");

    let prom_port = free_port();
    std::fs::write(
        dir.0.join("prometheus.yaml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - \
             job_name: flashcards\n    static_configs:\n      - targets: ['127.0.0.1:{api_port}', \
             '127.0.0.1:{worker_port}']\n"
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
        ],
        INSTALL_HINT,
    );
    let prometheus = format!("http://127.0.0.1:{prom_port}");
    wait_http_ok(&format!("{prometheus}/-/ready"), Duration::from_secs(30)).await;

    // Jobs, and an SSE follower of one, so every service metric has samples.
    for i in 0..10 {
        let response = http()
            .post(format!("{base}/api/ai/generate-flashcards"))
            .json(&serde_json::json!({
                "content": format!("Mitochondria are organelles that make ATP. Test {i}."),
                "subject": "biology", "topic": "cells", "userId": format!("d-{i}"),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let events = http()
        .get(format!("{base}/api/job-events?jobId=unknown-job"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 404);

    let operator_metric = |expr: &str| {
        names::OPERATOR_METRICS
            .iter()
            .any(|m| expr.contains(m.name.trim_end_matches("_total")))
    };
    // Until every service query returns series (rates need two scrapes of a moving counter).
    let deadline = Instant::now() + WAIT;
    let mut answers;
    loop {
        answers = Vec::new();
        for (title, expr) in &targets {
            let sent = as_sent(expr);
            let (status, error, series) = query(&prometheus, &sent).await;
            answers.push((title.clone(), sent, status, error, series));
        }
        let missing = answers
            .iter()
            .filter(|(_, e, s, _, n)| s != "success" || (*n == 0 && !operator_metric(e)))
            .count();
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            panic!(
                "dashboard queries failing or empty after {WAIT:?}: {:#?}\nprometheus.log \
                 (newest first):\n{}",
                answers
                    .iter()
                    .filter(|(_, e, s, _, n)| s != "success" || (*n == 0 && !operator_metric(e)))
                    .collect::<Vec<_>>(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (title, expr, status, error, _) in &answers {
        assert_eq!(
            status, "success",
            "{title}: `{expr}` is not valid PromQL: {error}"
        );
    }
    let operator_only: Vec<&str> = answers
        .iter()
        .filter(|(_, e, ..)| operator_metric(e))
        .map(|(t, ..)| t.as_str())
        .collect();
    assert_eq!(
        operator_only,
        [
            "Workers",
            "Workers",
            "Workers",
            "Operator reconciles",
            "Operator reconciles"
        ],
        "only the operator's own queries may go without series here"
    );

    // The `pipeline` variable's query lists this pipeline.
    let variable = dashboard["templating"]["list"]
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "pipeline"))
        .and_then(|v| v["definition"].as_str())
        .expect("pipeline variable");
    assert_eq!(variable, "label_values(flashcards_build_info, pipeline)");
    let values: Value = http()
        .get(format!(
            "{prometheus}/api/v1/label/pipeline/values?{}={}",
            encode("match[]"),
            encode(names::BUILD_INFO)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        values["data"]
            .as_array()
            .is_some_and(|v| v.iter().any(|p| p == PIPELINE)),
        "{values}"
    );
    eprintln!(
        "dashboard: {} queries valid, {} returned series, {} need the operator; took {:?}",
        answers.len(),
        answers.iter().filter(|a| a.4 > 0).count(),
        operator_only.len(),
        started.elapsed()
    );
}
