//! The `local` provider: the offline generator ([`flashcard_generator`]) behind the provider
//! interface. Free, deterministic, no network.

use async_trait::async_trait;
use flashcard_core::budget::TokenBounds;
use flashcard_core::job::{JobRequest, TokenUsage};
use flashcard_generator::{MAX_CARD_CHARS, PROMPT_OVERHEAD_TOKENS};

use super::{Generation, Provider, ProviderError, estimate_tokens};

/// Inputs larger than this are processed on the blocking pool.
const BLOCKING_ABOVE_BYTES: usize = 8 * 1024;

/// The offline, extractive provider.
#[derive(Debug, Clone, Default)]
pub struct LocalProvider;

impl LocalProvider {
    pub fn new() -> Self {
        LocalProvider
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn model(&self) -> &str {
        "local-extractive-v1"
    }

    async fn generate(&self, request: &JobRequest) -> Result<Generation, ProviderError> {
        let flashcards = if request.content.len() > BLOCKING_ABOVE_BYTES {
            // Tens of milliseconds of CPU on the largest inputs: keep it off the async workers
            // that also serve leases, heartbeats and SSE.
            let owned = request.clone();
            tokio::task::spawn_blocking(move || flashcard_generator::generate(&owned))
                .await
                .map_err(|e| ProviderError::Unusable(format!("local generator failed: {e}")))?
        } else {
            flashcard_generator::generate(request)
        };
        if flashcards.is_empty() && request.card_count > 0 {
            return Err(ProviderError::Unusable(
                "the content holds no words to make flashcards from".into(),
            ));
        }
        let output: String = flashcards
            .iter()
            .flat_map(|c| [c.question.as_str(), c.answer.as_str()])
            .collect();
        Ok(Generation {
            usage: TokenUsage {
                input_tokens: input_tokens(request),
                output_tokens: estimate_tokens(&output),
                reasoning_tokens: 0,
            },
            flashcards,
        })
    }

    fn token_bounds(&self) -> TokenBounds {
        // Usage is estimated at four characters per token, which never exceeds the bytes.
        TokenBounds {
            prompt_overhead_tokens: PROMPT_OVERHEAD_TOKENS,
            output_tokens_per_card: MAX_CARD_CHARS.div_ceil(4),
            output_overhead_tokens: 0,
        }
    }
}

fn input_tokens(request: &JobRequest) -> u64 {
    estimate_tokens(&request.content)
        + estimate_tokens(&request.subject)
        + estimate_tokens(&request.topic)
        + PROMPT_OVERHEAD_TOKENS
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUDY_TEXT: &str = "Mitochondria are membrane-bound organelles found in most \
        eukaryotic cells. Cellular respiration refers to the set of metabolic reactions that \
        convert nutrients into ATP. The storming of the Bastille took place on 14 July 1789.";

    fn request(content: &str, cards: u32) -> JobRequest {
        JobRequest {
            content: content.into(),
            subject: "Biology".into(),
            topic: "Cell organelles".into(),
            user_id: "user-1".into(),
            card_count: cards,
        }
    }

    #[tokio::test]
    async fn content_without_words_and_labels_is_unusable() {
        let mut request = request("... !!! ???", 3);
        request.subject.clear();
        request.topic.clear();
        let err = LocalProvider::new().generate(&request).await.unwrap_err();
        assert!(matches!(err, ProviderError::Unusable(_)));
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn usage_is_estimated_and_bounded() {
        let provider = LocalProvider::new();
        let long = "Long words everywhere, ".repeat(400);
        for (text, n) in [(STUDY_TEXT, 10), (STUDY_TEXT, 50), ("test", 2), (&long, 20)] {
            let request = request(text, n);
            let result = provider.generate(&request).await.unwrap();
            let max = provider.token_bounds().max_usage(&request);
            assert!(result.usage.input_tokens <= max.input_tokens);
            assert!(result.usage.input_tokens > estimate_tokens(text));
            assert!(result.usage.output_tokens > 0);
            assert!(result.usage.output_tokens <= max.output_tokens);
        }
        assert_eq!(provider.name(), "local");
        assert_eq!(provider.model(), "local-extractive-v1");
    }

    #[tokio::test]
    async fn large_inputs_run_on_the_blocking_pool_with_the_same_cards() {
        let text = STUDY_TEXT.repeat(1 + BLOCKING_ABOVE_BYTES / STUDY_TEXT.len());
        let result = LocalProvider::new()
            .generate(&request(&text, 5))
            .await
            .unwrap();
        assert_eq!(
            result.flashcards,
            flashcard_generator::generate(&request(&text, 5))
        );
    }
}
