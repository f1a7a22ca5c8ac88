//! The provider the configuration asks for: the offline generator or an OpenAI-compatible
//! endpoint, behind a circuit breaker.

use std::sync::Arc;
use std::time::Duration;

use flashcard_provider::breaker::{CircuitBreaker, GuardedProvider};
use flashcard_provider::local::LocalProvider;
use flashcard_provider::openai::{OpenAiConfig, OpenAiProvider};
use flashcard_provider::{Provider, ProviderError};

use crate::config::{ExposeSecret, ProviderKind, ProviderSettings};

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
                .as_ref()
                .map(|k| k.expose_secret().trim())
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
                reasoning_effort: settings.reasoning_effort.clone(),
                reasoning_tokens: settings.reasoning_tokens,
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
    use flashcard_provider::breaker;

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
        s.openai_api_key = Some(crate::config::SecretString::from("sk-x"));
        assert!(build(&s).is_ok());
    }
}
