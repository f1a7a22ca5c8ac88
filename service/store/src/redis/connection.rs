//! Connections to Redis for all three topologies, chosen by the URL ([`super::topology`]).
//!
//! [`RedisClient::connect`] gives the [`RedisConn`] handle for ordinary commands, pipelines and
//! scripts; [`RedisClient::blocking`] gives a dedicated [`BlockingConn`] for `BLPOP` / `XREAD
//! BLOCK`, whose every call has a deadline of its block time plus [`ConnectOptions::block_margin`].
//!
//! | topology | ordinary commands | blocking reads |
//! | --- | --- | --- |
//! | one node | a multiplexed connection, replaced after a connection error or timeout | a dedicated multiplexed connection |
//! | Redis Cluster | redis-rs's `ClusterConnection` (routes by slot, follows `MOVED`/`ASK`, refreshes slots after a failover), replaced after a timeout | a dedicated `ClusterConnection`, so the read goes to the node owning the key's slot |
//! | Sentinel | a multiplexed connection to the master the sentinels name, re-resolved after a connection error, a timeout or `READONLY` (a demoted master) | a dedicated connection to the current master, re-resolved the same way |
//!
//! Every connection has a connection timeout, a response timeout and TCP keepalive (plus
//! `TCP_USER_TIMEOUT` on Linux), so a peer that vanished without closing is noticed by the kernel
//! and a stalled one by the response timeout; either way the connection is replaced.
//!
//! Nothing here retries a command on its own, except what redis-rs's cluster client does
//! (redirects, and re-sending after a lost connection, which may run a script twice): a failed
//! command is the caller's to retry.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsMode, Value,
};

use super::blocking::BlockingConn;
use super::reconnect::{Reconnecting, Shared};
use super::topology::{
    ClusterTopology, Credentials, Node, SentinelTopology, Topology, TopologyError, TopologyKind,
};

/// Timeouts and TCP settings of every connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Longest wait for a TCP (and TLS) connection and the handshake.
    pub connection_timeout: Duration,
    /// Longest wait for the answer to an ordinary command (on a cluster, with every redirect and
    /// retry redis-rs makes); then the command fails, the api answers 503, and the connection is
    /// replaced. Redis answers in milliseconds, so this only passes when a node is gone or
    /// stalled: it is how long a request may wait out a failover before it is refused.
    pub response_timeout: Duration,
    /// Added to a blocking read's block time to make its deadline.
    pub block_margin: Duration,
    /// Idle time before the first TCP keepalive probe.
    pub keepalive_idle: Duration,
    /// Time between keepalive probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the kernel drops the connection.
    pub keepalive_retries: u32,
    /// Longest time sent data may stay unacknowledged before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`, Linux only).
    pub tcp_user_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connection_timeout: Duration::from_secs(5),
            // Not 10 s: a cluster client retries a slot whose master is gone until this passes,
            // so it bounds every api request during a failover (see tests/redis_failover.rs).
            response_timeout: Duration::from_secs(3),
            block_margin: Duration::from_secs(3),
            keepalive_idle: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
            keepalive_retries: 3,
            tcp_user_timeout: Duration::from_secs(30),
        }
    }
}

impl ConnectOptions {
    /// TCP settings applied to every socket: no Nagle delay, keepalive, user timeout.
    pub fn tcp_settings(&self) -> TcpSettings {
        let keepalive = TcpKeepalive::new().with_time(self.keepalive_idle);
        #[cfg(target_os = "linux")]
        let keepalive = keepalive
            .with_interval(self.keepalive_interval)
            .with_retries(self.keepalive_retries);
        let settings = TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(keepalive);
        #[cfg(target_os = "linux")]
        let settings = settings.set_user_timeout(self.tcp_user_timeout);
        settings
    }

    /// The config of a single-node or Sentinel-master connection with this response timeout.
    pub(super) fn async_config(&self, response_timeout: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(response_timeout))
    }
}

/// How connections are made for one topology.
enum Target {
    Single(Client),
    Cluster(ClusterTopology),
    /// Resolving the master needs `&mut`, and one lookup at a time is plenty.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

pub(super) struct ClientInner {
    target: Target,
    pub(super) options: ConnectOptions,
    db: i64,
}

/// Opens connections to the Redis a URL names. Cheap to clone.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("topology", &self.kind())
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Parses the URL with the default [`ConnectOptions`]. Connects to nothing yet.
    pub fn open(url: &str) -> Result<Self, TopologyError> {
        Self::with_options(Topology::parse(url)?, ConnectOptions::default())
    }

    /// A client for a parsed topology. Connects to nothing yet.
    pub fn with_options(
        topology: Topology,
        options: ConnectOptions,
    ) -> Result<Self, TopologyError> {
        let config = |e: RedisError| TopologyError::Config(e.to_string());
        let (target, db) = match topology {
            Topology::Single(info) => {
                let db = info.redis_settings().db();
                let info = (*info).set_tcp_settings(options.tcp_settings());
                (Target::Single(Client::open(info).map_err(config)?), db)
            }
            Topology::Cluster(cluster) => {
                // Built once here only to reject bad settings early; each connection builds its
                // own with the response timeout it needs.
                cluster_client(&cluster, &options, options.response_timeout).map_err(config)?;
                (Target::Cluster(cluster), 0)
            }
            Topology::Sentinel(sentinel) => {
                let db = sentinel.db;
                let client = sentinel_client(&sentinel, &options).map_err(config)?;
                (Target::Sentinel(tokio::sync::Mutex::new(client)), db)
            }
        };
        Ok(Self {
            inner: Arc::new(ClientInner {
                target,
                options,
                db,
            }),
        })
    }

    pub fn kind(&self) -> TopologyKind {
        match self.inner.target {
            Target::Single(_) => TopologyKind::Single,
            Target::Cluster(_) => TopologyKind::Cluster,
            Target::Sentinel(_) => TopologyKind::Sentinel,
        }
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// Connects now (so an unreachable Redis fails here) and returns the shared handle for
    /// ordinary commands. Clones share one connection (per node, on a cluster).
    pub async fn connect(&self) -> RedisResult<RedisConn> {
        let conn = Reconnecting::new(self.inner.clone(), self.kind());
        conn.connect_now().await?;
        Ok(RedisConn {
            inner: Arc::new(conn),
            db: self.inner.db,
        })
    }

    /// A dedicated connection for blocking reads of at most `max_block` each, opened on first
    /// use and replaced after any error. Its connections' response timeout is
    /// `max_block + block_margin`; each call's deadline is its own block time plus the margin.
    pub fn blocking(&self, max_block: Duration) -> BlockingConn {
        BlockingConn::new(self.inner.clone(), max_block)
    }
}

impl ClientInner {
    /// A new connection for the shared handle.
    pub(super) async fn open_shared(&self) -> RedisResult<Shared> {
        let response_timeout = self.options.response_timeout;
        match &self.target {
            Target::Cluster(cluster) => Ok(Shared::Cluster(
                self.open_cluster(cluster, response_timeout).await?,
            )),
            Target::Single(_) | Target::Sentinel(_) => {
                let config = self.options.async_config(response_timeout);
                Ok(Shared::Node(self.open_node(&config).await?))
            }
        }
    }

    /// A new multiplexed connection to the single node or the current Sentinel master.
    pub(super) async fn open_node(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let budget = self.options.connection_timeout;
        match &self.target {
            Target::Single(client) => {
                within(
                    budget,
                    client.get_multiplexed_async_connection_with_config(config),
                )
                .await
            }
            Target::Sentinel(sentinel) => {
                // Asking the sentinels and checking the master's role take a few round trips of
                // their own (bounded by redis-rs's defaults), on top of connecting.
                within(budget * 2, async {
                    let master = sentinel.lock().await.async_get_client().await?;
                    master
                        .get_multiplexed_async_connection_with_config(config)
                        .await
                })
                .await
            }
            Target::Cluster(_) => Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "a Redis Cluster has no single node to connect to",
            ))),
        }
    }

    /// A new cluster connection whose requests time out after `response_timeout`.
    pub(super) async fn open_cluster(
        &self,
        cluster: &ClusterTopology,
        response_timeout: Duration,
    ) -> RedisResult<ClusterConnection> {
        let client = cluster_client(cluster, &self.options, response_timeout)?;
        within(
            self.options.connection_timeout * 2,
            client.get_async_connection(),
        )
        .await
    }

    pub(super) fn cluster(&self) -> Option<&ClusterTopology> {
        match &self.target {
            Target::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }
}

/// Runs `future`, or fails with a timeout error after `budget`.
pub(super) async fn within<T>(
    budget: Duration,
    future: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(budget, future).await {
        Ok(result) => result,
        Err(_) => Err(timeout_error("connecting to Redis timed out")),
    }
}

/// An I/O timeout error (`is_timeout()` holds), like redis-rs's own response timeouts.
pub(super) fn timeout_error(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

/// Whether an error means the connection (or, for Sentinel, the node it reaches) is no longer
/// good to use: lost, stalled, or a master that has been demoted. A cluster connection handles
/// lost nodes and redirects itself; only a timeout (a stalled node) condemns it.
pub(super) fn needs_new_connection(error: &RedisError, kind: TopologyKind) -> bool {
    if kind == TopologyKind::Cluster {
        return error.is_timeout();
    }
    if error.is_io_error() || error.is_unrecoverable_error() || error.is_timeout() {
        return true;
    }
    kind == TopologyKind::Sentinel
        && matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

fn addr(node: &Node, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: node.host.clone(),
            port: node.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(node.host.clone(), node.port)
    }
}

fn cluster_client(
    cluster: &ClusterTopology,
    options: &ConnectOptions,
    response_timeout: Duration,
) -> RedisResult<ClusterClient> {
    let seeds: Vec<ConnectionAddr> = cluster.seeds.iter().map(|n| addr(n, cluster.tls)).collect();
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(options.connection_timeout)
        .response_timeout(response_timeout)
        // Bounds a request with all its retries, not only each attempt.
        .overall_response_timeout(Some(response_timeout))
        .tcp_settings(options.tcp_settings());
    if cluster.tls {
        builder = builder.tls(TlsMode::Secure);
    }
    let Credentials { username, password } = &cluster.credentials;
    if let Some(username) = username {
        builder = builder.username(username);
    }
    if let Some(password) = password {
        builder = builder.password(password);
    }
    builder.build()
}

fn sentinel_client(
    sentinel: &SentinelTopology,
    options: &ConnectOptions,
) -> RedisResult<SentinelClient> {
    let nodes: Vec<ConnectionAddr> = sentinel
        .sentinels
        .iter()
        .map(|n| addr(n, sentinel.tls))
        .collect();
    let mut builder =
        SentinelClientBuilder::new(nodes, &sentinel.master_name, SentinelServerType::Master)?
            .set_client_to_redis_db(sentinel.db)
            .set_client_to_redis_tcp_settings(options.tcp_settings())
            .set_client_to_sentinel_tcp_settings(options.tcp_settings());
    if sentinel.tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
    }
    if let Some(username) = &sentinel.credentials.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &sentinel.credentials.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(username) = &sentinel.sentinel_credentials.username {
        builder = builder.set_client_to_sentinel_username(username);
    }
    if let Some(password) = &sentinel.sentinel_credentials.password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    builder.build()
}

/// The shared handle for ordinary commands, pipelines and scripts (`cmd().query_async`,
/// `pipe().query_async`, `Script::invoke_async`, [`redis::AsyncCommands`]). Cheap to clone;
/// clones share the connection. Reconnects by itself: a command that fails because the
/// connection broke returns the error, and the next command uses a new connection.
#[derive(Clone)]
pub struct RedisConn {
    inner: Arc<Reconnecting>,
    db: i64,
}

impl RedisConn {
    pub fn kind(&self) -> TopologyKind {
        self.inner.kind()
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.inner.command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.inner.pipeline(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_open_for_all_three_url_forms_without_connecting() {
        let cases = [
            ("redis://127.0.0.1:1/", TopologyKind::Single),
            ("rediss://localhost:1/", TopologyKind::Single),
            (
                "redis+cluster://127.0.0.1:1,127.0.0.1:2",
                TopologyKind::Cluster,
            ),
            ("rediss+cluster://u:p@localhost:1", TopologyKind::Cluster),
            ("redis+sentinel://127.0.0.1:1/m", TopologyKind::Sentinel),
            (
                "rediss+sentinel://localhost:1/m?db=1",
                TopologyKind::Sentinel,
            ),
        ];
        for (url, kind) in cases {
            assert_eq!(RedisClient::open(url).unwrap().kind(), kind, "{url}");
        }
    }

    #[test]
    fn which_errors_replace_the_connection() {
        let readonly = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        assert!(needs_new_connection(&readonly, TopologyKind::Sentinel));
        assert!(!needs_new_connection(&readonly, TopologyKind::Single));
        let timeout = timeout_error("t");
        assert!(needs_new_connection(&timeout, TopologyKind::Single));
        assert!(needs_new_connection(&timeout, TopologyKind::Cluster));
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(needs_new_connection(&dropped, TopologyKind::Sentinel));
        // The cluster client reconnects a lost node itself.
        assert!(!needs_new_connection(&dropped, TopologyKind::Cluster));
        let wrong_type = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!needs_new_connection(&wrong_type, TopologyKind::Sentinel));
    }

    #[tokio::test]
    async fn connecting_to_nothing_fails_fast_with_an_error() {
        let options = ConnectOptions {
            connection_timeout: Duration::from_millis(500),
            ..ConnectOptions::default()
        };
        for url in [
            "redis://127.0.0.1:1/",
            "redis+cluster://127.0.0.1:1",
            "redis+sentinel://127.0.0.1:1/m",
        ] {
            let client =
                RedisClient::with_options(Topology::parse(url).unwrap(), options.clone()).unwrap();
            let started = std::time::Instant::now();
            assert!(client.connect().await.is_err(), "{url}");
            assert!(started.elapsed() < Duration::from_secs(5), "{url}");
        }
    }
}
