//! Redis store: shared by api, worker and operator pods.
//!
//! Every change that touches more than one key is a Lua script (`scripts/`), so it is atomic and
//! replicated as one unit, as BullMQ does it. Scripts take the pipeline's key prefix as `ARGV[1]`
//! and derive per-job keys from it; all keys share the pipeline's hash tag (see
//! [`crate::keyspace`]). Times inside scripts come from the Redis server's clock, so leases do not
//! depend on the pods' clocks agreeing.

mod blocking;
pub mod connection;
mod parse;
mod reconnect;
pub mod topology;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use redis::{AsyncCommands, Script};
use tokio::sync::Mutex;

use super::{
    Claim, EnqueueOptions, Enqueued, FailOutcome, Failure, KillSwitch, Lease, OutcomeCounts,
    QueueCounts, RateDecision, Reservation, Retention, SetBy, Spend, StallReport, Store,
    StoreError, StoreResult, StoredEvent, WorkerInfo,
};
use crate::job::{JobRecord, JobRequest, JobResult, TokenUsage, new_job_id, now_ms};
use crate::keyspace::{Keyspace, PipelineName, kill_switch_field, worker_field};
pub use blocking::BlockingConn;
pub use connection::{ConnectOptions, RedisClient, RedisConn};
pub use topology::{Topology, TopologyError, TopologyKind};

/// Finished jobs deleted per trim call, so one call never blocks Redis for long.
const TRIM_BATCH: u64 = 500;
/// Longest `BLPOP` of `wait_for_work`; longer waits are cut to it.
const WAIT_MAX_BLOCK: Duration = Duration::from_secs(30);

macro_rules! script {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("scripts/prelude.lua"),
            include_str!(concat!("scripts/", $name, ".lua"))
        ))
    };
}

struct Scripts {
    enqueue: Script,
    claim: Script,
    renew: Script,
    complete: Script,
    progress: Script,
    fail: Script,
    release: Script,
    recover: Script,
    trim: Script,
    clear_kill_switch: Script,
    reserve: Script,
    settle: Script,
    rate_limit: Script,
}

impl Scripts {
    fn load() -> Self {
        Self {
            enqueue: script!("enqueue"),
            claim: script!("claim"),
            renew: script!("renew"),
            complete: script!("complete"),
            progress: script!("progress"),
            fail: script!("fail"),
            release: script!("release"),
            recover: script!("recover"),
            trim: script!("trim"),
            clear_kill_switch: script!("clear_kill_switch"),
            reserve: script!("reserve"),
            settle: script!("settle"),
            rate_limit: script!("rate_limit"),
        }
    }
}

/// The Redis backend.
pub struct RedisStore {
    client: RedisClient,
    conn: RedisConn,
    keys: Keyspace,
    scripts: Scripts,
    /// Dedicated connection for `BLPOP` on the wake list: blocking commands must not stall the
    /// shared multiplexed connection.
    waiter: Mutex<BlockingConn>,
    /// How long finished jobs' idempotency keys are honoured.
    idempotency_ttl: Duration,
}

impl RedisStore {
    /// Connects and checks that Redis answers; fails fast with the reason if it does not. The
    /// URL chooses the topology: one node, Redis Cluster or Sentinel (see [`topology`]).
    pub async fn connect(url: &str, pipeline: &PipelineName) -> StoreResult<Self> {
        let client = RedisClient::open(url)?;
        let mut conn = client.connect().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(Self {
            waiter: Mutex::new(client.blocking(WAIT_MAX_BLOCK)),
            client,
            conn,
            keys: Keyspace::new(pipeline),
            scripts: Scripts::load(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        })
    }

    /// Sets how long idempotency keys are kept (match the retention of finished jobs).
    pub fn with_idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    pub fn keyspace(&self) -> &Keyspace {
        &self.keys
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    fn prefix(&self) -> &str {
        self.keys.prefix()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn enqueue(&self, request: JobRequest, options: EnqueueOptions) -> StoreResult<Enqueued> {
        let id = new_job_id();
        let request_json =
            serde_json::to_string(&request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (created, job_id): (i64, String) = self
            .scripts
            .enqueue
            .key(self.keys.waiting())
            .key(self.keys.wake())
            .arg(self.prefix())
            .arg(&id)
            .arg(request_json)
            .arg(options.max_attempts.max(1))
            .arg(options.idempotency_key.as_deref().unwrap_or(""))
            .arg(self.idempotency_ttl.as_secs().max(1))
            .invoke_async(&mut self.conn())
            .await?;
        let job = self
            .job(&job_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("job {job_id} vanished after enqueue")))?;
        Ok(Enqueued {
            job,
            created: created == 1,
        })
    }

    async fn job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        let fields: Vec<(String, String)> = self.conn().hgetall(self.keys.job(id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse::job_record(fields).map(Some)
    }

    async fn claim(&self, worker_id: &str, lease: Duration) -> StoreResult<Option<Claim>> {
        let token = uuid::Uuid::new_v4().to_string();
        let fields: Option<Vec<(String, String)>> = self
            .scripts
            .claim
            .key(self.keys.waiting())
            .key(self.keys.delayed())
            .key(self.keys.active())
            .arg(self.prefix())
            .arg(worker_id)
            .arg(lease.as_millis() as u64)
            .arg(&token)
            .invoke_async(&mut self.conn())
            .await?;
        let Some(fields) = fields else {
            return Ok(None);
        };
        let job = parse::job_record(fields)?;
        let lease = Lease {
            job_id: job.id.clone(),
            token,
        };
        Ok(Some(Claim { job, lease }))
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> StoreResult<bool> {
        let renewed: i64 = self
            .scripts
            .renew
            .key(self.keys.active())
            .arg(self.prefix())
            .arg(&lease.job_id)
            .arg(&lease.token)
            .arg(duration.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(renewed == 1)
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: &JobResult,
        event: &serde_json::Value,
    ) -> StoreResult<bool> {
        let result_json =
            serde_json::to_string(result).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done: i64 = self
            .scripts
            .complete
            .key(self.keys.active())
            .key(self.keys.completed())
            .arg(self.prefix())
            .arg(&lease.job_id)
            .arg(&lease.token)
            .arg(result_json)
            .arg(event.to_string())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    async fn progress(&self, lease: &Lease, event: &serde_json::Value) -> StoreResult<bool> {
        let appended: i64 = self
            .scripts
            .progress
            .key(self.keys.job(&lease.job_id))
            .arg(self.prefix())
            .arg(&lease.job_id)
            .arg(&lease.token)
            .arg(event.to_string())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(appended == 1)
    }

    async fn fail(&self, lease: &Lease, failure: &Failure) -> StoreResult<FailOutcome> {
        let delay = failure
            .retry_after
            .map(|d| d.as_millis() as i64)
            .unwrap_or(-1);
        let outcome: String = self
            .scripts
            .fail
            .key(self.keys.active())
            .key(self.keys.delayed())
            .key(self.keys.failed())
            .arg(self.prefix())
            .arg(&lease.job_id)
            .arg(&lease.token)
            .arg(&failure.error)
            .arg(delay)
            .arg(failure.duration_ms)
            .invoke_async(&mut self.conn())
            .await?;
        match outcome.as_str() {
            "retrying" => Ok(FailOutcome::Retrying),
            "failed" => Ok(FailOutcome::Failed),
            _ => Ok(FailOutcome::LeaseLost),
        }
    }

    async fn release(&self, lease: &Lease) -> StoreResult<bool> {
        let released: i64 = self
            .scripts
            .release
            .key(self.keys.active())
            .key(self.keys.waiting())
            .key(self.keys.wake())
            .arg(self.prefix())
            .arg(&lease.job_id)
            .arg(&lease.token)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(released == 1)
    }

    async fn recover_stalled(&self, max_stalls: u32) -> StoreResult<StallReport> {
        let (requeued, failed): (u32, u32) = self
            .scripts
            .recover
            .key(self.keys.active())
            .key(self.keys.waiting())
            .key(self.keys.failed())
            .key(self.keys.wake())
            .arg(self.prefix())
            .arg(max_stalls)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(StallReport { requeued, failed })
    }

    async fn counts(&self) -> StoreResult<QueueCounts> {
        let (waiting, active, delayed, completed, failed): (u64, u64, u64, u64, u64) =
            redis::pipe()
                .llen(self.keys.waiting())
                .zcard(self.keys.active())
                .zcard(self.keys.delayed())
                .zcard(self.keys.completed())
                .zcard(self.keys.failed())
                .query_async(&mut self.conn())
                .await?;
        Ok(QueueCounts {
            waiting,
            active,
            delayed,
            completed,
            failed,
        })
    }

    async fn wait_for_work(&self, timeout: Duration) -> StoreResult<()> {
        // The blocking connection has a deadline of timeout + margin and reconnects on the next
        // call after an error.
        self.waiter
            .lock()
            .await
            .blpop(&self.keys.wake(), timeout)
            .await?;
        Ok(())
    }

    async fn trim_finished(&self, retention: Retention) -> StoreResult<u64> {
        let removed: u64 = self
            .scripts
            .trim
            .key(self.keys.completed())
            .key(self.keys.failed())
            .arg(self.prefix())
            .arg(retention.max_age.as_millis() as u64)
            .arg(retention.max_count)
            .arg(TRIM_BATCH)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(removed)
    }

    async fn events_after(&self, job_id: &str, after: u64) -> StoreResult<Vec<StoredEvent>> {
        // Event `seq` n sits at list index n - 1, so the events after `after` start at `after`.
        let raw: Vec<String> = self
            .conn()
            .lrange(self.keys.job_events(job_id), after as isize, -1)
            .await?;
        raw.iter().map(|text| parse::event(job_id, text)).collect()
    }

    async fn event_feed(&self) -> StoreResult<BoxStream<'static, StoredEvent>> {
        parse::event_feed(self.client.blocking(parse::FEED_BLOCK), self.keys.events()).await
    }

    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> StoreResult<()> {
        let now = now_ms();
        let key = self.keys.worker(&info.id);
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    (worker_field::POD, info.pod.clone()),
                    (worker_field::ACTIVE, info.active.to_string()),
                    (worker_field::CONCURRENCY, info.concurrency.to_string()),
                    (worker_field::BREAKER, info.breaker.clone()),
                    (worker_field::DRAINING, info.draining.to_string()),
                    (worker_field::LAST_SEEN, now.to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, ttl.as_millis() as i64)
            .ignore()
            .zadd(self.keys.workers(), &info.id, now + ttl.as_millis() as u64)
            .ignore()
            .zrembyscore(self.keys.workers(), "-inf", now)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn remove_worker(&self, worker_id: &str) -> StoreResult<()> {
        let _: () = redis::pipe()
            .atomic()
            .del(self.keys.worker(worker_id))
            .ignore()
            .zrem(self.keys.workers(), worker_id)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let now = now_ms();
        let ids: Vec<String> = self
            .conn()
            .zrangebyscore(self.keys.workers(), format!("({now}"), "+inf")
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.worker(id));
        }
        let hashes: Vec<Vec<(String, String)>> = pipe.query_async(&mut self.conn()).await?;
        let mut workers: Vec<WorkerInfo> = ids
            .into_iter()
            .zip(hashes)
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(id, fields)| parse::worker_info(id, fields))
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    async fn kill_switch(&self) -> StoreResult<KillSwitch> {
        let fields: Vec<(String, String)> = self.conn().hgetall(self.keys.kill_switch()).await?;
        Ok(parse::kill_switch(fields))
    }

    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()> {
        let key = self.keys.kill_switch();
        let mut fields = vec![
            (kill_switch_field::ENABLED, state.enabled.to_string()),
            (
                kill_switch_field::SINCE,
                state.since.unwrap_or_else(now_ms).to_string(),
            ),
        ];
        if let Some(set_by) = state.set_by {
            fields.push((kill_switch_field::SET_BY, set_by.as_str().to_owned()));
        }
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if let Some(reason) = &state.reason {
            fields.push((kill_switch_field::REASON, reason.clone()));
        }
        pipe.hset_multiple(&key, &fields).ignore();
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool> {
        let cleared: i64 = self
            .scripts
            .clear_kill_switch
            .key(self.keys.kill_switch())
            .arg(self.prefix())
            .arg(set_by.as_str())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(cleared == 1)
    }

    async fn reserve(&self, period: &str, amount: u64, limit: u64) -> StoreResult<Reservation> {
        let granted: i64 = self
            .scripts
            .reserve
            .key(self.keys.spend(period))
            .arg(self.prefix())
            .arg(amount)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(if granted == 1 {
            Reservation::Granted
        } else {
            Reservation::Refused
        })
    }

    async fn settle(
        &self,
        period: &str,
        reserved: u64,
        cost: u64,
        usage: TokenUsage,
    ) -> StoreResult<Spend> {
        let fields: Vec<(String, String)> = self
            .scripts
            .settle
            .key(self.keys.spend(period))
            .arg(self.prefix())
            .arg(reserved)
            .arg(cost)
            .arg(usage.input_tokens)
            .arg(usage.output_tokens)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(parse::spend(fields))
    }

    async fn spend(&self, period: &str) -> StoreResult<Spend> {
        let fields: Vec<(String, String)> = self.conn().hgetall(self.keys.spend(period)).await?;
        Ok(parse::spend(fields))
    }

    async fn outcomes(&self, window: Duration) -> StoreResult<OutcomeCounts> {
        let mut pipe = redis::pipe();
        for m in super::outcome_minutes(now_ms(), window) {
            pipe.hmget(self.keys.outcomes(m), &["completed", "failed"]);
        }
        let buckets: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut self.conn()).await?;
        let mut total = OutcomeCounts::default();
        for (completed, failed) in buckets {
            total.completed += completed.unwrap_or(0);
            total.failed += failed.unwrap_or(0);
        }
        Ok(total)
    }

    async fn rate_limit(
        &self,
        user: &str,
        window: Duration,
        max: u64,
    ) -> StoreResult<RateDecision> {
        let (index, window_ms) = super::rate_window(now_ms(), window);
        let (count, ttl_ms): (u64, i64) = self
            .scripts
            .rate_limit
            .key(self.keys.rate_limit(user, index))
            .arg(self.prefix())
            .arg(window_ms)
            .invoke_async(&mut self.conn())
            .await?;
        if count > max {
            let retry_after = Duration::from_millis(ttl_ms.max(1) as u64);
            Ok(RateDecision::Limited { retry_after })
        } else {
            Ok(RateDecision::Allowed {
                remaining: max - count,
            })
        }
    }
}
