//! Test fixtures: a fake store, a fake connector and a scripted mock API server (tower-test)
//! that checks each request the reconciler sends and records it.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flashcard_store::{
    BudgetConfig, BudgetState, Epoch, KillSwitch, QueueCounts, SetBy, Spend, StoreError,
    StoreResult, WorkerInfo, budget_stop_lapsed,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use crate::context::Context;
use crate::crd::FlashcardPipeline;
use crate::metrics::Metrics;
use crate::state::{Connector, PipelineState};

/// The "work arrived" signals of a [`FakeState`]: a test sends, followers receive.
#[derive(Debug)]
pub struct Signals(pub tokio::sync::broadcast::Sender<u64>);

impl Default for Signals {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(16).0)
    }
}

/// In-memory stand-in for a pipeline's store.
#[derive(Debug, Default)]
pub struct FakeState {
    pub counts: Mutex<QueueCounts>,
    pub workers: Mutex<Vec<WorkerInfo>>,
    pub kill_switch: Mutex<Option<KillSwitch>>,
    pub spent_micros: Mutex<u64>,
    pub budget: Mutex<Option<BudgetConfig>>,
    pub epoch: Mutex<Option<Epoch>>,
    /// Every budget written, in order.
    pub budget_writes: Mutex<Vec<BudgetConfig>>,
    pub signals: Signals,
    /// How many times the store was purged.
    pub purges: Mutex<u32>,
    /// Every read fails, like a Redis that refuses the password.
    pub broken: Mutex<bool>,
}

impl FakeState {
    /// The automatic stop at an enforced limit, as the real store switches it.
    fn switch_on_at_the_limit(&self, budget: &BudgetConfig) {
        let spent = *self.spent_micros.lock().unwrap();
        let limit = budget.enforced_limit();
        if limit > 0 && spent >= limit && !self.kill_switch_now().enabled {
            *self.kill_switch.lock().unwrap() = Some(KillSwitch {
                limit_micros: Some(budget.limit_micros),
                period: Some(budget.period_key(jiff::Timestamp::now())),
                ..KillSwitch::manual(
                    SetBy::Budget,
                    Some(flashcard_store::budget_stop_reason(
                        spent,
                        budget.limit_micros,
                        &budget.period_key(jiff::Timestamp::now()),
                    )),
                    1,
                )
            });
        }
    }

    pub fn kill_switch_now(&self) -> KillSwitch {
        self.kill_switch
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(KillSwitch::off)
    }
}

pub fn worker(pod: &str, active: u32) -> WorkerInfo {
    WorkerInfo {
        id: format!("w-{pod}"),
        pod: pod.into(),
        active,
        concurrency: 4,
        breaker: "closed".into(),
        draining: false,
        last_seen: 0,
    }
}

#[async_trait]
impl PipelineState for FakeState {
    async fn counts(&self) -> StoreResult<QueueCounts> {
        if *self.broken.lock().unwrap() {
            return Err(StoreError::Corrupt("WRONGPASS invalid password".into()));
        }
        Ok(*self.counts.lock().unwrap())
    }
    async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        Ok(self.workers.lock().unwrap().clone())
    }
    async fn budget_state(&self) -> StoreResult<BudgetState> {
        let stored = *self.budget.lock().unwrap();
        let config = stored.unwrap_or_else(BudgetConfig::unlimited);
        let now = jiff::Timestamp::now();
        let spent_micros = *self.spent_micros.lock().unwrap();
        let ks = self.kill_switch_now();
        if budget_stop_lapsed(&ks, &config, spent_micros, now) {
            *self.kill_switch.lock().unwrap() = None;
        }
        // As the real store does: the stop is reviewed on every read.
        if stored.is_some() {
            self.switch_on_at_the_limit(&config);
        }
        Ok(BudgetState {
            config,
            stored: stored.is_some(),
            kill_switch: self.kill_switch_now(),
            period: config.period_key(now),
            spend: Spend {
                spent_micros,
                ..Spend::default()
            },
            epoch: self.epoch.lock().unwrap().clone(),
        })
    }
    async fn set_budget(&self, budget: &BudgetConfig) -> StoreResult<()> {
        *self.budget.lock().unwrap() = Some(*budget);
        self.budget_writes.lock().unwrap().push(*budget);
        self.switch_on_at_the_limit(budget);
        Ok(())
    }
    async fn ensure_epoch(&self) -> StoreResult<(Epoch, bool)> {
        let mut epoch = self.epoch.lock().unwrap();
        match &*epoch {
            Some(e) => Ok((e.clone(), false)),
            None => {
                let e = Epoch::new(1);
                *epoch = Some(e.clone());
                Ok((e, true))
            }
        }
    }
    async fn restore_spend(&self, _period: &str, spent_micros: u64) -> StoreResult<Spend> {
        let mut spent = self.spent_micros.lock().unwrap();
        *spent = (*spent).max(spent_micros);
        Ok(Spend {
            spent_micros: *spent,
            ..Spend::default()
        })
    }
    async fn set_kill_switch(&self, state: &KillSwitch) -> StoreResult<()> {
        *self.kill_switch.lock().unwrap() = Some(state.clone());
        Ok(())
    }
    async fn work_signals(&self) -> StoreResult<BoxStream<'static, u64>> {
        let rx = self.signals.0.subscribe();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(n) => return Some((n, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }
    async fn purge(&self) -> StoreResult<u64> {
        *self.purges.lock().unwrap() += 1;
        *self.counts.lock().unwrap() = QueueCounts::default();
        self.workers.lock().unwrap().clear();
        *self.kill_switch.lock().unwrap() = None;
        *self.spent_micros.lock().unwrap() = 0;
        *self.budget.lock().unwrap() = None;
        *self.epoch.lock().unwrap() = None;
        Ok(7)
    }
    async fn clear_kill_switch_if(&self, set_by: SetBy) -> StoreResult<bool> {
        let mut ks = self.kill_switch.lock().unwrap();
        if ks
            .as_ref()
            .is_some_and(|k| k.enabled && k.set_by == Some(set_by))
        {
            *ks = None;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Hands out one `FakeState`, or fails like an unreachable Redis; after a reported failure,
/// the `rotated` store if there is one (the Secret's new URL).
#[derive(Default)]
pub struct FakeConnector {
    pub state: Arc<FakeState>,
    pub down: Mutex<bool>,
    /// Connecting never ends (a Redis that accepts and never answers).
    pub hangs: Mutex<bool>,
    /// What `refused_secrets` answers.
    pub refused: Mutex<Vec<String>>,
    pub rotated: Mutex<Option<Arc<FakeState>>>,
    /// Failures the reconciler reported.
    pub reports: Mutex<u32>,
}

impl FakeConnector {
    pub fn new(state: Arc<FakeState>) -> Self {
        Self {
            state,
            ..Self::default()
        }
    }
}

#[async_trait]
impl Connector for FakeConnector {
    async fn connect(&self, _p: &FlashcardPipeline) -> Result<Arc<dyn PipelineState>, String> {
        if *self.down.lock().unwrap() {
            return Err(StoreError::Corrupt("connection refused".into()).to_string());
        }
        if *self.hangs.lock().unwrap() {
            std::future::pending::<()>().await;
        }
        if *self.reports.lock().unwrap() > 0
            && let Some(fresh) = self.rotated.lock().unwrap().clone()
        {
            return Ok(fresh);
        }
        Ok(self.state.clone())
    }

    async fn report_failure(&self, _p: &FlashcardPipeline) {
        *self.reports.lock().unwrap() += 1;
    }

    async fn refused_secrets(&self, _p: &FlashcardPipeline) -> Result<Vec<String>, String> {
        Ok(self.refused.lock().unwrap().clone())
    }
}

/// One expected request and the answer to give.
pub struct Expect {
    pub method: Method,
    /// The request path (without the query).
    pub path: String,
    /// Match only the start of the path (for names the code generates, e.g. Events).
    pub prefix: bool,
    /// `None`: echo the request body with 200 (what an apply returns, near enough).
    pub reply: Option<(StatusCode, Value)>,
}

pub fn expect(method: Method, path: &str) -> Expect {
    Expect {
        method,
        path: path.into(),
        prefix: false,
        reply: None,
    }
}

/// Expects a request whose path starts with `prefix`.
pub fn expect_prefix(method: Method, prefix: &str) -> Expect {
    Expect {
        prefix: true,
        ..expect(method, prefix)
    }
}

impl Expect {
    pub fn reply(mut self, status: StatusCode, body: Value) -> Self {
        self.reply = Some((status, body));
        self
    }
}

/// A request the reconciler sent, and the mock's answer.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub body: Value,
    pub response: Value,
}

/// A Kubernetes `Status` error body.
pub fn status_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "message": format!("mock {reason}"), "reason": reason, "code": code})
}

/// Discovery answer listing the prometheus-operator resources.
pub fn monitoring_resources() -> Value {
    let r = |name: &str, kind: &str| {
        json!({"name": name, "singularName": "", "namespaced": true,
        "kind": kind, "verbs": ["get", "list", "watch", "create", "patch"]})
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
           "resources": [r("prometheusrules", "PrometheusRule"), r("servicemonitors", "ServiceMonitor")]})
}

/// Serves the expected requests in order and returns what it saw.
pub fn serve(
    handle: Handle<Request<Body>, Response<Body>>,
    pipeline: &FlashcardPipeline,
    script: Vec<Expect>,
) -> (tokio::task::JoinHandle<Vec<Seen>>, Arc<Mutex<Vec<Seen>>>) {
    let pipeline = serde_json::to_value(pipeline).unwrap();
    let record = Arc::new(Mutex::new(Vec::new()));
    let rec = record.clone();
    let task = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let mut seen = Vec::new();
        for (i, exp) in script.into_iter().enumerate() {
            let (request, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("request #{i} ({} {}) never came", exp.method, exp.path));
            let method = request.method().clone();
            let uri = request.uri().to_string();
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let shown = if exp.prefix && path.starts_with(&exp.path) {
                exp.path.as_str()
            } else {
                path.as_str()
            };
            assert_eq!(
                (&method, shown),
                (&exp.method, exp.path.as_str()),
                "request #{i}: {uri}"
            );
            let (status, reply) = match exp.reply {
                Some(r) => r,
                None if path.ends_with("/status") => {
                    let mut p = pipeline.clone();
                    p["status"] = body["status"].clone();
                    p["metadata"]["resourceVersion"] = json!(format!("{}", 100 + i));
                    (StatusCode::OK, p)
                }
                None if path.starts_with("/api/v1/namespaces/") && path.contains("/pods/") => {
                    let name = path.rsplit('/').next().unwrap_or_default();
                    (
                        StatusCode::OK,
                        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}),
                    )
                }
                None if method == Method::PATCH => {
                    // An apply: the object as stored, with the versions the API server stamps.
                    let mut obj = body.clone();
                    obj["metadata"]["resourceVersion"] = json!(format!("{}", 100 + i));
                    if obj.get("spec").is_some() {
                        obj["metadata"]["generation"] = json!(1);
                    }
                    (StatusCode::OK, obj)
                }
                None => (StatusCode::OK, body.clone()),
            };
            let s = Seen {
                method,
                uri,
                body,
                response: reply.clone(),
            };
            rec.lock().unwrap().push(s.clone());
            seen.push(s);
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
        seen
    });
    (task, record)
}

pub type MockHandle = Handle<Request<Body>, Response<Body>>;

/// The observe timeout of [`context`] (the fake store answers at once; this only bounds a test
/// whose connector hangs).
pub const OBSERVE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// A context on a mock API server, with a fake store.
pub fn context() -> (Arc<Context>, MockHandle, Arc<FakeState>, Arc<FakeConnector>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let state = Arc::new(FakeState::default());
    let connector = Arc::new(FakeConnector::new(state.clone()));
    let mut ctx = Context::new(client, Arc::new(Metrics::default()), connector.clone());
    ctx.observe_timeout = OBSERVE_TIMEOUT;
    (Arc::new(ctx), handle, state, connector)
}

/// Child watch stores holding what the reconciler applied (as the API server answered), as if
/// the watches had delivered every apply: a later reconcile finds its children in sync.
pub fn stores_from(seen: &[Seen]) -> crate::children::ChildStores {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::core::PartialObjectMeta;
    use kube::core::PartialObjectMetaExt;
    let (mut deps, mut svcs, mut cms, mut ings) = (vec![], vec![], vec![], vec![]);
    for s in seen.iter().filter(|s| s.method == Method::PATCH) {
        let r = &s.response;
        let meta =
            || serde_json::from_value::<kube::api::ObjectMeta>(r["metadata"].clone()).unwrap();
        match r["kind"].as_str() {
            Some("Deployment") => {
                deps.push(serde_json::from_value::<Deployment>(r.clone()).unwrap())
            }
            Some("Service") => svcs.push(meta().into_response_partial()),
            Some("ConfigMap") => cms.push(meta().into_response_partial()),
            Some("Ingress") => ings.push(meta().into_response_partial()),
            _ => {}
        }
    }
    let _: &[PartialObjectMeta<k8s_openapi::api::core::v1::Service>] = &svcs;
    crate::children::test_support::stores(deps, svcs, cms, ings)
}
