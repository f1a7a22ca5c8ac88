//! The store contract: every piece of state that api, worker and operator share.
//!
//! Two backends implement [`Store`]: [`memory::MemoryStore`] (one process, `standalone` mode and
//! fast tests) and [`redis::RedisStore`] (shared by api, worker and operator pods). The
//! conformance suite in `tests/store_conformance.rs` runs unchanged against both.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::job::{JobRecord, JobRequest};

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

/// Options of one enqueue.
#[derive(Debug, Clone)]
pub struct EnqueueOptions {
    /// Returns the existing job when the same key was used within the retention time.
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
}

/// The outcome of an enqueue.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub job: JobRecord,
    /// False when an earlier job with the same idempotency key was returned.
    pub created: bool,
}

/// Identifies one claim of a job: only the holder of the lease may finish or renew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub token: String,
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: JobRecord,
    pub lease: Lease,
}

/// What happened to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Moved to `delayed`; runs again after the backoff.
    Retrying,
    /// Attempts used up (or the error was permanent): the job is `failed`.
    Failed,
    /// The lease was lost (the job was recovered after a stall); nothing was recorded.
    LeaseLost,
}

/// How to end a failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: String,
    /// `Some(delay)` to retry after `delay` if attempts remain; `None` for a permanent failure.
    pub retry_after: Option<Duration>,
    pub duration_ms: u64,
}

/// Jobs moved by a stall check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StallReport {
    /// Back to `waiting`.
    pub requeued: u32,
    /// Failed for stalling too often.
    pub failed: u32,
}

/// Jobs per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub waiting: u64,
    pub active: u64,
    pub delayed: u64,
    pub completed: u64,
    pub failed: u64,
}

/// A job event as stored: `{"seq":N,"type":"active","at":<ms>, ...}`. The api renders it into the
/// seed's SSE payload.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub job_id: String,
    pub seq: u64,
    /// The stored JSON object, including `seq`, `type` and `at`.
    pub body: serde_json::Value,
}

impl StoredEvent {
    pub fn kind(&self) -> &str {
        self.body.get("type").and_then(|t| t.as_str()).unwrap_or("")
    }
}

/// A worker's self-description, refreshed by its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    pub id: String,
    /// Kubernetes pod name (`POD_NAME`), used by the operator for pod-deletion-cost.
    pub pod: String,
    pub active: u32,
    pub concurrency: u32,
    /// Circuit breaker state: `closed`, `open` or `half_open`.
    pub breaker: String,
    pub draining: bool,
    /// Last heartbeat, ms since epoch (filled in by the store on read).
    #[serde(default)]
    pub last_seen: u64,
}

/// Who switched the kill-switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetBy {
    /// A person, through the admin API.
    Admin,
    /// The operator, because the pipeline's budget was reached.
    Operator,
    /// The service itself, because the period's budget cannot cover another job.
    Budget,
    /// A person, through the pipeline's `spec.budget.killSwitch` (applied by the operator).
    Resource,
}

impl SetBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SetBy::Admin => "admin",
            SetBy::Operator => "operator",
            SetBy::Budget => "budget",
            SetBy::Resource => "resource",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => SetBy::Admin,
            "operator" => SetBy::Operator,
            "budget" => SetBy::Budget,
            "resource" => SetBy::Resource,
            _ => return None,
        })
    }
}

/// The budget kill-switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillSwitch {
    pub enabled: bool,
    pub reason: Option<String>,
    pub set_by: Option<SetBy>,
    /// ms since epoch of the last change.
    pub since: Option<u64>,
}

impl KillSwitch {
    pub fn off() -> Self {
        Self {
            enabled: false,
            reason: None,
            set_by: None,
            since: None,
        }
    }

    /// The switch the service turns on itself when a period's budget is spent.
    pub fn budget_exhausted(spent_micros: u64, limit_micros: u64, period: &str) -> Self {
        use crate::budget::micros_to_usd;
        Self {
            enabled: true,
            reason: Some(format!(
                "Budget limit reached: ${:.2} of ${:.2} spent in period {period}",
                micros_to_usd(spent_micros),
                micros_to_usd(limit_micros)
            )),
            set_by: Some(SetBy::Budget),
            since: Some(crate::job::now_ms()),
        }
    }
}

/// Spend of one budget period, in micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spend {
    pub spent_micros: u64,
    /// Reserved by calls in flight and not yet settled.
    pub reserved_micros: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub jobs: u64,
}

/// Result of a budget reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Granted,
    /// `spent + reserved + amount` would pass the limit.
    Refused,
}

/// Result of a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed { remaining: u64 },
    Limited { retry_after: Duration },
}

/// Finished-job counts over a sliding window (for the failure rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub completed: u64,
    pub failed: u64,
}

/// How long finished jobs are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_count: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_count: 10_000,
        }
    }
}

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

    // --- queue ---
    async fn enqueue(&self, request: JobRequest, options: EnqueueOptions) -> StoreResult<Enqueued>;
    async fn job(&self, id: &str) -> StoreResult<Option<JobRecord>>;
    /// Promotes due delayed jobs, then takes the oldest waiting job, if any, with a lease.
    /// Appends the `active` event.
    async fn claim(&self, worker_id: &str, lease: Duration) -> StoreResult<Option<Claim>>;
    /// Extends a lease; false if it was lost.
    async fn renew(&self, lease: &Lease, duration: Duration) -> StoreResult<bool>;
    /// Records the result once and appends `event` (a JSON object without `seq`); false if the
    /// lease was lost, in which case nothing is recorded.
    async fn complete(
        &self,
        lease: &Lease,
        result: &crate::job::JobResult,
        event: &serde_json::Value,
    ) -> StoreResult<bool>;
    /// Appends a `progress` event (a JSON object without `seq`) while `lease` is held; false if
    /// it was lost.
    async fn progress(&self, lease: &Lease, event: &serde_json::Value) -> StoreResult<bool>;
    /// Ends a failed attempt: retry through `delayed`, or fail the job. Appends `retrying` or
    /// `failed`.
    async fn fail(&self, lease: &Lease, failure: &Failure) -> StoreResult<FailOutcome>;
    /// Gives a job back to `waiting` without using up an attempt (worker shutdown).
    async fn release(&self, lease: &Lease) -> StoreResult<bool>;
    /// Requeues active jobs whose lease expired; fails those that stalled more than
    /// `max_stalls` times.
    async fn recover_stalled(&self, max_stalls: u32) -> StoreResult<StallReport>;
    async fn counts(&self) -> StoreResult<QueueCounts>;
    /// Returns when work may be available, or after `timeout`.
    async fn wait_for_work(&self, timeout: Duration) -> StoreResult<()>;
    /// Deletes finished jobs beyond the retention.
    async fn trim_finished(&self, retention: Retention) -> StoreResult<u64>;

    // --- events ---
    /// The job's events with `seq > after`, in order.
    async fn events_after(&self, job_id: &str, after: u64) -> StoreResult<Vec<StoredEvent>>;
    /// A live feed of every job event of the pipeline, from now on. One per api process.
    async fn event_feed(&self) -> StoreResult<BoxStream<'static, StoredEvent>>;

    // --- workers ---
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> StoreResult<()>;
    async fn remove_worker(&self, worker_id: &str) -> StoreResult<()>;
    /// Workers whose last heartbeat is younger than their ttl.
    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>>;

    // --- budget, kill-switch, limits ---
    async fn kill_switch(&self) -> StoreResult<KillSwitch>;
    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()>;
    /// Clears the kill-switch only if it was set by `set_by`; returns whether it was cleared.
    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool>;
    /// Reserves `amount` micro-dollars in `period` unless that would pass `limit` (0 = no limit).
    async fn reserve(&self, period: &str, amount: u64, limit: u64) -> StoreResult<Reservation>;
    /// Replaces a reservation with the real cost and token usage.
    async fn settle(
        &self,
        period: &str,
        reserved: u64,
        cost: u64,
        usage: crate::job::TokenUsage,
    ) -> StoreResult<Spend>;
    async fn spend(&self, period: &str) -> StoreResult<Spend>;
    /// Completed and failed jobs (final outcomes) over the last `window`.
    async fn outcomes(&self, window: Duration) -> StoreResult<OutcomeCounts>;
    /// Counts one submission of `user` in a fixed window of `window`; refuses over `max`.
    async fn rate_limit(&self, user: &str, window: Duration, max: u64)
    -> StoreResult<RateDecision>;
}
