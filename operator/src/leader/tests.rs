//! The election against a scripted mock API server, with tokio's paused clock: time only moves
//! when every task waits, so "15 s" passes in microseconds and exactly.

use std::sync::{Arc, Mutex as StdMutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;

fn at(s: i64) -> Instant {
    // A fixed origin for the pure tests; only differences matter.
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let o = *ORIGIN.get_or_init(Instant::now);
    o + Duration::from_secs(s as u64)
}

fn held(by: &str) -> LeaseView {
    LeaseView {
        holder: Some(by.into()),
        duration: Duration::from_secs(15),
        acquire_time: None,
        renew_time: Some(Timestamp::from_second(1_800_000_000).unwrap()),
        transitions: 0,
    }
}

#[test]
fn timing_needs_a_renew_deadline_shorter_than_the_lease() {
    assert_eq!(Timing::default().validate(), Ok(()));
    let bad = Timing {
        renew_deadline: Duration::from_secs(15),
        ..Timing::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(TimingError::RenewNotShorterThanLease { .. })
    ));
    let bad = Timing {
        retry_period: Duration::from_secs(10),
        ..Timing::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(TimingError::RetryNotShorterThanRenew { .. })
    ));
}

#[test]
fn no_lease_is_created_and_the_holder_renews() {
    assert_eq!(decide(None, "a", at(0), at(0)), Step::Create);
    assert_eq!(decide(Some(&held("a")), "a", at(0), at(100)), Step::Renew);
}

#[test]
fn expiry_counts_from_when_this_process_saw_the_record_change() {
    let l = held("b");
    assert_eq!(
        decide(Some(&l), "a", at(0), at(15)),
        Step::Follow { holder: "b".into() }
    );
    assert_eq!(decide(Some(&l), "a", at(0), at(16)), Step::Acquire);
    // Seen for the first time just now: a full duration to wait, however old renewTime is.
    assert_eq!(
        decide(Some(&l), "a", at(100), at(101)),
        Step::Follow { holder: "b".into() }
    );
}

#[test]
fn released_lease_is_taken_at_once() {
    let lease = Lease {
        metadata: ObjectMeta::default(),
        spec: Some(LeaseSpec {
            holder_identity: Some(String::new()),
            ..LeaseSpec::default()
        }),
    };
    assert_eq!(
        decide(Some(&LeaseView::of(&lease)), "a", at(0), at(0)),
        Step::Acquire
    );
}

// ------------------------------------------------------------------------------------------
// Against the mock API.

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// What the mock answers to one request.
enum Answer {
    Reply(StatusCode, Value),
    /// Never answer (a hung API server); the request stays open.
    Hang,
}

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    body: Value,
}

/// Answers requests with `answer(i, method)` in order and records them.
fn serve(
    handle: Handle,
    answer: impl Fn(usize, &Method) -> Answer + Send + 'static,
) -> Arc<StdMutex<Vec<Seen>>> {
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let mut hung = Vec::new();
        let mut i = 0;
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            assert!(
                req.uri()
                    .path()
                    .starts_with("/apis/coordination.k8s.io/v1/namespaces/ops/leases"),
                "{}",
                req.uri()
            );
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log.lock().unwrap().push(Seen {
                method: method.clone(),
                body,
            });
            match answer(i, &method) {
                Answer::Reply(status, v) => send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&v).unwrap()))
                        .unwrap(),
                ),
                Answer::Hang => hung.push(send),
            }
            i += 1;
        }
    });
    seen
}

fn elector(handle_out: &mut Option<Handle>) -> Elector {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    *handle_out = Some(handle);
    let client = kube::Client::new(service, "default");
    Elector::new(
        Api::namespaced(client, "ops"),
        "flashcard-operator",
        "pod-a",
        Timing::default(),
    )
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
}

fn lease(holder: &str, renewed: Timestamp, rv: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "flashcard-operator", "resourceVersion": rv},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                    "renewTime": renewed.to_string(), "leaseTransitions": 2}})
}

/// The leader's clock is an hour behind (or ahead): a follower still waits exactly one lease
/// duration from when it first saw the record, not from `renewTime`.
#[tokio::test(start_paused = true)]
async fn a_skewed_renew_time_neither_hastens_nor_blocks_a_takeover() {
    let skewed = Timestamp::now() - jiff::SignedDuration::from_hours(1);
    for renewed in [
        skewed,
        Timestamp::now() + jiff::SignedDuration::from_hours(1),
    ] {
        let mut h = None;
        let e = elector(&mut h);
        let seen = serve(h.unwrap(), move |_, m| match *m {
            Method::GET => Answer::Reply(StatusCode::OK, lease("pod-b", renewed, "7")),
            _ => Answer::Reply(StatusCode::OK, lease("pod-a", Timestamp::now(), "8")),
        });
        assert!(!e.try_once().await.unwrap(), "first sight: follow");
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(!e.try_once().await.unwrap(), "15 s unchanged: still follow");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(e.try_once().await.unwrap(), "16 s unchanged: take over");
        let seen = seen.lock().unwrap().clone();
        let put = seen.iter().find(|s| s.method == Method::PUT).unwrap();
        assert_eq!(put.body["metadata"]["resourceVersion"], "7");
        assert_eq!(put.body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(put.body["spec"]["leaseTransitions"], 3);
    }
}

/// A leader that keeps renewing (its record changes) is never taken over, however long.
#[tokio::test(start_paused = true)]
async fn a_renewing_leader_is_followed() {
    let mut h = None;
    let e = elector(&mut h);
    let seen = serve(h.unwrap(), |i, _| {
        let renewed = Timestamp::from_second(1_800_000_000 + i as i64).unwrap();
        Answer::Reply(StatusCode::OK, lease("pod-b", renewed, &format!("{i}")))
    });
    for _ in 0..30 {
        assert!(!e.try_once().await.unwrap());
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    assert!(seen.lock().unwrap().iter().all(|s| s.method == Method::GET));
}

/// The API server stops answering: the leader gives up at the renew deadline (before any
/// follower could take over), keeps campaigning instead of exiting, and leads again once the
/// API answers and the Lease is still its own.
#[tokio::test(start_paused = true)]
async fn a_hung_api_ends_leadership_at_the_renew_deadline_and_it_campaigns_again() {
    let mut h = None;
    let e = Arc::new(elector(&mut h));
    let outage = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let o = outage.clone();
    let seen = serve(h.unwrap(), move |_, m| {
        if o.load(std::sync::atomic::Ordering::SeqCst) {
            return Answer::Hang;
        }
        match *m {
            Method::GET => Answer::Reply(StatusCode::OK, lease("pod-a", Timestamp::now(), "9")),
            Method::POST | Method::PUT => {
                Answer::Reply(StatusCode::OK, lease("pod-a", Timestamp::now(), "9"))
            }
            _ => Answer::Reply(StatusCode::NOT_FOUND, not_found()),
        }
    });
    let (tx, mut rx) = watch::channel(false);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let runner = {
        let e = e.clone();
        tokio::spawn(async move { e.run(tx, stop_rx).await })
    };
    rx.wait_for(|l| *l).await.unwrap();
    // Leading, renewing every retry period without a GET (fast path).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let renews = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == Method::PUT)
        .count();
    assert!(
        renews >= 3,
        "renews every 2 s: {renews} {:?}",
        seen.lock()
            .unwrap()
            .iter()
            .map(|s| s.method.clone())
            .collect::<Vec<_>>()
    );

    outage.store(true, std::sync::atomic::Ordering::SeqCst);
    let hung_at = Instant::now();
    rx.wait_for(|l| !*l).await.unwrap();
    let lost_after = hung_at.elapsed();
    assert!(
        lost_after <= Timing::default().renew_deadline,
        "stepped down {lost_after:?} after the last good renew, within the renew deadline"
    );
    assert!(lost_after < Timing::default().lease_duration);

    // Still campaigning through a long outage (no exit): requests keep coming.
    let before = seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(seen.lock().unwrap().len() > before, "keeps trying");
    assert!(!runner.is_finished());

    // The API is back and the Lease still names us: leading again.
    outage.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|l| *l))
        .await
        .expect("leads again")
        .unwrap();
    runner.abort();
}

/// Another candidate wrote the Lease in between: the fast renew gets 409, the elector reads the
/// Lease and follows the new holder.
#[tokio::test(start_paused = true)]
async fn a_conflicting_renew_reads_the_lease_and_follows() {
    let mut h = None;
    let e = elector(&mut h);
    let seen = serve(h.unwrap(), |i, m| match (i, m.clone()) {
        (0, Method::GET) => Answer::Reply(StatusCode::NOT_FOUND, not_found()),
        (1, Method::POST) => {
            Answer::Reply(StatusCode::CREATED, lease("pod-a", Timestamp::now(), "1"))
        }
        (2, Method::PUT) => Answer::Reply(
            StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}),
        ),
        _ => Answer::Reply(StatusCode::OK, lease("pod-b", Timestamp::now(), "5")),
    });
    assert!(e.try_once().await.unwrap(), "created");
    assert!(!e.try_once().await.unwrap(), "pod-b holds it now");
    let methods: Vec<Method> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(
        methods,
        [Method::GET, Method::POST, Method::PUT, Method::GET]
    );
}

/// One renew is lost on the way back (the server may have applied it): the leader keeps leading,
/// looks at the Lease again on its next attempt, finds it still its own and renews; it is never
/// demoted, so no new term re-applies every pipeline's children.
#[tokio::test(start_paused = true)]
async fn a_renew_of_unknown_outcome_is_checked_again_before_demotion() {
    let mut h = None;
    let e = Arc::new(elector(&mut h));
    let puts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = puts.clone();
    let seen = serve(h.unwrap(), move |_, m| match *m {
        Method::PUT if p.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 => Answer::Hang,
        Method::GET | Method::POST | Method::PUT => {
            Answer::Reply(StatusCode::OK, lease("pod-a", Timestamp::now(), "9"))
        }
        _ => Answer::Reply(StatusCode::NOT_FOUND, not_found()),
    });
    let (tx, mut rx) = watch::channel(false);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let runner = {
        let e = e.clone();
        tokio::spawn(async move { e.run(tx, stop_rx).await })
    };
    rx.wait_for(|l| *l).await.unwrap();
    let demoted = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|l| !*l)).await;
    assert!(demoted.is_err(), "demoted after one lost renew");
    let methods: Vec<Method> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.method.clone())
        .collect();
    let hung = methods
        .iter()
        .enumerate()
        .filter(|(_, m)| **m == Method::PUT)
        .nth(2)
        .map(|(i, _)| i)
        .unwrap();
    assert_eq!(
        methods[hung + 1],
        Method::GET,
        "re-read after the lost renew: {methods:?}"
    );
    assert!(
        methods[hung + 2..]
            .iter()
            .filter(|m| **m == Method::PUT)
            .count()
            >= 5,
        "renewing again: {methods:?}"
    );
    runner.abort();
}
