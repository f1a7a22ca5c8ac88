//! The operator's connector on a real Redis Cluster and a real Sentinel setup: the Secret's URL
//! alone (`redis+cluster://`, `redis+sentinel://`) decides the topology, and the operator reads
//! queue depth and writes the kill-switch through the same store as on one node.
//!
//! The servers come from `flashcard-test-support`. Needs
//! `redis-server`, `redis-sentinel` and `redis-cli`; a missing binary fails the test.
use flashcard_operator::connector::RedisConnector;
use flashcard_operator::crd::FlashcardPipeline;
use flashcard_operator::state::Connector;
use flashcard_store::{KillSwitch, SetBy};
use flashcard_test_support::{cluster, sentinel};
use kube::client::Body;
use serde_json::json;

fn pipeline(name: &str) -> FlashcardPipeline {
    serde_json::from_value(json!({
        "apiVersion": "flashcards.dev/v1alpha1",
        "kind": "FlashcardPipeline",
        "metadata": {"name": name, "namespace": "study", "uid": name, "generation": 1},
        "spec": {
            "redis": {"urlSecretRef": {"name": name, "key": "url"}},
            "budget": {"limitUsd": 10.0}
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_opens_cluster_and_sentinel_stores_from_the_secret_url() {
    let cluster = cluster::RedisCluster::start();
    let sentinels = sentinel::RedisSentinel::start();
    let urls = [
        ("bio-cluster", cluster.url()),
        ("bio-sentinel", sentinels.url()),
    ];
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "default");
    let served = urls.clone();
    let server = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        for _ in 0..served.len() {
            let (req, send) = handle.next_request().await.expect("secret read");
            let name = req.uri().path().rsplit('/').next().unwrap().to_owned();
            let (_, url) = served
                .iter()
                .find(|(n, _)| *n == name)
                .expect("a known secret");
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": {"flashcards.dev/pipeline-secret": "true"}},
                                "data": {"url": base64(url.as_bytes())}});
            send.send_response(http::Response::new(Body::from(
                serde_json::to_vec(&secret).unwrap(),
            )));
        }
    });
    let connector = RedisConnector::new(client);
    for (name, _) in &urls {
        let state = connector
            .connect(&pipeline(name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(state.counts().await.unwrap().waiting, 0, "{name}");
        let on = KillSwitch::manual(SetBy::Resource, Some("maintenance".into()), 1);
        state.set_kill_switch(&on).await.unwrap();
        let read = state.budget_state().await.unwrap().kill_switch;
        assert!(read.enabled, "{name}");
        assert!(state.clear_kill_switch_if(SetBy::Resource).await.unwrap());
        assert!(
            !state.budget_state().await.unwrap().kill_switch.enabled,
            "{name}"
        );
    }
    server.await.unwrap();
}

/// Standard base64 (the Secret's `data` encoding), to avoid a dependency for one test.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
