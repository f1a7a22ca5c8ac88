//! The worker: claims jobs, calls the provider under a budget reservation, records results and
//! events, renews leases, heartbeats, recovers stalled jobs, and drains on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::{BudgetPeriod, Prices};
use crate::job::{JobResult, now_ms};
use crate::metrics::Metrics;
use crate::provider::breaker::CircuitBreaker;
use crate::provider::{Provider, ProviderError};
use crate::store::{
    Claim, FailOutcome, Failure, KillSwitch, Reservation, Retention, Store, WorkerInfo,
};

/// How a worker behaves; built from the command line.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub id: String,
    pub pod: String,
    pub concurrency: u32,
    pub lease: Duration,
    pub max_stalls: u32,
    pub backoff_base: Duration,
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    pub shutdown_grace: Duration,
    pub retention: Retention,
    pub prices: Prices,
    pub budget_limit_micros: u64,
    pub budget_period: BudgetPeriod,
}

/// A running worker's shared parts.
pub struct Worker {
    store: Arc<dyn Store>,
    provider: Arc<dyn Provider>,
    breaker: Arc<CircuitBreaker>,
    metrics: Arc<Metrics>,
    options: WorkerOptions,
    active: AtomicU32,
    draining: AtomicBool,
}

/// Longest wait for other jobs' budget reservations to settle.
const MAX_BUDGET_WAIT: Duration = Duration::from_secs(600);
/// Pause between reservation attempts while other jobs hold reservations.
const BUDGET_RETRY: Duration = Duration::from_millis(200);

/// Error message of jobs refused because the budget is spent.
pub const BUDGET_EXHAUSTED: &str =
    "Budget limit reached: job not processed (BUDGET_LIMIT_EXCEEDED)";

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn Provider>,
        breaker: Arc<CircuitBreaker>,
        metrics: Arc<Metrics>,
        options: WorkerOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            provider,
            breaker,
            metrics,
            options,
            active: AtomicU32::new(0),
            draining: AtomicBool::new(false),
        })
    }

    /// The provider's circuit breaker state (`closed`, `open`, `half_open`).
    pub fn breaker_state(&self) -> &'static str {
        self.breaker.state().as_str()
    }

    /// Runs until `shutdown` fires, then stops claiming, waits up to the grace period for running
    /// jobs, and gives the rest back to the queue.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let jobs = TaskTracker::new();
        let abandon = CancellationToken::new();
        let background = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(background.clone()));
        let maintenance = tokio::spawn(self.clone().maintenance_loop(background.clone()));
        let permits = Arc::new(Semaphore::new(self.options.concurrency.max(1) as usize));
        tracing::info!(worker = %self.options.id, concurrency = self.options.concurrency, "worker started");

        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            // Not raced with shutdown: a claim dropped mid-flight may still have taken a job,
            // which would then wait for its lease to expire.
            match self.store.claim(&self.options.id, self.options.lease).await {
                Ok(Some(claim)) => {
                    let worker = self.clone();
                    let abandon = abandon.clone();
                    jobs.spawn(async move {
                        worker.process(claim, abandon).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        waited = self.store.wait_for_work(self.options.poll_interval) => {
                            if let Err(e) = waited {
                                tracing::warn!(error = %e, "waiting for work failed");
                                tokio::time::sleep(self.options.poll_interval).await;
                            }
                        }
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "claim failed; retrying");
                    tokio::time::sleep(self.options.poll_interval).await;
                }
            }
        }

        self.draining.store(true, Ordering::SeqCst);
        jobs.close();
        let running = self.active.load(Ordering::SeqCst);
        tracing::info!(running, grace = ?self.options.shutdown_grace, "worker draining");
        if tokio::time::timeout(self.options.shutdown_grace, jobs.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; releasing unfinished jobs to other workers");
            abandon.cancel();
            jobs.wait().await;
        }
        background.cancel();
        let _ = heartbeat.await;
        let _ = maintenance.await;
        if let Err(e) = self.store.remove_worker(&self.options.id).await {
            tracing::warn!(error = %e, "could not remove worker heartbeat");
        }
        tracing::info!("worker stopped");
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let ttl = self.options.heartbeat_interval * 3;
        loop {
            let info = WorkerInfo {
                id: self.options.id.clone(),
                pod: self.options.pod.clone(),
                active: self.active.load(Ordering::SeqCst),
                concurrency: self.options.concurrency,
                breaker: self.breaker_state().to_owned(),
                draining: self.draining.load(Ordering::SeqCst),
                last_seen: 0,
            };
            if let Err(e) = self.store.heartbeat(&info, ttl).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.options.heartbeat_interval) => {}
            }
        }
    }

    /// Recovers jobs of dead workers and trims finished jobs; every worker does it, the scripts
    /// make it safe to run concurrently.
    async fn maintenance_loop(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.options.lease / 2).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.store.recover_stalled(self.options.max_stalls).await {
                Ok(report) if report.requeued + report.failed > 0 => {
                    tracing::warn!(
                        requeued = report.requeued,
                        failed = report.failed,
                        "recovered stalled jobs"
                    );
                    self.metrics
                        .jobs_stalled(u64::from(report.requeued + report.failed));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "stall check failed"),
            }
            if let Err(e) = self.store.trim_finished(self.options.retention).await {
                tracing::warn!(error = %e, "retention trim failed");
            }
        }
    }

    async fn process(self: Arc<Self>, claim: Claim, abandon: CancellationToken) {
        self.active.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let lease = claim.lease.clone();
        tracing::info!(job = %lease.job_id, attempt = claim.job.attempts_made, "job started");
        let work = self.attempt(&claim);
        tokio::pin!(work);
        let renew_every = self.options.lease / 3;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break Some(outcome),
                _ = abandon.cancelled() => break None,
                _ = tokio::time::sleep(renew_every) => {
                    match self.store.renew(&lease, self.options.lease).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(job = %lease.job_id, "lease lost; result will be discarded"),
                        Err(e) => tracing::warn!(job = %lease.job_id, error = %e, "lease renewal failed"),
                    }
                }
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            None => match self.store.release(&lease).await {
                Ok(_) => tracing::info!(job = %lease.job_id, "job released on shutdown"),
                Err(e) => {
                    tracing::warn!(job = %lease.job_id, error = %e, "release failed; lease expiry will requeue it")
                }
            },
            Some(Ok(result)) => {
                let event = json!({
                    "type": "completed",
                    "at": now_ms(),
                    "result": result,
                    "duration": duration_ms,
                });
                match self.store.complete(&lease, &result, &event).await {
                    Ok(true) => {
                        self.metrics.job_finished("completed", seconds);
                        tracing::info!(job = %lease.job_id, duration_ms, cards = result.flashcards.len(), "job completed");
                    }
                    Ok(false) => {
                        tracing::warn!(job = %lease.job_id, "lease lost before completion; result discarded")
                    }
                    Err(e) => {
                        tracing::error!(job = %lease.job_id, error = %e, "could not record result; the job will be retried after its lease expires")
                    }
                }
            }
            Some(Err(error)) => {
                let attempt = claim.job.attempts_made.max(1);
                let retry_after = error.is_retryable().then(|| self.backoff(attempt, &error));
                let failure = Failure {
                    error: error.to_string(),
                    retry_after,
                    duration_ms,
                };
                match self.store.fail(&lease, &failure).await {
                    Ok(FailOutcome::Retrying) => {
                        self.metrics.job_finished("retried", seconds);
                        tracing::warn!(job = %lease.job_id, error = %failure.error, "attempt failed; retrying");
                    }
                    Ok(FailOutcome::Failed) => {
                        self.metrics.job_finished("failed", seconds);
                        tracing::warn!(job = %lease.job_id, error = %failure.error, "job failed");
                    }
                    Ok(FailOutcome::LeaseLost) => {
                        tracing::warn!(job = %lease.job_id, "lease lost before failure was recorded")
                    }
                    Err(e) => {
                        tracing::error!(job = %lease.job_id, error = %e, "could not record failure")
                    }
                }
            }
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Exponential backoff from the base delay, or the provider's `Retry-After` if longer.
    fn backoff(&self, attempt: u32, error: &ProviderError) -> Duration {
        let exponential = self
            .options
            .backoff_base
            .saturating_mul(1u32 << (attempt - 1).min(16));
        match error {
            ProviderError::RateLimited {
                retry_after: Some(after),
            } => exponential.max(*after),
            _ => exponential,
        }
    }

    /// One attempt: reserve budget, call the provider, settle the real cost.
    async fn attempt(&self, claim: &Claim) -> Result<JobResult, ProviderError> {
        let request = &claim.job.request;
        let prices = self.options.prices;
        let bound = self.provider.max_usage(request);
        let reserved = prices.cost_micros(bound.input_tokens, bound.output_tokens);
        let period = self.options.budget_period.current_key();
        let limit = self.options.budget_limit_micros;
        self.reserve(&period, reserved, limit).await?;
        self.report_progress(
            claim,
            "generating",
            10,
            format!(
                "Generating {} flashcards with {}",
                request.card_count,
                self.provider.model()
            ),
        )
        .await;
        let generated = self.provider.generate(request).await;
        let (usage, cost) = match &generated {
            Ok(generation) => {
                let usage = generation.usage;
                (
                    usage,
                    prices.cost_micros(usage.input_tokens, usage.output_tokens),
                )
            }
            Err(_) => (Default::default(), 0),
        };
        match self.store.settle(&period, reserved, cost, usage).await {
            Ok(spend) if limit > 0 && spend.spent_micros >= limit => {
                self.switch_on_for_budget(&period, spend.spent_micros).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not settle spend"),
        }
        let generation = generated?;
        self.metrics.provider_usage(
            self.provider.name(),
            self.provider.model(),
            usage.input_tokens,
            usage.output_tokens,
            cost,
        );
        Ok(JobResult {
            token_usage: usage.total(),
            flashcards: generation.flashcards,
            usage,
            provider: self.provider.name().to_owned(),
            model: self.provider.model().to_owned(),
            cost_micros: cost,
        })
    }

    /// Tells the job's followers where the attempt stands (SSE `progress`). Best effort: a
    /// failure to report never fails the job.
    async fn report_progress(&self, claim: &Claim, stage: &str, percent: u8, message: String) {
        let event = json!({
            "type": "progress",
            "at": now_ms(),
            "stage": stage,
            "percent": percent,
            "message": message,
        });
        if let Err(e) = self.store.progress(&claim.lease, &event).await {
            tracing::warn!(job = %claim.lease.job_id, error = %e, "could not report progress");
        }
    }

    /// Reserves the job's maximum cost. A refusal while other jobs hold reservations may pass
    /// once they settle (they usually cost less than reserved), so it waits for them; a refusal
    /// with nothing in flight means the period's budget cannot cover this job.
    async fn reserve(&self, period: &str, amount: u64, limit: u64) -> Result<(), ProviderError> {
        let deadline = Instant::now() + MAX_BUDGET_WAIT;
        loop {
            match self.store.reserve(period, amount, limit).await {
                Ok(Reservation::Granted) => return Ok(()),
                Ok(Reservation::Refused) => {}
                Err(e) => return Err(ProviderError::Transport(format!("budget store: {e}"))),
            }
            let spend = self
                .store
                .spend(period)
                .await
                .map_err(|e| ProviderError::Transport(format!("budget store: {e}")))?;
            if spend.reserved_micros == 0 {
                self.switch_on_for_budget(period, spend.spent_micros).await;
                return Err(ProviderError::Unusable(BUDGET_EXHAUSTED.to_owned()));
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::Transport(
                    "budget: other jobs' reservations did not settle in time".to_owned(),
                ));
            }
            tokio::time::sleep(BUDGET_RETRY).await;
        }
    }

    /// Turns the kill-switch on because the budget is spent, unless it is on already (a person's
    /// switch keeps its reason and owner). The API clears it when the period rolls over.
    async fn switch_on_for_budget(&self, period: &str, spent_micros: u64) {
        match self.store.kill_switch().await {
            Ok(current) if current.enabled => {}
            Ok(_) => {
                let state = KillSwitch::budget_exhausted(
                    spent_micros,
                    self.options.budget_limit_micros,
                    period,
                );
                match self.store.set_kill_switch(&state).await {
                    Ok(()) => tracing::warn!(period, "budget limit reached: kill-switch on"),
                    Err(e) => tracing::error!(error = %e, "could not switch the kill-switch on"),
                }
            }
            Err(e) => tracing::error!(error = %e, "could not read the kill-switch"),
        }
    }
}
