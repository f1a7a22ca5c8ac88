//! Bearer-token authentication of the admin endpoints.
//!
//! Missing token -> 401, wrong token -> 403; the `Bearer` scheme is case-insensitive. Only the
//! token's SHA-256 digest is kept, and a presented token is compared by digest in constant
//! time, so neither its content nor its length shows in the answer's timing. Without a
//! configured token the admin endpoints are closed (503) in api mode, and open only in standalone mode when it listens on loopback, for local development;
//! there, writes need `Content-Type: application/json`, which a cross-site form cannot send
//! without a CORS preflight.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::identity::sha256;

/// The admin token, kept as its SHA-256 digest only (nothing to leak through `Debug` or a
/// core dump's strings).
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        Self(sha256(token.as_bytes()))
    }

    /// Whether `presented` is the token: digests compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(sha256(presented.as_bytes()).ct_eq(&self.0))
    }
}

/// Who may call the admin endpoints.
#[derive(Clone)]
pub enum AdminAccess {
    Token(AdminToken),
    /// No token, standalone on loopback.
    OpenLocal,
    /// No token in a shared deployment.
    Disabled,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAccess::Token(_) => f.write_str("Token(<redacted>)"),
            AdminAccess::OpenLocal => f.write_str("OpenLocal"),
            AdminAccess::Disabled => f.write_str("Disabled"),
        }
    }
}

/// Whether a request carries the admin token (for extra detail on public endpoints).
pub fn presents_admin_token(access: &AdminAccess, headers: &axum::http::HeaderMap) -> bool {
    match access {
        AdminAccess::Token(expected) => {
            super::identity::bearer(headers).is_some_and(|token| expected.matches(token))
        }
        AdminAccess::OpenLocal | AdminAccess::Disabled => false,
    }
}

pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let expected = match &state.admin {
        AdminAccess::OpenLocal => return next.run(request).await,
        AdminAccess::Disabled => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ADMIN_DISABLED",
                "Admin endpoints are disabled: set ADMIN_TOKEN or --admin-token-file",
            )
            .into_response();
        }
        AdminAccess::Token(token) => token,
    };
    let presented = super::identity::bearer(request.headers());
    match presented {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Missing `Authorization: Bearer <token>`",
        )
        .into_response(),
        Some(token) if expected.matches(token) => next.run(request).await,
        Some(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", "Invalid admin token").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_matches_whatever_its_length() {
        let token = AdminToken::new("s3cret-token");
        assert!(token.matches("s3cret-token"));
        for wrong in [
            "",
            "s3cret",
            "s3cret-token ",
            "S3cret-token",
            "x".repeat(4096).as_str(),
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert!(!format!("{:?}", AdminAccess::Token(token)).contains("s3cret"));
    }
}
