//! What the reconciler reads from and writes to a pipeline's store, behind a small trait so the
//! reconciler can be tested with a fake. The real implementation is the service crate's store
//! (the keyspace lives there only).

use std::sync::Arc;

use async_trait::async_trait;
use flashcard_store::{
    BudgetConfig, BudgetState, Epoch, KillSwitch, QueueCounts, SetBy, Spend, Store, StoreResult,
    WorkerInfo,
};
use futures::stream::BoxStream;

use crate::acl::Credential;
use crate::crd::FlashcardPipeline;

/// The slice of [`Store`] the operator uses.
#[async_trait]
pub trait PipelineState: Send + Sync {
    async fn counts(&self) -> StoreResult<QueueCounts>;
    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>>;
    async fn budget_state(&self) -> StoreResult<BudgetState>;
    async fn set_budget(&self, budget: &BudgetConfig) -> StoreResult<()>;
    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()>;
    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool>;
    async fn ensure_epoch(&self) -> StoreResult<(Epoch, bool)>;
    async fn restore_spend(&self, period: &str, spent_micros: u64) -> StoreResult<Spend>;
    /// "Work arrived" signals (see [`Store::work_signals`]).
    async fn work_signals(&self) -> StoreResult<BoxStream<'static, u64>>;
    /// Deletes every key of the pipeline (see [`Store::purge`]).
    async fn purge(&self) -> StoreResult<u64>;
}

#[async_trait]
impl<T: Store> PipelineState for T {
    async fn counts(&self) -> StoreResult<QueueCounts> {
        Store::counts(self).await
    }
    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        Store::workers(self).await
    }
    async fn budget_state(&self) -> StoreResult<BudgetState> {
        Store::budget_state(self).await
    }
    async fn set_budget(&self, budget: &BudgetConfig) -> StoreResult<()> {
        Store::set_budget(self, budget).await
    }
    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()> {
        Store::set_kill_switch(self, state).await
    }
    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool> {
        Store::clear_kill_switch_if(self, set_by).await
    }
    async fn ensure_epoch(&self) -> StoreResult<(Epoch, bool)> {
        Store::ensure_epoch(self).await
    }
    async fn restore_spend(&self, period: &str, spent_micros: u64) -> StoreResult<Spend> {
        Store::restore_spend(self, period, spent_micros).await
    }
    async fn work_signals(&self) -> StoreResult<BoxStream<'static, u64>> {
        Store::work_signals(self).await
    }
    async fn purge(&self) -> StoreResult<u64> {
        Store::purge(self).await
    }
}

/// Opens (or reuses) the store of a pipeline.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The store of `pipeline`; an error means "unreachable" (the reconciler keeps going).
    async fn connect(&self, pipeline: &FlashcardPipeline)
    -> Result<Arc<dyn PipelineState>, String>;
    /// Forgets the connection of a deleted pipeline (`namespace/name`).
    async fn forget(&self, _key: &str) {}
    /// The store [`Connector::connect`] returned for `pipeline` failed: the next connect reads
    /// the pipeline's Secret again (a rotated password) instead of trusting its cached URL.
    async fn report_failure(&self, _pipeline: &FlashcardPipeline) {}
    /// The Secrets `pipeline` references that do not consent to it ([`crate::consent`]), one
    /// message each; empty when all do. `Err`: cannot tell now (the API server did not answer).
    async fn refused_secrets(&self, _pipeline: &FlashcardPipeline) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    /// For a pipeline on the operator's Redis (`spec.redis.urlSecretRef` omitted): what its
    /// pods get ([`crate::acl`]). `Ok(None)` for a pipeline with its own Redis URL; `Err` when
    /// the operator has no admin URL to make the pipeline's user with.
    fn credential(&self, pipeline: &FlashcardPipeline) -> Result<Option<Credential>, String> {
        if pipeline.spec.redis.managed() {
            Err(NO_ADMIN_URL.to_owned())
        } else {
            Ok(None)
        }
    }
    /// Deletes a deleted pipeline's Redis user, if the operator made one.
    async fn retire(&self, _pipeline: &FlashcardPipeline) -> Result<(), String> {
        Ok(())
    }
}

/// Why a pipeline without `spec.redis.urlSecretRef` cannot run.
pub const NO_ADMIN_URL: &str = "spec.redis.urlSecretRef is omitted, which asks for the \
     operator's Redis, but the operator was started without one (--redis-admin-url, chart value \
     operator.redisAdmin.secretRef)";
