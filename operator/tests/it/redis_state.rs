//! The operator against a real redis-server, through the service crate's `RedisStore`: queue
//! depth and worker reading, the budget written to the store and its stop, spend restored after
//! Redis lost its data, and the connector
//! reading the Redis URL from a Secret (served by a mock API server).
//!
//! Needs `redis-server` on PATH (Debian: `apt-get install redis-server`); a missing binary fails
//! the test, it is never skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashcard_core::budget::Pricing;
use flashcard_core::budget::usd_to_micros;
use flashcard_core::job::{JobRequest, JobResult, TokenUsage};
use flashcard_core::keyspace::PipelineId;
use flashcard_operator::connector::RedisConnector;
use flashcard_operator::crd::FlashcardPipeline;
use flashcard_operator::reconcile::observe::observe;
use flashcard_operator::state::{Connector, PipelineState};
use flashcard_store::redis::RedisStore;
use flashcard_store::{
    Admission, BudgetSource, ClaimRequest, Cost, KillSwitch, Outcome, SetBy, Store, Submission,
    WorkerInfo,
};
use flashcard_test_support::RedisServer;
use kube::client::Body;
use serde_json::json;

fn pipeline(limit_usd: f64) -> FlashcardPipeline {
    serde_json::from_value(json!({
        "apiVersion": "flashcards.dev/v1alpha1",
        "kind": "FlashcardPipeline",
        "metadata": {"name": "biology", "namespace": "study", "uid": "u1", "generation": 1},
        "spec": {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "budget": {"limitUsd": limit_usd}
        }
    }))
    .unwrap()
}

async fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::connect(
        &redis.url(),
        &PipelineId::new(Some("study"), "biology").unwrap(),
    )
    .await
    .unwrap()
}

fn request(i: u32) -> JobRequest {
    JobRequest {
        content: format!("Photosynthesis converts light into chemical energy. Item {i}."),
        subject: "biology".into(),
        topic: "cells".into(),
        user_id: "u".into(),
        card_count: 3,
    }
}

async fn submit(s: &RedisStore, i: u32) {
    let admission = s.submit(Submission::new(request(i), 3)).await.unwrap();
    assert!(
        matches!(admission, Admission::Accepted { .. }),
        "{admission:?}"
    );
}

fn claim_request() -> ClaimRequest<'static> {
    ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        worker_id: "w1",
        lease: Duration::from_secs(30),
        max_jobs: 1,
        client_cap: 0,
        pricing: Pricing::default(),
        started: None,
    }
}

/// Runs one job that costs `micros`.
pub(crate) async fn spend(s: &RedisStore, micros: u64) {
    submit(s, 99).await;
    let claim = s.claim(&claim_request()).await.unwrap().jobs.remove(0);
    let result = JobResult {
        flashcards: vec![],
        token_usage: 0,
        usage: TokenUsage::default(),
        provider: "openai".into(),
        model: "m".into(),
        cost_micros: micros,
    };
    let cost = Cost::reported(micros, TokenUsage::default());
    let outcome = Outcome::Completed {
        result: &result,
        duration_ms: 1,
    };
    s.finish(&claim.lease, outcome, cost, None).await.unwrap();
}

#[tokio::test]
async fn reads_queue_depth_and_workers() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    for i in 0..5 {
        submit(&s, i).await;
    }
    assert_eq!(s.claim(&claim_request()).await.unwrap().jobs.len(), 1);
    let info = WorkerInfo {
        id: "w1".into(),
        pod: "biology-worker-abc".into(),
        active: 1,
        concurrency: 4,
        breaker: "closed".into(),
        draining: false,
        last_seen: 0,
    };
    s.heartbeat(&info, Duration::from_secs(30)).await.unwrap();

    let state: Arc<dyn PipelineState> = Arc::new(s);
    let seen = observe(&pipeline(0.0), &state, jiff::Timestamp::now())
        .await
        .unwrap();
    assert_eq!((seen.queue.waiting, seen.queue.active), (4, 1));
    assert_eq!(seen.workers.len(), 1);
    assert_eq!(
        (seen.workers[0].pod.as_str(), seen.workers[0].active),
        ("biology-worker-abc", 1)
    );
}

#[tokio::test]
async fn the_budget_is_written_to_the_store_and_its_stop_follows_the_limit() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let state: Arc<dyn PipelineState> = Arc::new(store(&redis).await);
    let now = jiff::Timestamp::now();

    // The operator writes the $10 budget; every pod reads it from there.
    observe(&pipeline(10.0), &state, now).await.unwrap();
    let budget = Store::budget_state(&s).await.unwrap();
    assert!(budget.stored);
    assert_eq!(budget.config.limit_micros, usd_to_micros(10.0));
    assert_eq!(budget.config.source, BudgetSource::Operator);

    // A job costs $12.50: the store's own stop switches on as it settles.
    spend(&s, usd_to_micros(12.5)).await;
    let o = observe(&pipeline(10.0), &state, now).await.unwrap();
    assert_eq!(o.spent_micros, usd_to_micros(12.5));
    let ks = Store::budget_state(&s).await.unwrap().kill_switch;
    assert_eq!((ks.enabled, ks.set_by), (true, Some(SetBy::Budget)));
    assert!(ks.reason.unwrap().contains("$12.50 of $10.00"));

    // Limit raised to $20: the operator writes it and the stop ends at once.
    observe(&pipeline(20.0), &state, now).await.unwrap();
    assert!(!Store::budget_state(&s).await.unwrap().kill_switch.enabled);

    // A person switches it on through the admin API: the operator leaves it on.
    let admin = KillSwitch::manual(SetBy::Admin, Some("incident".into()), 1);
    Store::set_kill_switch(&s, &admin).await.unwrap();
    let o = observe(&pipeline(20.0), &state, now).await.unwrap();
    assert_eq!(o.budget.action, flashcard_operator::budget::Action::Keep);
    let ks = Store::budget_state(&s).await.unwrap().kill_switch;
    assert_eq!((ks.enabled, ks.set_by), (true, Some(SetBy::Admin)));

    // Lowered below the spend again (admin switch gone): the stop is back.
    Store::clear_kill_switch_if(&s, SetBy::Admin).await.unwrap();
    observe(&pipeline(10.0), &state, now).await.unwrap();
    let ks = Store::budget_state(&s).await.unwrap().kill_switch;
    assert_eq!((ks.enabled, ks.set_by), (true, Some(SetBy::Budget)));
}

#[tokio::test]
async fn spend_survives_a_redis_that_lost_its_data() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let state: Arc<dyn PipelineState> = Arc::new(store(&redis).await);
    let now = jiff::Timestamp::now();
    let mut p = pipeline(100.0);
    spend(&s, usd_to_micros(37.0)).await;
    let o = observe(&p, &state, now).await.unwrap();
    let epoch = o.epoch.clone().expect("the operator adopts an epoch");
    // What the status records (reconcile writes exactly these fields).
    p.status = Some(flashcard_operator::crd::FlashcardPipelineStatus {
        budget: flashcard_operator::crd::BudgetStatus {
            period: o.period.clone(),
            spent_micros: o.spent_micros,
            store_epoch: Some(epoch.clone()),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(o.restored_micros, None);

    // Redis restarts empty.
    let _: () = redis::cmd("FLUSHALL")
        .query_async(
            &mut redis::Client::open(redis.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(Store::budget_state(&s).await.unwrap().spend.spent_micros, 0);

    let o = observe(&p, &state, now).await.unwrap();
    assert_eq!(o.restored_micros, Some(usd_to_micros(37.0)));
    assert_eq!(o.spent_micros, usd_to_micros(37.0));
    let after = Store::budget_state(&s).await.unwrap();
    assert_eq!(after.spend.spent_micros, usd_to_micros(37.0));
    assert_eq!(after.spend.restored_micros, usd_to_micros(37.0));
    assert_ne!(after.epoch.map(|e| e.id), Some(epoch), "a new epoch");
    assert_eq!(
        after.config.limit_micros,
        usd_to_micros(100.0),
        "budget rewritten"
    );
}

#[tokio::test]
async fn connector_reads_the_url_from_the_secret_once() {
    use base64_free::encode;
    let redis = RedisServer::start();
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "default");
    let url = redis.url();
    let server = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let (req, send) = handle.next_request().await.expect("secret read");
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/study/secrets/redis");
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis", "labels": {"flashcards.dev/pipeline-secret": "true"}},
                            "data": {"url": encode(url.as_bytes())}});
        send.send_response(http::Response::new(Body::from(
            serde_json::to_vec(&secret).unwrap(),
        )));
    });
    let connector = RedisConnector::new(client);
    let p = pipeline(0.0);
    let state = connector.connect(&p).await.unwrap();
    assert_eq!(state.counts().await.unwrap().waiting, 0);
    let again = connector.connect(&p).await.unwrap();
    assert!(Arc::ptr_eq(&state, &again), "cached store reused");
    server.await.unwrap();
}

/// A mock API server that serves the Secret `study/redis` with whatever URL `url` holds at the
/// time of each read, and counts the reads.
fn secret_server(
    url: Arc<std::sync::Mutex<String>>,
) -> (kube::Client, Arc<std::sync::atomic::AtomicUsize>) {
    use base64_free::encode;
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reads.clone();
    tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        while let Some((req, send)) = handle.next_request().await {
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(req.uri().path(), "/api/v1/namespaces/study/secrets/redis");
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let current = url.lock().unwrap().clone();
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis", "labels": {"flashcards.dev/pipeline-secret": "true"}},
                                "data": {"url": encode(current.as_bytes())}});
            send.send_response(http::Response::new(Body::from(
                serde_json::to_vec(&secret).unwrap(),
            )));
        }
    });
    (kube::Client::new(service, "default"), reads)
}

fn reads(counter: &std::sync::atomic::AtomicUsize) -> usize {
    counter.load(std::sync::atomic::Ordering::SeqCst)
}

/// Idle API load: one Secret read per TTL (300 s in production, 0.2 requests a minute), and a
/// re-read after the TTL keeps the working store when the URL did not change.
#[tokio::test]
async fn connector_reads_the_secret_once_per_ttl_and_keeps_a_working_store() {
    use flashcard_operator::connector::{SECRET_TTL, SecretTiming};
    assert_eq!(SECRET_TTL, Duration::from_secs(300));
    let redis = RedisServer::start();
    let (client, counter) = secret_server(Arc::new(std::sync::Mutex::new(redis.url())));
    let ttl = Duration::from_millis(300);
    let connector = RedisConnector::with_timing(
        client,
        SecretTiming {
            ttl,
            retry: Duration::from_millis(100),
        },
    );
    let p = pipeline(0.0);
    let state = connector.connect(&p).await.unwrap();
    for _ in 0..20 {
        let again = connector.connect(&p).await.unwrap();
        assert!(Arc::ptr_eq(&state, &again));
    }
    assert_eq!(reads(&counter), 1, "within the TTL: no API request");
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let after = connector.connect(&p).await.unwrap();
    assert_eq!(reads(&counter), 2);
    assert!(Arc::ptr_eq(&state, &after), "same URL: the store is kept");
}

/// A rotated password: the Redis refuses the old one, the reconciler reports the failure, and
/// the next connect reads the Secret at once and connects with the new URL.
#[tokio::test]
async fn connector_picks_up_a_rotated_password_at_once() {
    use flashcard_operator::connector::SecretTiming;
    let redis = RedisServer::start();
    let admin = |password: Option<&str>| {
        let url = match password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/", redis.port),
            None => redis.url(),
        };
        redis::Client::open(url).unwrap()
    };
    let mut conn = admin(None)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("old-secret")
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = Arc::new(std::sync::Mutex::new(format!(
        "redis://:old-secret@127.0.0.1:{}/",
        redis.port
    )));
    let (client, counter) = secret_server(url.clone());
    let retry = Duration::from_millis(100);
    let connector = RedisConnector::with_timing(
        client,
        SecretTiming {
            ttl: Duration::from_secs(300),
            retry,
        },
    );
    let p = pipeline(0.0);
    let state = connector.connect(&p).await.unwrap();
    state.counts().await.unwrap();
    tokio::time::sleep(retry + Duration::from_millis(50)).await;

    // Rotation: a new password in Redis and in the Secret; old connections are dropped.
    let mut conn = admin(Some("old-secret"))
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("new-secret")
        .query_async(&mut conn)
        .await
        .unwrap();
    *url.lock().unwrap() = format!("redis://:new-secret@127.0.0.1:{}/", redis.port);
    let _: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut conn)
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.counts().await.is_ok() {
        assert!(Instant::now() < deadline, "the old password keeps working");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Within the TTL and without a report the cached store is handed out: no API request.
    let cached = connector.connect(&p).await.unwrap();
    assert!(Arc::ptr_eq(&state, &cached));
    assert_eq!(reads(&counter), 1);

    connector.report_failure(&p).await;
    let fresh = connector.connect(&p).await.unwrap();
    assert_eq!(reads(&counter), 2, "the Secret was read again at once");
    assert!(!Arc::ptr_eq(&state, &fresh), "a new store on the new URL");
    assert_eq!(fresh.counts().await.unwrap().waiting, 0);
}

/// While the Redis cannot be reached the Secret is read at most once per retry interval (30 s
/// in production: at most two API requests a minute during an outage).
#[tokio::test]
async fn connector_bounds_secret_reads_while_redis_is_down() {
    use flashcard_operator::connector::SecretTiming;
    let port = flashcard_test_support::free_port();
    let (client, counter) = secret_server(Arc::new(std::sync::Mutex::new(format!(
        "redis://127.0.0.1:{port}/"
    ))));
    let retry = Duration::from_millis(300);
    let connector = RedisConnector::with_timing(
        client,
        SecretTiming {
            ttl: Duration::from_secs(300),
            retry,
        },
    );
    let p = pipeline(0.0);
    for _ in 0..5 {
        assert!(connector.connect(&p).await.is_err());
    }
    assert_eq!(
        reads(&counter),
        1,
        "refused connections retry the cached URL"
    );
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    assert!(connector.connect(&p).await.is_err());
    assert_eq!(reads(&counter), 2);
}

/// The follower on a real Redis: a job submitted to the empty queue reaches the controller's
/// trigger as a reconcile request for that pipeline; a second job while the first waits does
/// not (the queue is not empty); after the queue drained, the next job does again.
#[tokio::test]
async fn a_job_for_an_empty_queue_reaches_the_controller_trigger() {
    use flashcard_operator::follow::{Followers, MIN_TRIGGER_INTERVAL};
    use futures::StreamExt;
    use kube::runtime::reflector::ObjectRef;
    let redis = RedisServer::start();
    let s: Arc<dyn PipelineState> = Arc::new(store(&redis).await);
    let followers = Followers::default();
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    followers.set_trigger(Some(tx));
    let p = pipeline(0.0);
    followers.ensure("study/biology", ObjectRef::from_obj(&p), &s);
    // Let the follower subscribe (its XREAD starts after the stream's newest entry).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let direct = store(&redis).await;
    let t0 = Instant::now();
    submit(&direct, 1).await;
    let got = tokio::time::timeout(Duration::from_secs(2), rx.next())
        .await
        .expect("a reconcile request within 2 s")
        .unwrap();
    let latency = t0.elapsed();
    assert_eq!(got, ObjectRef::from_obj(&p));
    submit(&direct, 2).await;
    assert!(
        tokio::time::timeout(MIN_TRIGGER_INTERVAL * 2, rx.next())
            .await
            .is_err(),
        "a job for a queue that already waits signals nothing"
    );
    while !Store::claim(&direct, &claim_request())
        .await
        .unwrap()
        .jobs
        .is_empty()
    {}
    submit(&direct, 3).await;
    tokio::time::timeout(Duration::from_secs(2), rx.next())
        .await
        .expect("the drained queue signals again")
        .unwrap();
    eprintln!("submit -> reconcile request through Redis: {latency:?}");
    followers.stop("study/biology");
    assert!(followers.is_empty());
}

/// Standard base64 (the Secret's `data` encoding), to avoid a dependency for one test.
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn known_vectors() {
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(encode(b"foob"), "Zm9vYg==");
    }
}

/// A mock API server serving the Secret `redis` of any namespace, with the URL `url_of` gives
/// for that namespace.
fn secrets_by_namespace(url_of: impl Fn(&str) -> String + Send + 'static) -> kube::Client {
    use base64_free::encode;
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            let ns = path
                .strip_prefix("/api/v1/namespaces/")
                .and_then(|p| p.strip_suffix("/secrets/redis"))
                .unwrap_or_else(|| panic!("unexpected request {path}"));
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis", "labels": {"flashcards.dev/pipeline-secret": "true"}},
                                "data": {"url": encode(url_of(ns).as_bytes())}});
            send.send_response(http::Response::new(Body::from(
                serde_json::to_vec(&secret).unwrap(),
            )));
        }
    });
    kube::Client::new(service, "default")
}

/// A TCP server that accepts every connection and never answers (a hung Redis, a half-open
/// proxy); the sockets stay open until the test ends.
async fn black_hole() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

fn pipeline_in(ns: &str) -> FlashcardPipeline {
    let mut p = pipeline(0.0);
    p.metadata.namespace = Some(ns.to_owned());
    p
}

/// Six tenants whose Redis accepts TCP and never answers are connecting (each for up to the
/// connect timeout); a healthy tenant's connect and read meanwhile take what its own Redis
/// takes. Before per-pipeline slots, one lock held across every connect made it wait for all six.
#[tokio::test]
async fn black_hole_tenants_never_delay_a_healthy_one() {
    let redis = RedisServer::start();
    let hole = black_hole().await;
    let healthy_url = redis.url();
    let client = secrets_by_namespace(move |ns| {
        if ns == "study" {
            healthy_url.clone()
        } else {
            format!("redis://127.0.0.1:{hole}/")
        }
    });
    let connector = Arc::new(RedisConnector::new(client));
    let stuck: Vec<_> = (0..6)
        .map(|i| {
            let connector = connector.clone();
            tokio::spawn(async move {
                let p = pipeline_in(&format!("tenant{i}"));
                match connector.connect(&p).await {
                    Ok(store) => store.counts().await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let healthy = connector.connect(&pipeline_in("study")).await.unwrap();
    assert_eq!(healthy.counts().await.unwrap().waiting, 0);
    let took = started.elapsed();
    assert!(
        stuck.iter().all(|t| !t.is_finished()),
        "the black-hole tenants are still connecting"
    );
    assert!(
        took < Duration::from_secs(1),
        "healthy tenant waited {took:?}"
    );
    for t in stuck {
        t.abort();
    }
}

/// A Secret without the consent label: the connector refuses it, whatever URL it holds, and
/// keeps no connection.
#[tokio::test]
async fn an_unlabelled_redis_secret_is_refused() {
    use base64_free::encode;
    let redis = RedisServer::start();
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let url = redis.url();
    tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        while let Some((_, send)) = handle.next_request().await {
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis"},
                                "data": {"url": encode(url.as_bytes())}});
            send.send_response(http::Response::new(Body::from(
                serde_json::to_vec(&secret).unwrap(),
            )));
        }
    });
    let connector = RedisConnector::new(kube::Client::new(service, "default"));
    let err = connector.connect(&pipeline(0.0)).await.err().unwrap();
    assert_eq!(
        err,
        "Secret redis is not labelled flashcards.dev/pipeline-secret=true"
    );
}
