//! Alerting: the one Rust source of the Prometheus alert rules and the Grafana dashboard.
//!
//! The operator builds each pipeline's `PrometheusRule` from [`rule_groups`] (scoped to the
//! pipeline, with the thresholds of its custom resource); the files in `alerts/` at the top of the
//! repository are generated from the same functions with the default thresholds (`cargo xtask
//! generate`; `cargo xtask check` and its test keep them current). Every expression names its metrics through the constants of
//! [`flashcard_core::metric_names`], so renaming a metric breaks the build rather than the alerts.
//!
//! Every alert carries a `severity` label (`critical`, `warning` or `info`), a static `summary`, a
//! templated `description` and a `runbook_url` pointing at the alert's section of
//! `alerts/RUNBOOK.md` (the anchor is the lower-cased alert name).

pub mod dashboard;
mod rules;
mod yaml;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use rules::ALERT_NAMES;

/// Default base of the `runbook_url` annotations; the anchor `#<alertname lower-cased>` is appended.
pub const RUNBOOK_BASE_URL: &str =
    "https://github.com/flashcards-dev/flashcard-pipeline/blob/main/alerts/RUNBOOK.md";

/// Name of the rule group with the per-pipeline service alerts.
pub const PIPELINE_GROUP: &str = "flashcard-pipeline";
/// Name of the rule group with the operator alerts (only in unscoped rule sets).
pub const OPERATOR_GROUP: &str = "flashcard-operator";

/// Label shared by an alert and its "twin" of the other severity (e.g. queue depth high/critical);
/// Alertmanager's inhibition rule uses it so a critical alert silences its warning twin.
pub const ALERT_FAMILY_LABEL: &str = "alert_family";

/// The thresholds of the alerts; `Default` gives the seed's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertThresholds {
    /// Waiting jobs above which `FlashcardQueueDepthHigh` fires (seed: 50).
    pub queue_depth_high: u64,
    /// Waiting jobs above which `FlashcardQueueDepthCritical` fires (seed: 100).
    pub queue_depth_critical: u64,
    /// Percentage of finished jobs that failed, above which `FlashcardJobFailureRateHigh` fires.
    pub failure_rate_percent: f64,
    /// Window of the failure rate (a PromQL range, so whole seconds).
    pub failure_window: Duration,
    /// Seconds without a worker heartbeat or any finished job, while jobs are active, after which
    /// the workers count as stalled.
    pub worker_stalled_seconds: u64,
    /// Percentage of the budget spent at which `FlashcardBudgetNearlyExhausted` fires.
    pub budget_warn_percent: f64,
    /// Percentage of a process's SSE connection limit at which `FlashcardSseConnectionsNearLimit`
    /// fires.
    pub sse_connections_percent: f64,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        Self {
            queue_depth_high: 50,
            queue_depth_critical: 100,
            failure_rate_percent: 10.0,
            failure_window: Duration::from_secs(5 * 60),
            worker_stalled_seconds: 120,
            budget_warn_percent: 80.0,
            sse_connections_percent: 90.0,
        }
    }
}

/// How long each condition must hold before its alert fires (the rules' `for:`), chosen so the
/// alerts do not flap. Tests shrink them; production uses `Default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertTimings {
    pub queue_depth_high: Duration,
    pub queue_depth_critical: Duration,
    pub failure_rate_high: Duration,
    pub circuit_breaker_open: Duration,
    pub worker_stalled: Duration,
    pub budget_nearly_exhausted: Duration,
    pub budget_exceeded: Duration,
    pub kill_switch_active: Duration,
    pub workers_at_max: Duration,
    pub sse_connections_near_limit: Duration,
    pub service_down: Duration,
    pub operator_down: Duration,
    pub operator_reconcile_errors: Duration,
    /// Range over which "the queue grows" is measured for `FlashcardWorkersAtMaxReplicas`.
    pub queue_growth_window: Duration,
}

impl Default for AlertTimings {
    fn default() -> Self {
        const MIN: u64 = 60;
        Self {
            queue_depth_high: Duration::from_secs(5 * MIN),
            queue_depth_critical: Duration::from_secs(2 * MIN),
            failure_rate_high: Duration::from_secs(10 * MIN),
            circuit_breaker_open: Duration::from_secs(MIN),
            worker_stalled: Duration::from_secs(5 * MIN),
            budget_nearly_exhausted: Duration::from_secs(5 * MIN),
            budget_exceeded: Duration::ZERO,
            kill_switch_active: Duration::from_secs(MIN),
            workers_at_max: Duration::from_secs(15 * MIN),
            sse_connections_near_limit: Duration::from_secs(5 * MIN),
            service_down: Duration::from_secs(5 * MIN),
            operator_down: Duration::from_secs(5 * MIN),
            operator_reconcile_errors: Duration::from_secs(15 * MIN),
            queue_growth_window: Duration::from_secs(10 * MIN),
        }
    }
}

impl AlertTimings {
    /// Every `for:` set to `d` (and the growth window to at least `d`): for end-to-end tests.
    pub fn all(d: Duration) -> Self {
        Self {
            queue_depth_high: d,
            queue_depth_critical: d,
            failure_rate_high: d,
            circuit_breaker_open: d,
            worker_stalled: d,
            budget_nearly_exhausted: d,
            budget_exceeded: d,
            kill_switch_active: d,
            workers_at_max: d,
            sse_connections_near_limit: d,
            service_down: d,
            operator_down: d,
            operator_reconcile_errors: d,
            queue_growth_window: d.max(Duration::from_secs(60)),
        }
    }
}

/// Everything [`rule_groups_with`] needs besides the thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOptions {
    /// `Some(p)`: every expression selects `pipeline="p"` (a pipeline's own `PrometheusRule`) and
    /// the operator-wide group is left out. `None`: all pipelines, plus the operator group.
    pub pipeline: Option<String>,
    /// Added as a static `namespace` label to alerts whose expression cannot carry it (`absent()`).
    pub namespace: Option<String>,
    pub timings: AlertTimings,
    /// Base URL of the runbook; `#<alertname lower-cased>` is appended.
    pub runbook_base_url: String,
}

impl Default for RuleOptions {
    fn default() -> Self {
        Self {
            pipeline: None,
            namespace: None,
            timings: AlertTimings::default(),
            runbook_base_url: RUNBOOK_BASE_URL.to_string(),
        }
    }
}

/// A Prometheus rule group, in the shape of a rule file (and of a `PrometheusRule`'s
/// `spec.groups[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<AlertRule>,
}

/// One alerting rule, in the shape of a rule file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub alert: String,
    pub expr: String,
    /// Prometheus duration, e.g. `5m`; serialized as `for`.
    #[serde(rename = "for")]
    pub for_: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The alert rules for the given thresholds with default timings and runbook URL.
///
/// `Some(p)` scopes every expression to `pipeline="p"` (for a pipeline's `PrometheusRule`);
/// `None` covers all pipelines and adds the operator's alerts (for the files in `alerts/`).
pub fn rule_groups(thresholds: &AlertThresholds, pipeline: Option<&str>) -> Vec<RuleGroup> {
    let options = RuleOptions {
        pipeline: pipeline.map(str::to_string),
        ..RuleOptions::default()
    };
    rule_groups_with(thresholds, &options)
}

/// The alert rules with every option spelled out.
pub fn rule_groups_with(thresholds: &AlertThresholds, options: &RuleOptions) -> Vec<RuleGroup> {
    rules::build(thresholds, options)
}

/// A complete Prometheus rule file (`groups:` at the top) for `promtool` or `rule_files:`.
pub fn rules_file_yaml(groups: &[RuleGroup]) -> String {
    yaml::rules_file(groups)
}

/// A Helm template of a `PrometheusRule` holding `groups`, for the operator chart (the
/// operator's own alerts: one copy per cluster, not per pipeline). Prometheus' `{{ ... }}`
/// templates in the annotations are escaped so Helm passes them through.
pub fn helm_prometheus_rule_template(groups: &[RuleGroup]) -> String {
    let body: String = yaml::rules_file(groups)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let escaped = escape_helm(line);
            if escaped.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {escaped}\n")
            }
        })
        .collect();
    format!(
        "{{{{- /* Generated from service/monitoring (flashcard_monitoring). Do not edit by hand:\n\
         run `cargo xtask generate`. */}}}}\n\
         {{{{- if .Values.prometheusRule.enabled }}}}\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n\
         \x20 name: {{{{ include \"flashcard-operator.fullname\" . }}}}\n\
         \x20 namespace: {{{{ default .Release.Namespace .Values.prometheusRule.namespace }}}}\n\
         \x20 labels:\n\
         \x20   {{{{- include \"flashcard-operator.labels\" . | nindent 4 }}}}\n\
         \x20   {{{{- with .Values.prometheusRule.labels }}}}\n\
         \x20   {{{{- toYaml . | nindent 4 }}}}\n\
         \x20   {{{{- end }}}}\n\
         spec:\n\
         {body}\
         {{{{- end }}}}\n"
    )
}

/// Escapes Go template delimiters so Helm renders them literally.
fn escape_helm(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push_str("{{ \"{{\" }}");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push_str("{{ \"}}\" }}");
            rest = after;
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The `spec` of a `monitoring.coreos.com/v1` `PrometheusRule` holding `groups`.
pub fn prometheus_rule_spec(groups: &[RuleGroup]) -> serde_json::Value {
    serde_json::Value::Object(
        [(
            "groups".to_string(),
            serde_json::Value::Array(groups.iter().map(RuleGroup::to_json).collect()),
        )]
        .into_iter()
        .collect(),
    )
}

/// A whole `PrometheusRule` object. `labels` are its metadata labels: kube-prometheus-stack only
/// loads rules carrying its `release: <helm release>` label (`ruleSelectorNilUsesHelmValues`).
pub fn prometheus_rule(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    groups: &[RuleGroup],
) -> serde_json::Value {
    use serde_json::Value;
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let metadata: serde_json::Map<String, Value> = [
        ("name".to_string(), Value::String(name.to_string())),
        (
            "namespace".to_string(),
            Value::String(namespace.to_string()),
        ),
        ("labels".to_string(), Value::Object(labels)),
    ]
    .into_iter()
    .collect();
    Value::Object(
        [
            (
                "apiVersion".to_string(),
                Value::String("monitoring.coreos.com/v1".to_string()),
            ),
            (
                "kind".to_string(),
                Value::String("PrometheusRule".to_string()),
            ),
            ("metadata".to_string(), Value::Object(metadata)),
            ("spec".to_string(), prometheus_rule_spec(groups)),
        ]
        .into_iter()
        .collect(),
    )
}

impl RuleGroup {
    /// The group as JSON (infallible, unlike `serde_json::to_value`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        let rules = self.rules.iter().map(AlertRule::to_json).collect();
        Value::Object(
            [
                ("name".to_string(), Value::String(self.name.clone())),
                ("rules".to_string(), Value::Array(rules)),
            ]
            .into_iter()
            .collect(),
        )
    }
}

impl AlertRule {
    /// The rule as JSON (infallible, unlike `serde_json::to_value`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        let map = |m: &BTreeMap<String, String>| {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        };
        Value::Object(
            [
                ("alert".to_string(), Value::String(self.alert.clone())),
                ("expr".to_string(), Value::String(self.expr.clone())),
                ("for".to_string(), Value::String(self.for_.clone())),
                ("labels".to_string(), map(&self.labels)),
                ("annotations".to_string(), map(&self.annotations)),
            ]
            .into_iter()
            .collect(),
        )
    }

    /// The runbook anchor of this alert (the lower-cased alert name).
    pub fn runbook_anchor(&self) -> String {
        runbook_anchor(&self.alert)
    }
}

/// The runbook anchor of an alert: its name lower-cased, as GitHub renders a `## AlertName` heading.
pub fn runbook_anchor(alert: &str) -> String {
    alert.to_ascii_lowercase()
}

/// A Prometheus duration for `d` (`5m`, `90s`, `1h`, `500ms`, `0s`).
pub fn prometheus_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_in_prometheus_units() {
        assert_eq!(prometheus_duration(Duration::ZERO), "0s");
        assert_eq!(prometheus_duration(Duration::from_secs(300)), "5m");
        assert_eq!(prometheus_duration(Duration::from_secs(90)), "90s");
        assert_eq!(prometheus_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(prometheus_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn defaults_are_the_seed_values() {
        let t = AlertThresholds::default();
        assert_eq!((t.queue_depth_high, t.queue_depth_critical), (50, 100));
        assert_eq!(t.failure_rate_percent, 10.0);
        assert_eq!(t.failure_window, Duration::from_secs(300));
        assert_eq!(t.worker_stalled_seconds, 120);
        assert_eq!(t.budget_warn_percent, 80.0);
        assert_eq!(t.sse_connections_percent, 90.0);
    }

    #[test]
    fn every_rule_has_the_conventional_labels_and_annotations() {
        for group in rule_groups(&AlertThresholds::default(), None) {
            for rule in group.rules {
                let sev = rule.labels.get("severity").map(String::as_str);
                assert!(
                    matches!(sev, Some("critical" | "warning" | "info")),
                    "{}: severity {sev:?}",
                    rule.alert
                );
                for key in ["summary", "description", "runbook_url"] {
                    assert!(
                        rule.annotations.contains_key(key),
                        "{} lacks {key}",
                        rule.alert
                    );
                }
                assert!(rule.annotations["description"].contains("{{"));
                assert!(
                    rule.annotations["runbook_url"]
                        .ends_with(&format!("RUNBOOK.md#{}", rule.runbook_anchor()))
                );
            }
        }
    }

    #[test]
    fn scoping_selects_the_pipeline_in_every_expression() {
        let groups = rule_groups(&AlertThresholds::default(), Some("biology"));
        assert_eq!(groups.len(), 1, "the operator group is not per pipeline");
        for rule in &groups[0].rules {
            let selectors = rule.expr.matches("flashcards_").count();
            let scoped = rule.expr.matches("pipeline=\"biology\"").count();
            assert_eq!(selectors, scoped, "{}: {}", rule.alert, rule.expr);
        }
    }

    #[test]
    fn rules_use_only_contract_metrics() {
        use flashcard_core::metric_names as names;
        let known: Vec<&str> = names::SERVICE_METRICS
            .iter()
            .chain(names::OPERATOR_METRICS)
            .map(|s| s.name)
            .collect();
        let mut used = 0;
        for rule in rule_groups(&AlertThresholds::default(), None)
            .into_iter()
            .flat_map(|g| g.rules)
        {
            let mut rest = rule.expr.as_str();
            while let Some(pos) = rest.find("flashcards_") {
                let tail = &rest[pos..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                assert!(
                    known.contains(&&tail[..end]),
                    "{} uses {}, which is not in metrics::names",
                    rule.alert,
                    &tail[..end]
                );
                used += 1;
                rest = &tail[end..];
            }
        }
        assert!(used >= 13);
    }

    #[test]
    fn unscoped_rules_cover_every_alert_name() {
        let names: Vec<String> = rule_groups(&AlertThresholds::default(), None)
            .into_iter()
            .flat_map(|g| g.rules.into_iter().map(|r| r.alert))
            .collect();
        assert_eq!(names, ALERT_NAMES);
    }

    #[test]
    fn prometheus_rule_carries_the_configured_labels() {
        let labels = BTreeMap::from([("release".to_string(), "kps".to_string())]);
        let groups = rule_groups(&AlertThresholds::default(), Some("p"));
        let obj = prometheus_rule("p-alerts", "ns", &labels, &groups);
        assert_eq!(obj["kind"], "PrometheusRule");
        assert_eq!(obj["metadata"]["labels"]["release"], "kps");
        assert_eq!(
            obj["spec"]["groups"][0]["rules"][0]["alert"],
            "FlashcardQueueDepthHigh"
        );
        assert!(obj["spec"]["groups"][0]["rules"][0]["for"].is_string());
    }
}
