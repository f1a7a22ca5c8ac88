//! Server-side apply of the children (only what changed since the last apply, plus a periodic
//! resync), removal of a dropped Ingress, and pod-deletion-cost before a scale-down.

use std::collections::HashMap;
use std::time::Instant;

use flashcard_service::store::WorkerInfo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::context::{PipelineMemory, RESYNC};
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

/// Tracks which children changed since they were last applied.
struct Applier<'a> {
    client: &'a Client,
    ns: &'a str,
    mem: &'a mut PipelineMemory,
    applied_any: bool,
}

impl Applier<'_> {
    fn changed<T: Serialize>(&self, key: &str, obj: &T) -> Option<u64> {
        let hash = fnv(&serde_json::to_vec(obj).unwrap_or_default());
        (self.mem.applied.get(key) != Some(&hash)).then_some(hash)
    }

    async fn typed<K>(&mut self, obj: &K) -> Result<(), kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let name = obj.name_any();
        let key = format!("{}/{name}", K::kind(&()));
        if let Some(hash) = self.changed(&key, obj) {
            let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
            api.patch(&name, &apply_params(), &Patch::Apply(obj))
                .await?;
            self.mem.applied.insert(key, hash);
            self.applied_any = true;
        }
        Ok(())
    }

    async fn dynamic(
        &mut self,
        obj: &DynamicObject,
        ar: &kube::api::ApiResource,
    ) -> Result<(), kube::Error> {
        let name = obj.name_any();
        let key = format!("{}/{name}", ar.kind);
        if let Some(hash) = self.changed(&key, obj) {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.ns, ar);
            api.patch(&name, &apply_params(), &Patch::Apply(obj))
                .await?;
            self.mem.applied.insert(key, hash);
            self.applied_any = true;
        }
        Ok(())
    }
}

/// Applies every child that changed; returns whether anything was applied.
pub async fn apply_children(
    client: &Client,
    ns: &str,
    pipeline: &str,
    children: &Children,
    mem: &mut PipelineMemory,
) -> Result<bool, kube::Error> {
    if mem.last_full_apply.is_none_or(|t| t.elapsed() >= RESYNC) {
        mem.applied.clear();
        mem.last_full_apply = Some(Instant::now());
    }
    let mut a = Applier {
        client,
        ns,
        mem,
        applied_any: false,
    };
    a.typed::<ConfigMap>(&children.config_map).await?;
    a.typed::<Deployment>(&children.api_deployment).await?;
    a.typed::<Service>(&children.api_service).await?;
    if let Some(ing) = &children.ingress {
        a.typed::<Ingress>(ing).await?;
        a.mem.ingress_absent = false;
    } else if !a.mem.ingress_absent {
        // The spec has no Ingress (any more): remove one an earlier spec left, but only if it is
        // ours (a user's own Ingress of the same name stays).
        let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
        let name = names::pipeline(pipeline);
        if let Some(existing) = api.get_opt(&name).await? {
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
        }
        a.mem.ingress_absent = true;
    }
    a.typed::<Deployment>(&children.worker_deployment).await?;
    a.typed::<Service>(&children.worker_service).await?;
    if let Some(rule) = &children.prometheus_rule {
        a.dynamic(rule, &prometheus_rule_resource()).await?;
    }
    if let Some(sm) = &children.service_monitor {
        a.dynamic(sm, &service_monitor_resource()).await?;
    }
    Ok(a.applied_any)
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
