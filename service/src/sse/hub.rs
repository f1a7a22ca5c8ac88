//! In-process fan-out of job events: one store feed per process, many SSE subscribers.
//!
//! The dispatcher reads the store's live feed (one Redis stream reader per api pod) and hands
//! each event to the subscribers of its job through bounded channels. A subscriber whose channel
//! is full is dropped (its stream ends and the client resumes with `Last-Event-ID`), so one slow
//! client never holds memory without bound or delays the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{Store, StoreResult, StoredEvent};

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<StoredEvent>,
}

/// Connection and delivery counters (`GET /api/sse/stats`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubStats {
    pub connections: usize,
    pub max_connections: usize,
    pub subscribed_jobs: usize,
    pub subscriptions_per_job: HashMap<String, usize>,
    pub events_sent: u64,
    pub clients_dropped_slow: u64,
}

/// The fan-out hub of one process.
pub struct Hub {
    subscribers: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    max_connections: usize,
    buffer: usize,
    events_sent: AtomicU64,
    dropped: AtomicU64,
    metrics: Arc<Metrics>,
    /// Fires when the process shuts down: open streams end so clients resume on another pod.
    closing: CancellationToken,
}

/// A held connection slot and subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    job_id: String,
    id: u64,
    pub events: mpsc::Receiver<StoredEvent>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.job_id, self.id);
    }
}

impl Hub {
    pub fn new(max_connections: usize, buffer: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.sse_connections(0, max_connections);
        Arc::new(Self {
            subscribers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            max_connections,
            buffer: buffer.max(1),
            events_sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            metrics,
            closing: CancellationToken::new(),
        })
    }

    /// Fires when the process shuts down.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the dispatcher: reads the store's feed until `stop` fires, which also ends every
    /// open stream (an HTTP server's graceful shutdown would otherwise wait for them forever).
    pub async fn start(
        self: &Arc<Self>,
        store: &dyn Store,
        stop: CancellationToken,
    ) -> StoreResult<()> {
        let mut feed = store.event_feed().await?;
        let hub = self.clone();
        let closing = self.closing.clone();
        let stop_streams = stop.clone();
        tokio::spawn(async move {
            stop_streams.cancelled().await;
            closing.cancel();
        });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    event = feed.next() => match event {
                        Some(event) => hub.dispatch(event),
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

    /// Delivers one event to the job's subscribers; drops the ones that cannot keep up.
    pub fn dispatch(&self, event: StoredEvent) {
        let mut map = self.lock();
        let Some(subscribers) = map.get_mut(&*event.job_id) else {
            return;
        };
        let before = subscribers.len();
        subscribers.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        let dropped = before - subscribers.len();
        if subscribers.is_empty() {
            map.remove(&*event.job_id);
        }
        drop(map);
        for _ in 0..dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.sse_client_dropped();
        }
        if dropped > 0 {
            tracing::warn!(job = %event.job_id, dropped, "dropped slow SSE clients");
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
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(job_id.to_owned())
            .or_default()
            .push(Subscriber { id, tx });
        Some(Subscription {
            hub: self.clone(),
            job_id: job_id.to_owned(),
            id,
            events: rx,
        })
    }

    fn unsubscribe(&self, job_id: &str, id: u64) {
        let mut map = self.lock();
        if let Some(subscribers) = map.get_mut(job_id) {
            subscribers.retain(|s| s.id != id);
            if subscribers.is_empty() {
                map.remove(job_id);
            }
        }
        drop(map);
        let open = self
            .connections
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        self.metrics.sse_connections(open, self.max_connections);
    }

    /// Open connections to one job (the seed's heartbeat `connections`).
    pub fn job_connections(&self, job_id: &str) -> usize {
        self.lock().get(job_id).map(Vec::len).unwrap_or(0)
    }

    pub fn event_sent(&self, event: &str) {
        self.events_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.sse_event_sent(event);
    }

    pub fn stats(&self) -> HubStats {
        let map = self.lock();
        HubStats {
            connections: self.connections.load(Ordering::SeqCst),
            max_connections: self.max_connections,
            subscribed_jobs: map.len(),
            subscriptions_per_job: map.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
            events_sent: self.events_sent.load(Ordering::Relaxed),
            clients_dropped_slow: self.dropped.load(Ordering::Relaxed),
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

    fn hub(max: usize, buffer: usize) -> Arc<Hub> {
        Hub::new(max, buffer, Arc::new(Metrics::new("test", "api")))
    }

    #[tokio::test]
    async fn slow_subscriber_is_dropped_and_others_keep_receiving() {
        let hub = hub(10, 2);
        let mut fast = hub.subscribe("job").unwrap();
        let mut slow = hub.subscribe("job").unwrap();
        for seq in 1..=2 {
            hub.dispatch(event("job", seq));
            assert_eq!(fast.events.recv().await.unwrap().seq, seq);
        }
        // The slow one has read nothing: its buffer of 2 is full, so the third event drops it.
        hub.dispatch(event("job", 3));
        assert_eq!(fast.events.recv().await.unwrap().seq, 3);
        assert_eq!(hub.stats().clients_dropped_slow, 1);
        assert_eq!(hub.job_connections("job"), 1);
        // The dropped client still gets what was buffered, then its stream ends.
        assert_eq!(slow.events.recv().await.unwrap().seq, 1);
        assert_eq!(slow.events.recv().await.unwrap().seq, 2);
        assert!(slow.events.recv().await.is_none());
    }

    #[test]
    fn connection_limit_and_cleanup() {
        let hub = hub(2, 4);
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
    fn events_reach_only_their_job() {
        let hub = hub(10, 4);
        let mut a = hub.subscribe("a").unwrap();
        hub.dispatch(event("b", 1));
        assert!(a.events.try_recv().is_err());
        hub.dispatch(event("a", 1));
        assert_eq!(&*a.events.try_recv().unwrap().job_id, "a");
    }
}
