//! Client spans of store calls: `store.<operation>` (`store.submit` is the enqueue,
//! `store.finish` records an attempt's outcome, ...), kind client, with `db.system.name`
//! (`redis` or `memory`), `db.operation.name` and, for the operations that run one of the
//! Redis Lua scripts, `flashcards.store.script`. A failed call records `error.type` (`redis`,
//! `corrupt`), never the error text, which may name a host.
//!
//! Only calls made inside a traced span get a span: the worker's heartbeat, stall checks and
//! idle claims, and the api's event feed, would otherwise each start a trace of their own every
//! few seconds. The wrapper is installed only when tracing is on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing::field::Empty;

use flashcard_core::job::JobRecord;
use flashcard_store::*;

/// A store whose calls are traced.
pub struct Traced {
    inner: Arc<dyn Store>,
    system: &'static str,
}

impl Traced {
    /// Wraps `inner` (`system`: `redis` or `memory`) when tracing is on.
    pub fn wrap(inner: Arc<dyn Store>, system: &'static str) -> Arc<dyn Store> {
        if super::tracing_enabled() {
            Arc::new(Self { inner, system })
        } else {
            inner
        }
    }

    async fn traced<T>(
        &self,
        operation: &'static str,
        script: Option<&'static str>,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        if !opentelemetry::Context::current().has_active_span() {
            return call.await;
        }
        let script = if self.system == "redis" { script } else { None };
        let span = tracing::info_span!(
            "store",
            otel.name = %format_args!("store.{operation}"),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = self.system,
            db.operation.name = operation,
            flashcards.store.script = script,
            error.type = Empty,
        );
        let result = call.instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record(
                "error.type",
                match e {
                    StoreError::Redis(_) | StoreError::Url(_) => "redis",
                    StoreError::Corrupt(_) => "corrupt",
                },
            );
            span.record("otel.status_code", "error");
        }
        result
    }
}

#[async_trait]
impl Store for Traced {
    async fn ping(&self) -> StoreResult<()> {
        self.traced("ping", None, self.inner.ping()).await
    }
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
    async fn submit(&self, submission: Submission) -> StoreResult<Admission> {
        self.traced("submit", Some("submit"), self.inner.submit(submission))
            .await
    }
    async fn job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        self.traced("job", None, self.inner.job(id)).await
    }
    async fn cancel(&self, id: &str, by: Canceller<'_>) -> StoreResult<Cancellation> {
        self.traced("cancel", Some("cancel"), self.inner.cancel(id, by))
            .await
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> StoreResult<Claimed> {
        self.traced("claim", Some("claim"), self.inner.claim(request))
            .await
    }
    async fn renew(&self, leases: &[Lease], duration: Duration) -> StoreResult<Vec<bool>> {
        self.traced("renew", Some("renew"), self.inner.renew(leases, duration))
            .await
    }
    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome<'_>,
        cost: Cost,
        next: Option<&ClaimRequest<'_>>,
    ) -> StoreResult<Finished> {
        self.traced(
            "finish",
            Some("finish"),
            self.inner.finish(lease, outcome, cost, next),
        )
        .await
    }
    async fn progress(
        &self,
        lease: &Lease,
        stage: &str,
        percent: u8,
        message: &str,
    ) -> StoreResult<bool> {
        self.traced(
            "progress",
            Some("progress"),
            self.inner.progress(lease, stage, percent, message),
        )
        .await
    }
    async fn recover_stalled(&self, max_stalls: u32) -> StoreResult<StallReport> {
        self.traced(
            "recover_stalled",
            Some("recover"),
            self.inner.recover_stalled(max_stalls),
        )
        .await
    }
    async fn counts(&self) -> StoreResult<QueueCounts> {
        self.traced("counts", None, self.inner.counts()).await
    }
    async fn wait_for_work(&self, timeout: Duration) -> StoreResult<()> {
        self.inner.wait_for_work(timeout).await
    }
    async fn work_signals(&self) -> StoreResult<BoxStream<'static, u64>> {
        self.inner.work_signals().await
    }
    async fn trim_finished(&self, retention: Retention) -> StoreResult<u64> {
        self.traced(
            "trim_finished",
            Some("trim"),
            self.inner.trim_finished(retention),
        )
        .await
    }
    async fn events_after(&self, job_id: &str, after: u64) -> StoreResult<Vec<StoredEvent>> {
        self.traced("events_after", None, self.inner.events_after(job_id, after))
            .await
    }
    async fn event_feed(
        &self,
        interest: flashcard_store::FeedInterest,
    ) -> StoreResult<BoxStream<'static, FeedItem>> {
        self.inner.event_feed(interest).await
    }
    async fn job_head(&self, id: &str) -> StoreResult<Option<JobHead>> {
        self.traced("job_head", None, self.inner.job_head(id)).await
    }
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> StoreResult<()> {
        self.traced("heartbeat", None, self.inner.heartbeat(info, ttl))
            .await
    }
    async fn remove_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.traced("remove_worker", None, self.inner.remove_worker(worker_id))
            .await
    }
    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        self.traced("workers", None, self.inner.workers()).await
    }
    async fn budget_state(&self) -> StoreResult<BudgetState> {
        self.traced(
            "budget_state",
            Some("budget_state"),
            self.inner.budget_state(),
        )
        .await
    }
    async fn set_budget(&self, budget: &BudgetConfig) -> StoreResult<()> {
        self.traced(
            "set_budget",
            Some("set_budget"),
            self.inner.set_budget(budget),
        )
        .await
    }
    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()> {
        self.traced("set_kill_switch", None, self.inner.set_kill_switch(state))
            .await
    }
    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool> {
        self.traced(
            "clear_kill_switch_if",
            Some("clear_kill_switch"),
            self.inner.clear_kill_switch_if(set_by),
        )
        .await
    }
    async fn spend(&self, period: &str) -> StoreResult<Spend> {
        self.traced("spend", None, self.inner.spend(period)).await
    }
    async fn ensure_epoch(&self) -> StoreResult<(Epoch, bool)> {
        self.traced(
            "ensure_epoch",
            Some("ensure_epoch"),
            self.inner.ensure_epoch(),
        )
        .await
    }
    async fn restore_spend(&self, period: &str, spent_micros: u64) -> StoreResult<Spend> {
        self.traced(
            "restore_spend",
            Some("restore_spend"),
            self.inner.restore_spend(period, spent_micros),
        )
        .await
    }
    async fn outcomes(&self, window: Duration) -> StoreResult<OutcomeCounts> {
        self.traced("outcomes", None, self.inner.outcomes(window))
            .await
    }
    async fn outcomes_by_minute(&self, window: Duration) -> StoreResult<Vec<MinuteOutcomes>> {
        self.traced(
            "outcomes_by_minute",
            None,
            self.inner.outcomes_by_minute(window),
        )
        .await
    }
    async fn recent_finished(&self, limit: usize) -> StoreResult<Vec<FinishedJob>> {
        self.traced("recent_finished", None, self.inner.recent_finished(limit))
            .await
    }
    async fn purge(&self) -> StoreResult<u64> {
        self.traced("purge", Some("purge"), self.inner.purge())
            .await
    }
}
