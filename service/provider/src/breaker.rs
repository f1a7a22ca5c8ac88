//! Circuit breaker around a provider: after repeated provider-health failures it stops calling the
//! provider for a while, so a struggling LLM endpoint is not hammered by every worker slot and jobs
//! fail fast (and retry later) instead of each waiting for a timeout.
//!
//! States: `closed` (calls pass) → `open` after `failure_threshold` consecutive failures (calls are
//! refused with [`ProviderError::CircuitOpen`]) → `half_open` once `open_for` has passed (exactly one
//! trial call passes) → `closed` if the trial succeeds, `open` again if it fails.
//!
//! Time comes from [`tokio::time::Instant`], so tests drive it with tokio's paused clock, and the
//! `*_at` methods take the instant explicitly.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Generation, Provider, ProviderError};
use flashcard_core::job::JobRequest;
#[cfg(test)]
use flashcard_core::job::TokenUsage;

/// The breaker's state as published in worker heartbeats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Every state, for metrics that export one series per state.
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call's outcome bears on the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered properly.
    Healthy,
    /// The provider is struggling (timeout, 5xx, 429, unreachable, garbage).
    Unhealthy,
    /// Says nothing about the provider (e.g. our own configuration is unusable).
    Neutral,
}

impl Outcome {
    /// Classifies a provider result.
    pub fn of(result: &Result<Generation, ProviderError>) -> Self {
        match result {
            Ok(_) => Outcome::Healthy,
            Err(err) => Outcome::of_error(err),
        }
    }

    pub fn of_error(err: &ProviderError) -> Self {
        match err {
            ProviderError::Timeout { .. }
            | ProviderError::Server { .. }
            | ProviderError::RateLimited { .. }
            | ProviderError::Transport { .. }
            | ProviderError::InvalidResponse(_) => Outcome::Unhealthy,
            // A deliberate refusal (bad request, bad key, content policy) proves the provider is up
            // and answering; opening the breaker would only delay other, valid requests. So does
            // a model's unusable, refused or truncated reply: bad output is not an outage, and
            // holding every job back for it would only buy billed probe calls.
            ProviderError::Rejected { .. }
            | ProviderError::BadOutput { .. }
            | ProviderError::Refused { .. }
            | ProviderError::Truncated { .. } => Outcome::Healthy,
            ProviderError::CircuitOpen | ProviderError::Unusable(_) => Outcome::Neutral,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped on every state change, so a call admitted under an older state cannot decide the
    /// current one (e.g. a slow success from before the breaker opened must not close it).
    epoch: u64,
}

/// A closed / open / half-open circuit breaker. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

/// Admission to make one call; report its outcome with [`CircuitBreaker::record`]. Dropping it
/// unreported (the call was cancelled) frees the half-open trial slot for another caller.
#[derive(Debug)]
#[must_use = "report the call's outcome with CircuitBreaker::record"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    epoch: u64,
    trial: bool,
    reported: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.trial {
            self.breaker.release_trial(self.epoch);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker that opens after `failure_threshold` consecutive failures (at least 1) and
    /// stays open for `open_for`.
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            failure_threshold: failure_threshold.max(1),
            open_for,
            inner: Mutex::new(Inner {
                phase: Phase::Closed { failures: 0 },
                epoch: 0,
            }),
        }
    }

    /// The current state. An open breaker whose wait has passed reports `half_open`: the next call
    /// will be the trial.
    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    pub fn state_at(&self, now: Instant) -> BreakerState {
        match self.lock().phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call made now would be admitted (closed, or a trial is due and none runs), without
    /// taking the admission: workers ask before claiming a job for it.
    pub fn admits_call(&self) -> bool {
        self.admits_call_at(Instant::now())
    }

    pub fn admits_call_at(&self, now: Instant) -> bool {
        match self.lock().phase {
            Phase::Closed { .. } => true,
            Phase::Open { until } => now >= until,
            Phase::HalfOpen { trial_in_flight } => !trial_in_flight,
        }
    }

    /// Asks to make a call now; `None` means the breaker refuses it.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.try_acquire_at(Instant::now())
    }

    pub fn try_acquire_at(&self, now: Instant) -> Option<Permit<'_>> {
        let mut inner = self.lock();
        let trial = match inner.phase {
            Phase::Closed { .. } => false,
            Phase::Open { until } if now < until => return None,
            Phase::Open { .. } => {
                inner.epoch += 1;
                inner.phase = Phase::HalfOpen {
                    trial_in_flight: true,
                };
                tracing::info!(
                    breaker = "half_open",
                    "provider circuit breaker half-open: trying one call"
                );
                true
            }
            Phase::HalfOpen {
                trial_in_flight: true,
            } => return None,
            Phase::HalfOpen {
                trial_in_flight: false,
            } => {
                inner.phase = Phase::HalfOpen {
                    trial_in_flight: true,
                };
                true
            }
        };
        Some(Permit {
            breaker: self,
            epoch: inner.epoch,
            trial,
            reported: false,
        })
    }

    /// Reports the outcome of a call made under `permit`.
    pub fn record(&self, permit: Permit<'_>, outcome: Outcome) {
        self.record_at(permit, outcome, Instant::now());
    }

    pub fn record_at(&self, mut permit: Permit<'_>, outcome: Outcome, now: Instant) {
        permit.reported = true;
        let mut inner = self.lock();
        if permit.epoch != inner.epoch {
            return;
        }
        match (inner.phase, outcome) {
            (_, Outcome::Neutral) => {
                if permit.trial {
                    inner.phase = Phase::HalfOpen {
                        trial_in_flight: false,
                    };
                }
            }
            (Phase::Closed { .. }, Outcome::Healthy) => {
                inner.phase = Phase::Closed { failures: 0 };
            }
            (Phase::Closed { failures }, Outcome::Unhealthy) => {
                let failures = failures.saturating_add(1);
                if failures >= self.failure_threshold {
                    self.open(&mut inner, now, failures);
                } else {
                    inner.phase = Phase::Closed { failures };
                }
            }
            (Phase::HalfOpen { .. }, Outcome::Healthy) => {
                inner.epoch += 1;
                inner.phase = Phase::Closed { failures: 0 };
                tracing::info!(
                    breaker = "closed",
                    "provider circuit breaker closed: trial call succeeded"
                );
            }
            (Phase::HalfOpen { .. }, Outcome::Unhealthy) => self.open(&mut inner, now, 1),
            // Calls are only admitted while open through a trial, which moves to half-open first.
            (Phase::Open { .. }, _) => {}
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant, failures: u32) {
        inner.epoch += 1;
        inner.phase = Phase::Open {
            until: now + self.open_for,
        };
        tracing::warn!(
            breaker = "open",
            failures,
            open_for_secs = self.open_for.as_secs_f64(),
            "provider circuit breaker opened: pausing provider calls"
        );
    }

    fn release_trial(&self, epoch: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch
            && let Phase::HalfOpen { .. } = inner.phase
        {
            inner.phase = Phase::HalfOpen {
                trial_in_flight: false,
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is a few plain fields updated in one step, so a panic elsewhere while holding
        // the lock cannot leave it half-written: recovering from poisoning is safe.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A provider whose calls go through a [`CircuitBreaker`].
pub struct GuardedProvider {
    inner: Arc<dyn Provider>,
    breaker: Arc<CircuitBreaker>,
}

impl GuardedProvider {
    pub fn new(inner: Arc<dyn Provider>, breaker: Arc<CircuitBreaker>) -> Self {
        GuardedProvider { inner, breaker }
    }

    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }
}

impl std::fmt::Debug for GuardedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedProvider")
            .field("provider", &self.inner.name())
            .field("model", &self.inner.model())
            .field("breaker", &self.breaker.state())
            .finish()
    }
}

#[async_trait]
impl Provider for GuardedProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn generate(&self, request: &JobRequest) -> Result<Generation, ProviderError> {
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(ProviderError::CircuitOpen);
        };
        let result = self.inner.generate(request).await;
        self.breaker.record(permit, Outcome::of(&result));
        result
    }

    fn token_bounds(&self) -> super::TokenBounds {
        self.inner.token_bounds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const OPEN_FOR: Duration = Duration::from_secs(30);

    fn fail(b: &CircuitBreaker, now: Instant) {
        let permit = b.try_acquire_at(now).expect("admitted");
        b.record_at(permit, Outcome::Unhealthy, now);
    }

    fn succeed(b: &CircuitBreaker, now: Instant) {
        let permit = b.try_acquire_at(now).expect("admitted");
        b.record_at(permit, Outcome::Healthy, now);
    }

    #[test]
    fn state_names() {
        let names: Vec<_> = BreakerState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["closed", "open", "half_open"]);
        assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = CircuitBreaker::new(3, OPEN_FOR);
        let t0 = Instant::now();
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state_at(t0), BreakerState::Closed);
        fail(&b, t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
        assert!(b.try_acquire_at(t0 + Duration::from_secs(29)).is_none());
    }

    #[test]
    fn success_resets_the_consecutive_count() {
        let b = CircuitBreaker::new(3, OPEN_FOR);
        let t0 = Instant::now();
        fail(&b, t0);
        fail(&b, t0);
        succeed(&b, t0);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state_at(t0), BreakerState::Closed);
        fail(&b, t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
    }

    #[test]
    fn neutral_outcomes_neither_count_nor_reset() {
        let b = CircuitBreaker::new(2, OPEN_FOR);
        let t0 = Instant::now();
        fail(&b, t0);
        let p = b.try_acquire_at(t0).unwrap();
        b.record_at(p, Outcome::Neutral, t0);
        fail(&b, t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
    }

    #[test]
    fn admits_call_tells_without_taking_the_trial() {
        let b = CircuitBreaker::new(1, OPEN_FOR);
        let t0 = Instant::now();
        assert!(b.admits_call_at(t0));
        fail(&b, t0);
        assert!(!b.admits_call_at(t0 + Duration::from_secs(1)));
        let later = t0 + OPEN_FOR;
        assert!(b.admits_call_at(later));
        assert!(b.admits_call_at(later), "asking twice takes nothing");
        let trial = b.try_acquire_at(later).expect("trial");
        assert!(!b.admits_call_at(later), "trial in flight");
        b.record_at(trial, Outcome::Healthy, later);
        assert!(b.admits_call_at(later));
    }

    #[test]
    fn half_open_admits_exactly_one_trial() {
        let b = CircuitBreaker::new(1, OPEN_FOR);
        let t0 = Instant::now();
        fail(&b, t0);
        let later = t0 + OPEN_FOR;
        assert_eq!(b.state_at(later), BreakerState::HalfOpen);
        let trial = b.try_acquire_at(later).expect("trial admitted");
        assert!(
            b.try_acquire_at(later).is_none(),
            "second call during trial"
        );
        assert_eq!(b.state_at(later), BreakerState::HalfOpen);
        b.record_at(trial, Outcome::Healthy, later);
        assert_eq!(b.state_at(later), BreakerState::Closed);
        assert!(b.try_acquire_at(later).is_some());
    }

    #[test]
    fn failed_trial_reopens_for_another_full_period() {
        let b = CircuitBreaker::new(1, OPEN_FOR);
        let t0 = Instant::now();
        fail(&b, t0);
        let t1 = t0 + OPEN_FOR + Duration::from_secs(5);
        let trial = b.try_acquire_at(t1).unwrap();
        b.record_at(trial, Outcome::Unhealthy, t1);
        assert_eq!(b.state_at(t1), BreakerState::Open);
        assert!(
            b.try_acquire_at(t1 + OPEN_FOR - Duration::from_millis(1))
                .is_none()
        );
        assert_eq!(b.state_at(t1 + OPEN_FOR), BreakerState::HalfOpen);
    }

    #[test]
    fn cancelled_trial_frees_the_slot() {
        let b = CircuitBreaker::new(1, OPEN_FOR);
        let t0 = Instant::now();
        fail(&b, t0);
        let t1 = t0 + OPEN_FOR;
        drop(b.try_acquire_at(t1).unwrap());
        let trial = b
            .try_acquire_at(t1)
            .expect("slot freed by the dropped permit");
        b.record_at(trial, Outcome::Neutral, t1);
        assert_eq!(b.state_at(t1), BreakerState::HalfOpen);
        assert!(
            b.try_acquire_at(t1).is_some(),
            "neutral trial frees the slot"
        );
    }

    #[test]
    fn stale_outcome_from_before_opening_is_ignored() {
        let b = CircuitBreaker::new(1, OPEN_FOR);
        let t0 = Instant::now();
        let slow = b.try_acquire_at(t0).unwrap();
        fail(&b, t0);
        b.record_at(slow, Outcome::Healthy, t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
    }

    #[test]
    fn classification_of_errors() {
        use ProviderError::*;
        for err in [
            Timeout {
                after: Duration::from_secs(1),
                sent: true,
            },
            Server {
                status: 503,
                message: String::new(),
                usage: None,
            },
            RateLimited {
                retry_after: None,
                usage: None,
            },
            Transport {
                message: "refused".into(),
                sent: false,
            },
            InvalidResponse("bad".into()),
        ] {
            assert_eq!(Outcome::of_error(&err), Outcome::Unhealthy, "{err}");
        }
        for answered in [
            Rejected {
                status: 400,
                message: String::new(),
                usage: None,
            },
            BadOutput {
                detail: "not JSON".into(),
                usage: Some(TokenUsage::default()),
            },
            Refused {
                message: "no".into(),
                usage: None,
            },
            Truncated {
                detail: "cut".into(),
                usage: None,
            },
        ] {
            assert_eq!(Outcome::of_error(&answered), Outcome::Healthy, "{answered}");
        }
        assert_eq!(Outcome::of_error(&Unusable("x".into())), Outcome::Neutral);
        assert_eq!(Outcome::of_error(&CircuitOpen), Outcome::Neutral);
    }

    /// Returns scripted results and counts calls.
    struct Scripted {
        results: Mutex<VecDeque<Result<Generation, ProviderError>>>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn model(&self) -> &str {
            "m"
        }
        async fn generate(&self, _: &JobRequest) -> Result<Generation, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.results
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Err(ProviderError::Transport {
                    message: "script exhausted".into(),
                    sent: false,
                }))
        }
        fn token_bounds(&self) -> crate::TokenBounds {
            crate::TokenBounds {
                prompt_overhead_tokens: 7,
                output_tokens_per_card: 9,
                output_overhead_tokens: 0,
            }
        }
    }

    fn request() -> JobRequest {
        JobRequest {
            content: "text".into(),
            subject: "s".into(),
            topic: "t".into(),
            user_id: "u".into(),
            card_count: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn guarded_provider_skips_inner_while_open() {
        let ok = Generation {
            flashcards: vec![],
            usage: TokenUsage::default(),
        };
        let inner = Arc::new(Scripted {
            results: Mutex::new(VecDeque::from([
                Err(ProviderError::Timeout {
                    after: Duration::from_secs(1),
                    sent: true,
                }),
                Err(ProviderError::Server {
                    status: 502,
                    message: "bad gateway".into(),
                    usage: None,
                }),
                Ok(ok.clone()),
            ])),
            calls: AtomicUsize::new(0),
        });
        let breaker = Arc::new(CircuitBreaker::new(2, OPEN_FOR));
        let guarded = GuardedProvider::new(inner.clone(), breaker.clone());
        assert_eq!(guarded.name(), "scripted");
        assert_eq!(guarded.token_bounds().prompt_overhead_tokens, 7);

        assert!(matches!(
            guarded.generate(&request()).await,
            Err(ProviderError::Timeout { .. })
        ));
        assert!(guarded.generate(&request()).await.is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(
            guarded.generate(&request()).await,
            Err(ProviderError::CircuitOpen)
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2, "inner not called");

        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(guarded.generate(&request()).await, Ok(ok));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }
}
