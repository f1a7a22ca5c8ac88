//! `GET /api/metrics/alerts`: the seed's alert booleans, computed from shared state, with the
//! thresholds in force and the numbers behind each flag.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::budget::{KillSwitchView, kill_switch_json};
use super::error::ApiError;
use crate::config::AlertSettings;
use crate::metrics::SharedState;
use crate::metrics::breaker_summary;
use flashcard_core::budget::micros_to_usd;
use flashcard_core::job::iso;
use flashcard_store::{OutcomeCounts, QueueCounts};

/// Inputs of the alert decision.
pub struct AlertInputs<'a> {
    pub shared: &'a SharedState,
    /// Final outcomes over the failure-rate window.
    pub outcomes: OutcomeCounts,
    pub now_ms: u64,
}

/// `GET /api/metrics/alerts`: the seed's alert booleans, the thresholds and the numbers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsBody {
    pub alerts: AlertFlags,
    /// How many of `alerts` are true.
    pub alerts_active: usize,
    pub thresholds: AlertThresholds,
    pub metrics: AlertMetrics,
    /// ISO-8601 UTC time of the answer.
    pub timestamp: String,
}

/// The alert flags (the runbook's conditions).
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertFlags {
    pub queue_depth_high: bool,
    pub queue_depth_critical: bool,
    pub failure_rate_high: bool,
    pub circuit_breaker_open: bool,
    pub worker_stalled: bool,
    pub budget_nearly_exhausted: bool,
    pub kill_switch_active: bool,
}

impl AlertFlags {
    /// Each flag with its JSON name (`queueDepthHigh`, ...).
    pub fn named(&self) -> [(&'static str, bool); 7] {
        [
            ("queueDepthHigh", self.queue_depth_high),
            ("queueDepthCritical", self.queue_depth_critical),
            ("failureRateHigh", self.failure_rate_high),
            ("circuitBreakerOpen", self.circuit_breaker_open),
            ("workerStalled", self.worker_stalled),
            ("budgetNearlyExhausted", self.budget_nearly_exhausted),
            ("killSwitchActive", self.kill_switch_active),
        ]
    }

    fn active(&self) -> usize {
        [
            self.queue_depth_high,
            self.queue_depth_critical,
            self.failure_rate_high,
            self.circuit_breaker_open,
            self.worker_stalled,
            self.budget_nearly_exhausted,
            self.kill_switch_active,
        ]
        .into_iter()
        .filter(|on| *on)
        .count()
    }
}

/// The thresholds in force.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertThresholds {
    pub queue_depth_high: u64,
    pub queue_depth_critical: u64,
    pub failure_rate_percent: f64,
    pub failure_window_seconds: u64,
    pub worker_stalled_seconds: u64,
    pub budget_warn_percent: f64,
}

/// The numbers behind the flags.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertMetrics {
    pub queue: QueueCounts,
    pub failure_rate: FailureRate,
    /// Worst circuit breaker state of the live workers: `closed`, `half_open` or `open`.
    pub circuit_breaker: String,
    pub workers: WorkersSummary,
    pub budget: BudgetSummary,
    pub kill_switch: KillSwitchView,
}

/// Final outcomes over the failure-rate window.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureRate {
    pub percent: f64,
    pub completed: u64,
    pub failed: u64,
    pub window_seconds: u64,
}

/// Live workers and their newest heartbeat.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersSummary {
    pub live: usize,
    /// Null without a live worker.
    pub newest_heartbeat_age_seconds: Option<u64>,
}

/// This period's spend against the limit.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSummary {
    pub spent_usd: f64,
    pub limit_usd: f64,
    pub percent_used: f64,
}

/// Computes the alert document (pure, for tests).
pub fn evaluate(t: &AlertSettings, i: &AlertInputs<'_>) -> AlertsBody {
    let s = i.shared;
    let finished = i.outcomes.completed + i.outcomes.failed;
    let failure_percent = if finished > 0 {
        i.outcomes.failed as f64 * 100.0 / finished as f64
    } else {
        0.0
    };
    let breaker = breaker_summary(s.workers.iter().map(|w| w.breaker.as_str()));
    let newest = s.workers.iter().map(|w| w.last_seen).max();
    let heartbeat_age = newest.map(|at| i.now_ms.saturating_sub(at) / 1000);
    let worker_stalled =
        s.counts.active > 0 && heartbeat_age.is_none_or(|age| age > t.worker_stalled_seconds);
    let budget_percent = if s.limit_micros > 0 {
        s.spend.spent_micros as f64 * 100.0 / s.limit_micros as f64
    } else {
        0.0
    };
    let alerts = AlertFlags {
        queue_depth_high: s.counts.waiting > t.queue_depth_high,
        queue_depth_critical: s.counts.waiting > t.queue_depth_critical,
        failure_rate_high: finished > 0 && failure_percent > t.failure_rate_percent,
        circuit_breaker_open: breaker == "open",
        worker_stalled,
        budget_nearly_exhausted: s.limit_micros > 0 && budget_percent >= s.warn_ratio * 100.0,
        kill_switch_active: s.kill_switch.enabled,
    };
    AlertsBody {
        alerts_active: alerts.active(),
        alerts,
        thresholds: AlertThresholds {
            queue_depth_high: t.queue_depth_high,
            queue_depth_critical: t.queue_depth_critical,
            failure_rate_percent: t.failure_rate_percent,
            failure_window_seconds: t.failure_window_seconds,
            worker_stalled_seconds: t.worker_stalled_seconds,
            budget_warn_percent: s.warn_ratio * 100.0,
        },
        metrics: AlertMetrics {
            queue: s.counts,
            failure_rate: FailureRate {
                percent: (failure_percent * 100.0).round() / 100.0,
                completed: i.outcomes.completed,
                failed: i.outcomes.failed,
                window_seconds: t.failure_window_seconds,
            },
            circuit_breaker: breaker.to_owned(),
            workers: WorkersSummary {
                live: s.workers.len(),
                newest_heartbeat_age_seconds: heartbeat_age,
            },
            budget: BudgetSummary {
                spent_usd: micros_to_usd(s.spend.spent_micros),
                limit_usd: micros_to_usd(s.limit_micros),
                percent_used: (budget_percent * 100.0).round() / 100.0,
            },
            kill_switch: kill_switch_json(&s.kill_switch),
        },
        timestamp: iso(i.now_ms),
    }
}

/// The seed's alert booleans, computed from shared state.
#[utoipa::path(
    get,
    path = "/api/metrics/alerts",
    tag = "monitoring",
    operation_id = "getAlerts",
    responses((status = 200, description = "Alert flags, thresholds and numbers.", body = AlertsBody)),
)]
pub async fn alerts(State(state): State<AppState>) -> Result<Json<AlertsBody>, ApiError> {
    let settings = &state.settings.alerts;
    let window = Duration::from_secs(settings.failure_window_seconds.max(60));
    let (shared, outcomes) = tokio::try_join!(state.shared_state(), async {
        Ok(state.store.outcomes(window).await?)
    },)?;
    Ok(Json(evaluate(
        settings,
        &AlertInputs {
            shared: &shared,
            outcomes,
            now_ms: state.store.now_ms(),
        },
    )))
}
