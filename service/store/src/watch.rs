//! Keeps an eye on the store's budget and epoch from every process (api, worker, standalone).
//!
//! Once a second it reads the budget state: it publishes this process's budget flags when the
//! store has no budget (first start, or the store lost its data) unless the operator manages
//! the budget, creates the store epoch when there is none and the operator does not manage it,
//! and notices a lost store (the epoch it saw is gone or different): spend started over from
//! zero, which it logs and reports in `/api/admin/budget/status`. With the operator, the
//! operator restores the spend from the pipeline's status and then writes the epoch itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{BudgetConfig, BudgetSource, BudgetState, Epoch, Store};
use flashcard_core::job::now_ms;

/// How often the store is looked at.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What the watch found out, for status endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreFacts {
    /// The epoch last seen.
    pub epoch: Option<Epoch>,
    /// When this process saw the store lose its data (ms since epoch).
    pub data_lost_at: Option<u64>,
    /// The budget the store last reported was written by the operator.
    pub operator_managed: bool,
}

/// The watch of one process.
pub struct StoreWatch {
    store: Arc<dyn Store>,
    /// This process's budget flags, published when the store has no budget.
    flags: Option<BudgetConfig>,
    facts: Mutex<StoreFacts>,
}

impl StoreWatch {
    pub fn new(store: Arc<dyn Store>, flags: Option<BudgetConfig>) -> Arc<Self> {
        Arc::new(Self {
            store,
            flags,
            facts: Mutex::new(StoreFacts::default()),
        })
    }

    pub fn facts(&self) -> StoreFacts {
        self.facts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publishes the flags and the epoch once, at start-up (so the first request already sees
    /// the budget), then watches until `stop` fires.
    pub async fn start(self: &Arc<Self>, stop: CancellationToken) {
        if let Err(e) = self.check().await {
            tracing::warn!(error = %e, "store check failed; retrying in the background");
        }
        let watch = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                }
                if let Err(e) = watch.check().await {
                    tracing::debug!(error = %e, "store check failed");
                }
            }
        });
    }

    /// One look at the store.
    pub async fn check(&self) -> crate::StoreResult<BudgetState> {
        let mut state = self.store.budget_state().await?;
        if !state.stored
            && let Some(flags) = &self.flags
        {
            self.store.set_budget(flags).await?;
            tracing::info!(
                limit_micros = flags.limit_micros,
                period = flags.period.as_str(),
                "budget from the command line written to the store"
            );
            state = self.store.budget_state().await?;
        }
        let operator_managed = state.stored && state.config.source == BudgetSource::Operator;
        if state.epoch.is_none() && !operator_managed {
            let (epoch, created) = self.store.ensure_epoch().await?;
            if created {
                tracing::info!(epoch = %epoch.id, "store epoch created");
            }
            state.epoch = Some(epoch);
        }
        let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        facts.operator_managed = operator_managed;
        if let Some(seen) = &facts.epoch
            && state.epoch.as_ref() != Some(seen)
        {
            facts.data_lost_at = Some(now_ms());
            if operator_managed {
                tracing::warn!(
                    "the store lost its data: the operator restores the period's spend from the pipeline's status"
                );
            } else {
                tracing::warn!(
                    period = %state.period,
                    "the store lost its data: the period's spend was reset to zero (run the operator to restore it from the pipeline's status)"
                );
            }
        }
        facts.epoch = state.epoch.clone();
        Ok(state)
    }
}
