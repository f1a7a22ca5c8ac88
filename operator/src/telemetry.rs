//! Logging and traces: JSON lines by default (`LOG_FORMAT=text` for humans), level from
//! `RUST_LOG`; OpenTelemetry traces of every reconcile when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, and Sentry when `SENTRY_DSN` is set (the service crate's telemetry, so both use the same
//! variables, span conventions and secret scrubbing).

pub use flashcard_telemetry::Telemetry;

/// Installs the global subscriber; call from inside the Tokio runtime, after the rustls crypto
/// provider is installed.
pub fn init(json: bool) -> Telemetry {
    flashcard_telemetry::init(&flashcard_telemetry::Options {
        json,
        service_name: "flashcard-operator".to_owned(),
        default_filter: "info,kube=warn",
        version: env!("CARGO_PKG_VERSION"),
    })
}
