//! Budget gate and admin endpoints: `GET /api/admin/budget/status`,
//! `POST /api/admin/budget/kill-switch`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::jobs::BUDGET_LIMIT_MESSAGE;
use crate::budget::{BudgetPeriod, micros_to_usd};
use crate::job::now_ms;
use crate::sse::render::iso;
use crate::store::{KillSwitch, SetBy, Store};

/// The budget in force in this process (from configuration; the operator sets it from the
/// custom resource).
#[derive(Debug, Clone, Copy)]
pub struct BudgetGate {
    pub limit_micros: u64,
    pub period: BudgetPeriod,
    pub warn_ratio: f64,
}

impl BudgetGate {
    fn refused() -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "BUDGET_LIMIT_EXCEEDED",
            BUDGET_LIMIT_MESSAGE,
        )
    }

    /// Refuses new jobs while the kill-switch is on or the period's spend reached the limit; in
    /// the latter case it switches the kill-switch on itself, before the operator reacts.
    pub async fn admit(&self, store: &dyn Store) -> Result<(), ApiError> {
        let kill_switch = store.kill_switch().await?;
        if kill_switch.enabled {
            if !self.budget_switch_expired(&kill_switch)
                || !store.clear_kill_switch_if(SetBy::Budget).await?
            {
                return Err(Self::refused());
            }
            tracing::info!("new budget period: the budget kill-switch is off again");
        }
        if self.limit_micros > 0 {
            let period = self.period.current_key();
            let spend = store.spend(&period).await?;
            if spend.spent_micros >= self.limit_micros {
                let state =
                    KillSwitch::budget_exhausted(spend.spent_micros, self.limit_micros, &period);
                store.set_kill_switch(&state).await?;
                return Err(Self::refused());
            }
        }
        Ok(())
    }

    /// A kill-switch the service set for an earlier budget period ends with that period.
    fn budget_switch_expired(&self, kill_switch: &KillSwitch) -> bool {
        let Some(since) = kill_switch
            .since
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms as i64).ok())
        else {
            return false;
        };
        kill_switch.set_by == Some(SetBy::Budget)
            && self.period.key(since) != self.period.current_key()
    }
}

/// The kill-switch as JSON (`since` in ISO time).
pub fn kill_switch_json(ks: &KillSwitch) -> Value {
    json!({
        "enabled": ks.enabled,
        "reason": ks.reason,
        "setBy": ks.set_by,
        "since": ks.since.map(iso),
    })
}

pub async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let gate = state.budget;
    let period = gate.period.current_key();
    let spend = state.store.spend(&period).await?;
    let kill_switch = state.store.kill_switch().await?;
    let percent = if gate.limit_micros > 0 {
        spend.spent_micros as f64 * 100.0 / gate.limit_micros as f64
    } else {
        0.0
    };
    Ok(Json(json!({
        "budget": {
            "period": gate.period.as_str(),
            "periodKey": period,
            "spentUsd": micros_to_usd(spend.spent_micros),
            "reservedUsd": micros_to_usd(spend.reserved_micros),
            "limitUsd": micros_to_usd(gate.limit_micros),
            "percentUsed": (percent * 100.0).round() / 100.0,
            "warnAtPercent": gate.warn_ratio * 100.0,
            "inputTokens": spend.input_tokens,
            "outputTokens": spend.output_tokens,
            "jobs": spend.jobs,
        },
        "killSwitch": kill_switch_json(&kill_switch),
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

/// Switches the kill-switch. The body is read as JSON whatever its content type, so the seed's
/// `curl -d '{"enabled": false}'` (sent as form data by curl) works as written.
pub async fn set_kill_switch(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
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
    let ks = KillSwitch {
        enabled: request.enabled,
        reason: request.reason.filter(|r| !r.trim().is_empty()),
        set_by: Some(SetBy::Admin),
        since: Some(now_ms()),
    };
    state.store.set_kill_switch(&ks).await?;
    tracing::warn!(enabled = ks.enabled, reason = ?ks.reason, "kill-switch changed by admin");
    Ok(Json(json!({
        "success": true,
        "killSwitch": kill_switch_json(&ks),
        "message": if ks.enabled { "Kill-switch activated: new jobs are refused" } else { "Kill-switch deactivated: jobs are accepted" },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn gate() -> BudgetGate {
        BudgetGate {
            limit_micros: 1_000_000,
            period: BudgetPeriod::Daily,
            warn_ratio: 0.8,
        }
    }

    async fn switched(store: &MemoryStore, set_by: SetBy, since: u64) {
        let ks = KillSwitch {
            enabled: true,
            reason: Some("x".into()),
            set_by: Some(set_by),
            since: Some(since),
        };
        store.set_kill_switch(&ks).await.unwrap();
    }

    const TWO_DAYS_MS: u64 = 2 * 24 * 3600 * 1000;

    #[tokio::test]
    async fn budget_switch_of_an_earlier_period_is_cleared() {
        let store = MemoryStore::new();
        switched(&store, SetBy::Budget, now_ms() - TWO_DAYS_MS).await;
        assert!(gate().admit(&store).await.is_ok());
        assert!(!store.kill_switch().await.unwrap().enabled);
    }

    #[tokio::test]
    async fn budget_switch_of_this_period_refuses() {
        let store = MemoryStore::new();
        switched(&store, SetBy::Budget, now_ms()).await;
        let refused = gate().admit(&store).await.unwrap_err();
        assert_eq!(refused.code, "BUDGET_LIMIT_EXCEEDED");
    }

    #[tokio::test]
    async fn a_person_s_switch_never_expires() {
        for set_by in [SetBy::Admin, SetBy::Resource, SetBy::Operator] {
            let store = MemoryStore::new();
            switched(&store, set_by, now_ms() - TWO_DAYS_MS).await;
            assert!(gate().admit(&store).await.is_err(), "{set_by:?}");
            assert!(store.kill_switch().await.unwrap().enabled);
        }
    }

    #[tokio::test]
    async fn spend_at_the_limit_switches_on() {
        let store = MemoryStore::new();
        let period = BudgetPeriod::Daily.current_key();
        store.reserve(&period, 1_000_000, 0).await.unwrap();
        store
            .settle(&period, 1_000_000, 1_000_000, Default::default())
            .await
            .unwrap();
        assert!(gate().admit(&store).await.is_err());
        let ks = store.kill_switch().await.unwrap();
        assert_eq!((ks.enabled, ks.set_by), (true, Some(SetBy::Budget)));
        assert!(ks.reason.unwrap().contains(&period));
    }
}
