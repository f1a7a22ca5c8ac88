//! PrometheusRule and ServiceMonitor (prometheus-operator), built as `DynamicObject`s so the
//! operator needs no prometheus-operator crate. The rules come from `flashcard_monitoring`,
//! the one source shared with the files in `alerts/`.

use std::time::Duration;

use flashcard_monitoring::{AlertThresholds, RuleOptions, prometheus_rule_spec, rule_groups_with};
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{OPERATIONS_PORT_NAME, PIPELINE_LABEL, RenderError, metadata, names, typed};
use crate::crd::FlashcardPipeline;

/// The monitoring API group whose presence the reconciler discovers.
pub const MONITORING_GROUP: &str = "monitoring.coreos.com";

/// `monitoring.coreos.com/v1` PrometheusRule.
pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        MONITORING_GROUP,
        "v1",
        "PrometheusRule",
    ))
}

/// `monitoring.coreos.com/v1` ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        MONITORING_GROUP,
        "v1",
        "ServiceMonitor",
    ))
}

/// The pipeline's alert thresholds in the alert module's terms.
pub fn thresholds(p: &FlashcardPipeline) -> AlertThresholds {
    let a = &p.spec.alerts;
    AlertThresholds {
        queue_depth_high: a.queue_depth_high,
        queue_depth_critical: a.queue_depth_critical,
        failure_rate_percent: a.failure_rate_percent,
        worker_stalled_seconds: a.worker_stalled_seconds,
        budget_warn_percent: p.spec.budget.warn_at_percent,
        failure_window: Duration::from_secs(300),
        ..AlertThresholds::default()
    }
}

fn with_user_labels(p: &FlashcardPipeline, mut meta: serde_json::Value) -> serde_json::Value {
    for (k, v) in &p.spec.alerts.labels {
        meta["labels"][k] = json!(v);
    }
    meta
}

/// The PrometheusRule `<pipeline>`: the runbook's alerts, scoped to this pipeline.
pub fn prometheus_rule(p: &FlashcardPipeline) -> Result<DynamicObject, RenderError> {
    let options = RuleOptions {
        pipeline: Some(p.name_any()),
        namespace: p.namespace(),
        ..RuleOptions::default()
    };
    let groups = rule_groups_with(&thresholds(p), &options);
    let meta = with_user_labels(
        p,
        metadata(p, names::pipeline(&p.name_any()), "monitoring")?,
    );
    typed(
        "PrometheusRule",
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": meta,
            "spec": prometheus_rule_spec(&groups),
        }),
    )
}

/// The ServiceMonitor `<pipeline>`: scrapes `/metrics` of the api and worker Services.
pub fn service_monitor(p: &FlashcardPipeline) -> Result<DynamicObject, RenderError> {
    let meta = with_user_labels(
        p,
        metadata(p, names::pipeline(&p.name_any()), "monitoring")?,
    );
    typed(
        "ServiceMonitor",
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": meta,
            "spec": {
                "selector": {"matchLabels": {
                    PIPELINE_LABEL: p.name_any(),
                    "app.kubernetes.io/name": "flashcard-service",
                }},
                "endpoints": [{"port": OPERATIONS_PORT_NAME, "path": "/metrics",
                               "interval": "15s"}],
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn rule_uses_the_pipeline_thresholds_and_labels() {
        let r = prometheus_rule(&full()).unwrap();
        assert_eq!(r.types.as_ref().unwrap().kind, "PrometheusRule");
        assert_eq!(
            r.metadata.labels.as_ref().unwrap()["release"],
            "kube-prometheus-stack"
        );
        let text = serde_json::to_string(&r.data["spec"]["groups"]).unwrap();
        assert!(
            text.contains("> 60") || text.contains(">60"),
            "high threshold: {text}"
        );
        assert!(text.contains("120"), "critical threshold");
        assert!(
            text.contains("pipeline=\\\"biology\\\""),
            "scoped to the pipeline"
        );
    }

    #[test]
    fn service_monitor_scrapes_metrics() {
        let m = service_monitor(&full()).unwrap();
        assert_eq!(m.data["spec"]["endpoints"][0]["path"], "/metrics");
        assert_eq!(
            m.data["spec"]["selector"]["matchLabels"][PIPELINE_LABEL],
            "biology"
        );
        assert_eq!(
            m.metadata.labels.as_ref().unwrap()["release"],
            "kube-prometheus-stack"
        );
    }
}
