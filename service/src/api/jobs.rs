//! Job endpoints: submit (`POST /api/ai/generate-flashcards`), status, queue statistics.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{ApiError, FieldError, json_rejection};
use super::{AppState, Peer};
use crate::config::ApiSettings;
use std::time::Duration;

use crate::job::{JobRecord, JobRequest, JobState, is_valid_job_id, iso, new_job_id};
use crate::keyspace::{fingerprint, idempotency_digest};
use crate::store::{Admission, Idempotency, RateLimit, Submission};

const MAX_LABEL_CHARS: usize = 200;
const MAX_USER_ID_CHARS: usize = 128;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// The message and code of the kill-switch refusal (the seed's response).
pub const BUDGET_LIMIT_MESSAGE: &str = "Service temporarily unavailable due to budget limits";

fn required_text(
    body: &Value,
    field: &str,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let mut fail = |message: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            message,
        })
    };
    match body.get(field) {
        None | Some(Value::Null) => fail(format!("{field} is required")),
        Some(Value::String(s)) if s.trim().is_empty() => fail(format!("{field} must not be empty")),
        Some(Value::String(s)) if s.chars().count() > max => {
            fail(format!("{field} must be at most {max} characters"))
        }
        Some(Value::String(s)) => return Some(s.trim().to_owned()),
        Some(_) => fail(format!("{field} must be a string")),
    }
    None
}

/// Validates the seed's body; the `user-id` header stands in for a missing `userId`, and so
/// does `identified` (the authenticated principal), when there is one.
pub fn validate(
    body: &Value,
    headers: &HeaderMap,
    settings: &ApiSettings,
    identified: Option<&str>,
) -> Result<JobRequest, ApiError> {
    if !body.is_object() {
        return Err(ApiError::validation(vec![FieldError {
            field: "body".into(),
            message: "body must be a JSON object".into(),
        }]));
    }
    let mut errors = Vec::new();
    let content = required_text(body, "content", settings.max_content_chars, &mut errors);
    let subject = required_text(body, "subject", MAX_LABEL_CHARS, &mut errors);
    let topic = required_text(body, "topic", MAX_LABEL_CHARS, &mut errors);
    let user_id = match (
        body.get("userId"),
        headers
            .get("user-id")
            .and_then(|v| v.to_str().ok())
            .or(identified),
    ) {
        (None, Some(header)) if !header.trim().is_empty() => {
            let mut header_body = serde_json::Map::new();
            header_body.insert("userId".into(), json!(header));
            required_text(
                &Value::Object(header_body),
                "userId",
                MAX_USER_ID_CHARS,
                &mut errors,
            )
        }
        _ => required_text(body, "userId", MAX_USER_ID_CHARS, &mut errors),
    };
    let card_count = match body.get("cardCount").or_else(|| body.get("count")) {
        None | Some(Value::Null) => Some(settings.default_card_count),
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(settings.max_card_count) => Some(n as u32),
            _ => {
                errors.push(FieldError {
                    field: "cardCount".into(),
                    message: format!(
                        "cardCount must be an integer from 1 to {}",
                        settings.max_card_count
                    ),
                });
                None
            }
        },
    };
    match (content, subject, topic, user_id, card_count) {
        (Some(content), Some(subject), Some(topic), Some(user_id), Some(card_count))
            if errors.is_empty() =>
        {
            Ok(JobRequest {
                content,
                subject,
                topic,
                user_id,
                card_count,
            })
        }
        _ => Err(ApiError::validation(errors)),
    }
}

fn urls(id: &str) -> (String, String) {
    (
        format!("/api/job-status/{id}"),
        format!("/api/job-events?jobId={id}"),
    )
}

/// The `Idempotency-Key` header: 1-200 visible ASCII characters (no spaces).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let visible = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_CHARS || !visible {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
            format!(
                "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters (no spaces)"
            ),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn accepted(job_id: &str, state: JobState, replayed: bool) -> Response {
    let (status_url, events_url) = urls(job_id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({
            "jobId": job_id,
            "status": state.as_str(),
            "statusUrl": status_url,
            "eventsUrl": events_url,
        })),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub async fn generate(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let client = state.identities.client(&headers, peer)?;
    let Json(body) = body.map_err(json_rejection)?;
    let settings = &state.settings;
    let request = validate(&body, &headers, &settings.api, client.principal.as_deref())?;
    let owner = state.identities.owner(&client, &request.user_id);
    let idempotency = idempotency_key(&headers)?.map(|key| Idempotency {
        digest: idempotency_digest(&owner, &key),
        // The validated request is what the job runs: the same request is the same body.
        fingerprint: fingerprint(&serde_json::to_string(&request).unwrap_or_default()),
        ttl: Duration::from_secs(settings.queue.retention_seconds.max(1)),
    });
    let api = &settings.api;
    let rate_limit = (api.rate_limit_jobs > 0).then(|| RateLimit {
        max: api.rate_limit_jobs,
        window: Duration::from_secs(api.rate_limit_window_seconds.max(1)),
    });
    let submission = Submission {
        job_id: new_job_id(),
        request,
        owner,
        idempotency,
        rate_limit,
        max_attempts: settings.queue.max_attempts,
        // The POST's span context: the worker's spans of this job join its trace.
        traceparent: crate::telemetry::current_traceparent(),
    };
    match state.store.submit(submission).await? {
        Admission::Accepted { job_id } => Ok(accepted(&job_id, JobState::Waiting, false)),
        Admission::Replayed { job_id, state } => Ok(accepted(&job_id, state, true)),
        Admission::KeyReused { job_id } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            format!(
                "This Idempotency-Key was already used for a different request (job {job_id}); use a new key"
            ),
        )),
        Admission::Refused(_) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "BUDGET_LIMIT_EXCEEDED",
            BUDGET_LIMIT_MESSAGE,
        )),
        Admission::RateLimited { retry_after } => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "Too many jobs: at most {} per {} s per user",
                api.rate_limit_jobs, api.rate_limit_window_seconds
            ),
        )
        .with_retry_after(retry_after.as_secs_f64().ceil() as u64)),
    }
}

/// The status document of a job.
pub fn status_body(job: &JobRecord) -> Value {
    let (status_url, events_url) = urls(&job.id);
    let mut body = json!({
        "jobId": job.id,
        "status": job.state.as_str(),
        "attemptsMade": job.attempts_made,
        "maxAttempts": job.max_attempts,
        "createdAt": iso(job.created_at),
        "statusUrl": status_url,
        "eventsUrl": events_url,
    });
    if let Some(at) = job.started_at {
        body["startedAt"] = json!(iso(at));
    }
    if let Some(at) = job.finished_at {
        body["finishedAt"] = json!(iso(at));
        if let Some(started) = job.started_at {
            body["duration"] = json!(at.saturating_sub(started));
        }
    }
    if let Some(result) = &job.result {
        body["result"] = json!(result);
    }
    if let Some(error) = &job.error {
        body["error"] = json!(error);
    }
    if let Some(code) = &job.error_code {
        body["code"] = json!(code);
    }
    body
}

fn invalid_job_id() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "INVALID_JOB_ID",
        "Not a valid job id",
    )
}

/// The answer for an unknown job, and for someone else's job when ownership is enforced (so
/// a job id reveals nothing).
pub fn job_not_found(job_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "JOB_NOT_FOUND",
        format!("No job {job_id} (unknown, or expired after its retention time)"),
    )
}

pub async fn status(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    job_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let client = state.identities.client(&headers, peer)?;
    let Ok(Path(job_id)) = job_id else {
        return Err(invalid_job_id());
    };
    if !is_valid_job_id(&job_id) {
        return Err(invalid_job_id());
    }
    match state.store.job(&job_id).await? {
        Some(job) if state.identities.may_read(&client, &job.owner) => Ok(Json(status_body(&job))),
        _ => Err(job_not_found(&job_id)),
    }
}

pub async fn queue_stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let counts = state.store.counts().await?;
    let workers = state.store.workers().await?;
    Ok(Json(json!({
        "stats": {
            "waiting": counts.waiting,
            "active": counts.active,
            "delayed": counts.delayed,
            "completed": counts.completed,
            "failed": counts.failed,
            "workers": workers.len(),
        },
        "workers": workers,
        "timestamp": iso(crate::job::now_ms()),
    })))
}
