//! Job endpoints: submit (`POST /api/ai/generate-flashcards`), status, queue statistics.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, FieldError, json_rejection};
use super::{AppState, Peer};
use crate::config::ApiSettings;
use std::time::Duration;

use flashcard_core::job::{
    JobRecord, JobRequest, JobResult, JobState, is_valid_job_id, iso, new_job_id,
};
use flashcard_core::keyspace::{fingerprint, idempotency_digest};
use flashcard_store::WorkerInfo;
use flashcard_store::{Admission, Idempotency, RateLimit, Submission};

const MAX_LABEL_CHARS: usize = 200;
const MAX_USER_ID_CHARS: usize = 128;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// The body of `POST /api/ai/generate-flashcards` (the seed's). Documentation only: the handler
/// validates the JSON itself, so every bad field gets its own message in `details`. Text fields
/// are trimmed and must not be blank; other fields are ignored.
#[derive(Debug, ToSchema)]
#[schema(title = "GenerateRequest")]
#[allow(dead_code)]
pub struct GenerateRequest {
    /// The study text cards are made from (at most `--max-content-chars`, 50,000 by default).
    #[schema(min_length = 1, max_length = 50000, pattern = r"\S")]
    content: String,
    /// Subject of the text, e.g. `biology`.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    subject: String,
    /// Topic of the text, e.g. `cells`.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    topic: String,
    /// Who asks. Required in `body` identity mode unless the `user-id` header gives it; with an
    /// API key or a trusted identity header the authenticated principal stands in for it, and it
    /// is never used for rate limits or ownership there.
    #[schema(rename = "userId", min_length = 1, max_length = 128, pattern = r"\S")]
    user_id: Option<String>,
    /// Cards wanted (1 to `--max-card-count`, 50 by default). Missing or null: 10
    /// (`--default-card-count`).
    #[schema(rename = "cardCount", minimum = 1, maximum = 50)]
    card_count: Option<u32>,
    /// Older name of `cardCount` (used when `cardCount` is absent).
    #[schema(minimum = 1, maximum = 50, deprecated)]
    count: Option<u32>,
}

/// `202 Accepted`: the job is queued (or, for a replayed `Idempotency-Key`, the job the key was
/// first used for, in its current state).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAccepted {
    /// `generate-flashcards-<uuid v7>`.
    #[schema(example = "generate-flashcards-0199d7a4-5b1e-7c3a-9f1e-2b8c4d6e8f01")]
    pub job_id: String,
    pub status: JobState,
    /// `/api/job-status/{jobId}` (also in `Location`).
    pub status_url: String,
    /// `/api/job-events?jobId={jobId}`.
    pub events_url: String,
    /// For a client without an identity where jobs belong to their owner (`proxy` mode without
    /// the proxy's header): the token the job belongs to. Present it as `X-Owner-Token` to read
    /// the job's status, and as `ownerToken` to follow its events; send it with later jobs (and
    /// with a retried POST) to keep them together. The server makes one when the request
    /// brought none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_token: Option<String>,
}

/// The status document of a job (`GET /api/job-status/{jobId}`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatusBody {
    pub job_id: String,
    pub status: JobState,
    /// Attempts started so far (a stalled attempt counts).
    pub attempts_made: u32,
    pub max_attempts: u32,
    /// ISO-8601 UTC time, e.g. `2025-10-12T10:30:00.000Z`.
    pub created_at: String,
    pub status_url: String,
    pub events_url: String,
    /// When the newest attempt started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the job completed or failed for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Milliseconds from `startedAt` to `finishedAt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// The cards, once `completed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// Why the job failed (or why its last attempt failed, while it waits for a retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Stable code of a failed job: `BUDGET_LIMIT_EXCEEDED` (the budget cannot cover it),
    /// `JOB_STALLED` (its worker died too often), `JOB_UNREADABLE` (its stored record was
    /// written in a shape this version cannot read, e.g. by a newer one), `PROVIDER_BAD_OUTPUT` (the model's replies
    /// held no usable card), `PROVIDER_REFUSED` (the model or its content filter declined),
    /// `OUTPUT_TRUNCATED` (the reply was cut off at the output token bound, e.g. a reasoning
    /// model that spent it thinking), `PROVIDER_REJECTED` (the provider refused the request:
    /// 4xx), `PROVIDER_RATE_LIMITED`, `PROVIDER_UNAVAILABLE` (timeouts, 5xx, unreachable, after
    /// the last attempt), `GENERATION_UNUSABLE` (the text holds nothing to make cards from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Jobs per state and live workers (`GET /api/queue/stats`).
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStatsBody {
    pub stats: QueueStatsCounts,
    /// Workers that sent a heartbeat recently.
    pub workers: Vec<WorkerInfo>,
    /// ISO-8601 UTC time of the answer.
    pub timestamp: String,
}

/// Jobs per state, and the number of live workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStatsCounts {
    pub waiting: u64,
    pub active: u64,
    pub delayed: u64,
    pub completed: u64,
    pub failed: u64,
    pub workers: usize,
}

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
        // `"userId": null` is the same as no `userId` (the schema allows it).
        body.get("userId").filter(|v| !v.is_null()),
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
    // `cardCount`, or its older name `count`; each one given must be valid (the document says
    // so), and `cardCount` wins when both are.
    let mut card_count_field = |field: &str| -> Option<Option<u32>> {
        let value = body.get(field).filter(|v| !v.is_null())?;
        // JSON has one number type: `3` and `3.0` are the same integer (JSON Schema agrees).
        let n = value.as_u64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 1e9)
                .map(|f| f as u64)
        });
        match n {
            Some(n) if n >= 1 && n <= u64::from(settings.max_card_count) => Some(Some(n as u32)),
            _ => {
                errors.push(FieldError {
                    field: field.to_owned(),
                    message: format!(
                        "{field} must be an integer from 1 to {}",
                        settings.max_card_count
                    ),
                });
                Some(None)
            }
        }
    };
    let card_count = card_count_field("cardCount");
    let count = card_count_field("count");
    let card_count = match (card_count, count) {
        (Some(given), _) | (None, Some(given)) => given,
        (None, None) => Some(settings.default_card_count),
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

pub fn urls(id: &str) -> (String, String) {
    (
        format!("/api/job-status/{id}"),
        format!("/api/job-events?jobId={id}"),
    )
}

/// The `Idempotency-Key` header: 1-200 visible ASCII characters (no spaces).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    checked_idempotency_key(value.as_bytes()).map(Some)
}

/// `400 INVALID_IDEMPOTENCY_KEY`.
pub fn invalid_idempotency_key() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "INVALID_IDEMPOTENCY_KEY",
        format!(
            "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters (no spaces)"
        ),
    )
}

/// An `Idempotency-Key` (header or a batch item's `idempotencyKey`), checked.
pub fn checked_idempotency_key(bytes: &[u8]) -> Result<String, ApiError> {
    let visible = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_CHARS || !visible {
        return Err(invalid_idempotency_key());
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn accepted(job_id: &str, status: JobState, replayed: bool, owner_token: Option<&str>) -> Response {
    let (status_url, events_url) = urls(job_id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            job_id: job_id.to_owned(),
            status,
            status_url: status_url.clone(),
            events_url,
            owner_token: owner_token.map(str::to_owned),
        }),
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

/// Queues a generation job. A retry with the same `Idempotency-Key` and the same body returns
/// the first job (`Idempotent-Replayed: true`) before the kill-switch and the rate limit are
/// consulted, so a retried 202 stays a 202.
#[utoipa::path(
    post,
    path = "/api/ai/generate-flashcards",
    tag = "jobs",
    operation_id = "generateFlashcards",
    request_body(content = GenerateRequest, content_type = "application/json"),
    params(
        ("user-id" = Option<String>, Header, description = "The seed's stand-in for a missing body `userId` (`body` identity mode)."),
        ("X-Owner-Token" = Option<String>, Header, nullable = false, description = "Owner token of an anonymous client (`proxy` identity mode without the proxy's header): the `ownerToken` of the 202 answer; 16-128 characters of `A-Za-z0-9_-`. Without it such a client gets a new one in the answer.", min_length = 16, max_length = 128, pattern = r"^[A-Za-z0-9_-]{16,128}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-200 visible ASCII characters, no spaces (IETF Idempotency-Key draft). Scoped to the client identity and bound to the body: the same key with another body gets 422 `IDEMPOTENCY_KEY_REUSED`. Kept as long as the job (`--retention-seconds`).", min_length = 1, max_length = 200, pattern = r"^[!-~]{1,200}$"),
    ),
    responses(
        (status = 202, description = "Queued, or replayed for a known `Idempotency-Key`.", body = JobAccepted,
         headers(
            ("Location" = String, description = "The job's status URL."),
            ("Idempotent-Replayed" = String, description = "`true` when this answers a retry of an earlier request with the same `Idempotency-Key`."),
         )),
        (status = 400, description = "`VALIDATION_ERROR` (with `details` per field), `INVALID_JSON`, `INVALID_IDEMPOTENCY_KEY` or `INVALID_OWNER_TOKEN`.", body = ErrorBody),
        (status = 401, description = "`api-key` identity mode: `UNAUTHORIZED` (no key) or `INVALID_API_KEY`.", body = ErrorBody),
        (status = 408, description = "`REQUEST_TIMEOUT`: the body did not arrive within `--request-body-timeout-ms`.", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: more than `--max-body-bytes` (256 KiB by default).", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body must be `application/json`.", body = ErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key was used for a different request.", body = ErrorBody),
        (status = 429, description = "`BUDGET_LIMIT_EXCEEDED` (kill-switch on) or `RATE_LIMITED` (with `Retry-After`).", body = ErrorBody,
         headers(("Retry-After" = Option<u64>, description = "Seconds until the rate-limit window frees a slot (`RATE_LIMITED` only)."))),
    ),
    security((), ("apiKey" = []), ("apiKeyBearer" = []), ("proxyIdentity" = [])),
)]
pub async fn generate(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut client = state.identities.client(&headers, peer)?;
    let Json(body) = body.map_err(json_rejection)?;
    let settings = &state.settings;
    let request = validate(&body, &headers, &settings.api, client.principal.as_deref())?;
    let owner_token = anonymous_owner_token(&state, &mut client);
    let submission = submission(&state, &client, request, idempotency_key(&headers)?);
    let (job_id, status, replayed) = admitted(state.store.submit(submission).await?, &state)?;
    Ok(accepted(&job_id, status, replayed, owner_token.as_deref()))
}

/// For a client without an identity whose jobs belong to an owner token (`proxy` mode without
/// the proxy's header): its token, made now if the request brought none, to give back in the
/// answer. `None` for every other client.
pub fn anonymous_owner_token(
    state: &AppState,
    client: &mut super::identity::Client,
) -> Option<String> {
    let anonymous = state.identities.is_anonymous(client);
    if anonymous && client.owner_token.is_none() {
        client.owner_token = Some(super::identity::new_owner_token());
    }
    client.owner_token.clone().filter(|_| anonymous)
}

/// The submission of a validated request by `client`, with its idempotency key if any.
pub fn submission(
    state: &AppState,
    client: &super::identity::Client,
    request: JobRequest,
    idempotency_key: Option<String>,
) -> Submission {
    let settings = &state.settings;
    let owner = state.identities.owner(client, &request.user_id);
    let idempotency = idempotency_key.map(|key| Idempotency {
        digest: idempotency_digest(&owner, &key),
        // The validated request is what the job runs: the same request is the same body.
        fingerprint: fingerprint(&serde_json::to_string(&request).unwrap_or_default()),
        ttl: Duration::from_secs(settings.queue.retention_seconds.max(1)),
    });
    let api = &settings.api;
    let rate_limit = (api.rate_limit_jobs > 0).then(|| RateLimit {
        max: api.rate_limit_jobs,
        window: Duration::from_secs(api.rate_limit_window_seconds.max(1)),
        subject: state.identities.rate_subject(client, &request.user_id),
    });
    Submission {
        job_id: new_job_id(),
        request,
        owner,
        idempotency,
        rate_limit,
        max_attempts: settings.queue.max_attempts,
        // The POST's span context: the worker's spans of this job join its trace.
        traceparent: flashcard_telemetry::current_traceparent(),
    }
}

/// The job an admission names, its state and whether it was replayed; or the refusal.
pub fn admitted(
    admission: Admission,
    state: &AppState,
) -> Result<(String, JobState, bool), ApiError> {
    let api = &state.settings.api;
    match admission {
        Admission::Accepted { job_id } => Ok((job_id, JobState::Waiting, false)),
        Admission::Replayed { job_id, state } => Ok((job_id, state, true)),
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
pub fn status_body(job: &JobRecord) -> JobStatusBody {
    let (status_url, events_url) = urls(&job.id);
    JobStatusBody {
        job_id: job.id.clone(),
        status: job.state,
        attempts_made: job.attempts_made,
        max_attempts: job.max_attempts,
        created_at: iso(job.created_at),
        status_url,
        events_url,
        started_at: job.started_at.map(iso),
        finished_at: job.finished_at.map(iso),
        duration: job
            .finished_at
            .zip(job.started_at)
            .map(|(end, start)| end.saturating_sub(start)),
        result: job.result.clone(),
        error: job.error.clone(),
        code: job.error_code.clone(),
    }
}

pub fn invalid_job_id() -> ApiError {
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

/// The status document of a job. With `api-key` or `proxy` identity, another client's job
/// answers 404 as if it did not exist.
#[utoipa::path(
    get,
    path = "/api/job-status/{jobId}",
    tag = "jobs",
    operation_id = "getJobStatus",
    params(
        ("jobId" = String, Path, description = "The `jobId` of the 202 answer.", min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$"),
        ("X-Owner-Token" = Option<String>, Header, nullable = false, description = "Owner token of an anonymous client (`proxy` identity mode without the proxy's header): the `ownerToken` of the 202 answer; 16-128 characters of `A-Za-z0-9_-`.", min_length = 16, max_length = 128, pattern = r"^[A-Za-z0-9_-]{16,128}$"),
    ),
    responses(
        (status = 200, description = "The job.", body = JobStatusBody),
        (status = 400, description = "`INVALID_JOB_ID` or `INVALID_OWNER_TOKEN`.", body = ErrorBody),
        (status = 401, description = "`api-key` identity mode: `UNAUTHORIZED` or `INVALID_API_KEY`.", body = ErrorBody),
        (status = 404, description = "`JOB_NOT_FOUND`: unknown, expired after its retention time, or another client's.", body = ErrorBody),
    ),
    security((), ("apiKey" = []), ("apiKeyBearer" = []), ("proxyIdentity" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    job_id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobStatusBody>, ApiError> {
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

/// Jobs per state and the live workers.
#[utoipa::path(
    get,
    path = "/api/queue/stats",
    tag = "monitoring",
    operation_id = "getQueueStats",
    responses((status = 200, description = "Queue counts.", body = QueueStatsBody)),
)]
pub async fn queue_stats(State(state): State<AppState>) -> Result<Json<QueueStatsBody>, ApiError> {
    let counts = state.store.counts().await?;
    let workers = state.store.workers().await?;
    Ok(Json(QueueStatsBody {
        stats: QueueStatsCounts {
            waiting: counts.waiting,
            active: counts.active,
            delayed: counts.delayed,
            completed: counts.completed,
            failed: counts.failed,
            workers: workers.len(),
        },
        workers,
        timestamp: iso(flashcard_core::job::now_ms()),
    }))
}
