//! The API Deployment (`flashcard-service api`) and its Service.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use serde_json::json;

use super::pod::{Mode, pod_template};
use super::{
    PORT_NAME, RenderError, SERVICE_PORT, default_service_image, metadata, names, selector_labels,
    typed,
};
use crate::crd::FlashcardPipeline;

/// `<pipeline>-api`: a fixed replica count from the spec.
pub fn api_deployment(p: &FlashcardPipeline) -> Result<Deployment, RenderError> {
    let image = p
        .spec
        .api
        .image
        .clone()
        .unwrap_or_else(default_service_image);
    typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(p, names::api(&p.name_any()), "api")?,
            "spec": {
                "replicas": p.spec.api.replicas,
                "selector": {"matchLabels": selector_labels(p, "api")},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": pod_template(p, Mode::Api, &image, p.spec.api.resources.as_ref(), None),
            },
        }),
    )
}

/// `<pipeline>-api`: ClusterIP Service on port 3001 (`http`).
pub fn api_service(p: &FlashcardPipeline) -> Result<Service, RenderError> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(p, names::api(&p.name_any()), "api")?,
            "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(p, "api"),
                "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME,
                           "protocol": "TCP"}],
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::CONFIG_HASH_ANNOTATION;
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn api_deployment_runs_the_api_mode() {
        let d = api_deployment(&full()).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("biology-api"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.local/fc:dev"));
        assert_eq!(c.args.as_deref(), Some(&["api".to_owned()][..]));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 3001);
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        let probe = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/healthz"));
        let env: Vec<_> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            env,
            ["POD_NAME", "REDIS_URL", "OPENAI_API_KEY", "ADMIN_TOKEN"]
        );
        let pod_name = c.env.as_ref().unwrap()[0].value_from.as_ref().unwrap();
        assert_eq!(
            pod_name.field_ref.as_ref().unwrap().field_path,
            "metadata.name"
        );
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .config_map_ref
                .as_ref()
                .unwrap()
                .name,
            "biology-config"
        );
        let annotations = spec.template.metadata.unwrap().annotations.unwrap();
        assert!(annotations.contains_key(CONFIG_HASH_ANNOTATION));
    }

    #[test]
    fn default_image_follows_the_operator_version() {
        let d = api_deployment(&minimal()).unwrap();
        let image = d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone();
        assert_eq!(
            image.as_deref(),
            Some(concat!(
                "ghcr.io/flashcards-dev/flashcard-service:",
                env!("CARGO_PKG_VERSION")
            ))
        );
    }

    #[test]
    fn service_selects_api_pods() {
        let s = api_service(&minimal()).unwrap();
        let spec = s.spec.unwrap();
        assert_eq!(spec.selector.unwrap()["app.kubernetes.io/component"], "api");
        assert_eq!(spec.ports.unwrap()[0].port, 3001);
    }
}
