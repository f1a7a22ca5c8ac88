//! Tenants on one Redis: two pipelines of the same name in two namespaces, through the service's
//! own configuration (real `api` and `worker` processes started with `--pipeline shared
//! --pipeline-namespace team-a` / `team-b`, as the operator's ConfigMap sets `PIPELINE` and
//! `PIPELINE_NAMESPACE`), never share a queue, a budget or a kill-switch; a purge removes one
//! pipeline and nothing of another (on one node and on a Redis Cluster); and the README's
//! recipe that moves a pipeline's keys from the old prefix `fc:{<name>}:` to
//! `fc:{<namespace>.<name>}:` keeps its jobs, events, idempotency keys and spend.
//!
//! Needs `redis-server` and `redis-cli` on PATH; a missing binary fails the test.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{RedisCluster, RedisServer, Service, http};
use flashcard_core::budget::Pricing;
use flashcard_core::budget::{BudgetPeriod, usd_to_micros};
use flashcard_core::job::{JobRequest, new_job_id};
use flashcard_core::keyspace::{PipelineId, fingerprint, idempotency_digest};
use flashcard_store::redis::RedisStore;
use flashcard_store::{
    Admission, BudgetConfig, BudgetSource, ClaimRequest, Idempotency, KillSwitch, SetBy, Store,
    Submission,
};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "tenant-admin";

fn pipeline(namespace: Option<&str>, name: &str) -> PipelineId {
    PipelineId::new(namespace, name).unwrap()
}

async fn start(mode: &str, url: &str, namespace: &str) -> Service {
    Service::start(
        mode,
        &[
            "--redis-url",
            url,
            "--pipeline",
            "shared",
            "--pipeline-namespace",
            namespace,
            "--rate-limit-jobs",
            "0",
        ],
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await
}

async fn stats(api: &Service) -> Value {
    api.get_json("/api/queue/stats").await["stats"].clone()
}

async fn budget(api: &Service) -> Value {
    let response = http()
        .get(api.url("/api/admin/budget/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn post(api: &Service, user: &str) -> reqwest::Response {
    api.post_job(
        json!({"content": crate::support::STUDY_TEXT, "subject": "biology",
                        "topic": "cells", "userId": user}),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_named_pipelines_in_two_namespaces_have_separate_queues_and_budgets() {
    let redis = RedisServer::start();
    let url = redis.url();
    let api_a = start("api", &url, "team-a").await;
    let api_b = start("api", &url, "team-b").await;

    // Queues: jobs of team-a wait (no worker yet) and team-b's api knows nothing of them.
    let mut a_jobs = Vec::new();
    for i in 0..3 {
        a_jobs.push(
            api_a
                .submit(crate::support::STUDY_TEXT, &format!("a-{i}"))
                .await,
        );
    }
    assert_eq!(stats(&api_a).await["waiting"], 3);
    assert_eq!(stats(&api_b).await["waiting"], 0);
    let other = http()
        .get(api_b.url(&format!("/api/job-status/{}", a_jobs[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "team-b cannot see team-a's job");

    // team-b's worker runs team-b's jobs only.
    let _worker_b = start("worker", &url, "team-b").await;
    let b_job = api_b.submit(crate::support::STUDY_TEXT, "b-0").await;
    let done = api_b.wait_finished(&b_job, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (a, b) = (stats(&api_a).await, stats(&api_b).await);
    assert_eq!(
        (a["waiting"].clone(), a["completed"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(
        (b["waiting"].clone(), b["completed"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        (a["workers"].clone(), b["workers"].clone()),
        (json!(0), json!(1))
    );

    // team-a's worker drains team-a's queue.
    let _worker_a = start("worker", &url, "team-a").await;
    for id in &a_jobs {
        let done = api_a.wait_finished(id, Duration::from_secs(20)).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert_eq!(stats(&api_a).await["completed"], 3);
    assert_eq!(stats(&api_b).await["completed"], 1);

    // Budgets: the operator's budget for team-a, with its spend at the limit, switches team-a's
    // automatic stop on; team-b keeps accepting.
    let b_before = budget(&api_b).await;
    let store_a = RedisStore::connect(&url, &pipeline(Some("team-a"), "shared"))
        .await
        .unwrap();
    let limit = usd_to_micros(0.01);
    store_a
        .set_budget(&BudgetConfig {
            limit_micros: limit,
            period: BudgetPeriod::Monthly,
            warn_percent: 80.0,
            enforce: true,
            source: BudgetSource::Operator,
        })
        .await
        .unwrap();
    let period = store_a.budget_state().await.unwrap().period;
    store_a.restore_spend(&period, limit).await.unwrap();
    let refused = post(&api_a, "a-late").await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "BUDGET_LIMIT_EXCEEDED");
    let (ba, bb) = (budget(&api_a).await, budget(&api_b).await);
    assert_eq!(ba["budget"]["limitUsd"], 0.01);
    assert_eq!(ba["budget"]["spentUsd"], 0.01);
    assert_eq!(ba["budget"]["jobs"], 3, "team-a's three jobs");
    assert_eq!(ba["killSwitch"]["setBy"], "budget");
    assert_eq!(
        bb["budget"]["source"], "none",
        "team-b has no budget written: {bb}"
    );
    assert_eq!(
        bb["budget"], b_before["budget"],
        "team-b's spend is its own"
    );
    assert_eq!(bb["budget"]["jobs"], 1, "team-b's one job");
    assert_eq!(bb["killSwitch"]["enabled"], false);
    assert_eq!(post(&api_b, "b-1").await.status(), 202);

    // The kill-switch: a person switches team-b off; team-a's stop and team-b's switch stay
    // each in its own pipeline (the issue's run saw one namespace clear the other's).
    let store_b = RedisStore::connect(&url, &pipeline(Some("team-b"), "shared"))
        .await
        .unwrap();
    store_b
        .set_kill_switch(&KillSwitch::manual(
            SetBy::Admin,
            Some("team-b maintenance".into()),
            1,
        ))
        .await
        .unwrap();
    assert_eq!(post(&api_b, "b-2").await.status(), 429);
    assert!(store_b.clear_kill_switch_if(SetBy::Admin).await.unwrap());
    assert_eq!(post(&api_b, "b-3").await.status(), 202);
    let ks_a = store_a.budget_state().await.unwrap().kill_switch;
    assert!(ks_a.enabled, "team-b's switch never touched team-a's stop");
    assert_eq!(ks_a.set_by, Some(SetBy::Budget));
    assert_eq!(post(&api_a, "a-later").await.status(), 429);
}

fn request(n: u32) -> JobRequest {
    JobRequest {
        content: format!("Mitochondria are organelles. Tenant test {n}."),
        subject: "biology".into(),
        topic: "cells".into(),
        user_id: format!("user-{n}"),
        card_count: 3,
    }
}

fn submission(n: u32) -> Submission {
    Submission::new(request(n), 3)
}

fn keyed(n: u32, key: &str) -> Submission {
    let mut s = submission(n);
    s.idempotency = Some(Idempotency {
        digest: idempotency_digest(&s.owner, key),
        fingerprint: fingerprint(&serde_json::to_string(&s.request).unwrap()),
        ttl: Duration::from_secs(3600),
    });
    s
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

/// Gives a store some of everything: jobs, events, a budget, spend, an epoch.
async fn fill(store: &RedisStore) {
    for n in 0..2 {
        assert!(matches!(
            store.submit(submission(n)).await.unwrap(),
            Admission::Accepted { .. }
        ));
    }
    store.claim(&claim_request()).await.unwrap();
    store
        .set_budget(&BudgetConfig {
            limit_micros: 5_000_000,
            period: BudgetPeriod::Monthly,
            warn_percent: 80.0,
            enforce: true,
            source: BudgetSource::Operator,
        })
        .await
        .unwrap();
    let period = store.budget_state().await.unwrap().period;
    store.restore_spend(&period, 1234).await.unwrap();
    store.ensure_epoch().await.unwrap();
}

async fn purge_touches_no_other_pipeline(url: &str) {
    // The purged pipeline, the same name elsewhere, a name that extends it (a prefix match
    // without the closing brace would take it) and the same name without a namespace.
    let ids = [
        pipeline(Some("team-a"), "shared"),
        pipeline(Some("team-b"), "shared"),
        pipeline(Some("team-a"), "shared-2"),
        pipeline(None, "shared"),
    ];
    let mut stores = Vec::new();
    for id in &ids {
        let store = Arc::new(RedisStore::connect(url, id).await.unwrap());
        fill(&store).await;
        stores.push(store);
    }
    let removed = stores[0].purge().await.unwrap();
    assert!(removed >= 8, "removed {removed}");
    assert_eq!(stores[0].purge().await.unwrap(), 0);
    let gone = stores[0].budget_state().await.unwrap();
    assert!(!gone.stored && gone.epoch.is_none() && gone.spend.spent_micros == 0);
    assert_eq!(stores[0].counts().await.unwrap().waiting, 0);
    for (id, store) in ids.iter().zip(&stores).skip(1) {
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.waiting, counts.active), (1, 1), "{id}");
        let state = store.budget_state().await.unwrap();
        assert!(state.stored, "{id}: budget kept");
        assert!(state.epoch.is_some(), "{id}: epoch kept");
        assert_eq!(state.spend.spent_micros, 1234, "{id}: spend kept");
    }
}

#[tokio::test]
async fn purge_removes_one_pipeline_and_nothing_else_on_one_node() {
    let redis = RedisServer::start();
    purge_touches_no_other_pipeline(&redis.url()).await;
    // Nothing of the purged pipeline is left on the server.
    let left: Vec<String> =
        crate::support::admin::command(redis.port, redis::cmd("KEYS").arg("fc:{team-a.shared}:*"))
            .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_one_pipeline_and_nothing_else_on_a_cluster() {
    let cluster = RedisCluster::start();
    purge_touches_no_other_pipeline(&cluster.url()).await;
    for port in cluster.ports() {
        let left: Vec<String> =
            crate::support::admin::command(port, redis::cmd("KEYS").arg("fc:{team-a.shared}:*"))
                .unwrap_or_default();
        assert!(left.is_empty(), "node {port}: {left:?}");
    }
}

/// The README's recipe, as README.md shows it: with the operator and the pipeline's pods stopped
/// (one node or a Sentinel master), every key under the old prefix is renamed (RENAMENX, never
/// overwriting) and the period's aggregate reservation is reset (nothing runs).
const MOVE_RECIPE: &str = r#"
old='fc:{shared}:'; new='fc:{team-a.shared}:'
redis-cli -u "$REDIS_URL" --scan --pattern "${old}*" | while IFS= read -r key; do
  redis-cli -u "$REDIS_URL" RENAMENX "$key" "${new}${key#"$old"}" >/dev/null
done
redis-cli -u "$REDIS_URL" --scan --pattern "${new}spend:*" | while IFS= read -r key; do
  redis-cli -u "$REDIS_URL" HSET "$key" reservedMicros 0 >/dev/null
done
redis-cli -u "$REDIS_URL" --scan --pattern "${old}*"
"#;

fn run_recipe(url: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(MOVE_RECIPE)
        .env("REDIS_URL", url)
        .output()
        .expect("sh and redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a waiting job, its history and the period's spend the way the version before
/// namespaced keys did (`enqueue.lua` and `reserve.lua` of that version: fewer job fields, an
/// idempotency mapping by raw key, the aggregate reservation of a job that was running).
async fn write_old_layout(url: &str, period: &str) -> String {
    let id = new_job_id();
    let job = format!("fc:{{shared}}:job:{id}");
    let request = serde_json::to_string(&request(9)).unwrap();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::pipe()
        .atomic()
        .hset_multiple(
            &job,
            &[
                ("id", id.as_str()),
                ("state", "waiting"),
                ("request", request.as_str()),
                ("attempts", "0"),
                ("maxAttempts", "3"),
                ("stalls", "0"),
                ("createdAt", "1764583200000"),
                ("eventSeq", "0"),
                ("idempotencyKey", "old-key"),
            ],
        )
        .ignore()
        .set("fc:{shared}:idem:old-key", &id)
        .ignore()
        .rpush("fc:{shared}:waiting", &id)
        .ignore()
        .hset_multiple(
            format!("fc:{{shared}}:spend:{period}"),
            &[
                ("spentMicros", "777"),
                ("reservedMicros", "555"),
                ("jobs", "4"),
            ],
        )
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn the_readme_recipe_moves_a_pipeline_to_its_namespaced_keys() {
    let redis = RedisServer::start();
    let url = redis.url();
    // Data of the current layout under the old prefix (processes started without a namespace)...
    let legacy = RedisStore::connect(&url, &pipeline(None, "shared"))
        .await
        .unwrap();
    fill(&legacy).await;
    let Admission::Accepted { job_id: keyed_id } = legacy.submit(keyed(7, "k1")).await.unwrap()
    else {
        panic!("keyed submission accepted")
    };
    let before = legacy.counts().await.unwrap();
    let epoch = legacy.budget_state().await.unwrap().epoch;
    assert!(before.active > 0, "a job was running when the pods stopped");
    drop(legacy);

    let out = run_recipe(&url);
    assert!(
        out.trim().is_empty(),
        "keys left under the old prefix: {out}"
    );

    let moved = RedisStore::connect(&url, &pipeline(Some("team-a"), "shared"))
        .await
        .unwrap();
    let counts = moved.counts().await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active),
        (before.waiting, before.active)
    );
    let state = moved.budget_state().await.unwrap();
    assert_eq!(state.spend.spent_micros, 1234);
    assert_eq!(state.spend.reserved_micros, 0, "reset: nothing runs");
    assert_eq!(
        state.epoch, epoch,
        "same epoch: the operator restores nothing"
    );
    assert!(state.stored);
    let replay = moved.submit(keyed(7, "k1")).await.unwrap();
    assert!(
        matches!(&replay, Admission::Replayed { job_id, .. } if *job_id == keyed_id),
        "{replay:?}"
    );
    let claimed = moved.claim(&claim_request()).await.unwrap();
    let job = &claimed.jobs[0].job;
    let events = moved.events_after(&job.id, 0).await.unwrap();
    assert_eq!(
        events.last().map(|e| e.kind().to_owned()).as_deref(),
        Some("active")
    );
}

/// The same recipe on the data of the version before namespaced keys (its job layout was older
/// too): the waiting job is claimed and completed by today's code, spend and job count are kept,
/// the reservation of the job that was running is reset; the old idempotency mapping (by raw
/// key) no longer matches (today's keys are digests), so a retry with that key is a new job.
#[tokio::test]
async fn the_readme_recipe_moves_the_data_of_the_version_before_namespaces() {
    let redis = RedisServer::start();
    let url = redis.url();
    let period = BudgetPeriod::Monthly.current_key();
    let old_id = write_old_layout(&url, &period).await;
    let out = run_recipe(&url);
    assert!(
        out.trim().is_empty(),
        "keys left under the old prefix: {out}"
    );

    let moved = RedisStore::connect(&url, &pipeline(Some("team-a"), "shared"))
        .await
        .unwrap();
    let state = moved.budget_state().await.unwrap();
    assert_eq!(state.spend.spent_micros, 777);
    assert_eq!(state.spend.reserved_micros, 0);
    assert_eq!(state.spend.jobs, 4);
    let job = moved.job(&old_id).await.unwrap().expect("the old job");
    assert_eq!(job.request, request(9));
    let claimed = moved.claim(&claim_request()).await.unwrap();
    assert_eq!(claimed.jobs.len(), 1);
    let claim = &claimed.jobs[0];
    assert_eq!(claim.job.id, old_id);
    let result = flashcard_core::job::JobResult {
        flashcards: vec![],
        token_usage: 10,
        usage: flashcard_core::job::TokenUsage {
            input_tokens: 7,
            output_tokens: 3,
            ..Default::default()
        },
        provider: "local".into(),
        model: "m".into(),
        cost_micros: 5,
    };
    let finished = moved
        .finish(
            &claim.lease,
            flashcard_store::Outcome::Completed {
                result: &result,
                duration_ms: 5,
            },
            flashcard_store::Cost::reported(5, result.usage),
            None,
        )
        .await
        .unwrap();
    assert_eq!(finished.outcome, flashcard_store::FinishOutcome::Completed);
    let after = moved.budget_state().await.unwrap().spend;
    assert_eq!((after.spent_micros, after.reserved_micros), (782, 0));
    let events = moved.events_after(&old_id, 0).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.kind().to_owned())
            .collect::<Vec<_>>(),
        ["active", "completed"]
    );
    let retry = Submission {
        idempotency: Some(Idempotency {
            digest: idempotency_digest("user-9", "old-key"),
            fingerprint: fingerprint(&serde_json::to_string(&request(9)).unwrap()),
            ttl: Duration::from_secs(3600),
        }),
        ..submission(9)
    };
    assert!(matches!(
        moved.submit(retry).await.unwrap(),
        Admission::Accepted { .. }
    ));
}
