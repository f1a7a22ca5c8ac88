//! `GET /api/job-events?jobId=`: follow a job live over Server-Sent Events, with resume
//! (`Last-Event-ID` header, or the `lastEventId` query parameter for clients that cannot set
//! headers). The stream itself is `sse::follow`.
//!
//! Unknown job ids (and, with client identity on, other clients' jobs) get `404` JSON:
//! EventSource treats any non-200 answer as fatal and stops reconnecting. A reconnect after the
//! terminal event was delivered gets `204 No Content`, which the SSE spec defines as "stop
//! reconnecting".

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::{AppState, Peer};
use crate::sse::follow::{self, Start};
use flashcard_core::job::is_valid_job_id;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsQuery {
    job_id: Option<String>,
    last_event_id: Option<String>,
    /// The owner token of an anonymous client (EventSource cannot set `X-Owner-Token`).
    owner_token: Option<String>,
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
    let mut client = state.identities.client(&headers, peer)?;
    let Ok(Query(query)) = query else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            "The query string does not parse (one jobId, one lastEventId, one ownerToken at most)",
        ));
    };
    let query_token = query
        .owner_token
        .as_deref()
        .map(super::identity::parse_owner_token)
        .transpose()?;
    if client.owner_token.is_none() && state.identities.is_anonymous(&client) {
        client.owner_token = query_token;
    }
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
    let hub = &state.followers.hub;
    // Subscribed before the history is read, so no event falls between the two.
    let Some(subscription) = hub.subscribe(&job_id) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONNECTIONS",
            "This server holds its maximum of SSE connections; retry shortly",
        )
        .with_retry_after(5));
    };
    let job = match state.store.job(&job_id).await? {
        Some(job) if state.identities.may_read(&client, &job.owner) => job,
        _ => return Err(super::jobs::job_not_found(&job_id)),
    };
    let after = match follow::start(last_event_id(&headers, &query), job.state, job.event_seq) {
        // The client already has the terminal event: tell EventSource to stop reconnecting.
        Start::Ended => return Ok(StatusCode::NO_CONTENT.into_response()),
        Start::After(after) => after,
    };
    let history = state.store.events_after(&job_id, after).await?;
    let stream = follow::stream(
        state.followers.clone(),
        subscription,
        &job_id,
        job.state,
        after,
        history,
    );
    let mut response = Sse::new(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
