//! The worker Deployment (`flashcard-service worker`), whose replicas the autoscaler sets, and a
//! headless Service that lets the ServiceMonitor scrape each worker's `/metrics`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use serde_json::json;

use super::pod::{Mode, pod_template};
use super::{
    OPERATIONS_PORT, OPERATIONS_PORT_NAME, PORT_NAME, RenderError, SERVICE_PORT,
    default_service_image, metadata, names, selector_labels, typed,
};
use crate::crd::FlashcardPipeline;

/// Seconds added to the worker's drain time for the kubelet's grace period: the service's
/// default lease (30 s, for which a finished job's outcome is retried against the store) and a
/// 15 s margin.
pub const GRACE_MARGIN_SECONDS: i64 = 45;

/// `<pipeline>-worker` with `replicas` from the autoscaler. The grace period covers a job
/// (SHUTDOWN_GRACE_SECONDS), the retries of its outcome and a margin, so a drained worker is
/// never killed mid-job or before its outcome is recorded (which would run and bill it again).
pub fn worker_deployment(p: &FlashcardPipeline, replicas: u32) -> Result<Deployment, RenderError> {
    let w = &p.spec.worker;
    let image = w.image.clone().unwrap_or_else(default_service_image);
    let grace = i64::from(w.shutdown_grace_seconds) + GRACE_MARGIN_SECONDS;
    typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(p, names::worker(&p.name_any()), "worker")?,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector_labels(p, "worker")},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": pod_template(p, Mode::Worker, &image, w.resources.as_ref(), Some(grace)),
            },
        }),
    )
}

/// `<pipeline>-worker`: headless, only for metrics discovery.
pub fn worker_service(p: &FlashcardPipeline) -> Result<Service, RenderError> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(p, names::worker(&p.name_any()), "worker")?,
            "spec": {
                "clusterIP": "None",
                "selector": selector_labels(p, "worker"),
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
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn worker_deployment_follows_the_autoscaler() {
        let d = worker_deployment(&full(), 7).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("biology-worker"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(7));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(345));
        let c = &pod.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["worker".to_owned()][..]));
        let env: Vec<_> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            env,
            ["POD_NAME", "REDIS_URL", "OPENAI_API_KEY"],
            "no admin token in workers"
        );
        assert_eq!(
            spec.selector.match_labels.unwrap()["app.kubernetes.io/component"],
            "worker"
        );
    }

    #[test]
    fn worker_service_is_headless() {
        let s = worker_service(&minimal()).unwrap();
        assert_eq!(s.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    }
}
