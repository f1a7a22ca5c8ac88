//! The reconciler: one pass per pipeline every `spec.worker.pollIntervalSeconds`, and at once
//! when the pipeline's spec or one of its children changes (see `controller`).
//!
//! 1. read the store (queue, workers, spend, kill-switch) and enforce the budget;
//! 2. decide the worker replicas ([`crate::scaling`]);
//! 3. before a scale-down, mark idle worker pods as cheapest to delete;
//! 4. server-side apply the children that changed or drifted ([`apply`]);
//! 5. build the status from what was observed, including the Deployments' pods ([`status`]);
//! 6. publish an Event per distinct change ([`changes`]);
//! 7. write the status if it changed, and requeue after the poll interval.
//!
//! An unreachable store is not an error: the worker count is kept and a condition says so.
//! API errors go to [`error_policy`], which counts them and requeues.

pub mod apply;
pub mod changes;
pub mod observe;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use flashcard_service::keyspace::PipelineName;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::context::Context;
use crate::crd::FlashcardPipeline;
use crate::events::Event;
use crate::render::names;
use crate::scaling::{self, ScaleHistory};
use crate::{Error, Result, render};

/// Longest wait for the store in one poll (a hung Redis must not stall the autoscaler).
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(4);
/// Requeue delay after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(15);

/// Reconciles one pipeline.
pub async fn reconcile(p: Arc<FlashcardPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let ns = p.namespace().ok_or(Error::NoNamespace)?;
    let name = p.name_any();
    PipelineName::new(&name)?;
    let now = jiff::Timestamp::now();
    let monitoring = ctx.monitoring_available().await;
    let memory = ctx.memory(&format!("{ns}/{name}")).await;
    let mut mem = memory.lock().await;
    mem.enter_term(ctx.term());

    // 1. The store.
    let observed = match ctx.connector.connect(&p).await {
        Ok(store) => observe::observe(&p, &store, now)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
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

    // 6. Events.
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
async fn publish(ctx: &Context, p: &FlashcardPipeline, ev: &Event) {
    tracing::info!(pipeline = %p.name_any(), reason = %ev.reason, note = %ev.note, "event");
    if let Err(e) = ctx.recorder.publish(ev, &p.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %ev.reason, "cannot publish event");
    }
}

/// Counts the failure and retries soon; a failed reconcile never stops the controller.
pub fn error_policy(p: Arc<FlashcardPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(pipeline = %p.name_any(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_failed(error.metric_label());
    Action::requeue(ERROR_REQUEUE)
}

#[cfg(test)]
mod tests;
