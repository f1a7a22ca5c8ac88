//! Shared state of the reconciler: the client, Event recorder, metrics, store connector, the
//! cached monitoring discovery and per-pipeline memory (scaling history, what was applied).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::Mutex;

use crate::metrics::Metrics;
use crate::render::MANAGER;
use crate::render::monitoring::MONITORING_GROUP;
use crate::scaling::ScaleHistory;
use crate::state::Connector;

/// How long a discovery answer about monitoring.coreos.com is trusted.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// Children are re-applied at least this often, even when nothing changed (repairs drift).
pub const RESYNC: Duration = Duration::from_secs(60);

/// What the reconciler remembers about one pipeline between polls (lost on restart: then the
/// status seeds it).
#[derive(Debug, Default)]
pub struct PipelineMemory {
    pub history: Option<ScaleHistory>,
    /// Worker replicas last applied.
    pub replicas: Option<u32>,
    /// Hash of each child as last applied (`Kind/name` -> hash).
    pub applied: HashMap<String, u64>,
    pub last_full_apply: Option<Instant>,
    /// The pipeline's Ingress is known not to exist (deleted or never there since this process
    /// started). Unknown after a restart, so an Ingress dropped from the spec while the operator
    /// was down is still removed.
    pub ingress_absent: bool,
    /// Deletion cost last written per pod.
    pub pod_costs: HashMap<String, u32>,
    /// The budget level last seen (for warn Events on transitions).
    pub budget_level: Option<crate::budget::Level>,
    /// Whether the store was reachable at the last poll.
    pub store_ok: Option<bool>,
    /// Who held the kill-switch at the last poll (`Some(None)`: nobody), for Events on changes.
    pub kill_switch_holder: Option<Option<crate::budget::Holder>>,
}

/// Context handed to every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub connector: Arc<dyn Connector>,
    monitoring: Mutex<Option<(Instant, bool)>>,
    pipelines: Mutex<HashMap<String, Arc<Mutex<PipelineMemory>>>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, connector: Arc<dyn Connector>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            connector,
            monitoring: Mutex::new(None),
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the prometheus-operator CRDs are served (API discovery, cached for
    /// [`DISCOVERY_TTL`]). Any error counts as "not available".
    pub async fn monitoring_available(&self) -> bool {
        let mut cached = self.monitoring.lock().await;
        if let Some((at, available)) = *cached
            && at.elapsed() < DISCOVERY_TTL
        {
            return available;
        }
        let available = match self
            .client
            .list_api_group_resources(&format!("{MONITORING_GROUP}/v1"))
            .await
        {
            Ok(list) => {
                let has = |n: &str| list.resources.iter().any(|r| r.name == n);
                has("prometheusrules") && has("servicemonitors")
            }
            Err(e) => {
                tracing::debug!(error = %e, "monitoring.coreos.com/v1 not discovered");
                false
            }
        };
        *cached = Some((Instant::now(), available));
        available
    }

    /// The memory of one pipeline (`namespace/name`).
    pub async fn memory(&self, key: &str) -> Arc<Mutex<PipelineMemory>> {
        self.pipelines
            .lock()
            .await
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets pipelines that no longer exist (memory, connection, gauges); `alive` holds the
    /// `namespace/name` of every existing pipeline.
    pub async fn prune(&self, alive: &std::collections::HashSet<String>) {
        let gone: Vec<String> = {
            let mut pipelines = self.pipelines.lock().await;
            let gone = pipelines
                .keys()
                .filter(|k| !alive.contains(*k))
                .cloned()
                .collect();
            pipelines.retain(|k, _| alive.contains(k));
            gone
        };
        for key in gone {
            self.connector.forget(&key).await;
            if let Some((ns, name)) = key.split_once('/') {
                self.metrics.forget(name, ns);
            }
        }
    }
}
