//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas are safe:
//! only the holder runs the controller.
//!
//! The holder renews every `renew_every`; the others take over once `renewTime +
//! leaseDurationSeconds` has passed. Writes use the Lease's resourceVersion (optimistic
//! concurrency), so two candidates can never both win. A leader that cannot renew within the
//! lease duration steps down; on SIGTERM it releases the Lease so a standby takes over at once.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// The Lease as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renew_time: Option<Timestamp>,
    pub duration: Duration,
}

impl LeaseView {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0),
            duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
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
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a live Lease.
    Follow { holder: String },
}

/// The pure decision.
pub fn decide(lease: Option<&LeaseView>, me: &str, now: Timestamp) -> Step {
    let Some(l) = lease else {
        return Step::Create;
    };
    match &l.holder {
        Some(h) if h == me => Step::Renew,
        None => Step::Acquire,
        Some(h) => {
            let duration = SignedDuration::try_from(l.duration).unwrap_or(SignedDuration::ZERO);
            let expired = l.renew_time.is_none_or(|t| t + duration < now);
            if expired {
                Step::Acquire
            } else {
                Step::Follow { holder: h.clone() }
            }
        }
    }
}

/// A lease-based elector.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<Timestamp>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired.unwrap_or(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: returns whether we hold the Lease afterwards. Losing a write race (409) is
    /// "not leader", not an error.
    pub async fn try_once(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let step = decide(
            current.as_ref().map(LeaseView::of).as_ref(),
            &self.identity,
            now,
        );
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
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Campaigns until `stop` fires, publishing leadership on `tx`. A leader that cannot renew
    /// for a whole lease duration publishes `false`.
    pub async fn run(&self, tx: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut last_renew: Option<std::time::Instant> = None;
        loop {
            let leader = match self.try_once().await {
                Ok(true) => {
                    last_renew = Some(std::time::Instant::now());
                    true
                }
                Ok(false) => {
                    last_renew = None;
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot reach the Lease");
                    last_renew.is_some_and(|t| t.elapsed() < self.lease_duration)
                }
            };
            tx.send_if_modified(|v| std::mem::replace(v, leader) != leader);
            tokio::select! {
                _ = tokio::time::sleep(self.renew_every) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Releases the Lease if we hold it, so a standby takes over without waiting.
    pub async fn step_down(&self) -> Result<(), kube::Error> {
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
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn held(by: &str, renewed: i64) -> LeaseView {
        LeaseView {
            holder: Some(by.into()),
            renew_time: Some(at(renewed)),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", at(0)), Step::Create);
    }

    #[test]
    fn holder_renews() {
        assert_eq!(decide(Some(&held("a", 0)), "a", at(100)), Step::Renew);
    }

    #[test]
    fn live_lease_of_another_is_followed() {
        assert_eq!(
            decide(Some(&held("b", 0)), "a", at(15)),
            Step::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn expired_or_released_lease_is_taken_over() {
        assert_eq!(decide(Some(&held("b", 0)), "a", at(16)), Step::Acquire);
        let released = LeaseView {
            holder: None,
            renew_time: None,
            duration: Duration::from_secs(15),
        };
        assert_eq!(decide(Some(&released), "a", at(0)), Step::Acquire);
        let never_renewed = LeaseView {
            renew_time: None,
            ..held("b", 0)
        };
        assert_eq!(decide(Some(&never_renewed), "a", at(0)), Step::Acquire);
    }

    #[test]
    fn empty_holder_counts_as_free() {
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                ..LeaseSpec::default()
            }),
        };
        assert_eq!(
            decide(Some(&LeaseView::of(&lease)), "a", at(0)),
            Step::Acquire
        );
    }
}
