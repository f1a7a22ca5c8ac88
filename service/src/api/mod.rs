//! The HTTP API (axum): routes, shared state, health, metrics and request accounting.

pub mod alerts;
pub mod auth;
pub mod batch;
pub mod budget;
pub mod cancel;
pub mod console;
pub mod error;
pub mod events;
pub mod identity;
pub mod jobs;
pub mod openapi;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::config::Settings;
use crate::metrics::{Metrics, SharedState};
use crate::sse::follow::Followers;
use auth::AdminAccess;
use error::ApiError;
use flashcard_store::Store;
use flashcard_store::watch::StoreWatch;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// SSE followers' hub and what their streams need.
    pub followers: Arc<Followers>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub store_watch: Arc<StoreWatch>,
    pub admin: AdminAccess,
    pub identities: Arc<identity::Identities>,
    /// This process's own circuit breaker state, when it runs a worker.
    pub local_breaker: Option<Arc<dyn Fn() -> &'static str + Send + Sync>>,
    /// Fires when the process starts draining (SIGTERM): `/readyz` fails from then on.
    pub draining: CancellationToken,
}

impl AppState {
    /// Reads the shared state the gauges and alert flags describe (the store reads in parallel).
    pub async fn shared_state(&self) -> Result<SharedState, ApiError> {
        let store = &self.store;
        let (counts, workers, budget) =
            tokio::try_join!(store.counts(), store.workers(), store.budget_state())?;
        Ok(SharedState {
            counts,
            workers,
            kill_switch: budget.kill_switch,
            spend: budget.spend,
            period: budget.period,
            limit_micros: budget.config.limit_micros,
            warn_ratio: (budget.config.warn_percent / 100.0).clamp(0.0, 1.0),
        })
    }
}

/// The interactive SSE demo page (the seed's `sse-example.html`).
const DEMO_PAGE: &str = include_str!("../../static/sse-example.html");

/// Which endpoints one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything (one listener).
    All,
    /// What clients use: jobs, their events, the OpenAPI document, the demo page; and the admin
    /// endpoints and the probes.
    Clients,
    /// What operators use: metrics, alert flags, queue and SSE stats, the console; and the
    /// admin endpoints and the probes.
    Operations,
}

/// Routes of api and standalone mode on one listener.
pub fn router(state: AppState, surface: Surface) -> Router {
    // The admin endpoints (behind the admin token) on both: the seed's clients call them on the
    // API, and the console's kill-switch button on its own port.
    let admin = Router::new()
        .route("/api/admin/budget/status", get(budget::status))
        .route(
            "/api/admin/budget/kill-switch",
            post(budget::set_kill_switch),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let mut routes = probes().merge(admin);
    if surface != Surface::Operations {
        routes = routes
            .route("/api/ai/generate-flashcards", post(jobs::generate))
            .route(
                "/api/ai/generate-flashcards/batch",
                post(batch::generate_batch),
            )
            .route("/api/job-status/{job_id}", get(jobs::status))
            .route("/api/jobs/{job_id}", delete(cancel::cancel))
            .route("/api/job-events", get(events::job_events))
            .route("/api/openapi.json", get(openapi::serve))
            .route("/sse-example.html", get(|| async { Html(DEMO_PAGE) }));
    }
    if surface != Surface::Clients {
        routes = routes
            .route("/metrics", get(metrics))
            .route("/api/queue/stats", get(jobs::queue_stats))
            .route("/api/sse/stats", get(sse_stats))
            .route("/api/metrics/alerts", get(alerts::alerts))
            .route("/console", get(console::page))
            .route("/console/vendor/{file}", get(console::vendor))
            .route("/api/console/events", get(console::events));
    }
    let routes = routes.layer(DefaultBodyLimit::max(state.settings.api.max_body_bytes));
    let cors = cors_layer(&state.settings.api.cors_origins);
    let router = finish(routes, state);
    // Outermost, so preflights are answered before routing and error answers carry CORS too.
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Routes of worker mode: the probes, and metrics unless they have their own listener.
pub fn worker_router(state: AppState, surface: Surface) -> Router {
    let routes = match surface {
        Surface::Clients => probes(),
        Surface::All | Surface::Operations => probes().route("/metrics", get(metrics)),
    };
    finish(routes, state)
}

fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
}

fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .fallback(|| async { ApiError::not_found("No such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            track_requests,
        ))
        // Outside the accounting, so the server span covers all of the request.
        .layer(middleware::from_fn(crate::telemetry::http::trace_requests))
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(Any)
            .expose_headers([header::LOCATION, header::RETRY_AFTER]),
    )
}

/// Counts requests by route template and status, with latency (SSE streams count at open).
async fn track_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let started = Instant::now();
    let mut response = next.run(request).await;
    // Draining: a keep-alive client is asked to open its next connection elsewhere, so it moves
    // off during the window instead of finding its connection closed at the end.
    if http1 && state.draining.is_cancelled() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    state.metrics.http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// How long readiness waits for the store's answer before it counts the store as down.
const READY_STORE_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether this process should get new connections. Not ready while draining; nor when this
/// process's own link to the store hangs (a ping unanswered in time: a half-open connection
/// that another pod may not have), nor when the store answers but the live event feed does not
/// (it would leave this pod's followers waiting for their heartbeat re-check). A store that
/// refuses or drops connections keeps the pod ready: every pod sees that same store, and the
/// pod itself answers `503 STORE_UNAVAILABLE` with `Retry-After`, which a client can act on,
/// where an empty Service leaves only the proxy's own error page.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DRAINING",
            "This process is shutting down; connect to another one",
        )
        .into_response();
    }
    match tokio::time::timeout(READY_STORE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) if state.followers.hub.feed_stalled() => {
            tracing::warn!("not ready: the job event feed stopped answering");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "FEED_STALLED",
                "The job event feed stopped answering; reconnecting",
            )
            .into_response()
        }
        Ok(Ok(())) => Json(json!({"status": "ready", "store": "ok"})).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "store unreachable; staying ready (requests get 503)");
            Json(json!({"status": "ready", "store": "unavailable"})).into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: the store did not answer in time");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "The store did not answer in time",
            )
            .into_response()
        }
    }
}

/// Connection and delivery counters; which jobs are followed (job ids are all that guards a
/// job in `body` mode) only with the admin token.
async fn sse_stats(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Json<openapi::SseStatsBody> {
    let stats = state.followers.hub.stats();
    let admin = auth::presents_admin_token(&state.admin, &headers);
    Json(openapi::SseStatsBody {
        connections: stats.connections,
        max_connections: stats.max_connections,
        subscribed_jobs: stats.subscribed_jobs,
        subscriptions_per_job: admin.then(|| stats.subscriptions_per_job.into_iter().collect()),
        events_sent: stats.events_sent,
        followers_caught_up: stats.followers_caught_up,
    })
}

/// The peer address of a request (`0.0.0.0:0` when the server did not record one).
pub struct Peer(pub std::net::SocketAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0)
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
        ))
    }
}

/// The exposition: always answers. While the store is unreachable the store-derived gauges are
/// left out and `flashcards_store_up` is 0, so HTTP and breaker metrics stay visible exactly
/// when they are needed.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let local = state.local_breaker.as_ref().map(|f| f());
    match state.shared_state().await {
        Ok(shared) => state.metrics.observe_shared(&shared, local),
        Err(_) => state.metrics.store_unreachable(local),
    }
    let text = state.metrics.encode().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "METRICS_ENCODING",
            "Could not encode metrics",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
