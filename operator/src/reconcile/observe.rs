//! Reads a pipeline's store (queue, workers, budget state), restores spend the store lost, and
//! applies the budget decision: the budget in force and the manual kill-switch.

use std::sync::Arc;

use flashcard_service::store::{StoreError, WorkerInfo};

use crate::budget::{self, Action, Decision, Holder, Restore};
use crate::crd::FlashcardPipeline;
use crate::scaling::QueueDepth;
use crate::state::PipelineState;

/// What one poll saw in the store.
#[derive(Debug, Clone)]
pub struct Observed {
    pub queue: QueueDepth,
    pub workers: Vec<WorkerInfo>,
    pub period: String,
    pub spent_micros: u64,
    pub reserved_micros: u64,
    /// The store's epoch after this poll.
    pub epoch: Option<String>,
    /// Spend brought back after the store lost its data (micro-dollars), in this poll.
    pub restored_micros: Option<u64>,
    /// Who held the kill-switch when this poll started.
    pub holder_before: Option<Holder>,
    pub budget: Decision,
}

/// Reads the store and enforces the budget. `Err` means the store is unreachable.
pub async fn observe(
    p: &FlashcardPipeline,
    store: &Arc<dyn PipelineState>,
    now: jiff::Timestamp,
) -> Result<Observed, StoreError> {
    let counts = store.counts().await?;
    let workers = store.workers().await?;
    let mut state = store.budget_state().await?;
    let holder_before = Holder::of(&state.kill_switch);
    let recorded = p.status.as_ref().map(|s| &s.budget);
    let mut restored_micros = None;
    match budget::restore(recorded, &state) {
        Restore::Nothing => {}
        Restore::Adopt => {
            store.ensure_epoch().await?;
            state = store.budget_state().await?;
        }
        Restore::Restore {
            period,
            spent_micros,
        } => {
            let before = state.spend.spent_micros;
            let spend = store.restore_spend(&period, spent_micros).await?;
            restored_micros = Some(spend.spent_micros.saturating_sub(before));
            store.ensure_epoch().await?;
            state = store.budget_state().await?;
        }
    }
    let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
    let decision = budget::decide(&p.spec.budget, &state, now_ms);
    if let Some(write) = &decision.write {
        store.set_budget(write).await?;
        // Writing the budget may have ended (or started) the automatic stop.
        state = store.budget_state().await?;
    }
    match &decision.action {
        Action::Keep => {}
        Action::Enable(ks) => store.set_kill_switch(ks).await?,
        Action::Clear(by) => {
            store.clear_kill_switch_if(*by).await?;
        }
    }
    let decision = Decision {
        after: match &decision.action {
            Action::Keep => state.kill_switch.clone(),
            _ => decision.after.clone(),
        },
        ..decision
    };
    Ok(Observed {
        queue: QueueDepth {
            waiting: counts.waiting,
            active: counts.active,
            delayed: counts.delayed,
        },
        workers,
        period: state.period.clone(),
        spent_micros: state.spend.spent_micros,
        reserved_micros: state.spend.reserved_micros,
        epoch: state.epoch.as_ref().map(|e| e.id.clone()),
        restored_micros,
        holder_before,
        budget: decision,
    })
}
