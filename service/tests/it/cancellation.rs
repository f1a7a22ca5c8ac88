//! `DELETE /api/jobs/{jobId}` with a real `standalone` process on a real `redis-server` and a
//! fake provider that takes 30 s per call: a waiting job never reaches the provider and its
//! follower's stream ends with `cancelled`; a running job's provider call is aborted within the
//! lease renewal (a third of the lease) and what it may have cost is counted, its reservation
//! released; a repeat answers the same; a finished job answers 409, an unknown one 404.

use std::time::{Duration, Instant};

use crate::support::llm::FakeLlm;
use crate::support::{RedisServer, STUDY_TEXT, Service, http, read_sse, wait_until};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "cancellation-admin";
const LEASE_MS: u64 = 1_500;

async fn submit(api: &Service, user: &str) -> String {
    let response = http()
        .post(api.url("/api/ai/generate-flashcards"))
        .json(
            &json!({"content": STUDY_TEXT, "subject": "biology", "topic": "cells",
            "userId": user, "cardCount": 3}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["jobId"].as_str().unwrap().to_owned()
}

async fn cancel(api: &Service, id: &str) -> (u16, Value) {
    let response = http()
        .delete(api.url(&format!("/api/jobs/{id}")))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn budget(api: &Service) -> Value {
    let response = http()
        .get(api.url("/api/admin/budget/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status: Value = response.json().await.unwrap();
    status["budget"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_jobs_never_run_or_stop_running_and_their_streams_end() {
    let redis = RedisServer::start();
    let llm = FakeLlm::start().await;
    llm.set_delay(Duration::from_secs(30));
    let url = redis.url();
    let lease = LEASE_MS.to_string();
    let mut args: Vec<String> = [
        "--redis-url",
        url.as_str(),
        "--worker-concurrency",
        "1",
        "--lease-ms",
        lease.as_str(),
        "--rate-limit-jobs",
        "0",
        "--price-input-per-1k",
        "0.05",
        "--price-output-per-1k",
        "0.01",
        "--budget-limit-usd",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(llm.provider_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let api = Service::start("standalone", &args, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await;

    // The first job runs (its call hangs); the second waits behind it (one slot).
    let running = submit(&api, "student-1").await;
    wait_until("the first call", Duration::from_secs(10), async || {
        llm.in_flight() == 1
    })
    .await;
    let waiting = submit(&api, "student-2").await;
    let follow = http()
        .get(api.url(&format!("/api/job-events?jobId={waiting}")))
        .send()
        .await
        .unwrap();
    let follower = tokio::spawn(read_sse(follow, 10, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The waiting job: cancelled at once, its stream ends with `cancelled`.
    let (status, body) = cancel(&api, &waiting).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")));
    let (events, ended) = follower.await.unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["connected", "cancelled"]);
    assert!(ended, "the stream ends after the terminal event");
    assert_eq!(events[1].data["by"], "owner");
    assert_eq!(
        cancel(&api, &waiting).await.0,
        200,
        "a repeat answers the same"
    );

    // The running job: its call is aborted within a lease renewal, its cost counted.
    let reserved = budget(&api).await["reservedUsd"].as_f64().unwrap();
    assert!(reserved > 0.0, "the running job holds a reservation");
    let t0 = Instant::now();
    let (status, body) = cancel(&api, &running).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")));
    wait_until(
        "the call to be aborted",
        Duration::from_secs(5),
        async || llm.in_flight() == 0,
    )
    .await;
    let aborted = t0.elapsed();
    wait_until(
        "the aborted call's cost",
        Duration::from_secs(5),
        async || budget(&api).await["spentUsd"].as_f64().unwrap_or(0.0) > 0.0,
    )
    .await;
    let after = budget(&api).await;
    assert_eq!(after["reservedUsd"].as_f64(), Some(0.0), "{after}");
    let spent = after["spentUsd"].as_f64().unwrap();
    assert!(
        (spent - reserved).abs() < 1e-6,
        "a call cut midway costs its reservation: spent {spent}, reserved {reserved}"
    );
    assert!(
        aborted <= Duration::from_millis(LEASE_MS),
        "aborted after {aborted:?}"
    );
    eprintln!("running job's provider call aborted {aborted:?} after DELETE (lease {LEASE_MS} ms)");
    assert_eq!(
        llm.calls(),
        1,
        "the cancelled waiting job never reached the provider"
    );

    // Both cancellations are counted.
    let metrics = http()
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cancelled = metrics
        .lines()
        .find(|l| l.starts_with("flashcards_jobs_total{") && l.contains("outcome=\"cancelled\""))
        .unwrap_or_else(|| panic!("no cancelled outcome in /metrics"));
    assert!(cancelled.ends_with(" 2"), "{cancelled}");

    // A finished job: 409; an unknown one: 404.
    llm.set_delay(Duration::ZERO);
    let done = submit(&api, "student-3").await;
    let finished = api.wait_finished(&done, Duration::from_secs(10)).await;
    assert_eq!(finished["status"], "completed");
    let (status, body) = cancel(&api, &done).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("JOB_ALREADY_FINISHED"))
    );
    let (status, body) = cancel(&api, "no-such-job").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("JOB_NOT_FOUND"))
    );
    let (status, body) = cancel(&api, "not a job").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_JOB_ID"))
    );
}
