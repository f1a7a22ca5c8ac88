//! Renders stored job events into the seed's SSE payloads (`jobId`, ISO `timestamp`, ...).

use serde_json::{Map, Value, json};

use crate::store::StoredEvent;

/// ISO-8601 UTC time of a millisecond timestamp (`2025-10-12T10:30:00.000Z`).
pub fn iso(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Human message for events that carry one in the seed.
fn message(kind: &str) -> Option<&'static str> {
    match kind {
        "active" => Some("Job is now being processed"),
        "retrying" => Some("Attempt failed; the job will be retried"),
        "waiting" => Some("Job is back in the queue"),
        _ => None,
    }
}

/// The payload of a job event: the stored fields minus bookkeeping, plus `jobId` and
/// `timestamp`.
pub fn payload(event: &StoredEvent) -> Value {
    let mut data = Map::new();
    data.insert("jobId".into(), json!(event.job_id));
    let kind = event.kind();
    if let Some(text) = message(kind) {
        data.insert("message".into(), json!(text));
    }
    if let Some(body) = event.body.as_object() {
        for (key, value) in body {
            if !matches!(key.as_str(), "seq" | "type" | "at") {
                data.insert(key.clone(), value.clone());
            }
        }
    }
    let at = event.body.get("at").and_then(Value::as_u64).unwrap_or(0);
    data.insert("timestamp".into(), json!(iso(at)));
    Value::Object(data)
}

/// Events after which the server ends the stream.
pub fn is_terminal(kind: &str) -> bool {
    matches!(kind, "completed" | "failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_payload_has_seed_fields() {
        let event = StoredEvent {
            job_id: "j1".into(),
            seq: 2,
            body: json!({"seq": 2, "type": "completed", "at": 1_760_265_015_000u64,
                         "result": {"flashcards": [], "tokenUsage": 12}, "duration": 12450}),
        };
        let data = payload(&event);
        assert_eq!(data["jobId"], "j1");
        assert_eq!(data["duration"], 12450);
        assert_eq!(data["result"]["tokenUsage"], 12);
        assert_eq!(data["timestamp"], "2025-10-12T10:30:15.000Z");
        assert!(data.get("seq").is_none() && data.get("type").is_none());
    }

    #[test]
    fn active_payload_has_message() {
        let event = StoredEvent {
            job_id: "j".into(),
            seq: 1,
            body: json!({"seq": 1, "type": "active", "at": 0, "attemptsMade": 1}),
        };
        assert_eq!(payload(&event)["message"], "Job is now being processed");
    }
}
