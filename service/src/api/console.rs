//! The operations console: `GET /console` (one HTML page, no build step) and its live feed
//! `GET /api/console/events` (Server-Sent Events, one `snapshot` event every
//! [`DEFAULT_INTERVAL`]).
//!
//! A snapshot holds what a person running a pipeline looks at: the queue by state, final
//! outcomes per minute (the page turns them into throughput and failure-rate charts), p50/p95
//! duration and queue wait over the newest [`RECENT_JOBS`] finished jobs, the workers with their
//! heartbeat age, active jobs and breaker state, spend against the budget, the kill-switch, and
//! the alert flags of `/api/metrics/alerts` with the runbook link of each alert rule. It shows
//! nothing that `/api/queue/stats` and `/api/metrics/alerts` do not already show without a
//! token; switching the kill-switch goes through the admin endpoint with the admin token.
//!
//! Each open console reads the store once per interval (a handful of reads and one pipeline of
//! at most [`RECENT_JOBS`] small hash reads); at most [`MAX_STREAMS`] are open per process.
//! The charting library (uPlot, MIT) is vendored under `static/vendor/` with its licence and
//! served from the binary.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::alerts::{AlertInputs, evaluate};
use super::budget::kill_switch_json;
use super::error::ApiError;
use crate::metrics::breaker_summary;
use flashcard_core::budget::micros_to_usd;
use flashcard_core::job::{JobState, iso};
use flashcard_monitoring::{AlertThresholds, rule_groups};
use flashcard_store::{FinishedJob, MinuteOutcomes};

const PAGE: &str = include_str!("../../static/console.html");
const UPLOT_JS: &str = include_str!("../../static/vendor/uPlot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../static/vendor/uPlot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../static/vendor/uPlot/LICENSE");

/// Time between two snapshots of one console.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Bounds of `?intervalMs=`.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
const MAX_INTERVAL: Duration = Duration::from_secs(30);
/// Finished jobs the duration percentiles are taken over.
pub const RECENT_JOBS: usize = 200;
/// Minutes of outcome history in a snapshot.
pub const OUTCOME_MINUTES: u64 = 15;
/// Open console streams per process; more get 503.
pub const MAX_STREAMS: usize = 32;

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// The alert flags of `/api/metrics/alerts` and the alert rule behind each.
const FLAG_RULES: &[(&str, &str)] = &[
    ("queueDepthHigh", "FlashcardQueueDepthHigh"),
    ("queueDepthCritical", "FlashcardQueueDepthCritical"),
    ("failureRateHigh", "FlashcardJobFailureRateHigh"),
    ("circuitBreakerOpen", "FlashcardCircuitBreakerOpen"),
    ("workerStalled", "FlashcardWorkerStalled"),
    ("budgetNearlyExhausted", "FlashcardBudgetNearlyExhausted"),
    ("killSwitchActive", "FlashcardKillSwitchActive"),
];

/// The `runbook_url` annotation of each alert rule (the rules are the source of the links).
fn runbook_urls() -> &'static Vec<(String, String)> {
    static URLS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    URLS.get_or_init(|| {
        rule_groups(&AlertThresholds::default(), None)
            .into_iter()
            .flat_map(|g| g.rules)
            .filter_map(|r| {
                let url = r.annotations.get("runbook_url")?.clone();
                Some((r.alert, url))
            })
            .collect()
    })
}

fn runbook_url(alert: &str) -> Option<&'static str> {
    runbook_urls()
        .iter()
        .find(|(name, _)| name == alert)
        .map(|(_, url)| url.as_str())
}

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The vendored files, cached for a day (they change only with the binary).
pub async fn vendor(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "uPlot.iife.min.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
        "LICENSE" => (UPLOT_LICENSE, "text/plain; charset=utf-8"),
        _ => return ApiError::not_found("No such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// The `p`-quantile (0..=1) of sorted values, by the nearest-rank method.
fn quantile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Duration and queue-wait percentiles of finished jobs.
pub fn durations(jobs: &[FinishedJob]) -> Value {
    let mut run: Vec<u64> = jobs
        .iter()
        .filter_map(|j| Some(j.finished_at.saturating_sub(j.started_at?)))
        .collect();
    let mut wait: Vec<u64> = jobs
        .iter()
        .filter_map(|j| Some(j.started_at?.saturating_sub(j.created_at)))
        .collect();
    run.sort_unstable();
    wait.sort_unstable();
    json!({
        "jobs": jobs.len(),
        "completed": jobs.iter().filter(|j| j.state == JobState::Completed).count(),
        "failed": jobs.iter().filter(|j| j.state == JobState::Failed).count(),
        "p50Ms": quantile(&run, 0.5),
        "p95Ms": quantile(&run, 0.95),
        "waitP50Ms": quantile(&wait, 0.5),
        "waitP95Ms": quantile(&wait, 0.95),
    })
}

/// One snapshot of the pipeline (see the module doc).
pub async fn snapshot(state: &AppState) -> Result<Value, ApiError> {
    let settings = &state.settings.alerts;
    let window = Duration::from_secs(settings.failure_window_seconds.max(60));
    let store = &state.store;
    let (shared, outcomes, minutes, recent) = tokio::try_join!(
        state.shared_state(),
        async { Ok(store.outcomes(window).await?) },
        async {
            Ok::<Vec<MinuteOutcomes>, ApiError>(
                store
                    .outcomes_by_minute(Duration::from_secs(OUTCOME_MINUTES * 60))
                    .await?,
            )
        },
        async { Ok::<_, ApiError>(store.recent_finished(RECENT_JOBS).await?) },
    )?;
    let now = store.now_ms();
    let report = evaluate(
        settings,
        &AlertInputs {
            shared: &shared,
            outcomes,
            now_ms: now,
        },
    );
    let alerts: Vec<Value> = FLAG_RULES
        .iter()
        .map(|(flag, alert)| {
            json!({
                "flag": flag,
                "alert": alert,
                "active": report.alerts.named().iter().any(|(name, on)| name == flag && *on),
                "runbookUrl": runbook_url(alert),
            })
        })
        .collect();
    let workers: Vec<Value> = shared
        .workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "pod": w.pod,
                "active": w.active,
                "concurrency": w.concurrency,
                "breaker": w.breaker,
                "draining": w.draining,
                "heartbeatAgeSeconds": now.saturating_sub(w.last_seen) as f64 / 1000.0,
            })
        })
        .collect();
    let percent = if shared.limit_micros > 0 {
        shared.spend.spent_micros as f64 * 100.0 / shared.limit_micros as f64
    } else {
        0.0
    };
    Ok(json!({
        "timestamp": iso(now),
        "now": now,
        "pipeline": state.settings.pipeline,
        "queue": shared.counts,
        "outcomesByMinute": minutes,
        "failureWindow": {
            "seconds": window.as_secs(),
            "completed": outcomes.completed,
            "failed": outcomes.failed,
            "percent": report.metrics.failure_rate.percent,
        },
        "durations": durations(&recent),
        "workers": workers,
        "circuitBreaker": breaker_summary(shared.workers.iter().map(|w| w.breaker.as_str())),
        "budget": {
            "periodKey": shared.period,
            "spentUsd": micros_to_usd(shared.spend.spent_micros),
            "reservedUsd": micros_to_usd(shared.spend.reserved_micros),
            "settledAtBoundUsd": micros_to_usd(shared.spend.bound_micros),
            "settledAtBoundCalls": shared.spend.bound_calls,
            "limitUsd": micros_to_usd(shared.limit_micros),
            "percentUsed": (percent * 100.0).round() / 100.0,
            "warnAtPercent": shared.warn_ratio * 100.0,
        },
        "killSwitch": kill_switch_json(&shared.kill_switch),
        "alerts": alerts,
        "alertsActive": report.alerts_active,
        "thresholds": report.thresholds,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsQuery {
    interval_ms: Option<u64>,
}

/// Counts an open stream; the slot is given back on drop.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<Self> {
        OPEN_STREAMS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn event(snapshot: Result<Value, ApiError>) -> Event {
    match snapshot {
        Ok(body) => Event::default().event("snapshot").data(body.to_string()),
        Err(e) => {
            tracing::warn!(error = %e.message, "console snapshot failed");
            Event::default()
                .event("unavailable")
                .data(json!({"error": e.message, "code": e.code}).to_string())
        }
    }
}

/// `GET /api/console/events`: a `snapshot` at once and then every interval (an `unavailable`
/// event instead while the store cannot be read), until the client leaves or the process
/// shuts down.
pub async fn events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            "The query string does not parse (intervalMs is a whole number of milliseconds)",
        ));
    };
    let Some(slot) = StreamSlot::take() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONSOLES",
            format!("At most {MAX_STREAMS} consoles may be open per process"),
        )
        .with_retry_after(10));
    };
    let interval = query
        .interval_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_INTERVAL)
        .clamp(MIN_INTERVAL, MAX_INTERVAL);
    let stream = snapshots(state, interval, slot);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    Ok(response)
}

fn snapshots(
    state: AppState,
    interval: Duration,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let closing = state.followers.hub.closing().clone();
    futures::stream::unfold((state, true, slot), move |(state, first, slot)| {
        let closing = closing.clone();
        async move {
            if !first {
                tokio::select! {
                    _ = closing.cancelled() => return None,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
            if closing.is_cancelled() {
                return None;
            }
            let item = event(snapshot(&state).await);
            Some((Ok(item), (state, false, slot)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.95), Some(95));
        assert_eq!(quantile(&[7], 0.95), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn every_flag_has_a_runbook_link_from_the_rules() {
        for (_, alert) in FLAG_RULES {
            let url = runbook_url(alert).unwrap_or_else(|| panic!("no rule {alert}"));
            assert!(
                url.ends_with(&format!("RUNBOOK.md#{}", alert.to_lowercase())),
                "{url}"
            );
        }
    }

    #[test]
    fn the_console_lists_every_alert_flag() {
        let names: Vec<&str> = crate::api::alerts::AlertFlags::default()
            .named()
            .iter()
            .map(|(name, _)| *name)
            .collect();
        let listed: Vec<&str> = FLAG_RULES.iter().map(|(flag, _)| *flag).collect();
        assert_eq!(names, listed);
    }
}
