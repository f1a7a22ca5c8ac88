//! The api's drain (issue 25): on SIGTERM `/readyz` fails at once while requests are still
//! served for the drain window, then each SSE stream ends with a final `retry:`, spread out,
//! and the process exits. A rolling restart of two api processes behind a balancer that
//! follows readiness (as a Service's endpoints do) under steady POST and SSE load: no POST
//! fails, no follower loses or repeats an event, and the followers resume on the other pod.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Balancer, RedisServer, STUDY_TEXT, Service, http, read_sse};
use serde_json::json;

const PIPELINE: &str = "drain";

async fn start(mode: &str, redis: &RedisServer, extra: &[&str]) -> Service {
    let url = redis.url();
    let mut args = vec!["--redis-url", url.as_str(), "--pipeline", PIPELINE];
    args.extend_from_slice(extra);
    Service::start(mode, &args, &[]).await
}

#[tokio::test]
async fn sigterm_fails_readiness_serves_the_window_then_ends_streams_with_a_retry() {
    let redis = RedisServer::start();
    let drain = ["--drain-seconds", "2", "--drain-spread-ms", "300"];
    let mut api = start(
        "api",
        &redis,
        &[&drain[..], &["--sse-retry-ms", "1234"]].concat(),
    )
    .await;
    // No worker: the stream stays open until the server ends it.
    let id = api.submit(STUDY_TEXT, "drain").await;
    let mut stream = http()
        .get(api.url(&format!("/api/job-events?jobId={id}")))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        (text, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    api.sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let ready = http().get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["code"], "DRAINING");
    // Still serving, and asking keep-alive clients to go elsewhere.
    let posted = http()
        .post(api.url("/api/ai/generate-flashcards"))
        .json(&json!({"content": STUDY_TEXT, "subject": "s", "topic": "t", "userId": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);
    assert_eq!(posted.headers()["connection"], "close");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !reader.is_finished(),
        "the stream ended inside the drain window"
    );

    api.wait_exit(Duration::from_secs(8)).await;
    let exited = signalled.elapsed();
    let (text, ended_at) = reader.await.unwrap();
    let ended = ended_at - signalled;
    assert!(
        ended >= Duration::from_secs(2),
        "stream ended after {ended:?}"
    );
    assert!(
        ended < Duration::from_millis(2900),
        "stream ended after {ended:?}"
    );
    assert!(exited < Duration::from_secs(5), "exit took {exited:?}");
    assert!(text.contains("event: connected"), "{text}");
    let last_block = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(
        last_block.contains("retry: 1234") && !last_block.contains("data:"),
        "the last block is the reconnect advice: {text}"
    );
}

/// One follower that resumes with `Last-Event-ID` whenever its stream ends early.
#[derive(Debug, Default)]
struct Followed {
    seqs: Vec<u64>,
    last_kind: String,
    resumed: u32,
}

async fn follow(balancer: Arc<Balancer>, job: String, within: Duration) -> Followed {
    let deadline = Instant::now() + within;
    let mut followed = Followed::default();
    let client = http();
    loop {
        assert!(Instant::now() < deadline, "{job} never ended: {followed:?}");
        let mut request = client.get(balancer.url(&format!("/api/job-events?jobId={job}")));
        if let Some(last) = followed.seqs.last() {
            request = request.header("last-event-id", last.to_string());
        }
        if let Ok(response) = request.send().await
            && response.status() == 200
        {
            let (events, _) = read_sse(response, usize::MAX, within).await;
            for event in events {
                if let Some(id) = event.id {
                    followed.seqs.push(id.parse().unwrap());
                }
                followed.last_kind = event.event;
            }
            if matches!(followed.last_kind.as_str(), "completed" | "failed") {
                return followed;
            }
        }
        followed.resumed += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_rolling_restart_behind_a_balancer_drops_no_post_and_no_event() {
    let redis = RedisServer::start();
    // The drain window outlasts the balancer's propagation delay (1 s) plus a probe.
    let api_args = [
        "--drain-seconds",
        "2",
        "--drain-spread-ms",
        "500",
        "--sse-retry-ms",
        "100",
        "--rate-limit-jobs",
        "0",
    ];
    let _worker = start(
        "worker",
        &redis,
        &[
            "--simulated-latency-ms",
            "1500",
            "--worker-concurrency",
            "100",
        ],
    )
    .await;
    let balancer = Arc::new(Balancer::start(Duration::from_secs(1)).await);
    let mut pods = vec![
        start("api", &redis, &api_args).await,
        start("api", &redis, &api_args).await,
    ];
    for pod in &pods {
        balancer.add(pod.port);
    }
    let wait_ready = async |balancer: &Balancer, port: u16| {
        let started = Instant::now();
        while !balancer.is_ready(port) {
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    for pod in &pods {
        wait_ready(&balancer, pod.port).await;
    }

    // Steady load: a POST every 20 ms, each job followed over SSE until it ends.
    let stop = Arc::new(AtomicBool::new(false));
    let (posted, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (balancer, stop) = (balancer.clone(), stop.clone());
        let (posted, failed) = (posted.clone(), failed.clone());
        tokio::spawn(async move {
            // A new connection per POST, like many clients each with their own: every POST is
            // a routing decision of the balancer.
            crate::support::init_tls();
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let mut followers = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({"content": STUDY_TEXT, "subject": "biology", "topic": "cells",
                                  "userId": format!("u{}", n % 20)});
                match client
                    .post(balancer.url("/api/ai/generate-flashcards"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => {
                        posted.fetch_add(1, Ordering::Relaxed);
                        let v: serde_json::Value = r.json().await.unwrap();
                        let job = v["jobId"].as_str().unwrap().to_owned();
                        followers.push(tokio::spawn(follow(
                            balancer.clone(),
                            job,
                            Duration::from_secs(40),
                        )));
                    }
                    other => {
                        eprintln!("POST failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            followers
        })
    };

    // Surge one new pod, then drain one old one, twice (maxSurge 1, maxUnavailable 0).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..2 {
        let fresh = start("api", &redis, &api_args).await;
        balancer.add(fresh.port);
        wait_ready(&balancer, fresh.port).await;
        let mut old = pods.remove(0);
        old.sigterm();
        // Left in the balancer: like a deleted pod's endpoint, it goes out only when the
        // balancer's view catches up (the propagation delay).
        old.wait_exit(Duration::from_secs(10)).await;
        pods.push(fresh);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let followers = load.await.unwrap();
    let mut resumed_followers = 0;
    let mut events = 0;
    for follower in followers {
        let f = follower.await.unwrap();
        assert_eq!(f.last_kind, "completed", "{f:?}");
        let expected: Vec<u64> = (1..=f.seqs.len() as u64).collect();
        assert_eq!(f.seqs, expected, "lost or repeated events: {f:?}");
        events += f.seqs.len();
        resumed_followers += u32::from(f.resumed > 0);
    }
    let posted = posted.load(Ordering::Relaxed);
    eprintln!(
        "rolling restart: {posted} POSTs accepted, {} failed, {events} events, \
         {resumed_followers} followers resumed on another pod",
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed POSTs");
    assert!(posted > 100, "{posted}");
    assert!(resumed_followers > 0, "no follower was moved");
}
