//! Flashcard providers behind one interface, and the circuit breaker around them.
//!
//! - [`local`]: offline, deterministic cards extracted from the text (the default);
//! - [`openai`]: any OpenAI-compatible chat-completions endpoint;
//! - [`breaker`]: closed / open / half-open circuit breaker wrapping either.

pub mod breaker;
pub mod local;
pub mod openai;

use std::time::Duration;

use async_trait::async_trait;

use crate::job::{Flashcard, JobRequest, TokenUsage};

/// What a provider returns for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub flashcards: Vec<Flashcard>,
    pub usage: TokenUsage,
}

/// Why a provider call failed. `is_retryable` decides between a retry and a permanent failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider rate limit exceeded (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("provider request timed out after {0:?}")]
    Timeout(Duration),
    #[error("provider server error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("provider rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("provider returned an invalid response: {0}")]
    InvalidResponse(String),
    #[error("provider unreachable: {0}")]
    Transport(String),
    #[error("circuit breaker open: provider calls paused after repeated failures")]
    CircuitOpen,
    #[error("cannot generate flashcards: {0}")]
    Unusable(String),
}

impl ProviderError {
    /// Worth another attempt later (transient), as opposed to a request that can never succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ProviderError::Rejected { .. } | ProviderError::Unusable(_)
        )
    }
}

/// A flashcard generator.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// `local` or `openai` (a metric label).
    fn name(&self) -> &str;
    /// The model used (a metric label and a price key).
    fn model(&self) -> &str;
    /// Generates `request.card_count` cards (or fewer if the text does not hold that many).
    async fn generate(&self, request: &JobRequest) -> Result<Generation, ProviderError>;
    /// An upper bound on the tokens one call for `request` may use; the budget reserves its cost
    /// before the call.
    fn max_usage(&self, request: &JobRequest) -> TokenUsage;
}

/// Rough token count of a text (about 4 characters per token, as OpenAI's guidance says).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Installs ring as the process's rustls crypto provider, once. reqwest is built with
/// `rustls-no-provider` (kube already brings ring; a second provider would make rustls panic), so
/// this must run before the first HTTP client is built. Safe to call any number of times.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error only means another part of the process installed a provider first; that one
        // serves reqwest just as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
