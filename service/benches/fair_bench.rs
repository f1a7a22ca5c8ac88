//! Fair queuing benchmark (issue 26's first target): client A submits `A_JOBS` jobs, then client B
//! submits `B_JOBS`; `SLOTS` worker slots run jobs of `JOB_MS` each against a real redis-server
//! (started here) and the memory store. Prints how long B's jobs take to complete, as a multiple
//! of one job's time, next to what a single FIFO queue would give (every job ahead of B's at
//! `SLOTS` at a time, computed from the same figures).
//!
//! `cargo bench -p flashcard-service --bench fair_bench`; knobs: `A_JOBS` (5000), `B_JOBS` (10),
//! `SLOTS` (16), `JOB_MS` (200), `CLIENT_CAP` (32).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flashcard_core::budget::Pricing;
use flashcard_core::job::{JobRequest, JobResult, TokenUsage};
use flashcard_core::keyspace::PipelineId;
use flashcard_store::memory::MemoryStore;
use flashcard_store::redis::RedisStore;
use flashcard_store::{Admission, CallId, ClaimRequest, Cost, Outcome, Store, Submission};
use tokio::sync::Mutex;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn submission(owner: &str, n: u64) -> Submission {
    let mut s = Submission::new(
        JobRequest {
            content: format!("Mitochondria are organelles. Text {n}."),
            subject: "biology".into(),
            topic: "cells".into(),
            user_id: owner.into(),
            card_count: 1,
        },
        1,
    );
    s.owner = owner.to_owned();
    s
}

struct Knobs {
    a_jobs: u64,
    b_jobs: u64,
    slots: u64,
    job: Duration,
    cap: u32,
}

/// Runs the scenario on `store`; returns B's completion time.
async fn run(store: Arc<dyn Store>, knobs: &Knobs) -> Duration {
    let submit = |owner: &'static str, n: u64| {
        let store = store.clone();
        async move {
            match store.submit(submission(owner, n)).await {
                Ok(Admission::Accepted { job_id }) => job_id,
                other => panic!("not accepted: {other:?}"),
            }
        }
    };
    for n in 0..knobs.a_jobs {
        submit("a", n).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let b_done = Arc::new(Mutex::new(Vec::<String>::new()));
    let b_ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut slots = Vec::new();
    for slot in 0..knobs.slots {
        let (store, stop, b_done, b_ids) =
            (store.clone(), stop.clone(), b_done.clone(), b_ids.clone());
        let (job, cap) = (knobs.job, knobs.cap);
        slots.push(tokio::spawn(async move {
            let worker = format!("w{slot}");
            let result = JobResult {
                flashcards: vec![],
                token_usage: 0,
                usage: TokenUsage::default(),
                provider: "bench".into(),
                model: "bench".into(),
                cost_micros: 0,
            };
            while !stop.load(Ordering::Relaxed) {
                let request = ClaimRequest {
                    call_id: CallId::new(),
                    worker_id: &worker,
                    lease: Duration::from_secs(60),
                    max_jobs: 1,
                    client_cap: cap,
                    pricing: Pricing::default(),
                    started: None,
                };
                let Some(claim) = store
                    .claim(&request)
                    .await
                    .ok()
                    .and_then(|c| c.jobs.into_iter().next())
                else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                tokio::time::sleep(job).await;
                let outcome = Outcome::Completed {
                    result: &result,
                    duration_ms: job.as_millis() as u64,
                };
                if store
                    .finish(&claim.lease, outcome, Cost::default(), None)
                    .await
                    .is_ok()
                    && b_ids.lock().await.contains(&claim.lease.job_id)
                {
                    b_done.lock().await.push(claim.lease.job_id);
                }
            }
        }));
    }
    // Let A's backlog fill every slot first, as in the scenario.
    tokio::time::sleep(knobs.job / 2).await;
    let b_start = Instant::now();
    for n in 0..knobs.b_jobs {
        let id = submit("b", 1_000_000 + n).await;
        b_ids.lock().await.push(id);
    }
    while (b_done.lock().await.len() as u64) < knobs.b_jobs {
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "B never finished"
        );
    }
    let took = b_start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for slot in slots {
        let _ = slot.await;
    }
    took
}

#[tokio::main]
async fn main() {
    let knobs = Knobs {
        a_jobs: env_or("A_JOBS", 5000),
        b_jobs: env_or("B_JOBS", 10),
        slots: env_or("SLOTS", 16).max(1),
        job: Duration::from_millis(env_or("JOB_MS", 200)),
        cap: env_or("CLIENT_CAP", 32) as u32,
    };
    let fifo = knobs.job.as_secs_f64()
        * ((knobs.a_jobs + knobs.b_jobs) as f64 / knobs.slots as f64).ceil();
    println!(
        "A {} jobs then B {} jobs, {} slots, {} ms per job, client cap {}",
        knobs.a_jobs,
        knobs.b_jobs,
        knobs.slots,
        knobs.job.as_millis(),
        knobs.cap
    );
    println!(
        "one FIFO queue (computed): B done after about {fifo:.1} s = {:.0}x one job",
        fifo / knobs.job.as_secs_f64()
    );
    let server = flashcard_test_support::RedisServer::start();
    let pipeline = PipelineId::new(Some("bench"), "fair").expect("pipeline name");
    let redis = RedisStore::connect(&server.url(), &pipeline)
        .await
        .expect("connect to the bench's redis-server");
    for (name, store) in [
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn Store>),
        ("redis", Arc::new(redis) as Arc<dyn Store>),
    ] {
        let took = run(store, &knobs).await;
        println!(
            "{name:>6}: B's {} jobs completed in {:.3} s = {:.2}x one job (target <= 3x)",
            knobs.b_jobs,
            took.as_secs_f64(),
            took.as_secs_f64() / knobs.job.as_secs_f64()
        );
    }
}
