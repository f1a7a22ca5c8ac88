//! `POST /api/ai/generate-flashcards/batch` on a real `standalone` process and `redis-server`:
//! items are answered one by one in order (a bad item or a rate-limited one costs that item
//! only), accepted items run to completion, an item's `idempotencyKey` replays its job on a
//! retry of the batch, and a malformed batch is refused as a whole.

use std::time::Duration;

use crate::support::{RedisServer, STUDY_TEXT, Service, http};
use serde_json::{Value, json};

const RATE_LIMIT: usize = 8;

fn item(user: &str) -> Value {
    json!({"content": STUDY_TEXT, "subject": "biology", "topic": "cells", "userId": user,
        "cardCount": 2})
}

async fn batch(api: &Service, body: &Value) -> (u16, Value) {
    let response = http()
        .post(api.url("/api/ai/generate-flashcards/batch"))
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_item_by_item() {
    let redis = RedisServer::start();
    let url = redis.url();
    let limit = RATE_LIMIT.to_string();
    let api = Service::start(
        "standalone",
        &["--redis-url", &url, "--rate-limit-jobs", &limit],
        &[],
    )
    .await;

    let mut keyed = item("student-1");
    keyed["idempotencyKey"] = json!("chapter-1");
    let mut bad_key = item("student-4");
    bad_key["idempotencyKey"] = json!(7);
    let body = json!({"items": [
        keyed,
        item("student-2"),
        item("student-3"),
        {"subject": "biology", "topic": "cells", "userId": "student-5"},
        bad_key,
    ]});
    let (code, answer) = batch(&api, &body).await;
    assert_eq!(code, 207, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(3), Some(2))
    );
    let items = answer["items"].as_array().unwrap();
    let indexes: Vec<u64> = items.iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4], "in the request's order");
    for i in &items[..3] {
        assert_eq!(i["status"], 202);
        assert_eq!(i["jobStatus"], "waiting");
        let id = i["jobId"].as_str().unwrap();
        assert_eq!(i["eventsUrl"], format!("/api/job-events?jobId={id}"));
    }
    assert_eq!(
        (items[3]["status"].as_u64(), items[3]["code"].as_str()),
        (Some(400), Some("VALIDATION_ERROR"))
    );
    assert_eq!(items[3]["details"][0]["field"], "content");
    assert_eq!(items[4]["code"], "INVALID_IDEMPOTENCY_KEY");

    // Every accepted item runs.
    let ids: Vec<String> = items[..3]
        .iter()
        .map(|i| i["jobId"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        let finished = api.wait_finished(id, Duration::from_secs(20)).await;
        assert_eq!(finished["status"], "completed", "job {id}");
    }

    // The same batch again: the keyed item replays its job, the others are new jobs.
    let (_, again) = batch(&api, &body).await;
    let again = again["items"].as_array().unwrap().clone();
    assert_eq!(again[0]["jobId"].as_str(), Some(ids[0].as_str()));
    assert_eq!(
        (
            again[0]["replayed"].as_bool(),
            again[0]["jobStatus"].as_str()
        ),
        (Some(true), Some("completed"))
    );
    assert_ne!(again[1]["jobId"].as_str(), Some(ids[1].as_str()));

    // One client's burst: the rate limit refuses the items past it, with their own answer.
    let burst: Vec<Value> = (0..RATE_LIMIT + 2).map(|_| item("burst")).collect();
    let (code, answer) = batch(&api, &json!({"items": burst})).await;
    assert_eq!(code, 207);
    let limited: Vec<&Value> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["code"] == "RATE_LIMITED")
        .collect();
    assert_eq!(limited.len(), 2, "{answer}");
    assert!(
        limited
            .iter()
            .all(|i| i["status"] == 429 && i["retryAfter"].as_u64() > Some(0))
    );
    assert_eq!(answer["accepted"], RATE_LIMIT);

    // A batch that is not one: refused whole, nothing queued.
    let too_many: Vec<Value> = (0..101).map(|n| item(&format!("s{n}"))).collect();
    for bad in [
        json!({"items": too_many}),
        json!({"items": []}),
        json!({"jobs": []}),
        json!([1]),
    ] {
        let (code, answer) = batch(&api, &bad).await;
        assert_eq!(
            (code, answer["code"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{bad}"
        );
        assert_eq!(answer["details"][0]["field"], "items");
    }
    let response = http()
        .post(api.url("/api/ai/generate-flashcards/batch"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let all_jobs = api.get_json("/api/queue/stats").await;
    let stats = &all_jobs["stats"];
    let total = ["waiting", "active", "delayed", "completed", "failed"]
        .iter()
        .map(|k| stats[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(total, 3 + 2 + RATE_LIMIT as u64, "{stats}");
}
