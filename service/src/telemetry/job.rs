//! The worker's spans of a job, children of the api's `POST` span through the job's stored
//! `traceparent`:
//!
//! - `queue.wait` (first attempt only): from the job's `createdAt` to its claim (`startedAt`),
//!   both read from the store, so its length is the time the job waited, whatever the pods'
//!   clocks say;
//! - `job.attempt`: one attempt, with `flashcards.job.id`, `flashcards.job.attempt`,
//!   `flashcards.worker.id` and, when it ends, `flashcards.job.outcome` (`completed`, `retrying`,
//!   `failed`, `released`, `lease_lost`); a failed job marks it as an error. The provider call
//!   ([`super::provider`]) and the store calls of the attempt ([`super::store`]) are its
//!   children.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use flashcard_store::{Claim, FinishOutcome};

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The span of one attempt of a claimed job (`Span::none()` while tracing is off). Also
/// records the job's queue wait on its first attempt.
///
/// Numbers are recorded as `i64`: the OpenTelemetry layer records unsigned integers as text.
pub fn attempt_span(claim: &Claim, worker_id: &str) -> Span {
    if !super::tracing_enabled() {
        return Span::none();
    }
    let job = &claim.job;
    let span = tracing::info_span!(
        "job.attempt",
        otel.kind = "consumer",
        otel.status_code = Empty,
        flashcards.job.id = %job.id,
        flashcards.job.attempt = i64::from(job.attempts_made),
        flashcards.job.max_attempts = i64::from(job.max_attempts),
        flashcards.worker.id = %worker_id,
        flashcards.job.outcome = Empty,
    );
    let Some(parent) = job
        .traceparent
        .as_deref()
        .and_then(|tp| super::remote_context(tp, None))
    else {
        return span;
    };
    if job.attempts_made <= 1 {
        queue_wait(&parent, job.id.as_str(), job.created_at, job.started_at);
    }
    let _ = span.set_parent(parent);
    span
}

/// Emits the `queue.wait` span with its real start and end times.
fn queue_wait(parent: &opentelemetry::Context, job_id: &str, created: u64, claimed: Option<u64>) {
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let claimed = claimed
        .unwrap_or_else(flashcard_core::job::now_ms)
        .max(created);
    let tracer = opentelemetry::global::tracer(super::TRACER_NAME);
    let mut span = tracer
        .span_builder("queue.wait")
        .with_kind(SpanKind::Internal)
        .with_start_time(at(created))
        .with_attributes([
            KeyValue::new("flashcards.job.id", job_id.to_owned()),
            KeyValue::new("flashcards.queue.wait_ms", (claimed - created) as i64),
        ])
        .start_with_context(&tracer, parent);
    span.end_with_timestamp(at(claimed));
}

/// Records how the attempt running in the current span ended; a job that failed for good also
/// goes to Sentry (when configured).
pub fn attempt_ended(job_id: &str, outcome: FinishOutcome, error: Option<&str>) {
    let name = match outcome {
        FinishOutcome::Completed => "completed",
        FinishOutcome::Retrying => "retrying",
        FinishOutcome::Failed => "failed",
        FinishOutcome::Released => "released",
        FinishOutcome::LeaseLost => "lease_lost",
    };
    if outcome == FinishOutcome::Failed {
        super::report::job_failed(job_id, error.unwrap_or("unknown error"));
    }
    if !super::tracing_enabled() {
        return;
    }
    let span = Span::current();
    span.record("flashcards.job.outcome", name);
    if outcome == FinishOutcome::Failed {
        span.record("otel.status_code", "error");
    }
}
