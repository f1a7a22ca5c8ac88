//! Redis store: shared by api, worker and operator pods.
//!
//! Every change that touches more than one key is a Lua script ([`scripts`]), so it is atomic
//! and replicated as one unit, as BullMQ does it. Scripts get every key in `KEYS` (all under the
//! pipeline's hash tag, see [`flashcard_core::keyspace`]). Lease deadlines inside scripts come from the
//! Redis server's clock, so leases do not depend on the pods' clocks agreeing.

mod blocking;
mod clock;
pub mod connection;
mod feed;
mod history;
mod parse;
mod reconnect;
mod scripts;
mod signals;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use redis::{AsyncCommands, Value};
use tokio::sync::Mutex;

pub use blocking::BlockingConn;
pub use connection::{ConnectOptions, RedisClient, RedisConn};
pub use topology::{Topology, TopologyError, TopologyKind};

use clock::ServerClock;
use parse::Reply;
use scripts::{Call, KeyArgs, Scripts};

use super::rendered::{self, ClaimBodies, OutcomeBodies, StallBodies};
use super::{
    Admission, BUDGET_EXHAUSTED, BUDGET_EXHAUSTED_CODE, BudgetConfig, BudgetState, Cancellation,
    Canceller, ClaimRequest, Claimed, Cost, Epoch, FinishOutcome, Finished, FinishedJob,
    KillSwitch, Lease, MinuteOutcomes, Outcome, OutcomeCounts, QueueCounts, Retention, SetBy,
    Spend, StallReport, Store, StoreError, StoreResult, StoredEvent, Submission, UNREADABLE_CODE,
    WorkerInfo, period_keys,
};
use flashcard_core::job::{JobRecord, JobState, input_bytes};
use flashcard_core::keyspace::{Keyspace, PipelineId, client_digest, job_field, kill_switch_field};

/// Finished jobs deleted per trim call, so one call never blocks Redis for long.
const TRIM_BATCH: u64 = 500;
/// Longest `BLPOP` of `wait_for_work`; longer waits are cut to it.
const WAIT_MAX_BLOCK: Duration = Duration::from_secs(30);
/// Keys one step of `purge` looks at (`SCAN ... COUNT`): each script call stays short even on a
/// Redis that holds many other keys.
const PURGE_SCAN_COUNT: u64 = 1000;
/// Full passes `purge` makes at most: it repeats a pass that removed something, so a key
/// written behind the cursor during a pass is caught by the next one.
const PURGE_PASSES: usize = 3;

/// The Redis backend.
pub struct RedisStore {
    client: RedisClient,
    conn: RedisConn,
    keys: Keyspace,
    scripts: Arc<Scripts>,
    /// Dedicated connection for `BLPOP` on the wake list: blocking commands must not stall the
    /// shared multiplexed connection.
    waiter: Mutex<BlockingConn>,
    /// The server's clock (see [`clock`]), kept current by `_clock_refresh`.
    clock: ServerClock,
    _clock_refresh: AbortOnDrop,
}

/// Ends a background task with the store that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl RedisStore {
    /// Connects and checks that Redis answers; fails fast with the reason if it does not. The
    /// URL chooses the topology: one node, Redis Cluster or Sentinel (see [`topology`]).
    pub async fn connect(url: &str, pipeline: &PipelineId) -> StoreResult<Self> {
        let client = RedisClient::open(url)?;
        let mut conn = client.connect().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        let keys = Keyspace::new(pipeline);
        let scripts = Arc::new(Scripts::load());
        let clock = ServerClock::default();
        read_server_clock(&scripts, &keys, &mut conn, &clock).await?;
        let refresh = tokio::spawn(refresh_server_clock(
            scripts.clone(),
            keys.clone(),
            conn.clone(),
            clock.clone(),
        ));
        Ok(Self {
            waiter: Mutex::new(client.blocking(WAIT_MAX_BLOCK)),
            client,
            conn,
            keys,
            scripts,
            clock,
            _clock_refresh: AbortOnDrop(refresh),
        })
    }

    /// The server's offset from this process's clock, in ms (positive: the server is ahead).
    pub fn server_clock_offset_ms(&self) -> i64 {
        self.clock.offset_ms()
    }

    pub fn keyspace(&self) -> &Keyspace {
        &self.keys
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    fn key_args(&self) -> KeyArgs<'_> {
        KeyArgs::new(&self.keys)
    }

    /// Pushes the claim part's arguments (`claim_lib.lua`); `None` claims nothing.
    fn claim_args<'a>(
        call: Call<'a>,
        request: Option<&ClaimRequest<'_>>,
        token: &str,
        now: u64,
    ) -> Call<'a> {
        let (worker, lease_ms, max_jobs, client_cap, pricing) = match request {
            Some(r) => (
                r.worker_id,
                r.lease.as_millis() as u64,
                r.max_jobs,
                r.client_cap,
                r.pricing,
            ),
            None => ("", 0, 0, 0, Default::default()),
        };
        let bodies = ClaimBodies::new(request, now);
        call.arg("worker", worker)
            .arg("lease_ms", lease_ms)
            .arg("token", token)
            .arg("max_jobs", max_jobs)
            .arg("client_cap", client_cap)
            .arg("price_in", pricing.input_micros_per_token.to_string())
            .arg("price_out", pricing.output_micros_per_token.to_string())
            .arg("prompt_overhead", pricing.prompt_overhead_tokens)
            .arg("out_per_card", pricing.output_tokens_per_card)
            .arg("out_overhead", pricing.output_overhead_tokens)
            .arg("active_body", bodies.active)
            .arg("started_body", bodies.started.unwrap_or_default())
            .arg("budget_wait_body", bodies.budget_wait)
            .arg("budget_failed_body", bodies.budget_failed)
            .arg("budget_error", BUDGET_EXHAUSTED)
            .arg("budget_code", BUDGET_EXHAUSTED_CODE)
    }

    /// Fails in the store every claimed job whose record could not be read (with
    /// `JOB_UNREADABLE`, releasing its reservation), so it neither blocks the rest of the batch
    /// nor comes back every lease. A job whose failure cannot be recorded now is left to stall
    /// recovery.
    async fn settle_unreadable(&self, parsed: parse::ParsedClaim) -> Claimed {
        let mut claimed = parsed.claimed;
        for (lease, why) in parsed.unreadable {
            tracing::error!(job = %lease.job_id, error = %why,
                "claimed job cannot be read by this version; failing it with {UNREADABLE_CODE}");
            let error = format!("The job's stored record could not be read: {why}");
            let outcome = Outcome::Failed {
                error: &error,
                code: Some(UNREADABLE_CODE),
                duration_ms: 0,
            };
            match self.finish(&lease, outcome, Cost::none(), None).await {
                Ok(_) => claimed.unreadable += 1,
                Err(e) => tracing::warn!(job = %lease.job_id, error = %e,
                    "could not fail the unreadable job; stall recovery will retry"),
            }
        }
        claimed
    }

    fn period_args<'a>(call: Call<'a>, periods: &[String; 3]) -> Call<'a> {
        call.arg("period_daily", &periods[0])
            .arg("period_weekly", &periods[1])
            .arg("period_monthly", &periods[2])
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    async fn submit(&self, s: Submission) -> StoreResult<Admission> {
        let now = self.clock.now_ms();
        let periods = period_keys(self.clock.now_timestamp());
        let request_json = to_json(&s.request)?;
        let (rate_key, rate_max, rate_window_ms) = match &s.rate_limit {
            Some(limit) if limit.max > 0 => {
                let (index, window_ms) = super::rate_window(now, limit.window);
                let key = self.keys.rate_limit(&client_digest(&limit.subject), index);
                (Some(key), limit.max, window_ms)
            }
            _ => (None, 0, 0),
        };
        let idem = s.idempotency.as_ref();
        let client = client_digest(&s.owner);
        let keys = KeyArgs {
            job: Some(&s.job_id),
            client: Some(&client),
            idem: idem.map(|i| i.digest.as_str()),
            rate: rate_key,
            periods: Some(&periods),
            ..self.key_args()
        };
        let call = self
            .scripts
            .submit
            .call(&keys)?
            .arg("job_id", &s.job_id)
            .arg("request", request_json)
            .arg("owner", &s.owner)
            .arg("client", &client)
            .arg("max_attempts", s.max_attempts.max(1))
            .arg("input_bytes", input_bytes(&s.request))
            .arg("card_count", s.request.card_count)
            .arg("traceparent", s.traceparent.as_deref().unwrap_or(""))
            .arg("idem_digest", idem.map(|i| i.digest.as_str()).unwrap_or(""))
            .arg(
                "fingerprint",
                idem.map(|i| i.fingerprint.as_str()).unwrap_or(""),
            )
            .arg(
                "idem_ttl",
                idem.map(|i| i.ttl.as_secs().max(1)).unwrap_or(1),
            )
            .arg("rate_max", rate_max)
            .arg("rate_window_ms", rate_window_ms);
        let reply: Value = Self::period_args(call, &periods)
            .invoke(&mut self.conn())
            .await?;
        let mut reply = Reply::new(reply, "submit")?;
        let verdict = reply.string()?;
        Ok(match verdict.as_str() {
            "accepted" => Admission::Accepted {
                job_id: reply.string()?,
            },
            "replayed" => {
                let job_id = reply.string()?;
                let state = JobState::parse(&reply.string()?).unwrap_or(JobState::Waiting);
                Admission::Replayed { job_id, state }
            }
            "reused" => Admission::KeyReused {
                job_id: reply.string()?,
            },
            "refused" => {
                let set_by = SetBy::parse(&reply.string()?);
                Admission::Refused(KillSwitch {
                    set_by,
                    ..KillSwitch::manual(SetBy::Admin, None, now)
                })
            }
            "limited" => Admission::RateLimited {
                retry_after: Duration::from_millis(reply.u64()?.max(1)),
            },
            other => {
                return Err(StoreError::Corrupt(format!(
                    "submit: unexpected verdict {other:?}"
                )));
            }
        })
    }

    async fn job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        let fields: Vec<(String, String)> = self.conn().hgetall(self.keys.job(id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse::job_record(fields).map(Some)
    }

    async fn job_head(&self, id: &str) -> StoreResult<Option<super::JobHead>> {
        let (state, seq): (Option<String>, Option<u64>) = self
            .conn()
            .hmget(self.keys.job(id), &[job_field::STATE, job_field::EVENT_SEQ])
            .await?;
        Ok(state
            .and_then(|s| JobState::parse(&s))
            .map(|state| super::JobHead {
                state,
                event_seq: seq.unwrap_or(0),
            }))
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> StoreResult<Claimed> {
        let now = self.clock.now_ms();
        let token = request.call_id.as_str();
        let periods = period_keys(self.clock.now_timestamp());
        let keys = KeyArgs {
            periods: Some(&periods),
            minute: Some(now / 60_000),
            call_id: Some(token),
            ..self.key_args()
        };
        let call = Self::claim_args(self.scripts.claim.call(&keys)?, Some(request), token, now);
        let reply: Value = Self::period_args(call, &periods)
            .invoke(&mut self.conn())
            .await?;
        let parsed = parse::claimed(Reply::new(reply, "claim")?, token)?;
        Ok(self.settle_unreadable(parsed).await)
    }

    async fn renew(&self, leases: &[Lease], duration: Duration) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self
            .scripts
            .renew
            .call(&self.key_args())?
            .arg("lease_ms", duration.as_millis() as u64);
        for lease in leases {
            call = call.extra(&lease.job_id).extra(&lease.token);
        }
        let renewed: Vec<i64> = call.invoke(&mut self.conn()).await?;
        Ok(renewed.into_iter().map(|r| r == 1).collect())
    }

    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome<'_>,
        cost: Cost,
        next: Option<&ClaimRequest<'_>>,
    ) -> StoreResult<Finished> {
        let now = self.clock.now_ms();
        let token = next.map(|n| n.call_id.as_str()).unwrap_or("");
        let periods = period_keys(self.clock.now_timestamp());
        let rendered =
            OutcomeBodies::new(outcome, now).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let keys = KeyArgs {
            job: Some(&lease.job_id),
            periods: Some(&periods),
            lease_period: Some(&lease.period),
            minute: Some(now / 60_000),
            call_id: next.map(|n| n.call_id.as_str()),
            ..self.key_args()
        };
        let call = self
            .scripts
            .finish
            .call(&keys)?
            .arg("id", &lease.job_id)
            .arg("lease_token", &lease.token)
            .arg("outcome", rendered.kind)
            .arg("result", rendered.result_json.unwrap_or_default())
            .arg("body", rendered.body)
            .arg("exhausted_body", rendered.exhausted.unwrap_or_default())
            .arg("delay_ms", rendered.delay_ms)
            .arg("error", rendered.error)
            .arg("error_code", rendered.code.unwrap_or(""))
            .arg("cost", cost.micros)
            .arg("input_tokens", cost.usage.input_tokens)
            .arg("output_tokens", cost.usage.output_tokens)
            .arg("called", u8::from(cost.called))
            .arg("at_bound", u8::from(cost.at_bound));
        let call = Self::claim_args(call, next, token, now);
        let reply: Value = Self::period_args(call, &periods)
            .invoke(&mut self.conn())
            .await?;
        let mut reply = Reply::new(reply, "finish")?;
        let recorded = reply.string()?;
        // A repeat of a finish whose reply was lost reports what the first one recorded.
        let outcome = match recorded.as_str() {
            "completed" | "duplicate:completed" => FinishOutcome::Completed,
            "retrying" | "duplicate:delayed" => FinishOutcome::Retrying,
            "failed" | "duplicate:failed" => FinishOutcome::Failed,
            "released" | "duplicate:waiting" => FinishOutcome::Released,
            _ => FinishOutcome::LeaseLost,
        };
        let spent_micros = reply.u64()?;
        let overrun_micros = reply.u64()?;
        let budget_stopped = reply.u64()? == 1;
        let claimed = parse::claimed(reply.array()?, token)?;
        let claimed = self.settle_unreadable(claimed).await;
        Ok(Finished {
            outcome,
            spent_micros,
            overrun_micros,
            budget_stopped,
            claimed,
        })
    }

    async fn progress(
        &self,
        lease: &Lease,
        stage: &str,
        percent: u8,
        message: &str,
    ) -> StoreResult<bool> {
        let body = rendered::progress(stage, percent, message, self.clock.now_ms());
        let keys = KeyArgs {
            job: Some(&lease.job_id),
            ..self.key_args()
        };
        let appended: i64 = self
            .scripts
            .progress
            .call(&keys)?
            .arg("id", &lease.job_id)
            .arg("token", &lease.token)
            .arg("body", body)
            .invoke(&mut self.conn())
            .await?;
        Ok(appended == 1)
    }

    async fn cancel(&self, id: &str, by: Canceller<'_>) -> StoreResult<Cancellation> {
        let body = rendered::cancelled(by.as_str(), self.clock.now_ms());
        let keys = KeyArgs {
            job: Some(id),
            ..self.key_args()
        };
        let owner = match by {
            Canceller::Owner(owner) => owner,
            Canceller::Admin => "",
        };
        let reply: Vec<String> = self
            .scripts
            .cancel
            .call(&keys)?
            .arg("id", id)
            .arg("owner", owner)
            .arg("by", by.as_str())
            .arg("body", body)
            .invoke(&mut self.conn())
            .await?;
        let state = |i: usize| {
            reply
                .get(i)
                .and_then(|s| JobState::parse(s))
                .ok_or_else(|| StoreError::Corrupt(format!("cancel replied {reply:?}")))
        };
        Ok(match reply.first().map(String::as_str) {
            Some("missing") => Cancellation::Missing,
            Some("repeat") => Cancellation::AlreadyCancelled,
            Some("cancelled") => Cancellation::Cancelled { was: state(1)? },
            Some("finished") => Cancellation::Finished(state(1)?),
            _ => return Err(StoreError::Corrupt(format!("cancel replied {reply:?}"))),
        })
    }

    async fn recover_stalled(&self, max_stalls: u32) -> StoreResult<StallReport> {
        let now = self.clock.now_ms();
        let bodies = StallBodies::new(max_stalls, now);
        let keys = KeyArgs {
            minute: Some(now / 60_000),
            ..self.key_args()
        };
        let (requeued, failed): (u32, u32) = self
            .scripts
            .recover
            .call(&keys)?
            .arg("max_stalls", max_stalls)
            .arg("stalled_error", &bodies.error)
            .arg("stalled_code", bodies.code)
            .arg("waiting_body", bodies.waiting)
            .arg("failed_body", bodies.failed)
            .invoke(&mut self.conn())
            .await?;
        Ok(StallReport { requeued, failed })
    }

    async fn counts(&self) -> StoreResult<QueueCounts> {
        let (legacy, queued, active, delayed, completed, failed): (
            u64,
            Option<i64>,
            u64,
            u64,
            u64,
            u64,
        ) = redis::pipe()
            .llen(self.keys.waiting())
            .get(self.keys.queued())
            .zcard(self.keys.active())
            .zcard(self.keys.delayed())
            .zcard(self.keys.completed())
            .zcard(self.keys.failed())
            .query_async(&mut self.conn())
            .await?;
        Ok(QueueCounts {
            waiting: legacy + queued.unwrap_or(0).max(0) as u64,
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

    async fn work_signals(&self) -> StoreResult<BoxStream<'static, u64>> {
        signals::work_signals(
            self.client.blocking(signals::SIGNAL_BLOCK),
            self.keys.signals(),
        )
        .await
    }

    async fn trim_finished(&self, retention: Retention) -> StoreResult<u64> {
        let removed: u64 = self
            .scripts
            .trim
            .call(&self.key_args())?
            .arg("max_age_ms", retention.max_age.as_millis() as u64)
            .arg("max_count", retention.max_count)
            .arg("batch", TRIM_BATCH)
            .invoke(&mut self.conn())
            .await?;
        Ok(removed)
    }

    async fn events_after(&self, job_id: &str, after: u64) -> StoreResult<Vec<StoredEvent>> {
        // Event `seq` n sits at list index n - 1, so the events after `after` start at `after`.
        // The result is read with them, in one transaction, for a `completed` among them.
        let (raw, result): (Vec<Vec<u8>>, Option<Vec<u8>>) = redis::pipe()
            .atomic()
            .lrange(self.keys.job_events(job_id), after as isize, -1)
            .hget(self.keys.job(job_id), "result")
            .query_async(&mut self.conn())
            .await?;
        raw.into_iter()
            .filter_map(|text| {
                let event = match StoredEvent::parse(job_id, text) {
                    Ok(event) => event,
                    Err(e) => return Some(Err(StoreError::Corrupt(e))),
                };
                let data =
                    history::follower_text(event.kind(), event.data.clone(), result.as_deref())?;
                Some(Ok(StoredEvent { data, ..event }))
            })
            .collect()
    }

    async fn event_feed(
        &self,
        interest: super::FeedInterest,
    ) -> StoreResult<BoxStream<'static, super::FeedItem>> {
        feed::event_feed(
            self.client.blocking(feed::FEED_BLOCK),
            self.keys.clone(),
            interest,
        )
        .await
    }

    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> StoreResult<()> {
        let keys = KeyArgs {
            worker: Some(&info.id),
            ..self.key_args()
        };
        let _: String = self
            .scripts
            .heartbeat
            .call(&keys)?
            .arg("worker_id", &info.id)
            .arg("pod", &info.pod)
            .arg("active", info.active)
            .arg("concurrency", info.concurrency)
            .arg("breaker", &info.breaker)
            .arg("draining", info.draining.to_string())
            .arg("ttl_ms", ttl.as_millis() as u64)
            .invoke(&mut self.conn())
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
        let now = self.clock.now_ms();
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

    async fn budget_state(&self) -> StoreResult<BudgetState> {
        let periods = period_keys(self.clock.now_timestamp());
        let keys = KeyArgs {
            periods: Some(&periods),
            ..self.key_args()
        };
        let reply: Value = Self::period_args(self.scripts.budget_state.call(&keys)?, &periods)
            .invoke(&mut self.conn())
            .await?;
        let mut reply = Reply::new(reply, "budget_state")?;
        let stored = parse::budget_config(reply.pairs()?);
        let kill_switch = parse::kill_switch(reply.pairs()?);
        let period = reply.string()?;
        let spend = reply.spend()?;
        let epoch = Epoch::decode(&reply.string()?);
        Ok(BudgetState {
            stored: stored.is_some(),
            config: stored.unwrap_or_else(BudgetConfig::unlimited),
            kill_switch,
            period,
            spend,
            epoch,
        })
    }

    async fn set_budget(&self, budget: &BudgetConfig) -> StoreResult<()> {
        let periods = period_keys(self.clock.now_timestamp());
        let keys = KeyArgs {
            periods: Some(&periods),
            ..self.key_args()
        };
        let call = self
            .scripts
            .set_budget
            .call(&keys)?
            .arg("limit_micros", budget.limit_micros)
            .arg("period", budget.period.as_str())
            .arg("warn_percent", budget.warn_percent.to_string())
            .arg("enforce", u8::from(budget.enforce))
            .arg("source", budget.source.as_str());
        let _: i64 = Self::period_args(call, &periods)
            .invoke(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()> {
        let key = self.keys.kill_switch();
        let mut fields = vec![
            (kill_switch_field::ENABLED, state.enabled.to_string()),
            (
                kill_switch_field::SINCE,
                state
                    .since
                    .unwrap_or_else(|| self.clock.now_ms())
                    .to_string(),
            ),
        ];
        if let Some(set_by) = state.set_by {
            fields.push((kill_switch_field::SET_BY, set_by.as_str().to_owned()));
        }
        if let Some(reason) = &state.reason {
            fields.push((kill_switch_field::REASON, reason.clone()));
        }
        if let Some(limit) = state.limit_micros {
            fields.push((kill_switch_field::LIMIT_MICROS, limit.to_string()));
        }
        if let Some(period) = &state.period {
            fields.push((kill_switch_field::PERIOD, period.clone()));
        }
        let _: () = redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &fields)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool> {
        let cleared: i64 = self
            .scripts
            .clear_kill_switch
            .call(&self.key_args())?
            .arg("set_by", set_by.as_str())
            .invoke(&mut self.conn())
            .await?;
        Ok(cleared == 1)
    }

    async fn spend(&self, period: &str) -> StoreResult<Spend> {
        let fields: Vec<(String, String)> = self.conn().hgetall(self.keys.spend(period)).await?;
        Ok(parse::spend(fields))
    }

    async fn ensure_epoch(&self) -> StoreResult<(Epoch, bool)> {
        let fresh = Epoch::new(self.clock.now_ms());
        let (text, created): (String, i64) = self
            .scripts
            .ensure_epoch
            .call(&self.key_args())?
            .arg("epoch", fresh.encode())
            .invoke(&mut self.conn())
            .await?;
        let epoch = Epoch::decode(&text)
            .ok_or_else(|| StoreError::Corrupt(format!("store epoch {text:?}")))?;
        Ok((epoch, created == 1))
    }

    async fn restore_spend(&self, period: &str, spent_micros: u64) -> StoreResult<Spend> {
        let keys = KeyArgs {
            spend_period: Some(period),
            ..self.key_args()
        };
        let reply: Value = self
            .scripts
            .restore_spend
            .call(&keys)?
            .arg("spent_micros", spent_micros)
            .invoke(&mut self.conn())
            .await?;
        let wrapped = Value::Array(vec![reply]);
        Reply::new(wrapped, "restore_spend")?.spend()
    }

    async fn purge(&self) -> StoreResult<u64> {
        let pattern = self.keys.pattern();
        let mut removed = 0;
        for _ in 0..PURGE_PASSES {
            let mut cursor = "0".to_owned();
            let mut pass = 0;
            loop {
                let (next, unlinked): (String, u64) = self
                    .scripts
                    .purge
                    .call(&self.key_args())?
                    .arg("pattern", &pattern)
                    .arg("cursor", &cursor)
                    .arg("count", PURGE_SCAN_COUNT)
                    .invoke(&mut self.conn())
                    .await?;
                pass += unlinked;
                if next == "0" {
                    break;
                }
                cursor = next;
            }
            removed += pass;
            if pass == 0 {
                break;
            }
        }
        Ok(removed)
    }

    async fn outcomes(&self, window: Duration) -> StoreResult<OutcomeCounts> {
        let mut pipe = redis::pipe();
        for m in super::outcome_minutes(self.clock.now_ms(), window) {
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

    async fn outcomes_by_minute(&self, window: Duration) -> StoreResult<Vec<MinuteOutcomes>> {
        let minutes: Vec<u64> = super::outcome_minutes(self.clock.now_ms(), window).collect();
        let mut pipe = redis::pipe();
        for m in &minutes {
            pipe.hmget(self.keys.outcomes(*m), &["completed", "failed"]);
        }
        let buckets: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut self.conn()).await?;
        Ok(minutes
            .into_iter()
            .zip(buckets)
            .map(|(minute, (completed, failed))| MinuteOutcomes {
                minute,
                completed: completed.unwrap_or(0),
                failed: failed.unwrap_or(0),
            })
            .collect())
    }

    async fn recent_finished(&self, limit: usize) -> StoreResult<Vec<FinishedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let last = limit as isize - 1;
        let (completed, failed): (Vec<(String, f64)>, Vec<(String, f64)>) = redis::pipe()
            .zrevrange_withscores(self.keys.completed(), 0, last)
            .zrevrange_withscores(self.keys.failed(), 0, last)
            .query_async(&mut self.conn())
            .await?;
        let mut newest: Vec<(u64, String)> = completed
            .into_iter()
            .chain(failed)
            .map(|(id, score)| (score as u64, id))
            .collect();
        newest.sort_by(|a, b| b.cmp(a));
        newest.truncate(limit);
        if newest.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (_, id) in &newest {
            pipe.hmget(
                self.keys.job(id),
                &[
                    job_field::STATE,
                    job_field::CREATED_AT,
                    job_field::STARTED_AT,
                    job_field::FINISHED_AT,
                ],
            );
        }
        type Times = (Option<String>, Option<u64>, Option<u64>, Option<u64>);
        let times: Vec<Times> = pipe.query_async(&mut self.conn()).await?;
        Ok(newest
            .into_iter()
            .zip(times)
            .filter_map(|((finished, id), (state, created, started, finished_at))| {
                // A job trimmed between the two reads has no hash any more: skip it.
                let state = JobState::parse(state.as_deref()?)?;
                Some(FinishedJob {
                    id,
                    state,
                    created_at: created.unwrap_or(0),
                    started_at: started,
                    finished_at: finished_at.unwrap_or(finished),
                })
            })
            .collect())
    }
}

/// Measures the server clock's offset once (`TIME` on the pipeline's node).
async fn read_server_clock(
    scripts: &Scripts,
    keys: &Keyspace,
    conn: &mut RedisConn,
    clock: &ServerClock,
) -> StoreResult<()> {
    let probe = clock::Probe::start();
    let (seconds, micros): (u64, u64) = scripts
        .server_time
        .call(&KeyArgs::new(keys))?
        .invoke(conn)
        .await?;
    clock.observe(seconds, micros, probe.sent_ms, probe.round_trip());
    Ok(())
}

/// Measures the offset again every [`clock::REFRESH`]; a failed reading keeps the last one.
async fn refresh_server_clock(
    scripts: Arc<Scripts>,
    keys: Keyspace,
    mut conn: RedisConn,
    clock: ServerClock,
) {
    loop {
        tokio::time::sleep(clock::REFRESH).await;
        if let Err(e) = read_server_clock(&scripts, &keys, &mut conn, &clock).await {
            tracing::debug!(error = %e, "could not read the server clock; keeping the last offset");
        }
    }
}
