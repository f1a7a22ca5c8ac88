//! Lost Redis replies between a worker and its store: a proxy that throws away one read from
//! Redis in 20 and resets that connection (the commands ran, their answers never came) while a
//! worker runs 1,000 jobs. Claims and finishes carry call ids made once and reused by their
//! retries, so every lost answer is recovered from the store: nothing lost, nothing run twice,
//! no job failed, no attempt or stall spent on a blip.

use std::time::{Duration, Instant};

use crate::support::{RedisServer, Service, TcpProxy};
use flashcard_core::job::JobRequest;
use flashcard_core::keyspace::PipelineId;
use flashcard_store::redis::RedisStore;
use flashcard_store::{Admission, Store, Submission};

const PIPELINE: &str = "blips";
const JOBS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_losing_one_reply_in_twenty_loses_and_doubles_nothing() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start_lossy(redis.port, 20).await;
    let direct = redis.url();
    let store = RedisStore::connect(&direct, &PipelineId::new(None, PIPELINE).unwrap())
        .await
        .unwrap();
    // Submitted straight to the store: the faults under test are between worker and Redis.
    let mut ids = Vec::with_capacity(JOBS);
    for n in 0..JOBS {
        let request = JobRequest {
            content: "Mitochondria make ATP in cells.".into(),
            subject: "s".into(),
            topic: "t".into(),
            user_id: format!("u{n}"),
            card_count: 5,
        };
        let submission = Submission::new(request, 3);
        match store.submit(submission).await.unwrap() {
            Admission::Accepted { job_id } => ids.push(job_id),
            other => panic!("not accepted: {other:?}"),
        }
    }
    let through_proxy = proxy.url();
    let started = Instant::now();
    let _worker = Service::start(
        "worker",
        &[
            "--redis-url",
            &through_proxy,
            "--pipeline",
            PIPELINE,
            "--worker-concurrency",
            "16",
            "--poll-interval-ms",
            "100",
        ],
        &[],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let counts = store.counts().await.unwrap();
        if counts.completed + counts.failed >= JOBS as u64 || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    let lost = proxy.lost_replies();
    assert_eq!(
        (
            counts.completed,
            counts.failed,
            counts.active,
            counts.waiting,
            counts.delayed
        ),
        (JOBS as u64, 0, 0, 0, 0),
        "after {elapsed:?} with {lost} lost replies"
    );
    let mut attempts = [0usize; 4];
    for id in &ids {
        let job = store.job(id).await.unwrap().unwrap();
        let events = store.events_after(id, 0).await.unwrap();
        let completed = events.iter().filter(|e| e.kind() == "completed").count();
        let stalled = events
            .iter()
            .filter(|e| e.body()["reason"] == "stalled")
            .count();
        assert_eq!(completed, 1, "job {id} completed {completed} times");
        assert_eq!(stalled, 0, "job {id} was recovered after a stall");
        attempts[(job.attempts_made as usize).min(3)] += 1;
    }
    println!(
        "{JOBS} jobs in {elapsed:?} through a proxy that lost {lost} replies ({} connections): \
         attempts 1: {}, 2: {}, more: {}",
        proxy.connections(),
        attempts[1],
        attempts[2],
        attempts[3]
    );
    assert!(
        lost >= 20,
        "the proxy lost only {lost} replies: no fault was tried"
    );
    assert_eq!(attempts[1], JOBS, "a lost reply cost a job an attempt");
    let spend = store.budget_state().await.unwrap().spend;
    assert_eq!(spend.reserved_micros, 0, "no reservation leaked");
}
