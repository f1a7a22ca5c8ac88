//! Prometheus metrics of the service (OpenMetrics text at `/metrics`).
//!
//! Counters and histograms are updated where things happen (worker, HTTP middleware, SSE hub);
//! the gauges that describe shared state (queue, budget, kill-switch, workers) are read from the
//! store when Prometheus scrapes, so every pod reports the same numbers. Names come from
//! `flashcard_core::metric_names`, the contract with the alert rules.

use flashcard_core::metric_names as names;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use flashcard_core::budget::micros_to_usd;
use flashcard_core::job::TokenUsage;
use flashcard_store::{KillSwitch, QueueCounts, Spend, WorkerInfo};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabels {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    pipeline: String,
    version: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pipeline: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    pipeline: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    pipeline: String,
    provider: String,
    model: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    pipeline: String,
    provider: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeriodLabels {
    pipeline: String,
    period: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetByLabels {
    pipeline: String,
    set_by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    pipeline: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    pipeline: String,
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLatencyLabels {
    pipeline: String,
    route: String,
    method: String,
}

/// Builds histograms with one bucket layout.
#[derive(Clone, Copy)]
struct Buckets {
    start: f64,
    factor: f64,
    count: u16,
}

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(self.start, self.factor, self.count))
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A snapshot of shared state (read from the store) with the budget in force: what the
/// store-backed gauges and the alert flags are computed from.
#[derive(Debug, Clone)]
pub struct SharedState {
    pub counts: QueueCounts,
    pub workers: Vec<WorkerInfo>,
    pub kill_switch: KillSwitch,
    pub spend: Spend,
    /// Key of the current budget period.
    pub period: String,
    pub limit_micros: u64,
    pub warn_ratio: f64,
}

/// All metrics of one process.
pub struct Metrics {
    registry: Registry,
    pipeline: String,
    store_up: Family<PipelineLabels, Gauge>,
    queue_jobs: Family<StateLabels, Gauge>,
    jobs: Family<OutcomeLabels, Counter>,
    job_duration: Family<OutcomeLabels, Histogram, Buckets>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    calls_at_bound: Family<ModelLabels, Counter>,
    budget_spent: Family<PeriodLabels, FloatGauge>,
    budget_limit: Family<PeriodLabels, FloatGauge>,
    budget_reserved: Family<PeriodLabels, FloatGauge>,
    budget_at_bound: Family<PeriodLabels, FloatGauge>,
    budget_overrun: Family<PipelineLabels, Counter<f64, AtomicU64>>,
    budget_warn_ratio: Family<PipelineLabels, FloatGauge>,
    kill_switch: Family<SetByLabels, Gauge>,
    breaker: Family<StateLabels, Gauge>,
    workers_live: Family<PipelineLabels, Gauge>,
    heartbeat: Family<PipelineLabels, FloatGauge>,
    sse_connections: Family<PipelineLabels, Gauge>,
    sse_limit: Family<PipelineLabels, Gauge>,
    sse_events: Family<EventLabels, Counter>,
    sse_dropped: Family<PipelineLabels, Counter>,
    http_requests: Family<RouteLabels, Counter>,
    http_duration: Family<RouteLatencyLabels, Histogram, Buckets>,
}

/// Registers `metric` under its contract `name` with the contract's help text. Counters are
/// registered without `_total`, which the encoder appends.
fn register(registry: &mut Registry, name: &str, metric: impl prometheus_client::registry::Metric) {
    let base = name.strip_suffix("_total").unwrap_or(name);
    registry.register(base, help(name), metric);
}

fn help(name: &str) -> &'static str {
    names::SERVICE_METRICS
        .iter()
        .find(|m| m.name == name)
        // The encoder ends help text with a period of its own.
        .map(|m| m.help.trim_end_matches('.'))
        .unwrap_or("")
}

impl Metrics {
    pub fn new(pipeline: &str, mode: &str) -> Self {
        use names::*;
        let mut registry = Registry::default();
        let job_buckets = Buckets {
            start: 0.05,
            factor: 2.0,
            count: 14,
        };
        let http_buckets = Buckets {
            start: 0.001,
            factor: 2.5,
            count: 12,
        };
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                pipeline: pipeline.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                mode: mode.to_owned(),
            })
            .set(1);
        let metrics = Self {
            registry: Registry::default(),
            pipeline: pipeline.to_owned(),
            store_up: Family::default(),
            queue_jobs: Family::default(),
            jobs: Family::default(),
            job_duration: Family::new_with_constructor(job_buckets),
            tokens: Family::default(),
            cost: Family::default(),
            calls_at_bound: Family::default(),
            budget_spent: Family::default(),
            budget_limit: Family::default(),
            budget_reserved: Family::default(),
            budget_at_bound: Family::default(),
            budget_overrun: Family::default(),
            budget_warn_ratio: Family::default(),
            kill_switch: Family::default(),
            breaker: Family::default(),
            workers_live: Family::default(),
            heartbeat: Family::default(),
            sse_connections: Family::default(),
            sse_limit: Family::default(),
            sse_events: Family::default(),
            sse_dropped: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_buckets),
        };
        register(&mut registry, BUILD_INFO, build_info);
        register(&mut registry, STORE_UP, metrics.store_up.clone());
        register(&mut registry, QUEUE_JOBS, metrics.queue_jobs.clone());
        register(&mut registry, JOBS_TOTAL, metrics.jobs.clone());
        register(
            &mut registry,
            JOB_DURATION_SECONDS,
            metrics.job_duration.clone(),
        );
        register(&mut registry, PROVIDER_TOKENS_TOTAL, metrics.tokens.clone());
        register(&mut registry, PROVIDER_COST_USD_TOTAL, metrics.cost.clone());
        register(
            &mut registry,
            PROVIDER_CALLS_AT_BOUND_TOTAL,
            metrics.calls_at_bound.clone(),
        );
        register(
            &mut registry,
            BUDGET_SPENT_USD,
            metrics.budget_spent.clone(),
        );
        register(
            &mut registry,
            BUDGET_LIMIT_USD,
            metrics.budget_limit.clone(),
        );
        register(
            &mut registry,
            BUDGET_RESERVED_USD,
            metrics.budget_reserved.clone(),
        );
        register(
            &mut registry,
            BUDGET_AT_BOUND_USD,
            metrics.budget_at_bound.clone(),
        );
        register(
            &mut registry,
            BUDGET_OVERRUN_USD_TOTAL,
            metrics.budget_overrun.clone(),
        );
        register(
            &mut registry,
            BUDGET_WARN_RATIO,
            metrics.budget_warn_ratio.clone(),
        );
        register(
            &mut registry,
            KILL_SWITCH_ACTIVE,
            metrics.kill_switch.clone(),
        );
        register(
            &mut registry,
            CIRCUIT_BREAKER_STATE,
            metrics.breaker.clone(),
        );
        register(&mut registry, WORKERS_LIVE, metrics.workers_live.clone());
        register(
            &mut registry,
            WORKER_HEARTBEAT_TIMESTAMP_SECONDS,
            metrics.heartbeat.clone(),
        );
        register(
            &mut registry,
            SSE_CONNECTIONS,
            metrics.sse_connections.clone(),
        );
        register(
            &mut registry,
            SSE_CONNECTIONS_LIMIT,
            metrics.sse_limit.clone(),
        );
        register(
            &mut registry,
            SSE_EVENTS_SENT_TOTAL,
            metrics.sse_events.clone(),
        );
        register(
            &mut registry,
            SSE_FOLLOWERS_CAUGHT_UP_TOTAL,
            metrics.sse_dropped.clone(),
        );
        register(
            &mut registry,
            HTTP_REQUESTS_TOTAL,
            metrics.http_requests.clone(),
        );
        register(
            &mut registry,
            HTTP_REQUEST_DURATION_SECONDS,
            metrics.http_duration.clone(),
        );
        // Families without a sample yet still show their names, so dashboards see zeros.
        let labels = metrics.labels();
        let _ = metrics.sse_dropped.get_or_create(&labels);
        let _ = metrics.sse_connections.get_or_create(&labels);
        let _ = metrics.budget_overrun.get_or_create(&labels);
        for outcome in [
            "completed",
            "failed",
            "retried",
            "released",
            "lease_lost",
            "stalled",
        ] {
            let _ = metrics.jobs.get_or_create(&metrics.outcome(outcome));
        }
        Self {
            registry,
            ..metrics
        }
    }

    fn labels(&self) -> PipelineLabels {
        PipelineLabels {
            pipeline: self.pipeline.clone(),
        }
    }

    fn outcome(&self, outcome: &str) -> OutcomeLabels {
        OutcomeLabels {
            pipeline: self.pipeline.clone(),
            outcome: outcome.to_owned(),
        }
    }

    /// The exposition text (OpenMetrics).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// A job attempt ended (`completed`, `failed`, `retried`).
    pub fn job_finished(&self, outcome: &str, seconds: f64) {
        self.jobs.get_or_create(&self.outcome(outcome)).inc();
        self.job_duration
            .get_or_create(&self.outcome(outcome))
            .observe(seconds);
    }

    /// A job cancelled through this process's API (`DELETE /api/jobs/{jobId}`).
    pub fn job_cancelled(&self) {
        self.jobs.get_or_create(&self.outcome("cancelled")).inc();
    }

    /// Jobs the budget could never cover, failed by this process's claims.
    pub fn jobs_budget_refused(&self, n: u64) {
        self.jobs.get_or_create(&self.outcome("failed")).inc_by(n);
    }

    /// Cost beyond a reservation, in micro-dollars.
    pub fn budget_overrun(&self, micros: u64) {
        self.budget_overrun
            .get_or_create(&self.labels())
            .inc_by(micros_to_usd(micros));
    }

    /// Stalled jobs recovered by this process.
    pub fn jobs_stalled(&self, n: u64) {
        self.jobs.get_or_create(&self.outcome("stalled")).inc_by(n);
    }

    /// Creates the provider series of this process at zero, so dashboards and rate() see them
    /// before the first call (and a pipeline with no bound settlement shows a flat zero).
    pub fn provider_known(&self, provider: &str, model: &str) {
        let model_labels = ModelLabels {
            pipeline: self.pipeline.clone(),
            provider: provider.to_owned(),
            model: model.to_owned(),
        };
        let _ = self.calls_at_bound.get_or_create(&model_labels);
        let _ = self.cost.get_or_create(&model_labels);
    }

    /// A settled provider call: its tokens (when reported) and cost; `at_bound` when its cost
    /// was unknown and its reservation was settled.
    pub fn provider_usage(
        &self,
        provider: &str,
        model: &str,
        usage: TokenUsage,
        cost_micros: u64,
        at_bound: bool,
    ) {
        let model_labels = ModelLabels {
            pipeline: self.pipeline.clone(),
            provider: provider.to_owned(),
            model: model.to_owned(),
        };
        if at_bound {
            self.calls_at_bound.get_or_create(&model_labels).inc();
        }
        for (direction, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    pipeline: self.pipeline.clone(),
                    provider: provider.to_owned(),
                    model: model.to_owned(),
                    direction: direction.to_owned(),
                })
                .inc_by(n);
        }
        self.cost
            .get_or_create(&model_labels)
            .inc_by(micros_to_usd(cost_micros));
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&RouteLabels {
                pipeline: self.pipeline.clone(),
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLatencyLabels {
                pipeline: self.pipeline.clone(),
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(seconds);
    }

    pub fn sse_connections(&self, open: usize, limit: usize) {
        let labels = self.labels();
        self.sse_connections.get_or_create(&labels).set(open as i64);
        self.sse_limit.get_or_create(&labels).set(limit as i64);
    }

    pub fn sse_event_sent(&self, event: &str) {
        self.sse_events
            .get_or_create(&EventLabels {
                pipeline: self.pipeline.clone(),
                event: event.to_owned(),
            })
            .inc();
    }

    pub fn sse_follower_caught_up(&self) {
        self.sse_dropped.get_or_create(&self.labels()).inc();
    }

    /// The store could not be read for this scrape: its gauges are left out rather than
    /// reported stale, and `flashcards_store_up` says why; this process's own breaker is still
    /// reported.
    pub fn store_unreachable(&self, local_breaker: Option<&str>) {
        self.store_up.get_or_create(&self.labels()).set(0);
        self.queue_jobs.clear();
        self.budget_spent.clear();
        self.budget_limit.clear();
        self.budget_reserved.clear();
        self.kill_switch.clear();
        self.workers_live.clear();
        self.heartbeat.clear();
        self.breaker.clear();
        if let Some(local) = local_breaker {
            for s in ["closed", "open", "half_open"] {
                self.breaker
                    .get_or_create(&StateLabels {
                        pipeline: self.pipeline.clone(),
                        state: s.to_owned(),
                    })
                    .set(i64::from(s == local));
            }
        }
    }

    /// Sets the gauges that mirror shared state; `local_breaker` is this process's own breaker.
    pub fn observe_shared(&self, shared: &SharedState, local_breaker: Option<&str>) {
        self.store_up.get_or_create(&self.labels()).set(1);
        let p = &self.pipeline;
        let state = |s: &str| StateLabels {
            pipeline: p.clone(),
            state: s.to_owned(),
        };
        let c = shared.counts;
        for (name, n) in [
            ("waiting", c.waiting),
            ("active", c.active),
            ("delayed", c.delayed),
            ("completed", c.completed),
            ("failed", c.failed),
        ] {
            self.queue_jobs.get_or_create(&state(name)).set(n as i64);
        }
        let period = PeriodLabels {
            pipeline: p.clone(),
            period: shared.period.to_owned(),
        };
        self.budget_spent.clear();
        self.budget_limit.clear();
        self.budget_reserved.clear();
        self.budget_at_bound.clear();
        self.budget_at_bound
            .get_or_create(&period)
            .set(micros_to_usd(shared.spend.bound_micros));
        self.budget_reserved
            .get_or_create(&period)
            .set(micros_to_usd(shared.spend.reserved_micros));
        self.budget_spent
            .get_or_create(&period)
            .set(micros_to_usd(shared.spend.spent_micros));
        self.budget_limit
            .get_or_create(&period)
            .set(micros_to_usd(shared.limit_micros));
        self.budget_warn_ratio
            .get_or_create(&self.labels())
            .set(shared.warn_ratio);
        self.kill_switch.clear();
        self.kill_switch
            .get_or_create(&SetByLabels {
                pipeline: p.clone(),
                set_by: shared
                    .kill_switch
                    .set_by
                    .map(|s| s.as_str())
                    .unwrap_or("none")
                    .to_owned(),
            })
            .set(i64::from(shared.kill_switch.enabled));
        let worst = breaker_summary(
            shared
                .workers
                .iter()
                .map(|w| w.breaker.as_str())
                .chain(local_breaker),
        );
        for s in ["closed", "open", "half_open"] {
            self.breaker
                .get_or_create(&state(s))
                .set(i64::from(s == worst));
        }
        self.workers_live
            .get_or_create(&self.labels())
            .set(shared.workers.len() as i64);
        let newest = shared
            .workers
            .iter()
            .map(|w| w.last_seen)
            .max()
            .unwrap_or(0);
        self.heartbeat
            .get_or_create(&self.labels())
            .set(newest as f64 / 1000.0);
    }
}

/// The breaker state that matters most across workers: open, then half-open, else closed.
pub fn breaker_summary<'a>(states: impl Iterator<Item = &'a str>) -> &'static str {
    let mut worst = "closed";
    for s in states {
        match s {
            "open" => return "open",
            "half_open" => worst = "half_open",
            _ => {}
        }
    }
    worst
}
