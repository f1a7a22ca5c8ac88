//! `POST /api/ai/generate-flashcards/batch`: up to [`MAX_BATCH_ITEMS`] jobs in one request and
//! one round trip to the store (the submissions go out together on the store's multiplexed
//! connection), each item validated, admitted and answered on its own.
//!
//! Per item, not all-or-nothing: the items are independent jobs (a course's chapters), each
//! with its own idempotency key, so one bad or rate-limited item should cost the client that
//! item only; it re-sends the failed ones (with their keys, so a retry of the whole batch
//! duplicates nothing).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flashcard_core::job::JobState;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, FieldError, json_rejection};
use super::jobs::{
    admitted, anonymous_owner_token, checked_idempotency_key, invalid_idempotency_key, submission,
    urls, validate,
};
use super::{AppState, Peer};

/// Most items in one batch.
pub const MAX_BATCH_ITEMS: usize = 100;

/// The body of a batch (documentation only: the handler validates each item itself).
#[derive(Debug, ToSchema)]
#[schema(title = "BatchRequest")]
#[allow(dead_code)]
pub struct BatchRequest {
    /// 1 to 100 items, each an object: the single POST's body (`GenerateRequest`: `content`,
    /// `subject`, `topic`, `userId`, `cardCount`) plus an optional `idempotencyKey` (1-200
    /// visible ASCII characters; the `Idempotency-Key` of that item, the header is not used for
    /// batches). The fields of each item are checked one item at a time: an item whose fields
    /// are wrong gets its own `400` in the answer, and the others go ahead.
    #[schema(min_items = 1, max_items = 100, value_type = Vec<Object>)]
    items: Vec<Value>,
}

/// The answer for one item: a job (`status` 202), or the error the single POST would give.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemResult {
    /// Position of the item in the request.
    pub index: usize,
    /// The HTTP status the single POST would answer: 202, 400, 422 or 429.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_status: Option<JobState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_url: Option<String>,
    /// The item answers a retry with the same `idempotencyKey`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `VALIDATION_ERROR`: one entry per bad field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldError>>)]
    pub details: Option<Value>,
    /// `RATE_LIMITED`: seconds until the window frees a slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// The answer of a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchAccepted {
    /// Items that became (or replayed) a job.
    pub accepted: usize,
    pub rejected: usize,
    /// One per item, in the request's order.
    pub items: Vec<BatchItemResult>,
    /// As on the single POST (`proxy` mode without the proxy's header): the owner of every job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_token: Option<String>,
}

impl BatchItemResult {
    fn job(index: usize, job_id: String, status: JobState, replayed: bool) -> Self {
        let (status_url, events_url) = urls(&job_id);
        Self {
            index,
            status: StatusCode::ACCEPTED.as_u16(),
            job_id: Some(job_id),
            job_status: Some(status),
            status_url: Some(status_url),
            events_url: Some(events_url),
            replayed,
            error: None,
            code: None,
            details: None,
            retry_after: None,
        }
    }

    fn refused(index: usize, e: ApiError) -> Self {
        Self {
            index,
            status: e.status.as_u16(),
            job_id: None,
            job_status: None,
            status_url: None,
            events_url: None,
            replayed: false,
            error: Some(e.message),
            code: Some(e.code.to_owned()),
            details: e.details,
            retry_after: e.retry_after,
        }
    }
}

fn items_error(message: String) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: "items".into(),
        message,
    }])
}

/// Queues up to 100 jobs at once. Each item is what the single POST takes, plus an optional
/// `idempotencyKey`; each is validated and admitted on its own (kill-switch, rate limit,
/// idempotency), and answered in `items` with the status the single POST would give. `202`
/// when every item became a job, `207` when some did not (`accepted` and `rejected` count
/// them). Follow each job at its `eventsUrl`.
#[utoipa::path(
    post,
    path = "/api/ai/generate-flashcards/batch",
    tag = "jobs",
    operation_id = "generateFlashcardsBatch",
    request_body(content = BatchRequest, content_type = "application/json"),
    params(
        ("user-id" = Option<String>, Header, description = "Stands in for a missing `userId` of every item (`body` identity mode)."),
        ("X-Owner-Token" = Option<String>, Header, nullable = false, description = "Owner token of an anonymous client (`proxy` identity mode without the proxy's header); 16-128 characters of `A-Za-z0-9_-`.", min_length = 16, max_length = 128, pattern = r"^[A-Za-z0-9_-]{16,128}$"),
    ),
    responses(
        (status = 202, description = "Every item became a job (or replayed one).", body = BatchAccepted),
        (status = 207, description = "Some items were refused; each says why.", body = BatchAccepted),
        (status = 400, description = "`INVALID_JSON`, `INVALID_OWNER_TOKEN`, or `VALIDATION_ERROR` on `items` (missing, not a list, empty, more than 100).", body = ErrorBody),
        (status = 401, description = "`api-key` identity mode: `UNAUTHORIZED` or `INVALID_API_KEY`.", body = ErrorBody),
        (status = 408, description = "`REQUEST_TIMEOUT`.", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the whole batch is limited by `--max-body-bytes`.", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`.", body = ErrorBody),
    ),
    security((), ("apiKey" = []), ("apiKeyBearer" = []), ("proxyIdentity" = [])),
)]
pub async fn generate_batch(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut client = state.identities.client(&headers, peer)?;
    let Json(body) = body.map_err(json_rejection)?;
    let Some(items) = body.get("items").and_then(Value::as_array) else {
        return Err(items_error(format!(
            "items must be a list of 1 to {MAX_BATCH_ITEMS} jobs"
        )));
    };
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        return Err(items_error(format!(
            "items must be a list of 1 to {MAX_BATCH_ITEMS} jobs, got {}",
            items.len()
        )));
    }
    if let Some(i) = items.iter().position(|item| !item.is_object()) {
        return Err(items_error(format!("items[{i}] must be a JSON object")));
    }
    let owner_token = anonymous_owner_token(&state, &mut client);

    // Validate every item; the valid ones go to the store together.
    let mut results: Vec<Option<BatchItemResult>> = Vec::with_capacity(items.len());
    let mut pending = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let checked = validate(
            item,
            &headers,
            &state.settings.api,
            client.principal.as_deref(),
        )
        .and_then(|request| {
            let key = match item.get("idempotencyKey") {
                None | Some(Value::Null) => None,
                Some(Value::String(k)) => Some(checked_idempotency_key(k.as_bytes())?),
                Some(_) => return Err(invalid_idempotency_key()),
            };
            Ok(submission(&state, &client, request, key))
        });
        match checked {
            Ok(s) => {
                pending.push((index, s));
                results.push(None);
            }
            Err(e) => results.push(Some(BatchItemResult::refused(index, e))),
        }
    }
    let admissions = futures::future::join_all(pending.into_iter().map(|(index, s)| {
        let store = state.store.clone();
        async move { (index, store.submit(s).await) }
    }))
    .await;
    for (index, admission) in admissions {
        // A store that fails fails the request (503), as for the single POST: items already
        // queued are found again by their idempotency keys on the retry.
        let result = match admitted(admission?, &state) {
            Ok((job_id, status, replayed)) => BatchItemResult::job(index, job_id, status, replayed),
            Err(e) => BatchItemResult::refused(index, e),
        };
        results[index] = Some(result);
    }
    let items: Vec<BatchItemResult> = results.into_iter().flatten().collect();
    let accepted = items.iter().filter(|i| i.job_id.is_some()).count();
    let rejected = items.len() - accepted;
    let status = if rejected == 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::MULTI_STATUS
    };
    let body = BatchAccepted {
        accepted,
        rejected,
        items,
        owner_token,
    };
    Ok((status, Json(json!(body))).into_response())
}
