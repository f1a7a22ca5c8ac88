//! Pure rendering of a pipeline's children: the objects the reconciler server-side applies.
//!
//! Every function here takes the pipeline (and the autoscaler's replica count) and returns the
//! object; nothing talks to the API server, so the whole output is unit-tested. Secrets appear
//! only as `secretKeyRef`s.

mod api;
mod config;
pub mod credential;
mod ingress;
pub mod monitoring;
mod pod;
mod worker;

pub use api::{api_deployment, api_service};
pub use config::{config_hash, config_map, config_values};
pub use ingress::{SSE_ANNOTATIONS, ingress};
pub use monitoring::{
    prometheus_rule, prometheus_rule_resource, service_monitor, service_monitor_resource,
};
pub use worker::{worker_deployment, worker_service};

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::acl::Credential;
use crate::crd::FlashcardPipeline;

/// Port of the service binary's client API (HTTP, SSE, probes): what the Ingress routes to.
pub const SERVICE_PORT: i32 = 3001;
/// Name of the container port and Service port.
pub const PORT_NAME: &str = "http";
/// Port of the operations endpoints (`/metrics`, alerts, queue and SSE stats, the console),
/// which the ServiceMonitor scrapes and no Ingress routes to (`OPERATIONS_LISTEN_ADDR`).
pub const OPERATIONS_PORT: i32 = 9090;
/// Name of the operations container port and Service port.
pub const OPERATIONS_PORT_NAME: &str = "ops";
/// Label that marks every child with its pipeline.
pub const PIPELINE_LABEL: &str = "flashcards.dev/pipeline";
/// Pod annotation carrying the hash of the ConfigMap, so a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "flashcards.dev/config-hash";
/// The operator's field manager (one for every apply).
pub const MANAGER: &str = "flashcard-operator";

/// Default image of the service binary: the same version as this operator.
pub fn default_service_image() -> String {
    format!(
        "ghcr.io/flashcards-dev/flashcard-service:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Rendering failed: a bug or an object the API server would reject.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the pipeline has no namespace")]
    NoNamespace,
    #[error("rendered {kind} is malformed: {source}")]
    Malformed {
        kind: &'static str,
        source: serde_json::Error,
    },
}

/// Names of the children.
pub mod names {
    pub fn config(p: &str) -> String {
        format!("{p}-config")
    }
    pub fn api(p: &str) -> String {
        format!("{p}-api")
    }
    pub fn worker(p: &str) -> String {
        format!("{p}-worker")
    }
    /// The Secret with the pipeline's Redis user, for a pipeline on the operator's Redis.
    pub fn redis_credential(p: &str) -> String {
        format!("{p}-redis-credential")
    }
    /// Ingress, PrometheusRule and ServiceMonitor carry the pipeline's own name.
    pub fn pipeline(p: &str) -> String {
        p.to_owned()
    }
}

/// Everything applied for one pipeline, in apply order.
#[derive(Debug, Clone)]
pub struct Children {
    /// The pods' Redis user, for a pipeline on the operator's Redis (applied first).
    pub redis_credential: Option<credential::CredentialSecret>,
    pub config_map: ConfigMap,
    pub api_deployment: Deployment,
    pub api_service: Service,
    pub ingress: Option<Ingress>,
    pub worker_deployment: Deployment,
    pub worker_service: Service,
    /// Present only when the monitoring.coreos.com CRDs exist.
    pub prometheus_rule: Option<DynamicObject>,
    pub service_monitor: Option<DynamicObject>,
}

/// Renders all children; `credential` is the pods' Redis user for a pipeline on the operator's
/// Redis (see [`crate::acl`]).
pub fn render(
    p: &FlashcardPipeline,
    worker_replicas: u32,
    monitoring: bool,
    credential: Option<&Credential>,
) -> Result<Children, RenderError> {
    let mut api_deployment = api_deployment(p)?;
    let mut worker_deployment = worker_deployment(p, worker_replicas)?;
    if let Some(c) = credential {
        credential::roll_on_rotation(&mut api_deployment, c);
        credential::roll_on_rotation(&mut worker_deployment, c);
    }
    Ok(Children {
        redis_credential: credential
            .map(|c| credential::credential_secret(p, c))
            .transpose()?,
        config_map: config_map(p)?,
        api_deployment,
        api_service: api_service(p)?,
        ingress: ingress(p)?,
        worker_deployment,
        worker_service: worker_service(p)?,
        prometheus_rule: if monitoring {
            Some(prometheus_rule(p)?)
        } else {
            None
        },
        service_monitor: if monitoring {
            Some(service_monitor(p)?)
        } else {
            None
        },
    })
}

/// Labels of every child of the pipeline; `component` is `api`, `worker`, `config`, ...
pub fn labels(p: &FlashcardPipeline, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(p, component);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "flashcard-operator".into(),
    );
    l.insert(PIPELINE_LABEL.into(), p.name_any());
    l.insert("app.kubernetes.io/part-of".into(), "flashcards".into());
    l
}

/// The stable subset used in selectors.
pub fn selector_labels(p: &FlashcardPipeline, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "flashcard-service".into()),
        ("app.kubernetes.io/instance".into(), p.name_any()),
        ("app.kubernetes.io/component".into(), component.into()),
    ])
}

/// The controller owner reference: deleting the pipeline deletes the child.
pub fn owner_ref(p: &FlashcardPipeline) -> Option<OwnerReference> {
    p.controller_owner_ref(&())
}

/// `metadata` of a child as JSON.
pub(crate) fn metadata(
    p: &FlashcardPipeline,
    name: String,
    component: &str,
) -> Result<Value, RenderError> {
    let ns = p.namespace().ok_or(RenderError::NoNamespace)?;
    Ok(json!({
        "name": name,
        "namespace": ns,
        "labels": labels(p, component),
        "ownerReferences": owner_ref(p).into_iter().collect::<Vec<_>>(),
    }))
}

/// Converts rendered JSON into its typed object.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    v: Value,
) -> Result<T, RenderError> {
    serde_json::from_value(v).map_err(|source| RenderError::Malformed { kind, source })
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::crd::{FlashcardPipeline, FlashcardPipelineSpec};
    use kube::api::ObjectMeta;

    /// A pipeline as the API server would return it (defaults filled in).
    pub fn pipeline(spec: serde_json::Value) -> FlashcardPipeline {
        let spec: FlashcardPipelineSpec = serde_json::from_value(spec).unwrap();
        FlashcardPipeline {
            metadata: ObjectMeta {
                name: Some("biology".into()),
                namespace: Some("study".into()),
                uid: Some("uid-1".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }

    pub fn minimal() -> FlashcardPipeline {
        pipeline(serde_json::json!({"redis": {"urlSecretRef": {"name": "redis", "key": "url"}}}))
    }

    /// Uses every option, including every secret reference.
    pub fn full() -> FlashcardPipeline {
        pipeline(serde_json::json!({
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "api": {"replicas": 3, "image": "registry.local/fc:dev",
                    "adminTokenSecretRef": {"name": "admin", "key": "token"},
                    "identity": {"mode": "apiKey",
                                 "apiKeysSecretRef": {"name": "client-keys", "key": "keys"},
                                 "trustedProxies": ["10.244.0.0/16", "10.0.0.7"]},
                    "ingress": {"host": "cards.example.org", "className": "nginx",
                                "tlsSecretName": "cards-tls",
                                "annotations": {"cert-manager.io/cluster-issuer": "le"}}},
            "worker": {"concurrency": 8, "minReplicas": 1, "maxReplicas": 20,
                       "targetJobsPerReplica": 16, "shutdownGraceSeconds": 300},
            "provider": {"kind": "openai", "model": "gpt-4o", "baseUrl": "https://llm.local/v1",
                         "priceInputPer1k": 0.0025, "priceOutputPer1k": 0.01,
                         "apiKeySecretRef": {"name": "openai", "key": "apiKey"}},
            "budget": {"limitUsd": 500.0, "period": "weekly", "warnAtPercent": 90.0},
            "alerts": {"queueDepthHigh": 60, "queueDepthCritical": 120,
                       "labels": {"release": "kube-prometheus-stack"}}
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    /// Operations endpoints listen on their own port: pods and Services expose it, the
    /// ServiceMonitor scrapes it, and the Ingress routes only to the client port.
    #[test]
    fn operations_have_their_own_port_that_no_ingress_routes_to() {
        let c = render(&full(), 2, true, None).unwrap();
        let config = c.config_map.data.as_ref().unwrap();
        assert_eq!(config["OPERATIONS_LISTEN_ADDR"], "0.0.0.0:9090");
        for d in [&c.api_deployment, &c.worker_deployment] {
            let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let ports = pod.containers[0].ports.as_ref().unwrap();
            assert!(
                ports
                    .iter()
                    .any(|p| p.name.as_deref() == Some(OPERATIONS_PORT_NAME)
                        && p.container_port == OPERATIONS_PORT)
            );
        }
        for s in [&c.api_service, &c.worker_service] {
            let ports = s.spec.as_ref().unwrap().ports.as_ref().unwrap();
            assert!(
                ports
                    .iter()
                    .any(|p| p.name.as_deref() == Some(OPERATIONS_PORT_NAME))
            );
        }
        let monitor = serde_json::to_value(c.service_monitor.unwrap()).unwrap();
        assert_eq!(
            monitor["spec"]["endpoints"][0]["port"],
            OPERATIONS_PORT_NAME
        );
        let ingress = serde_json::to_value(c.ingress.unwrap()).unwrap();
        let backends = ingress["spec"]["rules"].to_string();
        assert!(
            backends.contains(&format!("\"name\":\"{PORT_NAME}\"")),
            "{backends}"
        );
        assert!(!backends.contains(OPERATIONS_PORT_NAME), "{backends}");
    }

    #[test]
    fn children_are_owned_by_the_pipeline() {
        let c = render(&full(), 2, true, None).unwrap();
        let metas = [
            &c.config_map.metadata,
            &c.api_deployment.metadata,
            &c.api_service.metadata,
            &c.worker_deployment.metadata,
            &c.worker_service.metadata,
            &c.ingress.as_ref().unwrap().metadata,
            &c.prometheus_rule.as_ref().unwrap().metadata,
            &c.service_monitor.as_ref().unwrap().metadata,
        ];
        for m in metas {
            let owners = m.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "FlashcardPipeline");
            assert_eq!(owners[0].uid, "uid-1");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(m.namespace.as_deref(), Some("study"));
            assert_eq!(m.labels.as_ref().unwrap()[PIPELINE_LABEL], "biology");
        }
    }

    #[test]
    fn no_monitoring_objects_without_the_crds() {
        let c = render(&minimal(), 0, false, None).unwrap();
        assert!(c.prometheus_rule.is_none() && c.service_monitor.is_none());
        assert!(c.ingress.is_none());
    }

    /// The secret names appear only inside secretKeyRefs; no value is ever rendered.
    #[test]
    fn secrets_only_by_reference() {
        let c = render(&full(), 2, true, None).unwrap();
        let all = serde_json::to_string(&(
            &c.config_map,
            &c.api_deployment,
            &c.worker_deployment,
            &c.api_service,
            &c.ingress,
        ))
        .unwrap();
        assert!(!all.contains("\"kind\":\"Secret\""));
        let cm = serde_json::to_string(&c.config_map).unwrap();
        for word in ["REDIS_URL", "OPENAI_API_KEY", "ADMIN_TOKEN", "redis://"] {
            assert!(!cm.contains(word), "ConfigMap mentions {word}");
        }
        for d in [&c.api_deployment, &c.worker_deployment] {
            let env = d
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .env
                .clone()
                .unwrap();
            for e in env {
                if ["REDIS_URL", "OPENAI_API_KEY", "ADMIN_TOKEN"].contains(&e.name.as_str()) {
                    assert!(e.value.is_none(), "{} has a literal value", e.name);
                    let r = e.value_from.unwrap().secret_key_ref.unwrap();
                    assert!(!r.name.is_empty());
                }
            }
        }
    }
}
