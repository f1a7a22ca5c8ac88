//! The OpenAPI 3.1 document of the HTTP API (`GET /api/openapi.json`), generated with utoipa
//! from the handlers' `#[utoipa::path]` attributes and the body types' `ToSchema` derives.
//!
//! Handlers that live outside `api/` (the SSE stream in `crate::sse`) or are closures in the
//! router (health) are described by the stub functions below; their bodies are the real types
//! where there is one. What every operation shares is added by [`Shared`]: the `503` answers
//! (store unreachable, connection limit) with `Retry-After`, and the security schemes.
//!
//! A copy is committed at `service/api/openapi.json`; `tests/openapi.rs` fails when it is out of
//! date (`cargo xtask generate` rewrites it).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{self, HttpMethod};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::{ErrorBody, ErrorCode, FieldError};
use super::{alerts, batch, budget, cancel, jobs};

/// Where the committed copy lives, relative to the workspace root.
pub const COMMITTED_PATH: &str = "service/api/openapi.json";

/// The event names of `GET /api/job-events`, in the order a job usually sends them.
pub const SSE_EVENTS: &[(&str, &str)] = &[
    (
        "connected",
        "First event of every connection: `{jobId, message, status, timestamp}`; carries the `retry` hint.",
    ),
    (
        "active",
        "A worker took the job: `{seq, jobId, attemptsMade, type, message, worker, timestamp}`.",
    ),
    (
        "progress",
        "Where a running attempt stands: `{seq, jobId, type, stage, percent, message, timestamp}`.",
    ),
    (
        "cancelled",
        "Terminal: the job was cancelled (`DELETE /api/jobs/{jobId}`): `{seq, jobId, attemptsMade, type, message, by, timestamp}`; `by` is `owner` or `admin`. The stream ends.",
    ),
    (
        "retrying",
        "The attempt failed and the job waits in `delayed`: `{seq, jobId, attemptsMade, type, message, error, duration, delayMs, timestamp}`.",
    ),
    (
        "waiting",
        "The job is back in the queue (`reason`: `released`, `stalled`, `provider-unavailable`, `budget`).",
    ),
    (
        "completed",
        "Terminal: `{seq, jobId, type, result, duration, timestamp}`; the stream ends.",
    ),
    (
        "failed",
        "Terminal: `{seq, jobId, attemptsMade, type, error, code?, duration, timestamp}`; the stream ends (`code` `JOB_EXPIRED` when the job no longer exists).",
    ),
    (
        "heartbeat",
        "Every `--sse-heartbeat-seconds` (30): `{jobId, connections, timestamp}`.",
    ),
];

/// Connection and delivery counters of this process's SSE hub (`GET /api/sse/stats`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SseStatsBody {
    pub connections: usize,
    pub max_connections: usize,
    pub subscribed_jobs: usize,
    /// Open streams per job id: only with the admin token (a job id is all that guards a job
    /// in `body` identity mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions_per_job: Option<BTreeMap<String, usize>>,
    pub events_sent: u64,
    /// Followers that missed live events (they fell behind, or the feed skipped) and were
    /// caught up from the job's history.
    pub followers_caught_up: u64,
}

/// `{"status": "ok"}` / `{"status": "ready", "store": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    pub status: String,
    /// Readiness only: `ok`, or `unavailable` (the pod stays ready and answers `503
    /// STORE_UNAVAILABLE` with `Retry-After` itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// The data of an SSE job event (`data:` line, JSON). Which fields appear depends on the event
/// name; see the operation's description.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct JobEventData {
    /// Position of the event in the job's stream (also the SSE `id:`); absent on `connected`
    /// and `heartbeat`.
    seq: Option<u64>,
    job_id: String,
    /// The event name again (`active`, `completed`, ...); absent on `connected` and `heartbeat`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// ISO-8601 UTC time.
    timestamp: String,
    message: Option<String>,
    /// `connected`: the job's state when the stream opened.
    status: Option<flashcard_core::job::JobState>,
    attempts_made: Option<u32>,
    worker: Option<String>,
    /// `waiting` after a stall: times the job's lease expired.
    stalls: Option<u32>,
    stage: Option<String>,
    percent: Option<u8>,
    result: Option<flashcard_core::job::JobResult>,
    error: Option<String>,
    code: Option<String>,
    /// Milliseconds the attempt took.
    duration: Option<u64>,
    delay_ms: Option<u64>,
    reason: Option<String>,
    /// `heartbeat`: open streams for the job on this server.
    connections: Option<usize>,
    /// `cancelled`: who cancelled the job, `owner` or `admin`.
    by: Option<String>,
}

/// The seed's SSE stream of one job.
#[utoipa::path(
    get,
    path = "/api/job-events",
    tag = "events",
    operation_id = "getJobEvents",
    params(
        ("jobId" = String, Query, description = "The job to follow.", min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$"),
        ("lastEventId" = Option<String>, Query, description = "Resume after this event `seq`, for clients that cannot set `Last-Event-ID`. Not a number: from the start."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event `seq` (EventSource sends it on reconnect). Not a number: from the start."),
        ("ownerToken" = Option<String>, Query, description = "Owner token of an anonymous client (`proxy` identity mode without the proxy's header): the `ownerToken` of the 202 answer; 16-128 characters of `A-Za-z0-9_-`.", min_length = 16, max_length = 128, pattern = r"^[A-Za-z0-9_-]{16,128}$"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `connected`, then the job's stored events after `Last-Event-ID`, then live ones, until `completed` or `failed`. Event names: see the operation description.",
         content_type = "text/event-stream", body = String,
         example = json!("event: connected\nretry: 3000\ndata: {\"jobId\":\"generate-flashcards-0199d7a4-5b1e-7c3a-9f1e-2b8c4d6e8f01\",\"message\":\"Connected to job updates\",\"status\":\"waiting\",\"timestamp\":\"2025-10-12T10:30:00.000Z\"}\n\n")),
        (status = 204, description = "The terminal event was already delivered (`Last-Event-ID` at or after it): stop reconnecting."),
        (status = 400, description = "`MISSING_JOB_ID`, `INVALID_JOB_ID`, `INVALID_QUERY` or `INVALID_OWNER_TOKEN`.", body = ErrorBody),
        (status = 401, description = "`api-key` identity mode: `UNAUTHORIZED` or `INVALID_API_KEY`.", body = ErrorBody),
        (status = 404, description = "`JOB_NOT_FOUND`: unknown, expired, or another client's. EventSource stops on it.", body = ErrorBody),
    ),
    security((), ("apiKey" = []), ("apiKeyBearer" = []), ("proxyIdentity" = [])),
)]
#[allow(dead_code)]
fn job_events() {}

/// The operations console's live feed (the `/console` page reads it).
#[utoipa::path(
    get,
    path = "/api/console/events",
    tag = "monitoring",
    operation_id = "getConsoleEvents",
    params(
        ("intervalMs" = Option<u64>, Query, description = "Milliseconds between snapshots (clamped to 500-30000; default 2000)."),
    ),
    responses(
        (status = 200, description = "`text/event-stream` that does not end while the client stays: a `snapshot` event (queue, outcomes by minute, durations, workers, breaker, budget, kill-switch, alerts) at once and then every interval; `unavailable` (`{error, code}`) instead while the store cannot be read.",
         content_type = "text/event-stream", body = String),
        (status = 400, description = "`INVALID_QUERY`.", body = ErrorBody),
        (status = 503, description = "`TOO_MANY_CONSOLES`: the process's console streams are all taken.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn console_events() {}

/// SSE connection counters.
#[utoipa::path(
    get,
    path = "/api/sse/stats",
    tag = "monitoring",
    operation_id = "getSseStats",
    responses((status = 200, description = "Counters; `subscriptionsPerJob` only with the admin token.", body = SseStatsBody)),
    security((), ("adminToken" = [])),
)]
#[allow(dead_code)]
fn sse_stats() {}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    operation_id = "getOpenApi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json", body = Object)),
)]
#[allow(dead_code)]
fn openapi_json() {}

/// The interactive SSE demo page (the seed's `sse-example.html`).
#[utoipa::path(
    get,
    path = "/sse-example.html",
    tag = "meta",
    operation_id = "getSseExample",
    responses((status = 200, description = "HTML page.", content_type = "text/html", body = String)),
)]
#[allow(dead_code)]
fn sse_example() {}

/// Liveness: the process answers. Never depends on the store.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "getHealthz",
    responses((status = 200, description = "Alive.", body = HealthBody)),
)]
#[allow(dead_code)]
fn healthz() {}

/// Readiness: whether this process should get new connections. A store that refuses
/// connections keeps it ready (every pod sees the same store; the pod answers `503
/// STORE_UNAVAILABLE` with `Retry-After`); a store link of this pod that hangs does not.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "getReadyz",
    responses(
        (status = 200, description = "Ready; `store` says whether the store answered.", body = HealthBody),
        (status = 503, description = "`DRAINING`: the process is shutting down (SIGTERM) and serves only until its drain window ends; `STORE_UNAVAILABLE`: this process's link to the store hangs (a ping unanswered within 800 ms); or `FEED_STALLED`: the live event feed stopped answering while the store still does (the process reconnects it; meanwhile followers would only see events at their heartbeat re-check).", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn readyz() {}

/// Prometheus metrics (OpenMetrics text). Always answers: while the store is unreachable the
/// store-derived gauges are left out and `flashcards_store_up` is 0.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "getMetrics",
    responses(
        (status = 200, description = "OpenMetrics exposition.", content_type = "application/openmetrics-text", body = String),
        (status = 500, description = "`METRICS_ENCODING`: the registry failed to encode (never expected).", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn metrics() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flashcard pipeline API",
        description = "Queue flashcard generation jobs, follow them over Server-Sent Events or poll their status, and operate the budget kill-switch.\n\n\
**Client identity** (`--client-identity`, CRD `spec.api.identity.mode`): `body` trusts the request's `userId` / `user-id` header (the seed's behaviour; trusted networks only); `api-key` needs a key in `X-API-Key` or `Authorization: Bearer` (scheme `apiKey` / `apiKeyBearer`); `proxy` takes the identity header (`X-Forwarded-User` by default, scheme `proxyIdentity`) from trusted proxies only. The identity counts for the per-client rate limit and, in `api-key` and `proxy` modes, owns the job: another client's job answers 404. Without any identity the client address counts.\n\n\
**Errors** are JSON `{error, code, details?}`; `code` is stable (see `ErrorCode`). Any operation may answer `503` with `Retry-After` (`STORE_UNAVAILABLE`, `TOO_MANY_CONNECTIONS`) and any undocumented method `405` `METHOD_NOT_ALLOWED`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        jobs::generate,
        batch::generate_batch,
        jobs::status,
        cancel::cancel,
        job_events,
        jobs::queue_stats,
        sse_stats,
        console_events,
        alerts::alerts,
        budget::status,
        budget::set_kill_switch,
        openapi_json,
        sse_example,
        healthz,
        readyz,
        metrics,
    ),
    components(schemas(ErrorBody, ErrorCode, FieldError, JobEventData)),
    modifiers(&Shared),
    tags(
        (name = "jobs", description = "Submit jobs and read their status."),
        (name = "events", description = "Server-Sent Events of one job."),
        (name = "monitoring", description = "Queue, SSE and alert numbers."),
        (name = "admin", description = "Budget and kill-switch; `Authorization: Bearer <admin token>`."),
        (name = "operations", description = "Probes and Prometheus metrics."),
        (name = "meta", description = "This document and the demo page."),
    ),
)]
struct ApiDoc;

/// Security schemes, the SSE event list and the `503` answers every operation shares.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = |s: SecurityScheme, description: &str| {
            let mut s = s;
            match &mut s {
                SecurityScheme::ApiKey(ApiKey::Header(v)) => {
                    v.description = Some(description.to_owned())
                }
                SecurityScheme::Http(h) => h.description = Some(description.to_owned()),
                _ => {}
            }
            s
        };
        components.add_security_scheme(
            "apiKey",
            scheme(
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
                "`api-key` identity mode: a key whose SHA-256 is in the mounted keys file (`--api-keys-file`); the file maps it to a principal.",
            ),
        );
        components.add_security_scheme(
            "apiKeyBearer",
            scheme(
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
                "`api-key` identity mode: the same key as `Authorization: Bearer <key>` (scheme case-insensitive).",
            ),
        );
        components.add_security_scheme(
            "proxyIdentity",
            scheme(
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Forwarded-User"))),
                "`proxy` identity mode: set by an authenticating proxy (oauth2-proxy, Ingress external auth); trusted only from `--trusted-proxies` (the header name is `--identity-header`).",
            ),
        );
        components.add_security_scheme(
            "adminToken",
            scheme(
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
                "The admin token (`ADMIN_TOKEN` / `--admin-token-file`), compared in constant time; scheme case-insensitive. Without a token the admin endpoints answer 503 `ADMIN_DISABLED`, except on standalone bound to loopback (local development), where writes need `Content-Type: application/json`.",
            ),
        );

        // One event of the SSE stream, as schemathesis and OpenAPI 3.2's `itemSchema` read it:
        // the `data` line is JSON (`contentSchema`).
        let mut data_schema = openapi::extensions::Extensions::default();
        data_schema.insert(
            "contentSchema".to_owned(),
            serde_json::json!({"$ref": "#/components/schemas/JobEventData"}),
        );
        let event_names = SSE_EVENTS.iter().map(|(name, _)| *name);
        let sse_event = openapi::ObjectBuilder::new()
            .schema_type(openapi::Type::Object)
            .description(Some(
                "One Server-Sent Event of a job stream: `event:` name, `data:` JSON, `id:` the event's `seq` (absent on `connected` and `heartbeat`), `retry:` on `connected`.",
            ))
            .property(
                "event",
                openapi::ObjectBuilder::new()
                    .schema_type(openapi::Type::String)
                    .enum_values(Some(event_names)),
            )
            .required("event")
            .property(
                "data",
                openapi::ObjectBuilder::new()
                    .schema_type(openapi::Type::String)
                    .content_media_type("application/json")
                    .extensions(Some(data_schema)),
            )
            .required("data")
            .property(
                "id",
                openapi::ObjectBuilder::new()
                    .schema_type(openapi::Type::String)
                    .pattern(Some("^[0-9]+$")),
            )
            .property(
                "retry",
                openapi::ObjectBuilder::new()
                    .schema_type(openapi::Type::Integer)
                    .minimum(Some(0)),
            );
        components.schemas.insert(
            "SseEvent".to_owned(),
            openapi::RefOr::T(openapi::Schema::Object(sse_event.build())),
        );
        if let Some(op) = doc
            .paths
            .paths
            .get_mut("/api/job-events")
            .and_then(|item| item.get.as_mut())
            && let Some(openapi::RefOr::T(ok)) = op.responses.responses.get_mut("200")
            && let Some(stream) = ok.content.get_mut("text/event-stream")
        {
            stream.schema = Some(openapi::Ref::from_schema_name("SseEvent").into());
        }

        let unavailable = || {
            openapi::ResponseBuilder::new()
                .description(
                    "`STORE_UNAVAILABLE` (the job store is unreachable), `TOO_MANY_CONNECTIONS` (connection or SSE stream limit) or, on admin routes, `ADMIN_DISABLED` (no admin token configured). Retry after `Retry-After` seconds.",
                )
                .header(
                    "Retry-After",
                    openapi::HeaderBuilder::new()
                        .schema(openapi::ObjectBuilder::new().schema_type(openapi::Type::Integer))
                        .description(Some("Seconds to wait before retrying."))
                        .build(),
                )
                .content(
                    "application/json",
                    openapi::ContentBuilder::new()
                        .schema(Some(openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            for method in [HttpMethod::Get, HttpMethod::Post, HttpMethod::Delete] {
                let op = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Delete => item.delete.as_mut(),
                    _ => item.post.as_mut(),
                };
                let Some(op) = op else { continue };
                // The health probe and the document never touch the store; still, the
                // connection limit answers before any route.
                op.responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| unavailable().into());
                if path == "/api/job-events" {
                    let names: Vec<String> = SSE_EVENTS
                        .iter()
                        .map(|(name, what)| format!("- `{name}`: {what}"))
                        .collect();
                    op.description = Some(format!(
                        "{}\n\nEvent names (`event:`; `data:` is JSON, see `JobEventData`; `id:` is `seq`):\n{}\n\n\
                         A reconnect with `Last-Event-ID` replays what was missed and skips what was sent.",
                        op.description.clone().unwrap_or_default(),
                        names.join("\n")
                    ));
                }
            }
        }
    }
}

/// The document, built once.
pub fn document() -> &'static openapi::OpenApi {
    static DOC: OnceLock<openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// The document as the committed file holds it (pretty JSON, trailing newline).
pub fn document_json() -> String {
    let mut text = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /api/openapi.json`.
pub async fn serve() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(document_json).clone();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_the_code_uses_is_documented() {
        let documented: Vec<String> = serde_json::to_value(document())
            .unwrap()
            .pointer("/components/schemas/ErrorCode/enum")
            .and_then(|v| v.as_array().cloned())
            .expect("ErrorCode enum")
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut files = vec![format!("{src}/server.rs"), format!("{src}/sse/mod.rs")];
        for entry in std::fs::read_dir(format!("{src}/api")).unwrap() {
            let path = entry.unwrap().path();
            if !path.ends_with("openapi.rs") {
                files.push(path.display().to_string());
            }
        }
        let mut used = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // `ApiError::new(StatusCode::X, "CODE", ...)`: the code is the first string literal.
            for chunk in text.split("ApiError::new(").skip(1) {
                let code = chunk.split('"').nth(1).unwrap_or_default();
                used.push((file.clone(), code.to_owned()));
            }
        }
        assert!(used.len() > 15, "the scan found the error sites: {used:?}");
        for (file, code) in used {
            assert!(
                documented.contains(&code),
                "{file}: code {code} is not in ErrorCode"
            );
        }
        for code in ["VALIDATION_ERROR", "NOT_FOUND", "STORE_UNAVAILABLE"] {
            assert!(documented.iter().any(|c| c == code));
        }
    }

    #[test]
    fn every_api_route_is_documented() {
        let doc = serde_json::to_value(document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let normalise = |p: &str| {
            let mut out = String::new();
            let mut inside = false;
            for c in p.chars() {
                match c {
                    '{' => {
                        inside = true;
                        out.push('{');
                    }
                    '}' => {
                        inside = false;
                        out.push('}');
                    }
                    _ if inside => {}
                    _ => out.push(c),
                }
            }
            out
        };
        let documented: Vec<String> = paths.keys().map(|p| normalise(p)).collect();
        let router = include_str!("mod.rs");
        let mut routes = 0;
        for chunk in router.split(".route(\"").skip(1) {
            let route = chunk.split('"').next().unwrap();
            if route.starts_with("/api/") || route == "/healthz" || route == "/metrics" {
                routes += 1;
                assert!(
                    documented.contains(&normalise(route)),
                    "route {route} is not in the OpenAPI document"
                );
            }
        }
        assert!(routes >= 10, "found the routes");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_security_schemes() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for scheme in ["apiKey", "apiKeyBearer", "proxyIdentity", "adminToken"] {
            assert!(
                doc["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
        let post = &doc["paths"]["/api/ai/generate-flashcards"]["post"];
        for status in [
            "202", "400", "401", "408", "413", "415", "422", "429", "503",
        ] {
            assert!(post["responses"][status].is_object(), "POST {status}");
        }
        assert!(post["responses"]["429"]["headers"]["Retry-After"].is_object());
        assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object());
        let events = &doc["paths"]["/api/job-events"]["get"];
        assert!(events["responses"]["200"]["content"]["text/event-stream"].is_object());
        for (name, _) in SSE_EVENTS {
            assert!(
                events["description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{name}`"))
            );
        }
    }
}
