//! One conformance suite, run unchanged against the memory store and the Redis store on one
//! node, on a 3-master + 3-replica Redis Cluster and on a Sentinel setup (master, replica, three
//! sentinels), all real servers started by the tests.
//!
//! On one node every case gets its own server. The cluster and the Sentinel setup are started once
//! per topology and shared: each case gets a pipeline of its own name (so keys never meet, and the
//! pipelines spread over the cluster's shards), a few cases run at a time, and the test reports
//! every failing case by name.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashcard_service::job::{JobRequest, JobResult, JobState, TokenUsage};
use flashcard_service::keyspace::PipelineName;
use flashcard_service::store::memory::MemoryStore;
use flashcard_service::store::redis::RedisStore;
use flashcard_service::store::{
    EnqueueOptions, FailOutcome, Failure, KillSwitch, RateDecision, Reservation, Retention, SetBy,
    Store, WorkerInfo,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::json;

type DynStore = Arc<dyn Store>;
/// A named conformance case, for the shared-server runs.
type Case = (&'static str, fn(DynStore) -> BoxFuture<'static, ()>);

/// Cases run at once against a shared cluster or Sentinel setup.
const PARALLEL_CASES: usize = 4;
/// Longest a case may take before it counts as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

fn request(n: u32) -> JobRequest {
    JobRequest {
        content: format!("Mitochondria are organelles. Test {n}."),
        subject: "biology".into(),
        topic: "cells".into(),
        user_id: format!("user-{n}"),
        card_count: 3,
    }
}

fn opts(max_attempts: u32) -> EnqueueOptions {
    EnqueueOptions {
        idempotency_key: None,
        max_attempts,
    }
}

fn result() -> JobResult {
    JobResult {
        flashcards: vec![],
        token_usage: 10,
        usage: TokenUsage {
            input_tokens: 7,
            output_tokens: 3,
        },
        provider: "local".into(),
        model: "m".into(),
        cost_micros: 0,
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn enqueue_claim_complete(store: DynStore) {
    let job = store.enqueue(request(1), opts(3)).await.unwrap().job;
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(store.counts().await.unwrap().waiting, 1);
    let claim = store.claim("w1", LEASE).await.unwrap().expect("a job");
    assert_eq!(claim.job.id, job.id);
    assert_eq!(claim.job.state, JobState::Active);
    assert_eq!(claim.job.attempts_made, 1);
    assert_eq!(store.counts().await.unwrap().active, 1);
    let event = json!({"type": "completed", "at": 1, "duration": 5});
    assert!(
        store
            .complete(&claim.lease, &result(), &event)
            .await
            .unwrap()
    );
    let done = store.job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(result()));
    assert!(done.finished_at.is_some());
    let events = store.events_after(&job.id, 0).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind().to_owned()).collect();
    assert_eq!(kinds, ["active", "completed"]);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(events[1].body["duration"], 5);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (0, 0, 1));
    assert_eq!(
        store
            .outcomes(Duration::from_secs(300))
            .await
            .unwrap()
            .completed,
        1
    );
    // A second completion of the same lease records nothing.
    assert!(
        !store
            .complete(&claim.lease, &result(), &event)
            .await
            .unwrap()
    );
    assert_eq!(store.events_after(&job.id, 0).await.unwrap().len(), 2);
}

async fn progress_is_recorded_only_for_the_lease_holder(store: DynStore) {
    let id = store.enqueue(request(1), opts(3)).await.unwrap().job.id;
    let claim = store.claim("w", LEASE).await.unwrap().unwrap();
    let event = json!({"type": "progress", "at": 1, "stage": "generating", "percent": 10});
    assert!(store.progress(&claim.lease, &event).await.unwrap());
    let events = store.events_after(&id, 1).await.unwrap();
    assert_eq!((events[0].seq, events[0].kind()), (2, "progress"));
    assert_eq!(events[0].body["percent"], 10);
    assert!(store.release(&claim.lease).await.unwrap());
    assert!(!store.progress(&claim.lease, &event).await.unwrap());
    assert_eq!(store.events_after(&id, 0).await.unwrap().len(), 3);
}

async fn claim_is_fifo_and_empty_is_none(store: DynStore) {
    assert!(store.claim("w", LEASE).await.unwrap().is_none());
    let a = store.enqueue(request(1), opts(3)).await.unwrap().job.id;
    let b = store.enqueue(request(2), opts(3)).await.unwrap().job.id;
    assert_eq!(store.claim("w", LEASE).await.unwrap().unwrap().job.id, a);
    assert_eq!(store.claim("w", LEASE).await.unwrap().unwrap().job.id, b);
    assert!(store.claim("w", LEASE).await.unwrap().is_none());
}

async fn idempotency_key_returns_existing_job(store: DynStore) {
    let options = EnqueueOptions {
        idempotency_key: Some("key-1".into()),
        max_attempts: 3,
    };
    let first = store.enqueue(request(1), options.clone()).await.unwrap();
    let second = store.enqueue(request(2), options).await.unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.job.id, second.job.id);
    assert_eq!(second.job.request, request(1));
    assert_eq!(store.counts().await.unwrap().waiting, 1);
}

async fn retries_through_delayed_then_fails(store: DynStore) {
    let id = store.enqueue(request(1), opts(2)).await.unwrap().job.id;
    let claim = store.claim("w", LEASE).await.unwrap().unwrap();
    let failure = Failure {
        error: "provider timed out".into(),
        retry_after: Some(Duration::from_millis(600)),
        duration_ms: 12,
    };
    assert_eq!(
        store.fail(&claim.lease, &failure).await.unwrap(),
        FailOutcome::Retrying
    );
    assert_eq!(
        store.job(&id).await.unwrap().unwrap().state,
        JobState::Delayed
    );
    assert_eq!(store.counts().await.unwrap().delayed, 1);
    assert!(
        store.claim("w", LEASE).await.unwrap().is_none(),
        "not due yet"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let claim = store
        .claim("w", LEASE)
        .await
        .unwrap()
        .expect("due after backoff");
    assert_eq!(claim.job.attempts_made, 2);
    assert_eq!(
        store.fail(&claim.lease, &failure).await.unwrap(),
        FailOutcome::Failed
    );
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_deref(), Some("provider timed out"));
    let kinds: Vec<_> = store
        .events_after(&id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind().to_owned())
        .collect();
    assert_eq!(kinds, ["active", "retrying", "active", "failed"]);
    let last = store.events_after(&id, 3).await.unwrap();
    assert_eq!(last[0].body["attemptsMade"], 2);
    assert_eq!(last[0].body["error"], "provider timed out");
    let outcomes = store.outcomes(Duration::from_secs(300)).await.unwrap();
    assert_eq!((outcomes.completed, outcomes.failed), (0, 1));
}

async fn permanent_failure_skips_retries(store: DynStore) {
    let id = store.enqueue(request(1), opts(5)).await.unwrap().job.id;
    let claim = store.claim("w", LEASE).await.unwrap().unwrap();
    let failure = Failure {
        error: "rejected".into(),
        retry_after: None,
        duration_ms: 1,
    };
    assert_eq!(
        store.fail(&claim.lease, &failure).await.unwrap(),
        FailOutcome::Failed
    );
    assert_eq!(store.job(&id).await.unwrap().unwrap().attempts_made, 1);
    assert_eq!(store.counts().await.unwrap().failed, 1);
}

async fn expired_lease_requeues_and_result_is_recorded_once(store: DynStore) {
    let id = store.enqueue(request(1), opts(3)).await.unwrap().job.id;
    let stale = store
        .claim("dead-worker", Duration::from_millis(500))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.recover_stalled(2).await.unwrap().requeued,
        0,
        "lease still valid"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let report = store.recover_stalled(2).await.unwrap();
    assert_eq!((report.requeued, report.failed), (1, 0));
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.stalls), (JobState::Waiting, 1));
    let fresh = store.claim("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(fresh.job.id, id);
    let event = json!({"type": "completed", "at": 1, "duration": 1});
    // The stale worker finishes late: its result is discarded.
    assert!(
        !store
            .complete(&stale.lease, &result(), &event)
            .await
            .unwrap()
    );
    assert!(!store.renew(&stale.lease, LEASE).await.unwrap());
    assert!(
        store
            .complete(&fresh.lease, &result(), &event)
            .await
            .unwrap()
    );
    let kinds: Vec<_> = store
        .events_after(&id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind().to_owned())
        .collect();
    assert_eq!(kinds, ["active", "waiting", "active", "completed"]);
    assert_eq!(store.counts().await.unwrap().completed, 1);
}

async fn too_many_stalls_fail_the_job(store: DynStore) {
    let id = store.enqueue(request(1), opts(10)).await.unwrap().job.id;
    for round in 0..2 {
        store
            .claim("w", Duration::from_millis(50))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let report = store.recover_stalled(1).await.unwrap();
        if round == 0 {
            assert_eq!(report.requeued, 1);
        } else {
            assert_eq!(report.failed, 1);
        }
    }
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.error
            .unwrap()
            .contains("stalled more than allowable limit")
    );
}

async fn renewed_lease_is_not_recovered(store: DynStore) {
    store.enqueue(request(1), opts(3)).await.unwrap();
    let claim = store
        .claim("w", Duration::from_millis(150))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        store
            .renew(&claim.lease, Duration::from_millis(500))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(store.recover_stalled(1).await.unwrap().requeued, 0);
    assert_eq!(store.counts().await.unwrap().active, 1);
}

async fn release_gives_the_job_back_without_using_an_attempt(store: DynStore) {
    let id = store.enqueue(request(1), opts(3)).await.unwrap().job.id;
    store.enqueue(request(2), opts(3)).await.unwrap();
    let claim = store.claim("w", LEASE).await.unwrap().unwrap();
    assert!(store.release(&claim.lease).await.unwrap());
    assert!(!store.release(&claim.lease).await.unwrap());
    let again = store.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!(again.job.id, id, "a released job goes to the front");
    assert_eq!(again.job.attempts_made, 1);
}

async fn event_feed_and_history(store: DynStore) {
    let mut feed = store.event_feed().await.unwrap();
    let id = store.enqueue(request(1), opts(3)).await.unwrap().job.id;
    let claim = store.claim("w", LEASE).await.unwrap().unwrap();
    let event = json!({"type": "completed", "at": 1, "result": {"flashcards": []}, "duration": 3});
    store
        .complete(&claim.lease, &result(), &event)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.job_id.as_str(), first.seq, first.kind()),
        (id.as_str(), 1, "active")
    );
    assert_eq!((second.seq, second.kind()), (2, "completed"));
    assert_eq!(second.body["result"], json!({"flashcards": []}));
    let after = store.events_after(&id, 1).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0], second);
    assert!(store.events_after(&id, 2).await.unwrap().is_empty());
    assert!(
        store
            .events_after("no-such-job", 0)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn retention_trims_oldest_finished_jobs(store: DynStore) {
    let mut ids = Vec::new();
    for n in 0..3 {
        let options = EnqueueOptions {
            idempotency_key: Some(format!("k{n}")),
            max_attempts: 1,
        };
        let id = store.enqueue(request(n), options).await.unwrap().job.id;
        let claim = store.claim("w", LEASE).await.unwrap().unwrap();
        store
            .complete(
                &claim.lease,
                &result(),
                &json!({"type": "completed", "at": 1}),
            )
            .await
            .unwrap();
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let retention = Retention {
        max_age: Duration::from_secs(3600),
        max_count: 1,
    };
    assert_eq!(store.trim_finished(retention).await.unwrap(), 2);
    assert!(store.job(&ids[0]).await.unwrap().is_none());
    assert!(store.events_after(&ids[0], 0).await.unwrap().is_empty());
    assert!(store.job(&ids[2]).await.unwrap().is_some());
    assert_eq!(store.counts().await.unwrap().completed, 1);
    // The trimmed job's idempotency key is free again.
    let options = EnqueueOptions {
        idempotency_key: Some("k0".into()),
        max_attempts: 1,
    };
    assert!(store.enqueue(request(9), options).await.unwrap().created);
    let by_age = Retention {
        max_age: Duration::ZERO,
        max_count: 100,
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.trim_finished(by_age).await.unwrap(), 1);
}

async fn worker_heartbeats_expire(store: DynStore) {
    let info = WorkerInfo {
        id: "w1".into(),
        pod: "worker-abc".into(),
        active: 2,
        concurrency: 4,
        breaker: "closed".into(),
        draining: false,
        last_seen: 0,
    };
    store
        .heartbeat(&info, Duration::from_millis(600))
        .await
        .unwrap();
    let workers = store.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        (workers[0].pod.as_str(), workers[0].active),
        ("worker-abc", 2)
    );
    assert!(workers[0].last_seen > 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(store.workers().await.unwrap().is_empty());
    store.heartbeat(&info, LEASE).await.unwrap();
    store.remove_worker("w1").await.unwrap();
    assert!(store.workers().await.unwrap().is_empty());
}

async fn kill_switch_round_trip(store: DynStore) {
    assert!(!store.kill_switch().await.unwrap().enabled);
    let on = KillSwitch {
        enabled: true,
        reason: Some("Testing kill-switch".into()),
        set_by: Some(SetBy::Admin),
        since: Some(1234),
    };
    store.set_kill_switch(&on).await.unwrap();
    assert_eq!(store.kill_switch().await.unwrap(), on);
    assert!(
        !store.clear_kill_switch_if(SetBy::Operator).await.unwrap(),
        "admin's switch stays"
    );
    assert!(store.kill_switch().await.unwrap().enabled);
    assert!(store.clear_kill_switch_if(SetBy::Admin).await.unwrap());
    let off = store.kill_switch().await.unwrap();
    assert!(!off.enabled);
    assert_eq!(off.reason, None);
}

async fn budget_reservations_respect_the_limit(store: DynStore) {
    let period = "2026-11";
    assert_eq!(
        store.reserve(period, 400, 1000).await.unwrap(),
        Reservation::Granted
    );
    assert_eq!(
        store.reserve(period, 400, 1000).await.unwrap(),
        Reservation::Granted
    );
    assert_eq!(
        store.reserve(period, 400, 1000).await.unwrap(),
        Reservation::Refused
    );
    let usage = TokenUsage {
        input_tokens: 100,
        output_tokens: 50,
    };
    let spend = store.settle(period, 400, 150, usage).await.unwrap();
    assert_eq!((spend.spent_micros, spend.reserved_micros), (150, 400));
    assert_eq!(
        (spend.input_tokens, spend.output_tokens, spend.jobs),
        (100, 50, 1)
    );
    assert_eq!(
        store.reserve(period, 400, 1000).await.unwrap(),
        Reservation::Granted
    );
    assert_eq!(store.spend(period).await.unwrap().reserved_micros, 800);
    assert_eq!(store.spend("2026-12").await.unwrap().spent_micros, 0);
    assert_eq!(
        store.reserve("2026-12", u32::MAX as u64, 0).await.unwrap(),
        Reservation::Granted
    );
}

async fn rate_limit_counts_per_user(store: DynStore) {
    let window = Duration::from_secs(60);
    for remaining in [1, 0] {
        assert_eq!(
            store.rate_limit("alice", window, 2).await.unwrap(),
            RateDecision::Allowed { remaining }
        );
    }
    match store.rate_limit("alice", window, 2).await.unwrap() {
        RateDecision::Limited { retry_after } => assert!(retry_after <= window),
        other => panic!("expected a limit, got {other:?}"),
    }
    assert!(matches!(
        store.rate_limit("bob", window, 2).await.unwrap(),
        RateDecision::Allowed { .. }
    ));
}

async fn concurrent_claims_hand_out_each_job_once(store: DynStore) {
    for n in 0..40 {
        store.enqueue(request(n), opts(3)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(claim) = store.claim(&format!("w{w}"), LEASE).await.unwrap() {
                got.push(claim.job.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (40, 40));
}

async fn memory_store() -> DynStore {
    Arc::new(MemoryStore::new())
}

async fn redis_store() -> (support::RedisServer, DynStore) {
    let server = support::RedisServer::start();
    let pipeline = PipelineName::new("conformance").unwrap();
    let store = RedisStore::connect(&server.url(), &pipeline).await.unwrap();
    (server, Arc::new(store))
}

/// Runs every case against the Redis at `url`, each with a pipeline named after it, and fails
/// naming every case that failed (with its panic message).
async fn run_shared(topology: &str, url: &str, cases: Vec<Case>) {
    let total = cases.len();
    let results: Vec<(&str, Result<Duration, String>)> = futures::stream::iter(cases)
        .map(|(name, case)| {
            let url = url.to_owned();
            async move {
                let started = Instant::now();
                let pipeline = PipelineName::new(&name.replace('_', "-")).expect("pipeline name");
                let run = tokio::spawn(async move {
                    let store = RedisStore::connect(&url, &pipeline).await.expect("connect");
                    tokio::time::timeout(CASE_TIMEOUT, case(Arc::new(store)))
                        .await
                        .unwrap_or_else(|_| panic!("hung for {CASE_TIMEOUT:?}"));
                })
                .await;
                let outcome = match run {
                    Ok(()) => Ok(started.elapsed()),
                    Err(e) => Err(panic_message(e)),
                };
                (name, outcome)
            }
        })
        .buffer_unordered(PARALLEL_CASES)
        .collect()
        .await;
    let mut failed = Vec::new();
    for (name, outcome) in &results {
        match outcome {
            Ok(took) => eprintln!("{topology}: {name} ok ({:.2}s)", took.as_secs_f64()),
            Err(message) => failed.push(format!("{name}: {message}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} conformance cases failed on {topology}:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::memory_store().await).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $case() {
                let (_server, store) = super::redis_store().await;
                super::$case(store).await;
            })*
        }
        mod redis_cluster {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn all_cases() {
                let cluster = super::support::RedisCluster::start();
                let cases: Vec<super::Case> = vec![
                    $((stringify!($case), |store| Box::pin(super::$case(store)))),*
                ];
                super::run_shared("redis cluster", &cluster.url(), cases).await;
            }
        }
        mod redis_sentinel {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn all_cases() {
                let setup = super::support::RedisSentinel::start();
                let cases: Vec<super::Case> = vec![
                    $((stringify!($case), |store| Box::pin(super::$case(store)))),*
                ];
                super::run_shared("redis sentinel", &setup.url(), cases).await;
            }
        }
    };
}

conformance!(
    enqueue_claim_complete,
    claim_is_fifo_and_empty_is_none,
    progress_is_recorded_only_for_the_lease_holder,
    idempotency_key_returns_existing_job,
    retries_through_delayed_then_fails,
    permanent_failure_skips_retries,
    expired_lease_requeues_and_result_is_recorded_once,
    too_many_stalls_fail_the_job,
    renewed_lease_is_not_recovered,
    release_gives_the_job_back_without_using_an_attempt,
    event_feed_and_history,
    retention_trims_oldest_finished_jobs,
    worker_heartbeats_expire,
    kill_switch_round_trip,
    budget_reservations_respect_the_limit,
    rate_limit_counts_per_user,
    concurrent_claims_hand_out_each_job_once,
);
