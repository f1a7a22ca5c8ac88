//! End-to-end queue throughput: jobs/s from HTTP submission to recorded completion, with the
//! offline provider, on the in-memory store (the baseline: no network, no Redis) and on a real
//! redis-server with separate api and worker instances; plus the latency of each submission
//! (the seed promises `202` within 200 ms). Both runs happen in this process, one after the
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

/// Throughput and submission latency of one run.
struct Run {
    submit_per_s: f64,
    end_to_end_per_s: f64,
    /// Time from sending `POST /api/ai/generate-flashcards` to its `202`, sorted (ms).
    latencies_ms: Vec<f64>,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies_ms.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_ms.get(i).copied().unwrap_or(f64::NAN)
    }

    fn report(&self, label: &str) {
        println!(
            "{label}  submit {:6.0} jobs/s  end-to-end {:6.0} jobs/s  202 latency p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
            self.submit_per_s,
            self.end_to_end_per_s,
            self.percentile(0.5),
            self.percentile(0.99),
            self.percentile(1.0),
        );
    }
}

/// Submits `JOBS` jobs with `CLIENTS` concurrent clients and waits for all completions.
async fn drive(base: &str) -> Run {
    let client = support::http();
    support::wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(20)).await;
    let started = Instant::now();
    let submitted: Vec<(bool, f64)> = futures::stream::iter(0..JOBS)
        .map(|n| {
            let client = client.clone();
            let url = format!("{base}/api/ai/generate-flashcards");
            async move {
                let body = json!({"content": support::STUDY_TEXT, "subject": "bench", "topic": "t",
                                  "userId": format!("u{}", n % 500), "cardCount": 5});
                let sent = Instant::now();
                let accepted = client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 202);
                (accepted, sent.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let accepted = submitted.iter().filter(|(ok, _)| *ok).count();
    assert_eq!(accepted, JOBS, "every submission accepted");
    let submit_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    while completed(&client, base).await < JOBS as u64 {
        assert!(Instant::now() < deadline, "jobs did not complete in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed().as_secs_f64();
    let mut latencies_ms: Vec<f64> = submitted.into_iter().map(|(_, ms)| ms).collect();
    latencies_ms.sort_by(f64::total_cmp);
    Run {
        submit_per_s: JOBS as f64 / submit_secs,
        end_to_end_per_s: JOBS as f64 / total,
        latencies_ms,
    }
}

fn settings(port: u16, extra: &[&str]) -> Vec<String> {
    let listen = format!("127.0.0.1:{port}");
    let common = [
        "--listen",
        &listen,
        "--log-format",
        "text",
        "--rate-limit-jobs",
        "0",
    ];
    let worker = ["--worker-concurrency", "16"];
    common
        .iter()
        .chain(worker.iter())
        .chain(extra.iter())
        .map(|s| s.to_string())
        .collect()
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
    let memory = drive(&format!("http://127.0.0.1:{port}")).await;
    shutdown.cancel();
    memory.report("baseline  memory store, standalone: ");

    let server = support::RedisServer::start();
    let shutdown = CancellationToken::new();
    let api_port = support::free_port();
    let url = server.url();
    let redis_args = ["--redis-url", url.as_str(), "--pipeline", "bench"];
    let mut api = vec!["api".to_owned()];
    api.extend(settings(api_port, &redis_args));
    let mut worker = vec!["worker".to_owned()];
    worker.extend(settings(support::free_port(), &redis_args));
    start(&api, &shutdown);
    start(&worker, &shutdown);
    let redis = drive(&format!("http://127.0.0.1:{api_port}")).await;
    shutdown.cancel();
    redis.report("measured  redis store, api + worker:");
    println!(
        "ratio     redis / memory:               submit {:5.2}x         end-to-end {:5.2}x",
        redis.submit_per_s / memory.submit_per_s,
        redis.end_to_end_per_s / memory.end_to_end_per_s
    );
    let p99 = redis.percentile(0.99);
    println!(
        "target    202 within 200 ms (seed), {CLIENTS} concurrent clients, redis p99 {p99:.2} ms: {}",
        if p99 < 200.0 { "met" } else { "MISSED" }
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
}
