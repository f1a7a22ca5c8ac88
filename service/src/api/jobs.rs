//! Job endpoints: submit (`POST /api/ai/generate-flashcards`), status, queue statistics.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, FieldError, json_rejection};
use crate::config::ApiSettings;
use crate::job::{JobRecord, JobRequest, is_valid_job_id};
use crate::sse::render::iso;
use crate::store::{EnqueueOptions, RateDecision};

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

/// Validates the seed's body; the `user-id` header stands in for a missing `userId`.
pub fn validate(
    body: &Value,
    headers: &HeaderMap,
    settings: &ApiSettings,
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
        headers.get("user-id").and_then(|v| v.to_str().ok()),
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

pub async fn generate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(json_rejection)?;
    let settings = &state.settings;
    let request = validate(&body, &headers, &settings.api)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_CHARS => {
                // Scope keys per user so two users cannot collide.
                Some(format!("{}:{key}", request.user_id))
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_IDEMPOTENCY_KEY",
                    format!(
                        "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
                    ),
                ));
            }
        },
    };
    state.budget.admit(&*state.store).await?;
    let api = &settings.api;
    if api.rate_limit_jobs > 0 {
        let window = std::time::Duration::from_secs(api.rate_limit_window_seconds.max(1));
        if let RateDecision::Limited { retry_after } = state
            .store
            .rate_limit(&request.user_id, window, api.rate_limit_jobs)
            .await?
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "Too many jobs: at most {} per {} s per user",
                    api.rate_limit_jobs, api.rate_limit_window_seconds
                ),
            )
            .with_retry_after(retry_after.as_secs_f64().ceil() as u64));
        }
    }
    let options = EnqueueOptions {
        idempotency_key,
        max_attempts: settings.queue.max_attempts,
    };
    let enqueued = state.store.enqueue(request, options).await?;
    let job = enqueued.job;
    let (status_url, events_url) = urls(&job.id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({
            "jobId": job.id,
            "status": job.state.as_str(),
            "statusUrl": status_url,
            "eventsUrl": events_url,
        })),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if !enqueued.created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
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
    body
}

pub async fn status(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !is_valid_job_id(&job_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_JOB_ID",
            "Not a valid job id",
        ));
    }
    match state.store.job(&job_id).await? {
        Some(job) => Ok(Json(status_body(&job))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "JOB_NOT_FOUND",
            format!("No job {job_id} (unknown, or expired after its retention time)"),
        )),
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
