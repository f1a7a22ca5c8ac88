//! `GET /api/job-events?jobId=`: live job events over Server-Sent Events, with resume.
//!
//! Order of a connection: subscribe to the hub first, then replay the job's stored events after
//! `Last-Event-ID` (header, or `lastEventId` query parameter for clients that cannot set
//! headers), then forward live events, skipping any `seq` already sent. Subscribing before the
//! replay means no event can fall between the two; the `seq` check removes the overlap. The
//! stream ends after `completed` or `failed`.
//!
//! Unknown job ids get `404` JSON: EventSource treats any non-200 answer as fatal and stops
//! reconnecting. A reconnect after the terminal event was delivered gets `204 No Content`, which
//! the SSE spec defines as "stop reconnecting".

pub mod hub;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::api::{AppState, Peer};
use crate::events;
use crate::job::{is_valid_job_id, now_ms};
use crate::store::StoredEvent;
use hub::Subscription;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsQuery {
    job_id: Option<String>,
    last_event_id: Option<String>,
}

fn last_event_id(headers: &HeaderMap, query: &EventsQuery) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.last_event_id.as_deref())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub async fn job_events(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let client = state.identities.client(&headers, peer)?;
    let Ok(Query(query)) = query else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            "The query string does not parse (one jobId, one lastEventId at most)",
        ));
    };
    let job_id = match query.job_id.as_deref() {
        Some(id) if is_valid_job_id(id) => id.to_owned(),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_JOB_ID",
                "jobId is not a valid job id",
            ));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "MISSING_JOB_ID",
                "Query parameter jobId is required",
            ));
        }
    };
    let after = last_event_id(&headers, &query);
    let Some(subscription) = state.hub.subscribe(&job_id) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONNECTIONS",
            "This server holds its maximum of SSE connections; retry shortly",
        )
        .with_retry_after(5));
    };
    let job = match state.store.job(&job_id).await? {
        Some(job) if state.identities.may_read(&client, &job.owner) => job,
        _ => return Err(crate::api::jobs::job_not_found(&job_id)),
    };
    let history = state.store.events_after(&job_id, after).await?;
    let ended = job.state.is_terminal() && job.event_seq <= after;
    if ended {
        // The client already has the terminal event: tell EventSource to stop reconnecting.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let settings = &state.settings.api;
    let connection = Connection {
        state: state.clone(),
        job_id: job_id.clone(),
        subscription,
        pending: VecDeque::new(),
        sent_seq: after,
        done: false,
        heartbeat: tokio::time::interval_at(
            tokio::time::Instant::now()
                + Duration::from_secs(settings.sse_heartbeat_seconds.max(1)),
            Duration::from_secs(settings.sse_heartbeat_seconds.max(1)),
        ),
    };
    let connected = Event::default()
        .event("connected")
        .retry(Duration::from_millis(settings.sse_retry_ms))
        .data(events::connected(&job_id, job.state.as_str(), now_ms()));
    state.hub.event_sent("connected");
    let mut connection = connection;
    connection.pending.push_back(connected);
    for event in history {
        connection.queue_stored(event);
    }
    let mut response = Sse::new(connection.into_stream()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The state of one SSE connection.
struct Connection {
    state: AppState,
    job_id: String,
    subscription: Subscription,
    pending: VecDeque<Event>,
    sent_seq: u64,
    done: bool,
    heartbeat: tokio::time::Interval,
}

impl Connection {
    /// Queues a stored event unless it was sent already; marks the end after a terminal one.
    fn queue_stored(&mut self, event: StoredEvent) {
        if self.done || event.seq <= self.sent_seq {
            return;
        }
        self.sent_seq = event.seq;
        let kind = event.kind();
        let sse = Event::default()
            .event(kind)
            .id(event.seq.to_string())
            .data(String::from_utf8_lossy(&event.data));
        self.state.hub.event_sent(kind);
        self.pending.push_back(sse);
        self.done = events::is_terminal(kind);
    }

    fn heartbeat_event(&self) -> Event {
        self.state.hub.event_sent("heartbeat");
        Event::default().event("heartbeat").data(events::heartbeat(
            &self.job_id,
            self.state.hub.job_connections(&self.job_id),
            now_ms(),
        ))
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut conn| async move {
            loop {
                if let Some(event) = conn.pending.pop_front() {
                    return Some((Ok(event), conn));
                }
                if conn.done {
                    return None;
                }
                let closing = conn.state.hub.closing().clone();
                tokio::select! {
                    // Shutting down: end the stream; EventSource reconnects (to another pod)
                    // with Last-Event-ID and misses nothing.
                    _ = closing.cancelled() => return None,
                    received = conn.subscription.events.recv() => match received {
                        Some(event) => conn.queue_stored(event),
                        // Dropped by the hub as too slow: end; the client resumes by id.
                        None => return None,
                    },
                    _ = conn.heartbeat.tick() => {
                        let beat = conn.heartbeat_event();
                        return Some((Ok(beat), conn));
                    }
                }
            }
        })
    }
}
