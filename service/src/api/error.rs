//! API errors: JSON `{error, code, details?}` with the right status, never a bare 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use flashcard_store::StoreError;

/// One field that failed validation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The body field (`content`, `cardCount`, ... or `body` for the whole body).
    pub field: String,
    pub message: String,
}

/// Every error answer: a message for people and a stable `code` for programs.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    pub code: ErrorCode,
    /// `VALIDATION_ERROR` only: one entry per bad field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
}

/// The stable error codes (every one the service answers with; the status tells the class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: a body field failed validation (`details` names each).
    ValidationError,
    /// 400: the body is not JSON.
    InvalidJson,
    /// 400: the `Idempotency-Key` header is not 1-200 visible ASCII characters.
    InvalidIdempotencyKey,
    /// 400: not a job id.
    InvalidJobId,
    /// 400: an `X-Owner-Token` / `ownerToken` that is not 16-128 characters of `A-Za-z0-9_-`.
    InvalidOwnerToken,
    /// 400: `jobId` query parameter missing.
    MissingJobId,
    /// 400: the kill-switch body is not `{"enabled": bool, "reason"?: string}`.
    InvalidBody,
    /// 400: a query string that does not parse.
    InvalidQuery,
    /// 401: no credentials (admin token or API key).
    Unauthorized,
    /// 401: the API key is not known.
    InvalidApiKey,
    /// 403: wrong admin token.
    Forbidden,
    /// 404: no such route.
    NotFound,
    /// 404: unknown job (or another client's, when identity is on).
    JobNotFound,
    /// 405: method not allowed on the route.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 413: request body too large.
    PayloadTooLarge,
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 409: the job completed or failed; there is nothing to cancel.
    JobAlreadyFinished,
    /// 422: the `Idempotency-Key` was used for another request.
    IdempotencyKeyReused,
    /// 429: the budget kill-switch is on.
    BudgetLimitExceeded,
    /// 429: too many jobs from this client in the rate-limit window.
    RateLimited,
    /// 503: the job store is unreachable (retry after `Retry-After`).
    StoreUnavailable,
    /// 503: connection or SSE stream limit reached (retry after `Retry-After`).
    TooManyConnections,
    /// 503 (`/readyz`): the live job event feed stopped answering.
    FeedStalled,
    /// 503 (`/readyz`): the process is shutting down; connect to another one.
    Draining,
    /// 503: every console stream of the process is taken.
    TooManyConsoles,
    /// 503: the admin endpoints have no token configured.
    AdminDisabled,
    /// 500: the metrics registry failed to encode (never expected).
    MetricsEncoding,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            details: Some(json!(errors)),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "Validation failed",
            )
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", what)
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "STORE_UNAVAILABLE",
            "The job store is temporarily unavailable; retry shortly",
        )
        .with_retry_after(2)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code});
        if let Some(details) = self.details {
            body["details"] = details;
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// Whether a body error comes from the HTTP layer's request body deadline
/// (`crate::server`), somewhere down the error's source chain.
fn is_body_deadline(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The failures every body extractor shares: the body deadline ran out (408) or the body is
/// over the limit (413).
fn body_failure(
    rejection: &(dyn std::error::Error + 'static),
    status: StatusCode,
) -> Option<ApiError> {
    if is_body_deadline(rejection) {
        return Some(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "The request body did not arrive in time",
        ));
    }
    (status == StatusCode::PAYLOAD_TOO_LARGE).then(|| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Request body is too large",
        )
    })
}

/// Maps axum's JSON extractor failures to stable codes (413, 415, 408, 400).
pub fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    if let Some(error) = body_failure(&rejection, rejection.status()) {
        return error;
    }
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Expected a JSON body with `Content-Type: application/json`",
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
            format!("Request body is not valid JSON: {}", rejection.body_text()),
        ),
    }
}

/// Maps the raw body extractor's failures like [`json_rejection`] (408, 413, 400).
pub fn bytes_rejection(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    body_failure(&rejection, rejection.status()).unwrap_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            "The request body could not be read",
        )
    })
}
