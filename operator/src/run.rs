//! `flashcard-operator run`: start-up checks, HTTP server, leader election, the controller and
//! graceful shutdown.
//!
//! Leadership is a loop, not a one-way door: when the Lease is lost (another replica took it,
//! or the API server did not answer within the renew deadline) the controller stops, the
//! process keeps campaigning, and it starts a fresh controller when it leads again. The
//! reconciler's memory (scaling history) survives; only a shutdown signal ends the process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, ListParams};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use flashcard_operator::acl::ManagedRedis;
use flashcard_operator::connector::RedisConnector;
use flashcard_operator::context::Context;
use flashcard_operator::controller::{self, Scope};
use flashcard_operator::crd::FlashcardPipeline;
use flashcard_operator::http::{HttpState, router};
use flashcard_operator::leader::{Elector, Timing};
use flashcard_operator::metrics::Metrics;

/// Settings of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Watch only this namespace (then a Role is enough); empty: all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Elect a leader through a Lease (needed with more than one replica).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "flashcard-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "flashcard-operator")]
    pub identity: String,
    /// Seconds a standby waits, from the last change of the Lease it saw, before taking over.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps leading without a successful renew (below the lease duration).
    #[arg(long, env = "LEASE_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    pub renew_deadline_seconds: u64,
    /// Seconds between two renew or campaign attempts.
    #[arg(long, env = "LEASE_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub retry_period_seconds: u64,
    /// Log format: json or text.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// An admin URL of the operator's Redis (any topology, with a password): pipelines that
    /// omit `spec.redis.urlSecretRef` use it, each through its own ACL user. Unset: such
    /// pipelines are refused.
    #[arg(long, env = "REDIS_ADMIN_URL", hide_env_values = true)]
    pub redis_admin_url: Option<Redacted>,
}

/// A setting that holds a secret: `Debug` never shows it.
#[derive(Clone)]
pub struct Redacted(pub String);

impl std::str::FromStr for Redacted {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl RunArgs {
    fn timing(&self) -> Result<Timing> {
        let t = Timing {
            lease_duration: Duration::from_secs(self.lease_duration_seconds),
            renew_deadline: Duration::from_secs(self.renew_deadline_seconds),
            retry_period: Duration::from_secs(self.retry_period_seconds),
        };
        t.validate().context("leader election settings")?;
        Ok(t)
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = term.recv() => {}, _ = ctrl_c => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(args: RunArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = flashcard_operator::telemetry::init(args.log_format != "text");
    let result = run_with_telemetry(args).await;
    telemetry.shutdown().await;
    result
}

async fn run_with_telemetry(args: RunArgs) -> Result<()> {
    let timing = args.timing()?;

    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let scope = if args.namespace.is_empty() {
        Scope::All
    } else {
        Scope::Namespace(args.namespace.clone())
    };
    let pipelines: Api<FlashcardPipeline> = match &scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    };
    if let Err(e) = pipelines.list(&ListParams::default().limit(1)).await {
        if matches!(&e, kube::Error::Api(s) if s.code == 404) {
            bail!(
                "the FlashcardPipeline CRD is not installed; install it with:\n  \
                 flashcard-operator crd | kubectl apply --server-side -f -"
            );
        }
        return Err(e).context("cannot list FlashcardPipelines (RBAC or API server)");
    }

    let managed = args
        .redis_admin_url
        .as_ref()
        .map(|url| ManagedRedis::new(&url.0).map(Arc::new))
        .transpose()
        .context("--redis-admin-url (REDIS_ADMIN_URL)")?;

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::default().register(&mut registry));
    let ready = Arc::new(AtomicBool::new(true));
    let http = HttpState {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        let app = router(http);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.changed().await;
            })
            .await
    });
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    // Leadership: without election this process always leads.
    let (leader_tx, leader_rx) = watch::channel(!args.leader_election);
    let elector = args.leader_election.then(|| {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
        Arc::new(Elector::new(
            leases,
            &args.lease_name,
            &args.identity,
            timing,
        ))
    });
    if let Some(e) = &elector {
        let (e, stop) = (e.clone(), stop_rx.clone());
        tokio::spawn(async move { e.run(leader_tx, stop).await });
    }

    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        Arc::new(RedisConnector::new(client.clone()).with_managed(managed)),
    ));
    // A controller that does not stop by itself within this much of losing the Lease (a
    // reconcile stuck on the unreachable API server) is dropped, so it cannot write after a
    // standby may have taken over: the standby waits lease - renew deadline longer.
    let grace = timing
        .lease_duration
        .saturating_sub(timing.renew_deadline)
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_secs(1));
    lead_while_leader(
        client,
        scope,
        ctx,
        leader_rx,
        stop_rx,
        &args.identity,
        grace,
    )
    .await;
    ready.store(false, Ordering::Relaxed);
    finish(server, elector).await
}

/// Runs one controller per leadership term until shutdown.
async fn lead_while_leader(
    client: Client,
    scope: Scope,
    ctx: Arc<Context>,
    mut leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    identity: &str,
    grace: Duration,
) {
    loop {
        tracing::info!(%identity, "waiting for leadership");
        tokio::select! {
            r = leader.wait_for(|l| *l) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let term = ctx.begin_term();
        tracing::info!(%identity, term, "became leader; starting the controller");
        let ends = || {
            let (mut stop, mut leader) = (stop.clone(), leader.clone());
            async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    _ = leader.wait_for(|l| !*l) => {}
                }
            }
        };
        let controller = controller::run(client.clone(), scope.clone(), ctx.clone(), ends());
        let deadline = ends();
        tokio::select! {
            _ = controller => {}
            _ = async { deadline.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "the controller did not stop in time; dropping its reconciles");
            }
        }
        if *stop.borrow() {
            return;
        }
        tracing::warn!(%identity, term, "lost leadership; controller stopped, campaigning again");
    }
}

/// Releases the Lease (if held) and waits for the HTTP server to drain.
async fn finish(
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    elector: Option<Arc<Elector>>,
) -> Result<()> {
    if let Some(e) = elector
        && let Err(err) = e.step_down().await
    {
        tracing::warn!(error = %err, "could not release the Lease");
    }
    server.abort();
    tracing::info!("stopped");
    Ok(())
}
