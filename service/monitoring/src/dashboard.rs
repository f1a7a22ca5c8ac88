//! The Grafana dashboard over the contract metrics, generated as JSON.
//!
//! Panels: queue by state, throughput by outcome, failure rate, job and HTTP latency, spend versus
//! budget, workers (desired / current / max / live), SSE connections, circuit breaker and
//! kill-switch. Every query names its metrics through [`flashcard_core::metric_names`].

use serde_json::{Value, json};

use flashcard_core::metric_names as m;

/// The dashboard's `uid`.
pub const DASHBOARD_UID: &str = "flashcard-pipeline";

/// The pipeline selector used in every query (a multi-value template variable).
const P: &str = r#"pipeline=~"$pipeline""#;

struct Target {
    expr: String,
    legend: &'static str,
}

fn t(expr: String, legend: &'static str) -> Target {
    Target { expr, legend }
}

struct Layout {
    next_id: u64,
    x: u64,
    y: u64,
}

impl Layout {
    /// Places a panel 12 wide and 8 high, two per row.
    fn place(&mut self) -> (u64, Value) {
        let id = self.next_id;
        self.next_id += 1;
        let pos = json!({"h": 8, "w": 12, "x": self.x, "y": self.y});
        if self.x == 0 {
            self.x = 12;
        } else {
            self.x = 0;
            self.y += 8;
        }
        (id, pos)
    }
}

fn panel(
    layout: &mut Layout,
    title: &str,
    unit: &str,
    description: &str,
    targets: Vec<Target>,
) -> Value {
    let (id, grid_pos) = layout.place();
    let targets: Vec<Value> = targets
        .into_iter()
        .zip('A'..='Z')
        .map(|(target, ref_id)| {
            json!({
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": target.expr,
                "legendFormat": target.legend,
                "refId": ref_id.to_string(),
            })
        })
        .collect();
    json!({
        "id": id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": grid_pos,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": targets,
    })
}

/// The dashboard as Grafana JSON (import it, or provision it from a ConfigMap).
pub fn dashboard() -> Value {
    let mut l = Layout {
        next_id: 1,
        x: 0,
        y: 0,
    };
    let rate = "$__rate_interval";
    let panels = vec![
        panel(
            &mut l,
            "Queue by state",
            "short",
            "Jobs per state, read from the shared store (max over the processes that export it).",
            vec![t(
                format!("max by (pipeline, state) ({}{{{P}}})", m::QUEUE_JOBS),
                "{{pipeline}} {{state}}",
            )],
        ),
        panel(
            &mut l,
            "Throughput by outcome",
            "ops",
            "Job attempts finished per second, by outcome.",
            vec![t(
                format!(
                    "sum by (pipeline, outcome) (rate({}{{{P}}}[{rate}]))",
                    m::JOBS_TOTAL
                ),
                "{{pipeline}} {{outcome}}",
            )],
        ),
        panel(
            &mut l,
            "Failure rate",
            "percent",
            "Failed jobs as a percentage of finished (completed + failed) jobs.",
            vec![t(
                format!(
                    "sum by (pipeline) (rate({j}{{{P}, outcome=\"failed\"}}[{rate}])) / sum by \
                     (pipeline) (rate({j}{{{P}, outcome=~\"completed|failed\"}}[{rate}])) * 100",
                    j = m::JOBS_TOTAL
                ),
                "{{pipeline}}",
            )],
        ),
        panel(
            &mut l,
            "Job latency",
            "s",
            "Time a worker spent on one attempt (quantiles of the duration histogram).",
            [0.5, 0.95, 0.99]
                .into_iter()
                .zip(["p50 {{pipeline}}", "p95 {{pipeline}}", "p99 {{pipeline}}"])
                .map(|(q, legend)| {
                    t(
                        format!(
                            "histogram_quantile({q}, sum by (pipeline, le) (rate({}_bucket{{{P}}}[{rate}])))",
                            m::JOB_DURATION_SECONDS
                        ),
                        legend,
                    )
                })
                .collect(),
        ),
        panel(
            &mut l,
            "HTTP requests and latency",
            "short",
            "Requests per second by status, and p95 latency in seconds by route.",
            vec![
                t(
                    format!(
                        "sum by (pipeline, status) (rate({}{{{P}}}[{rate}]))",
                        m::HTTP_REQUESTS_TOTAL
                    ),
                    "{{pipeline}} {{status}} req/s",
                ),
                t(
                    format!(
                        "histogram_quantile(0.95, sum by (pipeline, route, le) (rate({}_bucket{{{P}}}[{rate}])))",
                        m::HTTP_REQUEST_DURATION_SECONDS
                    ),
                    "{{pipeline}} p95 {{route}} (s)",
                ),
            ],
        ),
        panel(
            &mut l,
            "Spend vs budget",
            "currencyUSD",
            "Spend in the current budget period, the limit, and the warning level.",
            vec![
                t(
                    format!("max by (pipeline, period) ({}{{{P}}})", m::BUDGET_SPENT_USD),
                    "{{pipeline}} spent ({{period}})",
                ),
                t(
                    format!("max by (pipeline, period) ({}{{{P}}})", m::BUDGET_LIMIT_USD),
                    "{{pipeline}} limit ({{period}})",
                ),
                t(
                    format!(
                        "max by (pipeline, period) ({}{{{P}}}) * on (pipeline) group_left max by \
                         (pipeline) ({}{{{P}}})",
                        m::BUDGET_LIMIT_USD,
                        m::BUDGET_WARN_RATIO
                    ),
                    "{{pipeline}} warn level",
                ),
            ],
        ),
        panel(
            &mut l,
            "Workers",
            "short",
            "Worker replicas the operator wants, has, and may have; workers with a live heartbeat.",
            vec![
                t(
                    format!("max by (pipeline) ({}{{{P}}})", m::OPERATOR_WORKERS_DESIRED),
                    "{{pipeline}} desired",
                ),
                t(
                    format!("max by (pipeline) ({}{{{P}}})", m::OPERATOR_WORKERS_CURRENT),
                    "{{pipeline}} current",
                ),
                t(
                    format!("max by (pipeline) ({}{{{P}}})", m::OPERATOR_WORKERS_MAX),
                    "{{pipeline}} max",
                ),
                t(
                    format!("max by (pipeline) ({}{{{P}}})", m::WORKERS_LIVE),
                    "{{pipeline}} live (heartbeat)",
                ),
            ],
        ),
        panel(
            &mut l,
            "SSE connections",
            "short",
            "Open SSE connections and the summed per-process limit.",
            vec![
                t(
                    format!("sum by (pipeline) ({}{{{P}}})", m::SSE_CONNECTIONS),
                    "{{pipeline}} open",
                ),
                t(
                    format!("sum by (pipeline) ({}{{{P}}})", m::SSE_CONNECTIONS_LIMIT),
                    "{{pipeline}} limit",
                ),
            ],
        ),
        panel(
            &mut l,
            "Circuit breaker and kill-switch",
            "short",
            "Workers per circuit-breaker state, and 1 while the budget kill-switch is on.",
            vec![
                t(
                    format!(
                        "sum by (pipeline, state) ({}{{{P}}})",
                        m::CIRCUIT_BREAKER_STATE
                    ),
                    "{{pipeline}} breaker {{state}}",
                ),
                t(
                    format!("max by (pipeline) ({}{{{P}}})", m::KILL_SWITCH_ACTIVE),
                    "{{pipeline}} kill-switch",
                ),
            ],
        ),
        panel(
            &mut l,
            "Operator reconciles",
            "ops",
            "Reconciliations and reconcile errors per second.",
            vec![
                t(
                    format!("sum (rate({}[{rate}]))", m::OPERATOR_RECONCILIATIONS_TOTAL),
                    "reconciles",
                ),
                t(
                    format!(
                        "sum by (error) (rate({}[{rate}]))",
                        m::OPERATOR_RECONCILE_ERRORS_TOTAL
                    ),
                    "errors {{error}}",
                ),
            ],
        ),
    ];

    json!({
        "uid": DASHBOARD_UID,
        "title": "Flashcard pipeline",
        "tags": ["flashcards"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            },
            {
                "name": "pipeline",
                "label": "Pipeline",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": format!("label_values({}, pipeline)", m::BUILD_INFO), "refId": "pipeline"},
                "definition": format!("label_values({}, pipeline)", m::BUILD_INFO),
                "includeAll": true,
                "multi": true,
                "allValue": ".*",
                "current": {},
                "refresh": 2,
                "hide": 0,
            },
        ]},
        "annotations": {"list": []},
        "panels": panels,
    })
}

/// The dashboard as pretty-printed JSON with a trailing newline (the file in `alerts/`).
pub fn dashboard_json() -> String {
    let mut s = serde_json::to_string_pretty(&dashboard()).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    s
}

/// Every `flashcards_*` metric name the dashboard's queries use, as written (histograms with their
/// `_bucket` suffix).
pub fn referenced_metrics() -> Vec<String> {
    let text = dashboard_json();
    let mut names: Vec<String> = Vec::new();
    let mut rest = text.as_str();
    while let Some(pos) = rest.find("flashcards_") {
        let tail = &rest[pos..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_uses_only_contract_metrics() {
        let known: Vec<&str> = m::SERVICE_METRICS
            .iter()
            .chain(m::OPERATOR_METRICS)
            .map(|s| s.name)
            .collect();
        let used = referenced_metrics();
        assert!(used.len() >= 10, "{used:?}");
        for name in used {
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(known.contains(&base), "{name} is not in metrics::names");
        }
    }

    #[test]
    fn panel_ids_are_unique() {
        let d = dashboard();
        let ids: Vec<u64> = d["panels"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
            .unwrap_or_default();
        let mut dedup = ids.clone();
        dedup.dedup();
        assert_eq!(ids, dedup);
        assert!(ids.len() >= 8);
    }
}
