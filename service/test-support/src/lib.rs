//! Test support: real helper processes (redis-server, a Redis Cluster, a Sentinel setup,
//! Chromium, Prometheus and Alertmanager) on loopback ports, a fake OpenAI-compatible LLM, and a
//! TCP proxy that can stall its connections. Shared by every crate's integration tests; the
//! service's own process helper lives in its tests (it needs the binary cargo builds there).

pub mod admin;
pub mod balancer;
pub mod cdp;
pub mod cluster;
pub mod llm;
pub mod proxy;
pub mod sentinel;
pub mod tools;

pub use balancer::Balancer;
pub use cluster::RedisCluster;
pub use proxy::TcpProxy;
pub use sentinel::RedisSentinel;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A throwaway `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// A persistent server's data outlives the process (see [`RedisServer::start_persistent`]).
    keep_dir: bool,
}

impl RedisServer {
    /// Starts redis-server. Panics (fails the test) if it is not installed: Redis tests must
    /// never be skipped silently. `.ci/test.sh` installs it.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts redis-server on a given loopback port (to restart one in the same place).
    pub fn start_on(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("fc-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server) or run .ci/test.sh");
        let server = Self {
            child,
            port,
            dir,
            keep_dir: false,
        };
        server.wait_ready();
        server
    }

    /// A server with an append-only file fsynced on every write, in `dir`, on `port`: stopping
    /// it (SIGTERM) and starting it again in the same place keeps every acknowledged write.
    pub fn start_persistent(port: u16, dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir).expect("redis dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server) or run .ci/test.sh");
        let server = Self {
            child,
            port,
            dir: dir.to_path_buf(),
            keep_dir: true,
        };
        server.wait_ready();
        server
    }

    /// Stops the server gracefully (SIGTERM: it flushes its append-only file) and waits.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts redis-server serving only TLS, with a throwaway CA (made with `openssl`) whose
    /// certificate is at [`RedisServer::ca_file`]; connect with `rediss://localhost:<port>/`.
    pub fn start_tls() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("fc-redis-tls-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect(
                    "openssl not found: install it (apt-get install openssl) or run .ci/test.sh",
                );
            assert!(status.success(), "openssl {args:?} failed");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=flashcards-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        )
        .expect("ext.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", "server.pem", "--tls-key-file", "server.key"])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server) or run .ci/test.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "TLS redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            dir,
            keep_dir: false,
        }
    }

    /// The CA certificate of a TLS server ([`RedisServer::start_tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 16];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream
                        .read(&mut buf)
                        .map(|n| buf[..n].starts_with(b"+PONG"))
                        .unwrap_or(false)
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not become ready", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A child process killed on drop (service binaries started by tests).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `url` answers 200, or panics after `timeout`.
pub async fn wait_http_ok(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(resp) = http().get(url).send().await
            && resp.status().is_success()
        {
            return;
        }
        if Instant::now() > deadline {
            panic!("{url} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Installs the process-wide rustls crypto provider reqwest needs (idempotent).
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    init_tls();
    reqwest::Client::new()
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: serde_json::Value,
}

/// Reads SSE events from a response until the stream ends, `stop_after` events arrived, or
/// `timeout` passes. Returns the events and whether the server ended the stream.
pub async fn read_sse(
    mut response: reqwest::Response,
    stop_after: usize,
    timeout: Duration,
) -> (Vec<SseEvent>, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => return (events, false),
            Ok(Err(_)) | Ok(Ok(None)) => return (events, true),
            Ok(Ok(Some(chunk))) => chunk,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = SseEvent {
                event: "message".into(),
                id: None,
                data: serde_json::Value::Null,
            };
            let mut data = String::new();
            let mut has_data = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event.event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    event.id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                    has_data = true;
                }
            }
            if has_data {
                event.data = serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data));
                events.push(event);
                if events.len() >= stop_after {
                    return (events, false);
                }
            }
        }
    }
}

/// A study paragraph with definitions and key terms.
pub const STUDY_TEXT: &str = "Photosynthesis is the process by which green plants use sunlight \
to synthesize glucose from carbon dioxide and water. Chlorophyll is the green pigment that \
absorbs light energy. The mitochondrion is an organelle that produces most of the cell's ATP \
through cellular respiration. Ribosomes are molecular machines that build proteins from amino \
acids. The cell membrane is a selectively permeable barrier that controls what enters and \
leaves the cell.";
