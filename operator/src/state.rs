//! What the reconciler reads from and writes to a pipeline's store, behind a small trait so the
//! reconciler can be tested with a fake. The real implementation is the service crate's store
//! (the keyspace lives there only).

use std::sync::Arc;

use async_trait::async_trait;
use flashcard_service::store::{
    KillSwitch, QueueCounts, SetBy, Spend, Store, StoreResult, WorkerInfo,
};

use crate::crd::FlashcardPipeline;

/// The slice of [`Store`] the operator uses.
#[async_trait]
pub trait PipelineState: Send + Sync {
    async fn counts(&self) -> StoreResult<QueueCounts>;
    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>>;
    async fn kill_switch(&self) -> StoreResult<KillSwitch>;
    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()>;
    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool>;
    async fn spend(&self, period: &str) -> StoreResult<Spend>;
}

#[async_trait]
impl<T: Store> PipelineState for T {
    async fn counts(&self) -> StoreResult<QueueCounts> {
        Store::counts(self).await
    }
    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        Store::workers(self).await
    }
    async fn kill_switch(&self) -> StoreResult<KillSwitch> {
        Store::kill_switch(self).await
    }
    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()> {
        Store::set_kill_switch(self, state).await
    }
    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool> {
        Store::clear_kill_switch_if(self, set_by).await
    }
    async fn spend(&self, period: &str) -> StoreResult<Spend> {
        Store::spend(self, period).await
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
}
