//! The end of a pipeline: `spec.deletionPolicy`.
//!
//! - `Retain` (default): no finalizer; the keys stay in Redis, and a pipeline created again with
//!   the same name and namespace carries on with them (its first reconcile says so in a
//!   `StoreDataFound` Event). A finalizer left by an earlier `Delete` is removed, so switching
//!   the policy back releases a blocked deletion too.
//! - `Delete`: kube-runtime's finalizer helper adds [`FINALIZER`] (JSON patch `test` + `add`)
//!   before the first apply. On deletion, [`cleanup`] first deletes the API and worker
//!   Deployments (foreground, so they disappear only once their pods have stopped, the workers
//!   after draining) and waits for them, since a running pod would write keys again after the
//!   purge; then it removes every key of the pipeline (`Store::purge`), and the helper removes the
//!   finalizer (`test` + `remove`). A store that cannot be reached blocks the deletion with the
//!   condition `DeletionBlocked` (reason `StoreUnavailable`) and an Event; the annotation
//!   [`FORCE_DELETE`] `"true"` removes the finalizer without cleaning up, and says so.
//! - A pipeline on the operator's Redis (no `spec.redis.urlSecretRef`) holds [`FINALIZER`]
//!   whatever its policy: its cleanup ends by deleting the pipeline's Redis user
//!   ([`crate::acl`]), after the purge with `Delete`, alone with `Retain` (the keys stay, and a
//!   pipeline created again gets a new user for them).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{publish, status};
use crate::children::Seen;
use crate::context::Context;
use crate::crd::{DeletionPolicy, FlashcardPipeline, condition};
use crate::events::Event;
use crate::render::names;
use crate::{Error, Result};

/// The finalizer of a `deletionPolicy: Delete` pipeline.
pub const FINALIZER: &str = "flashcards.dev/store-cleanup";
/// Annotation that lets a person delete a pipeline whose store cannot be cleaned up.
pub const FORCE_DELETE: &str = "flashcards.dev/force-delete";
/// Longest a purge may take (it scans the whole node the pipeline's keys live on).
pub const PURGE_TIMEOUT: Duration = Duration::from_secs(120);
/// How soon a deletion that waits for its pods looks again (their watch usually comes first).
pub const CLEANUP_REQUEUE: Duration = Duration::from_secs(5);

/// Whether the pipeline carries this operator's finalizer.
pub fn holds_finalizer(p: &FlashcardPipeline) -> bool {
    p.finalizers().iter().any(|f| f == FINALIZER)
}

/// Removes [`FINALIZER`] the way the finalizer helper does: a JSON patch that tests the entry at
/// its index first, so another controller's finalizer is never removed by mistake.
pub async fn remove_finalizer(
    api: &Api<FlashcardPipeline>,
    p: &FlashcardPipeline,
) -> Result<(), kube::Error> {
    let Some(i) = p.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{i}");
    // (json_patch's type, inferred: kube does not re-export the crate.)
    let patch: Patch<()> = Patch::Json(
        serde_json::from_value(json!([
            {"op": "test", "path": path, "value": FINALIZER},
            {"op": "remove", "path": path},
        ]))
        .map_err(kube::Error::SerdeError)?,
    );
    api.patch::<()>(&p.name_any(), &PatchParams::default(), &patch)
        .await?;
    Ok(())
}

fn forced(p: &FlashcardPipeline) -> bool {
    p.annotations().get(FORCE_DELETE).map(String::as_str) == Some("true")
}

fn owned_by(meta: &ObjectMeta, pipeline: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "FlashcardPipeline" && o.name == pipeline && o.controller == Some(true))
}

/// Deletes the pipeline's API and worker Deployments (foreground); returns those still there.
async fn stop_pods(ctx: &Context, p: &FlashcardPipeline, ns: &str) -> Result<Vec<String>> {
    let pipeline = p.name_any();
    let stores = ctx.children();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let (mut left, mut deleting) = (Vec::new(), Vec::new());
    for name in [names::api(&pipeline), names::worker(&pipeline)] {
        let watched = stores.deployment(ns, &name);
        match stores.seen("Deployment", ns, &name) {
            Seen::Absent => continue,
            Seen::Present(_) => {
                let Some(d) = watched else { continue };
                if !owned_by(&d.metadata, &pipeline) {
                    continue;
                }
                if d.metadata.deletion_timestamp.is_some() {
                    left.push(name);
                    continue;
                }
            }
            // The watch has not listed yet: ask the API server.
            Seen::Unknown => match api.get_opt(&name).await? {
                None => continue,
                Some(d) if !owned_by(&d.metadata, &pipeline) => continue,
                Some(d) if d.metadata.deletion_timestamp.is_some() => {
                    left.push(name);
                    continue;
                }
                Some(_) => {}
            },
        }
        match api.delete(&name, &DeleteParams::foreground()).await {
            Ok(_) => {
                deleting.push(name.clone());
                left.push(name);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !deleting.is_empty() {
        let ev = Event::normal(
            "Deleting",
            "Delete",
            format!(
                "stopping the pods of {} before deleting the pipeline's keys from the store \
                 (deletionPolicy Delete)",
                deleting.join(" and ")
            ),
        );
        publish(ctx, p, &ev).await;
    }
    Ok(left)
}

/// Records why the deletion waits: condition `DeletionBlocked` and an Event, once per message.
async fn block(ctx: &Context, p: &FlashcardPipeline, ns: &str, why: &str) -> Result<()> {
    let message = format!(
        "cannot clean up the pipeline's store: {why}; the deletion waits for the \
         store (annotate {FORCE_DELETE}=\"true\" to delete without cleaning up)"
    );
    let memory = ctx.memory(&format!("{ns}/{}", p.name_any())).await;
    let mut mem = memory.lock().await;
    let old = status::current(p, &mem);
    let known = old.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition::DELETION_BLOCKED && c.message == message)
    });
    if known {
        return Ok(());
    }
    publish(
        ctx,
        p,
        &Event::warning("DeletionBlocked", "Delete", message.clone()),
    )
    .await;
    let mut new = old.clone().unwrap_or_default();
    new.conditions
        .retain(|c| c.type_ != condition::DELETION_BLOCKED);
    new.conditions.push(status::cond(
        condition::DELETION_BLOCKED,
        Some(true),
        "StoreUnavailable",
        message,
        p.meta().generation,
    ));
    let api: Api<FlashcardPipeline> = Api::namespaced(ctx.client.clone(), ns);
    status::write(&api, p, old.as_ref(), new, &mut mem).await?;
    Ok(())
}

/// Deletes the pipeline's Redis user (a pipeline on the operator's Redis; nothing otherwise) and
/// forgets its connection; a Redis that cannot be reached blocks the deletion like a purge.
async fn retire(ctx: &Context, p: &FlashcardPipeline, ns: &str) -> Result<Action> {
    let retired = match tokio::time::timeout(ctx.observe_timeout, ctx.connector.retire(p)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "cannot delete the pipeline's Redis user: no answer within {} ms",
            ctx.observe_timeout.as_millis()
        )),
    };
    if let Err(why) = retired {
        tracing::warn!(pipeline = %p.name_any(), namespace = %ns, error = %why, "deletion blocked");
        block(ctx, p, ns, &why).await?;
        return Err(Error::DeletionBlocked(why));
    }
    ctx.connector.forget(&p.key()).await;
    Ok(Action::await_change())
}

/// The cleanup of a deleted pipeline that holds [`FINALIZER`] (`deletionPolicy: Delete`, or a
/// pipeline on the operator's Redis); `Ok` lets the helper remove the
/// finalizer, an error keeps it (and requeues).
pub async fn cleanup(p: Arc<FlashcardPipeline>, ctx: &Context) -> Result<Action> {
    let ns = p.namespace().ok_or(Error::NoNamespace)?;
    let name = p.name_any();
    let key = p.key();
    ctx.followers.stop(&key);
    if forced(&p) {
        let ev = Event::warning(
            "ForcedDeletion",
            "Delete",
            format!(
                "deleted without cleaning up the store ({FORCE_DELETE}=\"true\"): every key \
                 under fc:{{{ns}.{name}}}: stays in Redis (and so does the pipeline's Redis user, \
                 if the operator made one)"
            ),
        );
        publish(ctx, &p, &ev).await;
        ctx.connector.forget(&key).await;
        return Ok(Action::await_change());
    }

    if p.spec.deletion_policy == DeletionPolicy::Retain {
        // Here only for its Redis user (a pipeline on the operator's Redis): the keys stay.
        return retire(ctx, &p, &ns).await;
    }

    let left = stop_pods(ctx, &p, &ns).await?;
    if !left.is_empty() {
        return Err(Error::CleanupPending(format!(
            "waiting for the pods of {} to stop",
            left.join(" and ")
        )));
    }

    let purged = match ctx.connector.connect(&p).await {
        Ok(store) => match tokio::time::timeout(PURGE_TIMEOUT, store.purge()).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", PURGE_TIMEOUT.as_secs())),
        },
        Err(e) => Err(e),
    };
    match purged {
        Ok(n) => {
            let ev = Event::normal(
                "StoreDataDeleted",
                "Delete",
                format!(
                    "deleted the pipeline's {n} keys (fc:{{{ns}.{name}}}:*) from the store \
                     (deletionPolicy Delete)"
                ),
            );
            publish(ctx, &p, &ev).await;
            retire(ctx, &p, &ns).await
        }
        Err(why) => {
            tracing::warn!(pipeline = %name, namespace = %ns, error = %why, "deletion blocked");
            ctx.connector.report_failure(&p).await;
            block(ctx, &p, &ns, &why).await?;
            Err(Error::DeletionBlocked(why))
        }
    }
}
