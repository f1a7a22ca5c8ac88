//! The Redis store's claim replies on one real redis-server: a record this version cannot read
//! fails that job alone (`JOB_UNREADABLE`), and missing hash fields leave no hole in a reply.

use std::time::Duration;

use flashcard_core::budget::Pricing;
use flashcard_core::job::{JobRequest, JobState};
use flashcard_core::keyspace::{Keyspace, PipelineId};
use flashcard_store::redis::RedisStore;
use flashcard_store::{Admission, CallId, ClaimRequest, Store, Submission, UNREADABLE_CODE};
use redis::AsyncCommands;

fn submission(n: u32) -> Submission {
    let request = JobRequest {
        content: format!("Ribosomes make proteins. Case {n}."),
        subject: "biology".into(),
        topic: "cells".into(),
        user_id: format!("user-{n}"),
        card_count: 3,
    };
    Submission::new(request, 3)
}

async fn submit(store: &RedisStore, n: u32) -> String {
    match store.submit(submission(n)).await.unwrap() {
        Admission::Accepted { job_id } => job_id,
        other => panic!("not accepted: {other:?}"),
    }
}

/// A redis-server, a store of pipeline `tests/<name>` on it, its keyspace and a plain connection.
async fn setup(
    name: &str,
) -> (
    crate::support::RedisServer,
    RedisStore,
    Keyspace,
    redis::aio::MultiplexedConnection,
) {
    let server = crate::support::RedisServer::start();
    let pipeline = PipelineId::new(Some("tests"), name).unwrap();
    let store = RedisStore::connect(&server.url(), &pipeline).await.unwrap();
    let raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (server, store, Keyspace::new(&pipeline), raw)
}

fn claim_request(max_jobs: u32) -> ClaimRequest<'static> {
    ClaimRequest {
        call_id: CallId::new(),
        worker_id: "w1",
        lease: Duration::from_secs(30),
        max_jobs,
        client_cap: 0,
        pricing: Pricing {
            input_micros_per_token: 1.0,
            ..Pricing::default()
        },
        started: None,
    }
}

#[tokio::test]
async fn an_unreadable_job_fails_alone_and_missing_fields_leave_no_hole() {
    let (_server, store, ks, mut raw) = setup("replies").await;
    let ids = [
        submit(&store, 1).await,
        submit(&store, 2).await,
        submit(&store, 3).await,
    ];
    // Job 2 was written by a newer version with a request shape this one does not know; job 3
    // lost optional fields (an older writer): neither may cost the batch.
    let _: () = raw
        .hset(ks.job(&ids[1]), "request", r#"{"contentV2":{"parts":[]}}"#)
        .await
        .unwrap();
    let _: () = raw
        .hdel(
            ks.job(&ids[2]),
            &["owner", "createdAt", "maxAttempts", "stalls"],
        )
        .await
        .unwrap();
    let claimed = store.claim(&claim_request(3)).await.unwrap();
    let got: Vec<_> = claimed.jobs.iter().map(|c| c.job.id.clone()).collect();
    assert_eq!(got, [ids[0].clone(), ids[2].clone()]);
    assert_eq!(claimed.unreadable, 1);
    let third = &claimed.jobs[1];
    assert_eq!(
        (
            third.job.owner.as_str(),
            third.job.created_at,
            third.job.max_attempts
        ),
        ("", 0, 1)
    );
    // The record reads back (the request as empty), failed with its code.
    let failed = store.job(&ids[1]).await.unwrap().expect("the record reads");
    assert_eq!(
        (failed.state, failed.error_code.as_deref()),
        (JobState::Failed, Some(UNREADABLE_CODE))
    );
    let (state, code): (String, String) = raw
        .hmget(ks.job(&ids[1]), &["state", "errorCode"])
        .await
        .unwrap();
    assert_eq!((state.as_str(), code.as_str()), ("failed", UNREADABLE_CODE));
    let events = store.events_after(&ids[1], 0).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind().to_owned()).collect();
    assert_eq!(kinds, ["active", "failed"]);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.active, counts.failed), (2, 1));
    // Only the two running jobs hold a reservation.
    let spend = store.budget_state().await.unwrap().spend;
    let held: u64 = claimed.jobs.iter().map(|c| c.reserved_micros).sum();
    assert_eq!(spend.reserved_micros, held);
}

/// The pipeline's stream is trimmed by age as well as length: `trim` drops entries older than
/// ten minutes (stream ids are the server's time) and keeps the recent ones.
#[tokio::test]
async fn trim_drops_stream_entries_older_than_the_stream_retention() {
    let (_server, store, ks, mut raw) = setup("stream-age").await;
    let now_ms = store.now_ms();
    for (n, at) in [now_ms - 3_600_000, now_ms - 700_000, now_ms - 60_000]
        .into_iter()
        .enumerate()
    {
        let _: String = raw
            .xadd(
                ks.events(),
                format!("{at}-{n}"),
                &[("job", "old"), ("seq", "1")],
            )
            .await
            .unwrap();
    }
    assert_eq!(raw.xlen::<_, u64>(ks.events()).await.unwrap(), 3);
    store
        .trim_finished(flashcard_store::Retention {
            max_age: Duration::from_secs(3600),
            max_count: 1000,
        })
        .await
        .unwrap();
    let ids: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(ks.events())
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        ids.len(),
        1,
        "entries older than ten minutes are gone: {ids:?}"
    );
}

/// `budget_state` writes nothing (it is a `no-writes` script): spend at an enforced limit with
/// no switch stored reads as the automatic stop, while the stored switch stays as it was until
/// the next write stores it.
#[tokio::test]
async fn budget_state_reports_the_stop_the_rule_makes_without_writing_it() {
    let (_server, store, ks, mut raw) = setup("read-only").await;
    let budget = flashcard_store::BudgetConfig {
        limit_micros: 1_000,
        ..flashcard_store::BudgetConfig::unlimited()
    };
    store.set_budget(&budget).await.unwrap();
    let period = store.budget_state().await.unwrap().period;
    let _: () = raw
        .hset(ks.spend(&period), "spentMicros", 1_000)
        .await
        .unwrap();
    let _: () = raw.del(ks.kill_switch()).await.unwrap();
    let state = store.budget_state().await.unwrap();
    assert!(state.kill_switch.enabled, "{state:?}");
    assert_eq!(
        state.kill_switch.set_by,
        Some(flashcard_store::SetBy::Budget)
    );
    let stored: bool = raw.exists(ks.kill_switch()).await.unwrap();
    assert!(!stored, "budget_state wrote the kill-switch");
    // The next write stores what was read: a submit is refused by the stop.
    assert!(matches!(
        store.submit(submission(1)).await.unwrap(),
        Admission::Refused { .. }
    ));
    let stored: bool = raw.exists(ks.kill_switch()).await.unwrap();
    assert!(stored);
}
