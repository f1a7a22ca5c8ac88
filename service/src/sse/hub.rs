//! In-process fan-out of job events: one store feed per process, many SSE followers.
//!
//! The dispatcher reads the store's live feed (one Redis stream reader per api pod) and hands
//! each event to the followers of its job through one bounded `broadcast` ring per followed job:
//! the event's bytes are shared by every follower, and a follower that falls behind (a slow
//! client, or a burst) does not hold memory or slow the others down: it lags, skips, and catches
//! up from the job's history in the store (see [`super::follow`]). One heartbeat ticker per
//! process wakes the followers for their heartbeat and their re-check of the job, a slice of
//! them at a time: each job has one of [`BEAT_PHASES`] phases spread over the heartbeat
//! interval, so the re-checks reach the store as a steady trickle instead of one burst of every
//! follower at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use flashcard_core::job::now_ms;
use flashcard_store::{FeedItem, Store, StoreResult, StoredEvent};

/// A feed with no read for this long counts as stalled (`/readyz` fails): the Redis reader
/// returns at least every 5 s, and its connection has a deadline of the block plus a margin.
const FEED_STALL_AFTER: Duration = Duration::from_secs(20);

/// Slices of the heartbeat interval; a job's followers beat in the slice its id hashes to.
pub const BEAT_PHASES: usize = 16;

/// Connection and delivery counters (`GET /api/sse/stats`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubStats {
    pub connections: usize,
    pub max_connections: usize,
    pub subscribed_jobs: usize,
    pub subscriptions_per_job: HashMap<String, usize>,
    pub events_sent: u64,
    /// Followers that missed live events (they fell behind, or the feed skipped) and were
    /// caught up from the job's history.
    pub followers_caught_up: u64,
}

/// The fan-out hub of one process.
pub struct Hub {
    jobs: RwLock<HashMap<Arc<str>, JobRing>>,
    connections: AtomicUsize,
    max_connections: usize,
    events_sent: AtomicU64,
    caught_up: AtomicU64,
    metrics: Arc<Metrics>,
    /// Fires when the process shuts down: open streams end so clients resume on another pod.
    closing: CancellationToken,
    /// Events kept per followed job for followers that are momentarily behind; further behind,
    /// they catch up from the store.
    ring: usize,
    heartbeat: Duration,
    /// One beat channel per phase; the ticker fires them in turn.
    beats: Vec<watch::Sender<u64>>,
    /// When the feed last answered (ms since epoch; 0 before it started).
    feed_seen: AtomicU64,
}

/// One followed job: its event ring and how many followers hold it. The count, not the
/// ring's receiver count, decides when the job is dropped: two followers leaving at once
/// would each still see the other's receiver and both leave the ring behind.
struct JobRing {
    sender: broadcast::Sender<StoredEvent>,
    followers: AtomicUsize,
}

/// A held connection slot and subscription to one job; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    job_id: Arc<str>,
    pub events: broadcast::Receiver<StoredEvent>,
    pub beat: watch::Receiver<u64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.job_id);
    }
}

/// The heartbeat phase of a job: a stable hash of its id (FNV-1a), so all followers of one job
/// beat together.
fn beat_phase(job_id: &str) -> usize {
    let hash = job_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % BEAT_PHASES as u64) as usize
}

impl Hub {
    pub fn new(
        max_connections: usize,
        ring: usize,
        heartbeat: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        metrics.sse_connections(0, max_connections);
        let beats = (0..BEAT_PHASES).map(|_| watch::channel(0).0).collect();
        Arc::new(Self {
            jobs: RwLock::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            max_connections,
            events_sent: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            metrics,
            closing: CancellationToken::new(),
            ring: ring.max(1),
            heartbeat: heartbeat.max(Duration::from_millis(100)),
            beats,
            feed_seen: AtomicU64::new(0),
        })
    }

    /// Fires when the process shuts down.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, JobRing>> {
        self.jobs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, JobRing>> {
        self.jobs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the dispatcher and the heartbeat ticker: reads the store's feed until `stop`
    /// fires, which also ends every open stream (an HTTP server's graceful shutdown would
    /// otherwise wait for them forever).
    pub async fn start(
        self: &Arc<Self>,
        store: &dyn Store,
        stop: CancellationToken,
    ) -> StoreResult<()> {
        // Only events of jobs someone here follows: their texts are read from the store.
        let followed = Arc::downgrade(self);
        let interest: flashcard_store::FeedInterest = Arc::new(move |job: &str| {
            followed
                .upgrade()
                .is_some_and(|hub| hub.read().contains_key(job))
        });
        let mut feed = store.event_feed(interest).await?;
        self.feed_seen.store(now_ms(), Ordering::Relaxed);
        let closing = self.closing.clone();
        let stop_streams = stop.clone();
        tokio::spawn(async move {
            stop_streams.cancelled().await;
            closing.cancel();
        });
        let hub = self.clone();
        let stop_beat = stop.clone();
        tokio::spawn(async move {
            // Every phase fires once per heartbeat interval, one phase per tick.
            let mut tick = tokio::time::interval(hub.heartbeat / BEAT_PHASES as u32);
            tick.tick().await;
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = stop_beat.cancelled() => return,
                    _ = tick.tick() => {
                        let phase = (n % BEAT_PHASES as u64) as usize;
                        n += 1;
                        hub.beats[phase].send_replace(n);
                    }
                }
            }
        });
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    item = feed.next() => match item {
                        Some(FeedItem::Event(event)) => {
                            hub.feed_seen.store(now_ms(), Ordering::Relaxed);
                            hub.dispatch(event);
                        }
                        Some(FeedItem::Alive) => hub.feed_seen.store(now_ms(), Ordering::Relaxed),
                        None => {
                            tracing::error!("job event feed ended");
                            return;
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Whether the live feed has stopped answering (a stalled connection it has not yet
    /// replaced): followers would then only learn of events at their heartbeat re-check.
    pub fn feed_stalled(&self) -> bool {
        let seen = self.feed_seen.load(Ordering::Relaxed);
        seen > 0 && now_ms().saturating_sub(seen) > FEED_STALL_AFTER.as_millis() as u64
    }

    /// Delivers one event to its job's followers (one shared copy in the job's ring).
    pub fn dispatch(&self, event: StoredEvent) {
        let jobs = self.read();
        if let Some(ring) = jobs.get(&*event.job_id) {
            // No receiver left means the last follower is unsubscribing right now.
            let _ = ring.sender.send(event);
        }
    }

    /// Takes a connection slot and subscribes to a job, or `None` at the connection limit.
    pub fn subscribe(self: &Arc<Self>, job_id: &str) -> Option<Subscription> {
        let taken = self
            .connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_connections).then_some(n + 1)
            });
        let open = taken.ok()? + 1;
        self.metrics.sse_connections(open, self.max_connections);
        // Counted under the read lock: `unsubscribe` removes a ring only under the write lock.
        let existing = self.read().get(job_id).map(|ring| {
            ring.followers.fetch_add(1, Ordering::SeqCst);
            ring.sender.subscribe()
        });
        let (job_id, events) = match existing {
            Some(rx) => (Arc::from(job_id), rx),
            None => {
                let mut jobs = self.write();
                let key: Arc<str> = Arc::from(job_id);
                let ring = jobs.entry(key.clone()).or_insert_with(|| JobRing {
                    sender: broadcast::channel(self.ring).0,
                    followers: AtomicUsize::new(0),
                });
                ring.followers.fetch_add(1, Ordering::SeqCst);
                let rx = ring.sender.subscribe();
                (key, rx)
            }
        };
        let beat = self.beats[beat_phase(&job_id)].subscribe();
        Some(Subscription {
            hub: self.clone(),
            job_id,
            events,
            beat,
        })
    }

    fn unsubscribe(&self, job_id: &str) {
        let mut jobs = self.write();
        if jobs
            .get(job_id)
            .is_some_and(|ring| ring.followers.fetch_sub(1, Ordering::SeqCst) <= 1)
        {
            jobs.remove(job_id);
        }
        drop(jobs);
        let open = self
            .connections
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        self.metrics.sse_connections(open, self.max_connections);
    }

    /// Open connections to one job (the seed's heartbeat `connections`).
    pub fn job_connections(&self, job_id: &str) -> usize {
        self.read()
            .get(job_id)
            .map(|ring| ring.followers.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    pub fn event_sent(&self, event: &str) {
        self.events_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.sse_event_sent(event);
    }

    /// A follower was caught up from the store after missing live events.
    pub fn caught_up(&self) {
        self.caught_up.fetch_add(1, Ordering::Relaxed);
        self.metrics.sse_follower_caught_up();
    }

    pub fn stats(&self) -> HubStats {
        let jobs = self.read();
        HubStats {
            connections: self.connections.load(Ordering::SeqCst),
            max_connections: self.max_connections,
            subscribed_jobs: jobs.len(),
            subscriptions_per_job: jobs
                .iter()
                .map(|(k, ring)| (k.to_string(), ring.followers.load(Ordering::SeqCst)))
                .collect(),
            events_sent: self.events_sent.load(Ordering::Relaxed),
            followers_caught_up: self.caught_up.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(job: &str, seq: u64) -> StoredEvent {
        StoredEvent {
            job_id: job.into(),
            seq,
            kind: "active".into(),
            data: format!("{{\"seq\":{seq},\"type\":\"active\"}}").into(),
        }
    }

    const RING: usize = 8;

    fn hub(max: usize) -> Arc<Hub> {
        Hub::new(
            max,
            RING,
            Duration::from_secs(30),
            Arc::new(Metrics::new("test", "api")),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_beat_once_per_interval_each_in_its_own_phase() {
        let interval = Duration::from_millis(1600);
        let hub = Hub::new(10, RING, interval, Arc::new(Metrics::new("test", "api")));
        let store = flashcard_store::memory::MemoryStore::new();
        let stop = CancellationToken::new();
        hub.start(&store, stop.clone()).await.unwrap();

        let ids: Vec<String> = (0..400)
            .map(|i| format!("generate-flashcards-{i}"))
            .collect();
        let mut per_phase = [0usize; BEAT_PHASES];
        for id in &ids {
            per_phase[beat_phase(id)] += 1;
        }
        // 25 a phase on average: every phase is used and none takes a crowd.
        assert!(
            per_phase.iter().all(|&n| (5..=60).contains(&n)),
            "{per_phase:?}"
        );

        let first = &ids[0];
        let other = ids
            .iter()
            .find(|id| beat_phase(id) != beat_phase(first))
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut beats = Vec::new();
        for id in [first, other] {
            let mut sub = hub.subscribe(id).unwrap();
            beats.push(tokio::spawn(async move {
                let mut at = Vec::new();
                while sub.beat.changed().await.is_ok() {
                    at.push(started.elapsed());
                    if at.len() == 3 {
                        break;
                    }
                }
                at
            }));
        }
        let a = beats.remove(0).await.unwrap();
        let b = beats.remove(0).await.unwrap();
        for at in [&a, &b] {
            // One beat per interval, as before phases.
            assert!(at[0] <= interval, "{at:?}");
            assert_eq!(at[1] - at[0], interval, "{at:?}");
            assert_eq!(at[2] - at[1], interval, "{at:?}");
        }
        assert_ne!(a[0], b[0], "two phases beat at the same time");
        stop.cancel();
    }

    #[tokio::test]
    async fn followers_of_one_job_share_its_events_and_a_laggard_lags_alone() {
        let hub = hub(10);
        let mut fast = hub.subscribe("job").unwrap();
        let mut slow = hub.subscribe("job").unwrap();
        for seq in 1..=(RING as u64 + 3) {
            hub.dispatch(event("job", seq));
            assert_eq!(fast.events.recv().await.unwrap().seq, seq);
        }
        // The slow one read nothing: it is told it lagged, then gets what the ring still holds.
        assert!(matches!(
            slow.events.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
        assert_eq!(slow.events.recv().await.unwrap().seq, 4);
        assert_eq!(hub.job_connections("job"), 2);
    }

    #[test]
    fn connection_limit_and_cleanup() {
        let hub = hub(2);
        let a = hub.subscribe("a").unwrap();
        let b = hub.subscribe("b").unwrap();
        assert!(hub.subscribe("c").is_none(), "third connection refused");
        let stats = hub.stats();
        assert_eq!((stats.connections, stats.subscribed_jobs), (2, 2));
        drop(a);
        drop(b);
        let stats = hub.stats();
        assert_eq!((stats.connections, stats.subscribed_jobs), (0, 0));
        assert!(hub.subscribe("c").is_some());
    }

    #[test]
    fn a_job_stays_subscribed_while_any_follower_remains() {
        let hub = hub(10);
        let a = hub.subscribe("j").unwrap();
        let b = hub.subscribe("j").unwrap();
        drop(a);
        assert_eq!(hub.job_connections("j"), 1);
        drop(b);
        assert_eq!(hub.stats().subscribed_jobs, 0);
    }

    #[test]
    fn followers_leaving_at_once_leave_no_ring_behind() {
        let hub = hub(10_000);
        for round in 0..300 {
            let job = format!("j{round}");
            let gate = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (sub, gate) = (hub.subscribe(&job).unwrap(), gate.clone());
                    std::thread::spawn(move || {
                        gate.wait();
                        drop(sub);
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        let stats = hub.stats();
        assert_eq!(
            (stats.connections, stats.subscribed_jobs),
            (0, 0),
            "{stats:?}"
        );
    }

    #[test]
    fn a_feed_without_news_for_too_long_is_stalled() {
        let hub = hub(1);
        assert!(!hub.feed_stalled(), "not started");
        hub.feed_seen.store(now_ms(), Ordering::Relaxed);
        assert!(!hub.feed_stalled());
        let long_ago = now_ms() - FEED_STALL_AFTER.as_millis() as u64 - 1_000;
        hub.feed_seen.store(long_ago, Ordering::Relaxed);
        assert!(hub.feed_stalled());
    }

    #[test]
    fn events_reach_only_their_job() {
        let hub = hub(10);
        let mut a = hub.subscribe("a").unwrap();
        hub.dispatch(event("b", 1));
        assert!(a.events.try_recv().is_err());
        hub.dispatch(event("a", 1));
        assert_eq!(&*a.events.try_recv().unwrap().job_id, "a");
    }
}
