//! The whole controller (watches, triggers, reconcile) against a small fake API server built on
//! tower-test: it keeps objects, stamps resourceVersions and generations, serves lists and
//! (metadata) watches, and lets a test edit or delete an object as a person would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_test::mock::{self, SendResponse};

use super::{Scope, run};
use crate::context::Context;
use crate::fixtures::{FakeConnector, FakeState};
use crate::metrics::Metrics;
use crate::render::test_support::minimal;

const PIPELINES: &str = "apis/flashcards.dev/v1alpha1/flashcardpipelines";
const DEPLOYMENTS: &str = "apis/apps/v1/deployments";
const SERVICES: &str = "api/v1/services";

/// A request as the fake saw it.
#[derive(Debug, Clone)]
struct Logged {
    at: Instant,
    method: Method,
    path: String,
    watch: bool,
}

struct Parked {
    collection: String,
    namespace: Option<String>,
    since: u64,
    metadata_only: bool,
    send: SendResponse<Response<Body>>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (collection, namespace, name) -> object
    objects: BTreeMap<(String, String, String), Value>,
    /// (rv, collection, namespace, type, object)
    history: Vec<(u64, String, String, &'static str, Value)>,
    parked: Vec<Parked>,
    log: Vec<Logged>,
}

/// The parts of a request path: `api/v1` or `apis/<group>/<version>`, namespace, resource,
/// name, subresource.
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix, rest) = match *parts.first()? {
        "api" => (parts[..2].join("/"), &parts[2..]),
        "apis" if parts.len() >= 3 => (parts[..3].join("/"), &parts[3..]),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let resource = rest.first()?;
    Some(Target {
        collection: format!("{prefix}/{resource}"),
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    })
}

fn query(uri: &http::Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

fn reply(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn meta_only(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
           "metadata": obj["metadata"].clone()})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": "not found"})
}

#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    fn start(objects: Vec<(&str, Value)>) -> (Self, Client) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let fake = FakeApi {
            state: Arc::new(Mutex::new(State::default())),
        };
        for (collection, obj) in objects {
            fake.put(collection, obj, "ADDED");
        }
        let f = fake.clone();
        tokio::spawn(async move {
            let mut handle = std::pin::pin!(handle);
            while let Some((req, send)) = handle.next_request().await {
                f.handle(req, send).await;
            }
        });
        (fake, Client::new(service, "default"))
    }

    /// Stores `obj` with a new resourceVersion and records the watch event.
    fn put(&self, collection: &str, mut obj: Value, kind: &'static str) -> Value {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{name}"));
        }
        st.objects
            .insert((collection.into(), ns.clone(), name), obj.clone());
        st.history
            .push((rv, collection.into(), ns, kind, obj.clone()));
        drop(st);
        self.flush();
        obj
    }

    /// Answers parked watches that have news.
    fn flush(&self) {
        let mut st = self.state.lock().unwrap();
        let parked = std::mem::take(&mut st.parked);
        for p in parked {
            let lines: Vec<String> = st
                .history
                .iter()
                .filter(|(rv, c, ns, ..)| {
                    *rv > p.since
                        && *c == p.collection
                        && p.namespace.as_ref().is_none_or(|n| n == ns)
                })
                .map(|(_, _, _, t, o)| {
                    let o = if p.metadata_only {
                        meta_only(o)
                    } else {
                        o.clone()
                    };
                    json!({"type": t, "object": o}).to_string()
                })
                .collect();
            if lines.is_empty() {
                st.parked.push(p);
            } else {
                let body = lines.join("\n") + "\n";
                p.send.send_response(
                    Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(body.into_bytes()))
                        .unwrap(),
                );
            }
        }
    }

    fn get(&self, collection: &str, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(collection.into(), ns.into(), name.into()))
            .cloned()
    }

    /// A person's edit: changes the object, bumping the generation if the spec changed.
    fn edit(&self, collection: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.get(collection, ns, name).expect("object to edit");
        let spec = obj["spec"].clone();
        f(&mut obj);
        if obj["spec"] != spec {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        self.put(collection, obj, "MODIFIED");
    }

    fn delete(&self, collection: &str, ns: &str, name: &str) {
        let mut st = self.state.lock().unwrap();
        let Some(mut obj) = st
            .objects
            .remove(&(collection.into(), ns.into(), name.into()))
        else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.history
            .push((rv, collection.into(), ns.into(), "DELETED", obj));
        drop(st);
        self.flush();
    }

    fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Applies (and other writes) after `since`, as `METHOD path`.
    fn writes_since(&self, since: Instant) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.at >= since && !l.watch && l.method != Method::GET)
            .map(|l| format!("{} {}", l.method, l.path))
            .collect()
    }

    async fn handle(&self, req: Request<Body>, send: SendResponse<Response<Body>>) {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let path = uri.path().to_owned();
        let metadata_only = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("PartialObjectMetadata"));
        let watch = query(&uri, "watch").as_deref() == Some("true");
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.state.lock().unwrap().log.push(Logged {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            watch,
        });
        let Some(t) = parse(&path) else {
            return send.send_response(reply(StatusCode::NOT_FOUND, &not_found()));
        };
        if t.collection.starts_with("apis/monitoring.coreos.com") || t.collection.ends_with("/v1/")
        {
            return send.send_response(reply(StatusCode::NOT_FOUND, &not_found()));
        }
        match (method, t.name.as_deref()) {
            (Method::GET, None) if watch => {
                let since = query(&uri, "resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.state.lock().unwrap().parked.push(Parked {
                    collection: t.collection,
                    namespace: t.namespace,
                    since,
                    metadata_only,
                    send,
                });
                self.flush();
            }
            (Method::GET, None) => {
                let st = self.state.lock().unwrap();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|((c, ns, _), _)| {
                        *c == t.collection && t.namespace.as_ref().is_none_or(|n| n == ns)
                    })
                    .map(|(_, o)| {
                        if metadata_only {
                            meta_only(o)
                        } else {
                            o.clone()
                        }
                    })
                    .collect();
                let list = if metadata_only {
                    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                           "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
                } else {
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
                };
                drop(st);
                send.send_response(reply(StatusCode::OK, &list));
            }
            (Method::GET, Some(name)) => {
                let ns = t.namespace.unwrap_or_default();
                match self.get(&t.collection, &ns, name) {
                    Some(o) => send.send_response(reply(StatusCode::OK, &o)),
                    None => send.send_response(reply(StatusCode::NOT_FOUND, &not_found())),
                }
            }
            (Method::PATCH, Some(name)) if t.sub.as_deref() == Some("status") => {
                let ns = t.namespace.unwrap_or_default();
                let mut obj = self.get(&t.collection, &ns, name).unwrap();
                obj["status"] = body["status"].clone();
                let obj = self.put(&t.collection, obj, "MODIFIED");
                send.send_response(reply(StatusCode::OK, &obj));
            }
            (Method::PATCH, Some(name)) if t.collection.ends_with("/pods") => {
                send.send_response(reply(
                    StatusCode::OK,
                    &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}),
                ));
            }
            (Method::PATCH, Some(name)) => {
                // Server-side apply, near enough: the applied object, with the status and
                // generation the server keeps.
                let ns = t.namespace.unwrap_or_default();
                let old = self.get(&t.collection, &ns, name);
                let mut obj = body;
                let generation = match &old {
                    None => 1,
                    Some(o) => {
                        let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                        if o["spec"] == obj["spec"] { g } else { g + 1 }
                    }
                };
                if obj.get("spec").is_some() {
                    obj["metadata"]["generation"] = json!(generation);
                }
                if let Some(o) = &old {
                    obj["status"] = o["status"].clone();
                    obj["metadata"]["uid"] = o["metadata"]["uid"].clone();
                }
                let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
                let obj = self.put(&t.collection, obj, kind);
                send.send_response(reply(StatusCode::OK, &obj));
            }
            (Method::POST, _) => send.send_response(reply(StatusCode::CREATED, &body)),
            (Method::DELETE, Some(name)) => {
                self.delete(&t.collection, &t.namespace.unwrap_or_default(), name);
                send.send_response(reply(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ));
            }
            _ => send.send_response(reply(StatusCode::NOT_FOUND, &not_found())),
        }
    }
}

fn pipeline(poll_seconds: u32) -> Value {
    let mut p = minimal();
    p.spec.worker.poll_interval_seconds = poll_seconds;
    let mut v = serde_json::to_value(&p).unwrap();
    v["apiVersion"] = json!("flashcards.dev/v1alpha1");
    v["kind"] = json!("FlashcardPipeline");
    v["metadata"]["generation"] = json!(3);
    v
}

fn context(client: Client) -> Arc<Context> {
    context_with_state(client).0
}

fn context_with_state(client: Client) -> (Arc<Context>, Arc<FakeState>) {
    let state = Arc::new(FakeState::default());
    let connector = Arc::new(FakeConnector::new(state.clone()));
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(Metrics::default()),
        connector,
    ));
    (ctx, state)
}

async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The five watches are open (parked) again: the controller has caught up.
async fn settled(fake: &FakeApi) {
    until("the watches to settle", Duration::from_secs(5), || {
        fake.state.lock().unwrap().parked.len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
}

/// An owned child's watch event reconciles its pipeline at once: a hand-scaled worker
/// Deployment and a deleted Service are back within 2 s, and API pods that become ready turn the
/// pipeline Ready, although the pipeline's own poll is 5 minutes away.
#[tokio::test]
async fn owned_child_events_repair_drift_within_two_seconds() {
    let (fake, client) = FakeApi::start(vec![(PIPELINES, pipeline(300))]);
    let ctx = context(client.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client, Scope::All, ctx, async move {
        let _ = stop_rx.await;
    }));
    until("the first reconcile", Duration::from_secs(5), || {
        fake.get(PIPELINES, "study", "biology")
            .is_some_and(|p| !p["status"].is_null())
    })
    .await;
    settled(&fake).await;
    let status = fake.get(PIPELINES, "study", "biology").unwrap()["status"].clone();
    assert_eq!(status["conditions"][0]["reason"], "ApiNotReady");

    // kubectl scale deploy/biology-worker --replicas=5
    let t0 = Instant::now();
    fake.edit(DEPLOYMENTS, "study", "biology-worker", |d| {
        d["spec"]["replicas"] = json!(5)
    });
    until(
        "the worker Deployment to be re-applied",
        Duration::from_secs(5),
        || fake.get(DEPLOYMENTS, "study", "biology-worker").unwrap()["spec"]["replicas"] == 0,
    )
    .await;
    let scaled_back = t0.elapsed();
    let writes = fake.writes_since(t0);
    assert_eq!(
        writes,
        ["PATCH /apis/apps/v1/namespaces/study/deployments/biology-worker"],
        "only the drifted child is applied"
    );
    settled(&fake).await;

    // kubectl delete svc biology-worker
    let t1 = Instant::now();
    fake.delete(SERVICES, "study", "biology-worker");
    until(
        "the worker Service to be re-created",
        Duration::from_secs(5),
        || fake.get(SERVICES, "study", "biology-worker").is_some(),
    )
    .await;
    let recreated = t1.elapsed();
    settled(&fake).await;

    // The API pods become ready (the Deployment controller writes status).
    let t2 = Instant::now();
    fake.edit(DEPLOYMENTS, "study", "biology-api", |d| {
        d["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                             "readyReplicas": 2, "availableReplicas": 2});
    });
    until("Ready=True", Duration::from_secs(5), || {
        fake.get(PIPELINES, "study", "biology").unwrap()["status"]["conditions"][0]["status"]
            == "True"
    })
    .await;
    let ready = t2.elapsed();
    assert_eq!(
        fake.writes_since(t2),
        ["PATCH /apis/flashcards.dev/v1alpha1/namespaces/study/flashcardpipelines/biology/status"],
        "a status-only change of a Deployment is not drift"
    );
    eprintln!(
        "drift repair: hand-scaled Deployment {scaled_back:?}, deleted Service {recreated:?}; \
         API pods ready -> Ready=True {ready:?}"
    );
    for d in [scaled_back, recreated, ready] {
        assert!(d < Duration::from_secs(2), "{d:?}");
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), controller)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}

/// The whole controller, idle for an hour of virtual time (tokio's paused clock): the requests
/// it sends besides its open watches. Expected: only the discovery of the prometheus-operator
/// group every 5 minutes (shared by every pipeline); no apply, no status write, no re-list.
#[tokio::test(start_paused = true)]
async fn an_idle_pipeline_sends_nothing_for_an_hour() {
    let (fake, client) = FakeApi::start(vec![(PIPELINES, pipeline(5))]);
    let ctx = context(client.clone());
    let _controller = tokio::spawn(run(client, Scope::All, ctx, std::future::pending()));
    until("the first reconcile", Duration::from_secs(30), || {
        fake.get(PIPELINES, "study", "biology")
            .is_some_and(|p| !p["status"].is_null())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let idle: Vec<String> = fake
        .log()
        .into_iter()
        .filter(|l| l.at >= start)
        .map(|l| {
            format!(
                "{} {}{}",
                l.method,
                l.path,
                if l.watch { " (watch)" } else { "" }
            )
        })
        .collect();
    eprintln!(
        "idle hour, one pipeline: {} requests ({:.2}/min): {:?}",
        idle.len(),
        idle.len() as f64 / 60.0,
        idle.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        idle.iter()
            .all(|r| r == "GET /apis/monitoring.coreos.com/v1"),
        "{idle:?}"
    );
    // Discovery refreshes at the first poll 5 minutes after the last one: 11 or 12 an hour.
    assert!(
        (11..=12).contains(&idle.len()),
        "discovery every 5 minutes: {}",
        idle.len()
    );
}

/// The store's "work arrived" signal reconciles an idle pipeline at once: a job for a pipeline
/// at zero workers scales it to one within a second, although its poll is 5 minutes away (and
/// without the signal nothing happens). Prints the latency from the signal to the worker
/// Deployment's patch.
#[tokio::test]
async fn a_work_signal_scales_an_idle_pipeline_within_a_second() {
    let (fake, client) = FakeApi::start(vec![(PIPELINES, pipeline(300))]);
    let (ctx, state) = context_with_state(client.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client, Scope::All, ctx.clone(), async move {
        let _ = stop_rx.await;
    }));
    until("the first reconcile", Duration::from_secs(5), || {
        fake.get(PIPELINES, "study", "biology")
            .is_some_and(|p| !p["status"].is_null())
    })
    .await;
    settled(&fake).await;
    assert_eq!(ctx.followers.len(), 1, "the connected pipeline is followed");
    let replicas =
        || fake.get(DEPLOYMENTS, "study", "biology-worker").unwrap()["spec"]["replicas"].clone();
    assert_eq!(replicas(), 0);

    // A job arrives, but no signal: the queue is only read at the next poll.
    *state.counts.lock().unwrap() = flashcard_store::QueueCounts {
        waiting: 1,
        ..Default::default()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        replicas(),
        0,
        "nothing but the signal triggers a reconcile here"
    );

    let mut latencies = Vec::new();
    for (waiting, expected) in [(1u64, 1), (9, 3)] {
        *state.counts.lock().unwrap() = flashcard_store::QueueCounts {
            waiting,
            ..Default::default()
        };
        let t0 = Instant::now();
        state.signals.0.send(1).unwrap();
        until(
            "the worker Deployment to scale",
            Duration::from_secs(5),
            || replicas() == expected,
        )
        .await;
        let patched = fake
            .log()
            .into_iter()
            .find(|l| {
                l.at >= t0
                    && l.method == Method::PATCH
                    && l.path.ends_with("/deployments/biology-worker")
            })
            .expect("the worker Deployment patch");
        latencies.push(patched.at - t0);
        settled(&fake).await;
        // The follower triggers at most once a second.
        tokio::time::sleep(crate::follow::MIN_TRIGGER_INTERVAL).await;
    }
    eprintln!(
        "work signal -> worker Deployment patch: 0 -> 1 in {:?}, 1 -> 3 in {:?} \
         (debounce {:?}; KEDA + HPA: 15-45 s)",
        latencies[0],
        latencies[1],
        super::DEBOUNCE
    );
    for l in &latencies {
        assert!(*l < Duration::from_secs(1), "{l:?}");
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), controller)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}
