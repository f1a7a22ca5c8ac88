//! Server-side apply of the children that changed or drifted, removal of a dropped Ingress, and
//! pod-deletion-cost before a scale-down.
//!
//! One child's failure (a webhook that refuses the PrometheusRule, a quota on Services) does not
//! stop the others: every child is tried, and the failures are returned for the status to name
//! (condition `Applied`) and for the pass to be retried with backoff.
//!
//! A child is applied when its rendering changed since the last apply, when its watch shows it
//! deleted or edited ([`crate::children::in_sync`]), or, for children without a usable watch,
//! every [`RESYNC_UNWATCHED`]. Nothing else: an idle pipeline sends no request.

use std::collections::HashMap;

use flashcard_store::WorkerInfo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::children::{Applied, ChildStores, Seen, Version, in_sync};
use crate::context::{PipelineMemory, RESYNC_UNWATCHED, TERM_APPLY_SPREAD};
use crate::render::monitoring::{prometheus_rule_resource, service_monitor_resource};
use crate::render::{Children, MANAGER, names};

/// Annotation the ReplicaSet controller reads to pick which pods to remove first (lowest first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether the first apply of a child in a new term waits: it is present (so nothing is
/// missing), and this child's offset within [`TERM_APPLY_SPREAD`] from the term's start has not
/// come yet. Offsets come from the child's `namespace/Kind/name`, so they spread evenly.
pub fn deferred_in_new_term(
    seen: &Seen,
    term_started: Option<Instant>,
    now: Instant,
    child: &str,
) -> bool {
    let spread = TERM_APPLY_SPREAD.as_millis() as u64;
    let offset = std::time::Duration::from_millis(fnv(child.as_bytes()) % spread.max(1));
    matches!(seen, Seen::Present(_)) && term_started.is_some_and(|t| now < t + offset)
}

/// A child whose apply (or removal) the API server refused or did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedChild {
    /// `Kind/name`.
    pub key: String,
    pub error: String,
    /// The pipeline works without it (PrometheusRule, ServiceMonitor).
    pub optional: bool,
    /// The `error` label of the reconcile errors metric.
    pub label: &'static str,
}

/// What one pass applied.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Keys (`Kind/name`) of the children applied, in order.
    pub applied: Vec<String>,
    /// The children that failed, in order.
    pub failed: Vec<FailedChild>,
    /// The API and worker Deployments as the apply returned them (with status), when applied.
    pub api: Option<Deployment>,
    pub worker: Option<Deployment>,
}

/// A namespaced kind with a Rust type, as [`Applier::typed`] applies it.
trait TypedChild:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Serialize
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
{
}

impl<K> TypedChild for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
{
}

/// Decides and records, child by child.
struct Applier<'a> {
    client: &'a Client,
    ns: &'a str,
    mem: &'a mut PipelineMemory,
    seen: &'a ChildStores,
    resync_due: bool,
    out: Outcome,
}

impl Applier<'_> {
    /// The hash of `obj` if it must be applied, with what its watch shows.
    fn needed<T: Serialize>(
        &self,
        key: &str,
        kind: &str,
        name: &str,
        obj: &T,
    ) -> Option<(u64, Seen)> {
        let hash = fnv(&serde_json::to_vec(obj).unwrap_or_default());
        let seen = self.seen.seen(kind, self.ns, name);
        let needed = match self.mem.applied.get(key) {
            None => {
                self.mem.term_started.is_none()
                    || !deferred_in_new_term(
                        &seen,
                        self.mem.term_started,
                        Instant::now(),
                        &format!("{}/{key}", self.ns),
                    )
            }
            Some(a) if a.hash != hash => true,
            Some(_) if seen == Seen::Unknown => self.resync_due,
            Some(a) => !in_sync(a, &seen, kind == "Deployment"),
        };
        if needed
            && let Some(a) = self.mem.applied.get(key)
            && a.hash == hash
        {
            tracing::info!(namespace = %self.ns, child = %key, ?seen, "child drifted; applying again");
        }
        needed.then_some((hash, seen))
    }

    fn record(&mut self, key: String, hash: u64, seen: Seen, after: Version) {
        let before = match seen {
            Seen::Present(v) => Some(v),
            _ => None,
        };
        self.mem.applied.insert(
            key.clone(),
            Applied {
                hash,
                before,
                after,
            },
        );
        self.out.applied.push(key);
    }

    fn failed(&mut self, key: String, error: &kube::Error, optional: bool) {
        tracing::warn!(namespace = %self.ns, child = %key, %error, "cannot apply child");
        self.out.failed.push(FailedChild {
            key,
            error: error.to_string(),
            optional,
            label: crate::Error::kube_label(error),
        });
    }

    /// Applies `obj` if needed; the applied object, or None when not needed or failed (the
    /// failure is recorded).
    async fn typed<K: TypedChild>(&mut self, obj: &K) -> Option<K> {
        self.typed_with(obj, &apply_params()).await
    }

    /// [`Applier::typed`] with other patch parameters.
    async fn typed_with<K: TypedChild>(&mut self, obj: &K, params: &PatchParams) -> Option<K> {
        let name = obj.name_any();
        let kind = K::kind(&());
        let key = format!("{kind}/{name}");
        let (hash, seen) = self.needed(&key, &kind, &name, obj)?;
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        match api.patch(&name, params, &Patch::Apply(obj)).await {
            Ok(applied) => {
                self.record(key, hash, seen, Version::of(&applied));
                Some(applied)
            }
            Err(e) => {
                self.failed(key, &e, false);
                None
            }
        }
    }

    /// Applies an optional child of a kind this crate has no type for (the monitoring CRDs).
    async fn dynamic(&mut self, obj: &DynamicObject, ar: &kube::api::ApiResource) {
        let name = obj.name_any();
        let key = format!("{}/{name}", ar.kind);
        let Some((hash, seen)) = self.needed(&key, &ar.kind, &name, obj) else {
            return;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.ns, ar);
        match api.patch(&name, &apply_params(), &Patch::Apply(obj)).await {
            Ok(applied) => self.record(key, hash, seen, Version::of(&applied)),
            Err(e) => self.failed(key, &e, true),
        }
    }

    /// Removes the pipeline's Ingress an earlier spec made, but only if it is ours (a user's
    /// own Ingress of the same name stays).
    async fn remove_ingress(&mut self, pipeline: &str) {
        let name = names::pipeline(pipeline);
        let key = format!("{}/{name}", Ingress::kind(&()));
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), self.ns);
        let removed = async {
            let Some(existing) = api.get_opt(&name).await? else {
                return Ok(());
            };
            let ours = existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| {
                    o.kind == "FlashcardPipeline"
                        && o.name == pipeline
                        && o.controller == Some(true)
                });
            if ours {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        .await;
        match removed {
            Ok(()) => {
                self.mem.applied.remove(&key);
                self.mem.ingress_absent = true;
            }
            Err(e) => self.failed(key, &e, false),
        }
    }
}

/// Applies every child that changed or drifted (see the module docs); one child's failure does
/// not stop the others ([`Outcome::failed`]). Without `deployments` (a referenced Secret does not
/// consent) the Deployments, the only children that name Secrets, are left out.
pub async fn apply_children(
    client: &Client,
    ns: &str,
    pipeline: &str,
    children: &Children,
    seen: &ChildStores,
    mem: &mut PipelineMemory,
    mut deployments: bool,
) -> Outcome {
    let resync_due = mem
        .last_resync
        .is_none_or(|t| t.elapsed() >= RESYNC_UNWATCHED);
    if resync_due {
        mem.last_resync = Some(Instant::now());
    }
    let mut a = Applier {
        client,
        ns,
        mem,
        seen,
        resync_due,
        out: Outcome::default(),
    };
    if let Some(secret) = &children.redis_credential {
        // Not forced: a Secret of that name someone else wrote is a conflict to report, never
        // overwritten. What comes back is not kept (it holds the password).
        let params = PatchParams::apply(MANAGER);
        let failures = a.out.failed.len();
        let _ = a.typed_with::<Secret>(&secret.0, &params).await;
        // The pods would read whatever that Secret holds: no Deployment until it is ours.
        deployments &= a.out.failed.len() == failures;
    }
    a.typed::<ConfigMap>(&children.config_map).await;
    if deployments {
        a.out.api = a.typed::<Deployment>(&children.api_deployment).await;
    }
    a.typed::<Service>(&children.api_service).await;
    if let Some(ing) = &children.ingress {
        a.typed::<Ingress>(ing).await;
        a.mem.ingress_absent = false;
    } else if !a.mem.ingress_absent {
        // The spec has no Ingress (any more): remove one an earlier spec left.
        a.remove_ingress(pipeline).await;
    }
    if deployments {
        a.out.worker = a.typed::<Deployment>(&children.worker_deployment).await;
    }
    a.typed::<Service>(&children.worker_service).await;
    if let Some(rule) = &children.prometheus_rule {
        a.dynamic(rule, &prometheus_rule_resource()).await;
    }
    if let Some(sm) = &children.service_monitor {
        a.dynamic(sm, &service_monitor_resource()).await;
    }
    a.out
}

/// Deletion cost of each worker pod: its active jobs, so the ReplicaSet removes idle pods first.
pub fn deletion_costs(workers: &[WorkerInfo]) -> HashMap<String, u32> {
    workers
        .iter()
        .filter(|w| !w.pod.is_empty())
        .map(|w| (w.pod.clone(), w.active))
        .collect()
}

/// Writes the deletion costs that changed (merge patch; a pod that is already gone is skipped).
pub async fn set_deletion_costs(
    client: &Client,
    ns: &str,
    costs: &HashMap<String, u32>,
    mem: &mut PipelineMemory,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    let mut pods: Vec<_> = costs.iter().collect();
    pods.sort();
    for (pod, cost) in pods {
        if mem.pod_costs.get(pod) == Some(cost) {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {POD_DELETION_COST: cost.to_string()}}});
        match api.patch(pod, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                mem.pod_costs.insert(pod.clone(), *cost);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                mem.pod_costs.remove(pod);
            }
            Err(e) => return Err(e),
        }
    }
    mem.pod_costs.retain(|pod, _| costs.contains_key(pod));
    Ok(())
}

/// One line naming each failed child and why (condition messages, the pass's error).
pub fn describe(failed: &[FailedChild]) -> String {
    failed
        .iter()
        .map(|f| format!("{}: {}", f.key, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a new term a present child waits for its offset, a missing one never waits, and the
    /// offsets of many children spread over the window instead of landing together.
    #[test]
    fn a_new_term_spreads_the_re_apply_of_present_children() {
        let t0 = Instant::now();
        let present = Seen::Present(Version::default());
        let end = t0 + TERM_APPLY_SPREAD;
        assert!(
            !deferred_in_new_term(&present, None, t0, "ns/Deployment/a"),
            "first term"
        );
        assert!(!deferred_in_new_term(
            &Seen::Absent,
            Some(t0),
            t0,
            "ns/Deployment/a"
        ));
        assert!(!deferred_in_new_term(
            &present,
            Some(t0),
            end,
            "ns/Deployment/a"
        ));
        let children: Vec<String> = (0..600)
            .map(|i| format!("team-{}/Deployment/p{i}-api", i % 7))
            .collect();
        let mut due_per_tenth = [0u32; 10];
        for child in &children {
            let at = (0..=300)
                .map(|step| t0 + TERM_APPLY_SPREAD * step / 300)
                .find(|&now| !deferred_in_new_term(&present, Some(t0), now, child))
                .expect("due within the window");
            let tenth = ((at - t0).as_secs_f64() / TERM_APPLY_SPREAD.as_secs_f64() * 10.0) as usize;
            due_per_tenth[tenth.min(9)] += 1;
        }
        // 60 per tenth if perfectly even: no tenth of the window takes more than twice that.
        assert!(
            due_per_tenth.iter().all(|&n| n > 20 && n < 120),
            "{due_per_tenth:?}"
        );
    }
}
