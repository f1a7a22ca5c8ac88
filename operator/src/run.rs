//! `flashcard-operator run`: start-up checks, HTTP server, leader election, the controller and
//! graceful shutdown.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use flashcard_operator::connector::RedisConnector;
use flashcard_operator::context::Context;
use flashcard_operator::crd::FlashcardPipeline;
use flashcard_operator::http::{HttpState, router};
use flashcard_operator::leader::Elector;
use flashcard_operator::metrics::Metrics;
use flashcard_operator::reconcile::{error_policy, reconcile};

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
    /// Log format: json or text.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
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
    flashcard_operator::telemetry::init(args.log_format != "text");

    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let pipelines: Api<FlashcardPipeline> = if args.namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &args.namespace)
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

    // Leadership.
    let (leader_tx, mut leader_rx) = watch::channel(!args.leader_election);
    let elector = args.leader_election.then(|| {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
        Arc::new(Elector::new(leases, &args.lease_name, &args.identity))
    });
    if let Some(e) = &elector {
        let (e, stop) = (e.clone(), stop_rx.clone());
        tokio::spawn(async move { e.run(leader_tx, stop).await });
        tracing::info!(identity = %args.identity, lease = %args.lease_name, "waiting for leadership");
        let mut stop = stop_rx.clone();
        tokio::select! {
            r = leader_rx.wait_for(|l| *l) => { r.context("elector stopped")?; }
            _ = stop.wait_for(|s| *s) => { return finish(server, None).await; }
        }
        tracing::info!("became leader");
    }

    // The controller, until shutdown or lost leadership.
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        Arc::new(RedisConnector::new(client.clone())),
    ));
    let lost = Arc::new(AtomicBool::new(false));
    let stop_trigger = {
        let (mut stop, mut leader, lost) = (stop_rx.clone(), leader_rx.clone(), lost.clone());
        async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = leader.wait_for(|l| !*l) => { lost.store(true, Ordering::Relaxed); }
            }
        }
    };
    let controller = Controller::new(pipelines, watcher::Config::default().any_semantic());
    let store = controller.store();
    let pruner = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let alive: HashSet<String> = store
                    .state()
                    .iter()
                    .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                    .collect();
                ctx.prune(&alive).await;
            }
        })
    };
    controller
        .graceful_shutdown_on(stop_trigger)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile result");
            }
        })
        .await;
    pruner.abort();
    ready.store(false, Ordering::Relaxed);
    if lost.load(Ordering::Relaxed) {
        let _ = finish(server, None).await;
        bail!("lost leadership; exiting so a fresh process campaigns again");
    }
    finish(server, elector).await
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
