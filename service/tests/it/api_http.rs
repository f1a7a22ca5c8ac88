//! The HTTP API of a real `flashcard-service standalone` process: the seed's flows and bad input.

use std::time::Duration;

use crate::support::{STUDY_TEXT, Service, http};
use serde_json::{Value, json};

async fn standalone(args: &[&str]) -> Service {
    Service::start("standalone", args, &[]).await
}

#[tokio::test]
async fn seed_post_is_accepted_and_completes_with_cards_from_the_text() {
    let svc = standalone(&[]).await;
    let response = http()
        .post(svc.url("/api/ai/generate-flashcards"))
        .header("user-id", "test")
        .json(&json!({"content": STUDY_TEXT, "subject": "biology", "topic": "cells", "userId": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["jobId"].as_str().unwrap();
    assert_eq!(body["status"], "waiting");
    assert_eq!(body["statusUrl"], format!("/api/job-status/{id}"));
    assert_eq!(body["eventsUrl"], format!("/api/job-events?jobId={id}"));
    assert_eq!(location, body["statusUrl"]);
    let done = svc.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let cards = done["result"]["flashcards"].as_array().unwrap();
    assert!(cards.len() >= 5, "{done}");
    let text = serde_json::to_string(cards).unwrap().to_lowercase();
    assert!(
        text.contains("photosynthesis") || text.contains("mitochondrion"),
        "{text}"
    );
    assert!(done["result"]["tokenUsage"].as_u64().unwrap() > 0);
    assert_eq!(done["attemptsMade"], 1);
}

#[tokio::test]
async fn card_count_is_honoured() {
    let svc = standalone(&[]).await;
    let response = svc.post_job(json!({"content": STUDY_TEXT, "subject": "s", "topic": "t", "userId": "u", "cardCount": 3}))
        .await
        .unwrap();
    let id = response.json::<Value>().await.unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = svc.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(done["result"]["flashcards"].as_array().unwrap().len(), 3);
}

async fn post_raw(svc: &Service, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = http()
        .post(svc.url("/api/ai/generate-flashcards"))
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let is_json = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json");
    assert!(is_json, "error bodies are JSON");
    (status, response.json().await.unwrap())
}

/// Announces a body of `size` bytes and sends the first half megabyte: the server must answer 413
/// without waiting for the rest.
async fn post_oversized(svc: &Service, size: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", svc.port))
        .await
        .unwrap();
    let head = format!(
        "POST /api/ai/generate-flashcards HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // More than the limit, so the server stops reading and answers; it may close early.
    let _ = stream.write_all(&vec![b'a'; 512 * 1024]).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors() {
    let svc = standalone(&[]).await;
    let valid = json!({"content": "Cells are units.", "subject": "s", "topic": "t", "userId": "u"});
    let mut cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"content": "", "subject": "s", "topic": "t", "userId": "u"}),
            "VALIDATION_ERROR",
            "content",
        ),
        (
            json!({"content": "   ", "subject": "s", "topic": "t", "userId": "u"}),
            "VALIDATION_ERROR",
            "content",
        ),
        (
            json!({"subject": "s", "topic": "t", "userId": "u"}),
            "VALIDATION_ERROR",
            "content",
        ),
        (
            json!({"content": 5, "subject": "s", "topic": "t", "userId": "u"}),
            "VALIDATION_ERROR",
            "content",
        ),
        (
            json!({"content": "x", "subject": ["s"], "topic": "t", "userId": "u"}),
            "VALIDATION_ERROR",
            "subject",
        ),
        (
            json!({"content": "x", "subject": "s", "userId": "u"}),
            "VALIDATION_ERROR",
            "topic",
        ),
        (
            json!({"content": "x", "subject": "s", "topic": "t"}),
            "VALIDATION_ERROR",
            "userId",
        ),
        (
            json!({"content": "x", "subject": "s", "topic": "t", "userId": "u", "cardCount": 0}),
            "VALIDATION_ERROR",
            "cardCount",
        ),
        (
            json!({"content": "x", "subject": "s", "topic": "t", "userId": "u", "cardCount": 1000}),
            "VALIDATION_ERROR",
            "cardCount",
        ),
        (
            json!({"content": "x", "subject": "s", "topic": "t", "userId": "u", "cardCount": "3"}),
            "VALIDATION_ERROR",
            "cardCount",
        ),
        (json!(["content"]), "VALIDATION_ERROR", "body"),
    ];
    let mut too_long = valid.clone();
    too_long["content"] = json!("a".repeat(60_000));
    cases.push((too_long, "VALIDATION_ERROR", "content"));
    for (body, code, field) in cases {
        let (status, error) = post_raw(
            &svc,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 400, "{body} -> {error}");
        assert_eq!(error["code"], code, "{body}");
        assert!(error["error"].is_string());
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{body} -> {error}");
    }
    let (status, error) =
        post_raw(&svc, Some("application/json"), b"{\"content\": ".to_vec()).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("INVALID_JSON"))
    );
    let (status, error) = post_raw(&svc, Some("text/plain"), valid.to_string().into_bytes()).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (415, Some("UNSUPPORTED_MEDIA_TYPE"))
    );
    let (status, error) = post_raw(&svc, None, valid.to_string().into_bytes()).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (415, Some("UNSUPPORTED_MEDIA_TYPE"))
    );
    let (status, error) = post_oversized(&svc, 10 * 1024 * 1024).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );

    for (path, status, code) in [
        (
            "/api/job-status/generate-flashcards-nope",
            404,
            "JOB_NOT_FOUND",
        ),
        ("/api/job-status/bad%20id%7D", 400, "INVALID_JOB_ID"),
        (
            "/api/job-events?jobId=generate-flashcards-nope",
            404,
            "JOB_NOT_FOUND",
        ),
        ("/api/job-events", 400, "MISSING_JOB_ID"),
        ("/api/no-such-route", 404, "NOT_FOUND"),
    ] {
        let response = http().get(svc.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{path}");
    }
    let response = http()
        .delete(svc.url("/api/queue/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    // The process is still healthy after all of that.
    assert_eq!(
        http()
            .get(svc.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_same_job() {
    let svc = standalone(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = http()
            .post(svc.url("/api/ai/generate-flashcards"))
            .header("idempotency-key", "abc-123")
            .json(&json!({"content": STUDY_TEXT, "subject": "s", "topic": "t", "userId": "u"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        ids.push(
            response.json::<Value>().await.unwrap()["jobId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(ids[0], ids[1]);
    let stats = svc.get_json("/api/queue/stats").await;
    let s = &stats["stats"];
    assert_eq!(
        s["waiting"].as_u64().unwrap()
            + s["active"].as_u64().unwrap()
            + s["completed"].as_u64().unwrap(),
        1
    );
}

#[tokio::test]
async fn per_user_rate_limit_answers_429_with_retry_after() {
    let svc = standalone(&[
        "--rate-limit-jobs",
        "2",
        "--rate-limit-window-seconds",
        "60",
    ])
    .await;
    let post = |user: &'static str| {
        http()
            .post(svc.url("/api/ai/generate-flashcards"))
            .header("user-id", user)
            .json(&json!({"content": "Cells are units of life.", "subject": "s", "topic": "t", "userId": user}))
            .send()
    };
    assert_eq!(post("alice").await.unwrap().status(), 202);
    assert_eq!(post("alice").await.unwrap().status(), 202);
    let limited = post("alice").await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(
        limited.json::<Value>().await.unwrap()["code"],
        "RATE_LIMITED"
    );
    assert_eq!(post("bob").await.unwrap().status(), 202);
}

#[tokio::test]
async fn seed_kill_switch_scenario_with_bearer_token() {
    let svc = Service::start("standalone", &[], &[("ADMIN_TOKEN", "s3cret-token")]).await;
    let switch = |token: Option<&str>, body: &'static str| {
        let mut request = http()
            .post(svc.url("/api/admin/budget/kill-switch"))
            .body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    let on = r#"{"enabled": true, "reason": "Testing kill-switch"}"#;
    let missing = switch(None, on).await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["code"],
        "UNAUTHORIZED"
    );
    let wrong = switch(Some("s3cret-tokeN"), on).await.unwrap();
    assert_eq!(wrong.status(), 403);
    assert_eq!(wrong.json::<Value>().await.unwrap()["code"], "FORBIDDEN");
    let ok = switch(Some("s3cret-token"), on).await.unwrap();
    assert_eq!(ok.status(), 200);

    let refused = http()
        .post(svc.url("/api/ai/generate-flashcards"))
        .header("user-id", "test")
        .json(&json!({"content": "test", "subject": "test", "topic": "test", "userId": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"],
        "Service temporarily unavailable due to budget limits"
    );
    assert_eq!(body["code"], "BUDGET_LIMIT_EXCEEDED");

    let status: Value = http()
        .get(svc.url("/api/admin/budget/status"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["killSwitch"]["enabled"], true);
    assert_eq!(status["killSwitch"]["setBy"], "admin");
    assert_eq!(status["killSwitch"]["reason"], "Testing kill-switch");
    // Health and monitoring keep working while the switch is on.
    assert_eq!(
        http()
            .get(svc.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let alerts = svc.get_json("/api/metrics/alerts").await;
    assert_eq!(alerts["alerts"]["killSwitchActive"], true);

    // The seed deactivates without a content type.
    assert_eq!(
        switch(Some("s3cret-token"), r#"{"enabled": false}"#)
            .await
            .unwrap()
            .status(),
        200
    );
    let accepted = svc
        .post_job(json!({"content": "test", "subject": "test", "topic": "test", "userId": "test"}))
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let bad = switch(Some("s3cret-token"), r#"{"enabled": "yes"}"#)
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn admin_is_open_only_on_loopback_standalone_without_token() {
    let svc = standalone(&[]).await;
    let response = http()
        .get(svc.url("/api/admin/budget/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn budget_reservation_stops_overshoot_under_concurrency() {
    // At $0.50 per 1K tokens one small local job costs about $0.10 and reserves its bound, about
    // $0.64: the $3 limit holds four reservations at a time and covers about 25 jobs of 50.
    let svc = standalone(&[
        "--rate-limit-jobs",
        "0",
        "--worker-concurrency",
        "8",
        "--price-input-per-1k",
        "0.5",
        "--price-output-per-1k",
        "0.5",
        "--budget-limit-usd",
        "3.0",
    ])
    .await;
    let mut ids = Vec::new();
    let mut refused = 0;
    let posts = (0..50).map(|n| {
        svc.post_job(json!({"content": STUDY_TEXT, "subject": "s", "topic": "t", "userId": format!("u{n}"), "cardCount": 3}))
    });
    for response in futures::future::join_all(posts).await {
        let response = response.unwrap();
        match response.status().as_u16() {
            202 => ids.push(
                response.json::<Value>().await.unwrap()["jobId"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let mut completed = 0;
    let mut max_job_cost = 0;
    for id in &ids {
        let done = svc.wait_finished(id, Duration::from_secs(20)).await;
        if done["status"] == "completed" {
            completed += 1;
            max_job_cost = max_job_cost.max(done["result"]["costMicros"].as_u64().unwrap());
        } else {
            assert!(
                done["error"]
                    .as_str()
                    .unwrap()
                    .contains("BUDGET_LIMIT_EXCEEDED"),
                "{done}"
            );
        }
    }
    let status = svc.get_json("/api/admin/budget/status").await;
    let spent = status["budget"]["spentUsd"].as_f64().unwrap();
    assert!(
        (1..50).contains(&completed),
        "completed {completed}, refused {refused}"
    );
    assert!(max_job_cost > 0);
    assert!(spent <= 3.0 + max_job_cost as f64 / 1e6, "spent {spent}");
    assert!(spent >= 1.5, "the budget was used, spent {spent}");
    assert_eq!(
        status["budget"]["reservedUsd"], 0.0,
        "no reservation left behind"
    );
    assert_eq!(status["killSwitch"]["enabled"], true, "{status}");
    assert_eq!(status["killSwitch"]["setBy"], "budget");
    let after = svc
        .post_job(json!({"content": "x", "subject": "s", "topic": "t", "userId": "late"}))
        .await
        .unwrap();
    assert_eq!(after.status(), 429);
}

/// With `--operations-listen`, the operations endpoints live on their own port only, and the
/// client port serves only what clients use (so an Ingress to it exposes no operations view).
#[tokio::test]
async fn operations_endpoints_move_to_their_own_port() {
    let ops_port = crate::support::free_port();
    let ops_addr = format!("127.0.0.1:{ops_port}");
    let svc = standalone(&["--operations-listen", &ops_addr]).await;
    let ops = |path: &str| format!("http://{ops_addr}{path}");
    let status = async |url: String| http().get(url).send().await.unwrap().status().as_u16();
    crate::support::wait_http_ok(&ops("/healthz"), Duration::from_secs(10)).await;
    let id = svc.submit(STUDY_TEXT, "ops").await;
    assert_eq!(status(svc.url(&format!("/api/job-status/{id}"))).await, 200);
    assert_eq!(status(svc.url("/api/openapi.json")).await, 200);
    for path in [
        "/metrics",
        "/api/metrics/alerts",
        "/api/queue/stats",
        "/api/sse/stats",
        "/console",
    ] {
        assert_eq!(
            status(svc.url(path)).await,
            404,
            "client port serves {path}"
        );
        assert_eq!(status(ops(path)).await, 200, "operations port lacks {path}");
    }
    assert_eq!(status(ops(&format!("/api/job-status/{id}"))).await, 404);
    // Probes on both; the admin endpoints too (open here: standalone on loopback, no token).
    for path in ["/healthz", "/readyz", "/api/admin/budget/status"] {
        assert_eq!(status(svc.url(path)).await, 200, "{path}");
        assert_eq!(status(ops(path)).await, 200, "{path}");
    }
}
