//! In-memory store: one process, no persistence; the default of `standalone` mode.
//!
//! It follows the same contract as the Redis store (the conformance suite checks both) and the
//! same rules (the transitions below mirror the Lua scripts). Locks are split so the hot path
//! never waits on a big one: `core` holds the queue indexes, idempotency, rate counters and the
//! budget, all small O(1)/O(log n) updates; job records and their event histories live in
//! shards of their own. Lock order is always `core` then a shard. Events are rendered before
//! any lock is taken; a broadcast channel is the live feed, a `Notify` wakes idle workers and
//! another broadcast channel carries the "work arrived" signals.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{Notify, broadcast};
use tokio_stream::wrappers::BroadcastStream;

use super::fair::{FairQueue, Turn};
use super::rendered::{self, ClaimBodies, OutcomeBodies, StallBodies};
use super::{
    Admission, BUDGET_EXHAUSTED, BUDGET_EXHAUSTED_CODE, BudgetConfig, BudgetSource, BudgetState,
    Cancellation, Canceller, Claim, ClaimRequest, Claimed, Cost, Epoch, FeedInterest, FeedItem,
    FinishOutcome, Finished, FinishedJob, JobHead, KillSwitch, Lease, MinuteOutcomes, Outcome,
    OutcomeCounts, QueueCounts, Retention, SetBy, Spend, StallReport, Store, StoreResult,
    StoredEvent, Submission, WorkerInfo, budget_stop_lapsed, budget_stop_reason,
};
use flashcard_core::events;
use flashcard_core::job::{JobRecord, JobResult, JobState, input_bytes, now_ms};

/// Live feed capacity; a lagging api process skips (and backfills from the job's history).
const FEED_CAPACITY: usize = 4096;
/// Buffered "work arrived" signals per follower; a lagging follower gets one signal for the lot.
const SIGNAL_CAPACITY: usize = 64;
const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    record: JobRecord,
    lease_token: Option<String>,
    idem_digest: Option<String>,
    fingerprint: Option<String>,
    input_bytes: u64,
    reserved: u64,
    reserved_period: Option<String>,
    budget_wait: bool,
    /// The lease token of the attempt last finished (a repeated finish changes nothing).
    settled: Option<String>,
    events: Vec<StoredEvent>,
}

#[derive(Debug, Default)]
struct Core {
    /// Waiting jobs, one line per client (owner), taken in turn.
    queue: FairQueue,
    delayed: BTreeSet<(u64, String)>,
    /// Active job -> lease deadline.
    active: HashMap<String, u64>,
    completed: BTreeSet<(u64, String)>,
    failed: BTreeSet<(u64, String)>,
    cancelled: BTreeSet<(u64, String)>,
    /// Idempotency digest -> (job id, expiry ms).
    idem: HashMap<String, (String, u64)>,
    rate: HashMap<(String, u64), u64>,
    budget: Option<BudgetConfig>,
    kill_switch: Option<KillSwitch>,
    spend: HashMap<String, Spend>,
    epoch: Option<Epoch>,
    outcomes: HashMap<u64, OutcomeCounts>,
    /// What each claim call took (job ids, blocked, budget-failed), until its expiry (ms), as
    /// the `claim:<id>` records of the Redis store.
    claims: HashMap<String, (Vec<String>, bool, u32, u64)>,
    /// The claim records by expiry, oldest first (leases are alike, so insertion order is
    /// nearly expiry order): expired ones are dropped from the front, O(1) per claim.
    claim_expiry: VecDeque<(u64, String)>,
}

/// The budget in force, as the scripts' `budget_in_force` computes it.
struct InForce {
    config: BudgetConfig,
    enforced: u64,
    period: String,
}

impl Core {
    fn in_force(&self, now: jiff::Timestamp) -> InForce {
        let config = self.budget.unwrap_or_else(BudgetConfig::unlimited);
        InForce {
            enforced: config.enforced_limit(),
            period: config.period_key(now),
            config,
        }
    }

    fn spend_of(&mut self, period: &str) -> &mut Spend {
        self.spend.entry(period.to_owned()).or_default()
    }

    fn switch(&self) -> KillSwitch {
        self.kill_switch.clone().unwrap_or_else(KillSwitch::off)
    }

    fn set_budget_stop(&mut self, budget: &InForce, spent: u64, now_ms: u64) {
        self.kill_switch = Some(KillSwitch {
            limit_micros: Some(budget.config.limit_micros),
            period: Some(budget.period.clone()),
            ..KillSwitch::manual(
                SetBy::Budget,
                Some(budget_stop_reason(
                    spent,
                    budget.config.limit_micros,
                    &budget.period,
                )),
                now_ms,
            )
        });
    }

    fn clear_switch(&mut self, set_by: SetBy, now_ms: u64) {
        self.kill_switch = Some(KillSwitch {
            set_by: Some(set_by),
            since: Some(now_ms),
            ..KillSwitch::off()
        });
    }

    /// `review_stop` of `budget_lib.lua`: clears a lapsed stop, or switches the stop on at an
    /// enforced limit. True if it switched the stop on.
    fn review_stop(&mut self, now: jiff::Timestamp, now_ms: u64) -> bool {
        let budget = self.in_force(now);
        let spent = self.spend_of(&budget.period).spent_micros;
        let ks = self.switch();
        if ks.enabled {
            if budget_stop_lapsed(&ks, &budget.config, spent, now) {
                self.clear_switch(SetBy::Budget, now_ms);
            } else {
                return false;
            }
        }
        if budget.enforced > 0 && spent >= budget.enforced {
            self.set_budget_stop(&budget, spent, now_ms);
            return true;
        }
        false
    }

    fn count_outcome(&mut self, at: u64, completed: bool) {
        let bucket = self.outcomes.entry(at / 60_000).or_default();
        if completed {
            bucket.completed += 1;
        } else {
            bucket.failed += 1;
        }
    }
}

/// The in-memory backend.
pub struct MemoryStore {
    core: Mutex<Core>,
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    hasher: RandomState,
    workers: Mutex<HashMap<String, (WorkerInfo, u64)>>,
    feed: broadcast::Sender<StoredEvent>,
    work: Notify,
    signals: broadcast::Sender<()>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update below is a handful of plain assignments, so a panic elsewhere cannot leave
    // the state half-changed in a way that matters more than losing the process: a poisoned
    // lock is taken over.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    pub fn new() -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let (signals, _) = broadcast::channel(SIGNAL_CAPACITY);
        Self {
            core: Mutex::new(Core::default()),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            workers: Mutex::new(HashMap::new()),
            feed,
            work: Notify::new(),
            signals,
        }
    }

    fn shard(&self, job_id: &str) -> MutexGuard<'_, HashMap<String, Entry>> {
        let index = self.hasher.hash_one(job_id) as usize % SHARDS;
        lock(&self.shards[index])
    }

    /// Numbers and stores an event (`append_event` in the scripts) and publishes it.
    fn append(&self, entry: &mut Entry, kind: &str, body: &str, counters: &[(&str, u64)]) {
        entry.record.event_seq += 1;
        let seq = entry.record.event_seq;
        let text = events::numbered(seq, &entry.record.id, counters, body);
        let event = StoredEvent {
            job_id: Arc::from(entry.record.id.as_str()),
            seq,
            kind: Arc::from(kind),
            data: Bytes::from(text),
        };
        entry.events.push(event.clone());
        // No receiver is fine: nobody is listening.
        let _ = self.feed.send(event);
    }

    fn lease_held(entry: &Entry, lease: &Lease) -> bool {
        entry.record.state == JobState::Active && entry.lease_token.as_deref() == Some(&lease.token)
    }

    /// `claim_jobs` of `claim_lib.lua`, under the core lock.
    fn claim_locked(
        &self,
        core: &mut Core,
        request: &ClaimRequest<'_>,
        bodies: &ClaimBodies,
        now_ts: jiff::Timestamp,
        now: u64,
    ) -> Claimed {
        if request.max_jobs > 0 {
            while let Some((expiry, _)) = core.claim_expiry.front()
                && *expiry <= now
            {
                if let Some((_, token)) = core.claim_expiry.pop_front() {
                    core.claims.remove(&token);
                }
            }
            if let Some((ids, blocked, failed, _)) = core
                .claims
                .get(request.call_id.as_str())
                .filter(|record| record.3 > now)
            {
                return self.replay_claim(ids, *blocked, *failed, request.call_id.as_str());
            }
        }
        // Promote due retries.
        while let Some((due, id)) = core.delayed.first().cloned() {
            if due > now {
                break;
            }
            core.delayed.pop_first();
            if let Some(entry) = self.shard(&id).get_mut(&id) {
                entry.record.state = JobState::Waiting;
                let owner = entry.record.owner.clone();
                core.queue.enqueue(id, &owner, false);
            }
        }
        let mut claimed = Claimed::default();
        if request.max_jobs == 0 {
            return claimed;
        }
        let budget = core.in_force(now_ts);
        let (spent, mut reserved) = {
            let s = core.spend_of(&budget.period);
            (s.spent_micros, s.reserved_micros)
        };
        let mut added = 0;
        let mut stopped = false;
        let token = request.call_id.as_str().to_owned();
        // The client whose turn it is and what each client started in this call (see `fair`).
        let mut turn: Option<Turn> = None;
        let mut started_by: HashMap<String, u32> = HashMap::new();
        while (claimed.jobs.len() as u32) < request.max_jobs && claimed.budget_failed < 100 {
            if turn.is_none() {
                turn = core.queue.next_turn(request.client_cap, &started_by);
            }
            let Some(client) = turn.as_ref().map(|t| t.client.clone()) else {
                break;
            };
            let Some(id) = core.queue.first(&client).cloned() else {
                turn = None;
                continue;
            };
            let mut shard = self.shard(&id);
            let Some(entry) = shard.get_mut(&id) else {
                core.queue.pop(&client);
                continue;
            };
            let amount = request
                .pricing
                .reservation(entry.input_bytes, entry.record.request.card_count);
            let fits = budget.enforced == 0 || spent + reserved + amount <= budget.enforced;
            if !fits && reserved > 0 {
                claimed.budget_blocked = true;
                if !entry.budget_wait {
                    entry.budget_wait = true;
                    self.append(entry, "waiting", &bodies.budget_wait, &[]);
                }
                break;
            }
            core.queue.pop(&client);
            if !fits {
                entry.record.state = JobState::Failed;
                entry.record.finished_at = Some(now);
                entry.record.error = Some(BUDGET_EXHAUSTED.to_owned());
                entry.record.error_code = Some(BUDGET_EXHAUSTED_CODE.to_owned());
                entry.budget_wait = false;
                let attempts = u64::from(entry.record.attempts_made);
                self.append(
                    entry,
                    "failed",
                    &bodies.budget_failed,
                    &[("attemptsMade", attempts)],
                );
                drop(shard);
                core.failed.insert((now, id));
                core.count_outcome(now, false);
                claimed.budget_failed += 1;
                if !stopped && !core.switch().enabled {
                    core.set_budget_stop(&budget, spent, now);
                    stopped = true;
                }
                turn = turn.and_then(|t| core.queue.pass(t));
                continue;
            }
            entry.record.attempts_made += 1;
            entry.record.state = JobState::Active;
            entry.record.started_at = Some(now);
            entry.lease_token = Some(token.clone());
            entry.reserved = amount;
            entry.reserved_period = Some(budget.period.clone());
            entry.budget_wait = false;
            let attempts = u64::from(entry.record.attempts_made);
            self.append(
                entry,
                "active",
                &bodies.active,
                &[("attemptsMade", attempts)],
            );
            if let Some(started) = &bodies.started {
                let cards = u64::from(entry.record.request.card_count);
                self.append(entry, "progress", started, &[("cardCount", cards)]);
            }
            claimed.jobs.push(Claim {
                job: entry.record.clone(),
                lease: Lease {
                    job_id: id.clone(),
                    token: token.clone(),
                    period: budget.period.clone(),
                },
                reserved_micros: amount,
            });
            drop(shard);
            core.active
                .insert(id, now + request.lease.as_millis() as u64);
            reserved += amount;
            added += amount;
            *started_by.entry(client).or_default() += 1;
            turn = turn.and_then(|mut t| {
                t.room = t.room.saturating_sub(1);
                core.queue.pass(t)
            });
        }
        core.queue.keep_place(turn);
        core.queue.started(started_by);
        if added > 0 {
            core.spend_of(&budget.period).reserved_micros += added;
        }
        if !claimed.jobs.is_empty() || claimed.budget_failed > 0 {
            let ids = claimed
                .jobs
                .iter()
                .map(|c| c.lease.job_id.clone())
                .collect();
            let expiry = now + (request.lease.as_millis() as u64).max(1);
            core.claim_expiry.push_back((expiry, token.clone()));
            core.claims.insert(
                token,
                (ids, claimed.budget_blocked, claimed.budget_failed, expiry),
            );
        }
        claimed
    }

    /// The answer of a claim call already made (its caller retried it): the jobs it took that
    /// its token still holds.
    fn replay_claim(&self, ids: &[String], blocked: bool, failed: u32, token: &str) -> Claimed {
        let mut claimed = Claimed {
            budget_blocked: blocked,
            budget_failed: failed,
            ..Claimed::default()
        };
        for id in ids {
            let shard = self.shard(id);
            let Some(entry) = shard.get(id) else { continue };
            if entry.record.state == JobState::Active && entry.lease_token.as_deref() == Some(token)
            {
                claimed.jobs.push(Claim {
                    job: entry.record.clone(),
                    lease: Lease {
                        job_id: id.clone(),
                        token: token.to_owned(),
                        period: entry.reserved_period.clone().unwrap_or_default(),
                    },
                    reserved_micros: entry.reserved,
                });
            }
        }
        claimed
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn submit(&self, s: Submission) -> StoreResult<Admission> {
        let now = now_ms();
        let now_ts = jiff::Timestamp::now();
        let mut core = lock(&self.core);
        if let Some(idem) = &s.idempotency
            && let Some((existing, expires)) = core.idem.get(&idem.digest).cloned()
            && expires > now
            && let Some(entry) = self.shard(&existing).get(&existing)
        {
            return Ok(
                if entry.fingerprint.as_deref() == Some(idem.fingerprint.as_str()) {
                    Admission::Replayed {
                        job_id: existing,
                        state: entry.record.state,
                    }
                } else {
                    Admission::KeyReused { job_id: existing }
                },
            );
        }
        let budget = core.in_force(now_ts);
        let spent = core.spend_of(&budget.period).spent_micros;
        let ks = core.switch();
        if ks.enabled {
            if budget_stop_lapsed(&ks, &budget.config, spent, now_ts) {
                core.clear_switch(SetBy::Budget, now);
            } else {
                return Ok(Admission::Refused(ks));
            }
        }
        if budget.enforced > 0 && spent >= budget.enforced {
            core.set_budget_stop(&budget, spent, now);
            return Ok(Admission::Refused(core.switch()));
        }
        if let Some(limit) = s.rate_limit.as_ref().filter(|l| l.max > 0) {
            let (index, window_ms) = super::rate_window(now, limit.window);
            core.rate.retain(|(_, w), _| *w + 1 >= index);
            let count = core.rate.entry((limit.subject.clone(), index)).or_default();
            *count += 1;
            if *count > limit.max {
                let retry_after = Duration::from_millis((index + 1) * window_ms - now);
                return Ok(Admission::RateLimited { retry_after });
            }
        }
        let id = s.job_id.clone();
        let record = JobRecord {
            id: id.clone(),
            state: JobState::Waiting,
            attempts_made: 0,
            max_attempts: s.max_attempts.max(1),
            stalls: 0,
            created_at: now,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            error_code: None,
            event_seq: 0,
            owner: s.owner.clone(),
            traceparent: s.traceparent.clone(),
            request: s.request,
        };
        if let Some(idem) = &s.idempotency {
            let expires = now + idem.ttl.as_millis() as u64;
            core.idem.insert(idem.digest.clone(), (id.clone(), expires));
        }
        self.shard(&id).insert(
            id.clone(),
            Entry {
                input_bytes: input_bytes(&record.request),
                record,
                lease_token: None,
                idem_digest: s.idempotency.as_ref().map(|i| i.digest.clone()),
                fingerprint: s.idempotency.map(|i| i.fingerprint),
                reserved: 0,
                reserved_period: None,
                budget_wait: false,
                settled: None,
                events: Vec::new(),
            },
        );
        // As `submit.lua`: only a job that makes work ready where none was signals.
        let made_ready = core.queue.enqueue(id.clone(), &s.owner, false);
        drop(core);
        self.work.notify_one();
        if made_ready {
            // No follower is fine.
            let _ = self.signals.send(());
        }
        Ok(Admission::Accepted { job_id: id })
    }

    async fn job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        Ok(self.shard(id).get(id).map(|e| e.record.clone()))
    }

    async fn job_head(&self, id: &str) -> StoreResult<Option<JobHead>> {
        Ok(self.shard(id).get(id).map(|e| JobHead {
            state: e.record.state,
            event_seq: e.record.event_seq,
        }))
    }

    async fn cancel(&self, id: &str, by: Canceller<'_>) -> StoreResult<Cancellation> {
        let now = now_ms();
        let body = rendered::cancelled(by.as_str(), now);
        // The core lock first, then the shard, as everywhere.
        let mut core = lock(&self.core);
        let mut shard = self.shard(id);
        let Some(entry) = shard.get_mut(id) else {
            return Ok(Cancellation::Missing);
        };
        if let Canceller::Owner(owner) = by
            && entry.record.owner != owner
        {
            return Ok(Cancellation::Missing);
        }
        let was = entry.record.state;
        match was {
            JobState::Cancelled => return Ok(Cancellation::AlreadyCancelled),
            JobState::Completed | JobState::Failed => return Ok(Cancellation::Finished(was)),
            JobState::Waiting | JobState::Delayed | JobState::Active => {}
        }
        let reserved = std::mem::take(&mut entry.reserved);
        let period = entry.reserved_period.take();
        entry.lease_token = None;
        entry.budget_wait = false;
        entry.record.state = JobState::Cancelled;
        entry.record.finished_at = Some(now);
        let attempts = u64::from(entry.record.attempts_made);
        self.append(entry, "cancelled", &body, &[("attemptsMade", attempts)]);
        let owner = entry.record.owner.clone();
        drop(shard);
        match was {
            JobState::Waiting => {
                core.queue.remove(id, &owner);
            }
            JobState::Delayed => core.delayed.retain(|(_, d)| d != id),
            _ => {
                core.active.remove(id);
                if core.queue.active_ended(&owner) {
                    self.work.notify_one();
                }
                if let Some(period) = period {
                    let spend = core.spend_of(&period);
                    spend.reserved_micros = spend.reserved_micros.saturating_sub(reserved);
                }
            }
        }
        core.cancelled.insert((now, id.to_owned()));
        Ok(Cancellation::Cancelled { was })
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> StoreResult<Claimed> {
        let now = now_ms();
        let bodies = ClaimBodies::new(Some(request), now);
        let mut core = lock(&self.core);
        Ok(self.claim_locked(&mut core, request, &bodies, jiff::Timestamp::now(), now))
    }

    async fn renew(&self, leases: &[Lease], duration: Duration) -> StoreResult<Vec<bool>> {
        let deadline = now_ms() + duration.as_millis() as u64;
        let mut core = lock(&self.core);
        Ok(leases
            .iter()
            .map(|lease| {
                let held = self
                    .shard(&lease.job_id)
                    .get(&lease.job_id)
                    .is_some_and(|e| Self::lease_held(e, lease));
                if held {
                    core.active.insert(lease.job_id.clone(), deadline);
                }
                held
            })
            .collect())
    }

    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome<'_>,
        cost: Cost,
        next: Option<&ClaimRequest<'_>>,
    ) -> StoreResult<Finished> {
        let now = now_ms();
        let now_ts = jiff::Timestamp::now();
        // Render what the outcome may append, before locking.
        let rendered = OutcomeBodies::new(outcome, now)
            .map_err(|e| super::StoreError::Corrupt(e.to_string()))?;
        let body = match &rendered.result_json {
            Some(result) => events::with_result(&rendered.body, result),
            None => rendered.body.clone(),
        };
        let exhausted = rendered.exhausted.clone();
        let result: Option<JobResult> = match outcome {
            Outcome::Completed { result, .. } => Some(result.clone()),
            _ => None,
        };
        let bodies = next.map(|n| ClaimBodies::new(Some(n), now));
        let mut core = lock(&self.core);
        let mut shard = self.shard(&lease.job_id);
        let mut entry = shard.get_mut(&lease.job_id);
        if let Some(e) = entry.as_deref_mut() {
            if e.settled.as_deref() == Some(lease.token.as_str()) {
                let outcome = match e.record.state {
                    JobState::Completed => FinishOutcome::Completed,
                    JobState::Delayed => FinishOutcome::Retrying,
                    JobState::Failed => FinishOutcome::Failed,
                    JobState::Waiting => FinishOutcome::Released,
                    JobState::Active | JobState::Cancelled => FinishOutcome::LeaseLost,
                };
                drop(shard);
                let claimed = match (next, &bodies) {
                    (Some(next), Some(bodies)) => {
                        self.claim_locked(&mut core, next, bodies, now_ts, now)
                    }
                    _ => Claimed::default(),
                };
                return Ok(Finished {
                    outcome,
                    spent_micros: 0,
                    overrun_micros: 0,
                    budget_stopped: false,
                    claimed,
                });
            }
            e.settled = Some(lease.token.clone());
        }
        let held = entry.as_ref().is_some_and(|e| Self::lease_held(e, lease));
        let reserved = match (&entry, held) {
            (Some(e), true) => e.reserved,
            _ => 0,
        };
        // Settle.
        let mut overrun = 0;
        {
            let spend = core.spend_of(&lease.period);
            spend.reserved_micros = spend.reserved_micros.saturating_sub(reserved);
            if cost.called || cost.micros > 0 {
                spend.spent_micros += cost.micros;
                spend.input_tokens += cost.usage.input_tokens;
                spend.output_tokens += cost.usage.output_tokens;
                spend.jobs += 1;
                if held && cost.micros > reserved {
                    overrun = cost.micros - reserved;
                    spend.overrun_micros += overrun;
                }
                if cost.at_bound {
                    spend.bound_calls += 1;
                    spend.bound_micros += cost.micros;
                }
            }
        }
        let budget_stopped =
            core.in_force(now_ts).period == lease.period && core.review_stop(now_ts, now);
        let mut recorded = FinishOutcome::LeaseLost;
        let mut wake = false;
        if let (Some(entry), true) = (entry, held) {
            core.active.remove(&lease.job_id);
            wake = core.queue.active_ended(&entry.record.owner);
            entry.lease_token = None;
            entry.reserved = 0;
            entry.reserved_period = None;
            let attempts = u64::from(entry.record.attempts_made);
            let id = lease.job_id.clone();
            match outcome {
                Outcome::Completed { .. } => {
                    entry.record.state = JobState::Completed;
                    entry.record.finished_at = Some(now);
                    entry.record.result = result;
                    entry.record.error = None;
                    entry.record.error_code = None;
                    self.append(entry, "completed", &body, &[]);
                    core.completed.insert((now, id));
                    core.count_outcome(now, true);
                    recorded = FinishOutcome::Completed;
                }
                Outcome::Retry { error, delay, .. }
                    if entry.record.attempts_made < entry.record.max_attempts =>
                {
                    entry.record.state = JobState::Delayed;
                    entry.record.error = Some(error.to_owned());
                    self.append(entry, "retrying", &body, &[("attemptsMade", attempts)]);
                    core.delayed.insert((now + delay.as_millis() as u64, id));
                    recorded = FinishOutcome::Retrying;
                }
                Outcome::Retry { error, code, .. } | Outcome::Failed { error, code, .. } => {
                    entry.record.state = JobState::Failed;
                    entry.record.finished_at = Some(now);
                    entry.record.error = Some(error.to_owned());
                    if let Some(code) = code {
                        entry.record.error_code = Some(code.to_owned());
                    }
                    let text = exhausted.as_deref().unwrap_or(&body);
                    self.append(entry, "failed", text, &[("attemptsMade", attempts)]);
                    core.failed.insert((now, id));
                    core.count_outcome(now, false);
                    recorded = FinishOutcome::Failed;
                }
                Outcome::Release { .. } => {
                    entry.record.state = JobState::Waiting;
                    entry.record.attempts_made = entry.record.attempts_made.saturating_sub(1);
                    self.append(entry, "waiting", &body, &[]);
                    let owner = entry.record.owner.clone();
                    core.queue.enqueue(id, &owner, true);
                    recorded = FinishOutcome::Released;
                    wake = true;
                }
            }
        }
        drop(shard);
        if reserved > 0
            && let Some(head) = core.queue.head().cloned()
            && self.shard(&head).get(&head).is_some_and(|e| e.budget_wait)
        {
            wake = true;
        }
        let spent_micros = if cost.micros > 0 || budget_stopped {
            core.spend_of(&lease.period).spent_micros
        } else {
            0
        };
        let claimed = match (next, &bodies) {
            (Some(next), Some(bodies)) => self.claim_locked(&mut core, next, bodies, now_ts, now),
            _ => Claimed::default(),
        };
        drop(core);
        if wake {
            self.work.notify_one();
        }
        Ok(Finished {
            outcome: recorded,
            spent_micros,
            overrun_micros: overrun,
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
        let body = rendered::progress(stage, percent, message, now_ms());
        let mut shard = self.shard(&lease.job_id);
        match shard.get_mut(&lease.job_id) {
            Some(entry) if Self::lease_held(entry, lease) => {
                self.append(entry, "progress", &body, &[]);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn recover_stalled(&self, max_stalls: u32) -> StoreResult<StallReport> {
        let now = now_ms();
        let StallBodies {
            error,
            code,
            waiting,
            failed,
        } = StallBodies::new(max_stalls, now);
        let mut core = lock(&self.core);
        let expired: Vec<String> = core
            .active
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut report = StallReport::default();
        for id in expired {
            core.active.remove(&id);
            let mut shard = self.shard(&id);
            let Some(entry) = shard.get_mut(&id) else {
                continue;
            };
            if entry.record.state != JobState::Active {
                continue;
            }
            let reserved = std::mem::take(&mut entry.reserved);
            let period = entry.reserved_period.take();
            entry.lease_token = None;
            entry.record.stalls += 1;
            let stalls = entry.record.stalls;
            let attempts = u64::from(entry.record.attempts_made);
            let requeue = stalls <= max_stalls;
            let owner = entry.record.owner.clone();
            if requeue {
                entry.record.state = JobState::Waiting;
                self.append(entry, "waiting", &waiting, &[("stalls", u64::from(stalls))]);
            } else {
                entry.record.state = JobState::Failed;
                entry.record.finished_at = Some(now);
                entry.record.error = Some(error.clone());
                entry.record.error_code = Some(code.to_owned());
                self.append(entry, "failed", &failed, &[("attemptsMade", attempts)]);
            }
            drop(shard);
            if let Some(period) = period {
                let spend = core.spend_of(&period);
                spend.reserved_micros = spend.reserved_micros.saturating_sub(reserved);
            }
            core.queue.active_ended(&owner);
            if requeue {
                core.queue.enqueue(id, &owner, false);
                report.requeued += 1;
            } else {
                core.failed.insert((now, id));
                core.count_outcome(now, false);
                report.failed += 1;
            }
        }
        drop(core);
        if report.requeued + report.failed > 0 {
            self.work.notify_one();
        }
        Ok(report)
    }

    async fn counts(&self) -> StoreResult<QueueCounts> {
        let core = lock(&self.core);
        Ok(QueueCounts {
            waiting: core.queue.len() as u64,
            active: core.active.len() as u64,
            delayed: core.delayed.len() as u64,
            completed: core.completed.len() as u64,
            failed: core.failed.len() as u64,
        })
    }

    async fn wait_for_work(&self, timeout: Duration) -> StoreResult<()> {
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
        Ok(())
    }

    async fn work_signals(&self) -> StoreResult<BoxStream<'static, u64>> {
        let stream = BroadcastStream::new(self.signals.subscribe()).map(|item| match item {
            Ok(()) => 1,
            // Missed signals still mean work arrived.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => n,
        });
        Ok(stream.boxed())
    }

    async fn trim_finished(&self, retention: Retention) -> StoreResult<u64> {
        let now = now_ms();
        let cutoff = now.saturating_sub(retention.max_age.as_millis() as u64);
        let mut core = lock(&self.core);
        let mut doomed = Vec::new();
        for which in 0..3 {
            let set = match which {
                0 => &mut core.completed,
                1 => &mut core.failed,
                _ => &mut core.cancelled,
            };
            while let Some((at, id)) = set.first().cloned() {
                if at >= cutoff && set.len() as u64 <= retention.max_count {
                    break;
                }
                set.pop_first();
                doomed.push(id);
            }
        }
        for id in &doomed {
            let removed = self.shard(id).remove(id);
            if let Some(digest) = removed.and_then(|e| e.idem_digest)
                && core
                    .idem
                    .get(&digest)
                    .is_some_and(|(mapped, _)| mapped == id)
            {
                core.idem.remove(&digest);
            }
        }
        core.idem.retain(|_, (_, expires)| *expires > now);
        let minute = now / 60_000;
        core.outcomes.retain(|m, _| *m + 120 > minute);
        Ok(doomed.len() as u64)
    }

    async fn events_after(&self, job_id: &str, after: u64) -> StoreResult<Vec<StoredEvent>> {
        Ok(self
            .shard(job_id)
            .get(job_id)
            .map(|e| e.events.iter().filter(|e| e.seq > after).cloned().collect())
            .unwrap_or_default())
    }

    async fn event_feed(
        &self,
        interest: FeedInterest,
    ) -> StoreResult<BoxStream<'static, FeedItem>> {
        let events = BroadcastStream::new(self.feed.subscribe()).filter_map(move |item| {
            // A lagged receiver skips; followers catch up from the job's history.
            let item = item
                .ok()
                .filter(|e| interest(&e.job_id))
                .map(FeedItem::Event);
            async move { item }
        });
        // In one process the feed cannot stall; it says so as the Redis feed does.
        let alive = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
            Duration::from_secs(5),
        ))
        .map(|_| FeedItem::Alive);
        Ok(futures::stream::select(events, alive).boxed())
    }

    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> StoreResult<()> {
        let now = now_ms();
        let mut info = info.clone();
        info.last_seen = now;
        let expires = now + ttl.as_millis() as u64;
        lock(&self.workers).insert(info.id.clone(), (info, expires));
        Ok(())
    }

    async fn remove_worker(&self, worker_id: &str) -> StoreResult<()> {
        lock(&self.workers).remove(worker_id);
        Ok(())
    }

    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let now = now_ms();
        let mut workers = lock(&self.workers);
        workers.retain(|_, (_, expires)| *expires > now);
        let mut list: Vec<WorkerInfo> = workers.values().map(|(info, _)| info.clone()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    async fn budget_state(&self) -> StoreResult<BudgetState> {
        let now = now_ms();
        let now_ts = jiff::Timestamp::now();
        let mut core = lock(&self.core);
        core.review_stop(now_ts, now);
        let budget = core.in_force(now_ts);
        let spend = *core.spend_of(&budget.period);
        Ok(BudgetState {
            config: budget.config,
            stored: core.budget.is_some(),
            kill_switch: core.switch(),
            period: budget.period,
            spend,
            epoch: core.epoch.clone(),
        })
    }

    async fn set_budget(&self, budget: &BudgetConfig) -> StoreResult<()> {
        let mut core = lock(&self.core);
        if budget.source == BudgetSource::Flags
            && core
                .budget
                .is_some_and(|b| b.source == BudgetSource::Operator)
        {
            return Ok(());
        }
        core.budget = Some(*budget);
        core.review_stop(jiff::Timestamp::now(), now_ms());
        Ok(())
    }

    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()> {
        lock(&self.core).kill_switch = Some(state.clone());
        Ok(())
    }

    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool> {
        let mut core = lock(&self.core);
        let ks = core.switch();
        if ks.enabled && ks.set_by == Some(set_by) {
            core.clear_switch(set_by, now_ms());
            return Ok(true);
        }
        Ok(false)
    }

    async fn spend(&self, period: &str) -> StoreResult<Spend> {
        Ok(lock(&self.core)
            .spend
            .get(period)
            .copied()
            .unwrap_or_default())
    }

    async fn ensure_epoch(&self) -> StoreResult<(Epoch, bool)> {
        let mut core = lock(&self.core);
        match &core.epoch {
            Some(epoch) => Ok((epoch.clone(), false)),
            None => {
                let epoch = Epoch::new(now_ms());
                core.epoch = Some(epoch.clone());
                Ok((epoch, true))
            }
        }
    }

    async fn restore_spend(&self, period: &str, spent_micros: u64) -> StoreResult<Spend> {
        let mut core = lock(&self.core);
        let spend = core.spend_of(period);
        if spent_micros > spend.spent_micros {
            spend.restored_micros += spent_micros - spend.spent_micros;
            spend.spent_micros = spent_micros;
        }
        Ok(*spend)
    }

    async fn purge(&self) -> StoreResult<u64> {
        // Counted like the Redis keys they stand for: each job record with its history, each
        // mapping, counter and period, and each non-empty queue index.
        let mut core = lock(&self.core);
        let mut removed = 0u64;
        for shard in &self.shards {
            let mut shard = lock(shard);
            removed += 2 * shard.len() as u64;
            shard.clear();
        }
        let c = &*core;
        removed += [
            c.queue.len() > 0,
            !c.delayed.is_empty(),
            !c.active.is_empty(),
            !c.completed.is_empty(),
            !c.failed.is_empty(),
            !c.cancelled.is_empty(),
            c.budget.is_some(),
            c.kill_switch.is_some(),
            c.epoch.is_some(),
        ]
        .into_iter()
        .filter(|present| *present)
        .count() as u64;
        removed += (c.idem.len() + c.rate.len() + c.spend.len() + c.outcomes.len() + c.claims.len())
            as u64;
        *core = Core::default();
        drop(core);
        let mut workers = lock(&self.workers);
        removed += workers.len() as u64;
        workers.clear();
        Ok(removed)
    }

    async fn outcomes(&self, window: Duration) -> StoreResult<OutcomeCounts> {
        let core = lock(&self.core);
        let mut total = OutcomeCounts::default();
        for m in super::outcome_minutes(now_ms(), window) {
            if let Some(c) = core.outcomes.get(&m) {
                total.completed += c.completed;
                total.failed += c.failed;
            }
        }
        Ok(total)
    }

    async fn outcomes_by_minute(&self, window: Duration) -> StoreResult<Vec<MinuteOutcomes>> {
        let core = lock(&self.core);
        Ok(super::outcome_minutes(now_ms(), window)
            .map(|minute| {
                let c = core.outcomes.get(&minute).copied().unwrap_or_default();
                MinuteOutcomes {
                    minute,
                    completed: c.completed,
                    failed: c.failed,
                }
            })
            .collect())
    }

    async fn recent_finished(&self, limit: usize) -> StoreResult<Vec<FinishedJob>> {
        let newest: Vec<(u64, String)> = {
            let core = lock(&self.core);
            let mut merged: Vec<(u64, String)> = core
                .completed
                .iter()
                .rev()
                .take(limit)
                .chain(core.failed.iter().rev().take(limit))
                .cloned()
                .collect();
            merged.sort_by(|a, b| b.cmp(a));
            merged.truncate(limit);
            merged
        };
        Ok(newest
            .into_iter()
            .filter_map(|(finished, id)| {
                let shard = self.shard(&id);
                let record = &shard.get(&id)?.record;
                Some(FinishedJob {
                    state: record.state,
                    created_at: record.created_at,
                    started_at: record.started_at,
                    finished_at: record.finished_at.unwrap_or(finished),
                    id,
                })
            })
            .collect())
    }
}
