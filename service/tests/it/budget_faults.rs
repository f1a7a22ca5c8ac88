//! The budget under crashes, concurrency, outages and changes, with real processes on a real
//! redis-server and a fake OpenAI-compatible provider (`crate::support::llm`) that reports usage as
//! high as the bounds allow.
//!
//! After every fault the promise is checked the same way: the reserved spend of the period
//! equals what live (active) jobs hold, and is zero when nothing runs; no job waits on a ghost
//! reservation; every accepted job ends exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::llm::FakeLlm;
use crate::support::{RedisServer, Service, free_port, http};
use flashcard_core::budget::{BudgetPeriod, Prices, usd_to_micros};
use flashcard_core::job::{JobRequest, input_bytes};
use flashcard_core::keyspace::{Keyspace, PipelineId};
use flashcard_provider::Provider;
use flashcard_provider::openai::{OpenAiConfig, OpenAiProvider};
use flashcard_store::redis::RedisStore;
use flashcard_store::{BudgetConfig, BudgetSource, Store};
use redis::AsyncCommands;
use serde_json::{Value, json};

const PIPELINE: &str = "budget";
const NAMESPACE: &str = "faults";
/// $0.01 per 1K input tokens and $0.03 per 1K output tokens.
const PRICE_IN: &str = "0.01";
const PRICE_OUT: &str = "0.03";
const CONTENT: &str = "Photosynthesis is the process by which green plants use sunlight to \
synthesize glucose from carbon dioxide and water. Chlorophyll is the green pigment that absorbs \
light energy.";

fn pipeline() -> PipelineId {
    PipelineId::new(Some(NAMESPACE), PIPELINE).unwrap()
}

fn keys() -> Keyspace {
    Keyspace::new(&pipeline())
}

async fn store(url: &str) -> RedisStore {
    RedisStore::connect(url, &pipeline()).await.unwrap()
}

fn base_args(url: &str) -> Vec<String> {
    [
        "--redis-url",
        url,
        "--pipeline",
        PIPELINE,
        "--pipeline-namespace",
        NAMESPACE,
        "--rate-limit-jobs",
        "0",
        "--price-input-per-1k",
        PRICE_IN,
        "--price-output-per-1k",
        PRICE_OUT,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const ADMIN_TOKEN: &str = "budget-faults-admin";

async fn start(mode: &str, url: &str, llm: &FakeLlm, extra: &[&str]) -> Service {
    let mut args = base_args(url);
    args.extend(llm.provider_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Service::start(mode, &args, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await
}

async fn budget_status(api: &Service) -> Value {
    let response = http()
        .get(api.url("/api/admin/budget/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn job_body(user: &str) -> Value {
    json!({"content": CONTENT, "subject": "biology", "topic": "plants", "userId": user, "cardCount": 3})
}

/// The reservation of one job of [`job_body`] under the flags above: what the worker reserves.
fn reservation() -> u64 {
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        model: "fake-model".into(),
        api_key: None,
        timeout: Duration::from_secs(1),
        reasoning_effort: None,
        reasoning_tokens: 0,
    })
    .unwrap();
    let prices = Prices {
        input_per_1k: PRICE_IN.parse().unwrap(),
        output_per_1k: PRICE_OUT.parse().unwrap(),
    };
    let request = JobRequest {
        content: CONTENT.into(),
        subject: "biology".into(),
        topic: "plants".into(),
        user_id: "u".into(),
        card_count: 3,
    };
    prices
        .pricing(provider.token_bounds())
        .reservation(input_bytes(&request), 3)
}

/// The aggregate reservation of the current period, and the sum the active jobs hold.
async fn reservations(url: &str) -> (u64, u64) {
    let ks = keys();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let period = BudgetPeriod::Monthly.current_key();
    let aggregate: Option<u64> = conn
        .hget(ks.spend(&period), "reservedMicros")
        .await
        .unwrap();
    let active: Vec<String> = conn.zrange(ks.active(), 0, -1).await.unwrap();
    let mut held = 0;
    for id in active {
        let reserved: Option<u64> = conn.hget(ks.job(&id), "reserved").await.unwrap();
        held += reserved.unwrap_or(0);
    }
    (aggregate.unwrap_or(0), held)
}

async fn assert_reservations_match(url: &str, context: &str) {
    let (aggregate, held) = reservations(url).await;
    assert_eq!(
        aggregate, held,
        "{context}: the period's reservations must equal what live jobs hold"
    );
}

async fn submit(api: &Service, user: &str) -> reqwest::Response {
    api.post_job(job_body(user)).await.unwrap()
}

async fn submit_ok(api: &Service, user: &str) -> String {
    let response = submit(api, user).await;
    assert_eq!(response.status(), 202, "submit failed");
    response.json::<Value>().await.unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn finished(api: &Service, ids: &[String], within: Duration) -> HashMap<String, Value> {
    let mut done = HashMap::new();
    for id in ids {
        let status = api.wait_finished(id, within).await;
        done.insert(id.clone(), status);
    }
    done
}

/// Each job's history has exactly one terminal event.
async fn assert_ended_once(url: &str, ids: &[String]) {
    let s = store(url).await;
    for id in ids {
        let events = s.events_after(id, 0).await.unwrap();
        let terminal = events
            .iter()
            .filter(|e| matches!(e.kind(), "completed" | "failed"))
            .count();
        assert_eq!(terminal, 1, "job {id} ended {terminal} times");
    }
}

#[tokio::test]
async fn spend_stays_within_one_reservation_of_the_limit_under_concurrency() {
    let redis = RedisServer::start();
    let url = redis.url();
    let llm = FakeLlm::start().await;
    llm.set_delay(Duration::from_millis(50));
    let api = start("api", &url, &llm, &["--budget-limit-usd", "1"]).await;
    let _worker = start("worker", &url, &llm, &["--worker-concurrency", "50"]).await;
    let reservation = reservation();
    assert!(
        reservation > 10_000,
        "a job reserves about $0.02: {reservation}"
    );

    let posts = (0..200).map(|n| api.post_job(job_body(&format!("u{n}"))));
    let mut ids = Vec::new();
    for response in futures::future::join_all(posts).await {
        let response = response.unwrap();
        // Some POSTs may already meet the budget stop.
        match response.status().as_u16() {
            202 => ids.push(
                response.json::<Value>().await.unwrap()["jobId"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ids.len() > 100, "{} accepted", ids.len());
    let done = finished(&api, &ids, Duration::from_secs(60)).await;
    let completed = done.values().filter(|j| j["status"] == "completed").count();
    let refused = done
        .values()
        .filter(|j| j["code"] == "BUDGET_LIMIT_EXCEEDED")
        .count();
    assert_eq!(
        completed + refused,
        ids.len(),
        "every job completed or was refused for budget"
    );
    let status = budget_status(&api).await;
    let spent = usd_to_micros(status["budget"]["spentUsd"].as_f64().unwrap());
    let limit = usd_to_micros(1.0);
    println!(
        "limit $1, reservation {reservation} µ$, accepted {}, completed {completed}, refused {refused}, spent {spent} µ$",
        ids.len()
    );
    assert!(
        spent <= limit + reservation,
        "spent {spent} > limit + one reservation"
    );
    // The provider reported all the bounds allow, and the bounds held.
    assert_eq!(status["budget"]["overrunUsd"], 0.0, "{status}");
    assert!(
        spent + reservation > limit,
        "the budget was used up to one reservation: {spent}"
    );
    assert!(completed > 0 && refused > 0);
    assert_eq!(
        llm.answered() as usize,
        completed,
        "no call was made for a refused job"
    );
    assert_eq!(status["killSwitch"]["enabled"], true, "{status}");
    assert_eq!(status["killSwitch"]["setBy"], "budget");
    assert_eq!(status["budget"]["reservedUsd"], 0.0);
    assert_reservations_match(&url, "after the run").await;
    let late = submit(&api, "late").await;
    assert_eq!(late.status(), 429);
    assert_eq!(
        late.json::<Value>().await.unwrap()["code"],
        "BUDGET_LIMIT_EXCEEDED"
    );
    assert_ended_once(&url, &ids).await;
}

#[tokio::test]
async fn a_provider_beyond_the_bound_is_settled_in_full_and_counted() {
    let redis = RedisServer::start();
    let url = redis.url();
    let llm = FakeLlm::start().await;
    // Three times the max_tokens the worker asked for: a provider breaking its own contract.
    llm.set_usage_percent(300);
    let api = start("api", &url, &llm, &[]).await;
    let worker = start("worker", &url, &llm, &[]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submit_ok(&api, &format!("u{n}")).await);
    }
    let done = finished(&api, &ids, Duration::from_secs(30)).await;
    assert!(
        done.values().all(|j| j["status"] == "completed"),
        "{done:?}"
    );
    let total: u64 = done
        .values()
        .map(|j| j["result"]["costMicros"].as_u64().unwrap())
        .sum();
    let status = budget_status(&api).await;
    assert_eq!(
        usd_to_micros(status["budget"]["spentUsd"].as_f64().unwrap()),
        total,
        "the real cost is settled, never hidden"
    );
    let overrun = status["budget"]["overrunUsd"].as_f64().unwrap();
    assert!(overrun > 0.0, "{status}");
    let metrics = http()
        .get(worker.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("flashcards_budget_overrun_usd_total{"))
        .expect("overrun metric");
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((value - overrun).abs() < 1e-6, "{line} vs {overrun}");
}

#[tokio::test]
async fn a_budget_change_in_the_store_reaches_every_process_within_two_seconds() {
    let redis = RedisServer::start();
    let url = redis.url();
    let llm = FakeLlm::start().await;
    let api_a = start("api", &url, &llm, &[]).await;
    let api_b = start("api", &url, &llm, &[]).await;
    let _worker = start("worker", &url, &llm, &[]).await;
    let first = submit_ok(&api_a, "a").await;
    api_a.wait_finished(&first, Duration::from_secs(20)).await;
    let s = store(&url).await;
    let spent = s.budget_state().await.unwrap().spend.spent_micros;
    assert!(spent > 0);
    let write = |limit_micros: u64| BudgetConfig {
        limit_micros,
        period: BudgetPeriod::Monthly,
        warn_percent: 80.0,
        enforce: true,
        source: BudgetSource::Operator,
    };
    // Below the spend, as the operator writes it: both apis refuse within 2 s.
    s.set_budget(&write(spent / 2)).await.unwrap();
    let changed = Instant::now();
    for api in [&api_a, &api_b] {
        wait_until("a 429", Duration::from_secs(2), async || {
            submit(api, "b").await.status() == 429
        })
        .await;
    }
    println!("lowered: both apis refuse after {:?}", changed.elapsed());
    // Raised above it: both accept again within 2 s, without a restart.
    s.set_budget(&write(spent * 100)).await.unwrap();
    let changed = Instant::now();
    for api in [&api_a, &api_b] {
        wait_until("a 202", Duration::from_secs(2), async || {
            submit(api, "c").await.status() == 202
        })
        .await;
    }
    println!("raised: both apis accept after {:?}", changed.elapsed());
    let status = budget_status(&api_b).await;
    assert_eq!(status["budget"]["source"], "operator");
    assert_eq!(status["killSwitch"]["enabled"], false);
}

#[tokio::test]
async fn kill_9_mid_call_leaves_no_ghost_reservation() {
    let redis = RedisServer::start();
    let url = redis.url();
    let llm = FakeLlm::start().await;
    llm.set_delay(Duration::from_secs(30));
    let api = start("api", &url, &llm, &["--budget-limit-usd", "10"]).await;
    let mut doomed = start(
        "worker",
        &url,
        &llm,
        &["--worker-concurrency", "5", "--lease-ms", "1500"],
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(submit_ok(&api, &format!("u{n}")).await);
    }
    wait_until("5 calls in flight", Duration::from_secs(20), async || {
        llm.in_flight() == 5
    })
    .await;
    let (aggregate, held) = reservations(&url).await;
    assert_eq!(aggregate, held);
    assert_eq!(
        aggregate,
        5 * reservation(),
        "each running job holds its reservation"
    );
    doomed.child.0.kill().unwrap();
    doomed.child.0.wait().unwrap();
    // The provider answers quickly now; a second worker recovers the dead worker's jobs.
    llm.set_delay(Duration::ZERO);
    let _rescuer = start("worker", &url, &llm, &["--lease-ms", "1500"]).await;
    let done = finished(&api, &ids, Duration::from_secs(30)).await;
    assert!(
        done.values().all(|j| j["status"] == "completed"),
        "{done:?}"
    );
    assert!(done.values().all(|j| j["attemptsMade"] == 2));
    assert_reservations_match(&url, "after recovery").await;
    assert_eq!(reservations(&url).await.0, 0, "nothing reserved when idle");
    assert_ended_once(&url, &ids).await;
    // A new job is not held back by a ghost reservation.
    let next = submit_ok(&api, "next").await;
    let job = api.wait_finished(&next, Duration::from_secs(10)).await;
    assert_eq!(job["attemptsMade"], 1);
}

#[tokio::test]
async fn grace_expiry_releases_jobs_and_their_reservations() {
    let redis = RedisServer::start();
    let url = redis.url();
    let llm = FakeLlm::start().await;
    llm.set_delay(Duration::from_secs(30));
    let api = start("api", &url, &llm, &["--budget-limit-usd", "10"]).await;
    let mut leaving = start(
        "worker",
        &url,
        &llm,
        &["--worker-concurrency", "3", "--shutdown-grace-seconds", "1"],
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submit_ok(&api, &format!("u{n}")).await);
    }
    wait_until("3 calls in flight", Duration::from_secs(20), async || {
        llm.in_flight() == 3
    })
    .await;
    let pid = leaving.child.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    while leaving.child.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "worker did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = store(&url).await;
    for id in &ids {
        let job = s.job(id).await.unwrap().unwrap();
        assert_eq!(job.state.as_str(), "waiting", "{id} released");
        assert_eq!(
            job.attempts_made, 0,
            "the interrupted attempt is not counted"
        );
    }
    assert_eq!(reservations(&url).await, (0, 0));
    llm.set_delay(Duration::ZERO);
    let _next = start("worker", &url, &llm, &[]).await;
    let done = finished(&api, &ids, Duration::from_secs(20)).await;
    assert!(done.values().all(|j| j["status"] == "completed"));
    assert_eq!(reservations(&url).await, (0, 0));
    assert_ended_once(&url, &ids).await;
}

#[tokio::test]
async fn results_reported_while_redis_restarts_are_settled_once() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("fc-budget-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let redis = RedisServer::start_persistent(port, &dir);
    let url = redis.url();
    let llm = FakeLlm::start().await;
    llm.set_delay(Duration::from_millis(1500));
    let api = start("api", &url, &llm, &[]).await;
    let _worker = start(
        "worker",
        &url,
        &llm,
        &["--worker-concurrency", "4", "--lease-ms", "20000"],
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(submit_ok(&api, &format!("u{n}")).await);
    }
    wait_until("4 calls in flight", Duration::from_secs(20), async || {
        llm.in_flight() == 4
    })
    .await;
    // Redis goes away while the calls run, so the first attempts to settle them fail.
    redis.stop();
    wait_until("the calls to end", Duration::from_secs(10), async || {
        llm.in_flight() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _redis = RedisServer::start_persistent(port, &dir);
    let done = finished(&api, &ids, Duration::from_secs(40)).await;
    assert!(
        done.values().all(|j| j["status"] == "completed"),
        "{done:?}"
    );
    assert!(
        done.values().all(|j| j["attemptsMade"] == 1),
        "settled, not redone: {done:?}"
    );
    let total: u64 = done
        .values()
        .map(|j| j["result"]["costMicros"].as_u64().unwrap())
        .sum();
    let spend = store(&url).await.budget_state().await.unwrap().spend;
    assert_eq!(spend.spent_micros, total, "each call counted exactly once");
    assert_eq!(spend.jobs, 4);
    assert_eq!(reservations(&url).await, (0, 0));
    assert_ended_once(&url, &ids).await;
    drop(_redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_sixty_second_provider_outage_makes_jobs_wait_not_fail() {
    let redis = RedisServer::start();
    let url = redis.url();
    let llm = FakeLlm::start().await;
    let api = start("api", &url, &llm, &[]).await;
    let _worker = start(
        "worker",
        &url,
        &llm,
        &[
            "--worker-concurrency",
            "8",
            "--breaker-open-seconds",
            "5",
            "--backoff-ms",
            "200",
        ],
    )
    .await;
    llm.set_down(true);
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(submit_ok(&api, &format!("u{n}")).await);
    }
    let outage = Duration::from_secs(60);
    let started = Instant::now();
    let s = store(&url).await;
    while started.elapsed() < outage {
        let counts = s.counts().await.unwrap();
        assert_eq!(counts.failed, 0, "a job failed during the outage");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refused_calls = llm.refused();
    llm.set_down(false);
    let done = finished(&api, &ids, Duration::from_secs(90)).await;
    let failed: Vec<_> = done
        .values()
        .filter(|j| j["status"] != "completed")
        .collect();
    println!(
        "outage {outage:?}: {refused_calls} calls refused by the provider, then {} completed in {:?}",
        done.len() - failed.len(),
        started.elapsed() - outage
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        refused_calls < 100,
        "the open breaker stopped the worker from hammering the provider ({refused_calls} calls)"
    );
    assert!(
        done.values()
            .all(|j| j["attemptsMade"].as_u64().unwrap() <= 3)
    );
    assert_eq!(reservations(&url).await, (0, 0));
    assert_ended_once(&url, &ids).await;
}
