//! A tiny TCP proxy for half-open-connection tests: it forwards bytes between clients and a
//! target port until [`TcpProxy::stall`], after which the connections open at that moment stop
//! forwarding in both directions but stay open (as behind a dead NAT or a frozen peer). New
//! connections are forwarded normally, so a client that reconnects recovers.

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
    _tasks: JoinSet<()>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Self {
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
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, id, stalled.clone());
                    let down = pump(server_read, client_write, id, stalled);
                    tokio::join!(up, down);
                });
            }
        });
        Self {
            port,
            stalled_below,
            next_id,
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

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either side closes; once connection `id` is stalled it holds
/// both sockets open and forwards nothing more.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    stalled_below: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if id < stalled_below.load(Ordering::SeqCst) {
            // Keep the sockets (moved into this future) open and silent until the proxy ends.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
