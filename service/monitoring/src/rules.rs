//! The alert rules themselves: PromQL built from the metric-name constants.
//!
//! Every service process (api and worker) exports the queue and budget gauges it reads from the
//! shared store, so those are aggregated with `max by (pipeline, namespace)`; counters that each
//! process keeps for itself (jobs finished) are summed.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    ALERT_FAMILY_LABEL, AlertRule, AlertThresholds, OPERATOR_GROUP, PIPELINE_GROUP, RuleGroup,
    RuleOptions, prometheus_duration, runbook_anchor,
};
use flashcard_core::metric_names as m;

/// Every alert, in the order of the generated rule file (pipeline group, then operator group).
pub const ALERT_NAMES: &[&str] = &[
    QUEUE_DEPTH_HIGH,
    QUEUE_DEPTH_CRITICAL,
    JOB_FAILURE_RATE_HIGH,
    CIRCUIT_BREAKER_OPEN,
    WORKER_STALLED,
    BUDGET_NEARLY_EXHAUSTED,
    BUDGET_EXCEEDED,
    KILL_SWITCH_ACTIVE,
    WORKERS_AT_MAX_REPLICAS,
    SSE_CONNECTIONS_NEAR_LIMIT,
    SERVICE_DOWN,
    OPERATOR_DOWN,
    OPERATOR_RECONCILE_ERRORS,
];

const QUEUE_DEPTH_HIGH: &str = "FlashcardQueueDepthHigh";
const QUEUE_DEPTH_CRITICAL: &str = "FlashcardQueueDepthCritical";
const JOB_FAILURE_RATE_HIGH: &str = "FlashcardJobFailureRateHigh";
const CIRCUIT_BREAKER_OPEN: &str = "FlashcardCircuitBreakerOpen";
const WORKER_STALLED: &str = "FlashcardWorkerStalled";
const BUDGET_NEARLY_EXHAUSTED: &str = "FlashcardBudgetNearlyExhausted";
const BUDGET_EXCEEDED: &str = "FlashcardBudgetExceeded";
const KILL_SWITCH_ACTIVE: &str = "FlashcardKillSwitchActive";
const WORKERS_AT_MAX_REPLICAS: &str = "FlashcardWorkersAtMaxReplicas";
const SSE_CONNECTIONS_NEAR_LIMIT: &str = "FlashcardSseConnectionsNearLimit";
const SERVICE_DOWN: &str = "FlashcardServiceDown";
const OPERATOR_DOWN: &str = "FlashcardOperatorDown";
const OPERATOR_RECONCILE_ERRORS: &str = "FlashcardOperatorReconcileErrors";

/// The grouping labels of per-pipeline alerts.
const BY: &str = "pipeline, namespace";

/// Where the alert's "in pipeline X (namespace Y)" text comes from.
const WHERE: &str = "pipeline {{ $labels.pipeline }} (namespace {{ $labels.namespace }})";
/// [`WHERE`] at the start of a sentence.
const WHERE_CAP: &str = "Pipeline {{ $labels.pipeline }} (namespace {{ $labels.namespace }})";

struct Builder<'a> {
    th: &'a AlertThresholds,
    opts: &'a RuleOptions,
}

enum Severity {
    Critical,
    Warning,
}

impl Severity {
    fn as_str(&self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

struct Spec<'s> {
    alert: &'static str,
    expr: String,
    for_: Duration,
    severity: Severity,
    family: Option<&'s str>,
    summary: &'s str,
    description: String,
    /// Static labels besides severity and family (only for `absent()` alerts).
    extra_labels: Vec<(String, String)>,
}

impl Builder<'_> {
    /// `metric{pipeline="p", matchers...}`: the selector, scoped to the pipeline if there is one.
    fn sel(&self, metric: &str, matchers: &[&str]) -> String {
        let mut all: Vec<String> = Vec::with_capacity(matchers.len() + 1);
        if let Some(p) = &self.opts.pipeline {
            all.push(format!("pipeline=\"{}\"", escape_label_value(p)));
        }
        all.extend(matchers.iter().map(|s| s.to_string()));
        if all.is_empty() {
            metric.to_string()
        } else {
            format!("{metric}{{{}}}", all.join(", "))
        }
    }

    fn rule(&self, spec: Spec<'_>) -> AlertRule {
        let mut labels = BTreeMap::new();
        labels.insert("severity".to_string(), spec.severity.as_str().to_string());
        if let Some(family) = spec.family {
            labels.insert(ALERT_FAMILY_LABEL.to_string(), family.to_string());
        }
        labels.extend(spec.extra_labels);
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), spec.summary.to_string());
        annotations.insert("description".to_string(), spec.description);
        annotations.insert(
            "runbook_url".to_string(),
            format!(
                "{}#{}",
                self.opts.runbook_base_url,
                runbook_anchor(spec.alert)
            ),
        );
        AlertRule {
            alert: spec.alert.to_string(),
            expr: spec.expr,
            for_: prometheus_duration(spec.for_),
            labels,
            annotations,
        }
    }

    fn pipeline_rules(&self) -> Vec<AlertRule> {
        let th = self.th;
        let t = &self.opts.timings;
        let waiting = self.sel(m::QUEUE_JOBS, &[r#"state="waiting""#]);
        let active = self.sel(m::QUEUE_JOBS, &[r#"state="active""#]);
        let window = range(th.failure_window);
        let stalled = th.worker_stalled_seconds;

        let mut rules = vec![
            self.rule(Spec {
                alert: QUEUE_DEPTH_HIGH,
                expr: format!("max by ({BY}) ({waiting}) > {}", th.queue_depth_high),
                for_: t.queue_depth_high,
                severity: Severity::Warning,
                family: Some("queue-depth"),
                summary: "Flashcard jobs are piling up in the queue.",
                description: format!(
                    "{WHERE_CAP} has {{{{ $value | printf \"%.0f\" }}}} waiting jobs, more than {} \
                     for {}.",
                    th.queue_depth_high,
                    prometheus_duration(t.queue_depth_high)
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: QUEUE_DEPTH_CRITICAL,
                expr: format!("max by ({BY}) ({waiting}) > {}", th.queue_depth_critical),
                for_: t.queue_depth_critical,
                severity: Severity::Critical,
                family: Some("queue-depth"),
                summary: "The flashcard queue is critically deep; jobs wait far too long.",
                description: format!(
                    "{WHERE_CAP} has {{{{ $value | printf \"%.0f\" }}}} waiting jobs, more than {} \
                     for {}.",
                    th.queue_depth_critical,
                    prometheus_duration(t.queue_depth_critical)
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: JOB_FAILURE_RATE_HIGH,
                expr: format!(
                    "sum by ({BY}) (rate({failed}[{window}]))\n  / sum by ({BY}) \
                     (rate({finished}[{window}]))\n  * 100 > {pct}",
                    failed = self.sel(m::JOBS_TOTAL, &[r#"outcome="failed""#]),
                    finished = self.sel(m::JOBS_TOTAL, &[r#"outcome=~"completed|failed""#]),
                    pct = num(th.failure_rate_percent),
                ),
                for_: t.failure_rate_high,
                severity: Severity::Warning,
                family: None,
                summary: "Too many flashcard jobs fail.",
                description: format!(
                    "{{{{ $value | printf \"%.1f\" }}}}% of the jobs finished in {WHERE} over the \
                     last {window} failed (threshold {}%).",
                    num(th.failure_rate_percent)
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: CIRCUIT_BREAKER_OPEN,
                expr: format!(
                    "max by ({BY}) ({}) > 0",
                    self.sel(m::CIRCUIT_BREAKER_STATE, &[r#"state="open""#])
                ),
                for_: t.circuit_breaker_open,
                severity: Severity::Critical,
                family: None,
                summary: "The LLM provider circuit breaker is open; jobs cannot be processed.",
                description: format!(
                    "A worker of {WHERE} has had its provider circuit breaker open for {}: \
                     provider calls are refused and jobs are retried or fail.",
                    prometheus_duration(t.circuit_breaker_open)
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: WORKER_STALLED,
                expr: format!(
                    "max by ({BY}) ({active}) > 0\nand on (pipeline, namespace) (\n    \
                     time() - max by ({BY}) ({heartbeat}) > {stalled}\n  or\n    \
                     max by ({BY}) ({live}) == 0\n  or\n    \
                     sum by ({BY}) (increase({progress}[{stalled}s])) == 0\n)",
                    heartbeat = self.sel(m::WORKER_HEARTBEAT_TIMESTAMP_SECONDS, &[]),
                    live = self.sel(m::WORKERS_LIVE, &[]),
                    progress = self.sel(m::JOBS_TOTAL, &[r#"outcome=~"completed|failed|retried""#]),
                ),
                for_: t.worker_stalled,
                severity: Severity::Critical,
                family: None,
                summary: "Flashcard jobs are active but no worker makes progress.",
                description: format!(
                    "{WHERE_CAP} has {{{{ $value | printf \"%.0f\" }}}} active jobs, but for more \
                     than {stalled}s no worker has sent a heartbeat or finished an attempt."
                ),
                extra_labels: vec![],
            }),
        ];

        let spent = format!(
            "max by ({BY}, period) ({})",
            self.sel(m::BUDGET_SPENT_USD, &[])
        );
        let limit = format!(
            "max by ({BY}, period) ({} > 0)",
            self.sel(m::BUDGET_LIMIT_USD, &[])
        );
        rules.extend([
            self.rule(Spec {
                alert: BUDGET_NEARLY_EXHAUSTED,
                expr: format!("{spent} / {limit} * 100 >= {}", num(th.budget_warn_percent)),
                for_: t.budget_nearly_exhausted,
                severity: Severity::Warning,
                family: Some("budget"),
                summary: "The LLM budget is nearly exhausted.",
                description: format!(
                    "{WHERE_CAP} has spent {{{{ $value | printf \"%.1f\" }}}}% of its budget for \
                     period {{{{ $labels.period }}}} (warning at {}%).",
                    num(th.budget_warn_percent)
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: BUDGET_EXCEEDED,
                expr: format!("{spent} / {limit} * 100 >= 100"),
                for_: t.budget_exceeded,
                severity: Severity::Critical,
                family: Some("budget"),
                summary: "The LLM budget is exceeded.",
                description: format!(
                    "{WHERE_CAP} has spent {{{{ $value | printf \"%.1f\" }}}}% of its budget for \
                     period {{{{ $labels.period }}}}; the kill-switch must be on."
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: KILL_SWITCH_ACTIVE,
                expr: format!(
                    "max by ({BY}, set_by) ({}) > 0",
                    self.sel(m::KILL_SWITCH_ACTIVE, &[])
                ),
                for_: t.kill_switch_active,
                severity: Severity::Warning,
                family: Some("budget"),
                summary: "The budget kill-switch is on; new flashcard jobs are refused.",
                description: format!(
                    "The kill-switch of {WHERE} was set by {{{{ $labels.set_by }}}}; new jobs get \
                     HTTP 429 BUDGET_LIMIT_EXCEEDED."
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: WORKERS_AT_MAX_REPLICAS,
                expr: format!(
                    "max by ({BY}) ({current})\n  >= max by ({BY}) ({max} > 0)\nand on \
                     (pipeline, namespace)\n  max by ({BY}) (deriv({waiting}[{growth}])) > 0",
                    current = self.sel(m::OPERATOR_WORKERS_CURRENT, &[]),
                    max = self.sel(m::OPERATOR_WORKERS_MAX, &[]),
                    growth = range(t.queue_growth_window),
                ),
                for_: t.workers_at_max,
                severity: Severity::Warning,
                family: None,
                summary: "Workers are at their maximum replicas and the queue still grows.",
                description: format!(
                    "{WHERE_CAP} runs {{{{ $value | printf \"%.0f\" }}}} workers, its maxReplicas, \
                     while the waiting queue kept growing over the last {}.",
                    range(t.queue_growth_window)
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: SSE_CONNECTIONS_NEAR_LIMIT,
                expr: format!(
                    "{} / ({} > 0) * 100 > {}",
                    self.sel(m::SSE_CONNECTIONS, &[]),
                    self.sel(m::SSE_CONNECTIONS_LIMIT, &[]),
                    num(th.sse_connections_percent)
                ),
                for_: t.sse_connections_near_limit,
                severity: Severity::Warning,
                family: None,
                summary: "An api process is close to its SSE connection limit.",
                description: format!(
                    "{{{{ $labels.instance }}}} of {WHERE} uses {{{{ $value | printf \"%.0f\" \
                     }}}}% of its SSE connection limit (threshold {}%); new subscribers will be \
                     refused.",
                    num(th.sse_connections_percent)
                ),
                extra_labels: vec![],
            }),
        ]);

        let mut down_labels = Vec::new();
        if let Some(ns) = &self.opts.namespace {
            down_labels.push(("namespace".to_string(), ns.clone()));
        }
        rules.push(self.rule(Spec {
            alert: SERVICE_DOWN,
            expr: format!(
                "absent({})",
                self.sel(m::BUILD_INFO, &[r#"mode=~"api|standalone""#])
            ),
            for_: t.service_down,
            severity: Severity::Critical,
            family: None,
            summary: "No flashcard api process is being scraped.",
            description: format!(
                "Prometheus has seen no {} from an api (or standalone) process of pipeline \
                 {{{{ or $labels.pipeline \"(any)\" }}}} for {}: the API is down or not scraped.",
                m::BUILD_INFO,
                prometheus_duration(t.service_down)
            ),
            extra_labels: down_labels,
        }));
        rules
    }

    fn operator_rules(&self) -> Vec<AlertRule> {
        let t = &self.opts.timings;
        vec![
            self.rule(Spec {
                alert: OPERATOR_DOWN,
                expr: format!("absent({})", m::OPERATOR_RECONCILIATIONS_TOTAL),
                for_: t.operator_down,
                severity: Severity::Critical,
                family: None,
                summary: "The flashcard operator is down or not scraped.",
                description: format!(
                    "Prometheus has seen no {} for {}{{{{ with $externalLabels.cluster }}}} in \
                     cluster {{{{ . }}}}{{{{ end }}}}: pipelines are not reconciled, workers are \
                     not scaled and the budget is not enforced automatically.",
                    m::OPERATOR_RECONCILIATIONS_TOTAL,
                    prometheus_duration(t.operator_down)
                ),
                extra_labels: vec![],
            }),
            self.rule(Spec {
                alert: OPERATOR_RECONCILE_ERRORS,
                expr: format!(
                    "sum by (namespace, pipeline, error) (rate({}[5m])) > 0",
                    m::OPERATOR_RECONCILE_ERRORS_TOTAL
                ),
                for_: t.operator_reconcile_errors,
                severity: Severity::Warning,
                family: None,
                summary: "The flashcard operator keeps failing to reconcile.",
                description: format!(
                    "The operator has failed reconciles with error {{{{ $labels.error }}}} \
                     ({{{{ $value | printf \"%.2f\" }}}}/s) for {}.",
                    prometheus_duration(t.operator_reconcile_errors)
                ),
                extra_labels: vec![],
            }),
        ]
    }
}

/// The rule groups for `th` and `opts` (see [`super::rule_groups_with`]).
pub(super) fn build(th: &AlertThresholds, opts: &RuleOptions) -> Vec<RuleGroup> {
    let b = Builder { th, opts };
    match &opts.pipeline {
        Some(p) => vec![RuleGroup {
            name: format!("{PIPELINE_GROUP}-{p}"),
            rules: b.pipeline_rules(),
        }],
        None => vec![
            RuleGroup {
                name: PIPELINE_GROUP.to_string(),
                rules: b.pipeline_rules(),
            },
            RuleGroup {
                name: OPERATOR_GROUP.to_string(),
                rules: b.operator_rules(),
            },
        ],
    }
}

/// A PromQL range (`5m`); at least one second.
fn range(d: Duration) -> String {
    prometheus_duration(Duration::from_secs(d.as_secs().max(1)))
}

/// A threshold as PromQL/prose writes it: `10`, not `10.0`; `12.5` stays.
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Escapes a label value for a PromQL double-quoted string.
fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_render_without_trailing_zeroes() {
        assert_eq!(num(10.0), "10");
        assert_eq!(num(12.5), "12.5");
    }

    #[test]
    fn thresholds_reach_the_expressions() {
        let th = AlertThresholds {
            queue_depth_high: 7,
            queue_depth_critical: 9,
            failure_rate_percent: 12.5,
            failure_window: Duration::from_secs(120),
            worker_stalled_seconds: 33,
            budget_warn_percent: 70.0,
            sse_connections_percent: 95.0,
        };
        let groups = build(&th, &RuleOptions::default());
        let expr = |name: &str| {
            groups
                .iter()
                .flat_map(|g| &g.rules)
                .find(|r| r.alert == name)
                .map(|r| r.expr.clone())
                .unwrap_or_default()
        };
        assert!(expr(QUEUE_DEPTH_HIGH).ends_with("> 7"));
        assert!(expr(QUEUE_DEPTH_CRITICAL).ends_with("> 9"));
        assert!(expr(JOB_FAILURE_RATE_HIGH).contains("[2m]"));
        assert!(expr(JOB_FAILURE_RATE_HIGH).ends_with("> 12.5"));
        assert!(expr(WORKER_STALLED).contains("> 33"));
        assert!(expr(WORKER_STALLED).contains("[33s]"));
        assert!(expr(BUDGET_NEARLY_EXHAUSTED).ends_with(">= 70"));
        assert!(expr(SSE_CONNECTIONS_NEAR_LIMIT).ends_with("> 95"));
    }

    #[test]
    fn namespace_option_labels_the_absent_alert() {
        let opts = RuleOptions {
            pipeline: Some("bio".into()),
            namespace: Some("study".into()),
            ..RuleOptions::default()
        };
        let groups = build(&AlertThresholds::default(), &opts);
        let down = groups[0]
            .rules
            .iter()
            .find(|r| r.alert == SERVICE_DOWN)
            .map(|r| (r.expr.clone(), r.labels.get("namespace").cloned()));
        assert_eq!(
            down,
            Some((
                format!(
                    "absent({}{{pipeline=\"bio\", mode=~\"api|standalone\"}})",
                    m::BUILD_INFO
                ),
                Some("study".to_string())
            ))
        );
    }
}
