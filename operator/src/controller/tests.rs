//! The whole controller (watches, triggers, reconcile) against the fake API server of
//! [`super::fake_api`].

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::Client;
use serde_json::json;
use tokio::time::Instant;

use super::fake_api::*;
use super::{Scope, run};
use crate::context::Context;
use crate::fixtures::{FakeConnector, FakeState};
use crate::metrics::Metrics;

fn context(client: Client) -> Arc<Context> {
    context_with_state(client).0
}

fn context_with_state(client: Client) -> (Arc<Context>, Arc<FakeState>) {
    let state = Arc::new(FakeState::default());
    let connector = Arc::new(FakeConnector::new(state.clone()));
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(Metrics::default()),
        connector,
    ));
    (ctx, state)
}

/// An owned child's watch event reconciles its pipeline at once: a hand-scaled worker
/// Deployment and a deleted Service are back within 2 s, and API pods that become ready turn the
/// pipeline Ready, although the pipeline's own poll is 5 minutes away.
#[tokio::test]
async fn owned_child_events_repair_drift_within_two_seconds() {
    let (fake, client) = FakeApi::start(vec![(PIPELINES, pipeline(300))]);
    let ctx = context(client.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client, Scope::All, ctx, async move {
        let _ = stop_rx.await;
    }));
    until("the first reconcile", Duration::from_secs(5), || {
        fake.get(PIPELINES, "study", "biology")
            .is_some_and(|p| !p["status"].is_null())
    })
    .await;
    settled(&fake).await;
    let status = fake.get(PIPELINES, "study", "biology").unwrap()["status"].clone();
    assert_eq!(status["conditions"][0]["reason"], "ApiNotReady");

    // kubectl scale deploy/biology-worker --replicas=5
    let t0 = Instant::now();
    fake.edit(DEPLOYMENTS, "study", "biology-worker", |d| {
        d["spec"]["replicas"] = json!(5)
    });
    until(
        "the worker Deployment to be re-applied",
        Duration::from_secs(5),
        || fake.get(DEPLOYMENTS, "study", "biology-worker").unwrap()["spec"]["replicas"] == 0,
    )
    .await;
    let scaled_back = t0.elapsed();
    let writes = fake.writes_since(t0);
    assert_eq!(
        writes,
        ["PATCH /apis/apps/v1/namespaces/study/deployments/biology-worker"],
        "only the drifted child is applied"
    );
    settled(&fake).await;

    // kubectl delete svc biology-worker
    let t1 = Instant::now();
    fake.delete(SERVICES, "study", "biology-worker");
    until(
        "the worker Service to be re-created",
        Duration::from_secs(5),
        || fake.get(SERVICES, "study", "biology-worker").is_some(),
    )
    .await;
    let recreated = t1.elapsed();
    settled(&fake).await;

    // The API pods become ready (the Deployment controller writes status).
    let t2 = Instant::now();
    fake.edit(DEPLOYMENTS, "study", "biology-api", |d| {
        d["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                             "readyReplicas": 2, "availableReplicas": 2});
    });
    until("Ready=True", Duration::from_secs(5), || {
        fake.get(PIPELINES, "study", "biology").unwrap()["status"]["conditions"][0]["status"]
            == "True"
    })
    .await;
    let ready = t2.elapsed();
    assert_eq!(
        fake.writes_since(t2),
        ["PATCH /apis/flashcards.dev/v1alpha1/namespaces/study/flashcardpipelines/biology/status"],
        "a status-only change of a Deployment is not drift"
    );
    eprintln!(
        "drift repair: hand-scaled Deployment {scaled_back:?}, deleted Service {recreated:?}; \
         API pods ready -> Ready=True {ready:?}"
    );
    for d in [scaled_back, recreated, ready] {
        assert!(d < Duration::from_secs(2), "{d:?}");
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), controller)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}

/// The whole controller, idle for an hour of virtual time (tokio's paused clock): the requests
/// it sends besides its open watches. Expected: only the discovery of the prometheus-operator
/// group every 5 minutes (shared by every pipeline); no apply, no status write, no re-list.
#[tokio::test(start_paused = true)]
async fn an_idle_pipeline_sends_nothing_for_an_hour() {
    let (fake, client) = FakeApi::start(vec![(PIPELINES, pipeline(5))]);
    let ctx = context(client.clone());
    let _controller = tokio::spawn(run(client, Scope::All, ctx, std::future::pending()));
    until("the first reconcile", Duration::from_secs(30), || {
        fake.get(PIPELINES, "study", "biology")
            .is_some_and(|p| !p["status"].is_null())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let idle: Vec<String> = fake
        .log()
        .into_iter()
        .filter(|l| l.at >= start)
        .map(|l| {
            format!(
                "{} {}{}",
                l.method,
                l.path,
                if l.watch { " (watch)" } else { "" }
            )
        })
        .collect();
    eprintln!(
        "idle hour, one pipeline: {} requests ({:.2}/min): {:?}",
        idle.len(),
        idle.len() as f64 / 60.0,
        idle.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        idle.iter()
            .all(|r| r == "GET /apis/monitoring.coreos.com/v1"),
        "{idle:?}"
    );
    // Discovery refreshes at the first poll 5 minutes after the last one: 11 or 12 an hour.
    assert!(
        (11..=12).contains(&idle.len()),
        "discovery every 5 minutes: {}",
        idle.len()
    );
}

/// The store's "work arrived" signal reconciles an idle pipeline at once: a job for a pipeline
/// at zero workers scales it to one within a second, although its poll is 5 minutes away (and
/// without the signal nothing happens). Prints the latency from the signal to the worker
/// Deployment's patch.
#[tokio::test]
async fn a_work_signal_scales_an_idle_pipeline_within_a_second() {
    let (fake, client) = FakeApi::start(vec![(PIPELINES, pipeline(300))]);
    let (ctx, state) = context_with_state(client.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client, Scope::All, ctx.clone(), async move {
        let _ = stop_rx.await;
    }));
    until("the first reconcile", Duration::from_secs(5), || {
        fake.get(PIPELINES, "study", "biology")
            .is_some_and(|p| !p["status"].is_null())
    })
    .await;
    settled(&fake).await;
    assert_eq!(ctx.followers.len(), 1, "the connected pipeline is followed");
    let replicas =
        || fake.get(DEPLOYMENTS, "study", "biology-worker").unwrap()["spec"]["replicas"].clone();
    assert_eq!(replicas(), 0);

    // A job arrives, but no signal: the queue is only read at the next poll.
    *state.counts.lock().unwrap() = flashcard_store::QueueCounts {
        waiting: 1,
        ..Default::default()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        replicas(),
        0,
        "nothing but the signal triggers a reconcile here"
    );

    let mut latencies = Vec::new();
    for (waiting, expected) in [(1u64, 1), (9, 3)] {
        *state.counts.lock().unwrap() = flashcard_store::QueueCounts {
            waiting,
            ..Default::default()
        };
        let t0 = Instant::now();
        state.signals.0.send(1).unwrap();
        until(
            "the worker Deployment to scale",
            Duration::from_secs(5),
            || replicas() == expected,
        )
        .await;
        let patched = fake
            .log()
            .into_iter()
            .find(|l| {
                l.at >= t0
                    && l.method == Method::PATCH
                    && l.path.ends_with("/deployments/biology-worker")
            })
            .expect("the worker Deployment patch");
        latencies.push(patched.at - t0);
        settled(&fake).await;
        // The follower triggers at most once a second.
        tokio::time::sleep(crate::follow::MIN_TRIGGER_INTERVAL).await;
    }
    eprintln!(
        "work signal -> worker Deployment patch: 0 -> 1 in {:?}, 1 -> 3 in {:?} \
         (debounce {:?}; KEDA + HPA: 15-45 s)",
        latencies[0],
        latencies[1],
        super::DEBOUNCE
    );
    for l in &latencies {
        assert!(*l < Duration::from_secs(1), "{l:?}");
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), controller)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}

/// A failed watch retries at least every 10 s however long the API server is away (kube's
/// default grows to 30 s), and its pauses grow to the cap.
#[test]
fn watch_backoff_grows_to_its_cap_and_no_further() {
    let mut backoff = super::watch_backoff();
    let delays: Vec<Duration> = (0..30).map(|_| backoff.next().unwrap()).collect();
    assert!(
        delays.iter().all(|d| *d <= 2 * super::WATCH_BACKOFF_MAX),
        "{delays:?}"
    );
    assert!(delays[29] >= super::WATCH_BACKOFF_MAX, "{delays:?}");
}
