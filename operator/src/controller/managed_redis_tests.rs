//! Pipelines on the operator's Redis, on a running controller with the real connector and a real
//! redis-server that requires a password: each pipeline gets its own ACL user in a Secret its pods
//! read, that user reaches its own pipeline's keys only, a rotation replaces the password (and
//! rolls the pods), a forgotten user (a Redis restart) is made again, and deleting the pipeline
//! deletes the user.

use std::sync::Arc;
use std::time::Duration;

use flashcard_core::keyspace::PipelineId;
use flashcard_store::Store;
use flashcard_store::redis::RedisStore;
use flashcard_store::redis::topology::with_credentials;
use flashcard_test_support::RedisServer;
use serde_json::{Value, json};

use super::fake_api::*;
use super::tenancy_tests::{SECRETS, condition_reason, submit_one};
use super::{Scope, run};
use crate::acl::{ManagedRedis, ROTATE_ANNOTATION};
use crate::connector::RedisConnector;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::reconcile::lifecycle::FINALIZER;
use crate::render::credential::CREDENTIAL_ANNOTATION;

const ADMIN_PASSWORD: &str = "admin-secret";

/// A pipeline `name` in `study` without `spec.redis.urlSecretRef`, polled every second.
fn managed(name: &str) -> Value {
    let mut p = pipeline(1);
    p["metadata"]["namespace"] = json!("study");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(format!("uid-{name}"));
    p["spec"]["redis"] = json!({});
    p
}

/// The URL in the pipeline's credential Secret, once the operator has written it.
fn credential_url(fake: &FakeApi, name: &str) -> Option<String> {
    let secret = fake.get(SECRETS, "study", &format!("{name}-redis-credential"))?;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).ok()?;
    let bytes = secret.data?.remove("url")?;
    String::from_utf8(bytes.0).ok()
}

fn pod_annotation(fake: &FakeApi, deployment: &str) -> Option<String> {
    let d = fake.get(DEPLOYMENTS, "study", deployment)?;
    d["spec"]["template"]["metadata"]["annotations"][CREDENTIAL_ANNOTATION]
        .as_str()
        .map(str::to_owned)
}

fn id(name: &str) -> PipelineId {
    PipelineId::new(Some("study"), name).unwrap()
}

async fn user_exists(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> bool {
    let user: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(format!("fc-study.{name}"))
        .query_async(admin)
        .await
        .unwrap();
    user != redis::Value::Nil
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pipeline_gets_its_own_redis_user_for_its_life() {
    let redis = RedisServer::start();
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(ADMIN_PASSWORD)
        .query_async(&mut admin)
        .await
        .unwrap();
    let admin_url = with_credentials(&redis.url(), "default", ADMIN_PASSWORD).unwrap();

    let (fake, client) = FakeApi::start(vec![
        (PIPELINES, managed("cards")),
        (PIPELINES, managed("decks")),
    ]);
    let connector = RedisConnector::new(client.clone())
        .with_managed(Some(Arc::new(ManagedRedis::new(&admin_url).unwrap())));
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        Arc::new(connector),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client, Scope::All, ctx.clone(), async move {
        let _ = stop_rx.await;
    }));

    // The operator writes each pipeline's Secret and points its pods at it.
    until("the credential Secrets", Duration::from_secs(20), || {
        credential_url(&fake, "cards").is_some() && credential_url(&fake, "decks").is_some()
    })
    .await;
    until("the first status", Duration::from_secs(20), || {
        condition_reason(&fake, "study", "cards").as_deref() == Some("ApiNotReady")
    })
    .await;
    let url = credential_url(&fake, "cards").unwrap();
    assert!(url.contains("fc-study.cards:"), "its own user");
    assert!(!url.contains(ADMIN_PASSWORD), "never the admin's password");
    let api = fake.get(DEPLOYMENTS, "study", "cards-api").unwrap();
    let env = api["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let redis_env = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "REDIS_URL")
        .unwrap()
        .clone();
    assert_eq!(
        redis_env["valueFrom"]["secretKeyRef"],
        json!({"name": "cards-redis-credential", "key": "url"})
    );
    let first_fingerprint = pod_annotation(&fake, "cards-worker").unwrap();
    let finalizers =
        fake.get(PIPELINES, "study", "cards").unwrap()["metadata"]["finalizers"].clone();
    assert_eq!(finalizers, json!([FINALIZER]));

    // The Secret's URL runs the pipeline's jobs, and is refused on the other pipeline's keys.
    let store = RedisStore::connect(&url, &id("cards")).await.unwrap();
    submit_one(&store).await;
    assert_eq!(store.counts().await.unwrap().waiting, 1);
    let refused = match RedisStore::connect(&url, &id("decks")).await {
        Err(e) => e.to_string(),
        Ok(cross) => cross.counts().await.unwrap_err().to_string(),
    };
    assert!(refused.to_ascii_lowercase().contains("noperm"), "{refused}");

    // A rotation: a new password in the Secret, the pods roll, the old password is refused.
    fake.edit(PIPELINES, "study", "cards", |p| {
        p["metadata"]["annotations"] = json!({ROTATE_ANNOTATION: "2026-12-07"});
    });
    until("the rotated Secret", Duration::from_secs(10), || {
        credential_url(&fake, "cards").is_some_and(|u| u != url)
    })
    .await;
    let rotated = credential_url(&fake, "cards").unwrap();
    until("the pods to roll", Duration::from_secs(10), || {
        pod_annotation(&fake, "cards-worker").is_some_and(|f| f != first_fingerprint)
    })
    .await;
    assert!(
        RedisStore::connect(&url, &id("cards")).await.is_err(),
        "the old password"
    );
    let store = RedisStore::connect(&rotated, &id("cards")).await.unwrap();
    assert_eq!(store.counts().await.unwrap().waiting, 1);

    // Redis forgets the user (as after a restart): the operator makes it again.
    let _: u64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg("fc-study.cards")
        .query_async(&mut admin)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !user_exists(&mut admin, "cards").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the user is made again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    RedisStore::connect(&rotated, &id("cards")).await.unwrap();

    // kubectl delete: the user goes with the pipeline (the keys stay: deletionPolicy Retain);
    // the other pipeline's user stays.
    fake.edit(PIPELINES, "study", "cards", |p| {
        p["metadata"]["deletionTimestamp"] = json!("2026-12-07T17:00:00Z");
    });
    until("the pipeline to go", Duration::from_secs(15), || {
        fake.get(PIPELINES, "study", "cards").is_none()
    })
    .await;
    assert!(
        !user_exists(&mut admin, "cards").await,
        "the user is deleted"
    );
    assert!(user_exists(&mut admin, "decks").await);
    assert!(RedisStore::connect(&rotated, &id("cards")).await.is_err());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("fc:{study.cards}:*")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "Retain keeps the keys");

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}
