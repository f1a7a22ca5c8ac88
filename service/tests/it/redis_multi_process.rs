//! api and worker as separate processes sharing one real redis-server: the queue survives a
//! `kill -9` of a worker, SSE events cross processes, and the alert scenario of the seed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{RedisServer, STUDY_TEXT, Service, http, read_sse};
use flashcard_core::keyspace::PipelineId;
use flashcard_store::Store;
use flashcard_store::redis::RedisStore;
use serde_json::{Value, json};

const PIPELINE: &str = "it";

async fn api(redis: &RedisServer, extra: &[&str]) -> Service {
    let url = redis.url();
    let mut args = vec![
        "--redis-url",
        url.as_str(),
        "--pipeline",
        PIPELINE,
        "--rate-limit-jobs",
        "0",
    ];
    args.extend_from_slice(extra);
    Service::start("api", &args, &[]).await
}

async fn worker(redis: &RedisServer, extra: &[&str]) -> Service {
    let url = redis.url();
    let mut args = vec!["--redis-url", url.as_str(), "--pipeline", PIPELINE];
    args.extend_from_slice(extra);
    Service::start("worker", &args, &[]).await
}

async fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::connect(&redis.url(), &PipelineId::new(None, PIPELINE).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn api_and_worker_modes_need_redis() {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_flashcard-service"))
        .args(["api", "--listen", "127.0.0.1:0"])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("needs Redis"));
    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_flashcard-service"))
        .args([
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            "redis://127.0.0.1:1/",
        ])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach Redis"));
}

#[tokio::test]
async fn two_hundred_jobs_survive_a_killed_worker_and_complete_once() {
    let redis = RedisServer::start();
    let api = api(&redis, &[]).await;
    let slow = [
        "--simulated-latency-ms",
        "150",
        "--lease-ms",
        "1500",
        "--worker-concurrency",
        "4",
    ];
    let mut victim = worker(&redis, &slow).await;
    let _survivor = worker(&redis, &slow).await;
    let started = Instant::now();
    let posts = (0..200).map(|n| {
        api.post_job(
            json!({"content": STUDY_TEXT, "subject": "s", "topic": "t", "userId": format!("u{n}")}),
        )
    });
    let mut ids = Vec::new();
    for response in futures::future::join_all(posts).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 202);
        ids.push(
            response.json::<Value>().await.unwrap()["jobId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Let the victim take jobs, then kill it without warning while it holds some.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let store = store(&redis).await;
    assert!(store.counts().await.unwrap().active > 0);
    victim.child.0.kill().unwrap();
    let _ = victim.child.0.wait();
    for id in &ids {
        let done = api.wait_finished(id, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let elapsed = started.elapsed();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.failed,
            counts.active,
            counts.waiting
        ),
        (200, 0, 0, 0)
    );
    let mut stalled = 0;
    for id in &ids {
        let events = store.events_after(id, 0).await.unwrap();
        let completed = events.iter().filter(|e| e.kind() == "completed").count();
        assert_eq!(completed, 1, "job {id} completed {completed} times");
        stalled += events
            .iter()
            .filter(|e| e.body()["reason"] == "stalled")
            .count();
    }
    assert!(
        stalled >= 1,
        "the killed worker's jobs were recovered through lease expiry"
    );
    println!(
        "200 jobs with 2 workers (one killed) in {elapsed:?}; {stalled} recovered after the kill"
    );
}

#[tokio::test]
async fn sse_events_cross_processes_in_order_with_resume() {
    let redis = RedisServer::start();
    let api = api(&redis, &[]).await;
    let id = api.submit(STUDY_TEXT, "sse-user").await;
    let subscribe = |last: Option<&str>| {
        let mut request = http().get(api.url(&format!("/api/job-events?jobId={id}")));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        request.send()
    };
    let first = subscribe(None).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    assert_eq!(first.headers()["x-accel-buffering"], "no");
    assert!(
        first.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-cache")
    );
    let second = subscribe(None).await.unwrap();
    let readers = [
        tokio::spawn(read_sse(first, 10, Duration::from_secs(20))),
        tokio::spawn(read_sse(second, 10, Duration::from_secs(20))),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _worker = worker(&redis, &[]).await;
    for reader in readers {
        let (events, ended) = reader.await.unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            names,
            ["connected", "active", "progress", "completed"],
            "{events:?}"
        );
        assert!(ended, "the server ends the stream after the terminal event");
        let ids: Vec<Option<&str>> = events.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(ids, [None, Some("1"), Some("2"), Some("3")]);
        assert_eq!(events[2].data["stage"], "generating");
        assert_eq!(events[2].data["cardCount"], 10);
        assert!(
            events[2].data["message"]
                .as_str()
                .unwrap()
                .contains("Generating flashcards")
        );
        let completed = &events[3].data;
        assert_eq!(completed["jobId"], id.as_str());
        assert!(completed["duration"].as_u64().is_some());
        assert!(completed["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(
            !completed["result"]["flashcards"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(events[1].data["message"], "Job is now being processed");
    }
    // Late subscriber: gets the whole history at once, and the stream ends.
    let (late, ended) = read_sse(subscribe(None).await.unwrap(), 10, Duration::from_secs(5)).await;
    let names: Vec<&str> = late.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["connected", "active", "progress", "completed"]);
    assert!(ended);
    // Resume after `progress`: exactly the missing event, no duplicate.
    let (resumed, _) = read_sse(
        subscribe(Some("2")).await.unwrap(),
        10,
        Duration::from_secs(5),
    )
    .await;
    let resumed: Vec<(&str, Option<&str>)> = resumed
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_deref()))
        .collect();
    assert_eq!(resumed, [("connected", None), ("completed", Some("3"))]);
    // Resume after the terminal event: 204 tells EventSource to stop.
    assert_eq!(subscribe(Some("3")).await.unwrap().status(), 204);
    let stats = api.get_json("/api/sse/stats").await;
    assert_eq!(stats["connections"], 0, "{stats}");
    assert!(stats["eventsSent"].as_u64().unwrap() >= 10);
}

#[tokio::test]
async fn resume_in_the_middle_of_a_running_job() {
    let redis = RedisServer::start();
    let api = api(&redis, &[]).await;
    let _worker = worker(&redis, &["--simulated-latency-ms", "1500"]).await;
    let id = api.submit(STUDY_TEXT, "resume").await;
    let url = api.url(&format!("/api/job-events?jobId={id}"));
    // First connection: read up to `progress`, then drop it mid-job.
    let (events, _) = read_sse(
        http().get(&url).send().await.unwrap(),
        3,
        Duration::from_secs(10),
    )
    .await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["connected", "active", "progress"]);
    let last = events[2].id.clone().unwrap();
    // Reconnect while the job still runs: only `completed` follows, exactly once.
    let response = http()
        .get(&url)
        .header("last-event-id", &last)
        .send()
        .await
        .unwrap();
    let (events, ended) = read_sse(response, 10, Duration::from_secs(10)).await;
    let names: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_deref()))
        .collect();
    assert_eq!(names, [("connected", None), ("completed", Some("3"))]);
    assert!(ended);
}

#[tokio::test]
async fn seed_alert_scenario_queue_depth_with_no_worker() {
    let redis = RedisServer::start();
    let api = api(&redis, &[]).await;
    let post = |n: usize| {
        http()
            .post(api.url("/api/ai/generate-flashcards"))
            .header("user-id", format!("test-{n}"))
            .json(&json!({"content": format!("test {n}"), "subject": "test", "topic": "test", "userId": format!("test-{n}")}))
            .send()
    };
    let alerts = || async {
        http()
            .get(api.url("/api/metrics/alerts"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = alerts().await;
    assert_eq!(before["alerts"]["queueDepthHigh"], false);
    for response in futures::future::join_all((0..60).map(post)).await {
        assert_eq!(response.unwrap().status(), 202);
    }
    let high = alerts().await;
    assert_eq!(high["alerts"]["queueDepthHigh"], true, "{high}");
    assert_eq!(high["alerts"]["queueDepthCritical"], false);
    assert!(high["alertsActive"].as_u64().unwrap() >= 1);
    assert_eq!(high["thresholds"]["queueDepthHigh"], 50);
    assert_eq!(high["metrics"]["queue"]["waiting"], 60);
    for response in futures::future::join_all((60..110).map(post)).await {
        assert_eq!(response.unwrap().status(), 202);
    }
    let critical = alerts().await;
    assert_eq!(critical["alerts"]["queueDepthCritical"], true, "{critical}");
    // The queue stats of the seed's runbook (`.stats.waiting`).
    let stats = api.get_json("/api/queue/stats").await;
    assert_eq!(stats["stats"]["waiting"], 110);
    assert_eq!(stats["stats"]["workers"], 0);
}

#[tokio::test]
async fn admin_endpoints_are_disabled_in_api_mode_without_token() {
    let redis = RedisServer::start();
    let api = api(&redis, &[]).await;
    let response = http()
        .get(api.url("/api/admin/budget/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "ADMIN_DISABLED"
    );
}

#[tokio::test]
async fn metrics_expose_the_whole_contract_and_pass_promtool() {
    let redis = RedisServer::start();
    let api = api(&redis, &[]).await;
    let worker = worker(&redis, &[]).await;
    let id = api.submit(STUDY_TEXT, "metrics").await;
    api.wait_finished(&id, Duration::from_secs(10)).await;
    let _ = http()
        .get(api.url(&format!("/api/job-events?jobId={id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    let mut exposed = HashMap::new();
    for svc in [&api, &worker] {
        let response = http().get(svc.url("/metrics")).send().await.unwrap();
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = response.text().await.unwrap();
        for spec in flashcard_core::metric_names::SERVICE_METRICS {
            if text.contains(&format!("\n{}", spec.name)) || text.starts_with(spec.name) {
                exposed.insert(spec.name, true);
            }
        }
        assert!(text.contains(&format!("pipeline=\"{PIPELINE}\"")));
        let check = promtool_check_metrics(&text);
        assert!(check.0, "promtool check metrics failed: {}", check.1);
    }
    let missing: Vec<&str> = flashcard_core::metric_names::SERVICE_METRICS
        .iter()
        .map(|m| m.name)
        .filter(|name| !exposed.contains_key(name))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from /metrics: {missing:?}"
    );
}

/// Runs `promtool check metrics` on an exposition; fails loudly if promtool is not installed.
fn promtool_check_metrics(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: install the Debian package `prometheus` or run .ci/test.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // promtool's lint reports style notes (exit 3 on "lint" findings in some versions); only
    // parse errors count as failures.
    (output.status.success() || !report.contains("error"), report)
}

#[tokio::test]
async fn sse_connection_limit_cleanup_and_heartbeat() {
    let redis = RedisServer::start();
    let api = api(
        &redis,
        &["--sse-max-connections", "1", "--sse-heartbeat-seconds", "1"],
    )
    .await;
    // No worker runs, so the job stays waiting and the stream stays open.
    let id = api.submit(STUDY_TEXT, "limit").await;
    let url = api.url(&format!("/api/job-events?jobId={id}"));
    let first = http().get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let refused = http().get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "TOO_MANY_CONNECTIONS"
    );
    let (events, ended) = read_sse(first, 2, Duration::from_secs(5)).await;
    assert!(!ended);
    assert_eq!(events[0].event, "connected");
    assert_eq!(events[1].event, "heartbeat");
    assert_eq!(events[1].data["connections"], 1);
    assert_eq!(events[1].data["jobId"], id.as_str());
    // read_sse dropped the connection: the server notices and frees the slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = api.get_json("/api/sse/stats").await;
        if stats["connections"] == 0 && stats["subscribedJobs"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connection not cleaned up: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http().get(&url).send().await.unwrap().status(),
        200,
        "slot is free again"
    );
}

#[tokio::test]
async fn cors_allows_configured_origins() {
    let redis = RedisServer::start();
    let api = api(&redis, &["--cors-origins", "https://app.example.org"]).await;
    let preflight = http()
        .request(
            reqwest::Method::OPTIONS,
            api.url("/api/ai/generate-flashcards"),
        )
        .header("origin", "https://app.example.org")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.org"
    );
    let other = http()
        .get(api.url("/api/queue/stats"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn sigterm_lets_running_jobs_finish_within_the_grace_period() {
    let redis = RedisServer::start();
    let api = api(&redis, &[]).await;
    let mut worker = worker(
        &redis,
        &[
            "--simulated-latency-ms",
            "1200",
            "--shutdown-grace-seconds",
            "10",
        ],
    )
    .await;
    let id = api.submit(STUDY_TEXT, "drain").await;
    let store = store(&redis).await;
    while store.counts().await.unwrap().active == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.sigterm();
    let took = worker.wait_exit(Duration::from_secs(10)).await;
    let job = api.wait_finished(&id, Duration::from_secs(1)).await;
    assert_eq!(
        job["status"], "completed",
        "the draining worker finished its job"
    );
    assert!(
        took >= Duration::from_millis(500),
        "it waited for the job ({took:?})"
    );
    assert!(
        store.workers().await.unwrap().is_empty(),
        "heartbeat removed on exit"
    );
}

#[tokio::test]
async fn sigterm_past_the_grace_period_hands_jobs_to_another_worker() {
    let redis = RedisServer::start();
    let api = api(&redis, &[]).await;
    let mut leaving = worker(
        &redis,
        &[
            "--simulated-latency-ms",
            "5000",
            "--shutdown-grace-seconds",
            "0",
        ],
    )
    .await;
    let id = api.submit(STUDY_TEXT, "handover").await;
    let store = store(&redis).await;
    while store.counts().await.unwrap().active == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    leaving.sigterm();
    let took = leaving.wait_exit(Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(3),
        "no waiting past the grace period ({took:?})"
    );
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(
        job.state.as_str(),
        "waiting",
        "released at once, not after a lease expiry"
    );
    assert_eq!(job.attempts_made, 0, "a released attempt does not count");
    let _next = worker(&redis, &[]).await;
    let done = api.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "completed");
    let kinds: Vec<String> = store
        .events_after(&id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "active",
            "progress",
            "waiting",
            "active",
            "progress",
            "completed"
        ]
    );
}

#[tokio::test]
async fn rediss_urls_connect_over_tls_and_verify_the_certificate() {
    let redis = RedisServer::start_tls();
    let url = format!("rediss://localhost:{}/", redis.port);
    let ca = redis.ca_file();
    let ca = ca.to_str().unwrap();
    // The server's certificate is checked against the trusted roots: SSL_CERT_FILE names ours.
    let args = ["--redis-url", url.as_str(), "--pipeline", PIPELINE];
    let api = Service::start("api", &args, &[("SSL_CERT_FILE", ca)]).await;
    let _worker = Service::start("worker", &args, &[("SSL_CERT_FILE", ca)]).await;
    assert_eq!(
        http()
            .get(api.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let id = api.submit(STUDY_TEXT, "tls").await;
    let done = api.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "completed");
    // Without our CA the certificate is rejected, with a clear message.
    let untrusted = std::process::Command::new(env!("CARGO_BIN_EXE_flashcard-service"))
        .args(["api", "--listen", "127.0.0.1:0", "--redis-url", &url])
        .env_remove("SSL_CERT_FILE")
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

#[tokio::test]
async fn api_and_worker_ride_out_a_redis_restart() {
    let redis = RedisServer::start();
    let port = redis.port;
    let api = api(&redis, &[]).await;
    // Jobs take 800 ms, so the last one is still running when its subscriber connects.
    let _worker = worker(
        &redis,
        &["--poll-interval-ms", "200", "--simulated-latency-ms", "800"],
    )
    .await;
    let first = api.submit(STUDY_TEXT, "before").await;
    assert_eq!(
        api.wait_finished(&first, Duration::from_secs(10)).await["status"],
        "completed"
    );

    drop(redis);
    // The pod stays ready through the outage (every probe answers 200 in well under the
    // probe's timeout) and answers 503 STORE_UNAVAILABLE with Retry-After itself. 4 s in the
    // test command; `OUTAGE_SECONDS=40` for the longer outage.
    let outage_for = std::env::var("OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let outage = Instant::now();
    let mut saw_unavailable = false;
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while outage.elapsed() < Duration::from_secs(outage_for) {
        let probed = Instant::now();
        let ready = http().get(api.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "not ready during a Redis outage");
        assert!(
            probed.elapsed() < Duration::from_secs(1),
            "{:?}",
            probed.elapsed()
        );
        slowest = slowest.max(probed.elapsed());
        probes += 1;
        saw_unavailable |= ready.json::<Value>().await.unwrap()["store"] == "unavailable";
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(saw_unavailable, "readiness never noticed the outage");
    println!("{outage_for} s outage: {probes} probes, all ready, slowest {slowest:?}");
    let refused = api
        .post_job(json!({"content": "x", "subject": "s", "topic": "t", "userId": "during"}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "STORE_UNAVAILABLE"
    );
    assert_eq!(
        http()
            .get(api.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "alive"
    );

    let _redis = RedisServer::start_on(port);
    let back = Instant::now();
    loop {
        let ready: Value = api.get_json("/readyz").await;
        if ready["store"] == "ok" {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "store never back: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New work flows again: the worker reconnected, and so did the api's event stream reader.
    let id = api.submit(STUDY_TEXT, "after").await;
    let events = http()
        .get(api.url(&format!("/api/job-events?jobId={id}")))
        .send()
        .await
        .unwrap();
    let (events, ended) = read_sse(events, 10, Duration::from_secs(20)).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.last(), Some(&"completed"), "{names:?}");
    assert!(ended);
    // The job was still running at `connected`, so `completed` came through the live feed,
    // which had to reconnect after the restart.
    assert_ne!(events[0].data["status"], "completed", "{:?}", events[0]);
}
