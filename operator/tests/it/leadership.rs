//! `flashcard-operator run` through an API server outage longer than the lease (5 s; renew
//! deadline 2 s, retry 1 s): the process
//! stops leading at its renew deadline, keeps running, campaigns again, and starts a fresh
//! controller (new watches) when the API answers again; SIGTERM then releases the Lease.
//! The "API server" is a small local HTTP server that serves the Lease and empty lists and
//! holds watches open; a switch makes every Lease request hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

#[derive(Default)]
struct Fake {
    lease: Mutex<Option<Value>>,
    rv: Mutex<u64>,
    lease_hangs: AtomicBool,
    /// (time, method, path, watch)
    log: Mutex<Vec<(Instant, Method, String, bool)>>,
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
}

async fn handle(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let watch = query.contains("watch=true");
    let metadata_only = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("PartialObjectMetadata"));
    let body: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    fake.log
        .lock()
        .unwrap()
        .push((Instant::now(), method.clone(), path.clone(), watch));

    if path.starts_with("/apis/coordination.k8s.io/") {
        if fake.lease_hangs.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let mut lease = fake.lease.lock().unwrap();
        let mut rv = fake.rv.lock().unwrap();
        return match method {
            Method::GET => match &*lease {
                Some(l) => json_response(StatusCode::OK, l),
                None => json_response(StatusCode::NOT_FOUND, &not_found()),
            },
            Method::POST | Method::PUT => {
                let mut l: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let current = lease
                    .as_ref()
                    .map(|c| c["metadata"]["resourceVersion"].clone());
                if method == Method::PUT
                    && current != Some(l["metadata"]["resourceVersion"].clone())
                {
                    return json_response(
                        StatusCode::CONFLICT,
                        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}),
                    );
                }
                *rv += 1;
                l["metadata"]["resourceVersion"] = json!(rv.to_string());
                *lease = Some(l.clone());
                json_response(StatusCode::OK, &l)
            }
            _ => json_response(StatusCode::NOT_FOUND, &not_found()),
        };
    }
    if watch {
        // Nothing ever changes: hold the watch open.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    if method == Method::GET {
        let list = if metadata_only {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                   "metadata": {"resourceVersion": "1"}, "items": []})
        } else {
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []})
        };
        return json_response(StatusCode::OK, &list);
    }
    json_response(StatusCode::NOT_FOUND, &not_found())
}

impl Fake {
    fn count(&self, since: Instant, f: impl Fn(&Method, &str, bool) -> bool) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, m, p, w)| *t >= since && f(m, p, *w))
            .count()
    }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_pipeline_list(m: &Method, p: &str, watch: bool) -> bool {
    m == Method::GET && p == "/apis/flashcards.dev/v1alpha1/flashcardpipelines" && !watch
}

#[tokio::test]
async fn an_api_outage_longer_than_the_lease_does_not_end_the_process() {
    let fake = Arc::new(Fake::default());
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("fcop-leadership-{}", std::process::id()));
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
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashcard-operator"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--lease-duration-seconds",
            "5",
            "--renew-deadline-seconds",
            "2",
            "--retry-period-seconds",
            "1",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "op-a")
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    for out in [
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let logs = logs.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                logs.lock().unwrap().push_str(&l);
                logs.lock().unwrap().push('\n');
            }
        });
    }
    let start = Instant::now();
    let log_has = |s: &str| logs.lock().unwrap().contains(s);

    // Leading: the Lease is ours and the controller lists pipelines (plus the start-up check).
    wait_for("the first term", Duration::from_secs(20), || {
        fake.lease.lock().unwrap().is_some() && fake.count(start, is_pipeline_list) >= 2
    })
    .await;
    assert_eq!(
        fake.lease.lock().unwrap().as_ref().unwrap()["spec"]["holderIdentity"],
        "op-a"
    );

    // The API server stops answering Lease requests for much longer than the lease.
    fake.lease_hangs.store(true, Ordering::SeqCst);
    let outage = Instant::now();
    wait_for("leadership to be given up", Duration::from_secs(10), || {
        log_has("lost leadership")
    })
    .await;
    let lost_after = outage.elapsed();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the operator exited during the outage:\n{}",
        logs.lock().unwrap()
    );

    // The API is back: it leads again and starts a fresh controller (a new pipeline list).
    fake.lease_hangs.store(false, Ordering::SeqCst);
    let back = Instant::now();
    wait_for("a second term", Duration::from_secs(20), || {
        fake.count(back, is_pipeline_list) >= 1
            && fake.count(back, |m, p, _| m == Method::PUT && p.contains("/leases/")) >= 1
    })
    .await;
    assert!(child.try_wait().unwrap().is_none());
    let terms = logs.lock().unwrap().matches("became leader").count();
    assert_eq!(terms, 2, "{}", logs.lock().unwrap());
    eprintln!("gave up leadership {lost_after:?} into the outage (renew deadline 2 s)");
    assert!(
        lost_after < Duration::from_secs(3),
        "{lost_after:?}: before the 3 s lease ends"
    );

    // SIGTERM: a clean exit that releases the Lease for a standby.
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status:?}\n{}", logs.lock().unwrap());
    let lease = fake.lease.lock().unwrap().clone().unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released on shutdown: {lease}"
    );
}
