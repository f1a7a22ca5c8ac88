//! The service's spans: HTTP requests ([`http`]), job attempts ([`job`]), provider calls
//! ([`provider`]) and store calls ([`store`]). Set-up, export and scrubbing live in
//! `flashcard-telemetry`, shared with the operator.

pub mod http;
pub mod job;
pub mod provider;
pub mod store;

use flashcard_telemetry::{TRACER_NAME, remote_context, report, tracing_enabled};
