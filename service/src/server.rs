//! The HTTP serving layer: listener, per-connection limits and graceful shutdown.
//!
//! `axum::serve` has no timeouts and accepts every connection, so a slowloris client, a body
//! that never arrives or thousands of clients that stop reading can hold sockets and memory
//! without bound. This module serves the same axum router on hyper's HTTP/1 connection builder
//! with what hyper, hyper-util and tower-http provide:
//!
//! - **header read timeout** (hyper `header_read_timeout`): the request line and headers must
//!   arrive within it. Hyper also starts this timer while a keep-alive connection waits for its
//!   next request, so it is the keep-alive idle limit too;
//! - **request body deadline** (tower-http `RequestBodyDeadlineLayer`): the whole body within
//!   a fixed time (408), however slowly it trickles;
//! - **413 at once** from a declared `Content-Length` above the limit (tower-http
//!   `RequestBodyLimitLayer`), before any body byte is read, answered in the API's JSON shape;
//! - **idle timeout**: a connection on which no byte moved either way for that long is closed
//!   (a response stuck on a client that stopped reading, a forgotten keep-alive). Hyper has no
//!   such timer for HTTP/1, so the socket is wrapped to note when bytes last moved;
//! - **a limit on TCP connections**, not only on SSE streams: a permit per accepted socket,
//!   held until the socket closes; past it a connection is answered `503` + `Retry-After`
//!   (JSON) by a small, bounded rejection path, and dropped outright when even that is full;
//! - **listen backlog** chosen by configuration (tokio `TcpSocket::listen`).
//!
//! `Content-Length` together with `Transfer-Encoding: chunked` never reaches the router: hyper
//! drops the `Content-Length`, reads the body as chunked and closes the connection after the
//! answer (RFC 9112 section 6.1), so nothing can be smuggled behind such a request.
//!
//! HTTP/2 is not served: browsers speak it only over TLS, which ends at the Ingress, so
//! cleartext HTTP/2 here would not lift their 6-connections-per-host limit.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyDeadlineLayer;

use crate::api::error::ApiError;
use crate::config::HttpSettings;

/// Connections answered 503 at the same time; past this a connection over the limit is closed
/// without an answer, so a flood cannot make the rejections themselves unbounded.
const REJECT_CONCURRENCY: usize = 128;
/// How long a rejected connection may take to send its request and read the 503.
const REJECT_DEADLINE: Duration = Duration::from_secs(3);
/// File descriptors kept free of connections: Redis, log files, the rejection path.
const RESERVED_FDS: u64 = REJECT_CONCURRENCY as u64 + 256;
/// Largest read buffer of one connection (hyper's default is ~400 KiB, which 10,000
/// connections could turn into gigabytes). Request heads must fit in it; bodies stream.
const MAX_READ_BUFFER: usize = 32 * 1024;
/// Seconds a client is told to wait before it retries a refused connection.
const RETRY_AFTER_SECONDS: u64 = 2;

/// The HTTP layer's limits, from [`HttpSettings`] and the body limit.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_connections: usize,
    pub listen_backlog: u32,
    pub max_body_bytes: usize,
}

/// `0` turns a timeout off.
fn timeout(value: u64, unit: fn(u64) -> Duration) -> Option<Duration> {
    (value > 0).then(|| unit(value))
}

impl Limits {
    /// Checks the settings. `sse_heartbeat` is the quietest an open SSE stream gets (`None` in
    /// worker mode): the idle timeout must be longer, or it would cut healthy streams.
    pub fn new(
        http: &HttpSettings,
        max_body_bytes: usize,
        sse_heartbeat: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let limits = Self {
            header_read_timeout: timeout(http.header_read_timeout_ms, Duration::from_millis),
            body_timeout: timeout(http.request_body_timeout_ms, Duration::from_millis),
            idle_timeout: timeout(http.idle_timeout_seconds, Duration::from_secs),
            max_connections: http.max_connections.max(1),
            listen_backlog: http.listen_backlog.max(1),
            max_body_bytes,
        };
        if let (Some(idle), Some(heartbeat)) = (limits.idle_timeout, sse_heartbeat) {
            anyhow::ensure!(
                idle > heartbeat,
                "--idle-timeout-seconds ({}) must be longer than --sse-heartbeat-seconds ({}): \
                 an open SSE stream is quiet between heartbeats",
                idle.as_secs(),
                heartbeat.as_secs()
            );
        }
        Ok(limits)
    }
}

/// Binds `addr` with the configured listen backlog.
pub fn bind(addr: SocketAddr, backlog: u32) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("cannot create the listening socket")?;
    // A restarted process can listen again while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    if let Some(cap) = somaxconn()
        && u64::from(backlog) > cap
    {
        tracing::info!(
            backlog,
            somaxconn = cap,
            "the kernel caps the listen backlog at net.core.somaxconn"
        );
    }
    socket
        .listen(backlog)
        .with_context(|| format!("cannot listen on {addr}"))
}

fn somaxconn() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raises this process's soft open-files limit to its hard limit (as Go's runtime does) and
/// returns the soft limit in force; `None` where it cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        // rlim_t is u64 on Linux but not on every unix.
        #[allow(clippy::unnecessary_cast)]
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// The connection limit that the open-files limit allows, with a warning when it is lower
/// than configured (accept would otherwise fail with EMFILE and leave clients in the backlog).
fn connection_limit(configured: usize) -> usize {
    let Some(files) = raise_open_files_limit() else {
        return configured;
    };
    let allowed = files.saturating_sub(RESERVED_FDS).max(1);
    if configured as u64 > allowed {
        tracing::warn!(
            configured,
            allowed,
            open_files_limit = files,
            "--max-connections lowered to what the open-files limit allows"
        );
        allowed as usize
    } else {
        configured
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then stops accepting and waits for
/// open connections to finish (SSE streams end on the same signal, idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let max_connections = connection_limit(limits.max_connections);
    let connections = Arc::new(Semaphore::new(max_connections));
    let rejections = Arc::new(Semaphore::new(REJECT_CONCURRENCY));
    let shared = Arc::new(Shared::new(router, &limits));
    let graceful = GracefulShutdown::new();
    let refused = RefusedLog::default();
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        max_connections,
        backlog = limits.listen_backlog,
        "listening"
    );
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer),
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        // SSE events are small writes: do not let Nagle hold one back for the previous ACK.
        let _ = stream.set_nodelay(true);
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move { shared.serve(stream, peer, watcher, permit).await });
            }
            Err(_) => {
                refused.note(max_connections);
                if let Ok(permit) = rejections.clone().try_acquire_owned() {
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.reject(stream, permit).await });
                }
                // else: dropped, the client sees the connection closed.
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What every connection task shares.
struct Shared {
    service: Service,
    http1: http1::Builder,
    reject_http1: http1::Builder,
    idle_timeout: Option<Duration>,
}

/// The router behind the HTTP layer's own middleware.
type Service = tower::util::MapResponse<
    tower_http::limit::RequestBodyLimit<tower_http::timeout::RequestBodyDeadline<Router>>,
    fn(Response<tower_http::limit::ResponseBody<Body>>) -> Response<Body>,
>;

impl Shared {
    fn new(router: Router, limits: &Limits) -> Self {
        let deadline = limits.body_timeout.unwrap_or(Duration::MAX);
        let service = ServiceBuilder::new()
            .map_response(json_payload_too_large as fn(_) -> _)
            .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
            .layer(RequestBodyDeadlineLayer::new(deadline))
            .service(router);
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_READ_BUFFER);
        let mut reject_http1 = http1::Builder::new();
        let reject_header_timeout = limits
            .header_read_timeout
            .unwrap_or(REJECT_DEADLINE)
            .min(REJECT_DEADLINE);
        reject_http1
            .timer(TokioTimer::new())
            .header_read_timeout(reject_header_timeout)
            .keep_alive(false)
            .max_buf_size(MAX_READ_BUFFER);
        Self {
            service,
            http1,
            reject_http1,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Serves one accepted connection; the permit returns when the socket closes. Requests
    /// carry the peer address (`ConnectInfo`), which client identity falls back to.
    async fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        watcher: Watcher,
        _permit: OwnedSemaphorePermit,
    ) {
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = tower::ServiceExt::map_request(
            self.service.clone(),
            move |mut request: Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let connection = self
            .http1
            .serve_connection(io, TowerToHyperService::new(service));
        let connection = watcher.watch(connection);
        tokio::select! {
            result = connection => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            () = idle(&activity, self.idle_timeout) => {
                tracing::debug!("closing a connection idle for the idle timeout");
            }
        }
    }

    /// Answers a connection over the limit with `503` + `Retry-After`, then closes it.
    async fn reject(&self, stream: TcpStream, _permit: OwnedSemaphorePermit) {
        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
            Ok::<_, Infallible>(busy())
        });
        let connection = self
            .reject_http1
            .serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(REJECT_DEADLINE, connection).await;
    }
}

/// The answer past the connection limit.
fn busy() -> Response<Body> {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "TOO_MANY_CONNECTIONS",
        "This server holds its maximum of connections; retry shortly",
    )
    .with_retry_after(RETRY_AFTER_SECONDS)
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// tower-http answers an oversized `Content-Length` in plain text; give it the API's shape.
fn json_payload_too_large(
    response: Response<tower_http::limit::ResponseBody<Body>>,
) -> Response<Body> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Request body is too large",
        )
        .into_response();
    }
    response.map(Body::new)
}

/// Transient accept errors are skipped; others (EMFILE, ENOMEM) pause accepting briefly so
/// the loop does not spin while the process is out of descriptors.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Logs refused connections at most every 10 s, with the count since the last line.
#[derive(Default)]
struct RefusedLog {
    count: AtomicU64,
    last_ms: AtomicU64,
}

impl RefusedLog {
    fn note(&self, limit: usize) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let now = millis();
        let last = self.last_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
            tracing::warn!(
                refused = count,
                max_connections = limit,
                "connection limit reached: refusing connections with 503"
            );
        }
    }
}

/// Milliseconds since the first call in this process (monotonic).
fn millis() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When bytes last moved on a connection.
#[derive(Default)]
struct Activity(AtomicU64);

impl Activity {
    fn touch(&self) {
        self.0.store(millis(), Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        Duration::from_millis(millis().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

/// Completes once the connection has been quiet for `limit` (never without a limit).
async fn idle(activity: &Activity, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    activity.touch();
    loop {
        let quiet = activity.quiet_for();
        if quiet >= limit {
            return;
        }
        tokio::time::sleep(limit - quiet).await;
    }
}

/// A socket that notes in [`Activity`] whenever bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if result.is_ready() {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if result.is_ready() {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if result.is_ready() {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
