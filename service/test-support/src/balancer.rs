//! A small TCP load balancer for rolling-restart tests, standing in for a Service's endpoints
//! and kube-proxy: each new connection goes, round robin, to a backend counted ready. A backend
//! is probed (`/readyz`) every 100 ms, and a change of its answer counts only after it held for
//! the propagation delay (endpoint updates reach the nodes late). A connection routed to a
//! backend that refuses it is closed, not sent elsewhere, as kube-proxy does. Open connections
//! stay where they are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[derive(Clone, Copy)]
struct Backend {
    port: u16,
    /// What the balancer routes by.
    ready: bool,
    /// The last probe's answer, and since when it has been that.
    probed: bool,
    since: Instant,
}

/// A running balancer on a loopback port; its tasks end when it is dropped.
pub struct Balancer {
    pub port: u16,
    backends: Arc<Mutex<Vec<Backend>>>,
    _tasks: JoinSet<()>,
}

impl Balancer {
    /// A balancer whose readiness changes take effect `propagation` after the probes see them.
    pub async fn start(propagation: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind balancer");
        let port = listener.local_addr().expect("balancer address").port();
        let backends: Arc<Mutex<Vec<Backend>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let probed = backends.clone();
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .pool_max_idle_per_host(0)
                .build()
                .expect("probe client");
            loop {
                let ports: Vec<u16> = lock(&probed).iter().map(|b| b.port).collect();
                for port in ports {
                    let ready = client
                        .get(format!("http://127.0.0.1:{port}/readyz"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if let Some(b) = lock(&probed).iter_mut().find(|b| b.port == port) {
                        if b.probed != ready {
                            (b.probed, b.since) = (ready, Instant::now());
                        }
                        if b.since.elapsed() >= propagation {
                            b.ready = b.probed;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let routed = backends.clone();
        tasks.spawn(async move {
            let next = Arc::new(AtomicUsize::new(0));
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let (routed, next) = (routed.clone(), next.clone());
                connections.spawn(async move {
                    let ready: Vec<u16> = lock(&routed)
                        .iter()
                        .filter(|b| b.ready)
                        .map(|b| b.port)
                        .collect();
                    if ready.is_empty() {
                        return;
                    }
                    let port = ready[next.fetch_add(1, Ordering::Relaxed) % ready.len()];
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            port,
            backends,
            _tasks: tasks,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Adds a backend; it gets connections once a probe found it ready.
    pub fn add(&self, port: u16) {
        lock(&self.backends).push(Backend {
            port,
            ready: false,
            probed: false,
            since: Instant::now(),
        });
    }

    /// Whether the last probe found this backend ready.
    pub fn is_ready(&self, port: u16) -> bool {
        lock(&self.backends)
            .iter()
            .any(|b| b.port == port && b.ready)
    }
}

fn lock(backends: &Mutex<Vec<Backend>>) -> std::sync::MutexGuard<'_, Vec<Backend>> {
    backends.lock().unwrap_or_else(|e| e.into_inner())
}
