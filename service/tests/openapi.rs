//! The committed OpenAPI document (`service/api/openapi.json`) must match the one the code
//! generates, and the running binary must serve that same document at `GET /api/openapi.json`.
//! `UPDATE_GENERATED=1 cargo test -p flashcard-service --test openapi` rewrites the file.

mod support;

use std::path::PathBuf;

use flashcard_service::api::openapi::{COMMITTED_PATH, document_json};
use support::{Service, http};

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("service/ has a parent")
        .join(COMMITTED_PATH)
}

#[test]
fn committed_document_is_current() {
    let expected = document_json();
    let path = committed_path();
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let first_diff = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or(actual.lines().count().min(expected.lines().count()));
        panic!(
            "{COMMITTED_PATH} is out of date (first difference at line {}).\nRegenerate with: \
             UPDATE_GENERATED=1 cargo test -p flashcard-service --test openapi",
            first_diff + 1
        );
    }
}

#[tokio::test]
async fn the_binary_serves_the_document() {
    let svc = Service::start("standalone", &[], &[]).await;
    let response = http()
        .get(svc.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let served: serde_json::Value = response.json().await.unwrap();
    let generated: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
    assert_eq!(served, generated);
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/ai/generate-flashcards",
        "/api/job-status/{jobId}",
        "/api/job-events",
        "/api/admin/budget/kill-switch",
    ] {
        assert!(served["paths"][path].is_object(), "{path}");
    }
}
