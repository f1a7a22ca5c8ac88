//! The server span of each HTTP request.
//!
//! Named `<METHOD> <route template>` (`POST /api/ai/generate-flashcards`), kind server, with
//! `http.request.method`, `http.route` and `http.response.status_code`; a 5xx answer marks it
//! as an error. It continues the caller's trace when the request carries a W3C `traceparent`.
//! Nothing of the body, the query string or any other header is recorded. Health, readiness,
//! metrics and the console's own traffic are not traced: they are polled all day and would bury
//! the traces that matter.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Routes left untraced (polled by probes, scrapers and the console).
const UNTRACED: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/console",
    "/console/vendor/{file}",
    "/api/console/events",
];

/// Middleware: runs the request inside its server span when tracing is on.
pub async fn trace_requests(request: Request, next: Next) -> Response {
    if !super::tracing_enabled() {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(route) = route.filter(|r| !UNTRACED.contains(&r.as_str())) else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
    );
    let headers = request.headers();
    if let Some(parent) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|tp| {
            let state = headers.get("tracestate").and_then(|v| v.to_str().ok());
            super::remote_context(tp, state)
        })
    {
        let _ = span.set_parent(parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    response
}
