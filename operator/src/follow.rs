//! Followers of the stores' "work arrived" signals: one task per connected pipeline turns each
//! signal (a job submitted to an empty waiting list, see `Store::work_signals`) into a reconcile
//! of that pipeline through `Controller::reconcile_on`, so a job for an idle pipeline starts a
//! worker within a second instead of at the next poll. The poll stays as the safety net: for a
//! follower that lost its connection, and for jobs that become waiting without a submission
//! (retries, stalled jobs).
//!
//! A follower outlives a leadership term (its Redis connection is worth keeping); it sends to
//! whichever controller runs, and while none does its signals are dropped (the next controller
//! reconciles every pipeline when its watch lists). A busy pipeline sends no signals (its queue
//! is never empty when a job arrives); a pipeline whose queue drains between jobs triggers at
//! most one reconcile per [`MIN_TRIGGER_INTERVAL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use futures::{FutureExt, StreamExt};
use kube::runtime::reflector::ObjectRef;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::crd::FlashcardPipeline;
use crate::state::PipelineState;

/// Fewest seconds between two reconciles one follower triggers.
pub const MIN_TRIGGER_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before subscribing again after the signals could not be followed.
pub const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(5);

type Trigger = Arc<RwLock<Option<UnboundedSender<ObjectRef<FlashcardPipeline>>>>>;

struct Follower {
    /// Identity of the store followed (its address): a new store (new URL) gets a new follower.
    store: usize,
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The followers of every connected pipeline (by `namespace/name`).
#[derive(Default)]
pub struct Followers {
    trigger: Trigger,
    tasks: Mutex<HashMap<String, Follower>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn identity(store: &Arc<dyn PipelineState>) -> usize {
    Arc::as_ptr(store).cast::<()>() as usize
}

impl Followers {
    /// Sends reconcile requests to `sender` from now on (None: to nobody).
    pub fn set_trigger(&self, sender: Option<UnboundedSender<ObjectRef<FlashcardPipeline>>>) {
        match self.trigger.write() {
            Ok(mut t) => *t = sender,
            Err(poisoned) => *poisoned.into_inner() = sender,
        }
    }

    /// Follows `store` for the pipeline `key`, unless it is followed already.
    pub fn ensure(
        &self,
        key: &str,
        target: ObjectRef<FlashcardPipeline>,
        store: &Arc<dyn PipelineState>,
    ) {
        let id = identity(store);
        let mut tasks = lock(&self.tasks);
        if tasks
            .get(key)
            .is_some_and(|f| f.store == id && !f.task.is_finished())
        {
            return;
        }
        let task = tokio::spawn(follow(store.clone(), target, self.trigger.clone()));
        // Replacing drops (and aborts) the follower of an older store.
        tasks.insert(key.to_owned(), Follower { store: id, task });
    }

    /// Stops following the pipeline `key` (deleted).
    pub fn stop(&self, key: &str) {
        lock(&self.tasks).remove(key);
    }

    /// How many pipelines are followed.
    pub fn len(&self) -> usize {
        lock(&self.tasks).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn fire(trigger: &Trigger, target: &ObjectRef<FlashcardPipeline>) {
    let sender = match trigger.read() {
        Ok(t) => t.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    if let Some(sender) = sender {
        // A controller that has stopped drops its receiver; nothing to do then.
        let _ = sender.unbounded_send(target.clone());
    }
}

async fn follow(
    store: Arc<dyn PipelineState>,
    target: ObjectRef<FlashcardPipeline>,
    trigger: Trigger,
) {
    loop {
        match store.work_signals().await {
            Ok(mut signals) => {
                let mut last: Option<Instant> = None;
                while signals.next().await.is_some() {
                    if let Some(at) = last {
                        let since = at.elapsed();
                        if since < MIN_TRIGGER_INTERVAL {
                            tokio::time::sleep(MIN_TRIGGER_INTERVAL - since).await;
                            // Whatever arrived meanwhile is covered by this one trigger.
                            while let Some(Some(_)) = signals.next().now_or_never() {}
                        }
                    }
                    tracing::debug!(pipeline = %target, "work arrived; reconciling");
                    fire(&trigger, &target);
                    last = Some(Instant::now());
                }
            }
            Err(e) => {
                tracing::debug!(pipeline = %target, error = %e, "cannot follow the store's signals");
            }
        }
        tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
    }
}
