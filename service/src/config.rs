//! Command line and environment: the names the operator, the chart and the docs drive the
//! binary through. Every flag has an environment fallback; keep both stable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use secrecy::{ExposeSecret, SecretString};

use flashcard_core::budget::{BudgetPeriod, Prices};

/// A secret flag or environment value: its `Debug` says `[REDACTED]`, so printing the settings
/// (a panic, a debug log) shows no password, key or token.
fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

#[derive(Debug, Parser)]
#[command(
    name = "flashcard-service",
    version,
    about = "Flashcard generation service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// API and worker in one process with the in-memory store (or Redis if --redis-url is set).
    Standalone(Settings),
    /// HTTP API and SSE only; needs Redis.
    Api(Settings),
    /// Worker only; needs Redis.
    Worker(Settings),
}

impl Mode {
    pub fn settings(&self) -> &Settings {
        match self {
            Mode::Standalone(s) | Mode::Api(s) | Mode::Worker(s) => s,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Standalone(_) => "standalone",
            Mode::Api(_) => "api",
            Mode::Worker(_) => "worker",
        }
    }
}

/// Which flashcard generator the worker calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ProviderKind {
    /// Offline, deterministic cards extracted from the text.
    #[default]
    Local,
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the HTTP server listens on (the worker serves /metrics and health there too).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:3001")]
    pub listen: SocketAddr,
    /// Serve the operations endpoints (`/metrics`, `/api/metrics/alerts`, `/api/queue/stats`,
    /// `/api/sse/stats`, `/console`) on this address only, apart from the client API, so an
    /// Ingress to the API never exposes them. Empty: everything on `--listen`.
    #[arg(long, env = "OPERATIONS_LISTEN_ADDR")]
    pub operations_listen: Option<SocketAddr>,
    /// Redis URL: redis:// or rediss:// (one node), redis+cluster://h:p[,h:p] (Redis Cluster),
    /// redis+sentinel://h:p[,h:p]/<master> (Sentinel). Required in api and worker modes.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_parser = secret)]
    pub redis_url: Option<SecretString>,
    /// Pipeline name.
    #[arg(long, env = "PIPELINE", default_value = "default")]
    pub pipeline: String,
    /// Namespace of the pipeline (set by the operator): keys live under
    /// `fc:{<namespace>.<pipeline>}:`, so same-named pipelines of two namespaces never share a
    /// key. Empty: `fc:{<pipeline>}:`.
    #[arg(long, env = "PIPELINE_NAMESPACE", default_value = "")]
    pub pipeline_namespace: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub queue: QueueSettings,
    #[command(flatten)]
    pub worker: WorkerSettings,
    #[command(flatten)]
    pub provider: ProviderSettings,
    #[command(flatten)]
    pub api: ApiSettings,
    #[command(flatten)]
    pub budget: BudgetSettings,
    #[command(flatten)]
    pub alerts: AlertSettings,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
pub struct QueueSettings {
    /// Attempts per job before it fails.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// First retry delay in ms; doubles with each attempt.
    #[arg(long, env = "BACKOFF_MS", default_value_t = 1000)]
    pub backoff_ms: u64,
    /// Lease of an active job in ms; the worker renews it at a third of that.
    #[arg(long, env = "LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,
    /// Times a job may lose its lease before it fails as stalled.
    #[arg(long, env = "MAX_STALLS", default_value_t = 2)]
    pub max_stalls: u32,
    /// Most active jobs one client (job owner) may have across the pipeline; 0 for no cap.
    /// Clients with waiting work take turns whatever the cap.
    #[arg(long, env = "CLIENT_CONCURRENCY", default_value_t = 32)]
    pub client_concurrency: u32,
    /// Keep finished jobs this many seconds.
    #[arg(long, env = "RETENTION_SECONDS", default_value_t = 86_400)]
    pub retention_seconds: u64,
    /// Keep at most this many completed (and as many failed) jobs.
    #[arg(long, env = "RETENTION_COUNT", default_value_t = 10_000)]
    pub retention_count: u64,
}

impl QueueSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(100))
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// Jobs one worker runs at the same time.
    #[arg(
        long = "worker-concurrency",
        env = "WORKER_CONCURRENCY",
        default_value_t = 4
    )]
    pub concurrency: u32,
    /// On SIGTERM, wait this long for running jobs before releasing them to other workers.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    pub shutdown_grace_seconds: u64,
    /// Longest wait between queue checks when idle, in ms.
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Heartbeat interval in ms.
    #[arg(long, env = "HEARTBEAT_MS", default_value_t = 5000)]
    pub heartbeat_ms: u64,
    /// Pod name reported in heartbeats (set from the downward API).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
}

#[derive(Debug, Clone, Args)]
pub struct ProviderSettings {
    /// Flashcard provider.
    #[arg(long, env = "PROVIDER", default_value = "local")]
    pub provider: ProviderKind,
    /// Base URL of the OpenAI-compatible API (without /chat/completions).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
    /// Model name sent to the provider.
    #[arg(long, env = "OPENAI_MODEL", default_value = "gpt-4o-mini")]
    pub model: String,
    /// API key (prefer the environment; never logged).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true, value_parser = secret)]
    pub openai_api_key: Option<SecretString>,
    /// Provider request timeout in seconds. A call that times out after its request was sent is
    /// settled at its reservation: its real cost is unknown.
    #[arg(long, env = "PROVIDER_TIMEOUT_SECONDS", default_value_t = 60)]
    pub provider_timeout_seconds: u64,
    /// Reasoning effort sent to reasoning models as `reasoning_effort` (e.g. `minimal`, `low`,
    /// `medium`, `high`); unset leaves the model's default and sends nothing.
    #[arg(long, env = "REASONING_EFFORT")]
    pub reasoning_effort: Option<String>,
    /// Output tokens a reasoning model may spend thinking, on top of the cards' bound: added to
    /// `max_completion_tokens` and to every job's budget reservation (reasoning is billed output).
    #[arg(long, env = "REASONING_TOKENS", default_value_t = 0)]
    pub reasoning_tokens: u64,
    /// Consecutive failures that open the circuit breaker.
    #[arg(long, env = "BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub breaker_failure_threshold: u32,
    /// Seconds the breaker stays open before a trial call.
    #[arg(long, env = "BREAKER_OPEN_SECONDS", default_value_t = 30)]
    pub breaker_open_seconds: u64,
    /// Extra latency added to every provider call, in ms (demos, load tests, failure drills).
    #[arg(long, env = "SIMULATED_LATENCY_MS", default_value_t = 0)]
    pub simulated_latency_ms: u64,
    /// Price of 1,000 input tokens in US dollars. Default: the provider's own (openai: gpt-4o-mini's
    /// $0.00015; local: 0, it costs nothing).
    #[arg(long, env = "PRICE_INPUT_PER_1K")]
    pub price_input_per_1k: Option<f64>,
    /// Price of 1,000 output tokens in US dollars. Default: the provider's own (openai: gpt-4o-mini's
    /// $0.0006; local: 0).
    #[arg(long, env = "PRICE_OUTPUT_PER_1K")]
    pub price_output_per_1k: Option<f64>,
}

/// What the `openai` provider costs when no price is configured: gpt-4o-mini's list prices.
pub const OPENAI_DEFAULT_PRICES: Prices = Prices {
    input_per_1k: 0.00015,
    output_per_1k: 0.0006,
};

impl ProviderSettings {
    /// The prices spend is counted at: each configured price as given, else the provider's
    /// default. The single place that decides, so the offline provider is never billed by
    /// accident while a configured price (a budget drill, a self-hosted model's real cost) still
    /// applies to any provider.
    pub fn prices(&self) -> Prices {
        let defaults = match self.provider {
            ProviderKind::Local => Prices::default(),
            ProviderKind::Openai => OPENAI_DEFAULT_PRICES,
        };
        Prices {
            input_per_1k: self.price_input_per_1k.unwrap_or(defaults.input_per_1k),
            output_per_1k: self.price_output_per_1k.unwrap_or(defaults.output_per_1k),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ApiSettings {
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Largest accepted `content` in characters.
    #[arg(long, env = "MAX_CONTENT_CHARS", default_value_t = 50_000)]
    pub max_content_chars: usize,
    /// Cards generated when the request does not say.
    #[arg(long, env = "DEFAULT_CARD_COUNT", default_value_t = 10)]
    pub default_card_count: u32,
    /// Most cards one request may ask for.
    #[arg(long, env = "MAX_CARD_COUNT", default_value_t = 50)]
    pub max_card_count: u32,
    /// Bearer token for /api/admin (prefer --admin-token-file for a mounted Secret).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, value_parser = secret)]
    pub admin_token: Option<SecretString>,
    /// File holding the admin token.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Jobs one user may submit per rate-limit window (0 = unlimited).
    #[arg(long, env = "RATE_LIMIT_JOBS", default_value_t = 30)]
    pub rate_limit_jobs: u64,
    /// Rate-limit window in seconds.
    #[arg(long, env = "RATE_LIMIT_WINDOW_SECONDS", default_value_t = 60)]
    pub rate_limit_window_seconds: u64,
    /// SSE heartbeat interval in seconds (keep well below the proxy read timeout).
    #[arg(long, env = "SSE_HEARTBEAT_SECONDS", default_value_t = 30)]
    pub sse_heartbeat_seconds: u64,
    /// Reconnect delay suggested to SSE clients, in ms.
    #[arg(long, env = "SSE_RETRY_MS", default_value_t = 3000)]
    pub sse_retry_ms: u64,
    /// On SIGTERM: seconds to keep serving with `/readyz` failing, so load balancers stop
    /// sending new connections here before this process stops accepting. 0 where something in
    /// front already drains the pod (the rendered pods: a `preStop` sleep does it). A second
    /// signal skips the wait.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
    /// After the drain window: the open SSE streams are ended (with a final `retry:`) at random
    /// moments over this many ms, so their clients reconnect elsewhere spread out, not at once.
    #[arg(long, env = "DRAIN_SPREAD_MS", default_value_t = 2000)]
    pub drain_spread_ms: u64,
    /// Most SSE connections this process holds; more get 503.
    #[arg(long, env = "SSE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub sse_max_connections: usize,
    /// Events kept per followed job for SSE clients that fall behind for a moment (shared by the
    /// job's followers); a client further behind catches up from the job's history instead.
    #[arg(long, env = "SSE_CLIENT_BUFFER", default_value_t = 8)]
    pub sse_client_buffer: usize,
    /// Origins allowed by CORS, comma separated; `*` for any. Empty: no CORS headers.
    #[arg(long, env = "CORS_ORIGINS", default_value = "", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// How clients are identified (rate limits, job ownership): `body` trusts the request's
    /// `userId` (the seed's behaviour; trusted networks only), `api-key` checks keys from
    /// --api-keys-file, `proxy` trusts --identity-header from --trusted-proxies.
    #[arg(long, env = "CLIENT_IDENTITY", default_value = "body")]
    pub client_identity: flashcard_core::identity::IdentityMode,
    /// File of API keys: one `<sha256-hex-of-key> <principal>` per line (a mounted Secret).
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Header an authenticating proxy sets to the user's identity (`proxy` mode).
    #[arg(long, env = "IDENTITY_HEADER", default_value = "x-forwarded-user")]
    pub identity_header: String,
    /// Addresses or CIDRs of proxies whose identity header and `X-Forwarded-For` are trusted,
    /// comma separated.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        default_value = "",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    #[command(flatten)]
    pub http: HttpSettings,
}

/// Limits of the HTTP layer (every mode: the worker's metrics/health server uses them too).
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// A connection must deliver its whole request line and headers within this many ms, or it
    /// is closed (slowloris). The same timer runs while a keep-alive connection waits for its
    /// next request, so a finished SSE stream's connection does not linger either.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// A request body must arrive in full within this many ms of its headers, or the request
    /// ends with 408 `REQUEST_TIMEOUT` (a body trickled byte by byte cannot hold a connection).
    #[arg(long, env = "REQUEST_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_body_timeout_ms: u64,
    /// A connection on which no byte moved in either direction for this many seconds is closed:
    /// a response stuck on a client that stopped reading, or an idle keep-alive. Must be longer
    /// than --sse-heartbeat-seconds, since an open SSE stream is only that quiet.
    #[arg(long, env = "IDLE_TIMEOUT_SECONDS", default_value_t = 75)]
    pub idle_timeout_seconds: u64,
    /// Most TCP connections this process holds at once (every request, not only SSE streams);
    /// past it a new connection gets 503 `TOO_MANY_CONNECTIONS` with Retry-After. Lowered at
    /// start to what the open-files limit allows.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 12_000)]
    pub max_connections: usize,
    /// Connections the kernel queues for accept (listen backlog); a burst larger than this sees
    /// SYN retries (about 1 s each). Linux caps it at net.core.somaxconn.
    #[arg(long, env = "LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,
}

/// The budget from the command line. The budget in force lives in the store: with the
/// operator it comes from the `FlashcardPipeline` and these are ignored; without it, a process
/// given any of them writes them to the store when it has none (standalone always does).
#[derive(Debug, Clone, Args)]
pub struct BudgetSettings {
    /// Budget per period in US dollars (0 = no limit).
    #[arg(long, env = "BUDGET_LIMIT_USD")]
    pub budget_limit_usd: Option<f64>,
    /// Budget period.
    #[arg(long, env = "BUDGET_PERIOD")]
    pub budget_period: Option<BudgetPeriod>,
    /// Percent of the budget at which `budgetNearlyExhausted` turns on.
    #[arg(long, env = "BUDGET_WARN_PERCENT")]
    pub budget_warn_percent: Option<f64>,
}

impl BudgetSettings {
    /// The budget these flags describe, if any was given (or `always`, with defaults).
    pub fn config(&self, always: bool) -> Option<flashcard_store::BudgetConfig> {
        let given = self.budget_limit_usd.is_some()
            || self.budget_period.is_some()
            || self.budget_warn_percent.is_some();
        if !given && !always {
            return None;
        }
        let defaults = flashcard_store::BudgetConfig::unlimited();
        Some(flashcard_store::BudgetConfig {
            limit_micros: flashcard_core::budget::usd_to_micros(
                self.budget_limit_usd.unwrap_or(0.0),
            ),
            period: self.budget_period.unwrap_or(defaults.period),
            warn_percent: self
                .budget_warn_percent
                .unwrap_or(defaults.warn_percent)
                .clamp(0.0, 100.0),
            enforce: true,
            source: flashcard_store::BudgetSource::Flags,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct AlertSettings {
    #[arg(long, env = "ALERT_QUEUE_DEPTH_HIGH", default_value_t = 50)]
    pub queue_depth_high: u64,
    #[arg(long, env = "ALERT_QUEUE_DEPTH_CRITICAL", default_value_t = 100)]
    pub queue_depth_critical: u64,
    /// Failure rate (percent of finished jobs) over the window that counts as high.
    #[arg(long, env = "ALERT_FAILURE_RATE_PERCENT", default_value_t = 10.0)]
    pub failure_rate_percent: f64,
    /// Window of the failure rate in seconds.
    #[arg(long, env = "ALERT_FAILURE_WINDOW_SECONDS", default_value_t = 300)]
    pub failure_window_seconds: u64,
    /// Seconds without a worker heartbeat, while jobs are active, that count as stalled.
    #[arg(long, env = "ALERT_WORKER_STALLED_SECONDS", default_value_t = 120)]
    pub worker_stalled_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_print_no_secret() {
        let cli = Cli::try_parse_from([
            "flashcard-service",
            "api",
            "--redis-url",
            "redis://:hunter2-pw@redis:6379",
            "--openai-api-key",
            "sk-live-abc123",
            "--admin-token",
            "admin-tok-xyz",
        ])
        .unwrap();
        let printed = format!("{cli:?}");
        for secret in ["hunter2-pw", "sk-live-abc123", "admin-tok-xyz"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        let Mode::Api(settings) = cli.mode else {
            panic!("api")
        };
        let url = settings.redis_url.as_ref().unwrap().expose_secret();
        assert_eq!(url, "redis://:hunter2-pw@redis:6379");
    }

    fn provider_settings(args: &[&str]) -> ProviderSettings {
        let mut argv = vec!["flashcard-service", "standalone"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                mode: Mode::Standalone(settings),
            }) => settings.provider,
            other => panic!("unexpected parse result: {other:?}"),
        }
    }

    #[test]
    fn local_provider_costs_nothing_by_default() {
        assert_eq!(provider_settings(&[]).prices(), Prices::default());
        assert_eq!(
            Prices::default().cost_micros(1_000_000, 1_000_000),
            0,
            "a free provider never adds spend"
        );
    }

    #[test]
    fn openai_defaults_to_gpt_4o_mini_prices() {
        assert_eq!(
            provider_settings(&["--provider", "openai"]).prices(),
            OPENAI_DEFAULT_PRICES
        );
    }

    #[test]
    fn configured_prices_apply_to_any_provider() {
        let local = provider_settings(&["--price-input-per-1k", "0.5"]);
        assert_eq!(
            local.prices(),
            Prices {
                input_per_1k: 0.5,
                output_per_1k: 0.0
            }
        );
        let openai = provider_settings(&[
            "--provider",
            "openai",
            "--price-input-per-1k",
            "0.0025",
            "--price-output-per-1k",
            "0.01",
        ]);
        assert_eq!(
            openai.prices(),
            Prices {
                input_per_1k: 0.0025,
                output_per_1k: 0.01
            }
        );
    }
}
