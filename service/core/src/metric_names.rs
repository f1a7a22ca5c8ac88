//! Metric names: the contract between the service, the operator and the alert rules.
//!
//! Names are written here as they appear in the exposition (counters with their `_total`
//! suffix). The alert rules and the dashboard refer to these constants, and a test checks that
//! `/metrics` exposes every one of them.

/// How a metric is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric of the contract.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Labels besides `pipeline`, which every service metric carries.
    pub labels: &'static [&'static str],
}

// --- service (`flashcards_`) ---
pub const BUILD_INFO: &str = "flashcards_build_info";
pub const STORE_UP: &str = "flashcards_store_up";
pub const QUEUE_JOBS: &str = "flashcards_queue_jobs";
pub const JOBS_TOTAL: &str = "flashcards_jobs_total";
pub const JOB_DURATION_SECONDS: &str = "flashcards_job_duration_seconds";
pub const PROVIDER_TOKENS_TOTAL: &str = "flashcards_provider_tokens_total";
pub const PROVIDER_COST_USD_TOTAL: &str = "flashcards_provider_cost_usd_total";
pub const PROVIDER_CALLS_AT_BOUND_TOTAL: &str = "flashcards_provider_calls_settled_at_bound_total";
pub const BUDGET_SPENT_USD: &str = "flashcards_budget_spent_usd";
pub const BUDGET_LIMIT_USD: &str = "flashcards_budget_limit_usd";
pub const BUDGET_RESERVED_USD: &str = "flashcards_budget_reserved_usd";
pub const BUDGET_AT_BOUND_USD: &str = "flashcards_budget_settled_at_bound_usd";
pub const BUDGET_OVERRUN_USD_TOTAL: &str = "flashcards_budget_overrun_usd_total";
pub const BUDGET_WARN_RATIO: &str = "flashcards_budget_warn_ratio";
pub const KILL_SWITCH_ACTIVE: &str = "flashcards_kill_switch_active";
pub const CIRCUIT_BREAKER_STATE: &str = "flashcards_circuit_breaker_state";
pub const WORKERS_LIVE: &str = "flashcards_workers_live";
pub const WORKER_HEARTBEAT_TIMESTAMP_SECONDS: &str =
    "flashcards_worker_heartbeat_timestamp_seconds";
pub const SSE_CONNECTIONS: &str = "flashcards_sse_connections";
pub const SSE_CONNECTIONS_LIMIT: &str = "flashcards_sse_connections_limit";
pub const SSE_EVENTS_SENT_TOTAL: &str = "flashcards_sse_events_sent_total";
pub const SSE_FOLLOWERS_CAUGHT_UP_TOTAL: &str = "flashcards_sse_followers_caught_up_total";
pub const HTTP_REQUESTS_TOTAL: &str = "flashcards_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "flashcards_http_request_duration_seconds";

// --- operator (`flashcards_operator_`) ---
pub const OPERATOR_RECONCILIATIONS_TOTAL: &str = "flashcards_operator_reconciliations_total";
pub const OPERATOR_RECONCILE_ERRORS_TOTAL: &str = "flashcards_operator_reconcile_errors_total";
pub const OPERATOR_RECONCILE_DURATION_SECONDS: &str =
    "flashcards_operator_reconcile_duration_seconds";
pub const OPERATOR_WORKERS_DESIRED: &str = "flashcards_operator_workers_desired";
pub const OPERATOR_WORKERS_CURRENT: &str = "flashcards_operator_workers_current";
pub const OPERATOR_WORKERS_MAX: &str = "flashcards_operator_workers_max";

/// Every metric the service exposes (label `pipeline` on all of them).
pub const SERVICE_METRICS: &[MetricSpec] = &[
    MetricSpec {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        help: "Always 1; labels carry the version and mode of the process.",
        labels: &["version", "mode"],
    },
    MetricSpec {
        name: STORE_UP,
        kind: Kind::Gauge,
        help: "1 when this process could read the store for this scrape, 0 when not (the store-derived gauges are then left out).",
        labels: &[],
    },
    MetricSpec {
        name: QUEUE_JOBS,
        kind: Kind::Gauge,
        help: "Jobs in the queue by state (waiting, active, delayed, completed, failed).",
        labels: &["state"],
    },
    MetricSpec {
        name: JOBS_TOTAL,
        kind: Kind::Counter,
        help: "Job attempts ended by this process, by outcome (completed, failed, retried, released: back in the queue without using an attempt, lease_lost, stalled; cancelled: jobs cancelled through this process's API).",
        labels: &["outcome"],
    },
    MetricSpec {
        name: JOB_DURATION_SECONDS,
        kind: Kind::Histogram,
        help: "Time a worker spent on one attempt of a job.",
        labels: &["outcome"],
    },
    MetricSpec {
        name: PROVIDER_TOKENS_TOTAL,
        kind: Kind::Counter,
        help: "Tokens used by provider calls.",
        labels: &["provider", "model", "direction"],
    },
    MetricSpec {
        name: PROVIDER_COST_USD_TOTAL,
        kind: Kind::Counter,
        help: "Cost of provider calls in US dollars, failed calls included (a billed but unusable reply at its reported usage, a call of unknown cost at its reservation).",
        labels: &["provider", "model"],
    },
    MetricSpec {
        name: PROVIDER_CALLS_AT_BOUND_TOTAL,
        kind: Kind::Counter,
        help: "Provider calls of unknown cost (timed out after the request was sent, cut mid-reply, cancelled) settled at their reservation, the safe upper bound.",
        labels: &["provider", "model"],
    },
    MetricSpec {
        name: BUDGET_SPENT_USD,
        kind: Kind::Gauge,
        help: "Spend in the current budget period (US dollars), read from the store.",
        labels: &["period"],
    },
    MetricSpec {
        name: BUDGET_LIMIT_USD,
        kind: Kind::Gauge,
        help: "Budget limit of the current period (US dollars); 0 means no limit.",
        labels: &["period"],
    },
    MetricSpec {
        name: BUDGET_RESERVED_USD,
        kind: Kind::Gauge,
        help: "Budget held by running jobs' reservations (US dollars), read from the store.",
        labels: &["period"],
    },
    MetricSpec {
        name: BUDGET_AT_BOUND_USD,
        kind: Kind::Gauge,
        help: "Part of the current period's spend settled at the bound: calls of unknown cost counted at their reservation (US dollars), read from the store.",
        labels: &["period"],
    },
    MetricSpec {
        name: BUDGET_OVERRUN_USD_TOTAL,
        kind: Kind::Counter,
        help: "Cost providers reported beyond the reservation of the call (US dollars); settled in full, never hidden.",
        labels: &[],
    },
    MetricSpec {
        name: BUDGET_WARN_RATIO,
        kind: Kind::Gauge,
        help: "Fraction of the budget at which the budget counts as nearly exhausted.",
        labels: &[],
    },
    MetricSpec {
        name: KILL_SWITCH_ACTIVE,
        kind: Kind::Gauge,
        help: "1 while the budget kill-switch refuses new jobs.",
        labels: &["set_by"],
    },
    MetricSpec {
        name: CIRCUIT_BREAKER_STATE,
        kind: Kind::Gauge,
        help: "1 for the provider circuit breaker's current state (closed, open, half_open), 0 for the others.",
        labels: &["state"],
    },
    MetricSpec {
        name: WORKERS_LIVE,
        kind: Kind::Gauge,
        help: "Workers with a recent heartbeat in the store.",
        labels: &[],
    },
    MetricSpec {
        name: WORKER_HEARTBEAT_TIMESTAMP_SECONDS,
        kind: Kind::Gauge,
        help: "Unix time of the newest worker heartbeat in the store.",
        labels: &[],
    },
    MetricSpec {
        name: SSE_CONNECTIONS,
        kind: Kind::Gauge,
        help: "Open SSE connections in this process.",
        labels: &[],
    },
    MetricSpec {
        name: SSE_CONNECTIONS_LIMIT,
        kind: Kind::Gauge,
        help: "Maximum SSE connections this process accepts.",
        labels: &[],
    },
    MetricSpec {
        name: SSE_EVENTS_SENT_TOTAL,
        kind: Kind::Counter,
        help: "SSE events written to clients.",
        labels: &["event"],
    },
    MetricSpec {
        name: SSE_FOLLOWERS_CAUGHT_UP_TOTAL,
        kind: Kind::Counter,
        help: "SSE followers that missed live events (they fell behind, or the feed skipped) and were caught up from the job's history.",
        labels: &[],
    },
    MetricSpec {
        name: HTTP_REQUESTS_TOTAL,
        kind: Kind::Counter,
        help: "HTTP requests by route, method and status.",
        labels: &["route", "method", "status"],
    },
    MetricSpec {
        name: HTTP_REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        help: "HTTP request latency by route.",
        labels: &["route", "method"],
    },
];

/// Every metric the operator exposes (labels `pipeline` and `namespace` where per pipeline).
pub const OPERATOR_METRICS: &[MetricSpec] = &[
    MetricSpec {
        name: OPERATOR_RECONCILIATIONS_TOTAL,
        kind: Kind::Counter,
        help: "Reconciliations run.",
        labels: &[],
    },
    MetricSpec {
        name: OPERATOR_RECONCILE_ERRORS_TOTAL,
        kind: Kind::Counter,
        help: "Reconciliations that failed, by error kind.",
        labels: &["error"],
    },
    MetricSpec {
        name: OPERATOR_RECONCILE_DURATION_SECONDS,
        kind: Kind::Histogram,
        help: "Time one reconciliation took.",
        labels: &[],
    },
    MetricSpec {
        name: OPERATOR_WORKERS_DESIRED,
        kind: Kind::Gauge,
        help: "Worker replicas the autoscaler wants.",
        labels: &["namespace"],
    },
    MetricSpec {
        name: OPERATOR_WORKERS_CURRENT,
        kind: Kind::Gauge,
        help: "Worker replicas currently ready.",
        labels: &["namespace"],
    },
    MetricSpec {
        name: OPERATOR_WORKERS_MAX,
        kind: Kind::Gauge,
        help: "The pipeline's maximum worker replicas.",
        labels: &["namespace"],
    },
];
