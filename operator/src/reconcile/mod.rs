//! The reconciler: one pass per pipeline every `spec.worker.pollIntervalSeconds`, and at once
//! when the pipeline's spec or one of its children changes, or its store signals that work
//! arrived (see `controller`).
//!
//! First the pipeline's lifecycle ([`lifecycle`]): with `deletionPolicy: Delete` kube-runtime's
//! finalizer helper wraps the pass, and a deleted pipeline is cleaned up instead of synced. Then,
//! for a live pipeline ([`sync`]):
//!
//! 1. read the store (queue, workers, spend, kill-switch) and enforce the budget;
//! 2. decide the worker replicas ([`crate::scaling`]);
//! 3. before a scale-down, mark idle worker pods as cheapest to delete;
//! 4. server-side apply the children that changed or drifted ([`apply`]);
//! 5. build the status from what was observed, including the Deployments' pods ([`status`]);
//! 6. publish an Event per distinct change ([`changes`]), and on the first reconcile a
//!    `StoreDataFound` Event when the store holds what an earlier pipeline of this name left;
//! 7. write the status if it changed, and requeue after the poll interval.
//!
//! An unreachable store is not an error: the worker count is kept and a condition says so.
//! API errors go to [`error_policy`], which counts them and requeues.

pub mod apply;
pub mod changes;
pub mod lifecycle;
pub mod observe;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use flashcard_core::keyspace::PipelineName;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::context::Context;
use crate::crd::{DeletionPolicy, FlashcardPipeline};
use crate::events::Event;
use crate::render::names;
use crate::scaling::{self, ScaleHistory};
use crate::{Error, Result, render};

/// Longest wait for the store in one poll (a hung Redis must not stall the autoscaler).
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(4);
/// Requeue delay after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(15);

/// Reconciles one pipeline: its lifecycle (see [`lifecycle`]), then [`sync`]. With traces on,
/// each pass is a `reconcile` span (`k8s.namespace.name`, `flashcards.pipeline`, the error kind
/// of a failed pass as `error.type`); kube-runtime's `reconciling object` span is its parent.
pub async fn reconcile(p: Arc<FlashcardPipeline>, ctx: Arc<Context>) -> Result<Action> {
    use tracing::Instrument as _;
    if !flashcard_telemetry::tracing_enabled() {
        return reconcile_pass(p, ctx).await;
    }
    let span = tracing::info_span!(
        "reconcile",
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        k8s.namespace.name = p.namespace().unwrap_or_default(),
        flashcards.pipeline = p.name_any(),
        error.type = tracing::field::Empty,
    );
    let result = reconcile_pass(p, ctx).instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("error.type", e.metric_label());
        span.record("otel.status_code", "error");
    }
    result
}

async fn reconcile_pass(p: Arc<FlashcardPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let ns = p.namespace().ok_or(Error::NoNamespace)?;
    PipelineName::new(&p.name_any())?;
    let api: Api<FlashcardPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    match p.spec.deletion_policy {
        DeletionPolicy::Retain => {
            if lifecycle::holds_finalizer(&p) {
                // Switched from Delete (or left by it): the keys stay, so nothing needs to hold
                // a deletion. The patch's watch event brings the next pass.
                lifecycle::remove_finalizer(&api, &p).await?;
                return Ok(Action::await_change());
            }
            if p.meta().deletion_timestamp.is_some() {
                ctx.followers.stop(&format!("{ns}/{}", p.name_any()));
                return Ok(Action::await_change());
            }
            sync(p, ctx.clone()).await
        }
        DeletionPolicy::Delete => {
            let ctx = ctx.clone();
            finalizer(&api, lifecycle::FINALIZER, p, |event| async move {
                match event {
                    Finalizer::Apply(p) => sync(p, ctx).await,
                    Finalizer::Cleanup(p) => lifecycle::cleanup(p, &ctx).await,
                }
            })
            .await
            .map_err(Error::from)
        }
    }
}

/// Reads the store; on a failure reports it to the connector and, if that yields another store
/// (the Secret holds a new URL: a rotated password), reads that one at once.
async fn observe_store(
    ctx: &Context,
    p: &Arc<FlashcardPipeline>,
    key: &str,
    now: jiff::Timestamp,
) -> Result<observe::Observed, String> {
    let store = ctx.connector.connect(p).await?;
    ctx.followers.ensure(key, ObjectRef::from_obj(&**p), &store);
    match observe::observe(p, &store, now).await {
        Ok(o) => Ok(o),
        Err(e) => {
            ctx.connector.report_failure(p).await;
            match ctx.connector.connect(p).await {
                Ok(fresh) if !Arc::ptr_eq(&fresh, &store) => {
                    ctx.followers.ensure(key, ObjectRef::from_obj(&**p), &fresh);
                    observe::observe(p, &fresh, now)
                        .await
                        .map_err(|e| e.to_string())
                }
                _ => Err(e.to_string()),
            }
        }
    }
}

/// Brings a live pipeline's children, store and status in line with its spec.
pub async fn sync(p: Arc<FlashcardPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let ns = p.namespace().ok_or(Error::NoNamespace)?;
    let name = p.name_any();
    let key = format!("{ns}/{name}");
    let now = jiff::Timestamp::now();
    let monitoring = ctx.monitoring_available().await;
    let memory = ctx.memory(&key).await;
    let mut mem = memory.lock().await;
    mem.enter_term(ctx.term());

    // 1. The store.
    let observed = observe_store(&ctx, &p, &key, now).await;
    if let Err(e) = &observed {
        tracing::warn!(pipeline = %name, namespace = %ns, error = %e, "store unreachable");
    }

    // 2. Scaling.
    let current = mem
        .replicas
        .or_else(|| p.status.as_ref().map(|s| s.workers.desired));
    let history = mem.history.get_or_insert_with(|| {
        current.map_or_else(ScaleHistory::default, |c| ScaleHistory::seeded(now, c))
    });
    let queue = observed.as_ref().ok().map(|o| o.queue);
    let decision = scaling::decide(&p.spec.worker, queue, current, history, now);
    let scaled = decision.changes(current);

    // 3. Idle pods go first.
    if let (Ok(o), Some(c)) = (&observed, current)
        && decision.replicas < c
    {
        apply::set_deletion_costs(
            &ctx.client,
            &ns,
            &apply::deletion_costs(&o.workers),
            &mut mem,
        )
        .await?;
    }

    // 4. Children.
    let stores = ctx.children();
    let children = render::render(&p, decision.replicas, monitoring)?;
    let outcome =
        apply::apply_children(&ctx.client, &ns, &name, &children, &stores, &mut mem).await?;
    mem.replicas = Some(decision.replicas);

    // 5. Status, from the Deployments as the apply just returned them or as watched.
    let deployment = |applied: Option<k8s_openapi::api::apps::v1::Deployment>, child: String| {
        applied.or_else(|| stores.deployment(&ns, &child).map(|d| (*d).clone()))
    };
    let api_dep = deployment(outcome.api, names::api(&name));
    let worker_dep = deployment(outcome.worker, names::worker(&name));
    let old = status::current(&p, &mem);
    let facts = status::Facts {
        observed: observed.as_ref().map_err(String::as_str),
        scale: decision,
        scaled_at: scaled.then_some(now),
        monitoring,
        api: status::Rollout::of(api_dep.as_ref(), p.spec.api.replicas),
        worker: status::Rollout::of(worker_dep.as_ref(), decision.replicas),
    };
    let new_status = status::build(&p, old.as_ref(), &facts);

    // 6. Events. The first reconcile of a pipeline (no status yet) that finds what an earlier
    // one of its name left (deletionPolicy Retain) says so before anything else.
    if old.is_none()
        && let Ok(o) = &observed
        && o.found.left_behind(&p)
    {
        let ev = Event::normal("StoreDataFound", "Observe", o.found.note());
        publish(&ctx, &p, &ev).await;
    }
    let scale_change = current.filter(|_| scaled).map(|from| changes::ScaleChange {
        from,
        decision,
        queue,
    });
    for ev in changes::events(old.as_ref(), &new_status, scale_change) {
        publish(&ctx, &p, &ev).await;
    }

    // 7. Status and metrics.
    let (ready_workers, live) = (new_status.workers.ready, new_status.workers.live);
    let api: Api<FlashcardPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    status::write(&api, &p, old.as_ref(), new_status, &mut mem).await?;
    drop(mem);
    tracing::debug!(pipeline = %name, namespace = %ns, applied = ?outcome.applied, live, "reconciled");
    ctx.metrics.set_workers(
        &name,
        &ns,
        decision.replicas,
        ready_workers,
        p.spec.worker.max_replicas,
    );
    Ok(Action::requeue(Duration::from_secs(
        p.spec.worker.poll_interval_seconds.max(1).into(),
    )))
}

/// Publishes an Event about the pipeline; a failure is logged, never fatal.
pub(crate) async fn publish(ctx: &Context, p: &FlashcardPipeline, ev: &Event) {
    tracing::info!(pipeline = %p.name_any(), reason = %ev.reason, note = %ev.note, "event");
    if let Err(e) = ctx.recorder.publish(ev, &p.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %ev.reason, "cannot publish event");
    }
}

/// Counts the failure and retries soon; a failed reconcile never stops the controller. A
/// deletion that waits for its pods is no failure: it looks again shortly.
pub fn error_policy(p: Arc<FlashcardPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::CleanupPending(why) = error {
        tracing::info!(pipeline = %p.name_any(), %why, "deletion in progress");
        return Action::requeue(lifecycle::CLEANUP_REQUEUE);
    }
    tracing::warn!(pipeline = %p.name_any(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_failed(error.metric_label());
    Action::requeue(ERROR_REQUEUE)
}

#[cfg(test)]
mod tests;
