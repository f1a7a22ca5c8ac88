//! Logging: JSON lines by default (`LOG_FORMAT=text` for humans), level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
