//! Per-pipeline ACL users on a real Redis (`flashcard_operator::acl`): pipeline A's credential
//! runs A's whole job cycle (every script the store uses) and gets `NOPERM` on B's keys, on
//! B's scripts and on server-wide commands; a rotation locks the old password out, a deletion
//! the user.

use flashcard_core::keyspace::PipelineId;
use flashcard_operator::acl::{delete_user, ensure_user, user_name};
use flashcard_store::redis::RedisStore;
use flashcard_store::redis::topology::with_credentials;
use flashcard_test_support::RedisServer;

use super::redis_state::spend;

fn new_password() -> String {
    flashcard_core::hex(&rand::random::<[u8; 32]>())
}

fn user_url(admin_url: &str, p: &PipelineId, password: &str) -> String {
    with_credentials(admin_url, &user_name(p), password).unwrap()
}

fn pipeline(name: &str) -> PipelineId {
    PipelineId::new(Some("study"), name).unwrap()
}

async fn connection(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

fn is_noperm(e: &impl std::fmt::Display) -> bool {
    e.to_string().to_ascii_lowercase().contains("noperm")
}

#[tokio::test]
async fn a_pipelines_user_reaches_its_own_keys_only() {
    let redis = RedisServer::start();
    let admin_url = redis.url();
    let mut admin = connection(&admin_url).await.unwrap();
    let (a, b) = (pipeline("a"), pipeline("b"));
    let (pw_a, pw_b) = (new_password(), new_password());
    ensure_user(&mut admin, &a, &pw_a).await.unwrap();
    ensure_user(&mut admin, &b, &pw_b).await.unwrap();
    let url_a = user_url(&admin_url, &a, &pw_a);
    let url_b = user_url(&admin_url, &b, &pw_b);

    // Each pipeline's own store works end to end with its own user.
    let store_a = RedisStore::connect(&url_a, &a).await.unwrap();
    spend(&store_a, 1_000).await;
    let store_b = RedisStore::connect(&url_b, &b).await.unwrap();
    spend(&store_b, 2_000).await;

    // A's credential on B's pipeline: the store's scripts are refused, nothing is written.
    let keys_before: Vec<String> = redis::cmd("KEYS")
        .arg("fc:{study.b}:*")
        .query_async(&mut admin)
        .await
        .unwrap();
    match RedisStore::connect(&url_a, &b).await {
        Err(e) => assert!(is_noperm(&e), "{e}"),
        Ok(cross) => {
            use flashcard_store::Store;
            let e = cross.budget_state().await.unwrap_err();
            assert!(is_noperm(&e), "{e}");
        }
    }
    let mut conn_a = connection(&url_a).await.unwrap();
    for cmd in [
        redis::cmd("GET").arg("fc:{study.b}:budget").clone(),
        redis::cmd("DEL").arg("fc:{study.b}:waiting").clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("CONFIG").arg("GET").arg("requirepass").clone(),
        redis::cmd("SCRIPT").arg("FLUSH").clone(),
        redis::cmd("PUBLISH").arg("c").arg("m").clone(),
    ] {
        let r: redis::RedisResult<redis::Value> = cmd.query_async(&mut conn_a).await;
        let e = r.expect_err("refused");
        assert!(is_noperm(&e), "{e}");
    }
    let keys_after: Vec<String> = redis::cmd("KEYS")
        .arg("fc:{study.b}:*")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(keys_before, keys_after, "B's keys are untouched");

    // A rotation: the old password no longer opens a connection, the new one does.
    let rotated = new_password();
    ensure_user(&mut admin, &a, &rotated).await.unwrap();
    assert!(
        connection(&url_a).await.is_err(),
        "the old password is refused"
    );
    let rotated_url = user_url(&admin_url, &a, &rotated);
    let store_a = RedisStore::connect(&rotated_url, &a).await.unwrap();
    spend(&store_a, 1_000).await;

    // A deletion: the user is gone (twice is fine).
    delete_user(&mut admin, &a).await.unwrap();
    delete_user(&mut admin, &a).await.unwrap();
    assert!(connection(&rotated_url).await.is_err(), "the user is gone");
}
