//! The service's process helper ([`Service`]) and everything of `flashcard-test-support`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use flashcard_test_support::*;

/// A running `flashcard-service` process on a free port.
pub struct Service {
    pub child: ChildGuard,
    pub base: String,
    pub port: u16,
}

impl Service {
    /// Starts `flashcard-service <mode> <args>` and waits for `/healthz`.
    pub async fn start(mode: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_flashcard-service"));
        command
            .arg(mode)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "text",
            ])
            .args(args)
            .env_remove("REDIS_URL")
            .env_remove("ADMIN_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = ChildGuard(command.spawn().expect("start flashcard-service"));
        let base = format!("http://127.0.0.1:{port}");
        wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(20)).await;
        Self { child, base, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM (what Kubernetes sends a pod).
    pub fn sigterm(&self) {
        let pid = self.child.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; panics after `within`. Returns how long it took.
    pub async fn wait_exit(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        while self.child.0.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < within, "still running after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// POSTs `body` to the job endpoint.
    pub fn post_job(
        &self,
        body: serde_json::Value,
    ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
        http()
            .post(self.url("/api/ai/generate-flashcards"))
            .json(&body)
            .send()
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        http()
            .get(self.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON body")
    }

    /// Submits a seed-style job and returns its id.
    pub async fn submit(&self, content: &str, user: &str) -> String {
        let response = http()
            .post(self.url("/api/ai/generate-flashcards"))
            .header("user-id", user)
            .json(&serde_json::json!({
                "content": content, "subject": "biology", "topic": "cells", "userId": user
            }))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 202, "submit failed");
        let body: serde_json::Value = response.json().await.expect("json");
        body["jobId"].as_str().expect("jobId").to_owned()
    }

    /// Polls the job status until it is completed or failed.
    pub async fn wait_finished(&self, job_id: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let body: serde_json::Value = http()
                .get(self.url(&format!("/api/job-status/{job_id}")))
                .send()
                .await
                .expect("GET status")
                .json()
                .await
                .expect("json");
            if matches!(body["status"].as_str(), Some("completed" | "failed")) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} not finished: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` every 20 ms until it holds; panics after `within` naming `what`.
pub async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
