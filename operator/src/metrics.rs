//! The operator's Prometheus metrics (names from `flashcard_core::metric_names`).

use std::time::Instant;

use flashcard_core::metric_names as names;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
    pub namespace: String,
}

/// All operator metrics.
#[derive(Clone)]
pub struct Metrics {
    pub reconciliations: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub workers_desired: Family<PipelineLabels, Gauge>,
    pub workers_current: Family<PipelineLabels, Gauge>,
    pub workers_max: Family<PipelineLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciliations: Counter::default(),
            errors: Family::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            workers_desired: Family::default(),
            workers_current: Family::default(),
            workers_max: Family::default(),
        }
    }
}

/// prometheus-client appends `_total` to counters itself.
fn base(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

fn help(name: &str) -> &'static str {
    names::OPERATOR_METRICS
        .iter()
        .find(|m| m.name == name)
        .map_or("", |m| m.help)
}

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = |n: &str| (base(n).to_owned(), help(n));
        let (n, h) = r(names::OPERATOR_RECONCILIATIONS_TOTAL);
        registry.register(n, h, self.reconciliations.clone());
        let (n, h) = r(names::OPERATOR_RECONCILE_ERRORS_TOTAL);
        registry.register(n, h, self.errors.clone());
        let (n, h) = r(names::OPERATOR_RECONCILE_DURATION_SECONDS);
        registry.register(n, h, self.duration.clone());
        let (n, h) = r(names::OPERATOR_WORKERS_DESIRED);
        registry.register(n, h, self.workers_desired.clone());
        let (n, h) = r(names::OPERATOR_WORKERS_CURRENT);
        registry.register(n, h, self.workers_current.clone());
        let (n, h) = r(names::OPERATOR_WORKERS_MAX);
        registry.register(n, h, self.workers_max.clone());
        self
    }

    /// Counts a reconciliation and times it until the guard drops.
    pub fn reconcile_started(&self) -> DurationGuard<'_> {
        self.reconciliations.inc();
        DurationGuard {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, error: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                error: error.to_owned(),
            })
            .inc();
    }

    pub fn set_workers(
        &self,
        pipeline: &str,
        namespace: &str,
        desired: u32,
        current: u32,
        max: u32,
    ) {
        let l = PipelineLabels {
            pipeline: pipeline.to_owned(),
            namespace: namespace.to_owned(),
        };
        self.workers_desired.get_or_create(&l).set(desired.into());
        self.workers_current.get_or_create(&l).set(current.into());
        self.workers_max.get_or_create(&l).set(max.into());
    }

    /// Drops the gauges of a deleted pipeline.
    pub fn forget(&self, pipeline: &str, namespace: &str) {
        let l = PipelineLabels {
            pipeline: pipeline.to_owned(),
            namespace: namespace.to_owned(),
        };
        self.workers_desired.remove(&l);
        self.workers_current.remove(&l);
        self.workers_max.remove(&l);
    }
}

/// Observes the reconcile duration on drop.
pub struct DurationGuard<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for DurationGuard<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The text exposition of `registry`.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_contract_metric() {
        let mut registry = Registry::default();
        let m = Metrics::default().register(&mut registry);
        {
            let _t = m.reconcile_started();
        }
        m.reconcile_failed("kube");
        m.set_workers("biology", "study", 3, 2, 10);
        let text = encode(&registry).unwrap();
        for spec in names::OPERATOR_METRICS {
            assert!(
                text.contains(&format!("{} ", spec.name))
                    || text.contains(&format!("{}{{", spec.name))
                    || text.contains(&format!("{}_count", spec.name)),
                "{} missing in\n{text}",
                spec.name
            );
        }
        assert!(text.contains(
            r#"flashcards_operator_workers_desired{pipeline="biology",namespace="study"} 3"#
        ));
        assert!(text.contains(r#"flashcards_operator_reconcile_errors_total{error="kube"} 1"#));
    }
}
