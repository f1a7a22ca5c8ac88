//! The worker: claims jobs (several at once, with their budget reservations), calls the
//! provider, finishes each job and claims the next in one store call, renews leases, heartbeats,
//! recovers stalled jobs, and drains on shutdown.
//!
//! It follows the provider's circuit breaker: while the breaker is open it claims nothing; when
//! half-open it claims one job for the trial call; a job refused by an open breaker, or whose
//! failure opened it, goes back to the head of the queue without using an attempt. A provider
//! outage of any length makes jobs wait; jobs fail only on their own errors, each with a stable
//! code. A job whose lease is lost has its provider call cancelled rather than paid for and
//! thrown away.
//!
//! Every call that may have reached the provider settles what it cost (spend is never hidden):
//! a reply the provider billed settles its reported usage even when it holds no usable card; a
//! call whose cost is unknown (timed out after the request was sent, cut mid-reply, cancelled
//! by a lost lease or the end of the shutdown grace) settles the attempt's whole reservation,
//! the safe upper bound; only a call that provably never reached the model settles nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::metrics::Metrics;
use flashcard_core::budget::Prices;
use flashcard_core::budget::Pricing;
use flashcard_core::events::WaitReason;
use flashcard_core::job::{JobResult, TokenUsage};
use flashcard_provider::breaker::{BreakerState, CircuitBreaker, Outcome as Health};
use flashcard_provider::{Billing, Generation, Provider, ProviderError};
use flashcard_store::{
    Claim, ClaimRequest, Cost, FinishOutcome, Finished, Outcome, ProgressNote, Retention, Store,
    WorkerInfo,
};

/// How a worker behaves; built from the command line.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub id: String,
    pub pod: String,
    pub concurrency: u32,
    pub lease: Duration,
    pub max_stalls: u32,
    /// Most active jobs per client across the pipeline (0: no cap).
    pub client_cap: u32,
    pub backoff_base: Duration,
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    pub shutdown_grace: Duration,
    pub retention: Retention,
    pub prices: Prices,
}

/// Longest retry delay, whatever the attempt.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often a worker that may not claim (breaker open, trial running) looks again.
const BREAKER_POLL: Duration = Duration::from_millis(100);

/// A running worker's shared parts.
pub struct Worker {
    store: Arc<dyn Store>,
    provider: Arc<dyn Provider>,
    breaker: Arc<CircuitBreaker>,
    metrics: Arc<Metrics>,
    options: WorkerOptions,
    pricing: Pricing,
    started_message: String,
    active: AtomicU32,
    draining: AtomicBool,
}

/// How one attempt ended on the worker's side.
enum Attempt {
    Done(Result<Generation, ProviderError>, Duration),
    /// The lease was lost: the call was cancelled and nothing is recorded.
    LeaseLost,
    /// Shutdown's grace period is over: give the job back.
    Abandoned,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn Provider>,
        breaker: Arc<CircuitBreaker>,
        metrics: Arc<Metrics>,
        options: WorkerOptions,
    ) -> Arc<Self> {
        let pricing = options.prices.pricing(provider.token_bounds());
        let started_message = format!("Generating flashcards with {}", provider.model());
        metrics.provider_known(provider.name(), provider.model());
        Arc::new(Self {
            store,
            provider,
            breaker,
            metrics,
            options,
            pricing,
            started_message,
            active: AtomicU32::new(0),
            draining: AtomicBool::new(false),
        })
    }

    /// The provider's circuit breaker state (`closed`, `open`, `half_open`).
    pub fn breaker_state(&self) -> &'static str {
        self.breaker.state().as_str()
    }

    fn claim_request(&self, max_jobs: u32) -> ClaimRequest<'_> {
        ClaimRequest {
            call_id: flashcard_store::CallId::new(),
            worker_id: &self.options.id,
            lease: self.options.lease,
            max_jobs,
            client_cap: self.options.client_cap,
            pricing: self.pricing,
            started: Some(ProgressNote {
                stage: "generating",
                percent: 10,
                message: &self.started_message,
            }),
        }
    }

    /// Jobs to claim after finishing one: none while draining or while the breaker is not
    /// closed (the claim loop takes the half-open trial itself).
    fn next_wanted(&self) -> u32 {
        let closed = self.breaker.state() == BreakerState::Closed;
        u32::from(closed && !self.draining.load(Ordering::SeqCst))
    }

    /// Runs until `shutdown` fires, then stops claiming, waits up to the grace period for running
    /// jobs, and gives the rest back to the queue.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let jobs = TaskTracker::new();
        let abandon = CancellationToken::new();
        let background = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(background.clone()));
        let maintenance = tokio::spawn(self.clone().maintenance_loop(background.clone()));
        let slots = self.options.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(slots as usize));
        tracing::info!(worker = %self.options.id, concurrency = slots, "worker started");

        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if !self.breaker.admits_call() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(BREAKER_POLL) => continue,
                }
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            // Half-open: exactly one trial call; closed: as many jobs as there are free slots.
            let batch = if self.breaker.state() == BreakerState::Closed {
                slots
            } else {
                1
            };
            let mut held = vec![first];
            while (held.len() as u32) < batch {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            // Not raced with shutdown: a claim dropped mid-flight may still have taken jobs,
            // which would then wait for their leases to expire.
            let Some(claimed) = self.claim_with_retries(held.len() as u32, &shutdown).await else {
                break;
            };
            if claimed.budget_failed > 0 {
                self.metrics
                    .jobs_budget_refused(u64::from(claimed.budget_failed));
            }
            let idle = claimed.jobs.is_empty();
            // A retried claim answers with what its first try took, never more than the
            // permits held for it.
            for (claim, permit) in claimed.jobs.into_iter().zip(held.drain(..)) {
                jobs.spawn(self.clone().job_task(claim, permit, abandon.clone()));
            }
            drop(held);
            if idle {
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

    /// Runs jobs one after another on one slot: each finish claims the next job.
    async fn job_task(
        self: Arc<Self>,
        claim: Claim,
        permit: OwnedSemaphorePermit,
        abandon: CancellationToken,
    ) {
        let mut next = Some(claim);
        while let Some(claim) = next.take() {
            self.active.fetch_add(1, Ordering::SeqCst);
            let span = crate::telemetry::job::attempt_span(&claim, &self.options.id);
            next = self.process(claim, &abandon).instrument(span).await;
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
        drop(permit);
    }

    /// One attempt of one job; returns the next job claimed on the way, if any.
    async fn process(&self, claim: Claim, abandon: &CancellationToken) -> Option<Claim> {
        let lease = &claim.lease;
        tracing::info!(
            job = %lease.job_id,
            attempt = claim.job.attempts_made,
            reserved_micros = claim.reserved_micros,
            "job started"
        );
        let (result, elapsed) = match self.attempt(&claim, abandon).await {
            Attempt::Done(result, elapsed) => (result, elapsed),
            Attempt::LeaseLost => {
                self.metrics.job_finished("lease_lost", 0.0);
                tracing::warn!(job = %lease.job_id, reserved_micros = claim.reserved_micros,
                    "lease lost: provider call cancelled and settled at its reservation");
                // The job is no longer ours (the store recovered it), but the cancelled call may
                // have been billed: settle its bound. The store records no outcome for a lost
                // lease.
                let settled = self.settle_cancelled(&claim, true).await?;
                return settled.claimed.jobs.into_iter().next();
            }
            Attempt::Abandoned => {
                if self.settle_cancelled(&claim, false).await.is_some() {
                    tracing::info!(job = %lease.job_id, "job released on shutdown");
                }
                return None;
            }
        };
        let duration_ms = elapsed.as_millis() as u64;
        let (cost, job_result) = match &result {
            Ok(generation) => {
                let cost = self.reported_cost(generation.usage);
                let job_result = JobResult {
                    token_usage: generation.usage.total(),
                    flashcards: generation.flashcards.clone(),
                    usage: generation.usage,
                    provider: self.provider.name().to_owned(),
                    model: self.provider.model().to_owned(),
                    cost_micros: cost.micros,
                };
                (cost, Some(job_result))
            }
            Err(error) => (self.failure_cost(error, claim.reserved_micros), None),
        };
        let error_text = result.as_ref().err().map(ToString::to_string);
        let outcome = match (&result, &job_result) {
            (Ok(_), Some(job_result)) => Outcome::Completed {
                result: job_result,
                duration_ms,
            },
            (Err(error), _) => self.failure_outcome(
                error,
                error_text.as_deref().unwrap_or(""),
                claim.job.attempts_made,
                duration_ms,
            ),
            (Ok(_), None) => Outcome::Failed {
                error: "internal: result missing",
                code: None,
                duration_ms,
            },
        };
        let finished = self.finish_with_retries(&claim, outcome, cost).await?;
        self.count_cost(cost);
        let seconds = elapsed.as_secs_f64();
        match finished.outcome {
            FinishOutcome::Completed => {
                self.metrics.job_finished("completed", seconds);
                if let Some(r) = &job_result {
                    tracing::info!(job = %lease.job_id, duration_ms, cards = r.flashcards.len(),
                        cost_micros = r.cost_micros, "job completed");
                }
            }
            FinishOutcome::Retrying => {
                self.metrics.job_finished("retried", seconds);
                tracing::warn!(job = %lease.job_id, error = ?error_text, cost_micros = cost.micros,
                    at_bound = cost.at_bound, "attempt failed; retrying");
            }
            FinishOutcome::Failed => {
                self.metrics.job_finished("failed", seconds);
                tracing::warn!(job = %lease.job_id, error = ?error_text, cost_micros = cost.micros,
                    at_bound = cost.at_bound, "job failed");
            }
            FinishOutcome::Released => {
                self.metrics.job_finished("released", seconds);
                tracing::info!(job = %lease.job_id, error = ?error_text,
                    "provider unavailable: job back in the queue, attempt not counted");
            }
            FinishOutcome::LeaseLost => {
                tracing::warn!(job = %lease.job_id, "lease lost before the outcome was recorded; its cost was counted");
            }
        }
        crate::telemetry::job::attempt_ended(
            &lease.job_id,
            finished.outcome,
            error_text.as_deref(),
        );
        if finished.overrun_micros > 0 {
            self.metrics.budget_overrun(finished.overrun_micros);
            tracing::warn!(
                job = %lease.job_id,
                reserved_micros = claim.reserved_micros,
                overrun_micros = finished.overrun_micros,
                "provider reported more than the reservation bound; the real cost was settled"
            );
        }
        if finished.budget_stopped {
            tracing::warn!(period = %lease.period, spent_micros = finished.spent_micros,
                "budget limit reached: kill-switch on");
        }
        if finished.claimed.budget_failed > 0 {
            self.metrics
                .jobs_budget_refused(u64::from(finished.claimed.budget_failed));
        }
        finished.claimed.jobs.into_iter().next()
    }

    /// What a call that reported `usage` cost.
    fn reported_cost(&self, usage: TokenUsage) -> Cost {
        let micros = self
            .options
            .prices
            .cost_micros(usage.input_tokens, usage.output_tokens);
        Cost::reported(micros, usage)
    }

    /// What a failed call settles: its reported usage, the attempt's reservation when its cost
    /// is unknown, nothing when it never reached the model.
    fn failure_cost(&self, error: &ProviderError, reserved_micros: u64) -> Cost {
        match error.billing() {
            Billing::Nothing => Cost::none(),
            Billing::Reported(usage) => self.reported_cost(usage),
            Billing::Unknown => Cost::at_bound(reserved_micros),
        }
    }

    /// Counts a settled cost in this process's provider metrics.
    fn count_cost(&self, cost: Cost) {
        if !cost.called {
            return;
        }
        self.metrics.provider_usage(
            self.provider.name(),
            self.provider.model(),
            cost.usage,
            cost.micros,
            cost.at_bound,
        );
    }

    /// Settles a call cancelled midway (its cost unknown: the reservation) and, when the lease
    /// is still held, gives the job back to the queue without using its attempt.
    async fn settle_cancelled(&self, claim: &Claim, lease_lost: bool) -> Option<Finished> {
        let cost = Cost::at_bound(claim.reserved_micros);
        let release = Outcome::Release {
            reason: WaitReason::Released,
        };
        let finished = if lease_lost {
            self.finish_with_retries(claim, release, cost).await
        } else {
            // Shutdown: one try, claiming nothing; if it fails, lease expiry requeues the job
            // and releases its reservation, and only this call's bound goes uncounted.
            match self.store.finish(&claim.lease, release, cost, None).await {
                Ok(finished) => Some(finished),
                Err(e) => {
                    tracing::warn!(job = %claim.lease.job_id, error = %e,
                        "release failed; lease expiry will requeue it");
                    None
                }
            }
        };
        if finished.is_some() {
            self.count_cost(cost);
        }
        finished
    }

    /// What a failed call does to the job.
    fn failure_outcome<'a>(
        &self,
        error: &ProviderError,
        text: &'a str,
        attempt: u32,
        duration_ms: u64,
    ) -> Outcome<'a> {
        let provider_down = matches!(error, ProviderError::CircuitOpen)
            || (Health::of_error(error) == Health::Unhealthy
                && self.breaker.state() != BreakerState::Closed);
        if provider_down {
            // The provider is out, not the job: wait without spending an attempt.
            return Outcome::Release {
                reason: WaitReason::ProviderUnavailable,
            };
        }
        let code = Some(error.code());
        if error.is_retryable() {
            Outcome::Retry {
                error: text,
                code,
                delay: self.backoff(attempt, error),
                duration_ms,
            }
        } else {
            Outcome::Failed {
                error: text,
                code,
                duration_ms,
            }
        }
    }

    /// Calls the provider while renewing the lease; a lost lease cancels the call.
    async fn attempt(&self, claim: &Claim, abandon: &CancellationToken) -> Attempt {
        let started = Instant::now();
        let call = self.provider.generate(&claim.job.request);
        tokio::pin!(call);
        let renew_every = self.options.lease / 3;
        let leases = std::slice::from_ref(&claim.lease);
        loop {
            tokio::select! {
                result = &mut call => return Attempt::Done(result, started.elapsed()),
                _ = abandon.cancelled() => return Attempt::Abandoned,
                _ = tokio::time::sleep(renew_every) => {
                    match self.store.renew(leases, self.options.lease).await {
                        Ok(renewed) if renewed.first() == Some(&false) => return Attempt::LeaseLost,
                        Ok(_) => {}
                        Err(e) => tracing::warn!(job = %claim.lease.job_id, error = %e, "lease renewal failed"),
                    }
                }
            }
        }
    }

    /// Claims up to `slots` jobs, retrying a failed call with the same call id until it
    /// answers: a try that ran but lost its reply is answered by the store with the jobs it
    /// took, so a lost reply costs no job an attempt or a stall. `None` if shutdown came first
    /// (jobs a lost try took are then recovered after their lease).
    async fn claim_with_retries(
        &self,
        slots: u32,
        shutdown: &CancellationToken,
    ) -> Option<flashcard_store::Claimed> {
        let request = self.claim_request(slots);
        loop {
            match self.store.claim(&request).await {
                Ok(claimed) => return Some(claimed),
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying the same call");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(self.options.poll_interval) => {}
                    }
                }
            }
        }
    }

    /// Records the outcome, retrying store errors for up to a lease (the store makes a repeated
    /// finish harmless); after that the lease expires and stall recovery takes over.
    async fn finish_with_retries(
        &self,
        claim: &Claim,
        outcome: Outcome<'_>,
        cost: Cost,
    ) -> Option<Finished> {
        let deadline = Instant::now() + self.options.lease;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .without_max_times()
            .build();
        // One call id for every try: a repeat of a try that ran answers with the jobs it took.
        let wanted = self.next_wanted();
        let next = self.claim_request(wanted);
        let next = (wanted > 0).then_some(&next);
        loop {
            match self.store.finish(&claim.lease, outcome, cost, next).await {
                Ok(finished) => return Some(finished),
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(job = %claim.lease.job_id, error = %e, "could not record the outcome; retrying");
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    tracing::error!(job = %claim.lease.job_id, error = %e,
                        "could not record the outcome; the job will be recovered after its lease expires");
                    return None;
                }
            }
        }
    }

    /// Exponential backoff with jitter from the base delay, or the provider's `Retry-After` if
    /// longer.
    fn backoff(&self, attempt: u32, error: &ProviderError) -> Duration {
        let exponential = backon::ExponentialBuilder::default()
            .with_min_delay(self.options.backoff_base)
            .with_max_delay(MAX_BACKOFF)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.options.backoff_base);
        match error {
            ProviderError::RateLimited {
                retry_after: Some(after),
                ..
            } => exponential.max(*after),
            _ => exponential,
        }
    }
}
