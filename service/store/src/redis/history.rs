//! A job's event history as Redis keeps it. The `completed` event is stored without the job's
//! result: the result lives once, in the job's hash, and the readers of the history (catch-up
//! and the live feed) put it back, reading both in one atomic pipeline.

use bytes::Bytes;
use flashcard_core::events;

/// The kind of the event that carries the job's result.
pub(super) const COMPLETED: &str = "completed";

/// The text a follower receives for a stored event: `completed` gets the job's `result`
/// appended (`None` when the job is gone; the event is then left out and its followers catch
/// up). Any other event, and a `completed` written with its result by an earlier version, is
/// returned as stored.
pub(super) fn follower_text(kind: &str, stored: Bytes, result: Option<&[u8]>) -> Option<Bytes> {
    if kind != COMPLETED || carries_result(&stored) {
        return Some(stored);
    }
    let body = std::str::from_utf8(&stored).ok()?;
    let result = std::str::from_utf8(result?).ok()?;
    Some(Bytes::from(events::with_result(body, result)))
}

/// Whether a stored event text already has a top-level `result` field.
fn carries_result(stored: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Fields {
        result: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Fields>(stored).is_ok_and(|f| f.result.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_event_gets_its_result_once() {
        let stored =
            Bytes::from_static(br#"{"seq":3,"jobId":"j","type":"completed","durationMs":5}"#);
        let text = follower_text(COMPLETED, stored.clone(), Some(br#"{"flashcards":[]}"#)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["result"]["flashcards"], serde_json::json!([]));
        assert_eq!(v["durationMs"], 5);
        // Written by an earlier version with its result: returned as it is.
        let old = follower_text(COMPLETED, text.clone(), Some(br#"{"other":1}"#)).unwrap();
        assert_eq!(old, text);
        // The job is gone: left out.
        assert!(follower_text(COMPLETED, stored, None).is_none());
        // Other events are returned unchanged.
        let progress = Bytes::from_static(br#"{"seq":2,"jobId":"j","type":"progress"}"#);
        assert_eq!(
            follower_text("progress", progress.clone(), None),
            Some(progress)
        );
    }
}
