//! Reads a pipeline's store (queue, workers, spend, kill-switch) and applies the budget decision.

use std::sync::Arc;

use flashcard_service::budget::BudgetPeriod;
use flashcard_service::store::{KillSwitch, StoreError, WorkerInfo};

use crate::budget::{self, Action, Decision};
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
    /// The kill-switch before this poll's action.
    pub kill_switch_before: KillSwitch,
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
    let period = BudgetPeriod::from(p.spec.budget.period).key(now);
    let spend = store.spend(&period).await?;
    let before = store.kill_switch().await?;
    let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
    let previous_limit = p.status.as_ref().map(|s| s.budget.limit_usd);
    let decision = budget::decide(
        &p.spec.budget,
        spend.spent_micros,
        &before,
        &period,
        now_ms,
        previous_limit,
    );
    match &decision.action {
        Action::Keep => {}
        Action::Enable(ks) => store.set_kill_switch(ks).await?,
        Action::Clear(by) => {
            store.clear_kill_switch_if(*by).await?;
        }
    }
    Ok(Observed {
        queue: QueueDepth {
            waiting: counts.waiting,
            active: counts.active,
            delayed: counts.delayed,
        },
        workers,
        period,
        spent_micros: spend.spent_micros,
        kill_switch_before: before,
        budget: decision,
    })
}
