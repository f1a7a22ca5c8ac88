//! Admin endpoints of the budget: `GET /api/admin/budget/status`,
//! `POST /api/admin/budget/kill-switch`. The budget in force lives in the store (written by the
//! operator, or from flags), so every pod reports and enforces the same one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::AdminAccess;
use super::error::ApiError;
use crate::budget::micros_to_usd;
use crate::job::{iso, now_ms};
use crate::store::{KillSwitch, SetBy};

/// The kill-switch as JSON (`since` in ISO time).
pub fn kill_switch_json(ks: &KillSwitch) -> Value {
    let mut body = json!({
        "enabled": ks.enabled,
        "reason": ks.reason,
        "setBy": ks.set_by,
        "since": ks.since.map(iso),
    });
    if let Some(limit) = ks.limit_micros {
        body["limitUsd"] = json!(micros_to_usd(limit));
    }
    if let Some(period) = &ks.period {
        body["periodKey"] = json!(period);
    }
    body
}

pub async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let budget = state.store.budget_state().await?;
    let facts = state.store_watch.facts();
    let config = &budget.config;
    let spend = &budget.spend;
    let percent = if config.limit_micros > 0 {
        spend.spent_micros as f64 * 100.0 / config.limit_micros as f64
    } else {
        0.0
    };
    Ok(Json(json!({
        "budget": {
            "period": config.period.as_str(),
            "periodKey": budget.period,
            "spentUsd": micros_to_usd(spend.spent_micros),
            "reservedUsd": micros_to_usd(spend.reserved_micros),
            "limitUsd": micros_to_usd(config.limit_micros),
            "percentUsed": (percent * 100.0).round() / 100.0,
            "warnAtPercent": config.warn_percent,
            "enforced": config.enforce,
            "source": if budget.stored { config.source.as_str() } else { "none" },
            "inputTokens": spend.input_tokens,
            "outputTokens": spend.output_tokens,
            "jobs": spend.jobs,
            "overrunUsd": micros_to_usd(spend.overrun_micros),
            "restoredUsd": micros_to_usd(spend.restored_micros),
        },
        "killSwitch": kill_switch_json(&budget.kill_switch),
        "store": {
            "epoch": budget.epoch.as_ref().map(|e| e.id.clone()),
            "epochCreatedAt": budget.epoch.as_ref().map(|e| iso(e.created_ms)),
            // The store lost its data while this process ran: spend started over unless the
            // operator restored it (`restoredUsd`).
            "dataLostAt": facts.data_lost_at.map(iso),
            "spendReset": facts.data_lost_at.is_some() && spend.restored_micros == 0,
        },
        "timestamp": iso(now_ms()),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillSwitchRequest {
    enabled: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// Switches the kill-switch (held by `admin`: never cleared automatically). With the admin
/// token the body is read as JSON whatever its content type, so the seed's `curl -d
/// '{"enabled": false}'` (sent as form data by curl) works as written; without a token (standalone
/// on loopback) it must say `application/json`, which a cross-site form cannot.
pub async fn set_kill_switch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if matches!(state.admin, AdminAccess::OpenLocal) && !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Admin writes without a token need `Content-Type: application/json`",
        ));
    }
    let request: KillSwitchRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            format!("Expected {{\"enabled\": true|false, \"reason\": \"...\"}}: {e}"),
        )
    })?;
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            "reason must be at most 500 characters",
        ));
    }
    let reason = request.reason.filter(|r| !r.trim().is_empty());
    let ks = if request.enabled {
        KillSwitch::manual(SetBy::Admin, reason, now_ms())
    } else {
        KillSwitch {
            set_by: Some(SetBy::Admin),
            since: Some(now_ms()),
            reason,
            ..KillSwitch::off()
        }
    };
    state.store.set_kill_switch(&ks).await?;
    tracing::warn!(enabled = ks.enabled, reason = ?ks.reason, "kill-switch changed by admin");
    Ok(Json(json!({
        "success": true,
        "killSwitch": kill_switch_json(&ks),
        "message": if ks.enabled { "Kill-switch activated: new jobs are refused" } else { "Kill-switch deactivated: jobs are accepted" },
    })))
}
