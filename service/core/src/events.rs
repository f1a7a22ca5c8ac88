//! Job events: the one place that renders them.
//!
//! A job event is stored as the JSON text that Server-Sent Events send as `data:`, the seed's
//! payload (`jobId`, `message`, ISO `timestamp`, ...) plus `seq` and `type`, so the api forwards
//! the stored bytes as they are. The worker and the api render the job-independent part here
//! ([`render`]); the store numbers it when it appends it, putting `seq`, `jobId` and the counters
//! only it knows (`attemptsMade`, `stalls`) in front ([`numbered`], and its Lua twin
//! `append_event` in `store/redis/scripts/prelude.lua`; the conformance suite checks that both
//! backends produce the same text).
//!
//! The SSE-only events (`connected`, `heartbeat`) are rendered here too.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::job::iso;

/// Why a job went back to `waiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// Its worker shut down before finishing it.
    Released,
    /// Its worker stopped renewing the lease (killed, hung, partitioned).
    Stalled,
    /// The provider is unavailable (circuit breaker open); the attempt was not counted.
    ProviderUnavailable,
    /// The budget cannot cover it until running jobs settle.
    Budget,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Released => "released",
            WaitReason::Stalled => "stalled",
            WaitReason::ProviderUnavailable => "provider-unavailable",
            WaitReason::Budget => "budget",
        }
    }

    fn message(self) -> &'static str {
        match self {
            WaitReason::Released | WaitReason::Stalled => "Job is back in the queue",
            WaitReason::ProviderUnavailable => {
                "The model provider is unavailable; the job waits without using an attempt"
            }
            WaitReason::Budget => "Waiting for budget held by running jobs",
        }
    }
}

/// A job event before the store numbers it.
#[derive(Debug, Clone, Copy)]
pub enum JobEvent<'a> {
    /// A worker took the job (`attemptsMade` is added by the store).
    Active { worker: &'a str },
    /// Where a running attempt stands.
    Progress {
        stage: &'a str,
        percent: u8,
        message: &'a str,
    },
    /// The job's result is appended by the store ([`with_result`]), so it is sent once.
    Completed { duration_ms: u64 },
    /// The attempt failed and the job waits in `delayed` (`attemptsMade` added by the store).
    Retrying {
        error: &'a str,
        duration_ms: u64,
        delay_ms: u64,
    },
    /// The job failed for good (`attemptsMade` added by the store).
    Failed {
        error: &'a str,
        code: Option<&'a str>,
        duration_ms: u64,
    },
    /// The job is back in `waiting` (`stalls` added by the store for [`WaitReason::Stalled`]).
    Waiting { reason: WaitReason },
    /// The job was cancelled (`attemptsMade` added by the store); `by` is `owner` or `admin`.
    Cancelled { by: &'a str },
}

impl JobEvent<'_> {
    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            JobEvent::Active { .. } => "active",
            JobEvent::Progress { .. } => "progress",
            JobEvent::Completed { .. } => "completed",
            JobEvent::Retrying { .. } => "retrying",
            JobEvent::Failed { .. } => "failed",
            JobEvent::Waiting { .. } => "waiting",
            JobEvent::Cancelled { .. } => "cancelled",
        }
    }
}

/// Events after which a job's stream ends.
pub fn is_terminal(kind: &str) -> bool {
    matches!(kind, "completed" | "failed" | "cancelled")
}

/// The wire form of each event, in field order: `type` first, `timestamp` last.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Wire<'a> {
    Active {
        message: &'static str,
        worker: &'a str,
        timestamp: &'a str,
    },
    Progress {
        stage: &'a str,
        percent: u8,
        message: &'a str,
        timestamp: &'a str,
    },
    Completed {
        duration: u64,
        timestamp: &'a str,
    },
    Retrying {
        message: &'static str,
        error: &'a str,
        duration: u64,
        #[serde(rename = "delayMs")]
        delay_ms: u64,
        timestamp: &'a str,
    },
    Failed {
        error: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<&'a str>,
        duration: u64,
        timestamp: &'a str,
    },
    Waiting {
        message: &'static str,
        reason: &'static str,
        timestamp: &'a str,
    },
    Cancelled {
        message: &'static str,
        by: &'a str,
        timestamp: &'a str,
    },
}

/// Renders the job-independent part of an event: a JSON object text starting with `{"type":`,
/// without `seq`, `jobId` or store counters. Serialised from typed fields (no intermediate
/// JSON value): the worker renders several per job.
pub fn render(event: &JobEvent<'_>, at_ms: u64) -> String {
    let stamp = iso(at_ms);
    let timestamp = stamp.as_str();
    let wire = match *event {
        JobEvent::Active { worker } => Wire::Active {
            message: "Job is now being processed",
            worker,
            timestamp,
        },
        JobEvent::Progress {
            stage,
            percent,
            message,
        } => Wire::Progress {
            stage,
            percent,
            message,
            timestamp,
        },
        JobEvent::Completed { duration_ms } => Wire::Completed {
            duration: duration_ms,
            timestamp,
        },
        JobEvent::Retrying {
            error,
            duration_ms,
            delay_ms,
        } => Wire::Retrying {
            message: "Attempt failed; the job will be retried",
            error,
            duration: duration_ms,
            delay_ms,
            timestamp,
        },
        JobEvent::Failed {
            error,
            code,
            duration_ms,
        } => Wire::Failed {
            error,
            code,
            duration: duration_ms,
            timestamp,
        },
        JobEvent::Waiting { reason } => Wire::Waiting {
            message: reason.message(),
            reason: reason.as_str(),
            timestamp,
        },
        JobEvent::Cancelled { by } => Wire::Cancelled {
            message: "Job was cancelled",
            by,
            timestamp,
        },
    };
    // Serialising strings and integers cannot fail.
    serde_json::to_string(&wire).unwrap_or_else(|_| format!("{{\"type\":\"{}\"}}", event.kind()))
}

/// Numbers a rendered event: `{"seq":N,"jobId":"<id>",<counters>,` followed by the body after its
/// opening brace. The memory store's twin of the Lua `append_event`; job ids are validated
/// (`[A-Za-z0-9._-]`), so they need no escaping.
pub fn numbered(seq: u64, job_id: &str, counters: &[(&str, u64)], body: &str) -> String {
    let mut text = format!("{{\"seq\":{seq},\"jobId\":\"{job_id}\"");
    for (name, value) in counters {
        text.push_str(&format!(",\"{name}\":{value}"));
    }
    text.push(',');
    text.push_str(body.strip_prefix('{').unwrap_or(body));
    text
}

/// A rendered body with the job's result (JSON text) as its last field, as the store appends it
/// to `completed` (the Lua twin is in `event_text`).
pub fn with_result(body: &str, result_json: &str) -> String {
    let open = body.strip_suffix('}').unwrap_or(body);
    format!("{open},\"result\":{result_json}}}")
}

/// The `connected` event of a new SSE connection.
pub fn connected(job_id: &str, status: &str, now_ms: u64) -> String {
    json!({
        "jobId": job_id,
        "message": "Connected to job updates",
        "status": status,
        "timestamp": iso(now_ms),
    })
    .to_string()
}

/// The `heartbeat` event (the seed's payload: the job's open connections on this server).
pub fn heartbeat(job_id: &str, connections: usize, now_ms: u64) -> String {
    json!({
        "jobId": job_id,
        "connections": connections,
        "timestamp": iso(now_ms),
    })
    .to_string()
}

/// The terminal event for a follower whose job no longer exists (expired after its retention,
/// or lost with the store's data): `failed` with code `JOB_EXPIRED`, so every stream ends.
pub fn expired(job_id: &str, now_ms: u64) -> String {
    let mut data = Map::new();
    data.insert("jobId".into(), json!(job_id));
    data.insert("type".into(), json!("failed"));
    data.insert(
        "error".into(),
        json!("The job no longer exists (expired after its retention time, or the store lost it)"),
    );
    data.insert("code".into(), json!("JOB_EXPIRED"));
    data.insert("timestamp".into(), json!(iso(now_ms)));
    Value::Object(data).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TokenUsage;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn numbered_event_is_the_seed_payload_plus_seq() {
        let body = render(&JobEvent::Active { worker: "w1" }, 1_760_265_000_000);
        let text = numbered(3, "job-1", &[("attemptsMade", 2)], &body);
        let v = parse(&text);
        assert_eq!(v["seq"], 3);
        assert_eq!(v["jobId"], "job-1");
        assert_eq!(v["attemptsMade"], 2);
        assert_eq!(v["type"], "active");
        assert_eq!(v["message"], "Job is now being processed");
        assert_eq!(v["timestamp"], "2025-10-12T10:30:00.000Z");
    }

    #[test]
    fn completed_carries_result_and_duration() {
        let result = crate::job::JobResult {
            flashcards: vec![],
            token_usage: 12,
            usage: TokenUsage::default(),
            provider: "local".into(),
            model: "m".into(),
            cost_micros: 0,
        };
        let body = render(&JobEvent::Completed { duration_ms: 12450 }, 0);
        let body = with_result(&body, &serde_json::to_string(&result).unwrap());
        let v = parse(&numbered(2, "j", &[], &body));
        assert_eq!(v["result"]["tokenUsage"], 12);
        assert_eq!(v["duration"], 12450);
        assert!(is_terminal(v["type"].as_str().unwrap()));
    }

    #[test]
    fn failed_has_a_code_only_when_given() {
        let body = render(
            &JobEvent::Failed {
                error: "x \"quoted\"",
                code: Some("BUDGET_LIMIT_EXCEEDED"),
                duration_ms: 5,
            },
            0,
        );
        let v = parse(&numbered(1, "j", &[("attemptsMade", 3)], &body));
        assert_eq!(v["code"], "BUDGET_LIMIT_EXCEEDED");
        assert_eq!(v["error"], "x \"quoted\"");
        let plain = render(
            &JobEvent::Failed {
                error: "e",
                code: None,
                duration_ms: 5,
            },
            0,
        );
        assert!(parse(&plain).get("code").is_none());
    }

    #[test]
    fn expired_is_a_terminal_failed_event() {
        let v = parse(&expired("j", 0));
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("failed"), Some("JOB_EXPIRED"))
        );
    }
}
