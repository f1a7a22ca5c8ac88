//! Reconcile against a scripted mock API server: the exact requests, in order.

use std::sync::Arc;
use std::time::Duration;

use flashcard_core::budget::usd_to_micros;
use flashcard_store::{QueueCounts, SetBy};
use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::{error_policy, reconcile};
use crate::crd::{FlashcardPipeline, FlashcardPipelineStatus};
use crate::fixtures::*;
use crate::render::test_support::{full, minimal};

const NS: &str = "/api/v1/namespaces/study";
const APPS: &str = "/apis/apps/v1/namespaces/study";
const MON: &str = "/apis/monitoring.coreos.com/v1/namespaces/study";
const STATUS: &str =
    "/apis/flashcards.dev/v1alpha1/namespaces/study/flashcardpipelines/biology/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/study/events";
const DISCOVERY: &str = "/apis/monitoring.coreos.com/v1";
const INGRESS: &str = "/apis/networking.k8s.io/v1/namespaces/study/ingresses/biology";

async fn run(ctx: &Arc<crate::context::Context>, p: &FlashcardPipeline) -> crate::Result<Action> {
    tokio::time::timeout(
        Duration::from_secs(5),
        reconcile(Arc::new(p.clone()), ctx.clone()),
    )
    .await
    .expect("reconcile hung: it sent a request the script did not expect")
}

fn status_of(seen: &[Seen]) -> FlashcardPipelineStatus {
    let s = seen
        .iter()
        .rev()
        .find(|s| s.uri.contains("/status"))
        .expect("status patch");
    serde_json::from_value(s.body["status"].clone()).unwrap()
}

/// The pipeline as the watch would deliver it after the reconcile's status write.
fn after_write(p: &FlashcardPipeline, seen: &[Seen]) -> FlashcardPipeline {
    let s = seen
        .iter()
        .rev()
        .find(|s| s.uri.contains("/status"))
        .expect("status patch");
    serde_json::from_value(s.response.clone()).unwrap_or_else(|_| {
        let mut p = p.clone();
        p.status = Some(status_of(seen));
        p
    })
}

fn condition<'a>(
    s: &'a FlashcardPipelineStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

/// A pipeline without an Ingress: the first apply after start looks for one an earlier spec may
/// have left (404 when there is none).
fn no_ingress() -> Expect {
    expect(Method::GET, INGRESS).reply(StatusCode::NOT_FOUND, status_error(404, "NotFound"))
}

fn minimal_children() -> Vec<Expect> {
    vec![
        expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")),
        expect(Method::PATCH, &format!("{APPS}/deployments/biology-api")),
        expect(Method::PATCH, &format!("{NS}/services/biology-api")),
        no_ingress(),
        expect(Method::PATCH, &format!("{APPS}/deployments/biology-worker")),
        expect(Method::PATCH, &format!("{NS}/services/biology-worker")),
    ]
}

fn no_monitoring() -> Expect {
    expect(Method::GET, DISCOVERY).reply(StatusCode::NOT_FOUND, status_error(404, "NotFound"))
}

/// What the API server answers to an apply of the API Deployment whose pods exist but are not
/// ready (Pending: no node, image pull, failing readiness probe).
fn api_deployment_pending(replicas: i64, ready: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "biology-api", "namespace": "study", "generation": 1,
                     "resourceVersion": "7",
                     "labels": {"app.kubernetes.io/managed-by": "flashcard-operator"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {}, "spec": {"containers": []}}},
        "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                   "readyReplicas": ready, "availableReplicas": ready,
                   "unavailableReplicas": replicas - ready}
    })
}

#[tokio::test]
async fn first_reconcile_applies_every_child_enforces_budget_and_writes_status() {
    let (ctx, handle, state, _) = context();
    *state.counts.lock().unwrap() = QueueCounts {
        waiting: 40,
        active: 8,
        ..Default::default()
    };
    *state.spent_micros.lock().unwrap() = usd_to_micros(510.0);
    let p = full();
    let (server, _) = serve(
        handle,
        &p,
        vec![
            expect(Method::GET, DISCOVERY).reply(StatusCode::OK, monitoring_resources()),
            expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")),
            expect(Method::PATCH, &format!("{APPS}/deployments/biology-api")),
            expect(Method::PATCH, &format!("{NS}/services/biology-api")),
            expect(
                Method::PATCH,
                "/apis/networking.k8s.io/v1/namespaces/study/ingresses/biology",
            ),
            expect(Method::PATCH, &format!("{APPS}/deployments/biology-worker")),
            expect(Method::PATCH, &format!("{NS}/services/biology-worker")),
            expect(Method::PATCH, &format!("{MON}/prometheusrules/biology")),
            expect(Method::PATCH, &format!("{MON}/servicemonitors/biology")),
            expect(Method::POST, EVENTS),
            expect(Method::POST, EVENTS),
            expect(Method::PATCH, STATUS),
        ],
    );
    let action = run(&ctx, &p).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    let seen = server.await.unwrap();

    // Every apply is a forced server-side apply with the one field manager.
    for s in seen.iter().filter(|s| s.method == Method::PATCH) {
        assert!(
            s.uri.contains("fieldManager=flashcard-operator"),
            "{}",
            s.uri
        );
        assert!(s.uri.contains("force=true"), "{}", s.uri);
    }
    // (40 + 8) / 16 = 3 workers.
    assert_eq!(seen[5].body["spec"]["replicas"], 3);
    // The event says who switched the kill-switch on, and why, with the amounts.
    // The store already held jobs and spend: the first reconcile says so first.
    assert_eq!(seen[9].body["reason"], "StoreDataFound");
    assert_eq!(seen[10].body["reason"], "KillSwitchOnBudget");
    assert_eq!(seen[10].body["type"], "Warning");
    assert_eq!(seen[10].body["regarding"]["name"], "biology");
    let note = seen[10].body["note"].as_str().unwrap();
    assert!(note.contains("$510.00 of $500.00 spent"), "{note}");
    // The operator wrote the budget into the store, whose automatic stop switched on.
    let written = state.budget_writes.lock().unwrap().clone();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].limit_micros, usd_to_micros(500.0));
    let ks = state.kill_switch_now();
    assert!(ks.enabled);
    assert_eq!(ks.set_by, Some(SetBy::Budget));

    let status = status_of(&seen);
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!((status.queue.waiting, status.queue.active), (40, 8));
    assert_eq!(status.workers.desired, 3);
    assert!(status.budget.kill_switch);
    assert_eq!(status.budget.kill_switch_set_by.as_deref(), Some("budget"));
    assert_eq!(status.budget.summary, "510.00/500.00");
    assert_eq!(status.budget.spent_micros, usd_to_micros(510.0));
    assert!(
        status.budget.store_epoch.is_some(),
        "the store epoch is recorded"
    );
    // The API Deployment was just created: no pod is ready, so the pipeline is not.
    assert_eq!((status.api.desired, status.api.ready), (3, 0));
    assert_eq!(condition(&status, "Ready").status, "False");
    assert_eq!(condition(&status, "Ready").reason, "ApiNotReady");
    assert_eq!(condition(&status, "BudgetExceeded").reason, "LimitReached");
    assert_eq!(condition(&status, "MonitoringAvailable").status, "True");
    assert_eq!(condition(&status, "Scaling").reason, "FollowingQueue");
    assert_eq!(
        status.workers.last_scale_reason.as_deref(),
        Some("QueueGrew")
    );
    // No secret value anywhere in what was sent.
    let all = serde_json::to_string(&seen.iter().map(|s| &s.body).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains("redis://"));
}

/// The cluster run: `Ready=True` 0.12 s after apply while the API pods were 0/2
/// Pending. Now Ready waits for the pods, and turns True with exactly one status write when the
/// Deployment's watch reports them ready.
#[tokio::test]
async fn status_with_pending_api_pods_is_not_ready_until_they_are() {
    let (ctx, handle, _, _) = context();
    let mut p = minimal();
    let mut script = vec![
        no_monitoring(),
        expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")),
        expect(Method::PATCH, &format!("{APPS}/deployments/biology-api"))
            .reply(StatusCode::OK, api_deployment_pending(2, 0)),
    ];
    script.extend(minimal_children().into_iter().skip(2));
    script.push(expect(Method::PATCH, STATUS));
    // Second reconcile (the API Deployment's watch event): only the status changes.
    script.push(expect(Method::PATCH, STATUS));
    let (server, record) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();

    let first = record.lock().unwrap().clone();
    let status = status_of(&first);
    assert_eq!((status.api.desired, status.api.ready), (2, 0));
    assert_eq!(status.api.summary, "0/2");
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ApiNotReady")
    );
    assert_eq!(ready.message, "API pods 0/2 ready");
    let progressing = condition(&status, "Progressing");
    assert_eq!(progressing.status, "True");
    assert!(
        progressing
            .message
            .contains("API Deployment: 0/2 pods available"),
        "{}",
        progressing.message
    );

    // The pods become ready: the watch delivers the Deployment's new status.
    let mut stores_seen = first.clone();
    let api = stores_seen
        .iter_mut()
        .find(|s| s.uri.contains("deployments/biology-api"))
        .unwrap();
    api.response = api_deployment_pending(2, 2);
    api.response["metadata"]["resourceVersion"] = json!("8");
    // The worker Deployment (0 replicas) has been seen by its controller too.
    let worker = stores_seen
        .iter_mut()
        .find(|s| s.uri.contains("deployments/biology-worker"))
        .unwrap();
    worker.response["status"] = json!({"observedGeneration": 1});
    worker.response["metadata"]["resourceVersion"] = json!("9");
    ctx.set_children(stores_from(&stores_seen));
    p = after_write(&p, &first);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        seen.len(),
        first.len() + 1,
        "one status write, nothing applied"
    );
    let status = status_of(&seen);
    assert_eq!((status.api.desired, status.api.ready), (2, 2));
    assert_eq!(condition(&status, "Ready").status, "True");
    assert_eq!(condition(&status, "Ready").reason, "Available");
    assert_eq!(condition(&status, "Progressing").status, "False");
}

#[tokio::test]
async fn missing_monitoring_crds_are_a_condition_not_a_failure() {
    let (ctx, handle, _, _) = context();
    let p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let status = status_of(&server.await.unwrap());
    let c = condition(&status, "MonitoringAvailable");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "PrometheusOperatorMissing")
    );
    assert_eq!(status.workers.desired, 0, "idle queue, min 0");
}

/// The idle load on the API server: after the first reconcile, with the children in the
/// watches as applied, an hour of polls (720 reconciles at the 5 s default) sends only the
/// discovery of the prometheus-operator group every 5 minutes (shared by all pipelines), no
/// apply, no status write. Virtual time: tokio's clock is paused and advanced by the test.
#[tokio::test(start_paused = true)]
async fn idle_reconciles_send_no_request_for_an_hour() {
    let (ctx, handle, _, _) = context();
    let mut p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::PATCH, STATUS));
    // Discovery is cached for 5 minutes: 12 more in the hour, and nothing else.
    for _ in 0..12 {
        script.push(no_monitoring());
    }
    let (server, record) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let first = record.lock().unwrap().clone();
    ctx.set_children(stores_from(&first));
    p = after_write(&p, &first);
    for _ in 0..720 {
        tokio::time::advance(Duration::from_secs(5)).await;
        run(&ctx, &p).await.unwrap();
    }
    let seen = server.await.unwrap();
    let idle: Vec<_> = seen[first.len()..].iter().map(|s| s.uri.clone()).collect();
    assert_eq!(idle.len(), 12, "{idle:?}");
    assert!(idle.iter().all(|u| u.starts_with(DISCOVERY)), "{idle:?}");
}

/// With the prometheus-operator installed, the PrometheusRule and ServiceMonitor (not watched)
/// are re-applied every 10 minutes; the watched children never are.
#[tokio::test(start_paused = true)]
async fn only_unwatched_children_are_resynced() {
    let (ctx, handle, _, _) = context();
    let mut p = minimal();
    let monitoring =
        || expect(Method::GET, DISCOVERY).reply(StatusCode::OK, monitoring_resources());
    let mut script = vec![monitoring()];
    script.extend(minimal_children());
    script.push(expect(
        Method::PATCH,
        &format!("{MON}/prometheusrules/biology"),
    ));
    script.push(expect(
        Method::PATCH,
        &format!("{MON}/servicemonitors/biology"),
    ));
    script.push(expect(Method::PATCH, STATUS));
    // 5 min: discovery. 10 min: discovery, then the resync of the two unwatched objects.
    script.push(monitoring());
    script.push(monitoring());
    script.push(expect(
        Method::PATCH,
        &format!("{MON}/prometheusrules/biology"),
    ));
    script.push(expect(
        Method::PATCH,
        &format!("{MON}/servicemonitors/biology"),
    ));
    let (server, record) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let first = record.lock().unwrap().clone();
    ctx.set_children(stores_from(&first));
    p = after_write(&p, &first);
    for _ in 0..120 {
        tokio::time::advance(Duration::from_secs(5)).await;
        run(&ctx, &p).await.unwrap();
    }
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), first.len() + 4);
}

/// Someone ran `kubectl scale deploy/biology-worker --replicas=5`: the watch shows a newer
/// generation, and the next reconcile (triggered by that watch event) applies the worker
/// Deployment again, and nothing else.
#[tokio::test]
async fn hand_scaled_worker_deployment_is_reverted() {
    let (ctx, handle, _, _) = context();
    let mut p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::PATCH, STATUS));
    script.push(expect(
        Method::PATCH,
        &format!("{APPS}/deployments/biology-worker"),
    ));
    let (server, record) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let mut first = record.lock().unwrap().clone();
    p = after_write(&p, &first);
    let worker = first
        .iter_mut()
        .find(|s| s.uri.contains("deployments/biology-worker"))
        .unwrap();
    worker.response["spec"]["replicas"] = json!(5);
    worker.response["metadata"]["generation"] = json!(2);
    worker.response["metadata"]["resourceVersion"] = json!("900");
    ctx.set_children(stores_from(&first));
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    let last = seen.last().unwrap();
    assert!(last.uri.contains("deployments/biology-worker"));
    assert_eq!(
        last.body["spec"]["replicas"], 0,
        "back to the autoscaler's count"
    );
}

/// A deleted Service is re-created; a Deployment whose status alone changed is left alone.
#[tokio::test]
async fn deleted_child_is_recreated_and_status_updates_are_not_drift() {
    let (ctx, handle, _, _) = context();
    let mut p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::PATCH, STATUS));
    script.push(expect(
        Method::PATCH,
        &format!("{NS}/services/biology-worker"),
    ));
    // The API Deployment's controller has now seen it: Progressing says what it waits for.
    script.push(expect(Method::PATCH, STATUS));
    let (server, record) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let mut first = record.lock().unwrap().clone();
    p = after_write(&p, &first);
    // The worker Service is gone; the API Deployment got a status update (new RV, same
    // generation, still no ready pod).
    first.retain(|s| !s.uri.contains("services/biology-worker"));
    let api = first
        .iter_mut()
        .find(|s| s.uri.contains("deployments/biology-api"))
        .unwrap();
    api.response["metadata"]["resourceVersion"] = json!("901");
    api.response["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2});
    ctx.set_children(stores_from(&first));
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    let n = seen.len();
    assert!(seen[n - 2].uri.contains("services/biology-worker"));
    let status = status_of(&seen);
    assert!(
        condition(&status, "Progressing")
            .message
            .contains("API Deployment: 0/2 pods available")
    );
}

#[tokio::test]
async fn scale_down_marks_idle_pods_cheapest_first() {
    let (ctx, handle, state, _) = context();
    let mut p = minimal();
    p.spec.worker.scale_down_stabilization_seconds = 0;
    p.status = Some(FlashcardPipelineStatus {
        workers: crate::crd::WorkersStatus {
            desired: 3,
            ..Default::default()
        },
        ..Default::default()
    });
    *state.counts.lock().unwrap() = QueueCounts {
        waiting: 0,
        active: 2,
        ..Default::default()
    };
    *state.workers.lock().unwrap() = vec![worker("w-busy", 2), worker("w-idle", 0)];
    let mut script = vec![
        no_monitoring(),
        expect(Method::PATCH, &format!("{NS}/pods/w-busy")),
        expect(Method::PATCH, &format!("{NS}/pods/w-idle")),
    ];
    script.extend(minimal_children());
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    let cost = |s: &Seen| {
        s.body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"].clone()
    };
    assert_eq!(cost(&seen[1]), "2");
    assert_eq!(cost(&seen[2]), "0");
    assert!(seen[1].uri.contains("fieldManager=flashcard-operator"));
    // ceil(2 / 4) = 1 worker.
    assert_eq!(seen[7].body["spec"]["replicas"], 1);
    assert_eq!(seen[9].body["reason"], "ScaledDown");
    assert_eq!(
        seen[9].body["note"],
        "workers 3 -> 1: QueueShrank (waiting 0, active 2, delayed 0)"
    );
    let status = status_of(&seen);
    assert_eq!(status.workers.desired, 1);
    assert_eq!(status.workers.live, 2);
    assert_eq!(
        status.workers.last_scale_reason.as_deref(),
        Some("QueueShrank")
    );
    assert!(status.workers.last_scale_time.is_some());
}

/// The cluster run: three scale changes folded into one Event (count 3) that still read
/// "workers 0 -> 13", and a manual switch read "set by operator, budget reached". Now each
/// change is an Event with its own reason and note.
#[tokio::test]
async fn every_change_is_an_event_with_its_own_note() {
    let (ctx, handle, state, _) = context();
    let mut p = minimal();
    p.spec.worker.max_replicas = 20;
    p.spec.budget.limit_usd = 0.01;
    let set_queue = |waiting| {
        *state.counts.lock().unwrap() = QueueCounts {
            waiting,
            ..Default::default()
        };
    };
    set_queue(12);
    // Poll 1: 0 -> 3 (first decision: no scale event, the count starts there; the waiting jobs
    // are reported as found in the store).
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    // Poll 2: 3 -> 13.
    script.push(expect(
        Method::PATCH,
        &format!("{APPS}/deployments/biology-worker"),
    ));
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    // Poll 3: 13 -> 20, and the budget (one cent) is spent: the store's automatic stop.
    script.push(expect(
        Method::PATCH,
        &format!("{APPS}/deployments/biology-worker"),
    ));
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    // Poll 4: a person switches it on in the resource: taken over by the manual switch.
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    let (server, record) = serve(handle, &p, script);

    run(&ctx, &p).await.unwrap();
    let step = |p: &FlashcardPipeline| {
        let seen = record.lock().unwrap().clone();
        ctx.set_children(stores_from(&seen));
        after_write(p, &seen)
    };
    p = step(&p);
    set_queue(52);
    run(&ctx, &p).await.unwrap();
    p = step(&p);
    set_queue(200);
    *state.spent_micros.lock().unwrap() = 10_400;
    run(&ctx, &p).await.unwrap();
    p = step(&p);
    p.spec.budget.kill_switch.manual = true;
    p.spec.budget.kill_switch.reason = "maintenance window".into();
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();

    let events: Vec<(String, String)> = seen
        .iter()
        .filter(|s| s.method == Method::POST && s.body["reason"] != "StoreDataFound")
        .map(|s| {
            (
                s.body["reason"].as_str().unwrap().to_owned(),
                s.body["note"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0].0, "ScaledUp");
    assert!(
        events[0].1.starts_with("workers 3 -> 13:"),
        "{}",
        events[0].1
    );
    assert_eq!(events[1].0, "ScaledUp");
    assert!(
        events[1].1.starts_with("workers 13 -> 20:"),
        "{}",
        events[1].1
    );
    assert_eq!(events[2].0, "KillSwitchOnBudget");
    assert!(
        events[2].1.contains("$0.0104 of $0.01 spent"),
        "sub-cent amounts keep their digits: {}",
        events[2].1
    );
    assert_eq!(events[3].0, "KillSwitchOnManual");
    assert!(
        events[3]
            .1
            .contains("(set by resource): maintenance window")
    );
}

#[tokio::test]
async fn store_down_keeps_the_workers_and_says_so() {
    let (ctx, handle, _, connector) = context();
    *connector.down.lock().unwrap() = true;
    let mut p = minimal();
    p.status = Some(FlashcardPipelineStatus {
        workers: crate::crd::WorkersStatus {
            desired: 4,
            ..Default::default()
        },
        ..Default::default()
    });
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen[5].body["spec"]["replicas"], 4, "last good count kept");
    assert_eq!(seen[7].body["reason"], "StoreUnavailable");
    assert!(
        seen[7].body["note"]
            .as_str()
            .unwrap()
            .starts_with("keeping 4 workers: cannot read the store")
    );
    let status = status_of(&seen);
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "StoreUnavailable")
    );
    assert_eq!(condition(&status, "Scaling").reason, "StoreUnavailable");
    assert_eq!(condition(&status, "BudgetExceeded").status, "Unknown");
}

/// A Redis that accepts connections and never answers: the pass waits for it no longer than
/// the observe timeout, reports `StoreUnavailable`, and polls again after a backoff that grows
/// from the poll interval, while child and spec changes still reconcile at once.
#[tokio::test]
async fn a_store_that_never_answers_costs_one_observe_timeout_and_backs_off() {
    let (ctx, handle, _, connector) = context();
    *connector.hangs.lock().unwrap() = true;
    let p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    let started = std::time::Instant::now();
    let action = run(&ctx, &p).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= OBSERVE_TIMEOUT && took < OBSERVE_TIMEOUT * 4,
        "bounded by the observe timeout: {took:?}"
    );
    let seen = server.await.unwrap();
    let status = status_of(&seen);
    let ready = condition(&status, "Ready");
    assert_eq!(ready.reason, "StoreUnavailable");
    assert!(
        ready.message.contains("did not answer within 500 ms"),
        "{}",
        ready.message
    );
    assert_eq!(
        *connector.reports.lock().unwrap(),
        1,
        "the Secret is read again next time"
    );
    let poll = Duration::from_secs(p.spec.worker.poll_interval_seconds.into());
    let first = requeue_of(&action);
    assert!(first >= poll && first <= poll * 2, "{first:?}");
    assert_eq!(ctx.store_failures.get("study/biology"), 1);
    for n in 2..=10 {
        let d = super::next_poll(poll, n);
        let ceiling = (poll * (1 << n)).min(super::STORE_BACKOFF_CAP);
        assert!(d >= ceiling / 2 && d <= ceiling, "{n} failures: {d:?}");
    }
    assert_eq!(
        super::next_poll(poll, 0),
        poll,
        "a working store polls at the interval"
    );
}

/// A pipeline names a Secret its owner did not label: no Deployment is applied (they are the
/// only children that name Secrets), the rest is, and the status and an Event say which Secret
/// and which label.
#[tokio::test]
async fn an_unlabelled_secret_gets_no_deployment_and_a_condition() {
    let (ctx, handle, _, connector) = context();
    *connector.refused.lock().unwrap() = vec![crate::consent::refusal("openai")];
    let p = minimal();
    let script = vec![
        no_monitoring(),
        expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")),
        expect(Method::PATCH, &format!("{NS}/services/biology-api")),
        no_ingress(),
        expect(Method::PATCH, &format!("{NS}/services/biology-worker")),
        expect(Method::POST, EVENTS),
        expect(Method::PATCH, STATUS),
    ];
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert!(seen.iter().all(|s| !s.uri.contains("/deployments/")));
    assert_eq!(seen[5].body["reason"], "SecretNotLabelled");
    let status = status_of(&seen);
    let allowed = condition(&status, "SecretsAllowed");
    assert_eq!(allowed.status, "False");
    assert!(
        allowed
            .message
            .contains("Secret openai is not labelled flashcards.dev/pipeline-secret=true"),
        "{}",
        allowed.message
    );
    assert_eq!(condition(&status, "Ready").reason, "SecretNotLabelled");
}

/// A pipeline that asks for the operator's Redis (no `spec.redis.urlSecretRef`) from an operator
/// started without an admin URL: no Deployment (their REDIS_URL would name a Secret nobody
/// writes), and the status says what to set.
#[tokio::test]
async fn a_pipeline_on_the_operators_redis_without_an_admin_url_gets_no_deployment() {
    let (ctx, handle, _, _) = context();
    let mut p = minimal();
    p.spec.redis.url_secret_ref = None;
    // Managed pipelines hold the finalizer (their Redis user goes with them).
    p.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let script = vec![
        no_monitoring(),
        expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")),
        expect(Method::PATCH, &format!("{NS}/services/biology-api")),
        no_ingress(),
        expect(Method::PATCH, &format!("{NS}/services/biology-worker")),
        expect(Method::PATCH, STATUS),
    ];
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert!(
        seen.iter()
            .all(|s| !s.uri.contains("/deployments/") && !s.uri.contains("/secrets/"))
    );
    let status = status_of(&seen);
    let allowed = condition(&status, "SecretsAllowed");
    assert_eq!(allowed.status, "False");
    assert_eq!(allowed.reason, "NoOperatorRedis");
    assert!(
        allowed.message.contains("--redis-admin-url"),
        "{}",
        allowed.message
    );
    assert_eq!(condition(&status, "Ready").reason, "NoOperatorRedis");
}

/// Redis restarted without persistence: the store's epoch is new and its spend zero. The
/// operator restores the period's spend from the status it recorded, says so in an Event and a
/// condition, and records the new epoch.
#[tokio::test]
async fn spend_is_restored_from_the_status_after_the_store_lost_its_data() {
    let (ctx, handle, state, _) = context();
    let mut p = minimal();
    p.spec.budget.limit_usd = 100.0;
    let period = flashcard_core::budget::BudgetPeriod::Monthly.current_key();
    p.status = Some(FlashcardPipelineStatus {
        budget: crate::crd::BudgetStatus {
            period: period.clone(),
            spent_usd: 37.0,
            spent_micros: usd_to_micros(37.0),
            store_epoch: Some("before".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    // The store is fresh: no epoch of its own yet, nothing spent.
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(*state.spent_micros.lock().unwrap(), usd_to_micros(37.0));
    let restored = seen
        .iter()
        .find(|s| s.body["reason"] == "SpendRestored")
        .expect("a SpendRestored event");
    assert!(
        restored.body["note"].as_str().unwrap().contains("$37.00"),
        "{}",
        restored.body["note"]
    );
    let status = status_of(&seen);
    let c = condition(&status, "SpendRestored");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "StoreLostData")
    );
    assert_eq!(status.budget.spent_micros, usd_to_micros(37.0));
    let epoch = status.budget.store_epoch.clone().unwrap();
    assert_ne!(epoch, "before", "the new epoch is recorded");
    assert_eq!(
        state.epoch.lock().unwrap().as_ref().map(|e| e.id.clone()),
        Some(epoch)
    );
    assert_eq!(
        state
            .budget_writes
            .lock()
            .unwrap()
            .last()
            .map(|b| b.limit_micros),
        Some(usd_to_micros(100.0)),
        "the budget is written back too"
    );
}

#[tokio::test]
async fn admin_kill_switch_is_left_alone_and_reported() {
    let (ctx, handle, state, _) = context();
    *state.kill_switch.lock().unwrap() = Some(flashcard_store::KillSwitch::manual(
        SetBy::Admin,
        Some("incident".into()),
        1,
    ));
    let p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen[7].body["reason"], "StoreDataFound");
    assert_eq!(seen[8].body["reason"], "KillSwitchOnAdmin");
    assert!(
        seen[8].body["note"]
            .as_str()
            .unwrap()
            .contains("(set by admin): incident")
    );
    let status = status_of(&seen);
    assert!(state.kill_switch_now().enabled);
    assert_eq!(status.budget.kill_switch_set_by.as_deref(), Some("admin"));
    assert_eq!(
        condition(&status, "BudgetExceeded").reason,
        "AdminKillSwitch"
    );
}

/// The ConfigMap's apply fails: every other child is applied all the same, the status names the
/// failure (conditions `Applied` and `Ready`, an Event), and the pass fails with the API error's
/// label, retried after this pipeline's own backoff.
async fn failing_apply(code: u16, reason: &str, label: &str) {
    let (ctx, handle, _, _) = context();
    let p = minimal();
    let mut script = vec![no_monitoring()];
    let mut children = minimal_children();
    children[0] = expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")).reply(
        StatusCode::from_u16(code).unwrap(),
        status_error(code, reason),
    );
    script.extend(children);
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    let err = run(&ctx, &p).await.unwrap_err();
    let seen = server.await.unwrap();
    assert_eq!(err.metric_label(), label);
    assert_eq!(seen[7].body["reason"], "ApplyFailed");
    let status = status_of(&seen);
    let applied = condition(&status, "Applied");
    assert_eq!(applied.status, "False");
    assert!(
        applied.message.starts_with("ConfigMap/biology-config: "),
        "{}",
        applied.message
    );
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ApplyFailed")
    );
    // 2 s, then 4 s, 8 s, ... each jittered into its upper half.
    let delays: Vec<Duration> = (0..4)
        .map(|_| requeue_of(&error_policy(Arc::new(p.clone()), &err, ctx.clone())))
        .collect();
    for (n, d) in delays.iter().enumerate() {
        let ceiling = Duration::from_secs(2 << n);
        assert!(
            *d >= ceiling / 2 && *d <= ceiling,
            "failure {}: {d:?}",
            n + 1
        );
    }
    let mut registry = prometheus_client::registry::Registry::default();
    (*ctx.metrics).clone().register(&mut registry);
    let text = crate::metrics::encode(&registry).unwrap();
    assert!(
        text.contains(&format!(
            "flashcards_operator_reconcile_errors_total{{error=\"{label}\"}} 4"
        )),
        "{text}"
    );
}

/// The delay of a requeue action (its Debug form is the only public view).
fn requeue_of(a: &Action) -> Duration {
    let text = format!("{a:?}");
    let inner = text
        .split("requeue_after: Some(")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_else(|| panic!("not a requeue: {text}"));
    parse_debug_duration(inner)
}

fn parse_debug_duration(s: &str) -> Duration {
    let num = |suffix: &str| s.strip_suffix(suffix).map(|n| n.parse::<f64>().unwrap());
    if let Some(ms) = num("ms") {
        Duration::from_secs_f64(ms / 1e3)
    } else if let Some(us) = num("µs") {
        Duration::from_secs_f64(us / 1e6)
    } else if let Some(ns) = num("ns") {
        Duration::from_secs_f64(ns / 1e9)
    } else if let Some(secs) = num("s") {
        Duration::from_secs_f64(secs)
    } else {
        panic!("duration {s}")
    }
}

#[tokio::test]
async fn conflict_is_requeued_and_counted() {
    failing_apply(409, "Conflict", "conflict").await;
}

#[tokio::test]
async fn server_error_is_requeued_and_counted() {
    failing_apply(500, "InternalError", "kube").await;
}

fn ingress_owned_by(kind: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "biology",
            "namespace": "study",
            "ownerReferences": [{
                "apiVersion": "flashcards.dev/v1alpha1",
                "kind": kind,
                "name": name,
                "uid": "1234",
                "controller": true
            }]
        }
    })
}

/// After an operator restart, an Ingress the spec no longer has is removed if it is ours.
#[tokio::test]
async fn dropped_ingress_of_the_pipeline_is_deleted_after_a_restart() {
    let (ctx, handle, _, _) = context();
    let p = minimal();
    let script = vec![
        no_monitoring(),
        expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")),
        expect(Method::PATCH, &format!("{APPS}/deployments/biology-api")),
        expect(Method::PATCH, &format!("{NS}/services/biology-api")),
        expect(Method::GET, INGRESS).reply(
            StatusCode::OK,
            ingress_owned_by("FlashcardPipeline", "biology"),
        ),
        expect(Method::DELETE, INGRESS).reply(StatusCode::OK, status_error(200, "Success")),
        expect(Method::PATCH, &format!("{APPS}/deployments/biology-worker")),
        expect(Method::PATCH, &format!("{NS}/services/biology-worker")),
        expect(Method::PATCH, STATUS),
    ];
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen[5].method, Method::DELETE);
}

/// A user's own Ingress that happens to have the pipeline's name is left alone.
#[tokio::test]
async fn foreign_ingress_with_the_same_name_is_kept() {
    let (ctx, handle, _, _) = context();
    let p = minimal();
    let script = vec![
        no_monitoring(),
        expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")),
        expect(Method::PATCH, &format!("{APPS}/deployments/biology-api")),
        expect(Method::PATCH, &format!("{NS}/services/biology-api")),
        expect(Method::GET, INGRESS).reply(StatusCode::OK, ingress_owned_by("Deployment", "other")),
        expect(Method::PATCH, &format!("{APPS}/deployments/biology-worker")),
        expect(Method::PATCH, &format!("{NS}/services/biology-worker")),
        expect(Method::PATCH, STATUS),
    ];
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert!(seen.iter().all(|s| s.method != Method::DELETE));
}

// --- deletionPolicy ---

const PIPELINE: &str = "/apis/flashcards.dev/v1alpha1/namespaces/study/flashcardpipelines/biology";
const FINALIZER: &str = super::lifecycle::FINALIZER;

fn with_delete_policy(mut p: FlashcardPipeline) -> FlashcardPipeline {
    p.spec.deletion_policy = crate::crd::DeletionPolicy::Delete;
    p
}

fn with_finalizer(mut p: FlashcardPipeline) -> FlashcardPipeline {
    p.metadata.finalizers = Some(vec![FINALIZER.into()]);
    p
}

fn deleting(mut p: FlashcardPipeline) -> FlashcardPipeline {
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    p
}

/// The pipeline as the API server answers a metadata patch.
fn pipeline_reply(p: &FlashcardPipeline) -> Value {
    let mut v = serde_json::to_value(p).unwrap();
    v["apiVersion"] = json!("flashcards.dev/v1alpha1");
    v["kind"] = json!("FlashcardPipeline");
    v
}

/// A Deployment being deleted in the foreground, as the API server answers the DELETE.
fn deployment_deleting(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "study",
                        "deletionTimestamp": "2026-12-01T10:00:00Z",
                        "finalizers": ["foregroundDeletion"]}})
}

/// The exact requests of a finalizer delete: the finalizer is added (JSON patch `test` +
/// `add`) before anything else; on deletion the API and worker Deployments are deleted in the
/// foreground and waited for, then the store is purged, then the finalizer is removed
/// (`test` + `remove` at its index).
#[tokio::test]
async fn delete_policy_adds_the_finalizer_and_on_deletion_purges_after_the_pods_are_gone() {
    let (ctx, handle, state, _) = context();
    let p = with_delete_policy(minimal());
    let held = with_finalizer(p.clone());
    let mut script =
        vec![expect(Method::PATCH, PIPELINE).reply(StatusCode::OK, pipeline_reply(&held))];
    // The finalizer's watch event: the first apply.
    script.push(no_monitoring());
    script.extend(minimal_children());
    script.push(expect(Method::PATCH, STATUS));
    // Deleted: the pods go first.
    script.push(
        expect(Method::DELETE, &format!("{APPS}/deployments/biology-api"))
            .reply(StatusCode::OK, deployment_deleting("biology-api")),
    );
    script.push(
        expect(
            Method::DELETE,
            &format!("{APPS}/deployments/biology-worker"),
        )
        .reply(StatusCode::OK, deployment_deleting("biology-worker")),
    );
    script.push(expect(Method::POST, EVENTS));
    // The Deployments are gone (their watch): purge, say so, release the finalizer.
    script.push(expect(Method::POST, EVENTS));
    let released = deleting(with_delete_policy(minimal()));
    script.push(expect(Method::PATCH, PIPELINE).reply(StatusCode::OK, pipeline_reply(&released)));
    let (server, record) = serve(handle, &held, script);

    assert_eq!(run(&ctx, &p).await.unwrap(), Action::await_change());
    run(&ctx, &held).await.unwrap();
    let applied = record.lock().unwrap().clone();
    ctx.set_children(stores_from(&applied));
    let gone = deleting(after_write(&held, &applied));
    let err = run(&ctx, &gone).await.unwrap_err();
    assert!(matches!(err, crate::Error::CleanupPending(_)), "{err}");
    assert_eq!(
        error_policy(Arc::new(gone.clone()), &err, ctx.clone()),
        Action::requeue(super::lifecycle::CLEANUP_REQUEUE)
    );
    assert_eq!(*state.purges.lock().unwrap(), 0, "no purge while pods run");
    // The Deployments' watch: deleted.
    let without_deployments: Vec<Seen> = applied
        .iter()
        .filter(|s| !s.uri.contains("/deployments/"))
        .cloned()
        .collect();
    ctx.set_children(stores_from(&without_deployments));
    assert_eq!(run(&ctx, &gone).await.unwrap(), Action::await_change());
    let seen = server.await.unwrap();
    assert_eq!(*state.purges.lock().unwrap(), 1);

    // The finalizer added, exactly as kube-runtime's helper (and controller-rs) does it.
    assert_eq!(
        seen[0].body,
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
               {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
    );
    let n = seen.len();
    let (del_api, del_worker, deleting_event) = (&seen[n - 5], &seen[n - 4], &seen[n - 3]);
    assert_eq!(del_api.body["propagationPolicy"], "Foreground");
    assert_eq!(del_worker.body["propagationPolicy"], "Foreground");
    assert_eq!(deleting_event.body["reason"], "Deleting");
    assert!(
        deleting_event.body["note"]
            .as_str()
            .unwrap()
            .contains("biology-api and biology-worker"),
        "{}",
        deleting_event.body["note"]
    );
    let deleted = &seen[n - 2];
    assert_eq!(deleted.body["reason"], "StoreDataDeleted");
    assert_eq!(
        deleted.body["note"],
        "deleted the pipeline's 7 keys (fc:{study.biology}:*) from the store (deletionPolicy Delete)"
    );
    assert_eq!(
        seen[n - 1].body,
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
               {"op": "remove", "path": "/metadata/finalizers/0"}])
    );
    assert!(
        ctx.followers.is_empty(),
        "the deleted pipeline is not followed"
    );
}

/// A Redis that cannot be reached blocks the deletion: a `DeletionBlocked` condition and an
/// Event, once (a second attempt with the same failure sends nothing); the force annotation
/// then removes the finalizer without a purge and says so.
#[tokio::test]
async fn unreachable_store_blocks_the_deletion_until_a_person_forces_it() {
    let (ctx, handle, state, connector) = context();
    *connector.down.lock().unwrap() = true;
    ctx.set_children(stores_from(&[]));
    let p = deleting(with_finalizer(with_delete_policy(minimal())));
    let script = vec![
        expect(Method::POST, EVENTS),
        expect(Method::PATCH, STATUS),
        // Forced:
        expect(Method::POST, EVENTS),
        expect(Method::PATCH, PIPELINE).reply(StatusCode::OK, pipeline_reply(&p)),
    ];
    let (server, record) = serve(handle, &p, script);
    let err = run(&ctx, &p).await.unwrap_err();
    assert!(matches!(err, crate::Error::DeletionBlocked(_)), "{err}");
    assert_eq!(err.metric_label(), "deletion_blocked");
    let first = record.lock().unwrap().clone();
    assert_eq!(first[0].body["reason"], "DeletionBlocked");
    assert_eq!(first[0].body["type"], "Warning");
    let status = status_of(&first);
    let blocked = condition(&status, "DeletionBlocked");
    assert_eq!(
        (blocked.status.as_str(), blocked.reason.as_str()),
        ("True", "StoreUnavailable")
    );
    assert!(
        blocked
            .message
            .contains("annotate flashcards.dev/force-delete=\"true\""),
        "{}",
        blocked.message
    );
    // Still down: nothing new to say.
    let p = after_write(&p, &first);
    assert!(matches!(
        run(&ctx, &p).await.unwrap_err(),
        crate::Error::DeletionBlocked(_)
    ));
    // kubectl annotate fcp biology flashcards.dev/force-delete=true
    let mut forced = p.clone();
    forced
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(super::lifecycle::FORCE_DELETE.into(), "true".into());
    assert_eq!(run(&ctx, &forced).await.unwrap(), Action::await_change());
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 4, "the retry sent nothing");
    assert_eq!(seen[2].body["reason"], "ForcedDeletion");
    assert!(
        seen[2].body["note"]
            .as_str()
            .unwrap()
            .contains("every key under fc:{study.biology}: stays in Redis")
    );
    assert_eq!(
        seen[3].body,
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
               {"op": "remove", "path": "/metadata/finalizers/0"}])
    );
    assert_eq!(*state.purges.lock().unwrap(), 0, "forced: no cleanup");
}

/// `Delete` -> `Retain` removes the finalizer (and nothing else happens in that pass); a
/// deleted `Retain` pipeline sends nothing and keeps its keys.
#[tokio::test]
async fn switching_to_retain_removes_the_finalizer_and_retain_deletes_nothing() {
    let (ctx, handle, state, _) = context();
    let p = with_finalizer(minimal());
    let (server, _) = serve(
        handle,
        &p,
        vec![expect(Method::PATCH, PIPELINE).reply(StatusCode::OK, pipeline_reply(&minimal()))],
    );
    assert_eq!(run(&ctx, &p).await.unwrap(), Action::await_change());
    let seen = server.await.unwrap();
    assert_eq!(
        seen[0].body,
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
               {"op": "remove", "path": "/metadata/finalizers/0"}])
    );
    // Deleted with Retain (e.g. still held by another controller's finalizer): no request (the
    // mock answers nothing more), no purge.
    let mut gone = deleting(minimal());
    gone.metadata.finalizers = Some(vec!["example.com/other".into()]);
    assert_eq!(run(&ctx, &gone).await.unwrap(), Action::await_change());
    assert_eq!(*state.purges.lock().unwrap(), 0);
}

/// A pipeline created again with the name and namespace of a deleted `Retain` one continues
/// with its queue, spend and kill-switch, and its first reconcile says so.
#[tokio::test]
async fn recreated_pipeline_says_what_it_found_in_the_store() {
    let (ctx, handle, state, _) = context();
    *state.counts.lock().unwrap() = QueueCounts {
        waiting: 3,
        completed: 4,
        failed: 1,
        ..Default::default()
    };
    *state.spent_micros.lock().unwrap() = 1_250_000;
    *state.kill_switch.lock().unwrap() = Some(flashcard_store::KillSwitch::manual(
        SetBy::Admin,
        Some("incident 7".into()),
        1,
    ));
    let p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    // The next reconcile (status written) does not say it again.
    let (server, record) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let first = record.lock().unwrap().clone();
    ctx.set_children(stores_from(&first));
    run(&ctx, &after_write(&p, &first)).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), first.len());
    let found = &seen[7];
    assert_eq!(found.body["reason"], "StoreDataFound");
    let note = found.body["note"].as_str().unwrap();
    assert!(
        note.contains("3 waiting, 0 active, 0 delayed, 5 finished jobs; $1.25 spent in"),
        "{note}"
    );
    assert!(
        note.contains("kill-switch on (set by admin): incident 7"),
        "{note}"
    );
    assert_eq!(seen[8].body["reason"], "KillSwitchOnAdmin");
    assert!(state.kill_switch_now().enabled, "the kill-switch is kept");
    let status = status_of(&seen);
    assert_eq!(status.queue.waiting, 3);
    assert_eq!(status.workers.desired, 1, "the waiting jobs get a worker");
}

/// The store fails (a rotated password): the reconciler reports it, and the connector's fresh
/// store (the Secret's new URL) is read in the same reconcile.
#[tokio::test]
async fn a_failing_store_is_reported_and_the_fresh_one_used_at_once() {
    let (ctx, handle, state, connector) = context();
    *state.broken.lock().unwrap() = true;
    let fresh = Arc::new(FakeState::default());
    *fresh.counts.lock().unwrap() = QueueCounts {
        waiting: 5,
        ..Default::default()
    };
    *connector.rotated.lock().unwrap() = Some(fresh);
    let p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::POST, EVENTS));
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(*connector.reports.lock().unwrap(), 1);
    assert_eq!(
        seen[7].body["reason"], "StoreDataFound",
        "the fresh store's 5 jobs"
    );
    let status = status_of(&seen);
    assert_eq!(status.queue.waiting, 5);
    assert_ne!(condition(&status, "Ready").reason, "StoreUnavailable");
}
