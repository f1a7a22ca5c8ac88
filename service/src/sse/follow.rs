//! The stream of one follower of one job, and the promise that it ends.
//!
//! Order: `connected`, then the job's stored events after the client's `Last-Event-ID`, then
//! live events from the hub, skipping any `seq` already sent. Subscribing before reading the
//! history means no event can fall between the two. The stream ends after `completed` or
//! `failed`, and it learns the job's fate even when it missed events:
//! - a gap (an event whose `seq` is past the next one) or a lag (the follower fell behind the
//!   hub's ring) is filled from the job's history in the store;
//! - at every heartbeat the job is looked at again: newer events than those sent are caught up
//!   (a lost terminal event included), and a job that no longer exists (expired, or lost with
//!   the store's data) gets a terminal `failed` event with code `JOB_EXPIRED`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::hub::{Hub, Subscription};
use flashcard_core::events;
use flashcard_core::job::{JobState, now_ms};
use flashcard_store::{Store, StoredEvent};

/// What every follower of a process shares.
pub struct Followers {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    /// Reconnect delay suggested to clients (`retry:`).
    pub retry: Duration,
    /// When the process drains, each stream ends at a random moment within this long after the
    /// hub starts closing, so the followers of one pod reconnect elsewhere spread out.
    pub close_spread: Duration,
}

/// Where a new follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The client has every event up to the terminal one: nothing to stream (`204`).
    Ended,
    /// Stream the events after this `seq`.
    After(u64),
}

/// Where to start for a client that saw events up to `last_event_id`. An id above the job's
/// newest event (a stale or foreign id) means "from the latest": the terminal event is sent
/// again if the job ended, else live events follow.
pub fn start(last_event_id: u64, state: JobState, event_seq: u64) -> Start {
    let terminal = state.is_terminal();
    match last_event_id {
        id if id > event_seq && terminal => Start::After(event_seq.saturating_sub(1)),
        id if id > event_seq => Start::After(event_seq),
        id if terminal && id == event_seq => Start::Ended,
        id => Start::After(id),
    }
}

struct Follower {
    shared: Arc<Followers>,
    job_id: Arc<str>,
    subscription: Subscription,
    pending: VecDeque<Event>,
    sent_seq: u64,
    done: bool,
    /// Set when the hub starts closing: the moment this stream ends.
    close_at: Option<tokio::time::Instant>,
}

/// The SSE stream of one follower; `history` are the job's stored events after `after`.
pub fn stream(
    shared: Arc<Followers>,
    subscription: Subscription,
    job_id: &str,
    status: JobState,
    after: u64,
    history: Vec<StoredEvent>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let connected = Event::default()
        .event("connected")
        .retry(shared.retry)
        .data(events::connected(job_id, status.as_str(), now_ms()));
    shared.hub.event_sent("connected");
    let mut follower = Follower {
        shared,
        job_id: Arc::from(job_id),
        subscription,
        pending: VecDeque::from([connected]),
        sent_seq: after,
        done: false,
        close_at: None,
    };
    for event in history {
        follower.queue(event);
    }
    futures::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(event) = f.pending.pop_front() {
                return Some((Ok(event), f));
            }
            if f.done {
                return None;
            }
            let closing = f.shared.hub.closing().clone();
            let close_at = f.close_at;
            tokio::select! {
                // Draining: pick this stream's moment to end, and keep streaming until then.
                _ = closing.cancelled(), if close_at.is_none() => {
                    f.close_at = Some(tokio::time::Instant::now() + jitter(f.shared.close_spread));
                }
                // End the stream with the reconnect delay: EventSource reconnects (to another
                // pod) with Last-Event-ID and misses nothing.
                _ = tokio::time::sleep_until(close_at.unwrap_or_else(tokio::time::Instant::now)),
                    if close_at.is_some() =>
                {
                    f.done = true;
                    f.pending.push_back(Event::default().retry(f.shared.retry).comment("reconnect"));
                }
                received = f.subscription.events.recv() => match received {
                    Ok(event) if event.seq <= f.sent_seq => {}
                    Ok(event) if event.seq == f.sent_seq + 1 => f.queue(event),
                    // A gap: the feed skipped events (trimmed stream, a reconnect).
                    Ok(_) | Err(RecvError::Lagged(_)) => f.catch_up().await,
                    Err(RecvError::Closed) => return None,
                },
                beat = f.subscription.beat.changed() => {
                    if beat.is_err() {
                        return None;
                    }
                    f.heartbeat();
                    f.recheck().await;
                }
            }
        }
    })
}

/// A random delay in `[0, spread)`.
fn jitter(spread: Duration) -> Duration {
    let ms = spread.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..ms))
}

impl Follower {
    /// Queues a stored event unless it was sent already; marks the end after a terminal one.
    fn queue(&mut self, event: StoredEvent) {
        if self.done || event.seq <= self.sent_seq {
            return;
        }
        self.sent_seq = event.seq;
        let kind = event.kind();
        let sse = Event::default()
            .event(kind)
            .id(event.seq.to_string())
            .data(String::from_utf8_lossy(&event.data));
        self.shared.hub.event_sent(kind);
        self.pending.push_back(sse);
        self.done = events::is_terminal(kind);
    }

    /// Fills what was missed from the job's history.
    async fn catch_up(&mut self) {
        match self
            .shared
            .store
            .events_after(&self.job_id, self.sent_seq)
            .await
        {
            Ok(missed) => {
                if !missed.is_empty() {
                    self.shared.hub.caught_up();
                }
                for event in missed {
                    self.queue(event);
                }
            }
            // The next heartbeat looks again.
            Err(e) => tracing::warn!(job = %self.job_id, error = %e, "cannot catch a follower up"),
        }
    }

    fn heartbeat(&mut self) {
        self.shared.hub.event_sent("heartbeat");
        let beat = Event::default().event("heartbeat").data(events::heartbeat(
            &self.job_id,
            self.shared.hub.job_connections(&self.job_id),
            now_ms(),
        ));
        self.pending.push_back(beat);
    }

    /// Looks at the job again: catches up newer events, ends the stream of a vanished job.
    async fn recheck(&mut self) {
        match self.shared.store.job_head(&self.job_id).await {
            Ok(Some(head)) if head.event_seq > self.sent_seq => self.catch_up().await,
            Ok(Some(_)) => {}
            Ok(None) => {
                self.shared.hub.event_sent("failed");
                self.pending.push_back(
                    Event::default()
                        .event("failed")
                        .data(events::expired(&self.job_id, now_ms())),
                );
                self.done = true;
            }
            Err(e) => {
                tracing::debug!(job = %self.job_id, error = %e, "cannot re-check a followed job")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_event_id_above_the_job_resumes_from_the_latest() {
        use JobState::*;
        assert_eq!(start(0, Waiting, 0), Start::After(0));
        assert_eq!(start(2, Active, 3), Start::After(2));
        assert_eq!(start(3, Completed, 3), Start::Ended);
        // Too high on a finished job: the terminal event once more.
        assert_eq!(start(14, Completed, 3), Start::After(2));
        // Too high on a running job: from now on.
        assert_eq!(start(14, Active, 3), Start::After(3));
    }
}
