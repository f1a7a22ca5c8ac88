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
/// Longest poll interval of a pipeline whose store does not answer (see [`next_poll`]).
pub const STORE_BACKOFF_CAP: Duration = Duration::from_secs(60);

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
    let key = p.key();
    // A pipeline on the operator's Redis holds the finalizer whatever its policy: its Redis user
    // is deleted with it.
    let finalized = p.spec.deletion_policy == DeletionPolicy::Delete || p.spec.redis.managed();
    let result = match finalized {
        false => {
            if lifecycle::holds_finalizer(&p) {
                // Switched from Delete (or left by it): the keys stay, so nothing needs to hold
                // a deletion. The patch's watch event brings the next pass.
                lifecycle::remove_finalizer(&api, &p).await?;
                return Ok(Action::await_change());
            }
            if p.meta().deletion_timestamp.is_some() {
                ctx.followers.stop(&key);
                return Ok(Action::await_change());
            }
            sync(p, ctx.clone()).await
        }
        true => {
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
    };
    // Any pass that succeeds (a sync, a cleanup, a finalizer's removal) ends the backoff.
    if result.is_ok() {
        ctx.reconcile_failures.reset(&key);
    }
    result
}

/// Reads the store, bounded by the context's observe timeout (connect, Secret read and every
/// store call of the pass together): a Redis that accepts connections and never answers costs
/// this pipeline one timeout and nobody else anything.
async fn observe_store(
    ctx: &Context,
    p: &Arc<FlashcardPipeline>,
    key: &str,
    now: jiff::Timestamp,
) -> Result<observe::Observed, String> {
    let limit = ctx.observe_timeout;
    match tokio::time::timeout(limit, observe_or_reconnect(ctx, p, key, now)).await {
        Ok(observed) => observed,
        Err(_) => {
            // The next pass reads the Secret again (a rotated URL may be what broke it).
            ctx.connector.report_failure(p).await;
            Err(format!(
                "the store did not answer within {} ms",
                limit.as_millis()
            ))
        }
    }
}

/// Reads the store; on a failure reports it to the connector and, if that yields another store
/// (the Secret holds a new URL: a rotated password), reads that one at once.
async fn observe_or_reconnect(
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

/// `Err(why)` when a Secret the pipeline references does not consent to it, or that cannot be
/// told now ([`crate::consent`]; bounded like the store).
async fn secrets_allowed(ctx: &Context, p: &FlashcardPipeline) -> Result<(), Vec<String>> {
    let limit = ctx.observe_timeout;
    match tokio::time::timeout(limit, ctx.connector.refused_secrets(p)).await {
        Ok(Ok(refused)) if refused.is_empty() => Ok(()),
        Ok(Ok(refused)) => Err(refused),
        Ok(Err(e)) => Err(vec![e]),
        Err(_) => Err(vec![format!(
            "cannot read the Secrets' labels within {} ms",
            limit.as_millis()
        )]),
    }
}

/// When the next poll of a pipeline runs: its poll interval while its store answers; while it
/// does not, an exponential backoff from the poll interval up to [`STORE_BACKOFF_CAP`] (with
/// jitter), so a dead Redis is not dialled every few seconds. Child and spec changes still
/// reconcile at once, and a pass that reaches the store resets the backoff.
pub fn next_poll(poll: Duration, store_failures: u32) -> Duration {
    if store_failures == 0 {
        return poll;
    }
    crate::backoff::Schedule {
        base: poll,
        cap: STORE_BACKOFF_CAP.max(poll),
    }
    // One failure waits one to two intervals, never less than a working store's poll.
    .delay(store_failures.saturating_add(1))
}

/// Brings a live pipeline's children, store and status in line with its spec.
pub async fn sync(p: Arc<FlashcardPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let ns = p.namespace().ok_or(Error::NoNamespace)?;
    let name = p.name_any();
    let key = p.key();
    let now = jiff::Timestamp::now();
    let monitoring = ctx.monitoring_available().await;
    let memory = ctx.memory(&key).await;
    let mut mem = memory.lock().await;
    mem.enter_term(ctx.term());

    // 1. The store.
    let observed = observe_store(&ctx, &p, &key, now).await;
    let store_failures = match &observed {
        Ok(_) => {
            ctx.store_failures.reset(&key);
            0
        }
        Err(e) => {
            tracing::warn!(pipeline = %name, namespace = %ns, error = %e, "store unreachable");
            ctx.store_failures.record(&key)
        }
    };

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
        // Best effort: without the costs the ReplicaSet picks the pods itself, which is no
        // reason to keep more workers than the queue needs.
        if let Err(e) = apply::set_deletion_costs(
            &ctx.client,
            &ns,
            &apply::deletion_costs(&o.workers),
            &mut mem,
        )
        .await
        {
            tracing::warn!(pipeline = %name, namespace = %ns, error = %e, "cannot mark idle worker pods; scaling down without it");
        }
    }

    // 4. Children; the Deployments only when every Secret they would get consents.
    let mut secrets = secrets_allowed(&ctx, &p).await;
    let credential = ctx.connector.credential(&p).unwrap_or_else(|why| {
        secrets = Err(secrets
            .clone()
            .err()
            .unwrap_or_default()
            .into_iter()
            .chain([why])
            .collect());
        None
    });
    let stores = ctx.children();
    let children = render::render(&p, decision.replicas, monitoring, credential.as_ref())?;
    let outcome = apply::apply_children(
        &ctx.client,
        &ns,
        &name,
        &children,
        &stores,
        &mut mem,
        secrets.is_ok(),
    )
    .await;
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
        failed: &outcome.failed,
        secrets: secrets.as_ref().map(|_| ()).map_err(Vec::as_slice),
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
    if let Some(first) = outcome.failed.first() {
        // Whatever could be applied is, and the status names what failed; the pass counts as
        // failed so it is retried with this pipeline's backoff.
        return Err(Error::ChildrenFailed {
            label: first.label,
            message: apply::describe(&outcome.failed),
        });
    }
    let poll = Duration::from_secs(p.spec.worker.poll_interval_seconds.max(1).into());
    Ok(Action::requeue(next_poll(poll, store_failures)))
}

/// Publishes an Event about the pipeline; a failure is logged, never fatal.
pub(crate) async fn publish(ctx: &Context, p: &FlashcardPipeline, ev: &Event) {
    tracing::info!(pipeline = %p.name_any(), reason = %ev.reason, note = %ev.note, "event");
    if let Err(e) = ctx.recorder.publish(ev, &p.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %ev.reason, "cannot publish event");
    }
}

/// Counts the failure and retries after this pipeline's own backoff
/// ([`crate::backoff::RECONCILE_ERRORS`]: 2 s doubling to 5 minutes, jittered); a failed
/// reconcile never stops the controller, and one pipeline's failures never delay another's. A
/// deletion that waits for its pods is no failure: it looks again shortly.
pub fn error_policy(p: Arc<FlashcardPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::CleanupPending(why) = error {
        tracing::info!(pipeline = %p.name_any(), %why, "deletion in progress");
        return Action::requeue(lifecycle::CLEANUP_REQUEUE);
    }
    let key = p.key();
    let failures = ctx.reconcile_failures.record(&key);
    let delay = crate::backoff::RECONCILE_ERRORS.delay(failures);
    tracing::warn!(pipeline = %p.name_any(), error = %error, failures, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    ctx.metrics.reconcile_failed(error.metric_label());
    Action::requeue(delay)
}

#[cfg(test)]
mod tests;
