//! One conformance suite, run unchanged against the memory store and the Redis store on one
//! node, on a 3-master + 3-replica Redis Cluster and on a Sentinel setup (master, replica, three
//! sentinels), all real servers started by the tests.
//!
//! On one node every case gets its own server. The cluster and the Sentinel setup are started once
//! per topology and shared: each case gets a pipeline of its own name (so keys never meet, and the
//! pipelines spread over the cluster's shards), a few cases run at a time, and the test reports
//! every failing case by name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashcard_core::budget::BudgetPeriod;
use flashcard_core::budget::Pricing;
use flashcard_core::events::WaitReason;
use flashcard_core::job::{JobRequest, JobResult, JobState, TokenUsage};
use flashcard_core::keyspace::{PipelineId, client_digest, fingerprint, idempotency_digest};
use flashcard_store::memory::MemoryStore;
use flashcard_store::redis::RedisStore;
use flashcard_store::{
    Admission, BUDGET_EXHAUSTED_CODE, BudgetConfig, BudgetSource, Claim, ClaimRequest, Cost,
    FinishOutcome, Idempotency, KillSwitch, Outcome, ProgressNote, RateLimit, Retention, SetBy,
    Store, Submission, WorkerInfo,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::fairness::*;

pub(crate) type DynStore = Arc<dyn Store>;
/// A named conformance case, for the shared-server runs.
type Case = (&'static str, fn(DynStore) -> BoxFuture<'static, ()>);

/// Cases run at once against a shared cluster or Sentinel setup.
const PARALLEL_CASES: usize = 4;
/// Longest a case may take before it counts as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

const LEASE: Duration = Duration::from_secs(30);

pub(crate) fn request(n: u32) -> JobRequest {
    JobRequest {
        content: format!("Mitochondria are organelles. Test {n}."),
        subject: "biology".into(),
        topic: "cells".into(),
        user_id: format!("user-{n}"),
        card_count: 3,
    }
}

fn submission(n: u32, max_attempts: u32) -> Submission {
    Submission::new(request(n), max_attempts)
}

fn with_key(mut s: Submission, owner: &str, key: &str) -> Submission {
    s.owner = owner.to_owned();
    s.idempotency = Some(Idempotency {
        digest: idempotency_digest(owner, key),
        fingerprint: fingerprint(&serde_json::to_string(&s.request).unwrap()),
        ttl: Duration::from_secs(3600),
    });
    s
}

async fn submit(store: &DynStore, n: u32, max_attempts: u32) -> String {
    match store.submit(submission(n, max_attempts)).await.unwrap() {
        Admission::Accepted { job_id } => job_id,
        other => panic!("not accepted: {other:?}"),
    }
}

/// Claims at one micro-dollar per input byte, nothing for output: a job's reservation is the
/// bytes of its content, subject and topic.
fn pricing() -> Pricing {
    Pricing {
        input_micros_per_token: 1.0,
        ..Pricing::default()
    }
}

pub(crate) fn claim_request(max_jobs: u32) -> ClaimRequest<'static> {
    ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        worker_id: "w1",
        lease: LEASE,
        max_jobs,
        client_cap: 0,
        pricing: pricing(),
        started: None,
    }
}

async fn claim_one(store: &DynStore) -> Option<Claim> {
    store
        .claim(&claim_request(1))
        .await
        .unwrap()
        .jobs
        .into_iter()
        .next()
}

pub(crate) fn result() -> JobResult {
    JobResult {
        flashcards: vec![],
        token_usage: 10,
        usage: TokenUsage {
            input_tokens: 7,
            output_tokens: 3,
            ..Default::default()
        },
        provider: "local".into(),
        model: "m".into(),
        cost_micros: 5,
    }
}

pub(crate) fn cost(micros: u64) -> Cost {
    Cost::reported(
        micros,
        TokenUsage {
            input_tokens: 7,
            output_tokens: 3,
            ..Default::default()
        },
    )
}

pub(crate) async fn complete(store: &DynStore, claim: &Claim, micros: u64) -> FinishOutcome {
    let r = result();
    let outcome = Outcome::Completed {
        result: &r,
        duration_ms: 5,
    };
    store
        .finish(&claim.lease, outcome, cost(micros), None)
        .await
        .unwrap()
        .outcome
}

async fn set_limit(store: &DynStore, limit_micros: u64) {
    store
        .set_budget(&BudgetConfig {
            limit_micros,
            period: BudgetPeriod::Monthly,
            warn_percent: 80.0,
            enforce: true,
            source: BudgetSource::Operator,
        })
        .await
        .unwrap();
}

async fn reserved(store: &DynStore) -> u64 {
    store.budget_state().await.unwrap().spend.reserved_micros
}

fn kinds(events: &[flashcard_store::StoredEvent]) -> Vec<String> {
    events.iter().map(|e| e.kind().to_owned()).collect()
}

async fn submit_claim_complete(store: DynStore) {
    let id = submit(&store, 1, 3).await;
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.owner.as_str()),
        (JobState::Waiting, "user-1")
    );
    assert_eq!(store.counts().await.unwrap().waiting, 1);
    let claim = claim_one(&store).await.expect("a job");
    assert_eq!(claim.job.id, id);
    assert_eq!(claim.job.state, JobState::Active);
    assert_eq!(claim.job.attempts_made, 1);
    assert_eq!(claim.job.request, request(1));
    assert_eq!(store.counts().await.unwrap().active, 1);
    assert_eq!(complete(&store, &claim, 5).await, FinishOutcome::Completed);
    let done = store.job(&id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(result()));
    assert!(done.finished_at.is_some());
    let events = store.events_after(&id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["active", "completed"]);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    let completed = events[1].body();
    assert_eq!(completed["jobId"], id.as_str());
    assert_eq!(completed["duration"], 5);
    assert_eq!(completed["result"]["tokenUsage"], 10);
    assert_eq!(completed["seq"], 2);
    assert!(completed["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[0].body()["attemptsMade"], 1);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (0, 0, 1));
    let spend = store.budget_state().await.unwrap().spend;
    assert_eq!(
        (spend.spent_micros, spend.reserved_micros, spend.jobs),
        (5, 0, 1)
    );
    assert_eq!((spend.input_tokens, spend.output_tokens), (7, 3));
}

async fn claims_take_a_batch_in_order_and_finish_claims_the_next(store: DynStore) {
    assert!(
        store
            .claim(&claim_request(4))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    let ids = [
        submit(&store, 1, 3).await,
        submit(&store, 2, 3).await,
        submit(&store, 3, 3).await,
        submit(&store, 4, 3).await,
    ];
    let claimed = store.claim(&claim_request(2)).await.unwrap();
    let got: Vec<_> = claimed.jobs.iter().map(|c| c.job.id.clone()).collect();
    assert_eq!(got, ids[..2]);
    let r = result();
    let done = Outcome::Completed {
        result: &r,
        duration_ms: 1,
    };
    let finished = store
        .finish(
            &claimed.jobs[0].lease,
            done,
            cost(1),
            Some(&claim_request(1)),
        )
        .await
        .unwrap();
    assert_eq!(finished.outcome, FinishOutcome::Completed);
    assert_eq!(finished.claimed.jobs.len(), 1);
    assert_eq!(finished.claimed.jobs[0].job.id, ids[2]);
    assert_eq!(store.counts().await.unwrap().active, 2);
    let rest = store.claim(&claim_request(5)).await.unwrap();
    assert_eq!(rest.jobs.len(), 1);
    assert_eq!(rest.jobs[0].job.id, ids[3]);
}

async fn started_progress_is_folded_into_the_claim(store: DynStore) {
    let id = submit(&store, 1, 3).await;
    let request = ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        started: Some(ProgressNote {
            stage: "generating",
            percent: 10,
            message: "Generating",
        }),
        ..claim_request(1)
    };
    let claim = store.claim(&request).await.unwrap().jobs.remove(0);
    let events = store.events_after(&id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["active", "progress"]);
    assert_eq!(events[1].body()["percent"], 10);
    assert_eq!(
        events[1].body()["cardCount"],
        3,
        "the store adds the job's card count"
    );
    assert_eq!(claim.job.event_seq, 2);
    assert!(
        store
            .progress(&claim.lease, "parsing", 90, "Parsing")
            .await
            .unwrap()
    );
    assert_eq!(
        store.events_after(&id, 2).await.unwrap()[0].body()["stage"],
        "parsing"
    );
    let release = Outcome::Release {
        reason: WaitReason::Released,
    };
    store
        .finish(&claim.lease, release, Cost::default(), None)
        .await
        .unwrap();
    assert!(
        !store
            .progress(&claim.lease, "late", 95, "too late")
            .await
            .unwrap(),
        "only the lease holder reports progress"
    );
}

async fn idempotency_replays_the_same_request_and_refuses_another_body(store: DynStore) {
    let first = store
        .submit(with_key(submission(1, 3), "alice", "k1"))
        .await
        .unwrap();
    let Admission::Accepted { job_id } = first else {
        panic!("{first:?}")
    };
    let again = store
        .submit(with_key(submission(1, 3), "alice", "k1"))
        .await
        .unwrap();
    assert_eq!(
        again,
        Admission::Replayed {
            job_id: job_id.clone(),
            state: JobState::Waiting
        }
    );
    let other_body = store
        .submit(with_key(submission(2, 3), "alice", "k1"))
        .await
        .unwrap();
    assert_eq!(
        other_body,
        Admission::KeyReused {
            job_id: job_id.clone()
        }
    );
    // The same key of another owner is another key, even when the parts would concatenate
    // to the same text.
    let a = store
        .submit(with_key(submission(1, 3), "victim", "x:k1"))
        .await
        .unwrap();
    let b = store
        .submit(with_key(submission(1, 3), "victim:x", "k1"))
        .await
        .unwrap();
    assert!(matches!(a, Admission::Accepted { .. }), "{a:?}");
    assert!(matches!(b, Admission::Accepted { .. }), "{b:?}");
    assert_ne!(a, b);
    assert_eq!(store.counts().await.unwrap().waiting, 3);
}

async fn a_replay_is_answered_before_the_kill_switch_and_the_rate_limit(store: DynStore) {
    let limited = |s: Submission| Submission {
        rate_limit: Some(RateLimit {
            max: 1,
            window: Duration::from_secs(60),
            subject: s.owner.clone(),
        }),
        ..s
    };
    let first = store
        .submit(limited(with_key(submission(1, 3), "bob", "k")))
        .await
        .unwrap();
    assert!(matches!(first, Admission::Accepted { .. }));
    store
        .set_kill_switch(&KillSwitch::manual(SetBy::Admin, Some("stop".into()), 1))
        .await
        .unwrap();
    let replay = store
        .submit(limited(with_key(submission(1, 3), "bob", "k")))
        .await
        .unwrap();
    assert!(matches!(replay, Admission::Replayed { .. }), "{replay:?}");
    let fresh = store
        .submit(limited(with_key(submission(1, 3), "bob", "k2")))
        .await
        .unwrap();
    assert!(matches!(fresh, Admission::Refused(_)), "{fresh:?}");
    assert!(store.clear_kill_switch_if(SetBy::Admin).await.unwrap());
    let over_rate = store
        .submit(limited(with_key(submission(1, 3), "bob", "k3")))
        .await
        .unwrap();
    assert!(
        matches!(over_rate, Admission::RateLimited { .. }),
        "{over_rate:?}"
    );
    let replay = store
        .submit(limited(with_key(submission(1, 3), "bob", "k")))
        .await
        .unwrap();
    assert!(matches!(replay, Admission::Replayed { .. }), "{replay:?}");
}

async fn retries_through_delayed_then_fails(store: DynStore) {
    let id = submit(&store, 1, 2).await;
    let claim = claim_one(&store).await.unwrap();
    let retry = Outcome::Retry {
        error: "provider timed out",
        code: Some("PROVIDER_UNAVAILABLE"),
        delay: Duration::from_millis(600),
        duration_ms: 7,
    };
    let finished = store
        .finish(&claim.lease, retry, Cost::default(), None)
        .await
        .unwrap();
    assert_eq!(finished.outcome, FinishOutcome::Retrying);
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Delayed);
    assert_eq!(job.error.as_deref(), Some("provider timed out"));
    assert_eq!(store.counts().await.unwrap().delayed, 1);
    assert!(claim_one(&store).await.is_none(), "not due yet");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let claim = claim_one(&store).await.expect("due retry");
    assert_eq!(claim.job.attempts_made, 2);
    let finished = store
        .finish(&claim.lease, retry, Cost::default(), None)
        .await
        .unwrap();
    assert_eq!(finished.outcome, FinishOutcome::Failed, "no attempt left");
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts_made), (JobState::Failed, 2));
    let events = store.events_after(&id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["active", "retrying", "active", "failed"]);
    let retrying = events[1].body();
    assert_eq!(
        (
            retrying["attemptsMade"].as_u64(),
            retrying["delayMs"].as_u64()
        ),
        (Some(1), Some(600))
    );
    let failed = events[3].body();
    assert_eq!(failed["attemptsMade"], 2);
    assert_eq!(failed["error"], "provider timed out");
    assert_eq!(
        store
            .outcomes(Duration::from_secs(300))
            .await
            .unwrap()
            .failed,
        1
    );
}

async fn permanent_failure_skips_retries(store: DynStore) {
    let id = submit(&store, 1, 3).await;
    let claim = claim_one(&store).await.unwrap();
    let failed = Outcome::Failed {
        error: "provider rejected the request",
        code: Some("PROVIDER_REJECTED"),
        duration_ms: 1,
    };
    let finished = store
        .finish(&claim.lease, failed, Cost::default(), None)
        .await
        .unwrap();
    assert_eq!(finished.outcome, FinishOutcome::Failed);
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts_made), (JobState::Failed, 1));
    assert_eq!(job.error_code.as_deref(), Some("PROVIDER_REJECTED"));
    assert_eq!(store.counts().await.unwrap().failed, 1);
}

async fn a_repeated_finish_changes_nothing(store: DynStore) {
    let id = submit(&store, 1, 3).await;
    let claim = claim_one(&store).await.unwrap();
    assert_eq!(complete(&store, &claim, 9).await, FinishOutcome::Completed);
    // The first reply was lost and the worker tries again.
    assert_eq!(complete(&store, &claim, 9).await, FinishOutcome::Completed);
    let spend = store.budget_state().await.unwrap().spend;
    assert_eq!(
        (spend.spent_micros, spend.jobs),
        (9, 1),
        "cost counted once"
    );
    assert_eq!(store.events_after(&id, 0).await.unwrap().len(), 2);
}

async fn a_repeated_claim_answers_with_its_first_jobs_and_takes_no_more(store: DynStore) {
    let ids = [
        submit(&store, 1, 3).await,
        submit(&store, 2, 3).await,
        submit(&store, 3, 3).await,
        submit(&store, 4, 3).await,
    ];
    let request = claim_request(2);
    let first = store.claim(&request).await.unwrap();
    let first_ids: Vec<_> = first.jobs.iter().map(|c| c.job.id.clone()).collect();
    assert_eq!(first_ids, ids[..2]);
    // The first reply was lost: the worker sends the same call again.
    let repeat = store.claim(&request).await.unwrap();
    let repeat_ids: Vec<_> = repeat.jobs.iter().map(|c| c.job.id.clone()).collect();
    assert_eq!(repeat_ids, first_ids, "the first call's jobs, nothing more");
    for (a, b) in first.jobs.iter().zip(&repeat.jobs) {
        assert_eq!(a.lease, b.lease);
        assert_eq!(a.reserved_micros, b.reserved_micros);
        assert_eq!(a.job.request, b.job.request);
        assert_eq!(
            (a.job.attempts_made, a.job.event_seq, a.job.created_at),
            (b.job.attempts_made, b.job.event_seq, b.job.created_at)
        );
    }
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active), (2, 2));
    let reserved_after = reserved(&store).await;
    let expected: u64 = first.jobs.iter().map(|c| c.reserved_micros).sum();
    assert_eq!(reserved_after, expected, "reserved once");
    for id in &ids[..2] {
        let events = store.events_after(id, 0).await.unwrap();
        assert_eq!(kinds(&events), ["active"], "one attempt started");
    }
    // A job the call took and already finished is not handed out again by a late repeat.
    assert_eq!(
        complete(&store, &first.jobs[0], 1).await,
        FinishOutcome::Completed
    );
    let late = store.claim(&request).await.unwrap();
    let late_ids: Vec<_> = late.jobs.iter().map(|c| c.job.id.clone()).collect();
    assert_eq!(late_ids, ids[1..2]);
    // A new call takes the next jobs.
    let next = store.claim(&claim_request(2)).await.unwrap();
    let next_ids: Vec<_> = next.jobs.iter().map(|c| c.job.id.clone()).collect();
    assert_eq!(next_ids, ids[2..]);
}

async fn a_repeated_finish_answers_with_the_jobs_its_first_try_claimed(store: DynStore) {
    let ids = [
        submit(&store, 1, 3).await,
        submit(&store, 2, 3).await,
        submit(&store, 3, 3).await,
    ];
    let claim = claim_one(&store).await.unwrap();
    let r = result();
    let done = Outcome::Completed {
        result: &r,
        duration_ms: 1,
    };
    let next = claim_request(1);
    let first = store
        .finish(&claim.lease, done, cost(4), Some(&next))
        .await
        .unwrap();
    let repeat = store
        .finish(&claim.lease, done, cost(4), Some(&next))
        .await
        .unwrap();
    assert_eq!(
        (first.outcome, repeat.outcome),
        (FinishOutcome::Completed, FinishOutcome::Completed)
    );
    let first_ids: Vec<_> = first
        .claimed
        .jobs
        .iter()
        .map(|c| c.job.id.clone())
        .collect();
    let repeat_ids: Vec<_> = repeat
        .claimed
        .jobs
        .iter()
        .map(|c| c.job.id.clone())
        .collect();
    assert_eq!(first_ids, ids[1..2]);
    assert_eq!(repeat_ids, first_ids);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (1, 1, 1));
    let spend = store.budget_state().await.unwrap().spend;
    assert_eq!((spend.spent_micros, spend.jobs), (4, 1));
}

async fn expired_lease_requeues_releases_the_reservation_and_counts_late_cost(store: DynStore) {
    let id = submit(&store, 1, 3).await;
    let short = ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        lease: Duration::from_millis(200),
        ..claim_request(1)
    };
    let stale = store.claim(&short).await.unwrap().jobs.remove(0);
    assert!(stale.reserved_micros > 0);
    assert_eq!(reserved(&store).await, stale.reserved_micros);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = store.recover_stalled(2).await.unwrap();
    assert_eq!((report.requeued, report.failed), (1, 0));
    assert_eq!(
        reserved(&store).await,
        0,
        "recovery released the dead worker's reservation"
    );
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.stalls), (JobState::Waiting, 1));
    let fresh = claim_one(&store).await.unwrap();
    assert_eq!(fresh.job.attempts_made, 2);
    // The first worker wakes up and reports: its outcome is not recorded, but the call it
    // made was paid for, so its cost counts; the live reservation stays.
    assert_eq!(complete(&store, &stale, 11).await, FinishOutcome::LeaseLost);
    assert_eq!(
        store.job(&id).await.unwrap().unwrap().state,
        JobState::Active
    );
    let spend = store.budget_state().await.unwrap().spend;
    assert_eq!(spend.spent_micros, 11);
    assert_eq!(spend.reserved_micros, fresh.reserved_micros);
    assert_eq!(complete(&store, &fresh, 13).await, FinishOutcome::Completed);
    let spend = store.budget_state().await.unwrap().spend;
    assert_eq!((spend.spent_micros, spend.reserved_micros), (24, 0));
    let events = store.events_after(&id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["active", "waiting", "active", "completed"]);
    let waiting = events[1].body();
    assert_eq!(
        (waiting["reason"].as_str(), waiting["stalls"].as_u64()),
        (Some("stalled"), Some(1))
    );
}

async fn too_many_stalls_fail_the_job(store: DynStore) {
    let id = submit(&store, 1, 5).await;
    let short = ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        lease: Duration::from_millis(100),
        ..claim_request(1)
    };
    for _ in 0..2 {
        store.claim(&short).await.unwrap().jobs.remove(0);
        tokio::time::sleep(Duration::from_millis(250)).await;
        store.recover_stalled(1).await.unwrap();
    }
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_code.as_deref(), Some("JOB_STALLED"));
    assert!(
        job.error
            .unwrap()
            .contains("stalled more than allowable limit")
    );
    assert_eq!(reserved(&store).await, 0);
}

async fn renewed_leases_are_not_recovered(store: DynStore) {
    submit(&store, 1, 3).await;
    submit(&store, 2, 3).await;
    let short = ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        lease: Duration::from_millis(300),
        ..claim_request(2)
    };
    let claims = store.claim(&short).await.unwrap().jobs;
    let leases: Vec<_> = claims.iter().map(|c| c.lease.clone()).collect();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let renewed = store
            .renew(&leases, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(renewed, [true, true]);
    }
    assert_eq!(store.recover_stalled(2).await.unwrap().requeued, 0);
    let stranger = flashcard_store::Lease {
        token: "not-mine".into(),
        ..leases[0].clone()
    };
    assert_eq!(store.renew(&[stranger], LEASE).await.unwrap(), [false]);
}

async fn release_gives_the_job_back_first_without_using_an_attempt(store: DynStore) {
    let a = submit(&store, 1, 3).await;
    let b = submit(&store, 2, 3).await;
    let claim = claim_one(&store).await.unwrap();
    assert_eq!(claim.job.id, a);
    for reason in [WaitReason::Released, WaitReason::ProviderUnavailable] {
        let claim = if reason == WaitReason::Released {
            claim.clone()
        } else {
            claim_one(&store).await.unwrap()
        };
        let release = Outcome::Release { reason };
        let finished = store
            .finish(&claim.lease, release, Cost::default(), None)
            .await
            .unwrap();
        assert_eq!(finished.outcome, FinishOutcome::Released);
        let job = store.job(&a).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempts_made), (JobState::Waiting, 0));
        assert_eq!(reserved(&store).await, 0);
        let last = store.events_after(&a, 0).await.unwrap().pop().unwrap();
        assert_eq!(last.body()["reason"], reason.as_str());
    }
    let next = claim_one(&store).await.unwrap();
    assert_eq!(next.job.id, a, "a released job goes first");
    assert_ne!(next.job.id, b);
}

async fn event_feed_and_history_carry_the_same_text(store: DynStore) {
    // The feed delivers only the jobs its reader follows.
    let (followed, ignored) = (submission(1, 3), submission(2, 3));
    let (id, other) = (followed.job_id.clone(), ignored.job_id.clone());
    let want = id.clone();
    let mut feed = store
        .event_feed(Arc::new(move |job: &str| job == want))
        .await
        .unwrap();
    for s in [ignored, followed] {
        assert!(matches!(
            store.submit(s).await.unwrap(),
            Admission::Accepted { .. }
        ));
    }
    for _ in 0..2 {
        let claim = claim_one(&store).await.unwrap();
        complete(&store, &claim, 1).await;
    }
    let mut live = Vec::new();
    while live.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .expect("feed delivers")
            .expect("feed open");
        let flashcard_store::FeedItem::Event(event) = item else {
            continue;
        };
        assert_ne!(*event.job_id, *other, "an event of a job nobody follows");
        live.push(event);
    }
    let history = store.events_after(&id, 0).await.unwrap();
    assert_eq!(live, history);
    // `completed` reaches a live follower with the job's result.
    assert_eq!(live[1].kind(), "completed");
    assert_eq!(live[1].body()["result"]["tokenUsage"], 10);
    assert_eq!(store.events_after(&id, 1).await.unwrap().len(), 1);
    assert!(store.events_after(&id, 2).await.unwrap().is_empty());
    assert!(store.events_after("nope", 0).await.unwrap().is_empty());
    // The stored text is the SSE payload: seq and jobId first, then the rendered body.
    let text = std::str::from_utf8(&history[0].data).unwrap();
    assert!(
        text.starts_with(&format!(
            "{{\"seq\":1,\"jobId\":\"{id}\",\"attemptsMade\":1,"
        )),
        "{text}"
    );
    let body: Value = history[0].body();
    assert_eq!(body["message"], "Job is now being processed");
    assert_eq!(body["worker"], "w1");
}

async fn event_texts_are_exactly_the_rendered_bodies_numbered(store: DynStore) {
    let id = submit(&store, 1, 3).await;
    let request = ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        started: Some(ProgressNote {
            stage: "generating",
            percent: 10,
            message: "Generating",
        }),
        ..claim_request(1)
    };
    let claim = store.claim(&request).await.unwrap().jobs.remove(0);
    complete(&store, &claim, 0).await;
    let events = store.events_after(&id, 0).await.unwrap();
    let text = |i: usize| String::from_utf8(events[i].data.to_vec()).unwrap();
    let stamp = |i: usize| events[i].body()["timestamp"].as_str().unwrap().to_owned();
    // Both backends produce these exact texts: seq, jobId and counters first, the rendered body
    // after, and for `completed` the result last.
    assert_eq!(
        text(0),
        format!(
            r#"{{"seq":1,"jobId":"{id}","attemptsMade":1,"type":"active","message":"Job is now being processed","worker":"w1","timestamp":"{}"}}"#,
            stamp(0)
        )
    );
    assert_eq!(
        text(1),
        format!(
            r#"{{"seq":2,"jobId":"{id}","cardCount":3,"type":"progress","stage":"generating","percent":10,"message":"Generating","timestamp":"{}"}}"#,
            stamp(1)
        )
    );
    assert_eq!(
        text(2),
        format!(
            r#"{{"seq":3,"jobId":"{id}","type":"completed","duration":5,"timestamp":"{}","result":{}}}"#,
            stamp(2),
            serde_json::to_string(&result()).unwrap()
        )
    );
}

async fn retention_trims_oldest_finished_jobs_and_only_their_own_key_mappings(store: DynStore) {
    let mut ids = Vec::new();
    for n in 0..3 {
        let s = with_key(submission(n, 3), "carol", &format!("k{n}"));
        let Admission::Accepted { job_id } = store.submit(s).await.unwrap() else {
            panic!()
        };
        let claim = claim_one(&store).await.unwrap();
        complete(&store, &claim, 0).await;
        ids.push(job_id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let keep_two = Retention {
        max_age: Duration::from_secs(3600),
        max_count: 2,
    };
    assert_eq!(store.trim_finished(keep_two).await.unwrap(), 1);
    assert!(store.job(&ids[0]).await.unwrap().is_none());
    assert!(store.events_after(&ids[0], 0).await.unwrap().is_empty());
    assert!(store.job(&ids[1]).await.unwrap().is_some());
    // The trimmed job's key is free again.
    let reuse = store
        .submit(with_key(submission(0, 3), "carol", "k0"))
        .await
        .unwrap();
    assert!(matches!(reuse, Admission::Accepted { .. }), "{reuse:?}");
    let none = Retention {
        max_age: Duration::ZERO,
        max_count: 0,
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.trim_finished(none).await.unwrap(), 2);
    // The waiting job that reused k0 keeps its mapping.
    let replay = store
        .submit(with_key(submission(0, 3), "carol", "k0"))
        .await
        .unwrap();
    assert!(matches!(replay, Admission::Replayed { .. }), "{replay:?}");
}

async fn worker_heartbeats_expire(store: DynStore) {
    let info = WorkerInfo {
        id: "w1".into(),
        pod: "worker-0".into(),
        active: 2,
        concurrency: 4,
        breaker: "closed".into(),
        draining: false,
        last_seen: 0,
    };
    store
        .heartbeat(&info, Duration::from_millis(300))
        .await
        .unwrap();
    let workers = store.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        (workers[0].pod.as_str(), workers[0].active),
        ("worker-0", 2)
    );
    assert!(workers[0].last_seen > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.workers().await.unwrap().is_empty());
    store.heartbeat(&info, LEASE).await.unwrap();
    store.remove_worker("w1").await.unwrap();
    assert!(store.workers().await.unwrap().is_empty());
}

async fn kill_switch_round_trip(store: DynStore) {
    assert!(!store.budget_state().await.unwrap().kill_switch.enabled);
    let on = KillSwitch::manual(SetBy::Admin, Some("testing".into()), 1);
    store.set_kill_switch(&on).await.unwrap();
    let read = store.budget_state().await.unwrap().kill_switch;
    assert_eq!(read, on);
    let refused = store.submit(submission(1, 3)).await.unwrap();
    let Admission::Refused(ks) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(ks.set_by, Some(SetBy::Admin));
    assert!(!store.clear_kill_switch_if(SetBy::Budget).await.unwrap());
    assert!(store.clear_kill_switch_if(SetBy::Admin).await.unwrap());
    assert!(!store.budget_state().await.unwrap().kill_switch.enabled);
    assert!(matches!(
        store.submit(submission(1, 3)).await.unwrap(),
        Admission::Accepted { .. }
    ));
}

async fn reservations_hold_the_budget_and_a_job_that_cannot_fit_waits_then_fails(store: DynStore) {
    // Each job reserves its text's bytes (53 or so); the limit covers two of them.
    let a = submit(&store, 1, 3).await;
    let b = submit(&store, 2, 3).await;
    let c = submit(&store, 3, 3).await;
    let per_job = flashcard_core::job::input_bytes(&request(1));
    set_limit(&store, per_job * 2 + per_job / 2).await;
    let claimed = store.claim(&claim_request(3)).await.unwrap();
    assert_eq!(
        claimed.jobs.len(),
        2,
        "the third does not fit next to two reservations"
    );
    assert!(claimed.budget_blocked);
    assert_eq!(reserved(&store).await, per_job * 2);
    let waiting = store.job(&c).await.unwrap().unwrap();
    assert_eq!(
        (waiting.state, waiting.attempts_made),
        (JobState::Waiting, 0)
    );
    let last = store.events_after(&c, 0).await.unwrap().pop().unwrap();
    assert_eq!(last.body()["reason"], "budget");
    // Blocked again: no second budget event.
    assert!(store.claim(&claim_request(1)).await.unwrap().budget_blocked);
    assert_eq!(store.events_after(&c, 0).await.unwrap().len(), 1);
    // The first job costs less than reserved; the third now fits.
    let first = &claimed.jobs[0];
    assert_eq!(first.job.id, a);
    let finished = store
        .finish(
            &first.lease,
            Outcome::Completed {
                result: &result(),
                duration_ms: 1,
            },
            cost(per_job / 4),
            Some(&claim_request(1)),
        )
        .await
        .unwrap();
    assert_eq!(finished.claimed.jobs.len(), 1);
    let third = finished.claimed.jobs[0].clone();
    assert_eq!(third.job.id, c);
    assert_eq!(reserved(&store).await, per_job * 2);
    // The second costs three times its reservation: the overrun is settled and counted.
    let second = claimed.jobs.iter().find(|j| j.job.id == b).unwrap();
    let finished = store
        .finish(
            &second.lease,
            Outcome::Completed {
                result: &result(),
                duration_ms: 1,
            },
            cost(per_job * 3),
            None,
        )
        .await
        .unwrap();
    assert_eq!(finished.overrun_micros, per_job * 2);
    assert!(finished.budget_stopped, "spend reached the limit");
    let state = store.budget_state().await.unwrap();
    assert_eq!(state.spend.spent_micros, per_job / 4 + per_job * 3);
    assert_eq!(state.spend.overrun_micros, per_job * 2);
    assert_eq!(
        state.spend.reserved_micros, per_job,
        "the third job's reservation"
    );
    assert_eq!(state.kill_switch.set_by, Some(SetBy::Budget));
    assert!(
        state
            .kill_switch
            .reason
            .unwrap()
            .contains("Budget limit reached")
    );
    // New jobs are refused while the stop holds.
    assert!(matches!(
        store.submit(submission(4, 3)).await.unwrap(),
        Admission::Refused(_)
    ));
    // Raising the limit above the spend ends the stop by itself.
    set_limit(&store, per_job * 10).await;
    assert!(!store.budget_state().await.unwrap().kill_switch.enabled);
    let d = submit(&store, 5, 3).await;
    // Lowering it again: a job that cannot fit with nothing else reserved fails, and the stop
    // switches on.
    complete(&store, &third, 0).await;
    assert_eq!(reserved(&store).await, 0);
    set_limit(&store, per_job * 3 + per_job / 4 + per_job / 2).await;
    let claimed = store.claim(&claim_request(1)).await.unwrap();
    assert!(claimed.jobs.is_empty());
    assert_eq!(claimed.budget_failed, 1);
    let failed = store.job(&d).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error_code.as_deref(), Some(BUDGET_EXHAUSTED_CODE));
    let ks = store.budget_state().await.unwrap().kill_switch;
    assert_eq!((ks.enabled, ks.set_by), (true, Some(SetBy::Budget)));
    assert_eq!(reserved(&store).await, 0);
}

async fn a_budget_from_flags_never_replaces_the_operator_s(store: DynStore) {
    let state = store.budget_state().await.unwrap();
    assert!(!state.stored);
    assert_eq!(state.config.limit_micros, 0);
    let flags = BudgetConfig {
        limit_micros: 5,
        period: BudgetPeriod::Daily,
        warn_percent: 50.0,
        enforce: true,
        source: BudgetSource::Flags,
    };
    store.set_budget(&flags).await.unwrap();
    let state = store.budget_state().await.unwrap();
    assert!(state.stored);
    assert_eq!(state.config, flags);
    assert_eq!(state.period, BudgetPeriod::Daily.current_key());
    set_limit(&store, 7).await;
    store.set_budget(&flags).await.unwrap();
    let state = store.budget_state().await.unwrap();
    assert_eq!(
        (state.config.limit_micros, state.config.source),
        (7, BudgetSource::Operator)
    );
}

async fn spend_at_the_limit_refuses_and_an_advisory_limit_only_reports(store: DynStore) {
    set_limit(&store, 10).await;
    let id = submit(&store, 1, 3).await;
    let free = ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        pricing: Pricing::default(),
        ..claim_request(1)
    };
    let claim = store.claim(&free).await.unwrap().jobs.remove(0);
    assert_eq!(claim.job.id, id);
    complete(&store, &claim, 10).await;
    let refused = store.submit(submission(2, 3)).await.unwrap();
    assert!(matches!(refused, Admission::Refused(_)), "{refused:?}");
    store
        .set_budget(&BudgetConfig {
            limit_micros: 10,
            period: BudgetPeriod::Monthly,
            warn_percent: 80.0,
            enforce: false,
            source: BudgetSource::Operator,
        })
        .await
        .unwrap();
    assert!(matches!(
        store.submit(submission(3, 3)).await.unwrap(),
        Admission::Accepted { .. }
    ));
}

async fn rate_limit_counts_per_owner(store: DynStore) {
    let limited = |n: u32, owner: &str| Submission {
        owner: owner.to_owned(),
        rate_limit: Some(RateLimit {
            max: 2,
            window: Duration::from_secs(60),
            subject: owner.to_owned(),
        }),
        ..submission(n, 3)
    };
    for n in 0..2 {
        assert!(matches!(
            store.submit(limited(n, "a")).await.unwrap(),
            Admission::Accepted { .. }
        ));
    }
    let Admission::RateLimited { retry_after } = store.submit(limited(3, "a")).await.unwrap()
    else {
        panic!("third submission of a is limited")
    };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
    assert!(matches!(
        store.submit(limited(4, "b")).await.unwrap(),
        Admission::Accepted { .. }
    ));
    assert_eq!(store.counts().await.unwrap().waiting, 3);
    // The limit counts its subject, not the owner: anonymous owners (one token each) behind
    // one address share that address's limit.
    let anonymous = |n: u32, token: &str| Submission {
        owner: format!("anon:{token}"),
        rate_limit: Some(RateLimit {
            max: 1,
            window: Duration::from_secs(60),
            subject: "ip:192.0.2.7".into(),
        }),
        ..submission(n, 3)
    };
    assert!(matches!(
        store.submit(anonymous(5, "t1")).await.unwrap(),
        Admission::Accepted { .. }
    ));
    assert!(matches!(
        store.submit(anonymous(6, "t2")).await.unwrap(),
        Admission::RateLimited { .. }
    ));
}

async fn the_epoch_is_created_once_and_spend_can_be_restored(store: DynStore) {
    assert!(store.budget_state().await.unwrap().epoch.is_none());
    let (epoch, created) = store.ensure_epoch().await.unwrap();
    assert!(created);
    let (again, created) = store.ensure_epoch().await.unwrap();
    assert!(!created);
    assert_eq!(again, epoch);
    assert_eq!(store.budget_state().await.unwrap().epoch, Some(epoch));
    let period = store.budget_state().await.unwrap().period;
    let spend = store.restore_spend(&period, 1234).await.unwrap();
    assert_eq!((spend.spent_micros, spend.restored_micros), (1234, 1234));
    // Never lowers what is there.
    let spend = store.restore_spend(&period, 1000).await.unwrap();
    assert_eq!((spend.spent_micros, spend.restored_micros), (1234, 1234));
}

async fn concurrent_claims_hand_out_each_job_once(store: DynStore) {
    for n in 0..40 {
        submit(&store, n, 3).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claimed = store.claim(&claim_request(3)).await.unwrap();
                if claimed.jobs.is_empty() {
                    break got;
                }
                got.extend(claimed.jobs.into_iter().map(|c| c.job.id));
            }
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

/// The signals that arrive within `window`, summed.
async fn signals_within(
    signals: &mut futures::stream::BoxStream<'static, u64>,
    window: Duration,
) -> u64 {
    let deadline = tokio::time::Instant::now() + window;
    let mut total = 0;
    while let Ok(Some(n)) = tokio::time::timeout_at(deadline, signals.next()).await {
        total += n;
    }
    total
}

/// Waits up to `timeout` for the first signal; returns it (0: none came).
async fn first_signal(
    signals: &mut futures::stream::BoxStream<'static, u64>,
    timeout: Duration,
) -> u64 {
    tokio::time::timeout(timeout, signals.next())
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

async fn submit_to_an_empty_queue_signals_work_once(store: DynStore) {
    let mut signals = store.work_signals().await.unwrap();
    let mut second = store.work_signals().await.unwrap();
    assert_eq!(
        signals_within(&mut signals, Duration::from_millis(200)).await,
        0
    );
    submit(&store, 1, 3).await;
    assert_eq!(first_signal(&mut signals, Duration::from_secs(5)).await, 1);
    // Every follower sees it; nothing takes it away from the workers' wake-up.
    assert_eq!(first_signal(&mut second, Duration::from_secs(5)).await, 1);
    // The queue already waits: more jobs signal nothing.
    submit(&store, 2, 3).await;
    submit(&store, 3, 3).await;
    assert_eq!(
        signals_within(&mut signals, Duration::from_millis(700)).await,
        0
    );
    // Drained, then a job again: one signal.
    let claimed = store.claim(&claim_request(10)).await.unwrap();
    assert_eq!(claimed.jobs.len(), 3);
    submit(&store, 4, 3).await;
    assert_eq!(first_signal(&mut signals, Duration::from_secs(5)).await, 1);
    assert_eq!(
        signals_within(&mut signals, Duration::from_millis(500)).await,
        0
    );
    // A refused submission enqueues nothing and signals nothing.
    store.claim(&claim_request(10)).await.unwrap();
    let on = KillSwitch::manual(SetBy::Admin, Some("testing".into()), 1);
    store.set_kill_switch(&on).await.unwrap();
    assert!(matches!(
        store.submit(submission(5, 3)).await.unwrap(),
        Admission::Refused(_)
    ));
    assert_eq!(
        signals_within(&mut signals, Duration::from_millis(500)).await,
        0
    );
}

async fn purge_removes_every_key_of_the_pipeline(store: DynStore) {
    // Something of every kind: jobs in each state, events, idempotency and rate-limit keys,
    // spend, budget, kill-switch, epoch, workers, outcome counters, signals.
    let done = submit(&store, 1, 3).await;
    let claim = claim_one(&store).await.expect("a job");
    assert_eq!(complete(&store, &claim, 7).await, FinishOutcome::Completed);
    submit(&store, 2, 3).await;
    let keyed = with_key(submission(3, 3), "owner", "k1");
    let Admission::Accepted { job_id: keyed_id } = store.submit(keyed).await.unwrap() else {
        panic!("keyed submission accepted")
    };
    let limited = Submission {
        rate_limit: Some(RateLimit {
            max: 5,
            window: Duration::from_secs(60),
            subject: submission(4, 3).owner,
        }),
        ..submission(4, 3)
    };
    assert!(matches!(
        store.submit(limited).await.unwrap(),
        Admission::Accepted { .. }
    ));
    claim_one(&store).await.expect("an active job");
    set_limit(&store, 1_000_000).await;
    store.ensure_epoch().await.unwrap();
    let info = WorkerInfo {
        id: "w1".into(),
        pod: "worker-0".into(),
        active: 1,
        concurrency: 4,
        breaker: "closed".into(),
        draining: false,
        last_seen: 0,
    };
    store.heartbeat(&info, LEASE).await.unwrap();
    let on = KillSwitch::manual(SetBy::Admin, Some("testing".into()), 1);
    store.set_kill_switch(&on).await.unwrap();

    let removed = store.purge().await.unwrap();
    assert!(removed >= 10, "removed {removed}");
    assert_eq!(store.purge().await.unwrap(), 0, "nothing left to remove");

    let counts = store.counts().await.unwrap();
    assert_eq!(
        (
            counts.waiting,
            counts.active,
            counts.delayed,
            counts.completed,
            counts.failed
        ),
        (0, 0, 0, 0, 0)
    );
    assert!(store.job(&done).await.unwrap().is_none());
    assert!(store.events_after(&done, 0).await.unwrap().is_empty());
    assert!(store.workers().await.unwrap().is_empty());
    let state = store.budget_state().await.unwrap();
    assert!(!state.stored, "the budget is gone");
    assert!(!state.kill_switch.enabled, "the kill-switch is gone");
    assert_eq!(state.spend.spent_micros, 0);
    assert!(state.epoch.is_none());
    assert_eq!(
        store
            .outcomes(Duration::from_secs(600))
            .await
            .unwrap()
            .completed,
        0
    );
    // The idempotency mapping went with its job: the same key makes a new job.
    let again = store
        .submit(with_key(submission(3, 3), "owner", "k1"))
        .await
        .unwrap();
    let Admission::Accepted { job_id } = again else {
        panic!("a fresh job after the purge: {again:?}")
    };
    assert_ne!(job_id, keyed_id);
    assert_eq!(
        store.counts().await.unwrap().waiting,
        1,
        "the store works on"
    );
}

async fn recent_finished_jobs_and_outcomes_per_minute_are_read_back(store: DynStore) {
    assert!(store.recent_finished(10).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = submit(&store, n, 1).await;
        let claim = claim_one(&store).await.unwrap();
        if n == 1 {
            let failed = Outcome::Failed {
                error: "provider rejected the request",
                code: None,
                duration_ms: 1,
            };
            store
                .finish(&claim.lease, failed, Cost::default(), None)
                .await
                .unwrap();
        } else {
            assert_eq!(complete(&store, &claim, 10).await, FinishOutcome::Completed);
        }
        ids.push(id);
        // Distinct finish times, so the order is defined.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // A job still waiting is not finished.
    submit(&store, 9, 1).await;

    let recent = store.recent_finished(10).await.unwrap();
    let order: Vec<&str> = recent.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(order, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    let states: Vec<JobState> = recent.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [JobState::Completed, JobState::Failed, JobState::Completed]
    );
    for (job, id) in recent.iter().zip(ids.iter().rev()) {
        let record = store.job(id).await.unwrap().unwrap();
        assert_eq!(job.created_at, record.created_at);
        assert_eq!(job.started_at, record.started_at);
        assert_eq!(Some(job.finished_at), record.finished_at);
        let started = job.started_at.expect("started");
        assert!(
            job.created_at <= started && started <= job.finished_at,
            "{job:?}"
        );
    }
    // Bounded: the newest first.
    let newest = store.recent_finished(2).await.unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0].id, ids[2]);
    assert!(store.recent_finished(0).await.unwrap().is_empty());

    // Per minute, oldest first, the same totals as `outcomes`.
    let window = Duration::from_secs(5 * 60);
    let minutes = store.outcomes_by_minute(window).await.unwrap();
    assert_eq!(minutes.len(), 5);
    assert!(minutes.windows(2).all(|w| w[0].minute + 1 == w[1].minute));
    let total = store.outcomes(window).await.unwrap();
    let completed: u64 = minutes.iter().map(|m| m.completed).sum();
    let failed: u64 = minutes.iter().map(|m| m.failed).sum();
    assert_eq!((completed, failed), (total.completed, total.failed));
    assert_eq!((completed, failed), (2, 1));
}

/// Cancellation in every state: a waiting job never runs, a delayed one is never retried, an
/// active one loses its lease and its reservation (its worker's late finish is not recorded,
/// but its cost counts); each ends `cancelled` with one terminal event; a repeat changes
/// nothing; a finished job and another owner's job are refused; retention trims cancelled jobs.
async fn cancellation_in_every_state(store: DynStore) {
    use flashcard_store::{Cancellation, Canceller};
    set_limit(&store, 1_000_000).await;
    let waiting = submit(&store, 1, 3).await;
    let owner = store.job(&waiting).await.unwrap().unwrap().owner;
    assert_eq!(
        store
            .cancel(&waiting, Canceller::Owner("someone-else"))
            .await
            .unwrap(),
        Cancellation::Missing,
        "another owner's job is not theirs to cancel"
    );
    assert_eq!(
        store
            .cancel(&waiting, Canceller::Owner(&owner))
            .await
            .unwrap(),
        Cancellation::Cancelled {
            was: JobState::Waiting
        }
    );
    assert_eq!(
        store
            .cancel(&waiting, Canceller::Owner(&owner))
            .await
            .unwrap(),
        Cancellation::AlreadyCancelled
    );
    assert!(
        claim_one(&store).await.is_none(),
        "a cancelled job never runs"
    );
    assert_eq!(store.counts().await.unwrap().waiting, 0);
    let job = store.job(&waiting).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.finished_at.is_some());
    let events = store.events_after(&waiting, 0).await.unwrap();
    assert_eq!(kinds(&events), ["cancelled"]);
    assert_eq!(events[0].body()["by"], "owner");
    assert_eq!(events[0].body()["attemptsMade"], 0);

    // Active: the lease goes, and the reservation with it.
    let active = submit(&store, 2, 3).await;
    let claim = claim_one(&store).await.unwrap();
    assert_eq!(claim.job.id, active);
    assert_eq!(reserved(&store).await, claim.reserved_micros);
    assert_eq!(
        store.cancel(&active, Canceller::Admin).await.unwrap(),
        Cancellation::Cancelled {
            was: JobState::Active
        }
    );
    assert_eq!(reserved(&store).await, 0, "the reservation is released");
    assert_eq!(store.counts().await.unwrap().active, 0);
    assert_eq!(
        store
            .renew(std::slice::from_ref(&claim.lease), LEASE)
            .await
            .unwrap(),
        [false],
        "the worker learns at its next renewal"
    );
    // The worker aborts the call and reports what it may have cost: counted, not recorded.
    assert_eq!(complete(&store, &claim, 17).await, FinishOutcome::LeaseLost);
    let job = store.job(&active).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.result.is_none());
    let spend = store.budget_state().await.unwrap().spend;
    assert_eq!((spend.spent_micros, spend.reserved_micros), (17, 0));
    let events = store.events_after(&active, 0).await.unwrap();
    assert_eq!(kinds(&events), ["active", "cancelled"]);
    assert_eq!(events[1].body()["by"], "admin");
    assert_eq!(events[1].body()["attemptsMade"], 1);
    assert!(store.recover_stalled(2).await.unwrap() == Default::default());

    // Delayed: never retried.
    let delayed = submit(&store, 3, 3).await;
    let claim = claim_one(&store).await.unwrap();
    let retry = Outcome::Retry {
        error: "provider timed out",
        code: Some("PROVIDER_UNAVAILABLE"),
        delay: Duration::from_millis(200),
        duration_ms: 7,
    };
    store
        .finish(&claim.lease, retry, Cost::default(), None)
        .await
        .unwrap();
    assert_eq!(
        store.cancel(&delayed, Canceller::Admin).await.unwrap(),
        Cancellation::Cancelled {
            was: JobState::Delayed
        }
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        claim_one(&store).await.is_none(),
        "a cancelled retry never runs"
    );
    assert_eq!(store.counts().await.unwrap().delayed, 0);

    // Finished: nothing to cancel; unknown: missing.
    let done = submit(&store, 4, 3).await;
    let claim = claim_one(&store).await.unwrap();
    complete(&store, &claim, 1).await;
    assert_eq!(
        store.cancel(&done, Canceller::Admin).await.unwrap(),
        Cancellation::Finished(JobState::Completed)
    );
    assert_eq!(
        store.cancel("no-such-job", Canceller::Admin).await.unwrap(),
        Cancellation::Missing
    );

    // Retention trims cancelled jobs like finished ones.
    let trimmed = store
        .trim_finished(Retention {
            max_age: Duration::ZERO,
            max_count: 0,
        })
        .await
        .unwrap();
    assert_eq!(trimmed, 4);
    assert!(store.job(&waiting).await.unwrap().is_none());
}

async fn memory_store() -> DynStore {
    Arc::new(MemoryStore::new())
}

async fn redis_store() -> (crate::support::RedisServer, DynStore) {
    let server = crate::support::RedisServer::start();
    let pipeline = PipelineId::new(Some("tests"), "conformance").unwrap();
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
                // Names are DNS labels (63 characters at most): a prefix and a digest.
                let label: String = name.replace('_', "-").chars().take(40).collect();
                let label = format!("{label}-{}", &client_digest(name)[..8]);
                let pipeline = PipelineId::new(Some("tests"), &label).expect("pipeline name");
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
                let cluster = crate::support::RedisCluster::start();
                let cases: Vec<super::Case> = vec![
                    $((stringify!($case), |store| Box::pin(super::$case(store)))),*
                ];
                super::run_shared("redis cluster", &cluster.url(), cases).await;
            }
        }
        mod redis_sentinel {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn all_cases() {
                let setup = crate::support::RedisSentinel::start();
                let cases: Vec<super::Case> = vec![
                    $((stringify!($case), |store| Box::pin(super::$case(store)))),*
                ];
                super::run_shared("redis sentinel", &setup.url(), cases).await;
            }
        }
    };
}

conformance!(
    submit_claim_complete,
    claims_take_a_batch_in_order_and_finish_claims_the_next,
    started_progress_is_folded_into_the_claim,
    idempotency_replays_the_same_request_and_refuses_another_body,
    a_replay_is_answered_before_the_kill_switch_and_the_rate_limit,
    retries_through_delayed_then_fails,
    permanent_failure_skips_retries,
    a_repeated_finish_changes_nothing,
    a_repeated_claim_answers_with_its_first_jobs_and_takes_no_more,
    a_repeated_finish_answers_with_the_jobs_its_first_try_claimed,
    expired_lease_requeues_releases_the_reservation_and_counts_late_cost,
    too_many_stalls_fail_the_job,
    renewed_leases_are_not_recovered,
    release_gives_the_job_back_first_without_using_an_attempt,
    event_feed_and_history_carry_the_same_text,
    event_texts_are_exactly_the_rendered_bodies_numbered,
    retention_trims_oldest_finished_jobs_and_only_their_own_key_mappings,
    worker_heartbeats_expire,
    kill_switch_round_trip,
    reservations_hold_the_budget_and_a_job_that_cannot_fit_waits_then_fails,
    a_budget_from_flags_never_replaces_the_operator_s,
    spend_at_the_limit_refuses_and_an_advisory_limit_only_reports,
    rate_limit_counts_per_owner,
    the_epoch_is_created_once_and_spend_can_be_restored,
    concurrent_claims_hand_out_each_job_once,
    submit_to_an_empty_queue_signals_work_once,
    purge_removes_every_key_of_the_pipeline,
    recent_finished_jobs_and_outcomes_per_minute_are_read_back,
    cancellation_in_every_state,
    clients_take_turns_whatever_one_client_s_backlog,
    a_client_at_its_cap_waits_for_its_own_jobs_to_end,
    without_a_cap_one_client_takes_every_slot,
    a_cancelled_last_job_leaves_one_turn_per_client,
    a_released_job_goes_back_first_in_its_client_s_line,
);
