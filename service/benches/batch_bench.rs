//! Batch submission against single POSTs, in the same run: its own `redis-server` and one
//! `flashcard-service api` process (no worker, so every job stays queued and only admission is
//! measured). `BATCH_BENCH_JOBS` jobs (default 5,000) go in three ways, each on a fresh
//! pipeline:
//!
//! 1. single POSTs one after another (one client, one request in flight);
//! 2. single POSTs with `BATCH_BENCH_CONCURRENCY` (default 32) requests in flight;
//! 3. batches of 100 items (`POST /api/ai/generate-flashcards/batch`), one after another.
//!
//! Prints jobs/s for each and the batch's ratio to both; checks that every job was admitted
//! (the queue holds exactly the jobs sent). Run: `service/benches/run-batch-bench.sh`.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{RedisServer, STUDY_TEXT, Service, http};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn item(n: usize) -> Value {
    json!({"content": STUDY_TEXT, "subject": "biology", "topic": "cells",
        "userId": format!("student-{}", n % 50), "cardCount": 5})
}

async fn waiting(api: &Service) -> u64 {
    let stats = api.get_json("/api/queue/stats").await;
    stats["stats"]["waiting"].as_u64().unwrap_or(0)
}

async fn start(redis: &RedisServer, pipeline: &str) -> Service {
    let url = redis.url();
    Service::start(
        "api",
        &[
            "--redis-url",
            &url,
            "--pipeline",
            pipeline,
            "--rate-limit-jobs",
            "0",
        ],
        &[],
    )
    .await
}

async fn singles(api: &Service, jobs: usize, in_flight: usize) -> Duration {
    let client = http();
    let url = api.url("/api/ai/generate-flashcards");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= jobs {
                    break;
                }
                let r = client.post(&url).json(&item(n)).send().await.unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed()
}

async fn batches(api: &Service, jobs: usize) -> Duration {
    let client = http();
    let url = api.url("/api/ai/generate-flashcards/batch");
    let t0 = Instant::now();
    for start in (0..jobs).step_by(100) {
        let items: Vec<Value> = (start..jobs.min(start + 100)).map(item).collect();
        let r = client
            .post(&url)
            .json(&json!({"items": items}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    t0.elapsed()
}

#[tokio::main]
async fn main() {
    let jobs: usize = env_or("BATCH_BENCH_JOBS", 5_000);
    let concurrency: usize = env_or("BATCH_BENCH_CONCURRENCY", 32);
    let redis = RedisServer::start();
    let rate = |d: Duration| jobs as f64 / d.as_secs_f64();

    let api = start(&redis, "singles").await;
    let one = singles(&api, jobs, 1).await;
    assert_eq!(waiting(&api).await, jobs as u64);
    drop(api);
    let api = start(&redis, "concurrent").await;
    let many = singles(&api, jobs, concurrency).await;
    assert_eq!(waiting(&api).await, jobs as u64);
    drop(api);
    let api = start(&redis, "batches").await;
    let batched = batches(&api, jobs).await;
    assert_eq!(waiting(&api).await, jobs as u64);

    println!("batch bench: {jobs} jobs, one api process, redis-server, no worker");
    println!("| way | time | jobs/s |");
    println!("|---|---|---|");
    println!(
        "| single POSTs, 1 in flight | {one:.2?} | {:.0} |",
        rate(one)
    );
    println!(
        "| single POSTs, {concurrency} in flight | {many:.2?} | {:.0} |",
        rate(many)
    );
    println!(
        "| batches of 100, 1 in flight | {batched:.2?} | {:.0} |",
        rate(batched)
    );
    println!(
        "batches vs single POSTs: {:.1}x (1 in flight), {:.1}x ({concurrency} in flight)",
        rate(batched) / rate(one),
        rate(batched) / rate(many)
    );
}
