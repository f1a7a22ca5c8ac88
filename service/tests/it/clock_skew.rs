//! A worker whose clock is a day behind (libfaketime) on a shared Redis: every time the store
//! keeps or compares comes from the Redis server's clock, so nothing changes. Its jobs' spend
//! lands in today's budget period, its outcomes in this minute's counters, its heartbeat keeps
//! it in the live set, and its timestamps are today's.

use std::time::Duration;

use crate::support::{RedisServer, Service};
use flashcard_core::job::{JobRequest, now_ms};
use flashcard_core::keyspace::PipelineId;
use flashcard_store::redis::RedisStore;
use flashcard_store::{Admission, Store, Submission};

const PIPELINE: &str = "skew";
const JOBS: usize = 40;
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test]
async fn a_worker_a_day_behind_changes_nothing() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} missing: run .ci/install-test-tools.sh (Debian package faketime)"
    );
    let redis = RedisServer::start();
    let url = redis.url();
    let store = RedisStore::connect(&url, &PipelineId::new(None, PIPELINE).unwrap())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..JOBS {
        let request = JobRequest {
            content: "Ribosomes build proteins from amino acids.".into(),
            subject: "s".into(),
            topic: "t".into(),
            user_id: format!("u{n}"),
            card_count: 3,
        };
        let submission = Submission::new(request, 3);
        match store.submit(submission).await.unwrap() {
            Admission::Accepted { job_id } => ids.push(job_id),
            other => panic!("not accepted: {other:?}"),
        }
    }
    let _worker = Service::start(
        "worker",
        &[
            "--redis-url",
            &url,
            "--pipeline",
            PIPELINE,
            "--budget-limit-usd",
            "100",
            "--budget-period",
            "daily",
            "--heartbeat-ms",
            "500",
        ],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "-1d"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.counts().await.unwrap().completed < JOBS as u64 {
        assert!(std::time::Instant::now() < deadline, "jobs not completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The worker really is a day behind: its first heartbeat's view of the offset says so.
    let workers = store.workers().await.unwrap();
    assert_eq!(workers.len(), 1, "the skewed worker is alive: {workers:?}");
    let seen_ago = now_ms() as i64 - workers[0].last_seen as i64;
    assert!(
        (-5_000..5_000).contains(&seen_ago),
        "heartbeat stamped {seen_ago} ms ago by the server"
    );
    let budget = store.budget_state().await.unwrap();
    assert_eq!(
        budget.spend.jobs, JOBS as u64,
        "today's period {} holds every call: {:?}",
        budget.period, budget.spend
    );
    assert_eq!(budget.spend.reserved_micros, 0);
    let outcomes = store.outcomes(Duration::from_secs(300)).await.unwrap();
    assert_eq!(outcomes.completed, JOBS as u64, "this minute's counters");
    for id in &ids {
        let job = store.job(id).await.unwrap().unwrap();
        for (what, at) in [
            ("startedAt", job.started_at.unwrap_or(0)),
            ("finishedAt", job.finished_at.unwrap_or(0)),
        ] {
            let age = now_ms() as i64 - at as i64;
            assert!(
                (-5_000..60_000).contains(&age),
                "{what} of {id} is {age} ms old"
            );
        }
        let events = store.events_after(id, 0).await.unwrap();
        let completed = events.iter().find(|e| e.kind() == "completed").unwrap();
        let stamp = completed.body()["timestamp"].as_str().unwrap().to_owned();
        let at: jiff::Timestamp = stamp.parse().unwrap();
        let age = now_ms() as i64 - at.as_millisecond();
        assert!((-5_000..60_000).contains(&age), "event stamped {stamp}");
    }
    println!(
        "{JOBS} jobs by a worker one day behind: spend in {}, {} calls; outcomes {}; worker seen {seen_ago} ms ago",
        budget.period, budget.spend.jobs, outcomes.completed
    );
}
