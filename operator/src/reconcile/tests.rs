//! Reconcile against a scripted mock API server: the exact requests, in order.

use std::sync::Arc;
use std::time::Duration;

use flashcard_service::budget::usd_to_micros;
use flashcard_service::store::{QueueCounts, SetBy};
use http::{Method, StatusCode};
use kube::runtime::controller::Action;

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

fn condition<'a>(
    s: &'a FlashcardPipelineStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
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
    // The event says the kill-switch went on.
    assert_eq!(seen[9].body["reason"], "KillSwitchOn");
    assert_eq!(seen[9].body["type"], "Warning");
    assert_eq!(seen[9].body["regarding"]["name"], "biology");
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
    assert_eq!(condition(&status, "Ready").status, "True");
    assert_eq!(condition(&status, "BudgetExceeded").reason, "LimitReached");
    assert_eq!(condition(&status, "MonitoringAvailable").status, "True");
    assert_eq!(condition(&status, "Scaling").reason, "QueueGrew");
    // No secret value anywhere in what was sent.
    let all = serde_json::to_string(&seen.iter().map(|s| &s.body).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains("redis://"));
}

#[tokio::test]
async fn missing_monitoring_crds_are_a_condition_not_a_failure() {
    let (ctx, handle, _, _) = context();
    let p = minimal();
    let (server, _) = serve(
        handle,
        &p,
        vec![
            expect(Method::GET, DISCOVERY)
                .reply(StatusCode::NOT_FOUND, status_error(404, "NotFound")),
            expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")),
            expect(Method::PATCH, &format!("{APPS}/deployments/biology-api")),
            expect(Method::PATCH, &format!("{NS}/services/biology-api")),
            no_ingress(),
            expect(Method::PATCH, &format!("{APPS}/deployments/biology-worker")),
            expect(Method::PATCH, &format!("{NS}/services/biology-worker")),
            expect(Method::PATCH, STATUS),
        ],
    );
    run(&ctx, &p).await.unwrap();
    let status = status_of(&server.await.unwrap());
    let c = condition(&status, "MonitoringAvailable");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "PrometheusOperatorMissing")
    );
    assert_eq!(status.workers.desired, 0, "idle queue, min 0");
}

const INGRESS: &str = "/apis/networking.k8s.io/v1/namespaces/study/ingresses/biology";

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

#[tokio::test]
async fn unchanged_pipeline_sends_nothing() {
    let (ctx, handle, _, _) = context();
    let mut p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::PATCH, STATUS));
    // Second poll: children cached, discovery cached; only Progressing flips to False.
    script.push(expect(Method::PATCH, STATUS));
    let (server, record) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    p.status = Some(status_of(&record.lock().unwrap()));
    run(&ctx, &p).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 9);
    let status = status_of(&seen);
    assert_eq!(condition(&status, "Progressing").status, "False");
    // Third poll with that status: nothing to send (the mock is gone, so a request would fail).
    p.status = Some(status);
    run(&ctx, &p).await.unwrap();
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
    assert_eq!(seen[9].body["reason"], "Scaled");
    assert!(seen[9].body["note"].as_str().unwrap().contains("3 -> 1"));
    let status = status_of(&seen);
    assert_eq!(status.workers.desired, 1);
    assert_eq!(status.workers.current, 2);
    assert_eq!(
        status.workers.last_scale_reason.as_deref(),
        Some("QueueShrank")
    );
    assert!(status.workers.last_scale_time.is_some());
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
    let status = status_of(&seen);
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "StoreUnavailable")
    );
    assert_eq!(condition(&status, "Scaling").reason, "StoreUnavailable");
    assert_eq!(condition(&status, "BudgetExceeded").status, "Unknown");
}

#[tokio::test]
async fn admin_kill_switch_is_left_alone_and_reported() {
    let (ctx, handle, state, _) = context();
    *state.kill_switch.lock().unwrap() = Some(flashcard_service::store::KillSwitch::manual(
        SetBy::Admin,
        Some("incident".into()),
        1,
    ));
    let p = minimal();
    let mut script = vec![no_monitoring()];
    script.extend(minimal_children());
    script.push(expect(Method::PATCH, STATUS));
    let (server, _) = serve(handle, &p, script);
    run(&ctx, &p).await.unwrap();
    let status = status_of(&server.await.unwrap());
    assert!(state.kill_switch_now().enabled);
    assert_eq!(status.budget.kill_switch_set_by.as_deref(), Some("admin"));
    assert_eq!(
        condition(&status, "BudgetExceeded").reason,
        "AdminKillSwitch"
    );
}

async fn failing_apply(code: u16, reason: &str, label: &str) {
    let (ctx, handle, _, _) = context();
    let p = minimal();
    let (server, _) = serve(
        handle,
        &p,
        vec![
            no_monitoring(),
            expect(Method::PATCH, &format!("{NS}/configmaps/biology-config")).reply(
                StatusCode::from_u16(code).unwrap(),
                status_error(code, reason),
            ),
        ],
    );
    let err = run(&ctx, &p).await.unwrap_err();
    server.await.unwrap();
    assert_eq!(err.metric_label(), label);
    let action = error_policy(Arc::new(p), &err, ctx.clone());
    assert_eq!(action, Action::requeue(super::ERROR_REQUEUE));
    let mut registry = prometheus_client::registry::Registry::default();
    (*ctx.metrics).clone().register(&mut registry);
    let text = crate::metrics::encode(&registry).unwrap();
    assert!(
        text.contains(&format!(
            "flashcards_operator_reconcile_errors_total{{error=\"{label}\"}} 1"
        )),
        "{text}"
    );
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
