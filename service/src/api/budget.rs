//! Admin endpoints of the budget: `GET /api/admin/budget/status`,
//! `POST /api/admin/budget/kill-switch`. The budget in force lives in the store (written by the
//! operator, or from flags), so every pod reports and enforces the same one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::AdminAccess;
use super::error::{ApiError, ErrorBody, bytes_rejection};
use flashcard_core::budget::micros_to_usd;
use flashcard_core::job::{iso, now_ms};
use flashcard_store::{KillSwitch, SetBy};

/// The kill-switch: while `enabled`, new jobs get 429 `BUDGET_LIMIT_EXCEEDED`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KillSwitchView {
    pub enabled: bool,
    /// Why it was switched, if anyone said.
    pub reason: Option<String>,
    /// Who switched it last (null: never switched).
    pub set_by: Option<SetBy>,
    /// ISO-8601 UTC time of the last change.
    pub since: Option<String>,
    /// For the automatic budget stop: the limit it was taken under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_usd: Option<f64>,
    /// For the automatic budget stop: the budget period it was taken in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_key: Option<String>,
}

/// The kill-switch as JSON (`since` in ISO time).
pub fn kill_switch_json(ks: &KillSwitch) -> KillSwitchView {
    KillSwitchView {
        enabled: ks.enabled,
        reason: ks.reason.clone(),
        set_by: ks.set_by,
        since: ks.since.map(iso),
        limit_usd: ks.limit_micros.map(micros_to_usd),
        period_key: ks.period.clone(),
    }
}

/// `GET /api/admin/budget/status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatusBody {
    pub budget: BudgetView,
    pub kill_switch: KillSwitchView,
    pub store: StoreView,
    /// ISO-8601 UTC time of the answer.
    pub timestamp: String,
}

/// The budget in force and this period's spend.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetView {
    /// `daily`, `weekly` or `monthly`.
    pub period: String,
    /// Key of the current period, e.g. `2025-10`.
    pub period_key: String,
    pub spent_usd: f64,
    /// Held by running jobs' reservations.
    pub reserved_usd: f64,
    /// 0: no limit.
    pub limit_usd: f64,
    pub percent_used: f64,
    pub warn_at_percent: f64,
    pub enforced: bool,
    /// Who wrote the budget: `operator`, `flags`, or `none` when the store has none.
    pub source: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Provider calls settled this period.
    pub jobs: u64,
    /// Cost beyond reservations (providers reporting more than the bound).
    pub overrun_usd: f64,
    /// Spend restored after the store lost its data.
    pub restored_usd: f64,
    /// Part of `spentUsd` settled at the bound: provider calls whose real cost is unknown (timed
    /// out after the request was sent, cut mid-reply, cancelled), counted at their reservation.
    pub settled_at_bound_usd: f64,
    /// How many calls were settled at the bound.
    pub settled_at_bound_calls: u64,
}

/// What this process knows of the store's life.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreView {
    /// Id of the store's data epoch (changes when the data is lost).
    pub epoch: Option<String>,
    pub epoch_created_at: Option<String>,
    /// The store lost its data while this process ran.
    pub data_lost_at: Option<String>,
    /// Spend started over (data lost and nothing restored).
    pub spend_reset: bool,
}

/// The budget, its spend and the kill-switch.
#[utoipa::path(
    get,
    path = "/api/admin/budget/status",
    tag = "admin",
    operation_id = "getBudgetStatus",
    responses(
        (status = 200, description = "Budget and kill-switch.", body = BudgetStatusBody),
        (status = 401, description = "`UNAUTHORIZED`: no `Authorization: Bearer <admin token>`.", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: wrong admin token.", body = ErrorBody),
    ),
    security(("adminToken" = [])),
)]
pub async fn status(State(state): State<AppState>) -> Result<Json<BudgetStatusBody>, ApiError> {
    let budget = state.store.budget_state().await?;
    let facts = state.store_watch.facts();
    let config = &budget.config;
    let spend = &budget.spend;
    let percent = if config.limit_micros > 0 {
        spend.spent_micros as f64 * 100.0 / config.limit_micros as f64
    } else {
        0.0
    };
    Ok(Json(BudgetStatusBody {
        budget: BudgetView {
            period: config.period.as_str().to_owned(),
            period_key: budget.period.clone(),
            spent_usd: micros_to_usd(spend.spent_micros),
            reserved_usd: micros_to_usd(spend.reserved_micros),
            limit_usd: micros_to_usd(config.limit_micros),
            percent_used: (percent * 100.0).round() / 100.0,
            warn_at_percent: config.warn_percent,
            enforced: config.enforce,
            source: if budget.stored {
                config.source.as_str()
            } else {
                "none"
            }
            .to_owned(),
            input_tokens: spend.input_tokens,
            output_tokens: spend.output_tokens,
            jobs: spend.jobs,
            overrun_usd: micros_to_usd(spend.overrun_micros),
            restored_usd: micros_to_usd(spend.restored_micros),
            settled_at_bound_usd: micros_to_usd(spend.bound_micros),
            settled_at_bound_calls: spend.bound_calls,
        },
        kill_switch: kill_switch_json(&budget.kill_switch),
        store: StoreView {
            epoch: budget.epoch.as_ref().map(|e| e.id.clone()),
            epoch_created_at: budget.epoch.as_ref().map(|e| iso(e.created_ms)),
            // The store lost its data while this process ran: spend started over unless the
            // operator restored it (`restoredUsd`).
            data_lost_at: facts.data_lost_at.map(iso),
            spend_reset: facts.data_lost_at.is_some() && spend.restored_micros == 0,
        },
        timestamp: iso(now_ms()),
    }))
}

/// The body of `POST /api/admin/budget/kill-switch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchRequest {
    /// `true` refuses new jobs; `false` accepts them again.
    enabled: bool,
    /// Why (shown in the status and to API clients).
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// The answer of a kill-switch change.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KillSwitchResponse {
    pub success: bool,
    pub kill_switch: KillSwitchView,
    pub message: String,
}

/// Switches the kill-switch (held by `admin`: never cleared automatically). With the admin
/// token the body is read as JSON whatever its content type, so the seed's `curl -d
/// '{"enabled": false}'` (sent as form data by curl) works as written; without a token (standalone
/// on loopback) it must say `application/json`, which a cross-site form cannot.
#[utoipa::path(
    post,
    path = "/api/admin/budget/kill-switch",
    tag = "admin",
    operation_id = "setKillSwitch",
    request_body(content = KillSwitchRequest, content_type = "application/json",
        description = "With the admin token any content type is read as JSON (the seed's `curl -d`); without a token (standalone on loopback) it must be `application/json`."),
    responses(
        (status = 200, description = "Switched.", body = KillSwitchResponse),
        (status = 400, description = "`INVALID_BODY`.", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: no `Authorization: Bearer <admin token>`.", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: wrong admin token.", body = ErrorBody),
        (status = 408, description = "`REQUEST_TIMEOUT`: the body did not arrive in time.", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`.", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: tokenless admin writes need `Content-Type: application/json`.", body = ErrorBody),
    ),
    security(("adminToken" = [])),
)]
pub async fn set_kill_switch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KillSwitchResponse>, ApiError> {
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
    let body = body.map_err(bytes_rejection)?;
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
    Ok(Json(KillSwitchResponse {
        success: true,
        kill_switch: kill_switch_json(&ks),
        message: if ks.enabled {
            "Kill-switch activated: new jobs are refused"
        } else {
            "Kill-switch deactivated: jobs are accepted"
        }
        .to_owned(),
    }))
}
