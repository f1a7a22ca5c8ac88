//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas are safe:
//! only the holder runs the controller. The rules are client-go's:
//!
//! - a follower decides expiry on its own monotonic clock: the Lease is free once its record
//!   (holder, times, transitions) has not changed for `leaseDurationSeconds` since this process
//!   last saw it change. The leader's `renewTime` is only compared for change, never against
//!   this machine's wall clock, so clock skew between nodes cannot cause a takeover;
//! - the leader renews every `retry_period`, each attempt bounded by the `renew_deadline`
//!   (shorter than the lease duration): when it cannot renew within the deadline, even because a
//!   request hangs, it stops leading before any follower may take over;
//! - losing the Lease is not fatal: the elector keeps campaigning and leads again when it can
//!   (the caller stops and restarts its controller, keeping its memory);
//! - writes carry the Lease's resourceVersion, so two candidates can never both win; the leader
//!   renews from its cached copy without a GET (client-go's fast path);
//! - on shutdown the leader releases the Lease so a standby takes over at once.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

/// Durations of the election (client-go's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long followers wait, from the last change they saw, before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renew.
    pub renew_deadline: Duration,
    /// Time between two attempts (renew or campaign).
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Invalid election settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error("the renew deadline ({renew:?}) must be shorter than the lease duration ({lease:?})")]
    RenewNotShorterThanLease { renew: Duration, lease: Duration },
    #[error("the retry period ({retry:?}) must be shorter than the renew deadline ({renew:?})")]
    RetryNotShorterThanRenew { retry: Duration, renew: Duration },
    #[error("the lease duration must be at least one second")]
    LeaseTooShort,
}

impl Timing {
    /// A leader must give up before followers may take over, and get several tries before that.
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(TimingError::LeaseTooShort);
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(TimingError::RenewNotShorterThanLease {
                renew: self.renew_deadline,
                lease: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(TimingError::RetryNotShorterThanRenew {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// The Lease record as the decision needs it. The times are the writer's wall clock and are
/// only compared for equality (to notice a change), never with this machine's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub duration: Duration,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

impl LeaseView {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What a candidate should do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free, or unchanged for a whole lease duration on our clock: take it over.
    Acquire,
    /// Someone else holds a live Lease.
    Follow { holder: String },
}

/// The pure decision. `unchanged_since` is when this process first saw the Lease's current
/// record (its own clock).
pub fn decide(lease: Option<&LeaseView>, me: &str, unchanged_since: Instant, now: Instant) -> Step {
    let Some(l) = lease else {
        return Step::Create;
    };
    match &l.holder {
        Some(h) if h == me => Step::Renew,
        None => Step::Acquire,
        Some(h) => {
            if now.saturating_duration_since(unchanged_since) > l.duration {
                Step::Acquire
            } else {
                Step::Follow { holder: h.clone() }
            }
        }
    }
}

/// The last record seen and when it was first seen.
struct Observed {
    record: Option<LeaseView>,
    since: Instant,
}

/// A lease-based elector.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    pub timing: Timing,
    observed: Mutex<Option<Observed>>,
    /// Our last written copy while we hold the Lease (renewed without a GET).
    held: Mutex<Option<Lease>>,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: Mutex::new(None),
            held: Mutex::new(None),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<Timestamp>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquired.unwrap_or(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Notes `record` as seen now; returns since when it has been unchanged.
    async fn observe(&self, record: Option<LeaseView>) -> Instant {
        let now = Instant::now();
        let mut observed = self.observed.lock().await;
        match &*observed {
            Some(o) if o.record == record => o.since,
            _ => {
                *observed = Some(Observed { record, since: now });
                now
            }
        }
    }

    async fn wrote(&self, lease: Lease) {
        self.observe(Some(LeaseView::of(&lease))).await;
        *self.held.lock().await = Some(lease);
    }

    /// One round: returns whether we hold the Lease afterwards. Losing a write race (409) is
    /// "not leader", not an error.
    pub async fn try_once(&self) -> Result<bool, kube::Error> {
        // Fast path: renew our own copy; a conflict means someone else wrote, so look.
        let cached = self.held.lock().await.take();
        if let Some(mut lease) = cached {
            let old = lease.spec.clone().unwrap_or_default();
            lease.spec = Some(self.spec(
                Timestamp::now(),
                old.acquire_time.map(|t| t.0),
                old.lease_transitions.unwrap_or(0),
            ));
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(renewed) => {
                    self.wrote(renewed).await;
                    return Ok(true);
                }
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }

        let current = self.api.get_opt(&self.name).await?;
        let view = current.as_ref().map(LeaseView::of);
        let since = self.observe(view.clone()).await;
        let now = Timestamp::now();
        let step = decide(view.as_ref(), &self.identity, since, Instant::now());
        let result = match (step, current) {
            (Step::Follow { .. }, _) => return Ok(false),
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (step, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if step == Step::Renew {
                    self.spec(now, old.acquire_time.map(|t| t.0), transitions)
                } else {
                    self.spec(now, None, transitions + 1)
                });
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(lease) => {
                self.wrote(lease).await;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Campaigns until `stop` fires, publishing leadership on `tx`: true while leading, false
    /// after a lost or unrenewable Lease (and then it campaigns again).
    pub async fn run(&self, tx: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut renewed: Option<Instant> = None;
        loop {
            // A leader's attempt ends at its renew deadline; a follower's gets the same bound so
            // a hung request never stalls the campaign.
            // Each attempt also ends at a third of the deadline, so one request lost on the way
            // (a renew the server may well have applied) leaves time to look again before
            // the deadline: the next attempt reads the Lease and finds it still ours.
            let per_attempt = (self.timing.renew_deadline / 3).max(self.timing.retry_period);
            let limit = match renewed {
                Some(t) => (t + self.timing.renew_deadline)
                    .saturating_duration_since(Instant::now())
                    .min(per_attempt),
                None => self.timing.renew_deadline,
            };
            let attempt = tokio::select! {
                r = tokio::time::timeout(limit, self.try_once()) => r,
                _ = stop.changed() => return,
            };
            let leader = match attempt {
                Ok(Ok(true)) => {
                    renewed = Some(Instant::now());
                    true
                }
                Ok(Ok(false)) => false,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader election: cannot reach the Lease");
                    renewed.is_some_and(|t| t.elapsed() < self.timing.renew_deadline)
                }
                Err(_) => {
                    // Unknown outcome: still leading until the deadline; the next attempt
                    // re-reads the Lease (the cached copy is dropped below) instead of demoting.
                    tracing::warn!(after = ?limit, "leader election: the Lease request timed out");
                    *self.held.lock().await = None;
                    renewed.is_some_and(|t| t.elapsed() < self.timing.renew_deadline)
                }
            };
            if !leader {
                if renewed.take().is_some() {
                    tracing::warn!(
                        "lost leadership (no renew within {:?}); campaigning again",
                        self.timing.renew_deadline
                    );
                }
                // Our cached copy may be stale; the next round reads the Lease.
                *self.held.lock().await = None;
            }
            tx.send_if_modified(|v| std::mem::replace(v, leader) != leader);
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry_period) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Releases the Lease if we hold it, so a standby takes over without waiting.
    pub async fn step_down(&self) -> Result<(), kube::Error> {
        *self.held.lock().await = None;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        lease.spec = Some(spec);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
