//! The plain manifests (`manifests/`, rendered with `kubectl kustomize`) and every sample in
//! `manifests/samples/` parse strictly into their Rust types: the k8s-openapi types, the
//! operator's own `FlashcardPipeline`, and a small Gateway API `HTTPRoute` type below.
//!
//! Strict means a misspelled or misplaced field fails the test. serde ignores unknown fields by
//! default (so does the API server for most built-in kinds, silently), so every document is
//! deserialized, serialized again, and compared with the original: anything the type dropped or
//! changed is reported with its path. `strict_check_catches_misspelled_fields` proves it.
//!
//! Also checked: the CRD in the kustomize output is the generated one, the chart and the
//! manifests grant the same RBAC rules (no wildcards), and images, tags and versions agree across
//! Cargo, the chart, the manifests, the samples and the Dockerfiles.
//!
//! Needs `kubectl` on PATH (or KUBECTL=/path/to/kubectl); `kubectl kustomize` runs offline.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use flashcard_operator::crd::{FlashcardPipeline, FlashcardPipelineSpec};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const OPERATOR_IMAGE: &str = "ghcr.io/flashcards-dev/flashcard-operator";
const SERVICE_IMAGE: &str = "ghcr.io/flashcards-dev/flashcard-service";
const NAMESPACE: &str = "flashcards-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `kubectl kustomize <dir>` (offline).
fn kustomize(rel: &str) -> String {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo().join(rel))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{kubectl} kustomize` ({e}): install kubectl or set KUBECTL")
        });
    assert!(
        out.status.success(),
        "`kubectl kustomize {rel}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Every YAML document of a stream, as JSON values (empty documents skipped).
fn docs(yaml: &str, origin: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("{origin}: invalid YAML: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Strict parsing

/// Deserialize `doc` into `T`, serialize it again, and report every field of `doc` that did not
/// survive (unknown, misspelled or misplaced) or came back with another value.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let typed: T =
        serde_json::from_value(doc.clone()).map_err(|e| format!("does not parse: {e}"))?;
    let again = serde_json::to_value(&typed).map_err(|e| format!("does not serialize: {e}"))?;
    let mut problems = Vec::new();
    diff(doc, &again, "", &mut problems);
    if problems.is_empty() {
        Ok(typed)
    } else {
        Err(problems.join("; "))
    }
}

fn diff(orig: &Value, again: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, again) {
        // An explicit null means "not set"; types drop it.
        (Value::Null, _) => {}
        (Value::Object(o), Value::Object(a)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => diff(v, av, &p, out),
                    None if v.is_null() => {}
                    None => out.push(format!("{p}: unknown field")),
                }
            }
        }
        (Value::Array(o), Value::Array(a)) if o.len() == a.len() => {
            for (i, (v, av)) in o.iter().zip(a).enumerate() {
                diff(v, av, &format!("{path}[{i}]"), out);
            }
        }
        // 500 and 500.0 are the same number to Kubernetes.
        (Value::Number(o), Value::Number(a)) if o.as_f64() == a.as_f64() => {}
        (o, a) if o == a => {}
        (o, a) => out.push(format!("{path}: {o} came back as {a}")),
    }
}

/// Parse one object strictly into the type its apiVersion and kind name.
fn check_object(doc: &Value) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => strict::<Namespace>(doc).map(drop),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(doc).map(drop),
        ("v1", "Service") => strict::<Service>(doc).map(drop),
        ("v1", "Secret") => strict::<Secret>(doc).map(drop),
        ("v1", "ConfigMap") => strict::<ConfigMap>(doc).map(drop),
        ("apps/v1", "Deployment") => strict::<Deployment>(doc).map(drop),
        ("apps/v1", "StatefulSet") => strict::<StatefulSet>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<ClusterRoleBinding>(doc).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(doc).map(drop),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict::<CustomResourceDefinition>(doc).map(drop)
        }
        ("networking.k8s.io/v1", "Ingress") => strict::<Ingress>(doc).map(drop),
        ("policy/v1", "PodDisruptionBudget") => strict::<PodDisruptionBudget>(doc).map(drop),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => strict::<ServiceMonitor>(doc).map(drop),
        ("monitoring.coreos.com/v1", "PrometheusRule") => strict::<PrometheusRule>(doc).map(drop),
        ("flashcards.dev/v1alpha1", "FlashcardPipeline") => {
            strict::<FlashcardPipeline>(doc).map(drop)
        }
        ("gateway.networking.k8s.io/v1", "HTTPRoute") => {
            strict::<HttpRoute>(doc).and_then(|r| r.validate())
        }
        (a, k) => Err(format!("no Rust type for {a} {k}: add one to check_object")),
    }
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn check_all(docs: &[Value], origin: &str) {
    let mut failures = String::new();
    for d in docs {
        if let Err(e) = check_object(d) {
            let _ = writeln!(failures, "  {origin}: {}: {e}", describe(d));
        }
    }
    assert!(
        failures.is_empty(),
        "objects that do not parse strictly:\n{failures}"
    );
}

// ---------------------------------------------------------------------------------------------
// Gateway API HTTPRoute (gateway.networking.k8s.io/v1): the fields of the standard channel that
// our sample can use. k8s-openapi has no Gateway API types.

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpRoute {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: HttpRouteSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ParentReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    section_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpRouteRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    matches: Vec<HttpRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    backend_refs: Vec<HttpBackendRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeouts: Option<HttpRouteTimeouts>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpRouteMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<HttpPathMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpPathMatch {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpBackendRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpRouteTimeouts {
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_request: Option<String>,
}

impl HttpRoute {
    /// The enum and format rules of the Gateway API CRD that serde cannot express.
    fn validate(&self) -> Result<(), String> {
        if self.api_version != "gateway.networking.k8s.io/v1" || self.kind != "HTTPRoute" {
            return Err("not a gateway.networking.k8s.io/v1 HTTPRoute".into());
        }
        for rule in &self.spec.rules {
            for m in &rule.matches {
                if let Some(t) = m.path.as_ref().and_then(|p| p.type_.as_deref())
                    && !["Exact", "PathPrefix", "RegularExpression"].contains(&t)
                {
                    return Err(format!(
                        "path match type {t:?} is not Exact, PathPrefix or RegularExpression"
                    ));
                }
            }
            if let Some(t) = &rule.timeouts {
                for d in [&t.request, &t.backend_request].into_iter().flatten() {
                    if !is_gateway_duration(d) {
                        return Err(format!(
                            "timeout {d:?} is not a Gateway API duration (e.g. 1h, 30s)"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `^([0-9]{1,5}(h|m|s|ms)){1,4}$` (GEP-2257).
fn is_gateway_duration(s: &str) -> bool {
    let mut parts = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
        parts += 1;
    }
    (1..=4).contains(&parts)
}

// ---------------------------------------------------------------------------------------------
// Prometheus Operator ServiceMonitor (monitoring.coreos.com/v1): the fields the chart renders.

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceMonitorSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    job_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_selector: Option<NamespaceSelector>,
    selector: LabelSelector,
    endpoints: Vec<ServiceMonitorEndpoint>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespaceSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    any: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    match_names: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceMonitorEndpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scrape_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    honor_labels: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    relabelings: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    metric_relabelings: Vec<Value>,
}

/// monitoring.coreos.com/v1 PrometheusRule, with the rule types of the alert source.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: PrometheusRuleSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrometheusRuleSpec {
    groups: Vec<flashcard_monitoring::RuleGroup>,
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn kustomize_base_renders_and_every_object_parses_strictly() {
    let rendered = kustomize("manifests");
    let objects = docs(&rendered, "kubectl kustomize manifests/");
    check_all(&objects, "manifests/");

    let kinds: BTreeSet<&str> = objects.iter().filter_map(|d| d["kind"].as_str()).collect();
    for want in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.contains(want),
            "kustomize output has no {want}: {kinds:?}"
        );
    }
    let cluster_scoped = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    for d in &objects {
        let kind = d["kind"].as_str().unwrap_or_default();
        if !cluster_scoped.contains(&kind) {
            assert_eq!(
                d["metadata"]["namespace"],
                NAMESPACE,
                "{} is not in {NAMESPACE}",
                describe(d)
            );
        }
    }
}

#[test]
fn kustomize_crd_is_the_generated_crd() {
    let objects = docs(&kustomize("manifests"), "kubectl kustomize manifests/");
    let crd = objects
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .expect("the CRD is in the kustomize output");
    let generated = serde_json::to_value(flashcard_operator::crdgen::crd()).unwrap();
    // Compared as values (kustomize writes 0.0 as 0), in both directions.
    let mut problems = Vec::new();
    diff(crd, &generated, "", &mut problems);
    diff(&generated, crd, "", &mut problems);
    assert!(
        problems.is_empty(),
        "the CRD applied by `kubectl apply -k manifests/` differs from crdgen::crd(); \
         regenerate crds/ (flashcard-operator crd > crds/flashcardpipelines.flashcards.dev.yaml): \
         {problems:?}"
    );
}

#[test]
fn every_sample_parses_strictly() {
    let dir = repo().join("manifests/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut kinds = BTreeSet::new();
    for f in &files {
        let objects = docs(
            &std::fs::read_to_string(f).unwrap(),
            &f.display().to_string(),
        );
        assert!(!objects.is_empty(), "{} has no objects", f.display());
        check_all(&objects, &f.display().to_string());
        kinds.extend(
            objects
                .iter()
                .filter_map(|d| d["kind"].as_str().map(str::to_owned)),
        );
    }
    for want in [
        "FlashcardPipeline",
        "StatefulSet",
        "Secret",
        "Ingress",
        "HTTPRoute",
    ] {
        assert!(
            kinds.contains(want),
            "no {want} among the samples: {kinds:?}"
        );
    }
}

#[test]
fn sample_pipelines_are_minimal_and_full() {
    let minimal = docs(
        &read("manifests/samples/pipeline-minimal.yaml"),
        "pipeline-minimal",
    );
    let min: FlashcardPipeline = strict(&minimal[0]).unwrap();
    assert_eq!(
        minimal[0]["spec"].as_object().unwrap().len(),
        1,
        "the minimal sample sets only spec.redis"
    );
    assert_eq!(
        min.spec.redis.url_secret_ref.as_ref().unwrap().name,
        "redis"
    );

    // The full sample sets every field the spec has: compare its keys with the fields of a fully
    // populated spec, serialized (new fields in the CRD must show up in the full sample).
    let full = docs(
        &read("manifests/samples/pipeline-full.yaml"),
        "pipeline-full",
    );
    let spec: FlashcardPipelineSpec = strict(&full[0]["spec"]).unwrap();
    let mut missing = Vec::new();
    missing_keys(
        &serde_json::to_value(&spec).unwrap(),
        &full[0]["spec"],
        "spec",
        &mut missing,
    );
    let schema = serde_json::to_value(flashcard_operator::crdgen::crd()).unwrap();
    let spec_schema =
        &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    schema_keys_missing(spec_schema, &full[0]["spec"], "spec", &mut missing);
    // Fields that exist only to pause scaling are not part of a normal pipeline.
    missing.retain(|m| m != "spec.worker.pausedReplicas");
    // Reasoning settings would be refused by the sample's non-reasoning model: the sample shows
    // them as comments.
    let text = read("manifests/samples/pipeline-full.yaml");
    missing.retain(|m| {
        let reasoning = [
            "spec.provider.reasoningEffort",
            "spec.provider.reasoningTokens",
        ];
        !(reasoning.contains(&m.as_str())
            && text.contains(&format!("# {}:", m.rsplit('.').next().unwrap_or_default())))
    });
    assert!(
        missing.is_empty(),
        "pipeline-full.yaml does not show {missing:?}"
    );
}

/// Keys present in `typed` (the re-serialized value) but absent from `sample`.
fn missing_keys(typed: &Value, sample: &Value, path: &str, out: &mut Vec<String>) {
    if let (Value::Object(t), Value::Object(s)) = (typed, sample) {
        for (k, v) in t {
            let p = format!("{path}.{k}");
            match s.get(k) {
                Some(sv) => missing_keys(v, sv, &p, out),
                None => out.push(p),
            }
        }
    }
}

/// Properties of the CRD schema (our own fields only, not embedded Kubernetes types) that the
/// sample does not set.
fn schema_keys_missing(schema: &Value, sample: &Value, path: &str, out: &mut Vec<String>) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    if path.ends_with(".resources") {
        return; // core/v1 ResourceRequirements
    }
    for (k, sub) in props {
        let p = format!("{path}.{k}");
        match sample.get(k) {
            Some(sv) => schema_keys_missing(sub, sv, &p, out),
            None if !out.contains(&p) => out.push(p),
            None => {}
        }
    }
}

#[test]
fn strict_check_catches_misspelled_fields() {
    // A field misspelled deep inside a Deployment.
    let objects = docs(&kustomize("manifests"), "kubectl kustomize manifests/");
    let mut dep = objects
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap()
        .clone();
    let c = dep["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap();
    let v = c.remove("imagePullPolicy").unwrap();
    c.insert("imagePulPolicy".into(), v);
    let err = check_object(&dep).unwrap_err();
    assert!(
        err.contains("spec.template.spec.containers[0].imagePulPolicy: unknown field"),
        "{err}"
    );

    // A field at the wrong level.
    let mut dep = objects
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap()
        .clone();
    dep["spec"]["template"]["spec"]["replicas"] = 2.into();
    assert!(
        check_object(&dep)
            .unwrap_err()
            .contains(".spec.template.spec.replicas: unknown field")
    );

    // A wrong type.
    let mut dep = objects
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap()
        .clone();
    dep["spec"]["replicas"] = "two".into();
    assert!(check_object(&dep).unwrap_err().contains("does not parse"));

    // A misspelled field of the FlashcardPipeline.
    let mut fcp = docs(
        &read("manifests/samples/pipeline-full.yaml"),
        "pipeline-full",
    )[0]
    .clone();
    let w = fcp["spec"]["worker"].as_object_mut().unwrap();
    let v = w.remove("targetJobsPerReplica").unwrap();
    w.insert("targetJobPerReplica".into(), v);
    let err = check_object(&fcp).unwrap_err();
    assert!(
        err.contains(".spec.worker.targetJobPerReplica: unknown field"),
        "{err}"
    );

    // A misspelled annotation key is a valid annotation: not our business. A misspelled Ingress
    // field is.
    let mut ing = docs(&read("manifests/samples/ingress-nginx-sse.yaml"), "ingress")[0].clone();
    ing["spec"]["ingressClass"] = "nginx".into();
    assert!(
        check_object(&ing)
            .unwrap_err()
            .contains(".spec.ingressClass: unknown field")
    );

    // The HTTPRoute type.
    let mut route = docs(&read("manifests/samples/httproute-sse.yaml"), "httproute")[0].clone();
    route["spec"]["rules"][0]["backendRef"] = route["spec"]["rules"][0]["backendRefs"].clone();
    assert!(check_object(&route).unwrap_err().contains("backendRef"));
    let mut route = docs(&read("manifests/samples/httproute-sse.yaml"), "httproute")[0].clone();
    route["spec"]["rules"][0]["timeouts"]["request"] = "1 hour".into();
    assert!(check_object(&route).is_err());

    // Unknown kinds are not waved through.
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}});
    assert!(check_object(&cm).unwrap_err().contains("no Rust type"));
}

#[test]
fn gateway_duration_format() {
    for ok in ["1h", "30s", "500ms", "1h30m", "0s", "99999s"] {
        assert!(is_gateway_duration(ok), "{ok}");
    }
    for bad in ["", "1", "1 h", "1d", "100000s", "1h1m1s1ms1h", "h"] {
        assert!(!is_gateway_duration(bad), "{bad}");
    }
}

/// The rules inside `{{- define "flashcard-operator.rules" -}} ... {{- end }}` of the chart.
fn chart_rules() -> Vec<PolicyRule> {
    let tpl = read("charts/flashcard-operator/templates/_rbac-rules.tpl");
    let body: String = tpl
        .lines()
        .skip_while(|l| !l.contains(r#"define "flashcard-operator.rules""#))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let rules: Value = serde_saphyr::from_str(&body).expect("the chart's rules are plain YAML");
    rules
        .as_array()
        .expect("a list of rules")
        .iter()
        .map(|r| strict::<PolicyRule>(r).unwrap_or_else(|e| panic!("chart rule {r}: {e}")))
        .collect()
}

/// Takes the resourceNames off `rules`: (the rule's resources, its names) for each rule that
/// had some.
fn take_resource_names(rules: &mut [PolicyRule]) -> Vec<(Option<Vec<String>>, Vec<String>)> {
    rules
        .iter_mut()
        .filter_map(|r| r.resource_names.take().map(|n| (r.resources.clone(), n)))
        .collect()
}

fn rule_set(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for r in rules {
        assert!(
            r.non_resource_urls.is_none() && r.resource_names.is_none(),
            "unexpected rule {r:?}"
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    set.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    set
}

#[test]
fn rbac_is_least_privilege_and_the_same_in_chart_and_manifests() {
    let objects = docs(&kustomize("manifests"), "kubectl kustomize manifests/");
    let cluster_role: ClusterRole =
        strict(objects.iter().find(|d| d["kind"] == "ClusterRole").unwrap()).unwrap();
    let mut manifest_rules = cluster_role.rules.clone().unwrap_or_default();
    // Secret reads are limited to the samples' Secret by default (the chart's
    // rbac.restrictSecrets): names on the Secret rule only, nothing else narrowed.
    assert_eq!(
        take_resource_names(&mut manifest_rules),
        [(Some(vec!["secrets".to_owned()]), vec!["redis".to_owned()])],
        "manifests/rbac.yaml reads only the Secret `redis` by default"
    );
    let chart = chart_rules();
    assert_eq!(
        rule_set(&manifest_rules),
        rule_set(&chart),
        "manifests/rbac.yaml and charts/flashcard-operator/templates/_rbac-rules.tpl differ"
    );

    let leader: Role = strict(objects.iter().find(|d| d["kind"] == "Role").unwrap()).unwrap();
    let all: Vec<PolicyRule> = manifest_rules
        .into_iter()
        .chain(leader.rules.clone().unwrap_or_default())
        .collect();
    for (g, r, v) in rule_set(&all) {
        assert!(
            !g.contains('*') && !r.contains('*') && !v.contains('*'),
            "wildcard in {g}/{r} {v}"
        );
        assert!(
            !(r == "secrets" && v != "get"),
            "the operator reads Secrets by name only; {v} on secrets is too much"
        );
    }
    // The operator's own list of what its code uses (operator/src/rbac.rs, each rule with its
    // source) is the truth: all of it is granted (the Lease by the leader-election Role), nothing more.
    let expected: BTreeSet<(String, String, String)> = flashcard_operator::rbac::RBAC_RULES
        .iter()
        .flat_map(|r| {
            r.resources.iter().flat_map(move |res| {
                r.verbs
                    .iter()
                    .map(move |v| (r.api_group.to_owned(), (*res).to_owned(), (*v).to_owned()))
            })
        })
        .collect();
    assert_eq!(
        rule_set(&all),
        expected,
        "manifests/rbac.yaml and the chart must grant exactly operator/src/rbac.rs RBAC_RULES"
    );
    let leases: BTreeSet<_> = expected
        .iter()
        .filter(|(g, ..)| g == "coordination.k8s.io")
        .cloned()
        .collect();
    assert_eq!(
        rule_set(leader.rules.as_deref().unwrap_or_default()),
        leases,
        "the leader-election Role grants exactly the Lease rule"
    );
    let leases: BTreeSet<_> = expected
        .iter()
        .filter(|(g, ..)| g == "coordination.k8s.io")
        .cloned()
        .collect();
    assert_eq!(
        rule_set(leader.rules.as_deref().unwrap_or_default()),
        leases,
        "the leader-election Role grants exactly the Lease rule"
    );
}

/// The try-it-out server of the chart and of `manifests/samples/redis.yaml` is the official Valkey
/// image, with the same names, port and Secret keys as before, so pipelines need no change.
#[test]
fn try_out_server_is_valkey_with_the_same_names() {
    let values: Value =
        serde_saphyr::from_str(&read("charts/flashcard-operator/values.yaml")).unwrap();
    let image = &values["redis"]["image"];
    assert_eq!(image["repository"], "docker.io/valkey/valkey");
    let tag = image["tag"].as_str().expect("redis.image.tag");
    let sample = docs(&read("manifests/samples/redis.yaml"), "samples/redis.yaml");
    let secret = find(&sample, "Secret")[0];
    assert_eq!(secret["metadata"]["name"], "redis");
    for key in ["password", "url"] {
        assert!(secret["stringData"][key].is_string(), "Secret key {key}");
    }
    assert!(
        secret["stringData"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("redis://") && u.ends_with("@redis:6379")),
        "the sample URL still names Service redis on 6379"
    );
    let service = find(&sample, "Service")[0];
    assert_eq!(service["metadata"]["name"], "redis");
    assert_eq!(service["spec"]["ports"][0]["port"], 6379);
    let container = &find(&sample, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!("docker.io/valkey/valkey:{tag}").as_str(),
        "the sample runs the chart's default Valkey image"
    );
    assert!(
        container.get("command").is_none(),
        "the image's entrypoint picks the server binary"
    );
    assert_eq!(container["ports"][0]["containerPort"], 6379);
}

#[test]
fn images_tags_and_versions_agree() {
    // Chart.yaml: appVersion = workspace version.
    let chart: Value =
        serde_saphyr::from_str(&read("charts/flashcard-operator/Chart.yaml")).unwrap();
    assert_eq!(chart["appVersion"], VERSION, "Chart.yaml appVersion");
    // values.yaml: the operator image, tag defaulting to appVersion.
    let values: Value =
        serde_saphyr::from_str(&read("charts/flashcard-operator/values.yaml")).unwrap();
    assert_eq!(values["image"]["repository"], OPERATOR_IMAGE);
    assert!(
        values["image"]["tag"] == "" || values["image"]["tag"] == VERSION,
        "values.yaml image.tag must be empty (appVersion) or {VERSION}"
    );

    // manifests/: the Deployment's image and the kustomize image override.
    let objects = docs(&kustomize("manifests"), "kubectl kustomize manifests/");
    let dep: Deployment =
        strict(objects.iter().find(|d| d["kind"] == "Deployment").unwrap()).unwrap();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some(format!("{OPERATOR_IMAGE}:{VERSION}").as_str())
    );

    // The service image in the samples is the operator's default.
    let default_service = flashcard_operator::render::default_service_image();
    assert_eq!(default_service, format!("{SERVICE_IMAGE}:{VERSION}"));
    let full = docs(
        &read("manifests/samples/pipeline-full.yaml"),
        "pipeline-full",
    );
    assert_eq!(full[0]["spec"]["api"]["image"], default_service.as_str());
    assert_eq!(full[0]["spec"]["worker"]["image"], default_service.as_str());

    // The Dockerfiles build and document the same names.
    let op = read("operator/Dockerfile");
    assert!(
        op.contains(&format!("{OPERATOR_IMAGE}:{VERSION}")) && op.contains("-p flashcard-operator")
    );
    let svc = read("service/Dockerfile");
    assert!(
        svc.contains(&format!("{SERVICE_IMAGE}:{VERSION}")) && svc.contains("-p flashcard-service")
    );
    for d in [&op, &svc] {
        assert!(d.contains("--locked") && d.contains("USER 65532:65532") && d.contains(":nonroot"));
    }
}

#[test]
fn client_ingress_samples_route_to_the_operators_api_service() {
    use flashcard_operator::render::{PORT_NAME, SERVICE_PORT, SSE_ANNOTATIONS, names};
    let api_service = names::api("biology");

    let ing: Ingress =
        strict(&docs(&read("manifests/samples/ingress-nginx-sse.yaml"), "ingress")[0]).unwrap();
    let ann = ing.metadata.annotations.clone().unwrap_or_default();
    for (k, v) in SSE_ANNOTATIONS {
        assert_eq!(
            ann.get(*k).map(String::as_str),
            Some(*v),
            "SSE annotation {k} of the Ingress sample"
        );
    }
    let backend = ing.spec.unwrap().rules.unwrap()[0]
        .http
        .clone()
        .unwrap()
        .paths[0]
        .backend
        .service
        .clone()
        .unwrap();
    assert_eq!(backend.name, api_service);
    assert_eq!(backend.port.unwrap().name.as_deref(), Some(PORT_NAME));

    let route: HttpRoute =
        strict(&docs(&read("manifests/samples/httproute-sse.yaml"), "httproute")[0]).unwrap();
    let b = &route.spec.rules[0].backend_refs[0];
    assert_eq!(b.name, api_service);
    assert_eq!(b.port.map(i32::from), Some(SERVICE_PORT));
}

#[test]
fn chart_example_pipeline_specs_are_valid() {
    // values.yaml's examplePipeline.spec (and the CI values' override) plus the Redis reference
    // the template adds must be a valid FlashcardPipelineSpec.
    for file in [
        "charts/flashcard-operator/values.yaml",
        "charts/flashcard-operator/ci/all-options-values.yaml",
    ] {
        let values: Value = serde_saphyr::from_str(&read(file)).unwrap();
        let mut spec = values["examplePipeline"]["spec"].clone();
        spec["redis"] = serde_json::json!({"urlSecretRef": {"name": "r", "key": "url"}});
        strict::<FlashcardPipelineSpec>(&spec)
            .unwrap_or_else(|e| panic!("{file}: examplePipeline.spec: {e}"));
    }
}

/// `helm install` of the chart, with the real Helm library, for the defaults and every
/// charts/flashcard-operator/ci/*.yaml, against a fake API server that records what Helm creates
/// (`.ci/helm-lint.sh --render-to`; it sets up its Python venv on first use).
fn helm_render() -> Vec<(String, Vec<Value>)> {
    let dir = std::env::temp_dir().join(format!("flashcard-helm-render-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new("bash")
        .arg(repo().join(".ci/helm-lint.sh"))
        .arg("--render-to")
        .arg(&dir)
        .output()
        .expect("run bash .ci/helm-lint.sh --render-to");
    assert!(
        out.status.success(),
        "helm render failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cases = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        cases.push((name.clone(), docs(&text, &name)));
    }
    let _ = std::fs::remove_dir_all(&dir);
    cases
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn helm_chart_renders_and_every_object_parses_strictly() {
    let cases = helm_render();
    let names: Vec<&str> = cases.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "values",
        "default-values",
        "all-options-values",
        "namespaced-values",
    ] {
        assert!(names.contains(&want), "no render of {want}: {names:?}");
    }
    let rbac_expected = {
        let objects = docs(&kustomize("manifests"), "kubectl kustomize manifests/");
        let cr: ClusterRole = strict(find(&objects, "ClusterRole")[0]).unwrap();
        let mut rules = cr.rules.unwrap_or_default();
        take_resource_names(&mut rules);
        rule_set(&rules)
    };
    for (name, objects) in &cases {
        check_all(objects, &format!("helm install ({name})"));

        // The operator Deployment: image, hardening, the env the operator reads.
        let deps = find(objects, "Deployment");
        assert_eq!(deps.len(), 1, "{name}: one operator Deployment");
        let dep: Deployment = strict(deps[0]).unwrap();
        let pod = dep.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let c = &pod.containers[0];
        let image = c.image.clone().unwrap();
        assert!(image.starts_with(OPERATOR_IMAGE), "{name}: image {image}");
        if !image.contains('@') {
            assert_eq!(image, format!("{OPERATOR_IMAGE}:{VERSION}"), "{name}");
        }
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(
            sc.capabilities.unwrap().drop,
            Some(vec!["ALL".to_owned()]),
            "{name}"
        );
        let psc = pod.security_context.clone().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true), "{name}");
        assert_eq!(
            psc.seccomp_profile.unwrap().type_,
            "RuntimeDefault",
            "{name}"
        );
        assert!(
            c.liveness_probe.is_some() && c.readiness_probe.is_some(),
            "{name}: probes"
        );
        let env: BTreeSet<String> = c.env.iter().flatten().map(|e| e.name.clone()).collect();
        for v in [
            "LISTEN_ADDR",
            "LEADER_ELECTION",
            "WATCH_NAMESPACE",
            "POD_NAME",
            "POD_NAMESPACE",
        ] {
            assert!(env.contains(v), "{name}: operator env {v} missing");
        }
        let env_value = |k: &str| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == k)
                .and_then(|e| e.value.clone())
                .unwrap_or_default()
        };
        let replicas = dep.spec.as_ref().unwrap().replicas.unwrap_or(1);
        if replicas > 1 {
            assert_eq!(
                env_value("LEADER_ELECTION"),
                "true",
                "{name}: leader election with {replicas} replicas"
            );
        }
        if env_value("LEADER_ELECTION") == "false" {
            let strategy = dep.spec.as_ref().unwrap().strategy.clone().unwrap();
            assert_eq!(
                strategy.type_.as_deref(),
                Some("Recreate"),
                "{name}: no overlap without leader election"
            );
        }

        // RBAC: the same rules as the manifests, cluster-wide or in the watched namespace.
        let watch_ns = env_value("WATCH_NAMESPACE");
        let (kind, binding) = if watch_ns.is_empty() {
            ("ClusterRole", "ClusterRoleBinding")
        } else {
            ("Role", "RoleBinding")
        };
        let role = find(objects, kind)
            .into_iter()
            .find(|r| {
                !r["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("-leader-election")
            })
            .unwrap_or_else(|| panic!("{name}: no {kind} for the operator"));
        let mut rules: Vec<PolicyRule> = serde_json::from_value(role["rules"].clone()).unwrap();
        // operator.redisAdmin.secretRef: the operator writes the pipelines' credential Secrets,
        // one rule more (rbac.rs MANAGED_REDIS_RULE), and gets the admin URL by reference.
        let managed = flashcard_operator::rbac::MANAGED_REDIS_RULE;
        let managed_at = rules.iter().position(|r| {
            r.api_groups.as_deref() == Some(&[managed.api_group.to_owned()][..])
                && r.resources.as_deref() == Some(&["secrets".to_owned()][..])
                && r.verbs == managed.verbs
                && r.resource_names.is_none()
        });
        let admin_env = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "REDIS_ADMIN_URL")
            .map(|e| {
                assert!(e.value.is_none(), "{name}: the admin URL inline");
                let r = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref());
                let r = r.unwrap_or_else(|| panic!("{name}: REDIS_ADMIN_URL not from a Secret"));
                format!("{}/{}", r.name, r.key)
            })
            .unwrap_or_default();
        if name == "all-options-values" {
            assert!(
                managed_at.is_some(),
                "{name}: no rule for the credential Secrets"
            );
            assert_eq!(
                admin_env, "redis-admin/url",
                "{name}: REDIS_ADMIN_URL by reference"
            );
        } else {
            assert!(
                managed_at.is_none(),
                "{name}: Secret writes without redisAdmin"
            );
            assert!(
                admin_env.is_empty(),
                "{name}: REDIS_ADMIN_URL without redisAdmin"
            );
        }
        if let Some(i) = managed_at {
            rules.remove(i);
        }
        // rbac.restrictSecrets: Secret reads only by name (resourceNames), nothing else narrowed.
        let secret_names: Vec<Vec<String>> = take_resource_names(&mut rules)
            .into_iter()
            .map(|(resources, n)| {
                assert_eq!(
                    resources.as_deref(),
                    Some(&["secrets".to_owned()][..]),
                    "{name}: resourceNames only on the Secret rule"
                );
                n
            })
            .collect();
        if name == "all-options-values" {
            let names = secret_names.first().unwrap_or_else(|| {
                panic!("{name}: rbac.restrictSecrets=true but no resourceNames on secrets")
            });
            assert!(
                names.starts_with(&["redis".to_owned(), "redis-study".to_owned()])
                    && names.len() == 3
                    && names[2].ends_with("-redis"),
                "{name}: the listed Secrets plus the chart's Redis Secret, got {names:?}"
            );
        } else {
            // rbac.restrictSecrets is on by default, with the samples' Secret name.
            let names = secret_names.first().unwrap_or_else(|| {
                panic!("{name}: rbac.restrictSecrets is on by default but no resourceNames")
            });
            assert!(
                names.first().map(String::as_str) == Some("redis")
                    && names.len() <= 2
                    && names.get(1).is_none_or(|n| n.ends_with("-redis")),
                "{name}: the default Secret name plus the chart's Redis Secret, got {names:?}"
            );
        }
        assert_eq!(
            rule_set(&rules),
            rbac_expected,
            "{name}: chart RBAC differs from manifests/rbac.yaml"
        );
        assert!(!find(objects, binding).is_empty(), "{name}: no {binding}");
        if !watch_ns.is_empty() {
            assert_eq!(
                role["metadata"]["namespace"],
                watch_ns.as_str(),
                "{name}: Role in the watched namespace"
            );
            assert!(
                find(objects, "ClusterRole").is_empty(),
                "{name}: namespace-scoped but a ClusterRole"
            );
        }
        let has_lease_role = find(objects, "Role").iter().any(|r| {
            r["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .ends_with("-leader-election")
        });
        assert_eq!(
            has_lease_role,
            env_value("LEADER_ELECTION") == "true",
            "{name}: Lease Role iff leader election"
        );
    }

    // Per-case expectations.
    let case = |n: &str| &cases.iter().find(|(name, _)| name == n).unwrap().1;
    let defaults = case("values");
    let crd = find(defaults, "CustomResourceDefinition");
    assert_eq!(crd.len(), 1, "crds.install defaults to true");
    assert_eq!(
        crd[0]["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "crds.keep defaults to true"
    );
    let mut problems = Vec::new();
    let generated = serde_json::to_value(flashcard_operator::crdgen::crd()).unwrap();
    let mut rendered = crd[0].clone();
    rendered["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    for k in ["resourceVersion", "uid", "labels"] {
        rendered["metadata"].as_object_mut().unwrap().remove(k);
    }
    diff(&rendered, &generated, "", &mut problems);
    diff(&generated, &rendered, "", &mut problems);
    assert!(
        problems.is_empty(),
        "the chart's CRD is not crdgen::crd(): {problems:?}"
    );

    let all = case("all-options-values");
    assert!(
        find(all, "CustomResourceDefinition")[0]["metadata"]["annotations"]
            .get("helm.sh/resource-policy")
            .is_none(),
        "crds.keep=false"
    );
    let rule = find(all, "PrometheusRule")[0];
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let rules = &rule["spec"]["groups"][0]["rules"];
    assert_eq!(rules[0]["alert"], "FlashcardOperatorDown");
    assert!(
        rules[1]["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("{{ $labels.error }}")),
        "Prometheus templates survive Helm: {rules}"
    );
    for k in [
        "ServiceMonitor",
        "PrometheusRule",
        "PodDisruptionBudget",
        "StatefulSet",
        "Secret",
    ] {
        assert!(!find(all, k).is_empty(), "all-options renders a {k}");
    }
    let sm = find(all, "ServiceMonitor")[0];
    assert_eq!(
        sm["metadata"]["labels"]["release"], "kube-prometheus-stack",
        "ServiceMonitor labels"
    );
    let redis_secret = find(all, "Secret")[0];
    assert!(
        redis_secret["data"]["url"].is_string(),
        "the Redis Secret has the key `url`"
    );
    let server = &find(all, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0];
    assert!(
        server["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("docker.io/valkey/valkey:")),
        "the try-it-out server is Valkey: {server}"
    );
    assert!(
        server.get("command").is_none(),
        "the image's entrypoint picks the server binary: {server}"
    );

    let ns = case("namespaced-values");
    assert!(
        find(ns, "CustomResourceDefinition").is_empty(),
        "crds.install=false"
    );
    assert!(
        find(ns, "ServiceAccount").is_empty(),
        "serviceAccount.create=false"
    );
    for kind in ["StatefulSet", "Secret"] {
        assert_eq!(
            find(ns, kind)[0]["metadata"]["namespace"],
            "study",
            "the try-it-out Redis goes to the watched namespace"
        );
    }
}
