//! The `FlashcardPipeline` custom resource (`flashcards.dev/v1alpha1`).
//!
//! The Rust types are the source of truth: the CRD YAML in `crds/` and the Helm chart's template
//! are generated from them (see [`crate::crdgen`]). Field docs become the schema's descriptions,
//! so `kubectl explain flashcardpipeline.spec` reads as a manual.

mod spec;
mod status;

pub use spec::*;
pub use status::*;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A flashcard-generation pipeline: an API Deployment behind a Service (and optional Ingress),
/// a worker Deployment scaled by queue depth, the service configuration, monitoring objects and
/// a budget enforced by a kill-switch. All of its state lives in one Redis under the hash tag
/// `{<metadata.namespace>.<metadata.name>}`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flashcards.dev",
    version = "v1alpha1",
    kind = "FlashcardPipeline",
    doc = "A flashcard-generation pipeline (API, autoscaled workers, budget kill-switch, monitoring).",
    plural = "flashcardpipelines",
    shortname = "fcp",
    category = "flashcards",
    namespaced,
    status = "FlashcardPipelineStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"API","type":"string","jsonPath":".status.api.summary","description":"ready/desired API pods"}"#,
    printcolumn = r#"{"name":"Waiting","type":"integer","jsonPath":".status.queue.waiting"}"#,
    printcolumn = r#"{"name":"Workers","type":"string","jsonPath":".status.workers.summary","description":"ready/desired worker pods"}"#,
    printcolumn = r#"{"name":"Spend","type":"string","jsonPath":".status.budget.summary","description":"spent/limit in USD this period"}"#,
    printcolumn = r#"{"name":"Kill-Switch","type":"boolean","jsonPath":".status.budget.killSwitch"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("the pipeline name is a Redis hash tag and a label value: at most 63 characters of a-z, 0-9 and '-'").field_path(".metadata.name").reason(kube::core::Reason::FieldValueInvalid)
)]
#[serde(rename_all = "camelCase")]
pub struct FlashcardPipelineSpec {
    /// Where the pipeline's shared state (queue, jobs, spend, kill-switch) lives.
    #[serde(default)]
    pub redis: RedisSpec,
    /// The HTTP API and SSE pods (`flashcard-service api`).
    #[serde(default)]
    pub api: ApiSpec,
    /// The worker pods (`flashcard-service worker`) and their autoscaling.
    #[serde(default)]
    pub worker: WorkerSpec,
    /// The flashcard generator the workers call, and its prices.
    #[serde(default)]
    pub provider: ProviderSpec,
    /// Spend limit per period and the kill-switch that enforces it.
    #[serde(default)]
    pub budget: BudgetSpec,
    /// Alert thresholds (for the service's alert endpoint and the PrometheusRule) and labels
    /// for the monitoring objects.
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// What happens to the pipeline's data in Redis (queue, jobs, spend, kill-switch) when this
    /// resource is deleted. `Retain` keeps every key: a pipeline created again with the same name
    /// and namespace continues with its queue, spend and kill-switch, and says so in a
    /// `StoreDataFound` Event. `Delete` adds a finalizer that, on deletion, stops the API and
    /// worker pods, removes every key of the pipeline, then lets the resource go; a Redis that
    /// cannot be reached blocks the deletion (condition `DeletionBlocked`) until it answers or the
    /// annotation `flashcards.dev/force-delete: "true"` is set. Switching from `Delete` to
    /// `Retain` removes the finalizer.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl FlashcardPipeline {
    /// `<namespace>/<name>`: the key of everything the operator keeps per pipeline.
    pub fn key(&self) -> String {
        use kube::ResourceExt;
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn schema() -> Value {
        let crd = serde_json::to_value(crate::crdgen::crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// Structural: every node states its type (or is int-or-string / preserve-unknown).
    fn assert_structural(node: &Value, path: &str) {
        let obj = node.as_object().unwrap();
        assert!(
            obj.contains_key("type")
                || obj.contains_key("x-kubernetes-int-or-string")
                || obj.contains_key("x-kubernetes-preserve-unknown-fields"),
            "{path} has no type"
        );
        for bad in ["oneOf", "anyOf", "allOf", "$ref"] {
            assert!(!obj.contains_key(bad), "{path} uses {bad}");
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                assert_structural(v, &format!("{path}.{k}"));
            }
        }
        for k in ["items", "additionalProperties"] {
            if let Some(v) = obj.get(k).filter(|v| v.is_object()) {
                assert_structural(v, &format!("{path}[{k}]"));
            }
        }
    }

    #[test]
    fn schema_is_structural() {
        assert_structural(&schema(), "");
    }

    #[test]
    fn schema_carries_defaults_docs_and_validations() {
        let s = schema();
        let spec = &s["properties"]["spec"]["properties"];
        let worker = &spec["worker"]["properties"];
        assert_eq!(worker["pollIntervalSeconds"]["default"], 5);
        assert_eq!(worker["scaleDownStabilizationSeconds"]["default"], 300);
        assert_eq!(
            spec["alerts"]["properties"]["queueDepthHigh"]["default"],
            50
        );
        assert_eq!(spec["budget"]["properties"]["period"]["default"], "monthly");
        assert!(
            worker["concurrency"]["description"]
                .as_str()
                .unwrap()
                .contains("WORKER_CONCURRENCY")
        );
        let rules = serde_json::to_string(&s).unwrap();
        for rule in [
            "self.minReplicas <= self.maxReplicas",
            "self.queueDepthHigh < self.queueDepthCritical",
            "has(self.apiKeySecretRef)",
            "size(self.reason) > 0",
            "self.metadata.name.matches(",
            "self.mode != 'apiKey' || has(self.apiKeysSecretRef)",
            "self.baseUrl.startsWith('https://')",
        ] {
            assert!(rules.contains(rule), "missing rule {rule}");
        }
        assert_eq!(worker["targetJobsPerReplica"]["minimum"], 1.0);
    }

    /// Every CEL rule names the field it is about and why (else `kubectl apply` reports
    /// `<nil>: Invalid value`), and its fieldPath resolves in the schema the way the API server
    /// resolves it (dotted property names below the node that carries the rule).
    #[test]
    fn every_cel_rule_has_a_resolvable_field_path_and_a_reason() {
        fn walk(node: &Value, path: &str, found: &mut usize) {
            for rule in node["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                *found += 1;
                let fp = rule["fieldPath"]
                    .as_str()
                    .unwrap_or_else(|| panic!("rule {} at {path} has no fieldPath", rule["rule"]));
                let reason = rule["reason"].as_str().unwrap_or_default();
                assert!(
                    [
                        "FieldValueInvalid",
                        "FieldValueRequired",
                        "FieldValueForbidden",
                        "FieldValueDuplicate"
                    ]
                    .contains(&reason),
                    "rule at {path}: reason {reason:?}"
                );
                let mut target = node;
                for part in fp
                    .strip_prefix('.')
                    .expect("fieldPath starts with '.'")
                    .split('.')
                {
                    target = &target["properties"][part];
                    assert!(
                        target.is_object(),
                        "fieldPath {fp} at {path} does not resolve"
                    );
                }
            }
            for (k, v) in node["properties"].as_object().into_iter().flatten() {
                walk(v, &format!("{path}.{k}"), found);
            }
        }
        let mut found = 0;
        walk(&schema(), "", &mut found);
        assert_eq!(found, 8, "the eight rules of the resource");
    }

    /// `kubectl explain` shows descriptions as written: no hard wraps, and the defaults and
    /// ranges it would not show otherwise.
    #[test]
    fn descriptions_read_well_in_kubectl_explain() {
        fn walk(node: &Value, path: &str) {
            if let Some(d) = node["description"].as_str() {
                assert!(
                    !d.replace("\n\n", "").contains('\n'),
                    "{path}: hard line break in {d:?}"
                );
            }
            for (k, v) in node["properties"].as_object().into_iter().flatten() {
                walk(v, &format!("{path}.{k}"));
            }
        }
        let s = schema();
        walk(&s, "");
        let worker = &s["properties"]["spec"]["properties"]["worker"]["properties"];
        let poll = worker["pollIntervalSeconds"]["description"]
            .as_str()
            .unwrap();
        assert!(poll.ends_with("Default: `5`. Range: 1 to 300."), "{poll}");
        let period =
            s["properties"]["spec"]["properties"]["budget"]["properties"]["period"]["description"]
                .as_str()
                .unwrap();
        assert!(period.contains("Default: `monthly`."), "{period}");
        let limit = s["properties"]["spec"]["properties"]["budget"]["properties"]["limitUsd"]
            ["description"]
            .as_str()
            .unwrap();
        assert!(limit.contains("Default: `0.0`. Minimum: 0."), "{limit}");
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let p: FlashcardPipelineSpec = serde_json::from_value(serde_json::json!({
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}}
        }))
        .unwrap();
        assert_eq!(p.worker, WorkerSpec::default());
        assert_eq!(p.api.replicas, 2);
        assert!(p.budget.kill_switch.automatic);
        assert_eq!(p.provider.kind, ProviderKind::Local);
        assert_eq!(p.api.identity, IdentitySpec::default());
        assert_eq!(p.api.identity.mode, IdentityMode::Body);
        assert_eq!(p.api.identity.header, "X-Forwarded-User");
    }

    #[test]
    fn identity_schema_is_documented_and_constrained() {
        let s = schema();
        let identity = &s["properties"]["spec"]["properties"]["api"]["properties"]["identity"];
        let props = &identity["properties"];
        assert_eq!(
            props["mode"]["enum"],
            serde_json::json!(["body", "apiKey", "proxy"])
        );
        assert_eq!(props["mode"]["default"], "body");
        for field in ["mode", "apiKeysSecretRef", "header", "trustedProxies"] {
            assert!(
                props[field]["description"]
                    .as_str()
                    .is_some_and(|d| d.len() > 20),
                "{field} is documented"
            );
        }
        assert!(props["header"]["pattern"].is_string());
        assert_eq!(props["trustedProxies"]["maxItems"], 64);
        assert!(props["trustedProxies"]["items"]["pattern"].is_string());
        let rules = identity["x-kubernetes-validations"].to_string();
        assert!(
            rules.contains("identity mode apiKey needs apiKeysSecretRef"),
            "{rules}"
        );
    }

    #[test]
    fn body_identity_behind_an_ingress_needs_consent() {
        let s = schema();
        let rules =
            s["properties"]["spec"]["properties"]["api"]["x-kubernetes-validations"].to_string();
        assert!(rules.contains("ingress.allowBodyIdentity"), "{rules}");
        let ingress = &s["properties"]["spec"]["properties"]["api"]["properties"]["ingress"];
        assert_eq!(
            ingress["properties"]["allowBodyIdentity"]["default"],
            serde_json::json!(false)
        );
        // The identity's mode has a schema default, so the rule sees `body` when it is omitted.
        let identity = &s["properties"]["spec"]["properties"]["api"]["properties"]["identity"];
        assert_eq!(identity["properties"]["mode"]["default"], "body");
    }

    /// The `http://` half of the baseUrl rule is the pattern the tests check, and it lets only
    /// in-cluster and loopback hosts through (a host that merely contains `.svc` does not pass).
    #[test]
    fn base_url_rule_allows_tls_anywhere_and_clear_text_only_in_cluster() {
        use super::spec::{BASE_URL_PATTERN, BASE_URL_RULE};
        assert!(BASE_URL_RULE.contains(&format!("matches('{BASE_URL_PATTERN}')")));
        let re = regex::Regex::new(BASE_URL_PATTERN).unwrap();
        let allowed = |url: &str| url.starts_with("https://") || re.is_match(url);
        for ok in [
            "https://api.openai.com/v1",
            "https://evil.example/v1",
            "http://vllm.models.svc:8000/v1",
            "http://vllm.models.svc.cluster.local/v1",
            "http://localhost:8080/v1",
            "http://127.0.0.1:9000",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for bad in [
            "http://evil.example/v1",
            "http://evil.svc.example.com/v1",
            "http://user@evil.example/x.svc",
            "ftp://vllm.models.svc/v1",
            "http://evil.example?.svc",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
    }
}
