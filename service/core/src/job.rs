//! Job data: what a client submits, what a worker produces, and the record the store keeps.

use serde::{Deserialize, Serialize};

/// Lifecycle states, as reported by `GET /api/job-status/:jobId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Waiting,
    Active,
    Delayed,
    Completed,
    Failed,
    /// Cancelled by its owner or an admin (`DELETE /api/jobs/{jobId}`) before it finished.
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Delayed => "delayed",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => JobState::Waiting,
            "active" => JobState::Active,
            "delayed" => JobState::Delayed,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A validated generation request (the seed's POST body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    pub content: String,
    pub subject: String,
    pub topic: String,
    pub user_id: String,
    /// Number of cards wanted.
    pub card_count: u32,
}

/// One flashcard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Flashcard {
    pub question: String,
    pub answer: String,
    /// How the card was made: `definition`, `list`, `when`, `who`, `where`, `cause`, `effect`,
    /// `cloze` or `note` (local provider, see `provider::local`) or `llm`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Tokens used by one provider call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub input_tokens: u64,
    /// Every billed output token, reasoning included.
    pub output_tokens: u64,
    /// The part of `output_tokens` a reasoning model spent thinking (billed, never shown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// The result of a completed job, as the seed's `completed` event carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    pub flashcards: Vec<Flashcard>,
    /// Total tokens (the seed's number); details in `usage`.
    pub token_usage: u64,
    pub usage: TokenUsage,
    pub provider: String,
    pub model: String,
    /// Cost of the call in micro-dollars.
    pub cost_micros: u64,
}

/// The record the store keeps for each job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    pub request: JobRequest,
    /// Attempts started so far (a stalled attempt counts).
    pub attempts_made: u32,
    pub max_attempts: u32,
    /// Times the job's lease expired while it was active.
    pub stalls: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub result: Option<JobResult>,
    pub error: Option<String>,
    /// Stable code of the failure (`BUDGET_LIMIT_EXCEEDED`, `JOB_STALLED`, or one of
    /// [`crate::provider::codes`]).
    pub error_code: Option<String>,
    /// Sequence number of the job's newest event (0 = none yet).
    pub event_seq: u64,
    /// The client identity that submitted the job (rate limits and ownership).
    pub owner: String,
    /// W3C `traceparent` of the submitting request, so workers join its trace.
    pub traceparent: Option<String>,
}

/// A new job id: `generate-flashcards-<uuid v7>` (time-ordered, like the seed's ids).
pub fn new_job_id() -> String {
    format!("generate-flashcards-{}", uuid::Uuid::now_v7())
}

/// A job id taken from a client: bounded and free of characters that would break keys or URLs.
pub fn is_valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// ISO-8601 UTC time of a millisecond timestamp (`2025-10-12T10:30:00.000Z`). Formatted from
/// the civil fields directly: events are stamped on the hot path.
pub fn iso(ms: u64) -> String {
    let Ok(at) = jiff::Timestamp::from_millisecond(ms as i64) else {
        return String::new();
    };
    let t = jiff::tz::Offset::UTC.to_datetime(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.subsec_nanosecond() / 1_000_000
    )
}

/// UTF-8 bytes of the request text a model reads (content, subject, topic): byte-level BPE
/// tokenizers never emit more tokens than input bytes, so this bounds the request's tokens.
pub fn input_bytes(request: &JobRequest) -> u64 {
    (request.content.len() + request.subject.len() + request.topic.len()) as u64
}
