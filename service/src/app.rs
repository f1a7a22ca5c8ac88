//! Wires a mode together: store, metrics, SSE hub, provider, worker and HTTP server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::auth::{AdminAccess, AdminToken};
use crate::api::{self, AppState};
use crate::config::{ExposeSecret, Mode, Settings};
use crate::metrics::Metrics;
use crate::server;
use crate::sse::follow::Followers;
use crate::sse::hub::Hub;
use crate::telemetry;
use crate::worker::{Worker, WorkerOptions};
use flashcard_core::keyspace::PipelineId;
use flashcard_provider::latency::Delayed;
use flashcard_store::memory::MemoryStore;
use flashcard_store::redis::RedisStore;
use flashcard_store::watch::StoreWatch;
use flashcard_store::{Retention, Store};

/// Opens the store the mode needs: Redis when a URL is given (required outside standalone),
/// memory otherwise.
async fn open_store(
    mode: &Mode,
    settings: &Settings,
    pipeline: &PipelineId,
) -> anyhow::Result<Arc<dyn Store>> {
    match (&settings.redis_url, mode) {
        (Some(url), _) => {
            let store = RedisStore::connect(url.expose_secret(), pipeline)
                .await
                .context("cannot reach Redis at --redis-url / REDIS_URL (is it running, and is the URL right?)")?;
            Ok(telemetry::store::Traced::wrap(Arc::new(store), "redis"))
        }
        (None, Mode::Standalone(_)) => Ok(telemetry::store::Traced::wrap(
            Arc::new(MemoryStore::new()),
            "memory",
        )),
        (None, _) => anyhow::bail!(
            "{} mode needs Redis: pass --redis-url or set REDIS_URL (standalone mode runs without it)",
            mode.name()
        ),
    }
}

fn admin_access(mode: &Mode, settings: &Settings) -> anyhow::Result<AdminAccess> {
    let api = &settings.api;
    let token = match (&api.admin_token, &api.admin_token_file) {
        (_, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --admin-token-file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (Some(token), None) => Some(token.expose_secret().trim().to_owned()),
        (None, None) => None,
    };
    Ok(match token {
        Some(token) if !token.is_empty() => AdminAccess::Token(AdminToken::new(&token)),
        _ if matches!(mode, Mode::Standalone(_)) && settings.listen.ip().is_loopback() => {
            AdminAccess::OpenLocal
        }
        _ => AdminAccess::Disabled,
    })
}

fn identities(settings: &Settings) -> anyhow::Result<api::identity::Identities> {
    let api = &settings.api;
    api::identity::Identities::load(
        api.client_identity,
        api.api_keys_file.as_deref(),
        &api.identity_header,
        &api.trusted_proxies,
    )
    .context("client identity configuration")
}

fn worker_options(settings: &Settings) -> WorkerOptions {
    let w = &settings.worker;
    let q = &settings.queue;
    WorkerOptions {
        id: format!(
            "{}-{}",
            if w.pod_name.is_empty() {
                "worker"
            } else {
                &w.pod_name
            },
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        pod: w.pod_name.clone(),
        concurrency: w.concurrency.max(1),
        lease: q.lease(),
        max_stalls: q.max_stalls,
        client_cap: q.client_concurrency,
        backoff_base: Duration::from_millis(q.backoff_ms),
        poll_interval: Duration::from_millis(w.poll_interval_ms.max(10)),
        heartbeat_interval: Duration::from_millis(w.heartbeat_ms.max(100)),
        shutdown_grace: Duration::from_secs(w.shutdown_grace_seconds),
        retention: Retention {
            max_age: Duration::from_secs(q.retention_seconds),
            max_count: q.retention_count,
        },
        prices: settings.provider.prices(),
    }
}

/// The process's stop signals.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// The first SIGTERM or Ctrl-C: drain and stop.
    pub requested: CancellationToken,
    /// A second one: skip what is left of the drain windows.
    pub hurried: CancellationToken,
}

/// The api's drain, from the stop request: `/readyz` fails at once (the caller shares
/// `requested` as the state's `draining`); requests are served for `window`; then the SSE
/// streams end over `spread` (`close_streams`, each with a final `retry:`); then the server
/// stops accepting (`stop_serving`) and finishes what it has.
async fn drain(
    shutdown: Shutdown,
    window: Duration,
    spread: Duration,
    close_streams: CancellationToken,
    stop_serving: CancellationToken,
) {
    shutdown.requested.cancelled().await;
    if !window.is_zero() {
        tracing::info!(?window, "draining: /readyz fails, still serving");
        tokio::select! {
            () = tokio::time::sleep(window) => {}
            () = shutdown.hurried.cancelled() => {}
        }
    }
    tracing::info!(
        ?spread,
        "ending SSE streams; their clients reconnect elsewhere"
    );
    close_streams.cancel();
    // A moment past the last stream's end, so its final `retry:` is written.
    tokio::select! {
        () = tokio::time::sleep(spread + Duration::from_millis(100)) => {}
        () = shutdown.hurried.cancelled() => {}
    }
    stop_serving.cancel();
}

/// The HTTP listeners of a process: the main one, and the operations one when it has its own.
struct Listeners {
    main: (tokio::net::TcpListener, axum::Router),
    operations: Option<(tokio::net::TcpListener, axum::Router)>,
    limits: server::Limits,
}

impl Listeners {
    /// Serves every listener until `stop` fires and each has finished.
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let (listener, router) = self.main;
        let main = server::serve(listener, router, self.limits.clone(), stop.clone());
        match self.operations {
            None => main.await,
            Some((listener, router)) => {
                let operations = server::serve(listener, router, self.limits, stop);
                let (main, operations) = tokio::join!(main, operations);
                main.and(operations)
            }
        }
    }
}

/// Runs `mode` until `shutdown` fires (SIGTERM / Ctrl-C in the binary).
pub async fn run(mode: Mode, signals: Shutdown) -> anyhow::Result<()> {
    let shutdown = signals.requested.clone();
    let stop_serving = CancellationToken::new();
    let close_streams = CancellationToken::new();
    let settings = Arc::new(mode.settings().clone());
    let pipeline = PipelineId::new(Some(&settings.pipeline_namespace), &settings.pipeline)?;
    let store = open_store(&mode, &settings, &pipeline).await?;
    let metrics = Arc::new(Metrics::new(pipeline.name().as_str(), mode.name()));
    let store_watch = StoreWatch::new(
        store.clone(),
        settings.budget.config(matches!(mode, Mode::Standalone(_))),
    );
    store_watch.start(shutdown.clone()).await;
    let hub = Hub::new(
        settings.api.sse_max_connections,
        settings.api.sse_client_buffer,
        Duration::from_secs(settings.api.sse_heartbeat_seconds.max(1)),
        metrics.clone(),
    );
    let followers = Arc::new(Followers {
        hub: hub.clone(),
        store: store.clone(),
        retry: Duration::from_millis(settings.api.sse_retry_ms),
        close_spread: Duration::from_millis(settings.api.drain_spread_ms),
    });
    let runs_worker = !matches!(mode, Mode::Api(_));
    let runs_api = !matches!(mode, Mode::Worker(_));

    let mut worker_task = None;
    let mut local_breaker = None;
    if runs_worker {
        let (provider, breaker) =
            crate::providers::build(&settings.provider).context("provider configuration")?;
        let provider = Delayed::wrap(
            provider,
            Duration::from_millis(settings.provider.simulated_latency_ms),
        );
        let provider = telemetry::provider::Traced::wrap(provider, settings.provider.prices());
        let breaker_handle = breaker.clone();
        local_breaker = Some(Arc::new(move || breaker_handle.state().as_str())
            as Arc<dyn Fn() -> &'static str + Send + Sync>);
        let worker = Worker::new(
            store.clone(),
            provider,
            breaker,
            metrics.clone(),
            worker_options(&settings),
        );
        worker_task = Some(tokio::spawn(worker.run(shutdown.clone())));
    }

    let state = AppState {
        store: store.clone(),
        followers,
        metrics,
        settings: settings.clone(),
        store_watch,
        admin: admin_access(&mode, &settings)?,
        identities: Arc::new(identities(&settings)?),
        local_breaker,
        draining: shutdown.clone(),
    };
    // Checked and bound before the feed starts, so a bad setting or a taken port fails fast.
    let sse_heartbeat =
        runs_api.then(|| Duration::from_secs(settings.api.sse_heartbeat_seconds.max(1)));
    let limits = server::Limits::new(
        &settings.api.http,
        settings.api.max_body_bytes,
        sse_heartbeat,
    )?;
    let listener = server::bind(settings.listen, limits.listen_backlog)?;
    let operations = settings
        .operations_listen
        .map(|addr| server::bind(addr, limits.listen_backlog))
        .transpose()?;
    let surface = match operations {
        Some(_) => api::Surface::Clients,
        None => api::Surface::All,
    };
    if runs_api {
        hub.start(&*store, close_streams.clone())
            .await
            .context("cannot start the job event feed")?;
        tokio::spawn(drain(
            signals,
            Duration::from_secs(settings.api.drain_seconds),
            Duration::from_millis(settings.api.drain_spread_ms),
            close_streams.clone(),
            stop_serving.clone(),
        ));
    }
    let routes = |surface| match runs_api {
        true => api::router(state.clone(), surface),
        false => api::worker_router(state.clone(), surface),
    };
    let listeners = Listeners {
        main: (listener, routes(surface)),
        operations: operations.map(|l| (l, routes(api::Surface::Operations))),
        limits,
    };
    match worker_task {
        // Worker mode: the HTTP server (only /metrics and the probes) outlives the drain, so the
        // pod stays observable and live while its jobs finish; it stops once the worker is done.
        Some(mut task) if !runs_api => {
            let stop_http = CancellationToken::new();
            let serve = listeners.serve(stop_http.clone());
            tokio::pin!(serve);
            tokio::select! {
                served = &mut serve => {
                    served.context("HTTP server failed")?;
                    task.await.context("worker task panicked")?;
                }
                joined = &mut task => {
                    stop_http.cancel();
                    serve.await.context("HTTP server failed")?;
                    joined.context("worker task panicked")?;
                }
            }
        }
        // api and standalone: drain (above), then let a standalone worker finish its jobs.
        worker_task => {
            listeners
                .serve(stop_serving)
                .await
                .context("HTTP server failed")?;
            if let Some(task) = worker_task {
                task.await.context("worker task panicked")?;
            }
        }
    }
    Ok(())
}
