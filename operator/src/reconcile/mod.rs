//! The reconciler: one pass per pipeline every `spec.worker.pollIntervalSeconds`.
//!
//! 1. read the store (queue, workers, spend, kill-switch) and enforce the budget;
//! 2. decide the worker replicas ([`crate::scaling`]);
//! 3. before a scale-down, mark idle worker pods as cheapest to delete;
//! 4. server-side apply the children that changed (all of them at least every
//!    [`crate::context::RESYNC`]);
//! 5. publish Events for scale and kill-switch changes;
//! 6. write the status if it changed, and requeue after the poll interval.
//!
//! An unreachable store is not an error: the worker count is kept and a condition says so.
//! API errors go to [`error_policy`], which counts them and requeues.

pub mod apply;
pub mod observe;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use flashcard_service::keyspace::PipelineName;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::budget::{Holder, Level};
use crate::context::Context;
use crate::crd::FlashcardPipeline;
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
    let children = render::render(&p, decision.replicas, monitoring)?;
    let applied = apply::apply_children(&ctx.client, &ns, &name, &children, &mut mem).await?;
    mem.replicas = Some(decision.replicas);

    // 5. Events.
    if scaled && let Some(c) = current {
        let note = format!(
            "workers {c} -> {}: {} (waiting {}, active {})",
            decision.replicas,
            decision.reason.as_str(),
            queue.map_or(0, |q| q.waiting),
            queue.map_or(0, |q| q.active)
        );
        publish(&ctx, &p, EventType::Normal, "Scaled", "Scale", note).await;
    }
    if let Ok(o) = &observed {
        kill_switch_events(&ctx, &p, o, &mut mem).await;
        if o.budget.level == Level::NearlyExhausted
            && mem.budget_level != Some(Level::NearlyExhausted)
        {
            let note = format!(
                "{:.1}% of the budget spent in {}",
                o.budget.percent, o.period
            );
            publish(
                &ctx,
                &p,
                EventType::Warning,
                "BudgetNearlyExhausted",
                "Budget",
                note,
            )
            .await;
        }
        mem.budget_level = Some(o.budget.level);
    }
    let store_ok = observed.is_ok();
    if mem.store_ok != Some(store_ok) {
        if let Err(e) = &observed {
            let note = format!("keeping {} workers: {e}", decision.replicas);
            publish(
                &ctx,
                &p,
                EventType::Warning,
                "StoreUnavailable",
                "Observe",
                note,
            )
            .await;
        }
        mem.store_ok = Some(store_ok);
    }
    drop(mem);

    // 6. Status and metrics.
    let facts = status::Facts {
        observed: observed.as_ref().map_err(String::as_str),
        scale: decision,
        scaled_at: scaled.then_some(now),
        monitoring,
        applied,
    };
    let new_status = status::build(&p, &facts);
    let live = new_status.workers.current;
    let api: Api<FlashcardPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    status::write(&api, &p, new_status).await?;
    ctx.metrics.set_workers(
        &name,
        &ns,
        decision.replicas,
        live,
        p.spec.worker.max_replicas,
    );
    Ok(Action::requeue(Duration::from_secs(
        p.spec.worker.poll_interval_seconds.max(1).into(),
    )))
}

/// Events for kill-switch changes, whoever made them (the store's automatic budget stop
/// switches on and off without the operator), and for restored spend.
async fn kill_switch_events(
    ctx: &Context,
    p: &FlashcardPipeline,
    o: &observe::Observed,
    mem: &mut crate::context::PipelineMemory,
) {
    if let Some(micros) = o.restored_micros {
        let note = format!(
            "the store lost its data; restored the spend of {} to {} from the pipeline's status",
            o.period,
            flashcard_service::budget::format_usd(o.spent_micros)
        );
        tracing::warn!(pipeline = %p.name_any(), restored_micros = micros, "spend restored");
        publish(ctx, p, EventType::Warning, "SpendRestored", "Budget", note).await;
    }
    let ks = &o.budget.after;
    let holder = Holder::of(ks);
    // The holder at the last poll, or (first poll of this process) at the start of this one.
    let before = mem
        .kill_switch_holder
        .replace(holder)
        .unwrap_or(o.holder_before);
    if before == holder {
        return;
    }
    match holder {
        Some(h) => {
            let note = format!(
                "kill-switch on (set by {}): {}",
                h.as_str(),
                ks.reason.clone().unwrap_or_default()
            );
            publish(
                ctx,
                p,
                EventType::Warning,
                "KillSwitchOn",
                "KillSwitch",
                note,
            )
            .await;
        }
        None => {
            let note = format!(
                "kill-switch off: {:.1}% of the budget spent in {}",
                o.budget.percent, o.period
            );
            publish(
                ctx,
                p,
                EventType::Normal,
                "KillSwitchOff",
                "KillSwitch",
                note,
            )
            .await;
        }
    }
}

/// Publishes an Event about the pipeline; a failure is logged, never fatal.
async fn publish(
    ctx: &Context,
    p: &FlashcardPipeline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    tracing::info!(pipeline = %p.name_any(), reason, %note, "event");
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &p.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
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
