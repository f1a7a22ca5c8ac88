//! `flashcard-service`: one binary, several modes (standalone, api, worker).

use clap::Parser;
use flashcard_service::app::Shutdown;
use flashcard_service::config::{Cli, LogFormat};
use flashcard_telemetry as telemetry;

/// jemalloc, measured against glibc malloc and mimalloc on the api holding idle SSE followers
/// (release build, 10,000 followers, issue 12): RSS per follower 11.5 KiB (glibc 15.6 KiB,
/// mimalloc 23.1 KiB), and 60 s after they all closed 96% of the growth was back with the
/// OS (glibc 12%, mimalloc 0%: neither returns memory from an idle process). The ~4 KiB less
/// per follower is about one page: jemalloc keeps no headers next to its 8 KiB blocks, so only
/// the written first page of hyper's two mostly empty 8 KiB connection buffers is resident. Its
/// background thread (the `background_threads` feature) purges freed pages without waiting for
/// new allocations, which is what gives the memory back.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The stop signals: the first SIGTERM (Kubernetes) or Ctrl-C requests a drain, a second one
/// hurries it.
fn shutdown_signals() -> Shutdown {
    let signals = Shutdown::default();
    let fire = signals.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => Some(term),
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    None
                }
            };
        let steps = [
            (
                &fire.requested,
                "shutdown requested (a second signal skips the drain)",
            ),
            (&fire.hurried, "second signal: hurrying the shutdown"),
        ];
        for (token, message) in steps {
            #[cfg(unix)]
            match term.as_mut() {
                Some(term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("{message}");
            token.cancel();
        }
    });
    signals
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before telemetry: the trace and Sentry exporters build rustls clients.
    flashcard_provider::install_crypto_provider();
    let telemetry = telemetry::init(&telemetry::Options {
        json: matches!(cli.mode.settings().log_format, LogFormat::Json),
        service_name: format!("flashcard-{}", cli.mode.name()),
        default_filter: "info",
        version: env!("CARGO_PKG_VERSION"),
    });
    let result = flashcard_service::app::run(cli.mode, shutdown_signals()).await;
    if let Err(e) = &result {
        // Reaches Sentry (when configured) before the process exits.
        tracing::error!(error = %telemetry::report::redact(&format!("{e:#}")), "service stopped with an error");
    }
    telemetry.shutdown().await;
    result
}
