//! The API Deployment (`flashcard-service api`) and its Service.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use serde_json::json;

use super::pod::{DRAIN_SPREAD_SECONDS, Mode, pod_template};
use super::{
    OPERATIONS_PORT, OPERATIONS_PORT_NAME, PORT_NAME, RenderError, SERVICE_PORT,
    default_service_image, metadata, names, selector_labels, typed,
};
use crate::crd::FlashcardPipeline;

/// The API pod's grace period: the drain window, the spread of the streams' end, and a margin.
pub fn api_grace_seconds(p: &FlashcardPipeline) -> i64 {
    i64::from(p.spec.api.drain_seconds) + DRAIN_SPREAD_SECONDS + 5
}

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
                "template": pod_template(p, Mode::Api, &image, p.spec.api.resources.as_ref(),
                                         Some(api_grace_seconds(p))),
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
                           "protocol": "TCP"},
                          {"name": OPERATIONS_PORT_NAME, "port": OPERATIONS_PORT,
                           "targetPort": OPERATIONS_PORT_NAME, "protocol": "TCP"}],
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
    fn api_pods_drain_in_a_pre_stop_sleep_within_their_grace_period() {
        let pod_of = |p: &FlashcardPipeline| {
            api_deployment(p)
                .unwrap()
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        let mut p = full();
        let pod = pod_of(&p);
        let c = &pod.containers[0];
        let sleep = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(sleep.sleep.as_ref().unwrap().seconds, 10);
        assert_eq!(pod.termination_grace_period_seconds, Some(17));
        let drain = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "DRAIN_SECONDS");
        assert_eq!(drain.unwrap().value.as_deref(), Some("0"));
        p.spec.api.drain_seconds = 0;
        let pod = pod_of(&p);
        assert!(pod.containers[0].lifecycle.is_none());
        assert_eq!(pod.termination_grace_period_seconds, Some(7));
    }

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
            [
                "POD_NAME",
                "REDIS_URL",
                "OPENAI_API_KEY",
                "ADMIN_TOKEN",
                "CLIENT_IDENTITY",
                "IDENTITY_HEADER",
                "TRUSTED_PROXIES",
                "API_KEYS_FILE",
                "DRAIN_SECONDS",
                "DRAIN_SPREAD_MS"
            ]
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

    fn api_container(
        p: &FlashcardPipeline,
    ) -> (
        k8s_openapi::api::core::v1::PodSpec,
        k8s_openapi::api::core::v1::Container,
    ) {
        let pod = api_deployment(p)
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let container = pod.containers[0].clone();
        (pod, container)
    }

    fn literal_env(c: &k8s_openapi::api::core::v1::Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
            .collect()
    }

    #[test]
    fn api_keys_are_a_mounted_secret_file_and_the_identity_is_env() {
        let (pod, c) = api_container(&full());
        let env = literal_env(&c);
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("CLIENT_IDENTITY"), Some("api-key"));
        assert_eq!(get("IDENTITY_HEADER"), Some("X-Forwarded-User"));
        assert_eq!(get("TRUSTED_PROXIES"), Some("10.244.0.0/16,10.0.0.7"));
        assert_eq!(get("API_KEYS_FILE"), Some("/etc/flashcards/api-keys/keys"));
        let volumes = pod.volumes.unwrap();
        assert_eq!(volumes.len(), 1);
        let secret = volumes[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("client-keys"));
        let items = secret.items.as_ref().unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("keys", "keys")
        );
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.name, volumes[0].name);
        assert_eq!(mount.mount_path, "/etc/flashcards/api-keys");
        assert_eq!(mount.read_only, Some(true));
        // The worker needs none of it.
        let worker = crate::render::worker_deployment(&full(), 1).unwrap();
        let wpod = worker.spec.unwrap().template.spec.unwrap();
        assert!(wpod.volumes.is_none());
        assert!(
            !wpod.containers[0]
                .env
                .iter()
                .flatten()
                .any(|e| e.name == "CLIENT_IDENTITY" || e.name == "API_KEYS_FILE")
        );
    }

    #[test]
    fn default_identity_is_the_seed_s_body_mode_without_volumes() {
        let (pod, c) = api_container(&minimal());
        let env = literal_env(&c);
        assert!(env.contains(&("CLIENT_IDENTITY".into(), "body".into())));
        assert!(env.iter().all(|(k, _)| k != "API_KEYS_FILE"));
        assert!(pod.volumes.is_none() && c.volume_mounts.is_none());
        let mut proxy = minimal();
        proxy.spec.api.identity.mode = crate::crd::IdentityMode::Proxy;
        proxy.spec.api.identity.header = "X-Auth-Request-Email".into();
        let env = literal_env(&api_container(&proxy).1);
        assert!(env.contains(&("CLIENT_IDENTITY".into(), "proxy".into())));
        assert!(env.contains(&("IDENTITY_HEADER".into(), "X-Auth-Request-Email".into())));
    }

    /// The api container's settings (ConfigMap plus literal env) parse with the service's own
    /// clap definition of `api` mode, and mean what the spec says.
    #[test]
    fn service_binary_accepts_the_identity_settings() {
        use clap::{CommandFactory, Parser};
        let p = full();
        let (_, c) = api_container(&p);
        let mut vars: Vec<(String, String)> =
            crate::render::config_values(&p).into_iter().collect();
        vars.extend(literal_env(&c));
        let cmd = flashcard_service::config::Cli::command();
        let api = cmd.find_subcommand("api").expect("api mode");
        let mut args = vec!["flashcard-service".to_owned(), "api".to_owned()];
        for (k, v) in &vars {
            let arg = api
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == k.as_str()))
                .unwrap_or_else(|| panic!("the service has no setting for env {k}"));
            args.push(format!("--{}={v}", arg.get_long().expect("long flag")));
        }
        let cli = flashcard_service::config::Cli::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("service rejects the settings: {e}"));
        let s = &cli.mode.settings().api;
        assert_eq!(
            s.client_identity,
            flashcard_core::identity::IdentityMode::ApiKey
        );
        assert_eq!(
            s.api_keys_file.as_deref(),
            Some(std::path::Path::new("/etc/flashcards/api-keys/keys"))
        );
        assert_eq!(s.trusted_proxies, ["10.244.0.0/16", "10.0.0.7"]);
        assert_eq!(s.identity_header, "X-Forwarded-User");
        // The identity loads as the service loads it, but for the keys file the kubelet mounts.
        flashcard_service::api::identity::Identities::load(
            flashcard_core::identity::IdentityMode::Proxy,
            None,
            &s.identity_header,
            &s.trusted_proxies,
        )
        .expect("header and proxies are valid");
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
