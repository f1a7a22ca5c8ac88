//! Reads a pipeline's store (queue, workers, budget state), restores spend the store lost, and
//! applies the budget decision: the budget in force and the manual kill-switch.

use std::sync::Arc;

use flashcard_core::budget::format_usd;
use flashcard_store::{KillSwitch, QueueCounts, StoreError, WorkerInfo};

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
    /// The store as this poll found it, before the operator wrote anything.
    pub found: StoreData,
}

/// What a pipeline's store held when a poll began.
#[derive(Debug, Clone)]
pub struct StoreData {
    pub jobs: QueueCounts,
    pub period: String,
    pub spent_micros: u64,
    pub reserved_micros: u64,
    pub kill_switch: KillSwitch,
}

impl StoreData {
    /// Whether anything here was left by an earlier life of the pipeline: jobs, spend, or a
    /// kill-switch this spec does not ask for (the operator's own writes of a first reconcile,
    /// budget, epoch and the spec's manual switch, do not count, so a retried first reconcile
    /// does not report them).
    pub fn left_behind(&self, p: &FlashcardPipeline) -> bool {
        let j = &self.jobs;
        let jobs = j.waiting + j.active + j.delayed + j.completed + j.failed;
        let own_switch = Holder::of(&self.kill_switch) == Some(Holder::Resource)
            && p.spec.budget.kill_switch.manual;
        jobs > 0
            || self.spent_micros > 0
            || self.reserved_micros > 0
            || (self.kill_switch.enabled && !own_switch)
    }

    /// The note of the `StoreDataFound` Event.
    pub fn note(&self) -> String {
        let j = &self.jobs;
        let switch = match Holder::of(&self.kill_switch) {
            Some(h) => format!(
                "kill-switch on (set by {}): {}",
                h.as_str(),
                self.kill_switch
                    .reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
            None => "kill-switch off".to_owned(),
        };
        format!(
            "continuing with the data a pipeline of this name left in the store \
             (deletionPolicy Retain): {} waiting, {} active, {} delayed, {} finished jobs; {} \
             spent in {} ({} reserved); {switch}",
            j.waiting,
            j.active,
            j.delayed,
            j.completed + j.failed,
            format_usd(self.spent_micros),
            self.period,
            format_usd(self.reserved_micros),
        )
    }
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
    let found = StoreData {
        jobs: counts,
        period: state.period.clone(),
        spent_micros: state.spend.spent_micros,
        reserved_micros: state.spend.reserved_micros,
        kill_switch: state.kill_switch.clone(),
    };
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
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::minimal;
    use flashcard_store::SetBy;

    fn empty() -> StoreData {
        StoreData {
            jobs: QueueCounts::default(),
            period: "2026-12".into(),
            spent_micros: 0,
            reserved_micros: 0,
            kill_switch: KillSwitch::off(),
        }
    }

    /// A first reconcile that failed after writing the budget, the epoch and the spec's manual
    /// switch must not, when retried, report those as an earlier pipeline's data.
    #[test]
    fn only_what_an_earlier_pipeline_left_counts() {
        let mut p = minimal();
        assert!(!empty().left_behind(&p));
        let jobs = StoreData {
            jobs: QueueCounts {
                failed: 1,
                ..QueueCounts::default()
            },
            ..empty()
        };
        assert!(jobs.left_behind(&p));
        let spent = StoreData {
            spent_micros: 1,
            ..empty()
        };
        assert!(spent.left_behind(&p));
        let manual = StoreData {
            kill_switch: KillSwitch::manual(SetBy::Resource, Some("maintenance".into()), 1),
            ..empty()
        };
        assert!(manual.left_behind(&p), "this spec does not ask for it");
        p.spec.budget.kill_switch.manual = true;
        assert!(!manual.left_behind(&p), "the operator's own write");
        let admin = StoreData {
            kill_switch: KillSwitch::manual(SetBy::Admin, Some("incident".into()), 1),
            ..empty()
        };
        assert!(admin.left_behind(&p));
    }
}
