//! `DELETE /api/jobs/{jobId}`: a client cancels a job it no longer wants, so it never runs or
//! stops running (and is no longer paid for), and its followers get a terminal `cancelled`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use flashcard_core::job::is_valid_job_id;
use flashcard_store::{Cancellation, Canceller};

use super::AppState;
use super::Peer;
use super::auth::presents_admin_token;
use super::error::{ApiError, ErrorBody};
use super::jobs::{JobStatusBody, invalid_job_id, job_not_found, status_body};

/// Cancels a job: a waiting or retrying job never runs; a running one loses its lease, and
/// its worker aborts the provider call at its next lease renewal (within a third of the
/// lease) and counts what the call may have cost (spend is never hidden). Its followers get a
/// terminal `cancelled` event. The job's owner may cancel it (with `api-key` or `proxy`
/// identity another client's job answers 404), and so may a caller with the admin token.
/// Cancelling a cancelled job again answers the same (idempotent).
#[utoipa::path(
    delete,
    path = "/api/jobs/{jobId}",
    tag = "jobs",
    operation_id = "cancelJob",
    params(
        ("jobId" = String, Path, description = "The `jobId` of the 202 answer.", min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$"),
        ("X-Owner-Token" = Option<String>, Header, nullable = false, description = "Owner token of an anonymous client (`proxy` identity mode without the proxy's header): the `ownerToken` of the 202 answer; 16-128 characters of `A-Za-z0-9_-`.", min_length = 16, max_length = 128, pattern = r"^[A-Za-z0-9_-]{16,128}$"),
    ),
    responses(
        (status = 200, description = "The job, now (or already) `cancelled`.", body = JobStatusBody),
        (status = 400, description = "`INVALID_JOB_ID` or `INVALID_OWNER_TOKEN`.", body = ErrorBody),
        (status = 401, description = "`api-key` identity mode: `UNAUTHORIZED` or `INVALID_API_KEY`.", body = ErrorBody),
        (status = 404, description = "`JOB_NOT_FOUND`: unknown, expired after its retention time, or another client's.", body = ErrorBody),
        (status = 409, description = "`JOB_ALREADY_FINISHED`: the job completed or failed; nothing to cancel.", body = ErrorBody),
    ),
    security((), ("apiKey" = []), ("apiKeyBearer" = []), ("proxyIdentity" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    job_id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobStatusBody>, ApiError> {
    let admin = presents_admin_token(&state.admin, &headers);
    // An admin may hold no client identity (api-key mode): the token alone is enough.
    let client = match state.identities.client(&headers, peer) {
        Ok(client) => Some(client),
        Err(_) if admin => None,
        Err(e) => return Err(e),
    };
    let Ok(Path(job_id)) = job_id else {
        return Err(invalid_job_id());
    };
    if !is_valid_job_id(&job_id) {
        return Err(invalid_job_id());
    }
    let Some(job) = state.store.job(&job_id).await? else {
        return Err(job_not_found(&job_id));
    };
    let by = match &client {
        _ if admin => Canceller::Admin,
        Some(client) if state.identities.may_read(client, &job.owner) => {
            Canceller::Owner(&job.owner)
        }
        _ => return Err(job_not_found(&job_id)),
    };
    match state.store.cancel(&job_id, by).await? {
        Cancellation::Cancelled { .. } => state.metrics.job_cancelled(),
        Cancellation::AlreadyCancelled => {}
        Cancellation::Missing => return Err(job_not_found(&job_id)),
        Cancellation::Finished(s) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "JOB_ALREADY_FINISHED",
                format!(
                    "Job {job_id} has {}; there is nothing to cancel",
                    s.as_str()
                ),
            ));
        }
    }
    match state.store.job(&job_id).await? {
        Some(job) => Ok(Json(status_body(&job))),
        // Trimmed in between (its retention ended): it was cancelled all the same.
        None => Err(job_not_found(&job_id)),
    }
}
