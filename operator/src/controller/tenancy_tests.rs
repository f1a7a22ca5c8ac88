//! One tenant can never hurt another, on a running controller: six pipelines whose Redis
//! accepts TCP and never answers (black holes), and one healthy pipeline on a real
//! redis-server, all through the real connector (the Redis URLs are read from Secrets the fake
//! API server holds). The healthy pipeline repairs a deleted child, scales on its first job,
//! and repairs a child deleted during an API server outage, each within the bounds of issue 24.
//!
//! The outage lasts `API_OUTAGE_SECONDS` (default 8; the closing note's figure is with 30).

use std::sync::Arc;
use std::time::Duration;

use flashcard_core::job::JobRequest;
use flashcard_core::keyspace::PipelineId;
use flashcard_store::redis::RedisStore;
use flashcard_store::{Admission, Store, Submission};
use flashcard_test_support::RedisServer;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::fake_api::*;
use super::{Scope, run};
use crate::connector::RedisConnector;
use crate::consent::{CONSENT_LABEL, CONSENT_VALUE};
use crate::context::Context;
use crate::metrics::Metrics;

pub(super) const SECRETS: &str = "api/v1/secrets";
const BLACK_HOLES: usize = 6;

/// A Secret holding a Redis URL under `url`, labelled for use by pipelines.
fn redis_secret(namespace: &str, url: &str) -> Value {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("redis".into()),
            namespace: Some(namespace.into()),
            labels: Some([(CONSENT_LABEL.to_owned(), CONSENT_VALUE.to_owned())].into()),
            ..Default::default()
        },
        data: Some([("url".to_owned(), ByteString(url.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    let mut v = serde_json::to_value(secret).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

/// A pipeline `cards` in `namespace`, polled every `poll_seconds`.
fn tenant(namespace: &str, poll_seconds: u32) -> Value {
    let mut p = pipeline(poll_seconds);
    p["metadata"]["namespace"] = json!(namespace);
    p["metadata"]["name"] = json!("cards");
    p["metadata"]["uid"] = json!(format!("uid-{namespace}"));
    p
}

/// Listeners that accept every connection and never read or answer; the sockets stay open.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("redis://127.0.0.1:{port}/")
}

pub(super) async fn submit_one(store: &RedisStore) {
    let request = JobRequest {
        content: "Photosynthesis converts light into chemical energy.".into(),
        subject: "biology".into(),
        topic: "cells".into(),
        user_id: "u".into(),
        card_count: 3,
    };
    let admission = store.submit(Submission::new(request, 3)).await.unwrap();
    assert!(
        matches!(admission, Admission::Accepted { .. }),
        "{admission:?}"
    );
}

pub(super) fn condition_reason(fake: &FakeApi, ns: &str, name: &str) -> Option<String> {
    let p = fake.get(PIPELINES, ns, name)?;
    p["status"]["conditions"][0]["reason"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_tenants_do_not_slow_a_healthy_pipeline() {
    let redis = RedisServer::start();
    let mut objects = vec![
        (PIPELINES, tenant("study", 300)),
        (SECRETS, redis_secret("study", &redis.url())),
    ];
    for i in 0..BLACK_HOLES {
        let ns = format!("tenant-{i}");
        objects.push((PIPELINES, tenant(&ns, 5)));
        objects.push((SECRETS, redis_secret(&ns, &black_hole().await)));
    }
    let (fake, client) = FakeApi::start(objects);
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        Arc::new(RedisConnector::new(client.clone())),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client, Scope::All, ctx.clone(), async move {
        let _ = stop_rx.await;
    }));

    // Every black hole has been tried and reported; the healthy pipeline is followed.
    until(
        "every pipeline's first status",
        Duration::from_secs(30),
        || {
            (0..BLACK_HOLES).all(|i| {
                condition_reason(&fake, &format!("tenant-{i}"), "cards").as_deref()
                    == Some("StoreUnavailable")
            }) && condition_reason(&fake, "study", "cards").is_some()
        },
    )
    .await;
    until(
        "the healthy pipeline's follower",
        Duration::from_secs(5),
        || ctx.followers.len() == 1,
    )
    .await;
    settled(&fake).await;
    assert_eq!(
        condition_reason(&fake, "study", "cards").as_deref(),
        Some("ApiNotReady"),
        "the healthy pipeline is connected (its pods are not ready in a fake cluster)"
    );

    // kubectl delete deploy cards-api -n study
    let t0 = Instant::now();
    fake.delete(DEPLOYMENTS, "study", "cards-api");
    until(
        "the api Deployment to be re-created",
        Duration::from_secs(10),
        || fake.get(DEPLOYMENTS, "study", "cards-api").is_some(),
    )
    .await;
    let repaired = t0.elapsed();
    settled(&fake).await;

    // The first job of the healthy pipeline.
    let replicas =
        || fake.get(DEPLOYMENTS, "study", "cards-worker").unwrap()["spec"]["replicas"].clone();
    assert_eq!(replicas(), 0);
    let store = RedisStore::connect(
        &redis.url(),
        &PipelineId::new(Some("study"), "cards").unwrap(),
    )
    .await
    .unwrap();
    let t1 = Instant::now();
    submit_one(&store).await;
    until(
        "the worker Deployment to scale",
        Duration::from_secs(10),
        || replicas() == 1,
    )
    .await;
    let scaled = t1.elapsed();
    settled(&fake).await;

    // The API server goes away; a child is deleted meanwhile; the API server comes back.
    let outage = std::env::var("API_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    fake.set_down(true);
    tokio::time::sleep(Duration::from_secs(outage) / 2).await;
    fake.delete(SERVICES, "study", "cards-worker");
    tokio::time::sleep(Duration::from_secs(outage) / 2).await;
    let t2 = Instant::now();
    fake.set_down(false);
    until(
        "the worker Service to be re-created after the outage",
        Duration::from_secs(40),
        || fake.get(SERVICES, "study", "cards-worker").is_some(),
    )
    .await;
    let after_outage = t2.elapsed();

    eprintln!(
        "{BLACK_HOLES} black-hole tenants: deleted api Deployment back in {repaired:?}, \
         first job -> 1 worker in {scaled:?}; {outage} s API server outage -> deleted Service \
         back {after_outage:?} after the API returned"
    );
    assert!(repaired <= Duration::from_secs(5), "{repaired:?}");
    assert!(scaled <= Duration::from_secs(2), "{scaled:?}");
    assert!(after_outage <= Duration::from_secs(20), "{after_outage:?}");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}
