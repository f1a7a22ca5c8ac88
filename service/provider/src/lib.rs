//! Flashcard providers behind one interface, and the circuit breaker around them.
//!
//! - [`local`]: offline, deterministic cards extracted from the text (the default);
//! - [`openai`]: any OpenAI-compatible chat-completions endpoint;
//! - [`breaker`]: closed / open / half-open circuit breaker wrapping either.

pub mod breaker;
pub mod latency;
pub mod local;
pub mod openai;

use std::time::Duration;

use async_trait::async_trait;

use flashcard_core::budget::TokenBounds;
use flashcard_core::job::{Flashcard, JobRequest, TokenUsage};

/// What a provider returns for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub flashcards: Vec<Flashcard>,
    pub usage: TokenUsage,
}

/// Why a provider call failed. [`ProviderError::billing`] says what the call may have cost,
/// [`ProviderError::is_retryable`] decides between a retry and a permanent failure, and
/// [`ProviderError::code`] is the stable code a job failed by it ends with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider rate limit exceeded (HTTP 429)")]
    RateLimited {
        retry_after: Option<Duration>,
        usage: Option<TokenUsage>,
    },
    /// `sent`: the request may have reached the model before the time ran out.
    #[error("provider request timed out after {after:?}")]
    Timeout { after: Duration, sent: bool },
    /// An error status; `usage` if the body reported one (the call was billed regardless).
    #[error("provider server error (HTTP {status}): {message}")]
    Server {
        status: u16,
        message: String,
        usage: Option<TokenUsage>,
    },
    #[error("provider rejected the request (HTTP {status}): {message}")]
    Rejected {
        status: u16,
        message: String,
        usage: Option<TokenUsage>,
    },
    /// A success status whose body is not a chat completion (a misbehaving gateway): whether the
    /// model ran is unknown.
    #[error("provider returned an invalid response: {0}")]
    InvalidResponse(String),
    /// `sent`: the request may have reached the model (the connection broke after it was
    /// written, or while the reply was read).
    #[error("provider unreachable: {message}")]
    Transport { message: String, sent: bool },
    #[error("circuit breaker open: provider calls paused after repeated failures")]
    CircuitOpen,
    #[error("cannot generate flashcards: {0}")]
    Unusable(String),
    /// The model answered (and was billed) with content that holds no usable cards.
    #[error("the model's reply holds no usable flashcards: {detail}")]
    BadOutput {
        detail: String,
        usage: Option<TokenUsage>,
    },
    /// The model declined the material (a refusal or a content filter).
    #[error("the model refused: {message}")]
    Refused {
        message: String,
        usage: Option<TokenUsage>,
    },
    /// The reply was cut off at the output token bound (`finish_reason: length`) before it held
    /// a usable card: a reasoning model that spent its bound thinking, or too small a bound.
    #[error("the model's reply was cut off at the output token limit: {detail}")]
    Truncated {
        detail: String,
        usage: Option<TokenUsage>,
    },
}

/// What a failed call may have cost: the budget settles exactly this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// The call provably never reached the model (refused connection, DNS, TLS, an error status
    /// without usage, the breaker): nothing to settle.
    Nothing,
    /// The provider reported what it billed.
    Reported(TokenUsage),
    /// The call may have reached the model and its cost is unknown: settle the attempt's
    /// reservation, the safe upper bound.
    Unknown,
}

/// Stable codes of jobs failed by their provider call (the job's `errorCode`).
pub mod codes {
    pub const BAD_OUTPUT: &str = "PROVIDER_BAD_OUTPUT";
    pub const REFUSED: &str = "PROVIDER_REFUSED";
    pub const TRUNCATED: &str = "OUTPUT_TRUNCATED";
    pub const REJECTED: &str = "PROVIDER_REJECTED";
    pub const RATE_LIMITED: &str = "PROVIDER_RATE_LIMITED";
    pub const UNAVAILABLE: &str = "PROVIDER_UNAVAILABLE";
    pub const UNUSABLE: &str = "GENERATION_UNUSABLE";
    /// Every code above (for the OpenAPI document).
    pub const ALL: [&str; 7] = [
        BAD_OUTPUT,
        REFUSED,
        TRUNCATED,
        REJECTED,
        RATE_LIMITED,
        UNAVAILABLE,
        UNUSABLE,
    ];
}

impl ProviderError {
    /// Worth another attempt later (transient, or a model that may answer better next time), as
    /// opposed to a request that can never succeed. A refusal is final (asked again, the model
    /// refuses again), and so is a reply cut off at the bound (the same bound cuts it again).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ProviderError::Rejected { .. }
                | ProviderError::Unusable(_)
                | ProviderError::Refused { .. }
                | ProviderError::Truncated { .. }
        )
    }

    /// What the call may have cost.
    pub fn billing(&self) -> Billing {
        match self {
            // A reply with content was produced by the model: without usage its cost is unknown.
            ProviderError::BadOutput { usage, .. }
            | ProviderError::Refused { usage, .. }
            | ProviderError::Truncated { usage, .. } => {
                usage.map_or(Billing::Unknown, Billing::Reported)
            }
            // An error status says the model did not run, unless the body reports usage.
            ProviderError::RateLimited { usage, .. }
            | ProviderError::Server { usage, .. }
            | ProviderError::Rejected { usage, .. } => {
                usage.map_or(Billing::Nothing, Billing::Reported)
            }
            ProviderError::Timeout { sent, .. } | ProviderError::Transport { sent, .. } => {
                if *sent {
                    Billing::Unknown
                } else {
                    Billing::Nothing
                }
            }
            ProviderError::InvalidResponse(_) => Billing::Unknown,
            ProviderError::CircuitOpen | ProviderError::Unusable(_) => Billing::Nothing,
        }
    }

    /// The stable code of a job this error fails.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::BadOutput { .. } => codes::BAD_OUTPUT,
            ProviderError::Refused { .. } => codes::REFUSED,
            ProviderError::Truncated { .. } => codes::TRUNCATED,
            ProviderError::Rejected { .. } => codes::REJECTED,
            ProviderError::RateLimited { .. } => codes::RATE_LIMITED,
            ProviderError::Timeout { .. }
            | ProviderError::Server { .. }
            | ProviderError::InvalidResponse(_)
            | ProviderError::Transport { .. }
            | ProviderError::CircuitOpen => codes::UNAVAILABLE,
            ProviderError::Unusable(_) => codes::UNUSABLE,
        }
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
    /// Bounds of any call's tokens beyond the request's own text; with one token per byte of
    /// that text they bound a call's usage, and the budget reserves that cost before the call.
    fn token_bounds(&self) -> TokenBounds;
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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn crypto_provider_install_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
