//! The client span of each provider call: `chat <model>` (the GenAI semantic conventions'
//! name), with `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, the
//! requested card count and input size in bytes, and after the call
//! `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `flashcards.cost_usd`,
//! `flashcards.cards` and `flashcards.billing` (`reported`; `unknown`: settled at the
//! reservation; `nothing`: never reached the model). A failed call records `error.type` (the
//! kind of failure, never its text: a provider's error body may quote the request), and its
//! usage when the provider billed it. The prompt, the study text and the API key are never
//! recorded.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::Instrument as _;
use tracing::field::Empty;

use flashcard_core::budget::TokenBounds;
use flashcard_core::budget::{Prices, micros_to_usd};
use flashcard_core::job::{JobRequest, TokenUsage};
use flashcard_provider::{Billing, Generation, Provider, ProviderError};

/// A provider whose calls are traced.
pub struct Traced {
    inner: Arc<dyn Provider>,
    prices: Prices,
}

impl Traced {
    /// Wraps `inner` when tracing is on; returns it unchanged otherwise.
    pub fn wrap(inner: Arc<dyn Provider>, prices: Prices) -> Arc<dyn Provider> {
        if super::tracing_enabled() {
            Arc::new(Self { inner, prices })
        } else {
            inner
        }
    }
}

/// The `error.type` of a failed call.
pub fn error_type(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::Timeout { .. } => "timeout",
        ProviderError::Server { .. } => "server_error",
        ProviderError::Rejected { .. } => "rejected",
        ProviderError::InvalidResponse(_) => "invalid_response",
        ProviderError::Transport { .. } => "transport",
        ProviderError::CircuitOpen => "circuit_open",
        ProviderError::Unusable(_) => "unusable",
        ProviderError::BadOutput { .. } => "bad_output",
        ProviderError::Refused { .. } => "refused",
        ProviderError::Truncated { .. } => "truncated",
    }
}

#[async_trait]
impl Provider for Traced {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn generate(&self, request: &JobRequest) -> Result<Generation, ProviderError> {
        let model = self.inner.model();
        let span = tracing::info_span!(
            "provider.generate",
            otel.name = %format_args!("chat {model}"),
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = %self.inner.name(),
            gen_ai.request.model = %model,
            flashcards.request.cards = i64::from(request.card_count),
            flashcards.request.input_bytes = flashcard_core::job::input_bytes(request) as i64,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            flashcards.cost_usd = Empty,
            flashcards.cards = Empty,
            flashcards.billing = Empty,
            error.type = Empty,
        );
        let result = self.inner.generate(request).instrument(span.clone()).await;
        let record_usage = |usage: TokenUsage| {
            let micros = self
                .prices
                .cost_micros(usage.input_tokens, usage.output_tokens);
            // Numbers as i64: the OpenTelemetry layer records unsigned integers as text.
            span.record("gen_ai.usage.input_tokens", usage.input_tokens as i64);
            span.record("gen_ai.usage.output_tokens", usage.output_tokens as i64);
            span.record("flashcards.cost_usd", micros_to_usd(micros));
        };
        match &result {
            Ok(generation) => {
                record_usage(generation.usage);
                span.record("flashcards.billing", "reported");
                span.record("flashcards.cards", generation.flashcards.len() as i64);
            }
            Err(error) => {
                // A billed failure's usage is recorded like a success's: spend is never hidden.
                let billing = match error.billing() {
                    Billing::Reported(usage) => {
                        record_usage(usage);
                        "reported"
                    }
                    Billing::Unknown => "unknown",
                    Billing::Nothing => "nothing",
                };
                span.record("flashcards.billing", billing);
                span.record("error.type", error_type(error));
                span.record("otel.status_code", "error");
            }
        }
        result
    }

    fn token_bounds(&self) -> TokenBounds {
        self.inner.token_bounds()
    }
}
