//! The store contract: every piece of state that api, worker and operator share.
//!
//! Two backends implement [`Store`]: [`memory::MemoryStore`] (one process, `standalone` mode and
//! fast tests) and [`redis::RedisStore`] (shared by api, worker and operator pods). The
//! conformance suite in `tests/it/conformance.rs` runs unchanged against both (and Redis Cluster
//! and Sentinel). It depends on `flashcard-core` only: the service and the operator both use it.
//!
//! The job lifecycle is built for few round trips: a submission is one call ([`Store::submit`]:
//! idempotency, kill-switch and budget, rate limit, enqueue); a worker claims several jobs at
//! once and reserves their budget in the same call ([`Store::claim`]), and finishing a job also
//! claims the next ones ([`Store::finish`]). A reservation belongs to its job: it is taken when
//! the job becomes active and released or settled by whatever moves the job out of `active`
//! (finish, release, stall recovery), so no crash can leak it.

pub mod memory;
pub mod redis;
pub mod watch;

mod budget;
mod fair;
mod rendered;
mod types;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use flashcard_core::job::JobRecord;

pub use budget::{
    BudgetConfig, BudgetSource, BudgetState, Epoch, budget_stop_lapsed, budget_stop_reason,
    period_keys,
};
pub use types::*;

/// Which jobs a feed reader wants the events of (see [`Store::event_feed`]).
pub type FeedInterest = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Store failures. Callers treat them as "shared state unreachable", never as bad input.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis: {0}")]
    Url(#[from] redis::TopologyError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The minute buckets (minutes since the epoch) that cover the last `window` at `now_ms`.
pub(crate) fn outcome_minutes(now_ms: u64, window: Duration) -> std::ops::RangeInclusive<u64> {
    let minute = now_ms / 60_000;
    let minutes = window.as_secs().div_ceil(60).max(1);
    (minute + 1).saturating_sub(minutes)..=minute
}

/// The fixed rate-limit window containing `now_ms`: its index and its length in ms.
pub(crate) fn rate_window(now_ms: u64, window: Duration) -> (u64, u64) {
    let window_ms = window.as_millis().max(1) as u64;
    (now_ms / window_ms, window_ms)
}

/// All shared state. Every method that changes more than one key is atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the store answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Now on the store's clock (ms since the epoch): the clock every stored timestamp, period
    /// and liveness deadline is read from, so compare those with this, not with the pod's clock.
    fn now_ms(&self) -> u64 {
        flashcard_core::job::now_ms()
    }

    // --- submission and queue ---
    /// Admits and enqueues one job, in this order: an idempotent replay returns the original
    /// job (before any other check); a kill-switch that is on refuses (a lapsed automatic
    /// budget stop is cleared first, and spend at the limit switches the stop on); the rate
    /// limit counts the submission; then the job is enqueued.
    async fn submit(&self, submission: Submission) -> StoreResult<Admission>;
    async fn job(&self, id: &str) -> StoreResult<Option<JobRecord>>;
    /// Cancels a job that has not finished: a waiting or delayed job never runs; an active
    /// one loses its lease (its reservation is released, and its worker aborts the call at the
    /// next renewal and counts what the call may have cost). The job ends `cancelled` with a
    /// terminal `cancelled` event. A repeat answers [`Cancellation::AlreadyCancelled`].
    async fn cancel(&self, id: &str, by: Canceller<'_>) -> StoreResult<Cancellation>;
    /// A job's state and newest event number (cheap: SSE followers re-check it each heartbeat).
    async fn job_head(&self, id: &str) -> StoreResult<Option<JobHead>>;
    /// Promotes due delayed jobs, then takes up to `request.max_jobs` waiting jobs whose budget
    /// reservation fits, each with a lease, and appends their `active` (and `started`
    /// progress) events. See [`Claimed`] for what a budget that cannot cover a job does.
    async fn claim(&self, request: &ClaimRequest<'_>) -> StoreResult<Claimed>;
    /// Extends leases; one answer per lease, false where it was lost.
    async fn renew(&self, leases: &[Lease], duration: Duration) -> StoreResult<Vec<bool>>;
    /// Ends the attempt held by `lease` with `outcome`, settles `cost` against its reservation,
    /// and then claims the next jobs with `next` (like BullMQ's moveToFinished). When the lease
    /// was lost the outcome is not recorded, but a cost is still counted (spend is never
    /// hidden).
    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome<'_>,
        cost: Cost,
        next: Option<&ClaimRequest<'_>>,
    ) -> StoreResult<Finished>;
    /// Appends a `progress` event while `lease` is held; false if it was lost.
    async fn progress(
        &self,
        lease: &Lease,
        stage: &str,
        percent: u8,
        message: &str,
    ) -> StoreResult<bool>;
    /// Requeues active jobs whose lease expired (releasing their reservations); fails those
    /// that stalled more than `max_stalls` times.
    async fn recover_stalled(&self, max_stalls: u32) -> StoreResult<StallReport>;
    async fn counts(&self) -> StoreResult<QueueCounts>;
    /// Returns when work may be available, or after `timeout`.
    async fn wait_for_work(&self, timeout: Duration) -> StoreResult<()>;
    /// "Work arrived" signals, from now on: each item counts the jobs submitted to an empty
    /// waiting list since the previous item (a submission to a queue that already waits adds
    /// none, so a busy pipeline sends nothing). For the operator, which scales an idle
    /// pipeline's workers at once instead of at its next poll. Unlike
    /// [`Store::wait_for_work`] it takes nothing away from the workers; any number of followers
    /// see every signal. The stream follows through connection losses (a signal written while
    /// it reconnects is read afterwards).
    async fn work_signals(&self) -> StoreResult<BoxStream<'static, u64>>;
    /// Deletes finished jobs beyond the retention.
    async fn trim_finished(&self, retention: Retention) -> StoreResult<u64>;

    // --- events ---
    /// The job's events with `seq > after`, in order.
    async fn events_after(&self, job_id: &str, after: u64) -> StoreResult<Vec<StoredEvent>>;
    /// A live feed of the pipeline's job events from now on, for the jobs `interest` says
    /// someone follows (asked per event, as it is read), with a sign of life at least every few
    /// seconds when there are none. One per api process. The stream itself carries only job
    /// ids and numbers; the text of an event is read from its job's history only when wanted,
    /// so an api process pays nothing for jobs nobody follows there.
    async fn event_feed(&self, interest: FeedInterest)
    -> StoreResult<BoxStream<'static, FeedItem>>;

    // --- workers ---
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> StoreResult<()>;
    async fn remove_worker(&self, worker_id: &str) -> StoreResult<()>;
    /// Workers whose last heartbeat is younger than their ttl.
    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>>;

    // --- budget and kill-switch ---
    /// The budget in force, the kill-switch, the current period's spend and the store epoch,
    /// in one read. The automatic budget stop is reviewed on the way: cleared if it lapsed
    /// (period over, limit raised above the spend or removed), switched on if spend is at an
    /// enforced limit, so what is read is what is enforced.
    async fn budget_state(&self) -> StoreResult<BudgetState>;
    /// Writes the budget in force. A [`BudgetSource::Flags`] budget never replaces one the
    /// operator wrote. Re-evaluates the automatic budget stop under the new limit.
    async fn set_budget(&self, budget: &BudgetConfig) -> StoreResult<()>;
    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()>;
    /// Clears the kill-switch only if it was set by `set_by`; returns whether it was cleared.
    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool>;
    async fn spend(&self, period: &str) -> StoreResult<Spend>;
    /// The store's epoch, created now if it has none (`created` tells which).
    async fn ensure_epoch(&self) -> StoreResult<(Epoch, bool)>;
    /// After the store lost its data: raises the period's spend to at least `spent_micros`
    /// (the last value recorded elsewhere) and returns the spend after.
    async fn restore_spend(&self, period: &str, spent_micros: u64) -> StoreResult<Spend>;
    /// Completed and failed jobs (final outcomes) over the last `window`.
    async fn outcomes(&self, window: Duration) -> StoreResult<OutcomeCounts>;
    /// Completed and failed jobs per minute over the last `window` (the minutes of
    /// [`Store::outcomes`]), oldest first, a minute without outcomes as zeros. Read-only.
    async fn outcomes_by_minute(&self, window: Duration) -> StoreResult<Vec<MinuteOutcomes>>;
    /// The newest `limit` finished jobs (completed and failed together, newest first) with
    /// their timestamps; read-only and bounded, for the operations console's durations.
    async fn recent_finished(&self, limit: usize) -> StoreResult<Vec<FinishedJob>>;

    // --- lifecycle ---
    /// Deletes every piece of the pipeline's state (queue, jobs, events, spend, budget,
    /// kill-switch, workers, epoch, counters) and nothing of any other pipeline; returns how many
    /// keys (Redis) or records (memory) it removed. For a deleted pipeline whose resource says
    /// `deletionPolicy: Delete`; nothing of the pipeline should be running, or what it writes
    /// afterwards stays.
    async fn purge(&self) -> StoreResult<u64>;
}
