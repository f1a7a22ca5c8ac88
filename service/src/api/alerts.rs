//! `GET /api/metrics/alerts`: the seed's alert booleans, computed from shared state, with the
//! thresholds in force and the numbers behind each flag.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::budget::kill_switch_json;
use super::error::ApiError;
use crate::budget::micros_to_usd;
use crate::config::AlertSettings;
use crate::job::iso;
use crate::job::now_ms;
use crate::metrics::SharedState;
use crate::metrics::breaker_summary;
use crate::store::OutcomeCounts;

/// Inputs of the alert decision.
pub struct AlertInputs<'a> {
    pub shared: &'a SharedState,
    /// Final outcomes over the failure-rate window.
    pub outcomes: OutcomeCounts,
    pub now_ms: u64,
}

/// Computes the alert document (pure, for tests).
pub fn evaluate(t: &AlertSettings, i: &AlertInputs<'_>) -> Value {
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
    let alerts = json!({
        "queueDepthHigh": s.counts.waiting > t.queue_depth_high,
        "queueDepthCritical": s.counts.waiting > t.queue_depth_critical,
        "failureRateHigh": finished > 0 && failure_percent > t.failure_rate_percent,
        "circuitBreakerOpen": breaker == "open",
        "workerStalled": worker_stalled,
        "budgetNearlyExhausted": s.limit_micros > 0 && budget_percent >= s.warn_ratio * 100.0,
        "killSwitchActive": s.kill_switch.enabled,
    });
    let active = alerts
        .as_object()
        .map(|a| a.values().filter(|v| v.as_bool() == Some(true)).count())
        .unwrap_or(0);
    json!({
        "alerts": alerts,
        "alertsActive": active,
        "thresholds": {
            "queueDepthHigh": t.queue_depth_high,
            "queueDepthCritical": t.queue_depth_critical,
            "failureRatePercent": t.failure_rate_percent,
            "failureWindowSeconds": t.failure_window_seconds,
            "workerStalledSeconds": t.worker_stalled_seconds,
            "budgetWarnPercent": s.warn_ratio * 100.0,
        },
        "metrics": {
            "queue": s.counts,
            "failureRate": {
                "percent": (failure_percent * 100.0).round() / 100.0,
                "completed": i.outcomes.completed,
                "failed": i.outcomes.failed,
                "windowSeconds": t.failure_window_seconds,
            },
            "circuitBreaker": breaker,
            "workers": {
                "live": s.workers.len(),
                "newestHeartbeatAgeSeconds": heartbeat_age,
            },
            "budget": {
                "spentUsd": micros_to_usd(s.spend.spent_micros),
                "limitUsd": micros_to_usd(s.limit_micros),
                "percentUsed": (budget_percent * 100.0).round() / 100.0,
            },
            "killSwitch": kill_switch_json(&s.kill_switch),
        },
        "timestamp": iso(i.now_ms),
    })
}

pub async fn alerts(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
            now_ms: now_ms(),
        },
    )))
}
