//! Flashcard providers behind one interface, and the circuit breaker around them.
//!
//! - [`local`]: offline, deterministic cards extracted from the text (the default);
//! - [`openai`]: any OpenAI-compatible chat-completions endpoint;
//! - [`breaker`]: closed / open / half-open circuit breaker wrapping either.

pub mod breaker;
pub mod latency;
pub mod local;
pub mod openai;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ProviderKind, ProviderSettings};
use crate::job::{Flashcard, JobRequest, TokenUsage};
use breaker::{CircuitBreaker, GuardedProvider};
use local::LocalProvider;
use openai::{OpenAiConfig, OpenAiProvider};

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
    /// Bounds of any call's tokens beyond the request's own text; with one token per byte of
    /// that text they bound a call's usage, and the budget reserves that cost before the call.
    fn token_bounds(&self) -> TokenBounds;
}

/// Request-independent token bounds of a provider's calls (see [`crate::store::Pricing`]): a
/// call for a request of `b` text bytes and `n` cards uses at most
/// `b + prompt_overhead_tokens` input and `n * output_tokens_per_card + output_overhead_tokens`
/// output tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBounds {
    pub prompt_overhead_tokens: u64,
    pub output_tokens_per_card: u64,
    pub output_overhead_tokens: u64,
}

impl TokenBounds {
    /// The largest usage of a call for `request`.
    pub fn max_usage(&self, request: &JobRequest) -> TokenUsage {
        TokenUsage {
            input_tokens: crate::job::input_bytes(request) + self.prompt_overhead_tokens,
            output_tokens: u64::from(request.card_count.max(1)) * self.output_tokens_per_card
                + self.output_overhead_tokens,
        }
    }
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

/// The provider the settings ask for, wrapped in a circuit breaker, and a handle to that breaker
/// so heartbeats and metrics can publish its state.
pub fn build(
    settings: &ProviderSettings,
) -> Result<(Arc<dyn Provider>, Arc<CircuitBreaker>), ProviderError> {
    let inner: Arc<dyn Provider> = match settings.provider {
        ProviderKind::Local => Arc::new(LocalProvider::new()),
        ProviderKind::Openai => {
            let api_key = settings
                .openai_api_key
                .as_deref()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned);
            // Self-hosted gateways (Ollama, vLLM) need no key; OpenAI itself always does, and
            // failing at start-up beats failing every job with 401.
            if api_key.is_none() && is_openai_host(&settings.openai_base_url) {
                return Err(ProviderError::Unusable(
                    "provider openai with api.openai.com needs an API key: set OPENAI_API_KEY \
                     (or point OPENAI_BASE_URL at a gateway that needs none)"
                        .into(),
                ));
            }
            Arc::new(OpenAiProvider::new(OpenAiConfig {
                base_url: settings.openai_base_url.clone(),
                model: settings.model.clone(),
                api_key,
                timeout: Duration::from_secs(settings.provider_timeout_seconds.max(1)),
            })?)
        }
    };
    let breaker = Arc::new(CircuitBreaker::new(
        settings.breaker_failure_threshold,
        Duration::from_secs(settings.breaker_open_seconds),
    ));
    let guarded: Arc<dyn Provider> = Arc::new(GuardedProvider::new(inner, breaker.clone()));
    Ok((guarded, breaker))
}

fn is_openai_host(base_url: &str) -> bool {
    reqwest::Url::parse(base_url.trim())
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|h| h == "api.openai.com")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        provider: ProviderSettings,
    }

    fn settings(args: &[&str]) -> ProviderSettings {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().provider
    }

    #[test]
    fn builds_local_by_default() {
        let (provider, breaker) = build(&settings(&[])).unwrap();
        assert_eq!(provider.name(), "local");
        assert_eq!(breaker.state(), breaker::BreakerState::Closed);
    }

    #[test]
    fn openai_needs_a_key_only_at_openai() {
        let mut s = settings(&["--provider", "openai"]);
        s.openai_api_key = None;
        let err = build(&s).err().unwrap();
        assert!(matches!(err, ProviderError::Unusable(_)), "{err}");
        assert!(err.to_string().contains("OPENAI_API_KEY"));

        s.openai_base_url = "http://localhost:11434/v1".into();
        let (provider, _) = build(&s).unwrap();
        assert_eq!(
            (provider.name(), provider.model()),
            ("openai", "gpt-4o-mini")
        );

        s.openai_base_url = "https://api.openai.com/v1".into();
        s.openai_api_key = Some("sk-x".into());
        assert!(build(&s).is_ok());
    }

    #[test]
    fn crypto_provider_install_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
