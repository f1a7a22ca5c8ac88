//! `flashcard-operator run` against an API server without the CRD: a clear error with the
//! install hint, and a non-zero exit. The "API server" is a tiny local HTTP server.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

#[tokio::test]
async fn missing_crd_fails_with_an_install_hint() {
    let not_found = || async {
        (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"the server could not find the requested resource"}"#,
        )
    };
    let app = Router::new().route(
        "/apis/flashcards.dev/v1alpha1/flashcardpipelines",
        get(not_found),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("fcop-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: t\n  user: {{}}\ncontexts:\n- name: t\n  context: {{cluster: t, user: t}}\n\
             current-context: t\n"
        ),
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_flashcard-operator"))
            .args(["run", "--listen", "127.0.0.1:0", "--log-format", "text"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output(),
    )
    .await
    .expect("the operator exits")
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("FlashcardPipeline CRD is not installed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("flashcard-operator crd | kubectl apply"),
        "{stderr}"
    );
}
