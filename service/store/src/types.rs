//! The values that cross the [`Store`](super::Store) contract.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use flashcard_core::budget::Pricing;
use flashcard_core::events::WaitReason;
use flashcard_core::job::{JobRecord, JobRequest, JobResult, JobState, TokenUsage};

/// An `Idempotency-Key` scoped to its owner, bound to a fingerprint of the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// [`flashcard_core::keyspace::idempotency_digest`] of (owner, key).
    pub digest: String,
    /// [`flashcard_core::keyspace::fingerprint`] of the canonical request.
    pub fingerprint: String,
    /// How long the mapping is honoured.
    pub ttl: Duration,
}

/// A per-client limit on submissions in fixed windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u64,
    pub window: Duration,
    /// Who the limit counts: usually the job's owner; for an anonymous client its address (its
    /// owner is a token it holds, which it could change at will).
    pub subject: String,
}

/// One job submission.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The id the job gets if it is created ([`flashcard_core::job::new_job_id`]).
    pub job_id: String,
    pub request: JobRequest,
    /// The client identity the job belongs to.
    pub owner: String,
    pub idempotency: Option<Idempotency>,
    pub rate_limit: Option<RateLimit>,
    pub max_attempts: u32,
    pub traceparent: Option<String>,
}

impl Submission {
    /// A plain submission of `request` under a new job id, owned by its `userId`: no
    /// idempotency key, rate limit or trace, `max_attempts` attempts.
    pub fn new(request: JobRequest, max_attempts: u32) -> Self {
        Self {
            job_id: flashcard_core::job::new_job_id(),
            owner: request.user_id.clone(),
            request,
            idempotency: None,
            rate_limit: None,
            max_attempts,
            traceparent: None,
        }
    }
}

/// What [`Store::cancel`](super::Store::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// No such job (or not the given owner's).
    Missing,
    /// Cancelled now; it was in this state. An active job's lease is revoked, so its worker
    /// aborts the provider call at its next lease renewal and settles what it may have cost.
    Cancelled { was: JobState },
    /// Cancelled before (a repeat changes nothing).
    AlreadyCancelled,
    /// It had finished (`completed` or `failed`): nothing to cancel.
    Finished(JobState),
}

/// Who cancels a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canceller<'a> {
    /// The job's owner: a job of another owner is [`Cancellation::Missing`].
    Owner(&'a str),
    /// An admin: any job.
    Admin,
}

impl Canceller<'_> {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Owner(_) => "owner",
            Self::Admin => "admin",
        }
    }
}

/// What [`Store::submit`](super::Store::submit) decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A new job, waiting.
    Accepted {
        job_id: String,
    },
    /// The same owner, key and body as an earlier submission: its job, in its current state.
    Replayed {
        job_id: String,
        state: JobState,
    },
    /// The key was used for a different body.
    KeyReused {
        job_id: String,
    },
    /// The kill-switch is on.
    Refused(KillSwitch),
    RateLimited {
        retry_after: Duration,
    },
}

/// Identifies one claim of a job: only the holder of the lease may finish or renew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub token: String,
    /// The budget period the attempt's reservation lives in.
    pub period: String,
}

/// A job handed to a worker, with its budget reservation.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: JobRecord,
    pub lease: Lease,
    pub reserved_micros: u64,
}

/// Names one logical claim (or finish-and-claim) call. The caller makes it once and sends the
/// same id with every retry of that call: a retry whose first try ran but lost its reply gets
/// the first try's jobs back instead of claiming more (which would leave the first try's jobs
/// active under a lease nobody holds). The id is also the lease token of the jobs it claims.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallId(String);

impl CallId {
    /// A fresh id, unique across workers and time.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

/// What a worker asks of a claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// Made once per logical call, reused by its retries (see [`CallId`]).
    pub call_id: CallId,
    pub worker_id: &'a str,
    pub lease: Duration,
    /// Most jobs to take (the worker's free slots); 0 only promotes due retries.
    pub max_jobs: u32,
    /// Most active jobs one client (job owner) may have across the pipeline; 0 is no cap.
    /// Clients take turns whatever the cap (fair queuing).
    pub client_cap: u32,
    /// Prices and token bounds: what each job's reservation is computed from.
    pub pricing: Pricing,
    /// A `progress` event appended right after `active` (the attempt has started), so the
    /// first progress report costs no round trip of its own.
    pub started: Option<ProgressNote<'a>>,
}

/// A `progress` event's fields.
#[derive(Debug, Clone, Copy)]
pub struct ProgressNote<'a> {
    pub stage: &'a str,
    pub percent: u8,
    pub message: &'a str,
}

/// What a claim took, and why it took no more.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub jobs: Vec<Claim>,
    /// The next job's reservation does not fit while other jobs hold reservations: it stays
    /// first in `waiting` (no attempt used) until they settle, which wakes the workers.
    pub budget_blocked: bool,
    /// Jobs failed because their reservation cannot fit even with nothing else reserved
    /// (`BUDGET_LIMIT_EXCEEDED`); the automatic budget stop is then switched on.
    pub budget_failed: u32,
    /// Jobs claimed whose record could not be read (e.g. a request written by a newer
    /// version): each was failed in the store with [`UNREADABLE_CODE`] and is not in `jobs`.
    pub unreadable: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Completed {
        result: &'a JobResult,
        duration_ms: u64,
    },
    /// Failed; retried after `delay` if attempts remain, failed otherwise (with `code`).
    Retry {
        error: &'a str,
        code: Option<&'a str>,
        delay: Duration,
        duration_ms: u64,
    },
    /// Failed for good.
    Failed {
        error: &'a str,
        code: Option<&'a str>,
        duration_ms: u64,
    },
    /// Given back to the head of `waiting` without using up the attempt.
    Release { reason: WaitReason },
}

/// What the attempt's provider call cost (zero if no call reached the provider).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub micros: u64,
    pub usage: TokenUsage,
    /// A provider call was made (counts in the period's `jobs`).
    pub called: bool,
    /// The call's real cost is unknown (it timed out after the request was sent, the reply was
    /// cut, or it was cancelled): `micros` is the attempt's reservation, the safe upper bound,
    /// and the period counts it apart (`boundMicros`, `boundCalls`).
    pub at_bound: bool,
}

impl Cost {
    /// No provider call was made, or none reached the model: nothing to settle.
    pub fn none() -> Self {
        Self::default()
    }

    /// A call that reported its usage, priced at `micros`.
    pub fn reported(micros: u64, usage: TokenUsage) -> Self {
        Self {
            micros,
            usage,
            called: true,
            at_bound: false,
        }
    }

    /// A call whose cost is unknown, settled at the attempt's reservation.
    pub fn at_bound(reserved_micros: u64) -> Self {
        Self {
            micros: reserved_micros,
            usage: TokenUsage::default(),
            called: true,
            at_bound: true,
        }
    }
}

/// What [`Store::finish`](super::Store::finish) recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    Completed,
    /// Moved to `delayed`.
    Retrying,
    Failed,
    Released,
    /// The lease was lost (the job was recovered after a stall); the outcome was not recorded.
    LeaseLost,
}

/// The result of [`Store::finish`](super::Store::finish).
#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: FinishOutcome,
    /// Spend of the attempt's period after settling, when this call changed it (0 otherwise).
    pub spent_micros: u64,
    /// Cost beyond the reservation (the provider reported more than the bound).
    pub overrun_micros: u64,
    /// The automatic budget stop was switched on by this settlement.
    pub budget_stopped: bool,
    pub claimed: Claimed,
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueCounts {
    pub waiting: u64,
    pub active: u64,
    pub delayed: u64,
    pub completed: u64,
    pub failed: u64,
}

/// The little a follower needs to know of its job: where it stands and its newest event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobHead {
    pub state: JobState,
    pub event_seq: u64,
}

/// What the live event feed yields: an event, or a sign of life when there was none to read (so
/// a feed that stopped answering can be told from a quiet one).
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    Event(StoredEvent),
    Alive,
}

/// A stored job event: the rendered JSON text sent as SSE `data` (see [`flashcard_core::events`]).
/// Cheap to clone: fan-out shares the text.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub job_id: Arc<str>,
    pub seq: u64,
    /// The SSE event name (`active`, `progress`, `completed`, ...).
    pub kind: Arc<str>,
    pub data: Bytes,
}

impl StoredEvent {
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The event as JSON (tests, diagnostics).
    pub fn body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.data).unwrap_or(serde_json::Value::Null)
    }

    /// Parses a stored event text, taking `seq` and `type` from it.
    pub fn parse(job_id: &str, text: impl Into<Bytes>) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Head<'a> {
            seq: u64,
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let data: Bytes = text.into();
        let head: Head<'_> =
            serde_json::from_slice(&data).map_err(|e| format!("event of {job_id}: {e}"))?;
        let kind: Arc<str> = Arc::from(head.kind.as_ref());
        Ok(Self {
            job_id: Arc::from(job_id),
            seq: head.seq,
            kind,
            data,
        })
    }
}

/// A worker's self-description, refreshed by its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SetBy {
    /// A person, through the admin API.
    Admin,
    /// The operator (earlier versions switched the budget stop as the operator).
    Operator,
    /// The automatic budget stop: the period's spend reached the limit in force.
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

/// The kill-switch. While it is on, new jobs are refused; running and queued jobs go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillSwitch {
    pub enabled: bool,
    pub reason: Option<String>,
    pub set_by: Option<SetBy>,
    /// ms since epoch of the last change.
    pub since: Option<u64>,
    /// For the automatic budget stop: the limit it was taken under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_micros: Option<u64>,
    /// For the automatic budget stop: the budget period it was taken in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

impl KillSwitch {
    pub fn off() -> Self {
        Self {
            enabled: false,
            reason: None,
            set_by: None,
            since: None,
            limit_micros: None,
            period: None,
        }
    }

    /// A person's (or the resource's) switch.
    pub fn manual(set_by: SetBy, reason: Option<String>, since: u64) -> Self {
        Self {
            enabled: true,
            reason,
            set_by: Some(set_by),
            since: Some(since),
            limit_micros: None,
            period: None,
        }
    }
}

/// Spend of one budget period, in micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spend {
    pub spent_micros: u64,
    /// Held by running jobs' reservations.
    pub reserved_micros: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Provider calls settled.
    pub jobs: u64,
    /// Cost beyond reservations (providers reporting more than the bound).
    pub overrun_micros: u64,
    /// Spend restored after the store lost its data (0 if never).
    pub restored_micros: u64,
    /// Part of `spent_micros` settled at the bound: calls whose real cost is unknown (timed out
    /// after the request was sent, cut mid-reply, cancelled), counted at their reservation.
    #[serde(default)]
    pub bound_micros: u64,
    /// Calls settled at the bound.
    #[serde(default)]
    pub bound_calls: u64,
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

/// Error text and code of a job refused because the budget cannot cover it.
pub const BUDGET_EXHAUSTED: &str =
    "Budget limit reached: job not processed (BUDGET_LIMIT_EXCEEDED)";
pub const BUDGET_EXHAUSTED_CODE: &str = "BUDGET_LIMIT_EXCEEDED";
/// Code of a job failed for stalling too often.
pub const STALLED_CODE: &str = "JOB_STALLED";
/// Error code of a job whose stored record this version cannot read.
pub const UNREADABLE_CODE: &str = "JOB_UNREADABLE";

/// A finished job's timestamps (ms since the epoch), for the operations console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishedJob {
    pub id: String,
    /// `Completed` or `Failed`.
    pub state: JobState,
    pub created_at: u64,
    /// Start of the last attempt (none for a job failed before any attempt started).
    pub started_at: Option<u64>,
    pub finished_at: u64,
}

/// Final outcomes of one minute (minutes since the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MinuteOutcomes {
    pub minute: u64,
    pub completed: u64,
    pub failed: u64,
}
