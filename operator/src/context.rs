//! Shared state of the reconciler: the client, Event recorder, metrics, store connector, the
//! followers of the stores' signals, the child watches, the cached monitoring discovery and
//! per-pipeline memory (scaling history, what was applied, the status last written).
//!
//! The context outlives a leadership term: after the operator loses and regains the Lease it
//! keeps each pipeline's scaling history (so the scale-down window is not restarted), but drops
//! what another leader may have changed meanwhile (see [`PipelineMemory::enter_term`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::Client;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::backoff::Failures;
use crate::children::{Applied, ChildStores};
use crate::crd::FlashcardPipelineStatus;
use crate::events::Recorder;
use crate::follow::Followers;
use crate::metrics::Metrics;
use crate::render::MANAGER;
use crate::render::monitoring::MONITORING_GROUP;
use crate::scaling::ScaleHistory;
use crate::state::Connector;

/// How long a discovery answer about monitoring.coreos.com is trusted.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// Children the operator does not watch (PrometheusRule, ServiceMonitor, or any kind whose watch
/// has not listed yet) are re-applied this often even when nothing changed. Watched children are
/// repaired from their watch events instead, so this is the only periodic write of an idle
/// pipeline.
pub const RESYNC_UNWATCHED: Duration = Duration::from_secs(600);

/// The status the operator last wrote, with the pipeline's resourceVersion before and after, so
/// a reconcile that still sees the older object (its watch event not in yet) does not write the
/// same status again.
#[derive(Debug, Clone)]
pub struct WrittenStatus {
    pub before: Option<String>,
    pub after: Option<String>,
    pub status: FlashcardPipelineStatus,
}

/// What the reconciler remembers about one pipeline between polls (lost on restart: then the
/// status seeds it).
#[derive(Debug, Default)]
pub struct PipelineMemory {
    /// The leadership term this memory belongs to.
    pub term: u64,
    pub history: Option<ScaleHistory>,
    /// Worker replicas last applied.
    pub replicas: Option<u32>,
    /// Each child as last applied (`Kind/name`).
    pub applied: HashMap<String, Applied>,
    /// When the children without a usable watch were last re-applied.
    pub last_resync: Option<Instant>,
    /// The pipeline's Ingress is known not to exist (deleted or never there since this process
    /// started). Unknown after a restart, so an Ingress dropped from the spec while the operator
    /// was down is still removed.
    pub ingress_absent: bool,
    /// Deletion cost last written per pod.
    pub pod_costs: HashMap<String, u32>,
    pub written: Option<WrittenStatus>,
    /// When this process last wrote the status (gauge-only changes wait for
    /// `GAUGE_WRITE_INTERVAL` after it).
    pub written_at: Option<Instant>,
    /// When this process won the Lease again (a term after its first): children the watch
    /// shows present are re-applied spread over [`TERM_APPLY_SPREAD`] from then, not at once.
    pub term_started: Option<Instant>,
}

/// After a leadership flap, the re-apply of present children (another leader may have changed
/// them) is spread over this long, each child at its own offset: a new term costs the API
/// server no burst of every child of every pipeline. Missing children are applied at once.
pub const TERM_APPLY_SPREAD: Duration = Duration::from_secs(30);

impl PipelineMemory {
    /// Starts a new leadership term. Another leader may have scaled, applied or written status
    /// meanwhile, so the replica count, the applied versions and the written status are
    /// forgotten (the status and the children are read again); the scaling history is kept,
    /// because its highest recent recommendation is what makes a scale-down wait.
    pub fn enter_term(&mut self, term: u64) {
        if self.term == term {
            return;
        }
        self.term = term;
        self.replicas = None;
        self.applied.clear();
        self.last_resync = None;
        self.ingress_absent = false;
        self.pod_costs.clear();
        self.written = None;
        self.written_at = None;
        self.term_started = (term > 1).then(Instant::now);
    }
}

/// Context handed to every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub connector: Arc<dyn Connector>,
    /// One follower of "work arrived" signals per connected pipeline.
    pub followers: Followers,
    /// Longest wait for a pipeline's store in one pass (connect and every read); see
    /// [`crate::reconcile::OBSERVE_TIMEOUT`].
    pub observe_timeout: Duration,
    /// Failed reconciles in a row, per pipeline (their backoff).
    pub reconcile_failures: Failures,
    /// Passes in a row whose store did not answer, per pipeline (their poll backoff).
    pub store_failures: Failures,
    children: RwLock<ChildStores>,
    term: AtomicU64,
    /// Locked only to read or store the answer, never across the discovery request.
    monitoring: std::sync::Mutex<Option<(Instant, bool)>>,
    pipelines: Mutex<HashMap<String, Arc<Mutex<PipelineMemory>>>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, connector: Arc<dyn Connector>) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), MANAGER, std::env::var("POD_NAME").ok()),
            client,
            metrics,
            connector,
            followers: Followers::default(),
            observe_timeout: crate::reconcile::OBSERVE_TIMEOUT,
            reconcile_failures: Failures::default(),
            store_failures: Failures::default(),
            // Not listed yet: every child counts as unknown until the controller's watches run.
            children: RwLock::new(ChildStores::new().0),
            term: AtomicU64::new(0),
            monitoring: std::sync::Mutex::new(None),
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    /// The current child watches.
    pub fn children(&self) -> ChildStores {
        match self.children.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Installs the stores of a new controller's child watches.
    pub fn set_children(&self, stores: ChildStores) {
        match self.children.write() {
            Ok(mut c) => *c = stores,
            Err(poisoned) => *poisoned.into_inner() = stores,
        }
    }

    /// Starts a new leadership term (see [`PipelineMemory::enter_term`]).
    pub fn begin_term(&self) -> u64 {
        self.term.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The current leadership term.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Whether the prometheus-operator CRDs are served (API discovery, cached for
    /// [`DISCOVERY_TTL`]). Any error counts as "not available".
    pub async fn monitoring_available(&self) -> bool {
        let lock = || self.monitoring.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, available)) = *lock()
            && at.elapsed() < DISCOVERY_TTL
        {
            return available;
        }
        // Passes that find the answer stale at the same moment may each ask; none waits for
        // another's request.
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
        *lock() = Some((Instant::now(), available));
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
        self.reconcile_failures.retain(alive);
        self.store_failures.retain(alive);
        for key in gone {
            self.followers.stop(&key);
            self.connector.forget(&key).await;
            if let Some((ns, name)) = key.split_once('/') {
                self.metrics.forget(name, ns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_term_forgets_what_another_leader_may_have_changed_but_keeps_the_history() {
        let now = jiff::Timestamp::now();
        let mut m = PipelineMemory {
            term: 1,
            history: Some(ScaleHistory::seeded(now, 7)),
            replicas: Some(7),
            ingress_absent: true,
            ..PipelineMemory::default()
        };
        m.enter_term(1);
        assert_eq!(m.replicas, Some(7), "same term: nothing forgotten");
        m.enter_term(2);
        assert_eq!(m.replicas, None);
        assert!(
            m.term_started.is_some(),
            "a re-election spreads its re-applies"
        );
        assert!(!m.ingress_absent);
        assert!(m.history.is_some(), "the scale-down window survives");
    }
}
