//! The holes of issue 13, each checked over HTTP against the real binary (standalone on the
//! memory store, and api + worker on a real redis-server): idempotency keys per client and bound
//! to the body, replays before the kill-switch and the rate limit, rate limits and job ownership
//! per identity mode, the tokenless admin surface, SSE stats without the token, `/metrics` while
//! Redis is down, and a draining worker that stays observable.

use std::time::{Duration, Instant};

use crate::support::{RedisServer, STUDY_TEXT, Service, http};
use flashcard_service::api::identity::hash_key_hex;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests";

fn body(user: &str) -> Value {
    json!({"content": STUDY_TEXT, "subject": "biology", "topic": "cells", "userId": user})
}

/// POSTs a job with optional `Idempotency-Key` and extra headers; returns status, replay
/// header and body.
async fn post(
    svc: &Service,
    body: &Value,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, bool, Value) {
    let mut request = http()
        .post(svc.url("/api/ai/generate-flashcards"))
        .json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn get(svc: &Service, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = http().get(svc.url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn kill_switch(svc: &Service, enabled: bool) {
    let response = http()
        .post(svc.url("/api/admin/budget/kill-switch"))
        .bearer_auth(ADMIN)
        .json(&json!({"enabled": enabled, "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn job_id(body: &Value) -> String {
    body["jobId"].as_str().expect("jobId").to_owned()
}

async fn standalone(args: &[&str]) -> Service {
    Service::start("standalone", args, &[("ADMIN_TOKEN", ADMIN)]).await
}

async fn api_on(redis: &RedisServer, args: &[&str]) -> Service {
    let url = redis.url();
    let mut all = vec!["--redis-url", url.as_str(), "--pipeline", "sec"];
    all.extend_from_slice(args);
    Service::start("api", &all, &[("ADMIN_TOKEN", ADMIN)]).await
}

async fn worker_on(redis: &RedisServer, args: &[&str]) -> Service {
    let url = redis.url();
    let mut all = vec!["--redis-url", url.as_str(), "--pipeline", "sec"];
    all.extend_from_slice(args);
    Service::start("worker", &all, &[]).await
}

/// The idempotency checks that must hold on every store.
async fn idempotency_holes(svc: &Service) {
    // `"{userId}:{key}"` used to be the stored key: victim + "x:k1" met victim:x + "k1".
    let (s1, r1, a) = post(svc, &body("victim"), Some("x:k1"), &[]).await;
    let (s2, r2, b) = post(svc, &body("victim:x"), Some("k1"), &[]).await;
    assert_eq!((s1, r1, s2, r2), (202, false, 202, false), "{a} {b}");
    assert_ne!(job_id(&a), job_id(&b), "two clients, two jobs");
    // The same client and key again: the first job, marked as a replay.
    let (s3, r3, c) = post(svc, &body("victim"), Some("x:k1"), &[]).await;
    assert_eq!((s3, r3), (202, true), "{c}");
    assert_eq!(job_id(&c), job_id(&a));
    // The same key with another body: refused, nothing queued.
    let mut other = body("victim");
    other["topic"] = json!("membranes");
    let (s4, _, d) = post(svc, &other, Some("x:k1"), &[]).await;
    assert_eq!(s4, 422, "{d}");
    assert_eq!(d["code"], "IDEMPOTENCY_KEY_REUSED");
    // A key with a space is refused (the error says visible ASCII).
    let (s5, _, e) = post(svc, &body("victim"), Some("has space"), &[]).await;
    assert_eq!(
        (s5, e["code"].as_str()),
        (400, Some("INVALID_IDEMPOTENCY_KEY"))
    );

    // A retry of an accepted POST is answered before the kill-switch: still 202.
    let (s6, _, f) = post(svc, &body("retrier"), Some("retry-1"), &[]).await;
    assert_eq!(s6, 202, "{f}");
    kill_switch(svc, true).await;
    let (s7, r7, g) = post(svc, &body("retrier"), Some("retry-1"), &[]).await;
    assert_eq!(
        (s7, r7),
        (202, true),
        "replayed although the switch is on: {g}"
    );
    assert_eq!(job_id(&g), job_id(&f));
    let (s8, _, h) = post(svc, &body("retrier"), Some("retry-2"), &[]).await;
    assert_eq!(
        (s8, h["code"].as_str()),
        (429, Some("BUDGET_LIMIT_EXCEEDED"))
    );
    kill_switch(svc, false).await;
}

#[tokio::test]
async fn idempotency_keys_are_per_client_bound_to_the_body_and_replayed_first_on_memory() {
    let svc = standalone(&["--rate-limit-jobs", "0"]).await;
    idempotency_holes(&svc).await;
}

#[tokio::test]
async fn idempotency_keys_are_per_client_bound_to_the_body_and_replayed_first_on_redis() {
    let redis = RedisServer::start();
    let svc = api_on(&redis, &["--rate-limit-jobs", "0"]).await;
    idempotency_holes(&svc).await;
}

#[tokio::test]
async fn a_retry_is_replayed_before_the_rate_limit() {
    let svc = standalone(&[
        "--rate-limit-jobs",
        "1",
        "--rate-limit-window-seconds",
        "600",
    ])
    .await;
    let (s1, _, a) = post(&svc, &body("u"), Some("once"), &[]).await;
    assert_eq!(s1, 202);
    let (s2, r2, b) = post(&svc, &body("u"), Some("once"), &[]).await;
    assert_eq!(
        (s2, r2),
        (202, true),
        "a retry does not count against the limit: {b}"
    );
    assert_eq!(job_id(&a), job_id(&b));
    let (s3, _, c) = post(&svc, &body("u"), Some("twice"), &[]).await;
    assert_eq!((s3, c["code"].as_str()), (429, Some("RATE_LIMITED")));
}

fn keys_file(entries: &[(&str, &str)]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "fc-api-keys-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let text: String = entries
        .iter()
        .map(|(key, principal)| format!("{} {principal}\n", hash_key_hex(key)))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn api_key_mode_limits_per_principal_and_serves_jobs_only_to_their_owner() {
    let redis = RedisServer::start();
    let keys = keys_file(&[("key-alice", "alice"), ("key-mallory", "mallory")]);
    let keys_arg = keys.display().to_string();
    let svc = api_on(
        &redis,
        &[
            "--client-identity",
            "api-key",
            "--api-keys-file",
            &keys_arg,
            "--rate-limit-jobs",
            "2",
            "--rate-limit-window-seconds",
            "600",
        ],
    )
    .await;
    let alice = [("x-api-key", "key-alice")];
    let mallory = [("authorization", "Bearer key-mallory")];

    // No key, or an unknown one: 401.
    let (s, _, e) = post(&svc, &body("x"), None, &[]).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let (s, _, e) = post(&svc, &body("x"), None, &[("x-api-key", "nope")]).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("INVALID_API_KEY")));

    // Mallory varies userId (and claims alice's): the limit counts her key, not the body.
    let mut statuses = Vec::new();
    for user in ["alice", "m1", "m2", "m3"] {
        statuses.push(post(&svc, &body(user), None, &mallory).await.0);
    }
    assert_eq!(
        statuses,
        [202, 202, 429, 429],
        "varying userId does not bypass it"
    );
    // ...and has not locked alice out, whose id she used.
    let (s, _, job) = post(&svc, &body("alice"), None, &alice).await;
    assert_eq!(s, 202, "{job}");
    // The userId is optional with a key: the principal stands in.
    let (s, _, _) = post(
        &svc,
        &json!({"content": STUDY_TEXT, "subject": "s", "topic": "t"}),
        None,
        &alice,
    )
    .await;
    assert_eq!(s, 202);

    // Ownership: alice's job is hers alone; anyone else gets 404, as for an unknown job.
    let id = job_id(&job);
    let status_path = format!("/api/job-status/{id}");
    let events_path = format!("/api/job-events?jobId={id}");
    assert_eq!(get(&svc, &status_path, &alice).await.0, 200);
    let (s, e) = get(&svc, &status_path, &mallory).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("JOB_NOT_FOUND")));
    let (s, e) = get(&svc, &events_path, &mallory).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("JOB_NOT_FOUND")));
    assert_eq!(get(&svc, &status_path, &[]).await.0, 401);
    let events = http()
        .get(svc.url(&events_path))
        .header("x-api-key", "key-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200, "the owner follows her job");
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let _ = std::fs::remove_file(keys);
}

#[tokio::test]
async fn proxy_mode_trusts_the_identity_header_only_from_trusted_proxies() {
    // The test client connects from 127.0.0.1: a trusted proxy here.
    let svc = standalone(&[
        "--client-identity",
        "proxy",
        "--trusted-proxies",
        "127.0.0.1",
        "--rate-limit-jobs",
        "2",
        "--rate-limit-window-seconds",
        "600",
    ])
    .await;
    let carol = [("x-forwarded-user", "carol")];
    let dave = [("x-forwarded-user", "dave")];
    let mut statuses = Vec::new();
    for user in ["a", "b", "c"] {
        statuses.push(post(&svc, &body(user), None, &carol).await.0);
    }
    assert_eq!(statuses, [202, 202, 429], "counted per header identity");
    let (s, _, job) = post(&svc, &body("carol"), None, &dave).await;
    assert_eq!(s, 202, "{job}");
    let status_path = format!("/api/job-status/{}", job_id(&job));
    assert_eq!(get(&svc, &status_path, &dave).await.0, 200);
    assert_eq!(get(&svc, &status_path, &carol).await.0, 404, "not carol's");
    assert_eq!(get(&svc, &status_path, &[]).await.0, 404, "nor anonymous");
    // Without the header, the client address from X-Forwarded-For (behind a trusted proxy).
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let mut statuses = Vec::new();
    for ip in ["203.0.113.1", "203.0.113.1", "203.0.113.1", "203.0.113.2"] {
        statuses.push(post(&svc, &body("anon"), None, &from(ip)).await.0);
    }
    assert_eq!(statuses, [202, 202, 429, 202], "per forwarded address");

    // The same requests to a server that does not trust 127.0.0.1: the header and
    // X-Forwarded-For are the client's own words and count for nothing.
    let untrusting = standalone(&[
        "--client-identity",
        "proxy",
        "--trusted-proxies",
        "10.0.0.0/8",
        "--rate-limit-jobs",
        "2",
        "--rate-limit-window-seconds",
        "600",
    ])
    .await;
    let mut statuses = Vec::new();
    for (user, ip) in [
        ("u1", "198.51.100.1"),
        ("u2", "198.51.100.2"),
        ("u3", "198.51.100.3"),
    ] {
        statuses.push(
            post(
                &untrusting,
                &body(user),
                None,
                &[("x-forwarded-user", user), ("x-forwarded-for", ip)],
            )
            .await
            .0,
        );
    }
    assert_eq!(statuses, [202, 202, 429], "one peer address, one limit");
}

/// Anonymous clients (no trusted identity header) behind one address, as behind a NAT: each
/// job belongs to an owner token, so they cannot read each other's jobs, while the rate limit
/// still counts their shared address.
#[tokio::test]
async fn anonymous_clients_behind_one_address_own_their_jobs_by_token() {
    let svc = standalone(&[
        "--client-identity",
        "proxy",
        "--trusted-proxies",
        "10.0.0.0/8",
        "--rate-limit-jobs",
        "3",
        "--rate-limit-window-seconds",
        "600",
    ])
    .await;
    let (s, _, first) = post(&svc, &body("alice"), None, &[]).await;
    assert_eq!(s, 202, "{first}");
    let alice = first["ownerToken"]
        .as_str()
        .expect("a token for an anonymous client");
    assert_eq!(alice.len(), 32);
    let (_, _, other) = post(&svc, &body("bob"), None, &[]).await;
    let bob = other["ownerToken"].as_str().unwrap();
    assert_ne!(alice, bob);
    let status_path = format!("/api/job-status/{}", job_id(&first));
    assert_eq!(
        get(&svc, &status_path, &[("x-owner-token", alice)]).await.0,
        200
    );
    assert_eq!(
        get(&svc, &status_path, &[("x-owner-token", bob)]).await.0,
        404,
        "not bob's"
    );
    assert_eq!(
        get(&svc, &status_path, &[]).await.0,
        404,
        "nor the address's"
    );
    let (s, err) = get(&svc, &status_path, &[("x-owner-token", "short")]).await;
    assert_eq!(
        (s, err["code"].as_str()),
        (400, Some("INVALID_OWNER_TOKEN"))
    );
    // EventSource cannot send headers: the token in the query.
    let events = |token: &str| {
        svc.url(&format!(
            "/api/job-events?jobId={}&ownerToken={token}",
            job_id(&first)
        ))
    };
    let stream = http().get(events(alice)).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);
    assert_eq!(http().get(events(bob)).send().await.unwrap().status(), 404);
    // A client that sends its token keeps its jobs together.
    let (s, _, again) = post(&svc, &body("alice"), None, &[("x-owner-token", alice)]).await;
    assert_eq!((s, again["ownerToken"].as_str()), (202, Some(alice)));
    // New tokens do not buy new rate-limit slots: the address's limit (3) is spent.
    let (s, _, _) = post(&svc, &body("mallory"), None, &[]).await;
    assert_eq!(s, 429);
}

#[tokio::test]
async fn tokenless_loopback_admin_refuses_cross_site_form_posts() {
    // Standalone on loopback without a token: admin is open for local development.
    let svc = Service::start("standalone", &[], &[]).await;
    let on = r#"{"enabled": true, "reason": "csrf"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = http()
            .post(svc.url("/api/admin/budget/kill-switch"))
            .body(on);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "UNSUPPORTED_MEDIA_TYPE");
    }
    let (status, budget) = get(&svc, "/api/admin/budget/status", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        budget["killSwitch"]["enabled"], false,
        "the switch stayed off"
    );
    let (s, _, _) = post(&svc, &body("u"), None, &[]).await;
    assert_eq!(s, 202, "jobs still accepted");
    // The JSON a page cannot send cross-site without a preflight still works.
    let response = http()
        .post(svc.url("/api/admin/budget/kill-switch"))
        .header("content-type", "application/json")
        .body(on)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive_and_sse_stats_hide_job_ids_without_the_token() {
    let svc = standalone(&[]).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, _) = get(
            &svc,
            "/api/admin/budget/status",
            &[("authorization", &format!("{scheme} {ADMIN}"))],
        )
        .await;
        assert_eq!(status, 200, "{scheme}");
    }
    let (status, e) = get(
        &svc,
        "/api/admin/budget/status",
        &[("authorization", "Basic YWRtaW46eA==")],
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (401, Some("UNAUTHORIZED")));

    // Follow a job that stays open for a while (a slow provider).
    let svc_slow = standalone(&["--simulated-latency-ms", "4000"]).await;
    let (_, _, slow_job) = post(&svc_slow, &body("follower"), None, &[]).await;
    let slow_id = job_id(&slow_job);
    let stream = http()
        .get(svc_slow.url(&format!("/api/job-events?jobId={slow_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, public) = get(&svc_slow, "/api/sse/stats", &[]).await;
        if public["connections"].as_u64() == Some(1) {
            assert!(
                public.get("subscriptionsPerJob").is_none(),
                "no job ids without the token: {public}"
            );
            assert!(!public.to_string().contains(&slow_id));
            break;
        }
        assert!(Instant::now() < deadline, "stream not counted: {public}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, private) = get(
        &svc_slow,
        "/api/sse/stats",
        &[("authorization", &format!("bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(private["subscriptionsPerJob"][&slow_id], 1, "{private}");
    drop(stream);
}

#[tokio::test]
async fn metrics_answer_while_redis_is_down() {
    let redis = RedisServer::start();
    let svc = api_on(&redis, &[]).await;
    let scrape = || async {
        let response = http()
            .get(svc.url("/metrics"))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, text) = scrape().await;
    assert_eq!(status, 200);
    let up = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("flashcards_store_up{"))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    assert_eq!(up(&text).as_deref(), Some("1"), "{text}");
    redis.stop();
    let (status, text) = scrape().await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(up(&text).as_deref(), Some("0"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("flashcards_http_requests_total")),
        "HTTP metrics stay visible: {text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("flashcards_queue_jobs{")),
        "store-derived gauges are left out while the store is down"
    );
    assert_eq!(get(&svc, "/healthz", &[]).await.0, 200);
}

#[tokio::test]
async fn a_draining_worker_keeps_serving_metrics_and_health() {
    let redis = RedisServer::start();
    let api = api_on(&redis, &["--rate-limit-jobs", "0"]).await;
    let mut worker = worker_on(
        &redis,
        &[
            "--simulated-latency-ms",
            "4000",
            "--shutdown-grace-seconds",
            "30",
        ],
    )
    .await;
    let (s, _, job) = post(&api, &body("drain"), None, &[]).await;
    assert_eq!(s, 202);
    let id = job_id(&job);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&api, &format!("/api/job-status/{id}"), &[]).await.1["status"] != "active" {
        assert!(Instant::now() < deadline, "the job never became active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = worker.child.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // While the job runs out its ~4 s, the worker answers probes and scrapes.
    let mut answered = 0;
    let drain_started = Instant::now();
    while drain_started.elapsed() < Duration::from_secs(2) {
        assert!(
            worker.child.0.try_wait().unwrap().is_none(),
            "exited before its job finished"
        );
        let health = http().get(worker.url("/healthz")).send().await;
        let metrics = http().get(worker.url("/metrics")).send().await;
        assert_eq!(health.expect("healthz while draining").status(), 200);
        let metrics = metrics.expect("metrics while draining");
        assert_eq!(metrics.status(), 200);
        assert!(
            metrics
                .text()
                .await
                .unwrap()
                .contains("flashcards_store_up")
        );
        answered += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered >= 5);
    // Then it finishes the job and exits, and the HTTP server with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.child.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the worker did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = api.wait_finished(&id, Duration::from_secs(5)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        http().get(worker.url("/healthz")).send().await.is_err(),
        "the server stopped with the worker"
    );
}
