//! End-to-end queue throughput: jobs/s from HTTP submission to recorded completion, with the
//! offline provider, on the in-memory store (the baseline: no network, no Redis) and on a real
//! redis-server with separate api and worker instances. Both run in this process, one after the
//! other, with the same client load, so the ratio compares like with like.
//!
//! Run: `cargo bench -p flashcard-service --bench throughput` (needs redis-server).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use clap::Parser;
use flashcard_service::config::Cli;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const JOBS: usize = 2000;
const CLIENTS: usize = 32;

fn start(args: &[String], shutdown: &CancellationToken) {
    let mut argv = vec!["flashcard-service".to_owned()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("bench arguments");
    let token = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = flashcard_service::app::run(cli.mode, token).await {
            eprintln!("service failed: {e:#}");
        }
    });
}

async fn completed(client: &reqwest::Client, base: &str) -> u64 {
    let stats: Value = client
        .get(format!("{base}/api/queue/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    stats["stats"]["completed"].as_u64().unwrap_or(0)
}

/// Submits `JOBS` jobs with `CLIENTS` concurrent clients and waits for all completions.
async fn drive(base: &str) -> (f64, f64) {
    let client = support::http();
    support::wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(20)).await;
    let started = Instant::now();
    let submitted = futures::stream::iter(0..JOBS)
        .map(|n| {
            let client = client.clone();
            let url = format!("{base}/api/ai/generate-flashcards");
            async move {
                let body = json!({"content": support::STUDY_TEXT, "subject": "bench", "topic": "t", "userId": format!("u{}", n % 500), "cardCount": 5});
                client.post(url).json(&body).send().await.map(|r| r.status().as_u16())
            }
        })
        .buffer_unordered(CLIENTS)
        .filter(|status| futures::future::ready(matches!(status, Ok(202))))
        .count()
        .await;
    assert_eq!(submitted, JOBS, "every submission accepted");
    let submit_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    while completed(&client, base).await < JOBS as u64 {
        assert!(Instant::now() < deadline, "jobs did not complete in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed().as_secs_f64();
    (JOBS as f64 / submit_secs, JOBS as f64 / total)
}

fn settings(port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--log-format",
        "text",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(
        ["--rate-limit-jobs", "0", "--worker-concurrency", "16"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::main]
async fn main() {
    support::init_tls();
    println!(
        "queue throughput: {JOBS} jobs, {CLIENTS} concurrent clients, local provider, worker concurrency 16"
    );

    let shutdown = CancellationToken::new();
    let port = support::free_port();
    let mut args = vec!["standalone".to_owned()];
    args.extend(settings(port, &[]));
    start(&args, &shutdown);
    let (memory_submit, memory_e2e) = drive(&format!("http://127.0.0.1:{port}")).await;
    shutdown.cancel();
    println!(
        "baseline  memory store, standalone:        submit {memory_submit:8.0} jobs/s   end-to-end {memory_e2e:8.0} jobs/s"
    );

    let redis = support::RedisServer::start();
    let shutdown = CancellationToken::new();
    let api_port = support::free_port();
    let url = redis.url();
    let mut api = vec!["api".to_owned()];
    api.extend(settings(
        api_port,
        &["--redis-url", &url, "--pipeline", "bench"],
    ));
    let mut worker = vec!["worker".to_owned()];
    worker.extend(settings(
        support::free_port(),
        &["--redis-url", &url, "--pipeline", "bench"],
    ));
    start(&api, &shutdown);
    start(&worker, &shutdown);
    let (redis_submit, redis_e2e) = drive(&format!("http://127.0.0.1:{api_port}")).await;
    shutdown.cancel();
    println!(
        "measured  redis store, api + worker:       submit {redis_submit:8.0} jobs/s   end-to-end {redis_e2e:8.0} jobs/s"
    );
    println!(
        "ratio     redis / memory:                   submit {:8.2}x         end-to-end {:8.2}x",
        redis_submit / memory_submit,
        redis_e2e / memory_e2e
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
}
