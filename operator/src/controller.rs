//! The controller: watches that trigger reconciles, and the loop that runs them.
//!
//! - FlashcardPipelines, filtered to changes of the spec or the lifecycle (generation,
//!   deletion, finalizers, annotations): the operator's own status writes do not trigger a
//!   reconcile;
//! - the children, by the `managed-by` label: Deployments in full (their status is
//!   `status.api`/`status.workers`, managed fields dropped to save memory), Services,
//!   ConfigMaps and Ingresses metadata-only. Every child event reconciles its owner, which
//!   repairs a deleted or edited child at once ([`crate::children`]);
//! - the stores' "work arrived" signals ([`crate::follow`]): a job for an idle pipeline
//!   reconciles it at once;
//! - the requeue after each reconcile (`spec.worker.pollIntervalSeconds`) polls the queue.
//!
//! One controller runs per leadership term; a new term starts with fresh watches.

use std::collections::HashSet;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::children::{CHILD_SELECTOR, ChildStores};
use crate::context::Context;
use crate::crd::FlashcardPipeline;
use crate::reconcile::{error_policy, reconcile};

/// Reconcile requests for one pipeline that arrive within this window run once (an apply of
/// six children produces six watch events).
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often memory of deleted pipelines is dropped.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Longest pause between two attempts of a failed watch (before jitter, which adds up to as
/// much again). kube's default (client-go's) grows to 30 s: after an API server outage of half
/// a minute the watches came back up to 30 s late, and a child deleted meanwhile waited that
/// long for its repair. With 5 s each of the five watches tries at most once per 5-10 s during
/// an outage and is back within 10 s of the API server.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// First pause of a failed watch (kube's default).
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(800);
/// A watch that has worked this long starts its backoff from the first pause again.
const WATCH_BACKOFF_RESET: Duration = Duration::from_secs(120);

/// The backoff of every watch: exponential with jitter, from [`WATCH_BACKOFF_MIN`] up to
/// [`WATCH_BACKOFF_MAX`].
pub fn watch_backoff() -> impl Backoff {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(WATCH_BACKOFF_MIN)
        .with_max_delay(WATCH_BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(exponential),
        WATCH_BACKOFF_RESET,
    )
}

/// Drops a watch's errors (logged) once its own backoff has handled them. An error that reached
/// the controller would pause *every* trigger (kube's controller backs off its merged trigger
/// stream on any error, with the 30 s default): one failing watch, e.g. Ingresses the operator
/// may no longer list, would then delay the repair of every pipeline's Deployments.
fn only_events<T>(
    watch: &'static str,
    events: impl futures::Stream<Item = Result<T, watcher::Error>>,
) -> impl futures::Stream<Item = Result<T, watcher::Error>> {
    events.filter(move |event| {
        if let Err(e) = event {
            tracing::warn!(watch, error = %e, "watch failed; retrying");
        }
        std::future::ready(event.is_ok())
    })
}

/// Which namespaces the controller watches.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

/// The trigger filter of pipelines: what a user or another controller changes, not the status
/// this operator writes.
fn spec_or_lifecycle(p: &FlashcardPipeline) -> Option<u64> {
    let mut h = DefaultHasher::new();
    p.meta().generation.hash(&mut h);
    p.meta().deletion_timestamp.is_some().hash(&mut h);
    p.finalizers().hash(&mut h);
    p.annotations().hash(&mut h);
    Some(h.finish())
}

/// Runs the controller until `shutdown` resolves (then it finishes the reconciles in flight).
pub async fn run(
    client: Client,
    scope: Scope,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (stores, writers) = ChildStores::new();
    ctx.set_children(stores);

    let (pipelines, pipeline_writer) = reflector::store::<FlashcardPipeline>();
    let pipeline_events = only_events(
        "flashcardpipelines",
        watcher(
            scope.api::<FlashcardPipeline>(&client),
            watcher::Config::default().any_semantic(),
        )
        .backoff(watch_backoff())
        .reflect(pipeline_writer)
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, Default::default()),
    );

    let children = watcher::Config::default()
        .labels(CHILD_SELECTOR)
        .any_semantic();
    let deployments = only_events(
        "deployments",
        watcher(scope.api::<Deployment>(&client), children.clone())
            .backoff(watch_backoff())
            .modify(|d| d.managed_fields_mut().clear())
            .reflect(writers.deployments)
            .touched_objects(),
    );
    let services = only_events(
        "services",
        watcher(
            scope.api::<PartialObjectMeta<Service>>(&client),
            children.clone(),
        )
        .backoff(watch_backoff())
        .reflect(writers.services)
        .touched_objects(),
    );
    let config_maps = only_events(
        "configmaps",
        watcher(
            scope.api::<PartialObjectMeta<ConfigMap>>(&client),
            children.clone(),
        )
        .backoff(watch_backoff())
        .reflect(writers.config_maps)
        .touched_objects(),
    );
    let ingresses = only_events(
        "ingresses",
        watcher(scope.api::<PartialObjectMeta<Ingress>>(&client), children)
            .backoff(watch_backoff())
            .reflect(writers.ingresses)
            .touched_objects(),
    );

    let pruner = {
        let (ctx, pipelines) = (ctx.clone(), pipelines.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PRUNE_EVERY).await;
                let alive: HashSet<String> = pipelines.state().iter().map(|p| p.key()).collect();
                ctx.prune(&alive).await;
            }
        })
    };

    // Signals of the stores' followers reach this controller while it runs.
    let (trigger, triggered) = futures::channel::mpsc::unbounded();
    ctx.followers.set_trigger(Some(trigger));

    let ran = ctx.clone();
    Controller::for_stream(pipeline_events, pipelines)
        .reconcile_on(triggered)
        .owns_stream(deployments)
        .owns_stream(services)
        .owns_stream(config_maps)
        .owns_stream(ingresses)
        .with_config(controller::Config::default().debounce(DEBOUNCE))
        .trigger_backoff(watch_backoff())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile result");
            }
        })
        .await;
    ran.followers.set_trigger(None);
    pruner.abort();
}

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod managed_redis_tests;
#[cfg(test)]
mod tenancy_tests;
#[cfg(test)]
mod tests;
