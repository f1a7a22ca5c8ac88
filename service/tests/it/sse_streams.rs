//! Every SSE stream ends: real api (and worker) processes on a real redis-server, with faults
//! made directly in Redis or on the wire: a job that vanishes, a `Last-Event-ID` above the job's
//! newest event, a gap in the live feed, and a feed connection that stalls (a TCP proxy that
//! stops forwarding without closing).

use std::time::{Duration, Instant};

use crate::support::{RedisServer, Service, SseEvent, TcpProxy, http, read_sse};
use flashcard_core::budget::Pricing;
use flashcard_core::keyspace::{Keyspace, PipelineId};
use flashcard_store::redis::RedisStore;
use flashcard_store::{Admission, ClaimRequest, Store, Submission};
use redis::AsyncCommands;
use serde_json::{Value, json};

const PIPELINE: &str = "streams";
const ADMIN: &str = "sse-streams-admin";

fn pipeline() -> PipelineId {
    PipelineId::new(None, PIPELINE).unwrap()
}

/// An api process with SSE heartbeats (and job re-checks) every `heartbeat` seconds.
async fn api(redis_url: &str, heartbeat: u64) -> Service {
    let heartbeat = heartbeat.to_string();
    let idle = (heartbeat.parse::<u64>().unwrap() * 3).to_string();
    let args = [
        "--redis-url",
        redis_url,
        "--pipeline",
        PIPELINE,
        "--rate-limit-jobs",
        "0",
        "--sse-heartbeat-seconds",
        &heartbeat,
        "--idle-timeout-seconds",
        &idle,
    ];
    Service::start("api", &args, &[("ADMIN_TOKEN", ADMIN)]).await
}

async fn worker(redis_url: &str) -> Service {
    let args = ["--redis-url", redis_url, "--pipeline", PIPELINE];
    Service::start("worker", &args, &[]).await
}

async fn follow(api: &Service, job: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = http().get(api.url(&format!("/api/job-events?jobId={job}")));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

fn job_events(events: &[SseEvent]) -> Vec<(&str, Option<&str>)> {
    events
        .iter()
        .filter(|e| e.event != "heartbeat" && e.event != "connected")
        .map(|e| (e.event.as_str(), e.id.as_deref()))
        .collect()
}

#[tokio::test]
async fn a_job_that_vanishes_ends_its_stream_with_job_expired() {
    let redis = RedisServer::start();
    let api = api(&redis.url(), 1).await;
    let id = api.submit("Mitochondria make ATP.", "u").await;
    let reader = tokio::spawn(read_sse(
        follow(&api, &id, None).await,
        50,
        Duration::from_secs(20),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The store loses the job (as a Redis restarted without persistence would).
    let ks = Keyspace::new(&pipeline());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = conn.del(&[ks.job(&id), ks.job_events(&id)]).await.unwrap();
    let started = Instant::now();
    let (events, ended) = reader.await.unwrap();
    assert!(ended, "the stream ends: {:?}", names(&events));
    let last = events.last().unwrap();
    assert_eq!(last.event, "failed", "{:?}", names(&events));
    assert_eq!(last.data["code"], "JOB_EXPIRED");
    assert_eq!(last.data["jobId"], id.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within a heartbeat or two"
    );
    // Reconnecting now answers 404, which stops EventSource.
    let again = http()
        .get(api.url(&format!("/api/job-events?jobId={id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn a_last_event_id_above_the_job_still_gets_the_terminal_event() {
    let redis = RedisServer::start();
    let api = api(&redis.url(), 1).await;
    let waiting = api.submit("Ribosomes build proteins.", "u1").await;
    // Running (here: waiting) job, id too high: the stream starts from the latest and follows.
    let live = tokio::spawn(read_sse(
        follow(&api, &waiting, Some("99")).await,
        50,
        Duration::from_secs(30),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _worker = worker(&redis.url()).await;
    let (events, ended) = live.await.unwrap();
    assert!(ended);
    assert_eq!(
        job_events(&events),
        [
            ("active", Some("1")),
            ("progress", Some("2")),
            ("completed", Some("3"))
        ]
    );
    // Finished job, id too high: the terminal event once more, then the end.
    let (events, ended) = read_sse(
        follow(&api, &waiting, Some("14")).await,
        50,
        Duration::from_secs(10),
    )
    .await;
    assert!(ended);
    assert_eq!(names(&events), ["connected", "completed"]);
    assert_eq!(events[1].id.as_deref(), Some("3"));
    // The exact terminal id: nothing left to send.
    let done = http()
        .get(api.url(&format!("/api/job-events?jobId={waiting}")))
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 204);
}

#[tokio::test]
async fn a_gap_in_the_live_feed_is_filled_from_the_job_s_history() {
    let redis = RedisServer::start();
    let api = api(&redis.url(), 1).await;
    let store = RedisStore::connect(&redis.url(), &pipeline())
        .await
        .unwrap();
    let request = flashcard_core::job::JobRequest {
        content: "Chlorophyll absorbs light.".into(),
        subject: "biology".into(),
        topic: "plants".into(),
        user_id: "u".into(),
        card_count: 3,
    };
    let Admission::Accepted { job_id: id } =
        store.submit(Submission::new(request, 3)).await.unwrap()
    else {
        panic!("not accepted")
    };
    let reader = tokio::spawn(read_sse(
        follow(&api, &id, None).await,
        50,
        Duration::from_secs(20),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Event 1 reaches the job's history but never the live stream (as when the stream was
    // trimmed, or the reader lagged); event 2 then arrives live, one past the next expected.
    let ks = Keyspace::new(&pipeline());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let missed = format!(
        r#"{{"seq":1,"jobId":"{id}","type":"waiting","message":"Job is back in the queue","reason":"released","timestamp":"2026-12-01T00:00:00.000Z"}}"#
    );
    let _: () = redis::pipe()
        .rpush(ks.job_events(&id), &missed)
        .hset(ks.job(&id), "eventSeq", 1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let claim = ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        worker_id: "w",
        lease: Duration::from_secs(30),
        max_jobs: 1,
        client_cap: 0,
        pricing: Pricing::default(),
        started: None,
    };
    assert_eq!(store.claim(&claim).await.unwrap().jobs.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats: Value = http()
        .get(api.url("/api/sse/stats"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    drop(api);
    let (events, _) = reader.await.unwrap();
    assert_eq!(
        job_events(&events),
        [("waiting", Some("1")), ("active", Some("2"))],
        "the missed event first, then the live one, in order"
    );
    assert!(stats["followersCaughtUp"].as_u64().unwrap() >= 1, "{stats}");
}

#[tokio::test]
async fn a_stalled_feed_connection_recovers_and_readiness_says_so_meanwhile() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port).await;
    // No heartbeat (and so no re-check of the job) within the test: the follower can only learn
    // of the job's end through the feed, once it has replaced its stalled connection. A job's
    // followers beat in one of `BEAT_PHASES` phases of the interval (the phase its id hashes
    // to), the first phase one `BEAT_PHASES`-th of the interval after the api starts: this
    // interval puts every phase past 60 s, beyond the reader's 45 s, whatever the job id.
    let heartbeat = flashcard_service::sse::hub::BEAT_PHASES as u64 * 60;
    let api = api(&proxy.url(), heartbeat).await;
    let id = api.submit("Cells divide by mitosis.", "u").await;
    let reader = tokio::spawn(read_sse(
        follow(&api, &id, None).await,
        80,
        Duration::from_secs(45),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every connection of the api stops forwarding without closing: its commands and its
    // blocking feed read hang until their deadlines.
    proxy.stall();
    let stalled = Instant::now();
    wait_status(&api.url("/readyz"), 503, Duration::from_secs(15)).await;
    println!("not ready {:?} after the stall", stalled.elapsed());
    // The worker reaches Redis directly and finishes the job meanwhile.
    let _worker = worker(&redis.url()).await;
    wait_status(&api.url("/readyz"), 200, Duration::from_secs(30)).await;
    println!("ready again {:?} after the stall", stalled.elapsed());
    let (events, ended) = reader.await.unwrap();
    println!("follower done {:?} after the stall", stalled.elapsed());
    assert!(ended, "{:?}", names(&events));
    assert!(
        !names(&events).contains(&"heartbeat"),
        "no heartbeat re-check helped"
    );
    assert_eq!(
        job_events(&events),
        [
            ("active", Some("1")),
            ("progress", Some("2")),
            ("completed", Some("3"))
        ],
        "the feed resumed from its last stream id after reconnecting"
    );
    assert!(proxy.connections() >= 3, "the api opened new connections");
    let body = json!({"content": "x", "subject": "s", "topic": "t", "userId": "after"});
    assert_eq!(api.post_job(body).await.unwrap().status(), 202);
}

async fn wait_status(url: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().as_u16() == status
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
