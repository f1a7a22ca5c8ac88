//! Telemetry: log lines, OpenTelemetry traces and Sentry error reports.
//!
//! Logs always go to stdout (JSON lines or text). Traces are off unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; they are then
//! exported over OTLP/HTTP with protobuf, configured by the standard variables
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, ...;
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn them off again). Sentry is off
//! unless `SENTRY_DSN` is set.
//!
//! While tracing is off no span of this module is created ([`tracing_enabled`] is checked first),
//! so the request and job paths cost what they cost before. With tracing on, one trace follows a
//! job: the api's `POST` span stores its W3C `traceparent` with the job ([`current_traceparent`]),
//! and the worker's spans are its children. Spans never carry request bodies, prompt
//! text, headers, keys or store URLs (the service's `telemetry` module has the spans of each
//! part).
//!
//! Both binaries, the service and the operator, start their telemetry here, so they share the
//! variables, the log format and the secret scrubbing ([`report::redact`]).

mod logs;
mod otlp;
pub mod report;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Name of the tracer (the instrumentation scope of every span of the pipeline).
pub const TRACER_NAME: &str = "flashcards";

static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured and the exporter started).
#[inline]
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// How the process logs and what it calls itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// JSON lines (with `trace_id` / `span_id` inside a traced span) or text.
    pub json: bool,
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub service_name: String,
    /// The log filter when `RUST_LOG` is not set.
    pub default_filter: &'static str,
    /// Release reported to Sentry and as `service.version`.
    pub version: &'static str,
}

/// What [`init`] started; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() before the process exits, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    sentry: Option<sentry::ClientInitGuard>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered (bounded by `OTEL_BSP_EXPORT_TIMEOUT` and Sentry's 2 s) and
    /// stops the exporters.
    pub async fn shutdown(self) {
        TRACING.store(false, Ordering::Relaxed);
        if let Some(provider) = self.provider {
            // The batch processor's thread exports through a task on this runtime: wait for it
            // from a blocking thread, never from a runtime worker.
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                eprintln!("telemetry: trace export on shutdown failed: {e}");
            }
        }
        if let Some(guard) = self.sentry {
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(client) = sentry::Hub::current().client() {
                    client.close(Some(std::time::Duration::from_secs(2)));
                }
                drop(guard);
            })
            .await;
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the standard variables ask for trace export.
fn otlp_requested() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true")
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber (logs, and traces and Sentry when configured). Call it from
/// inside the Tokio runtime (the trace exporter sends through it) after the rustls crypto
/// provider is installed. A trace or Sentry set-up that fails is reported on stderr and left
/// off: telemetry never stops the service from starting.
pub fn init(options: &Options) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(options.default_filter));
    let provider = if otlp_requested() {
        match otlp::provider(&options.service_name, options.version) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("telemetry: traces stay off: {e}");
                None
            }
        }
    } else {
        None
    };
    let sentry = report::init(options.version);
    let otel_layer = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(TRACER_NAME))
            // Attributes say what happened, not where in the code or on which thread.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
    });
    let sentry_layer = sentry.as_ref().map(|_| report::layer());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(sentry_layer);
    let installed = if options.json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(logs::WithTraceIds::new(
                        tracing_subscriber::fmt::format().json().flatten_event(true),
                        true,
                    ))
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new()),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer().event_format(logs::WithTraceIds::new(
                    tracing_subscriber::fmt::format(),
                    false,
                )),
            )
            .try_init()
    };
    if let Err(e) = installed {
        eprintln!("telemetry: a global subscriber was already installed: {e}");
    }
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
        TRACING.store(true, Ordering::Relaxed);
    }
    Telemetry { provider, sentry }
}

/// The W3C `traceparent` of the span the caller runs in, when traces are on and it is valid.
pub fn current_traceparent() -> Option<String> {
    if !tracing_enabled() {
        return None;
    }
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The remote context a `traceparent` (and optional `tracestate`) describes; `None` if invalid.
pub fn remote_context(
    traceparent: &str,
    tracestate: Option<&str>,
) -> Option<opentelemetry::Context> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace id of the span the caller runs in (for Sentry events and error messages).
pub fn current_trace_id() -> Option<String> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = remote_context(tp, None).expect("valid traceparent");
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "00-xyz",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(remote_context(bad, None).is_none(), "{bad}");
        }
    }

    #[test]
    fn no_traceparent_while_tracing_is_off() {
        assert!(current_traceparent().is_none());
    }
}
