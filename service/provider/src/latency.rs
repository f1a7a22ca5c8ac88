//! Simulated provider latency (`--simulated-latency-ms`): makes the offline provider behave like
//! a slow LLM for demos, load tests and failure drills (killing a worker mid-job).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Generation, Provider, ProviderError};
use flashcard_core::job::JobRequest;

/// Delays every call of the inner provider.
pub struct Delayed {
    inner: Arc<dyn Provider>,
    delay: Duration,
}

impl Delayed {
    pub fn wrap(inner: Arc<dyn Provider>, delay: Duration) -> Arc<dyn Provider> {
        if delay.is_zero() {
            inner
        } else {
            Arc::new(Self { inner, delay })
        }
    }
}

#[async_trait]
impl Provider for Delayed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    async fn generate(&self, request: &JobRequest) -> Result<Generation, ProviderError> {
        tokio::time::sleep(self.delay).await;
        self.inner.generate(request).await
    }
    fn token_bounds(&self) -> super::TokenBounds {
        self.inner.token_bounds()
    }
}
