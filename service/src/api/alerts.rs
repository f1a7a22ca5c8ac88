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
use crate::job::now_ms;
use crate::metrics::breaker_summary;
use crate::sse::render::iso;
use crate::store::{KillSwitch, OutcomeCounts, QueueCounts, WorkerInfo};

/// Inputs of the alert decision.
pub struct AlertInputs<'a> {
    pub counts: QueueCounts,
    pub outcomes: OutcomeCounts,
    pub workers: &'a [WorkerInfo],
    pub kill_switch: &'a KillSwitch,
    pub spent_micros: u64,
    pub limit_micros: u64,
    pub warn_ratio: f64,
    pub now_ms: u64,
}

/// Computes the alert document (pure, for tests).
pub fn evaluate(t: &AlertSettings, i: &AlertInputs<'_>) -> Value {
    let finished = i.outcomes.completed + i.outcomes.failed;
    let failure_percent = if finished > 0 {
        i.outcomes.failed as f64 * 100.0 / finished as f64
    } else {
        0.0
    };
    let breaker = breaker_summary(i.workers.iter().map(|w| w.breaker.as_str()));
    let newest = i.workers.iter().map(|w| w.last_seen).max();
    let heartbeat_age = newest.map(|at| i.now_ms.saturating_sub(at) / 1000);
    let worker_stalled =
        i.counts.active > 0 && heartbeat_age.is_none_or(|age| age > t.worker_stalled_seconds);
    let budget_percent = if i.limit_micros > 0 {
        i.spent_micros as f64 * 100.0 / i.limit_micros as f64
    } else {
        0.0
    };
    let alerts = json!({
        "queueDepthHigh": i.counts.waiting > t.queue_depth_high,
        "queueDepthCritical": i.counts.waiting > t.queue_depth_critical,
        "failureRateHigh": finished > 0 && failure_percent > t.failure_rate_percent,
        "circuitBreakerOpen": breaker == "open",
        "workerStalled": worker_stalled,
        "budgetNearlyExhausted": i.limit_micros > 0 && budget_percent >= i.warn_ratio * 100.0,
        "killSwitchActive": i.kill_switch.enabled,
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
            "budgetWarnPercent": i.warn_ratio * 100.0,
        },
        "metrics": {
            "queue": i.counts,
            "failureRate": {
                "percent": (failure_percent * 100.0).round() / 100.0,
                "completed": i.outcomes.completed,
                "failed": i.outcomes.failed,
                "windowSeconds": t.failure_window_seconds,
            },
            "circuitBreaker": breaker,
            "workers": {
                "live": i.workers.len(),
                "newestHeartbeatAgeSeconds": heartbeat_age,
            },
            "budget": {
                "spentUsd": micros_to_usd(i.spent_micros),
                "limitUsd": micros_to_usd(i.limit_micros),
                "percentUsed": (budget_percent * 100.0).round() / 100.0,
            },
            "killSwitch": kill_switch_json(i.kill_switch),
        },
        "timestamp": iso(i.now_ms),
    })
}

pub async fn alerts(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let settings = &state.settings.alerts;
    let store = &state.store;
    let counts = store.counts().await?;
    let outcomes = store
        .outcomes(Duration::from_secs(settings.failure_window_seconds.max(60)))
        .await?;
    let workers = store.workers().await?;
    let kill_switch = store.kill_switch().await?;
    let spend = store.spend(&state.budget.period.current_key()).await?;
    Ok(Json(evaluate(
        settings,
        &AlertInputs {
            counts,
            outcomes,
            workers: &workers,
            kill_switch: &kill_switch,
            spent_micros: spend.spent_micros,
            limit_micros: state.budget.limit_micros,
            warn_ratio: state.budget.warn_ratio,
            now_ms: now_ms(),
        },
    )))
}
