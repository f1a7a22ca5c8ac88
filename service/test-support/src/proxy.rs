//! A tiny TCP proxy for network-fault tests: it forwards bytes between clients and a target
//! port until [`TcpProxy::stall`], after which the connections open at that moment stop
//! forwarding in both directions but stay open (as behind a dead NAT or a frozen peer). New
//! connections are forwarded normally, so a client that reconnects recovers.
//!
//! [`TcpProxy::start_lossy`] instead loses replies: every n-th read from the server is thrown
//! away and its connection closed, so the commands it answered ran but their caller never
//! hears (a reply lost to a reset, a failover or a client timeout).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A running proxy on a loopback port; its tasks end when it is dropped.
pub struct TcpProxy {
    pub port: u16,
    /// Connections numbered below this are stalled.
    stalled_below: Arc<AtomicU64>,
    next_id: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    _tasks: JoinSet<()>,
}

/// Replies lost by a lossy proxy: every `every`-th read from the server, counted over all
/// connections.
struct Loss {
    every: u64,
    reads: AtomicU64,
    lost: Arc<AtomicU64>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Self {
        Self::start_with(target, None).await
    }

    /// Like [`start`](Self::start), but every `every`-th read from the server (over all
    /// connections) is thrown away and that connection closed.
    pub async fn start_lossy(target: u16, every: u64) -> Self {
        Self::start_with(target, Some(every.max(1))).await
    }

    async fn start_with(target: u16, lose_every: Option<u64>) -> Self {
        let lost = Arc::new(AtomicU64::new(0));
        let loss = lose_every.map(|every| {
            Arc::new(Loss {
                every,
                reads: AtomicU64::new(0),
                lost: lost.clone(),
            })
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stalled_below = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let (stalled, ids) = (stalled_below.clone(), next_id.clone());
        tasks.spawn(async move {
            // Connection tasks live in this set, so they end with the accept task.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let id = ids.fetch_add(1, Ordering::SeqCst);
                let stalled = stalled.clone();
                let loss = loss.clone();
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, id, stalled.clone(), None);
                    let down = pump(server_read, client_write, id, stalled, loss);
                    // Either side ending closes both sockets (a lost reply resets the link).
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Self {
            port,
            stalled_below,
            next_id,
            lost,
            _tasks: tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Every connection open now stops forwarding, without closing.
    pub fn stall(&self) {
        self.stalled_below
            .store(self.next_id.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Server reads thrown away so far (lossy proxies only).
    pub fn lost_replies(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either side closes; once connection `id` is stalled it holds
/// both sockets open and forwards nothing more. With `loss`, a read it must lose ends the copy
/// without forwarding it.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    stalled_below: Arc<AtomicU64>,
    loss: Option<Arc<Loss>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(loss) = &loss
            && (loss.reads.fetch_add(1, Ordering::SeqCst) + 1) % loss.every == 0
        {
            loss.lost.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if id < stalled_below.load(Ordering::SeqCst) {
            // Keep the sockets (moved into this future) open and silent until the proxy ends.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
