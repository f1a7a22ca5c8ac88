//! A small fake API server built on tower-test for tests of the whole controller: it keeps
//! objects, stamps resourceVersions and generations, serves lists and (metadata) watches, lets a
//! test edit or delete an object as a person would, and can go down (every request and open
//! watch fails as if the connection were refused) and come back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_test::mock::{self, SendResponse};

use crate::render::test_support::minimal;

pub const PIPELINES: &str = "apis/flashcards.dev/v1alpha1/flashcardpipelines";
pub const DEPLOYMENTS: &str = "apis/apps/v1/deployments";
pub const SERVICES: &str = "api/v1/services";

/// A request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub watch: bool,
}

pub struct Parked {
    collection: String,
    namespace: Option<String>,
    since: u64,
    metadata_only: bool,
    send: SendResponse<Response<Body>>,
}

#[derive(Default)]
pub struct State {
    rv: u64,
    /// (collection, namespace, name) -> object
    objects: BTreeMap<(String, String, String), Value>,
    /// (rv, collection, namespace, type, object)
    history: Vec<(u64, String, String, &'static str, Value)>,
    pub parked: Vec<Parked>,
    log: Vec<Logged>,
    /// The server is down: every request fails as a refused connection would.
    down: bool,
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
pub struct FakeApi {
    pub state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub fn start(objects: Vec<(&str, Value)>) -> (Self, Client) {
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
    pub fn put(&self, collection: &str, mut obj: Value, kind: &'static str) -> Value {
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

    pub fn get(&self, collection: &str, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(collection.into(), ns.into(), name.into()))
            .cloned()
    }

    /// A person's edit: changes the object, bumping the generation if the spec changed.
    pub fn edit(&self, collection: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.get(collection, ns, name).expect("object to edit");
        let spec = obj["spec"].clone();
        f(&mut obj);
        if obj["spec"] != spec {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        self.put(collection, obj, "MODIFIED");
    }

    pub fn delete(&self, collection: &str, ns: &str, name: &str) {
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

    /// Takes the server down (open watches fail at once, as when the connection breaks) or
    /// brings it back.
    pub fn set_down(&self, down: bool) {
        let mut st = self.state.lock().unwrap();
        st.down = down;
        if down {
            for p in std::mem::take(&mut st.parked) {
                p.send.send_error("connection reset by peer");
            }
        }
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Applies (and other writes) after `since`, as `METHOD path`.
    pub fn writes_since(&self, since: Instant) -> Vec<String> {
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
        let json_patch = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json-patch"));
        let watch = query(&uri, "watch").as_deref() == Some("true");
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.state.lock().unwrap().log.push(Logged {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            watch,
        });
        if self.state.lock().unwrap().down {
            return send.send_error("connection refused");
        }
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
            (Method::PATCH, Some(name)) if json_patch => {
                // A JSON patch (the finalizer helper's): applied as the API server would, and an
                // object being deleted goes once its last finalizer is removed.
                let ns = t.namespace.unwrap_or_default();
                let Some(mut obj) = self.get(&t.collection, &ns, name) else {
                    return send.send_response(reply(StatusCode::NOT_FOUND, &not_found()));
                };
                // The API server's JSON patch reads a missing field as null (kube's finalizer
                // helper tests `/metadata/finalizers` for null before adding the first one).
                if obj["metadata"].get("finalizers").is_none() {
                    obj["metadata"]["finalizers"] = Value::Null;
                }
                let patched = serde_json::from_value::<json_patch::Patch>(body)
                    .map_err(|e| e.to_string())
                    .and_then(|patch| {
                        json_patch::patch(&mut obj, &patch).map_err(|e| e.to_string())
                    });
                if let Err(e) = patched {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "Invalid", "code": 422, "message": e});
                    return send.send_response(reply(StatusCode::UNPROCESSABLE_ENTITY, &status));
                }
                let gone = !obj["metadata"]["deletionTimestamp"].is_null()
                    && obj["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(|f| f.is_empty());
                let obj = self.put(&t.collection, obj, "MODIFIED");
                if gone {
                    self.delete(&t.collection, &ns, name);
                }
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

pub fn pipeline(poll_seconds: u32) -> Value {
    let mut p = minimal();
    p.spec.worker.poll_interval_seconds = poll_seconds;
    let mut v = serde_json::to_value(&p).unwrap();
    v["apiVersion"] = json!("flashcards.dev/v1alpha1");
    v["kind"] = json!("FlashcardPipeline");
    v["metadata"]["generation"] = json!(3);
    v
}

pub async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The five watches are open (parked) again: the controller has caught up.
pub async fn settled(fake: &FakeApi) {
    until("the watches to settle", Duration::from_secs(5), || {
        fake.state.lock().unwrap().parked.len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
}
