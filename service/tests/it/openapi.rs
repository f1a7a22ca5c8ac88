//! The running binary serves the generated OpenAPI document at `GET /api/openapi.json` (the
//! committed copy is kept current by `cargo xtask check`).

use crate::support::{Service, http};
use flashcard_service::api::openapi::document_json;

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
