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

    mod with_api {
        use super::*;
        use http::{Method, Request, Response, StatusCode};
        use kube::client::Body;
        use serde_json::{Value, json};

        /// Runs `try_once` against scripted answers; returns the result and the request bodies.
        async fn round(answers: Vec<(Method, StatusCode, Value)>) -> (bool, Vec<Value>) {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(service, "default");
            let server = tokio::spawn(async move {
                let mut handle = std::pin::pin!(handle);
                let mut bodies = Vec::new();
                for (method, status, reply) in answers {
                    let (req, send) = handle.next_request().await.expect("request");
                    assert_eq!(req.method(), method);
                    assert!(
                        req.uri()
                            .path()
                            .starts_with("/apis/coordination.k8s.io/v1/namespaces/ops/leases")
                    );
                    let bytes = req.into_body().collect_bytes().await.unwrap();
                    bodies.push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                    let resp = Response::builder().status(status);
                    send.send_response(
                        resp.body(Body::from(serde_json::to_vec(&reply).unwrap()))
                            .unwrap(),
                    );
                }
                bodies
            });
            let e = Elector::new(
                Api::namespaced(client, "ops"),
                "flashcard-operator",
                "pod-a",
            );
            let leader = e.try_once().await.unwrap();
            (leader, server.await.unwrap())
        }

        fn not_found() -> Value {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
        }

        fn lease(holder: &str, renewed: Timestamp) -> Value {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "flashcard-operator", "resourceVersion": "7"},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                            "renewTime": renewed.to_string(), "leaseTransitions": 2}})
        }

        #[tokio::test]
        async fn creates_a_missing_lease() {
            let created = lease("pod-a", Timestamp::now());
            let (leader, bodies) = round(vec![
                (Method::GET, StatusCode::NOT_FOUND, not_found()),
                (Method::POST, StatusCode::CREATED, created),
            ])
            .await;
            assert!(leader);
            assert_eq!(bodies[1]["spec"]["holderIdentity"], "pod-a");
            assert_eq!(bodies[1]["spec"]["leaseDurationSeconds"], 15);
        }

        #[tokio::test]
        async fn follows_a_live_holder_without_writing() {
            let (leader, bodies) = round(vec![(
                Method::GET,
                StatusCode::OK,
                lease("pod-b", Timestamp::now()),
            )])
            .await;
            assert!(!leader);
            assert_eq!(bodies.len(), 1);
        }

        #[tokio::test]
        async fn takes_over_an_expired_lease_with_its_resource_version() {
            let old = Timestamp::now() - jiff::SignedDuration::from_secs(60);
            let (leader, bodies) = round(vec![
                (Method::GET, StatusCode::OK, lease("pod-b", old)),
                (
                    Method::PUT,
                    StatusCode::OK,
                    lease("pod-a", Timestamp::now()),
                ),
            ])
            .await;
            assert!(leader);
            assert_eq!(bodies[1]["metadata"]["resourceVersion"], "7");
            assert_eq!(bodies[1]["spec"]["holderIdentity"], "pod-a");
            assert_eq!(bodies[1]["spec"]["leaseTransitions"], 3);
        }

        #[tokio::test]
        async fn losing_the_write_race_is_not_leading() {
            let old = Timestamp::now() - jiff::SignedDuration::from_secs(60);
            let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": "Conflict", "code": 409});
            let (leader, _) = round(vec![
                (Method::GET, StatusCode::OK, lease("pod-b", old)),
                (Method::PUT, StatusCode::CONFLICT, conflict),
            ])
            .await;
            assert!(!leader);
        }
    }
}
