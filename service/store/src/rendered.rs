//! The event bodies a store call may append, rendered once before the call (outside any lock,
//! and the same for both backends): what the memory store appends and what the Redis scripts
//! receive as arguments.

use super::{BUDGET_EXHAUSTED, BUDGET_EXHAUSTED_CODE, ClaimRequest, Outcome, STALLED_CODE};
use flashcard_core::events::{self, JobEvent, WaitReason};

/// The bodies of a claim: `active`, the folded-in first `progress`, and the two budget events
/// a claim may need (a job that waits for budget, one that never fits).
pub(crate) struct ClaimBodies {
    pub active: String,
    pub started: Option<String>,
    pub budget_wait: String,
    pub budget_failed: String,
}

impl ClaimBodies {
    /// For `request`, or empty bodies for a call that claims nothing.
    pub fn new(request: Option<&ClaimRequest<'_>>, now: u64) -> Self {
        let worker = request.map(|r| r.worker_id).unwrap_or("");
        Self {
            active: events::render(&JobEvent::Active { worker }, now),
            started: request.and_then(|r| r.started).map(|s| {
                events::render(
                    &JobEvent::Progress {
                        stage: s.stage,
                        percent: s.percent,
                        message: s.message,
                    },
                    now,
                )
            }),
            budget_wait: events::render(
                &JobEvent::Waiting {
                    reason: WaitReason::Budget,
                },
                now,
            ),
            budget_failed: events::render(
                &JobEvent::Failed {
                    error: BUDGET_EXHAUSTED,
                    code: Some(BUDGET_EXHAUSTED_CODE),
                    duration_ms: 0,
                },
                now,
            ),
        }
    }
}

/// What finishing an attempt may record.
pub(crate) struct OutcomeBodies<'a> {
    /// `completed`, `retry`, `failed` or `release` (the finish script's `A.outcome`).
    pub kind: &'static str,
    /// The outcome's event (`completed` without its result).
    pub body: String,
    /// For a retry: the `failed` event used when no attempt is left.
    pub exhausted: Option<String>,
    /// The result JSON of a completed attempt (stored, and appended to its event).
    pub result_json: Option<String>,
    pub error: &'a str,
    pub code: Option<&'a str>,
    pub delay_ms: u64,
}

impl<'a> OutcomeBodies<'a> {
    pub fn new(outcome: Outcome<'a>, now: u64) -> Result<Self, serde_json::Error> {
        Ok(match outcome {
            Outcome::Completed {
                result,
                duration_ms,
            } => Self {
                kind: "completed",
                body: events::render(&JobEvent::Completed { duration_ms }, now),
                exhausted: None,
                result_json: Some(serde_json::to_string(result)?),
                error: "",
                code: None,
                delay_ms: 0,
            },
            Outcome::Retry {
                error,
                code,
                delay,
                duration_ms,
            } => Self {
                kind: "retry",
                body: events::render(
                    &JobEvent::Retrying {
                        error,
                        duration_ms,
                        delay_ms: delay.as_millis() as u64,
                    },
                    now,
                ),
                exhausted: Some(events::render(
                    &JobEvent::Failed {
                        error,
                        code,
                        duration_ms,
                    },
                    now,
                )),
                result_json: None,
                error,
                code,
                delay_ms: delay.as_millis() as u64,
            },
            Outcome::Failed {
                error,
                code,
                duration_ms,
            } => Self {
                kind: "failed",
                body: events::render(
                    &JobEvent::Failed {
                        error,
                        code,
                        duration_ms,
                    },
                    now,
                ),
                exhausted: None,
                result_json: None,
                error,
                code,
                delay_ms: 0,
            },
            Outcome::Release { reason } => Self {
                kind: "release",
                body: events::render(&JobEvent::Waiting { reason }, now),
                exhausted: None,
                result_json: None,
                error: "",
                code: None,
                delay_ms: 0,
            },
        })
    }
}

/// What stall recovery may append: back to `waiting`, or `failed` for stalling too often.
pub(crate) struct StallBodies {
    pub error: String,
    pub code: &'static str,
    pub waiting: String,
    pub failed: String,
}

impl StallBodies {
    pub fn new(max_stalls: u32, now: u64) -> Self {
        let error = format!("job stalled more than allowable limit ({max_stalls})");
        let failed = events::render(
            &JobEvent::Failed {
                error: &error,
                code: Some(STALLED_CODE),
                duration_ms: 0,
            },
            now,
        );
        Self {
            waiting: events::render(
                &JobEvent::Waiting {
                    reason: WaitReason::Stalled,
                },
                now,
            ),
            failed,
            error,
            code: STALLED_CODE,
        }
    }
}

/// A `progress` event's body.
pub(crate) fn progress(stage: &str, percent: u8, message: &str, now: u64) -> String {
    events::render(
        &JobEvent::Progress {
            stage,
            percent,
            message,
        },
        now,
    )
}

/// The `cancelled` event.
pub(crate) fn cancelled(by: &str, now: u64) -> String {
    events::render(&JobEvent::Cancelled { by }, now)
}
