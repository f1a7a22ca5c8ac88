//! In-memory store: one process, no persistence; the default of `standalone` mode.
//!
//! It follows the same contract as the Redis store (the conformance suite checks both): one
//! mutex makes every change atomic, a broadcast channel is the live event feed, and a `Notify`
//! wakes idle workers when a job is enqueued.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tokio_stream::wrappers::BroadcastStream;

use super::{
    Claim, EnqueueOptions, Enqueued, FailOutcome, Failure, KillSwitch, Lease, OutcomeCounts,
    QueueCounts, RateDecision, Reservation, Retention, SetBy, Spend, StallReport, Store,
    StoreResult, StoredEvent, WorkerInfo,
};
use crate::job::{JobRecord, JobRequest, JobResult, JobState, TokenUsage, new_job_id, now_ms};

/// Live feed capacity; a lagging api process skips (and replays from the job's history).
const FEED_CAPACITY: usize = 4096;

#[derive(Debug)]
struct Entry {
    record: JobRecord,
    lease_token: Option<String>,
    lease_deadline: u64,
    idempotency_key: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, Entry>,
    waiting: VecDeque<String>,
    delayed: BTreeSet<(u64, String)>,
    completed: BTreeSet<(u64, String)>,
    failed: BTreeSet<(u64, String)>,
    events: HashMap<String, Vec<StoredEvent>>,
    idempotency: HashMap<String, String>,
    workers: HashMap<String, (WorkerInfo, u64)>,
    kill_switch: Option<KillSwitch>,
    spend: HashMap<String, Spend>,
    outcomes: HashMap<u64, OutcomeCounts>,
    rate: HashMap<(String, u64), u64>,
}

/// The in-memory backend.
pub struct MemoryStore {
    state: Mutex<State>,
    feed: broadcast::Sender<StoredEvent>,
    work: Notify,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Self {
            state: Mutex::new(State::default()),
            feed,
            work: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed in a way that
        // matters more than losing the process, so a poisoned lock is simply taken over.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event (a JSON object without `seq`) to the job's history and the live feed.
    fn append_event(&self, state: &mut State, job_id: &str, mut body: Value) {
        let Some(entry) = state.jobs.get_mut(job_id) else {
            return;
        };
        entry.record.event_seq += 1;
        let seq = entry.record.event_seq;
        if let Some(obj) = body.as_object_mut() {
            obj.insert("seq".into(), json!(seq));
        }
        let event = StoredEvent {
            job_id: job_id.to_owned(),
            seq,
            body,
        };
        state
            .events
            .entry(job_id.to_owned())
            .or_default()
            .push(event.clone());
        // No receiver is fine: nobody is listening.
        let _ = self.feed.send(event);
    }

    fn lease_is(state: &State, lease: &Lease) -> bool {
        state.jobs.get(&lease.job_id).is_some_and(|e| {
            e.record.state == JobState::Active && e.lease_token.as_deref() == Some(&lease.token)
        })
    }

    fn finish(state: &mut State, job_id: &str, job_state: JobState, now: u64) {
        if let Some(entry) = state.jobs.get_mut(job_id) {
            entry.record.state = job_state;
            entry.record.finished_at = Some(now);
            entry.lease_token = None;
        }
        let set = if job_state == JobState::Completed {
            &mut state.completed
        } else {
            &mut state.failed
        };
        set.insert((now, job_id.to_owned()));
        let bucket = state.outcomes.entry(now / 60_000).or_default();
        if job_state == JobState::Completed {
            bucket.completed += 1;
        } else {
            bucket.failed += 1;
        }
    }

    fn remove_job(state: &mut State, job_id: &str) {
        if let Some(entry) = state.jobs.remove(job_id)
            && let Some(key) = entry.idempotency_key
        {
            state.idempotency.remove(&key);
        }
        state.events.remove(job_id);
    }

    fn promote_delayed(state: &mut State, now: u64) {
        while let Some((due, id)) = state.delayed.first().cloned() {
            if due > now {
                break;
            }
            state.delayed.pop_first();
            if let Some(entry) = state.jobs.get_mut(&id) {
                entry.record.state = JobState::Waiting;
                state.waiting.push_back(id);
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn enqueue(&self, request: JobRequest, options: EnqueueOptions) -> StoreResult<Enqueued> {
        let mut state = self.lock();
        if let Some(key) = &options.idempotency_key
            && let Some(existing) = state.idempotency.get(key)
            && let Some(entry) = state.jobs.get(existing)
        {
            return Ok(Enqueued {
                job: entry.record.clone(),
                created: false,
            });
        }
        let id = new_job_id();
        let record = JobRecord {
            id: id.clone(),
            state: JobState::Waiting,
            request,
            attempts_made: 0,
            max_attempts: options.max_attempts.max(1),
            stalls: 0,
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            event_seq: 0,
        };
        if let Some(key) = &options.idempotency_key {
            state.idempotency.insert(key.clone(), id.clone());
        }
        state.jobs.insert(
            id.clone(),
            Entry {
                record: record.clone(),
                lease_token: None,
                lease_deadline: 0,
                idempotency_key: options.idempotency_key,
            },
        );
        state.waiting.push_back(id);
        drop(state);
        self.work.notify_one();
        Ok(Enqueued {
            job: record,
            created: true,
        })
    }

    async fn job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        Ok(self.lock().jobs.get(id).map(|e| e.record.clone()))
    }

    async fn claim(&self, worker_id: &str, lease: Duration) -> StoreResult<Option<Claim>> {
        let now = now_ms();
        let mut state = self.lock();
        Self::promote_delayed(&mut state, now);
        while let Some(id) = state.waiting.pop_front() {
            let Some(entry) = state.jobs.get_mut(&id) else {
                continue;
            };
            let token = uuid::Uuid::new_v4().to_string();
            entry.record.state = JobState::Active;
            entry.record.attempts_made += 1;
            entry.record.started_at = Some(now);
            entry.lease_token = Some(token.clone());
            entry.lease_deadline = now + lease.as_millis() as u64;
            let attempts = entry.record.attempts_made;
            self.append_event(
                &mut state,
                &id,
                json!({"type": "active", "at": now, "attemptsMade": attempts, "worker": worker_id}),
            );
            let job = state.jobs.get(&id).map(|e| e.record.clone());
            return Ok(job.map(|job| Claim {
                job,
                lease: Lease { job_id: id, token },
            }));
        }
        Ok(None)
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> StoreResult<bool> {
        let mut state = self.lock();
        if !Self::lease_is(&state, lease) {
            return Ok(false);
        }
        if let Some(entry) = state.jobs.get_mut(&lease.job_id) {
            entry.lease_deadline = now_ms() + duration.as_millis() as u64;
        }
        Ok(true)
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: &JobResult,
        event: &Value,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        if !Self::lease_is(&state, lease) {
            return Ok(false);
        }
        if let Some(entry) = state.jobs.get_mut(&lease.job_id) {
            entry.record.result = Some(result.clone());
            entry.record.error = None;
        }
        Self::finish(&mut state, &lease.job_id, JobState::Completed, now);
        self.append_event(&mut state, &lease.job_id, event.clone());
        Ok(true)
    }

    async fn progress(&self, lease: &Lease, event: &Value) -> StoreResult<bool> {
        let mut state = self.lock();
        if !Self::lease_is(&state, lease) {
            return Ok(false);
        }
        self.append_event(&mut state, &lease.job_id, event.clone());
        Ok(true)
    }

    async fn fail(&self, lease: &Lease, failure: &Failure) -> StoreResult<FailOutcome> {
        let now = now_ms();
        let mut state = self.lock();
        if !Self::lease_is(&state, lease) {
            return Ok(FailOutcome::LeaseLost);
        }
        let Some(entry) = state.jobs.get_mut(&lease.job_id) else {
            return Ok(FailOutcome::LeaseLost);
        };
        entry.record.error = Some(failure.error.clone());
        let attempts = entry.record.attempts_made;
        let retry = failure
            .retry_after
            .filter(|_| attempts < entry.record.max_attempts);
        match retry {
            Some(delay) => {
                entry.record.state = JobState::Delayed;
                entry.lease_token = None;
                let due = now + delay.as_millis() as u64;
                state.delayed.insert((due, lease.job_id.clone()));
                self.append_event(
                    &mut state,
                    &lease.job_id,
                    json!({"type": "retrying", "at": now, "error": failure.error,
                           "attemptsMade": attempts, "duration": failure.duration_ms,
                           "delayMs": delay.as_millis() as u64}),
                );
                Ok(FailOutcome::Retrying)
            }
            None => {
                Self::finish(&mut state, &lease.job_id, JobState::Failed, now);
                self.append_event(
                    &mut state,
                    &lease.job_id,
                    json!({"type": "failed", "at": now, "error": failure.error,
                           "attemptsMade": attempts, "duration": failure.duration_ms}),
                );
                Ok(FailOutcome::Failed)
            }
        }
    }

    async fn release(&self, lease: &Lease) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        if !Self::lease_is(&state, lease) {
            return Ok(false);
        }
        if let Some(entry) = state.jobs.get_mut(&lease.job_id) {
            entry.record.state = JobState::Waiting;
            entry.record.attempts_made = entry.record.attempts_made.saturating_sub(1);
            entry.lease_token = None;
        }
        state.waiting.push_front(lease.job_id.clone());
        self.append_event(
            &mut state,
            &lease.job_id,
            json!({"type": "waiting", "at": now, "reason": "released"}),
        );
        drop(state);
        self.work.notify_one();
        Ok(true)
    }

    async fn recover_stalled(&self, max_stalls: u32) -> StoreResult<StallReport> {
        let now = now_ms();
        let mut state = self.lock();
        let expired: Vec<String> = state
            .jobs
            .values()
            .filter(|e| e.record.state == JobState::Active && e.lease_deadline <= now)
            .map(|e| e.record.id.clone())
            .collect();
        let mut report = StallReport::default();
        for id in expired {
            let Some(entry) = state.jobs.get_mut(&id) else {
                continue;
            };
            entry.record.stalls += 1;
            entry.lease_token = None;
            let stalls = entry.record.stalls;
            let attempts = entry.record.attempts_made;
            if stalls > max_stalls {
                let error = format!("job stalled more than allowable limit ({max_stalls})");
                entry.record.error = Some(error.clone());
                Self::finish(&mut state, &id, JobState::Failed, now);
                self.append_event(
                    &mut state,
                    &id,
                    json!({"type": "failed", "at": now, "error": error, "attemptsMade": attempts, "duration": 0}),
                );
                report.failed += 1;
            } else {
                entry.record.state = JobState::Waiting;
                state.waiting.push_back(id.clone());
                self.append_event(
                    &mut state,
                    &id,
                    json!({"type": "waiting", "at": now, "reason": "stalled", "stalls": stalls}),
                );
                report.requeued += 1;
            }
        }
        Ok(report)
    }

    async fn counts(&self) -> StoreResult<QueueCounts> {
        let state = self.lock();
        let active = state
            .jobs
            .values()
            .filter(|e| e.record.state == JobState::Active)
            .count();
        Ok(QueueCounts {
            waiting: state.waiting.len() as u64,
            active: active as u64,
            delayed: state.delayed.len() as u64,
            completed: state.completed.len() as u64,
            failed: state.failed.len() as u64,
        })
    }

    async fn wait_for_work(&self, timeout: Duration) -> StoreResult<()> {
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
        Ok(())
    }

    async fn trim_finished(&self, retention: Retention) -> StoreResult<u64> {
        let cutoff = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
        let mut state = self.lock();
        let mut doomed = Vec::new();
        let State {
            completed, failed, ..
        } = &mut *state;
        for set in [completed, failed] {
            while let Some((at, id)) = set.first().cloned() {
                if at >= cutoff && set.len() as u64 <= retention.max_count {
                    break;
                }
                set.pop_first();
                doomed.push(id);
            }
        }
        for id in &doomed {
            Self::remove_job(&mut state, id);
        }
        let minute = now_ms() / 60_000;
        state.outcomes.retain(|m, _| *m + 120 > minute);
        Ok(doomed.len() as u64)
    }

    async fn events_after(&self, job_id: &str, after: u64) -> StoreResult<Vec<StoredEvent>> {
        let state = self.lock();
        Ok(state
            .events
            .get(job_id)
            .map(|events| events.iter().filter(|e| e.seq > after).cloned().collect())
            .unwrap_or_default())
    }

    async fn event_feed(&self) -> StoreResult<BoxStream<'static, StoredEvent>> {
        let stream = BroadcastStream::new(self.feed.subscribe()).filter_map(|item| async move {
            // A lagged receiver skips; subscribers catch up from the job history.
            item.ok()
        });
        Ok(stream.boxed())
    }

    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> StoreResult<()> {
        let now = now_ms();
        let mut info = info.clone();
        info.last_seen = now;
        let expires = now + ttl.as_millis() as u64;
        self.lock().workers.insert(info.id.clone(), (info, expires));
        Ok(())
    }

    async fn remove_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.lock().workers.remove(worker_id);
        Ok(())
    }

    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let now = now_ms();
        let mut state = self.lock();
        state.workers.retain(|_, (_, expires)| *expires > now);
        let mut workers: Vec<WorkerInfo> = state
            .workers
            .values()
            .map(|(info, _)| info.clone())
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    async fn kill_switch(&self) -> StoreResult<KillSwitch> {
        Ok(self
            .lock()
            .kill_switch
            .clone()
            .unwrap_or_else(KillSwitch::off))
    }

    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()> {
        self.lock().kill_switch = Some(state.clone());
        Ok(())
    }

    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool> {
        let mut state = self.lock();
        match &state.kill_switch {
            Some(ks) if ks.enabled && ks.set_by == Some(set_by) => {
                state.kill_switch = Some(KillSwitch {
                    enabled: false,
                    reason: None,
                    set_by: Some(set_by),
                    since: Some(now_ms()),
                });
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn reserve(&self, period: &str, amount: u64, limit: u64) -> StoreResult<Reservation> {
        let mut state = self.lock();
        let spend = state.spend.entry(period.to_owned()).or_default();
        if limit > 0 && spend.spent_micros + spend.reserved_micros + amount > limit {
            return Ok(Reservation::Refused);
        }
        spend.reserved_micros += amount;
        Ok(Reservation::Granted)
    }

    async fn settle(
        &self,
        period: &str,
        reserved: u64,
        cost: u64,
        usage: TokenUsage,
    ) -> StoreResult<Spend> {
        let mut state = self.lock();
        let spend = state.spend.entry(period.to_owned()).or_default();
        spend.reserved_micros = spend.reserved_micros.saturating_sub(reserved);
        spend.spent_micros += cost;
        spend.input_tokens += usage.input_tokens;
        spend.output_tokens += usage.output_tokens;
        spend.jobs += 1;
        Ok(*spend)
    }

    async fn spend(&self, period: &str) -> StoreResult<Spend> {
        Ok(self.lock().spend.get(period).copied().unwrap_or_default())
    }

    async fn outcomes(&self, window: Duration) -> StoreResult<OutcomeCounts> {
        let state = self.lock();
        let mut total = OutcomeCounts::default();
        for m in super::outcome_minutes(now_ms(), window) {
            if let Some(c) = state.outcomes.get(&m) {
                total.completed += c.completed;
                total.failed += c.failed;
            }
        }
        Ok(total)
    }

    async fn rate_limit(
        &self,
        user: &str,
        window: Duration,
        max: u64,
    ) -> StoreResult<RateDecision> {
        let now = now_ms();
        let (index, window_ms) = super::rate_window(now, window);
        let mut state = self.lock();
        state.rate.retain(|(_, w), _| *w + 1 >= index);
        let count = state.rate.entry((user.to_owned(), index)).or_default();
        *count += 1;
        if *count > max {
            let retry_after = Duration::from_millis((index + 1) * window_ms - now);
            Ok(RateDecision::Limited { retry_after })
        } else {
            Ok(RateDecision::Allowed {
                remaining: max - *count,
            })
        }
    }
}
