//! SSE benchmark against real processes: its own `redis-server`, one `flashcard-service api` and
//! one `flashcard-service worker` (the binary Cargo builds for this bench, i.e. the release build
//! under `cargo bench`), with the SSE clients in several client processes (this same bench
//! binary re-run with `SSE_BENCH_ROLE=client`), because one process may open at most 20,000
//! files here and the api process alone holds one socket per follower.
//!
//! 1. **Connect burst**: 1,000 followers open at once (shared by the client processes, no
//!    pacing); TCP connect and time to the `connected` event, p50/p99, and the kernel's
//!    `TcpExtListenOverflows` (from `/proc/net/netstat`, system-wide) before and after.
//! 2. **Idle followers**: held in steps (default 1,000 / 10,000 / 18,000) on jobs that stay
//!    `waiting` (no worker yet); the api's RSS per follower at each step; then all close, and
//!    the RSS 60 s later gives the share of the growth given back.
//! 3. **Event latency with a real worker**: `rate x seconds / 3` jobs (10 cards each, so the
//!    `completed` payloads have a realistic size) each get a follower while no worker runs;
//!    then the worker starts with a concurrency and `--simulated-latency-ms` that pace it at
//!    about `rate` events/s (`active`, `progress`, `completed` per job). Latency runs from the
//!    store write (Redis `MONITOR`'s microsecond timestamp of the `XADD` the worker's script
//!    does) to the client having the event off its socket (same host clock).
//! 4. **Floor**: raw `XADD` -> `XREAD BLOCK`, timed the same way (from `MONITOR`'s timestamp of
//!    the `XADD` to the reader having the entry), twice in the same run: beside the worker
//!    during phase 3 (at `SSE_BENCH_FLOOR_RATE`, default 200/s, so it adds little load: the
//!    floor on the machine as loaded as the SSE path was), and alone afterwards at the full rate
//!    with payloads of the measured `completed` size.
//!
//! The closing table compares with the targets of issue 12, all computed in this run; the
//! latency ratios use the floor under the same load (the one measured alone is printed too).
//!
//! Run: `service/benches/run-sse-bench.sh` (raises the open-files limit, checks redis-server).
//! Knobs: `SSE_BENCH_STEPS=1000,10000,18000`, `SSE_BENCH_BURST=1000`, `SSE_BENCH_RATE=1000`,
//! `SSE_BENCH_SECONDS=10`, `SSE_BENCH_RETURN_SECONDS=60`, `SSE_BENCH_CLIENT_PROCS=4`,
//! `SSE_BENCH_WORKER_LATENCY_MS=250`, `SSE_BENCH_FLOOR_RATE=200`. Loopback only; every phase is bounded in time.

// The service tests' process helper; a bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use support::{RedisServer, STUDY_TEXT, Service, http};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;

const PIPELINE: &str = "bench";
/// Payload of the floor run beside the worker (about a 10-card `completed` event).
const FLOOR_BYTES_UNDER_LOAD: usize = 1700;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Microseconds since the Unix epoch (the clock Redis stamps `MONITOR` lines with).
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn soft_fd_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

/// `TcpExtListenOverflows` of the whole host (accept queue full: the SYN is dropped).
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Summary {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn summarize(mut values: Vec<f64>) -> Summary {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if values.is_empty() {
            f64::NAN
        } else {
            values[((values.len() as f64 * q) as usize).min(values.len() - 1)]
        }
    };
    Summary {
        count: values.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: values.last().copied().unwrap_or(f64::NAN),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// A minimal SSE client over raw TCP (HTTP/1.1, chunked): light enough to hold thousands.
// ---------------------------------------------------------------------------------------------

struct RawSse {
    stream: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
    /// When the read that completed the buffered data returned.
    last_read_us: i64,
}

/// One SSE event: name, id and the size of its data.
struct Frame {
    event: String,
    id: Option<u64>,
    data_bytes: usize,
    at_us: i64,
}

/// Timings of one connection: TCP connect, and connect start to the `connected` event.
struct Opened {
    sse: RawSse,
    connect_us: u64,
    first_event_us: u64,
}

impl RawSse {
    async fn open(addr: SocketAddr, source: Ipv4Addr, job: &str) -> Result<Opened, String> {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        // A source address per client process: each has its own ephemeral port range.
        socket
            .bind(SocketAddr::from((source, 0)))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let began = Instant::now();
        let mut stream = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let connect_us = began.elapsed().as_micros() as u64;
        let request = format!(
            "GET /api/job-events?jobId={job} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::with_capacity(1024);
        let header_end = loop {
            if let Some(at) = find(&raw, b"\r\n\r\n") {
                break at;
            }
            let mut buf = [0u8; 2048];
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed before headers".into());
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..header_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(format!(
                "status: {}",
                head.lines().next().unwrap_or_default()
            ));
        }
        raw.drain(..header_end + 4);
        let mut sse = Self {
            stream,
            raw,
            body: Vec::new(),
            ended: false,
            last_read_us: now_us(),
        };
        sse.decode()?;
        match sse.next().await? {
            Some(frame) if frame.event == "connected" => Ok(Opened {
                sse,
                connect_us,
                first_event_us: began.elapsed().as_micros() as u64,
            }),
            Some(frame) => Err(format!("first event: {}", frame.event)),
            None => Err("stream ended before `connected`".into()),
        }
    }

    /// Moves complete chunks from `raw` into `body`.
    fn decode(&mut self) -> Result<(), String> {
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return Ok(());
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return Ok(());
            }
            let need = line_end + 2 + size + 2;
            if self.raw.len() < need {
                return Ok(());
            }
            self.body
                .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..need);
        }
    }

    /// The next event; `Ok(None)` when the server ended the stream.
    async fn next(&mut self) -> Result<Option<Frame>, String> {
        loop {
            if let Some(end) = find(&self.body, b"\n\n") {
                let block: Vec<u8> = self.body.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut frame = Frame {
                    event: String::new(),
                    id: None,
                    data_bytes: 0,
                    at_us: self.last_read_us,
                };
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        frame.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        frame.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        frame.data_bytes += v.len();
                    }
                }
                if !frame.event.is_empty() {
                    return Ok(Some(frame));
                }
                continue;
            }
            if self.ended {
                return Ok(None);
            }
            let mut buf = [0u8; 16384];
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Ok(None);
            }
            self.last_read_us = now_us();
            self.raw.extend_from_slice(&buf[..n]);
            self.decode()?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client processes: commands on stdin, one JSON reply line each on stdout.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum ClientCommand {
    /// Open `count` followers over `jobs` (round robin), `concurrency` at a time (0: all at
    /// once), and hold them without reading.
    Open {
        addr: SocketAddr,
        source: Ipv4Addr,
        jobs: Vec<String>,
        count: usize,
        concurrency: usize,
    },
    /// Close every held follower.
    Close,
    /// Follow each job (index, id): reply `Ready` once all are connected, then `Receipts`
    /// when every stream ended (or the deadline passed).
    Follow {
        addr: SocketAddr,
        source: Ipv4Addr,
        jobs: Vec<(usize, String)>,
        concurrency: usize,
        deadline_seconds: u64,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OpenReply {
    held: usize,
    failed: usize,
    connect_us: Vec<u64>,
    first_event_us: Vec<u64>,
    first_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    job: usize,
    seq: u64,
    kind: String,
    at_us: i64,
    data_bytes: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FollowReply {
    ready: usize,
    failed: usize,
    first_error: Option<String>,
    receipts: Vec<Receipt>,
    ended: usize,
    timed_out: usize,
}

fn reply(value: &impl Serialize) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, value);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

async fn open_many(
    addr: SocketAddr,
    source: Ipv4Addr,
    jobs: Vec<String>,
    concurrency: usize,
) -> (Vec<Result<Opened, String>>, usize) {
    let permits = Arc::new(Semaphore::new(if concurrency == 0 {
        Semaphore::MAX_PERMITS
    } else {
        concurrency
    }));
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let permits = permits.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
                tokio::time::timeout(Duration::from_secs(30), RawSse::open(addr, source, &job))
                    .await
                    .map_err(|_| "open timed out".to_owned())?
            })
        })
        .collect();
    let mut results = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let result = task.await.unwrap_or_else(|e| Err(e.to_string()));
        failed += result.is_err() as usize;
        results.push(result);
    }
    (results, failed)
}

fn client_main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    runtime.block_on(async {
        let mut held: Vec<TcpStream> = Vec::new();
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let command: ClientCommand = match serde_json::from_str(&line) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("client: bad command {line:?}: {e}");
                    return;
                }
            };
            match command {
                ClientCommand::Open {
                    addr,
                    source,
                    jobs,
                    count,
                    concurrency,
                } => {
                    let jobs: Vec<String> =
                        (0..count).map(|i| jobs[i % jobs.len()].clone()).collect();
                    let (results, failed) = open_many(addr, source, jobs, concurrency).await;
                    let mut out = OpenReply {
                        failed,
                        ..OpenReply::default()
                    };
                    for result in results {
                        match result {
                            Ok(opened) => {
                                out.connect_us.push(opened.connect_us);
                                out.first_event_us.push(opened.first_event_us);
                                // Idle: only the socket is kept, nothing is read.
                                held.push(opened.sse.stream);
                            }
                            Err(e) => {
                                out.first_error.get_or_insert(e);
                            }
                        }
                    }
                    out.held = held.len();
                    reply(&out);
                }
                ClientCommand::Close => {
                    let closed = held.len();
                    held.clear();
                    reply(&json!({ "closed": closed }));
                }
                ClientCommand::Follow {
                    addr,
                    source,
                    jobs,
                    concurrency,
                    deadline_seconds,
                } => {
                    let (indexes, ids): (Vec<usize>, Vec<String>) = jobs.into_iter().unzip();
                    let (results, failed) = open_many(addr, source, ids, concurrency).await;
                    let mut out = FollowReply {
                        failed,
                        ..FollowReply::default()
                    };
                    let mut followers = Vec::new();
                    for (job, result) in indexes.into_iter().zip(results) {
                        match result {
                            Ok(opened) => followers.push((job, opened.sse)),
                            Err(e) => {
                                out.first_error.get_or_insert(e);
                            }
                        }
                    }
                    out.ready = followers.len();
                    reply(&out);
                    let deadline =
                        tokio::time::Instant::now() + Duration::from_secs(deadline_seconds);
                    let readers: Vec<_> = followers
                        .into_iter()
                        .map(|(job, mut sse)| {
                            tokio::spawn(async move {
                                let mut receipts = Vec::new();
                                loop {
                                    match tokio::time::timeout_at(deadline, sse.next()).await {
                                        Ok(Ok(Some(frame))) => {
                                            if let Some(seq) = frame.id {
                                                receipts.push(Receipt {
                                                    job,
                                                    seq,
                                                    kind: frame.event,
                                                    at_us: frame.at_us,
                                                    data_bytes: frame.data_bytes,
                                                });
                                            }
                                        }
                                        Ok(_) => return (receipts, true),
                                        Err(_) => return (receipts, false),
                                    }
                                }
                            })
                        })
                        .collect();
                    let mut done = FollowReply::default();
                    for reader in readers {
                        if let Ok((receipts, ended)) = reader.await {
                            done.receipts.extend(receipts);
                            if ended {
                                done.ended += 1;
                            } else {
                                done.timed_out += 1;
                            }
                        }
                    }
                    reply(&done);
                }
            }
        }
    });
}

/// A client process seen from the bench.
struct ClientProc {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    source: Ipv4Addr,
}

impl ClientProc {
    fn spawn(index: usize) -> Self {
        let exe = std::env::current_exe().expect("bench executable");
        let mut child = tokio::process::Command::new(exe)
            .env("SSE_BENCH_ROLE", "client")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start a client process");
        let stdin = child.stdin.take().expect("client stdin");
        let stdout = BufReader::new(child.stdout.take().expect("client stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
            source: Ipv4Addr::new(127, 0, 0, 20 + index as u8),
        }
    }

    async fn send(&mut self, command: &ClientCommand) {
        let mut line = serde_json::to_vec(command).expect("command JSON");
        line.push(b'\n');
        self.stdin.write_all(&line).await.expect("write to client");
        self.stdin.flush().await.expect("flush client");
    }

    async fn receive<T: for<'de> Deserialize<'de>>(&mut self) -> T {
        let line = self
            .stdout
            .next_line()
            .await
            .expect("read client")
            .expect("client process ended");
        serde_json::from_str(&line).expect("client reply JSON")
    }
}

// ---------------------------------------------------------------------------------------------
// Redis MONITOR: the store's own microsecond timestamp of every write.
// ---------------------------------------------------------------------------------------------

/// Write times seen by MONITOR: job events by (job index, seq), floor entries by number.
#[derive(Default)]
struct Writes {
    events: HashMap<(usize, u64), i64>,
    floor: HashMap<u64, i64>,
    ordinal: HashMap<usize, u64>,
    first_us: Option<i64>,
    last_us: i64,
}

/// The first UUID-shaped token in `s` (job ids end in one).
fn first_uuid(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(35)).find_map(|i| {
        let w = &b[i..i + 36];
        let ok = w.iter().enumerate().all(|(j, c)| match j {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
        ok.then(|| &s[i..i + 36])
    })
}

fn number_after(s: &str, marker: &str) -> Option<u64> {
    let at = s.find(marker)? + marker.len();
    let digits: String = s[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads MONITOR until aborted, noting XADDs of the given jobs (uuid -> index) and the floor.
async fn monitor(
    redis_port: u16,
    jobs: Arc<HashMap<String, usize>>,
    writes: Arc<Mutex<Writes>>,
) -> tokio::task::JoinHandle<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", redis_port))
        .await
        .expect("MONITOR connection");
    stream.write_all(b"MONITOR\r\n").await.expect("MONITOR");
    let mut lines = BufReader::new(stream).lines();
    // The `+OK` comes first: once read, every later write is seen.
    let ok = lines.next_line().await.expect("MONITOR reply");
    assert_eq!(ok.as_deref(), Some("+OK"), "MONITOR refused");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.trim_start_matches('+');
            let Some((stamp, rest)) = line.split_once(' ') else {
                continue;
            };
            if !(rest.contains("\"XADD\"") || rest.contains("\"xadd\"")) {
                continue;
            }
            let Some((secs, micros)) = stamp.split_once('.') else {
                continue;
            };
            let (Ok(secs), Ok(micros)) = (secs.parse::<i64>(), micros.parse::<i64>()) else {
                continue;
            };
            let at = secs * 1_000_000 + micros;
            let Ok(mut w) = writes.lock() else { return };
            if let Some(n) = number_after(rest, "\"bench-floor\" \"") {
                w.floor.entry(n).or_insert(at);
                continue;
            }
            let Some(job) = first_uuid(rest).and_then(|u| jobs.get(u).copied()) else {
                continue;
            };
            // The event's own sequence number when the stored JSON shows it, else its order.
            let seq = match number_after(rest, r#"seq\":"#) {
                Some(seq) => seq,
                None => {
                    let n = w.ordinal.entry(job).or_insert(0);
                    *n += 1;
                    *n
                }
            };
            w.events.entry((job, seq)).or_insert(at);
            w.first_us.get_or_insert(at);
            w.last_us = w.last_us.max(at);
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

async fn submit_jobs(api: &Service, count: usize, cards: u32, label: &str) -> Vec<String> {
    let permits = Arc::new(Semaphore::new(32));
    let url = api.url("/api/ai/generate-flashcards");
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let permits = permits.clone();
            let url = url.clone();
            let body = json!({
                "content": format!("{STUDY_TEXT} ({label} {i})"),
                "subject": "biology", "topic": "cells", "userId": "bench", "cardCount": cards,
            });
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.ok()?;
                let response = http().post(url).json(&body).send().await.ok()?;
                let body: Value = response.json().await.ok()?;
                body["jobId"].as_str().map(str::to_owned)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.ok().flatten().expect("job submitted"));
    }
    ids
}

async fn sse_connections(api: &Service) -> u64 {
    match http().get(api.url("/api/sse/stats")).send().await {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["connections"].as_u64())
            .unwrap_or(u64::MAX),
        Err(_) => u64::MAX,
    }
}

struct IdleResult {
    burst_connect: Summary,
    burst_first_event: Summary,
    burst_failed: usize,
    overflows: Option<u64>,
    base_kib: u64,
    steps: Vec<(usize, usize, u64)>,
    peak_kib: u64,
    closed_kib: u64,
    returned_kib: u64,
}

async fn idle_phase(
    api: &Service,
    clients: &mut [ClientProc],
    steps: &[usize],
    burst: usize,
    return_seconds: u64,
) -> IdleResult {
    let pid = api.child.0.id();
    let addr = SocketAddr::from(([127, 0, 0, 1], api.port));
    let jobs = submit_jobs(api, 100, 3, "idle").await;
    // Warm-up: lazily built state (routes, pools, the hub map) is counted in the base.
    {
        let mut warm = ClientProc::spawn(clients.len());
        warm.send(&ClientCommand::Open {
            addr,
            source: warm.source,
            jobs: jobs.clone(),
            count: 50,
            concurrency: 10,
        })
        .await;
        let _: OpenReply = warm.receive().await;
        warm.send(&ClientCommand::Close).await;
        let _: Value = warm.receive().await;
    }
    wait_connections(api, 0, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_kib = rss_kib(pid);
    println!(
        "  api RSS before any follower: {:.1} MiB",
        base_kib as f64 / 1024.0
    );

    // 1. The burst: `burst` followers at once, shared by the client processes so that no
    //    client's own CPU is what is measured.
    let before = listen_overflows();
    let share = burst.div_ceil(clients.len());
    let mut asked = 0;
    for client in clients.iter_mut() {
        let count = share.min(burst - asked);
        asked += count;
        client
            .send(&ClientCommand::Open {
                addr,
                source: client.source,
                jobs: jobs.clone(),
                count,
                concurrency: 0,
            })
            .await;
    }
    let mut opened = OpenReply::default();
    for client in clients.iter_mut() {
        let r: OpenReply = client.receive().await;
        opened.held += r.held;
        opened.failed += r.failed;
        opened.connect_us.extend(r.connect_us);
        opened.first_event_us.extend(r.first_event_us);
        opened.first_error = opened.first_error.or(r.first_error);
    }
    let overflows = listen_overflows()
        .zip(before)
        .map(|(after, before)| after - before);
    let burst_connect = summarize(opened.connect_us.iter().map(|&u| u as f64 / 1e3).collect());
    let burst_first_event = summarize(
        opened
            .first_event_us
            .iter()
            .map(|&u| u as f64 / 1e3)
            .collect(),
    );
    println!(
        "  burst of {burst}: held {}, failed {}{}; TCP connect p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
         to `connected` p50 {:.1} ms p99 {:.1} ms max {:.1} ms; TcpExtListenOverflows +{}",
        opened.held,
        opened.failed,
        opened
            .first_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
        burst_connect.p50,
        burst_connect.p99,
        burst_connect.max,
        burst_first_event.p50,
        burst_first_event.p99,
        burst_first_event.max,
        overflows.map_or("?".into(), |o| o.to_string()),
    );
    let mut held = opened.held;

    // 2. The steps, spread over the client processes.
    let mut step_results = Vec::new();
    let mut peak_kib = 0;
    for &target in steps {
        let started = Instant::now();
        let need = target.saturating_sub(held);
        let share = need.div_ceil(clients.len());
        let mut asked = 0;
        for client in clients.iter_mut() {
            let count = share.min(need - asked);
            asked += count;
            client
                .send(&ClientCommand::Open {
                    addr,
                    source: client.source,
                    jobs: jobs.clone(),
                    count,
                    concurrency: 100,
                })
                .await;
        }
        let mut failed = 0;
        let mut error = None;
        held = 0;
        for client in clients.iter_mut() {
            let r: OpenReply = client.receive().await;
            held += r.held;
            failed += r.failed;
            error = error.or(r.first_error);
        }
        let server_side = wait_connections(api, held as u64, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(pid);
        peak_kib = peak_kib.max(rss);
        let per = rss.saturating_sub(base_kib) as f64 / held.max(1) as f64;
        println!(
            "  {target:>6} idle followers: held {held} (failed {failed}{}), server counts {server_side}, \
             api RSS {:.1} MiB = {per:.2} KiB per follower, opened in {:.1} s",
            error.map(|e| format!(": {e}")).unwrap_or_default(),
            rss as f64 / 1024.0,
            started.elapsed().as_secs_f64()
        );
        step_results.push((target, held, rss));
        if failed > 0 {
            println!("  stopping the steps: connections failed");
            break;
        }
    }

    // 3. All close; what comes back.
    for client in clients.iter_mut() {
        client.send(&ClientCommand::Close).await;
    }
    for client in clients.iter_mut() {
        let _: Value = client.receive().await;
    }
    wait_connections(api, 0, Duration::from_secs(60)).await;
    let closed_kib = rss_kib(pid);
    println!(
        "  all closed: api RSS {:.1} MiB; waiting {return_seconds} s",
        closed_kib as f64 / 1024.0
    );
    tokio::time::sleep(Duration::from_secs(return_seconds)).await;
    let returned_kib = rss_kib(pid);
    println!(
        "  {return_seconds} s after closing: api RSS {:.1} MiB",
        returned_kib as f64 / 1024.0
    );
    IdleResult {
        burst_connect,
        burst_first_event,
        burst_failed: opened.failed,
        overflows,
        base_kib,
        steps: step_results,
        peak_kib,
        closed_kib,
        returned_kib,
    }
}

/// Polls `/api/sse/stats` until it shows `want` connections; returns the last count.
async fn wait_connections(api: &Service, want: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let now = sse_connections(api).await;
        if now == want || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct LatencyResult {
    all: Summary,
    completed: Summary,
    deliveries: usize,
    expected_events: usize,
    unmatched: usize,
    ended: usize,
    timed_out: usize,
    events_per_second: f64,
    completed_bytes: usize,
    /// Raw XADD -> XREAD, timed from the write, measured while the worker ran.
    floor_under_load: Summary,
}

async fn latency_phase(
    redis: &RedisServer,
    api: &Service,
    clients: &mut [ClientProc],
    rate: u64,
    seconds: u64,
    worker_latency_ms: u64,
    floor_rate: u64,
) -> (LatencyResult, Service) {
    let addr = SocketAddr::from(([127, 0, 0, 1], api.port));
    let job_count = (rate * seconds / 3).max(1) as usize;
    let ids = submit_jobs(api, job_count, 10, "latency").await;
    let index: HashMap<String, usize> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| first_uuid(id).map(|u| (u.to_owned(), i)))
        .collect();
    let writes = Arc::new(Mutex::new(Writes::default()));
    let monitor = monitor(redis.port, Arc::new(index), writes.clone()).await;
    let deadline_seconds = seconds * 4 + 60;
    let processes = clients.len();
    for (p, client) in clients.iter_mut().enumerate() {
        let jobs: Vec<(usize, String)> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % processes == p)
            .map(|(i, id)| (i, id.clone()))
            .collect();
        client
            .send(&ClientCommand::Follow {
                addr,
                source: client.source,
                jobs,
                concurrency: 100,
                deadline_seconds,
            })
            .await;
    }
    let mut ready = 0;
    for client in clients.iter_mut() {
        let r: FollowReply = client.receive().await;
        ready += r.ready;
        if r.failed > 0 {
            println!("  {} followers failed: {:?}", r.failed, r.first_error);
        }
    }
    println!(
        "  {ready} followers on {job_count} waiting jobs; starting the worker, and a raw \
         XADD -> XREAD floor at {floor_rate}/s beside it (the floor under the same load)"
    );
    let floor = tokio::spawn(floor_phase(
        redis.url(),
        redis.port,
        floor_rate,
        seconds,
        FLOOR_BYTES_UNDER_LOAD,
        Some(writes.clone()),
    ));
    // Concurrency x (simulated latency + overhead) paces the worker at ~rate/3 jobs/s.
    let concurrency = ((rate as f64 / 3.0) * (worker_latency_ms as f64 + 10.0) / 1000.0).ceil();
    let started = Instant::now();
    let worker = Service::start(
        "worker",
        &[
            "--redis-url",
            &redis.url(),
            "--pipeline",
            PIPELINE,
            // One client, no cap: the same work as the peers, which have no per-client cap.
            "--client-concurrency",
            "0",
            "--worker-concurrency",
            &concurrency.to_string(),
            "--simulated-latency-ms",
            &worker_latency_ms.to_string(),
            "--poll-interval-ms",
            "20",
        ],
        &[],
    )
    .await;
    let mut receipts = Vec::new();
    let (mut ended, mut timed_out) = (0, 0);
    for client in clients.iter_mut() {
        let r: FollowReply = client.receive().await;
        receipts.extend(r.receipts);
        ended += r.ended;
        timed_out += r.timed_out;
    }
    println!(
        "  worker (concurrency {concurrency}, {worker_latency_ms} ms per job) finished the jobs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let floor_under_load = floor.await.expect("floor under load");
    tokio::time::sleep(Duration::from_millis(300)).await;
    monitor.abort();
    let writes = writes
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    let mut all = Vec::new();
    let mut completed = Vec::new();
    let mut completed_bytes = Vec::new();
    let mut unmatched = 0;
    for r in &receipts {
        match writes.events.get(&(r.job, r.seq)) {
            Some(&at) => {
                let ms = (r.at_us - at) as f64 / 1e3;
                all.push(ms);
                if r.kind == "completed" {
                    completed.push(ms);
                    completed_bytes.push(r.data_bytes);
                }
            }
            None => unmatched += 1,
        }
    }
    let span = (writes.last_us - writes.first_us.unwrap_or(writes.last_us)) as f64 / 1e6;
    let result = LatencyResult {
        all: summarize(all),
        completed: summarize(completed),
        deliveries: receipts.len(),
        expected_events: writes.events.len(),
        unmatched,
        ended,
        timed_out,
        events_per_second: writes.events.len() as f64 / span.max(1e-3),
        completed_bytes: completed_bytes.iter().sum::<usize>() / completed_bytes.len().max(1),
        floor_under_load: floor_under_load.0,
    };
    (result, worker)
}

/// Paces `rate x seconds` calls of `op` on the current runtime.
async fn paced<F, Fut>(rate: u64, seconds: u64, mut op: F) -> usize
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let total = rate * seconds;
    let started = tokio::time::Instant::now();
    let hard_stop = Instant::now() + Duration::from_secs(seconds * 3 + 10);
    let mut done = 0;
    for n in 0..total {
        tokio::time::sleep_until(started + period * n as u32).await;
        op(n).await;
        done += 1;
        if Instant::now() > hard_stop {
            break;
        }
    }
    done
}

/// Raw Redis floor: XADD by one connection, XREAD BLOCK by another, same rate and payload size,
/// timed from MONITOR's timestamp of the XADD (as the SSE path) and from before the call.
///
/// `shared` is the MONITOR of a phase running at the same time (the floor under the same load);
/// without it the floor starts its own.
async fn floor_phase(
    url: String,
    port: u16,
    rate: u64,
    seconds: u64,
    bytes: usize,
    shared: Option<Arc<Mutex<Writes>>>,
) -> (Summary, Summary) {
    let (writes, monitor) = match shared {
        Some(writes) => (writes, None),
        None => {
            let writes = Arc::new(Mutex::new(Writes::default()));
            let task = monitor(port, Arc::default(), writes.clone()).await;
            (writes, Some(task))
        }
    };
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut reader = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis reader");
    let key = "bench:floor";
    let received: Arc<Mutex<HashMap<u64, i64>>> = Arc::default();
    let got = received.clone();
    let reader_task = tokio::spawn(async move {
        let mut cursor = "$".to_owned();
        loop {
            let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
                redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(500)
                    .arg("COUNT")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(key)
                    .arg(&cursor)
                    .query_async(&mut reader)
                    .await;
            let Ok(Some(reply)) = reply else { continue };
            let at = now_us();
            let Ok(mut got) = got.lock() else { return };
            for stream in reply.keys {
                for entry in stream.ids {
                    cursor = entry.id.clone();
                    if let Some(n) = entry.get::<u64>("bench-floor") {
                        got.insert(n, at);
                    }
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent: Arc<Mutex<HashMap<u64, i64>>> = Arc::default();
    let sent_p = sent.clone();
    // The producer paces on its own thread and runtime, undisturbed by the reader.
    let producer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("producer runtime");
        runtime.block_on(async move {
            let client = redis::Client::open(url.as_str()).expect("redis url");
            let writer = client
                .get_multiplexed_async_connection()
                .await
                .expect("redis writer");
            let payload = "x".repeat(bytes);
            paced(rate, seconds, |n| {
                let mut writer = writer.clone();
                let payload = payload.clone();
                let sent = sent_p.clone();
                async move {
                    let t0 = now_us();
                    let _: redis::RedisResult<String> = redis::cmd("XADD")
                        .arg(key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(10_000)
                        .arg("*")
                        .arg("bench-floor")
                        .arg(n)
                        .arg("event")
                        .arg(&payload)
                        .query_async(&mut writer)
                        .await;
                    if let Ok(mut s) = sent.lock() {
                        s.insert(n, t0);
                    }
                }
            })
            .await
        })
    });
    tokio::task::spawn_blocking(move || producer.join().expect("producer"))
        .await
        .expect("join producer");
    tokio::time::sleep(Duration::from_millis(700)).await;
    reader_task.abort();
    if let Some(monitor) = monitor {
        monitor.abort();
    }
    let received = received.lock().map(|r| r.clone()).unwrap_or_default();
    let written = writes.lock().map(|w| w.floor.clone()).unwrap_or_default();
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let from_write = received
        .iter()
        .filter_map(|(n, at)| written.get(n).map(|w| (at - w) as f64 / 1e3))
        .collect();
    let from_call = received
        .iter()
        .filter_map(|(n, at)| sent.get(n).map(|t0| (at - t0) as f64 / 1e3))
        .collect();
    (summarize(from_write), summarize(from_call))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

fn main() {
    if std::env::var("SSE_BENCH_ROLE").is_ok_and(|r| r == "client") {
        client_main();
        return;
    }
    // `cargo bench` passes `--bench`; arguments are ignored.
    support::init_tls();
    let steps: Vec<usize> = std::env::var("SSE_BENCH_STEPS")
        .unwrap_or_else(|_| "1000,10000,18000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let burst: usize = env_or("SSE_BENCH_BURST", 1000);
    let rate: u64 = env_or("SSE_BENCH_RATE", 1000);
    let seconds: u64 = env_or("SSE_BENCH_SECONDS", 10);
    let return_seconds: u64 = env_or("SSE_BENCH_RETURN_SECONDS", 60);
    let worker_latency_ms: u64 = env_or("SSE_BENCH_WORKER_LATENCY_MS", 250);
    let floor_rate: u64 = env_or("SSE_BENCH_FLOOR_RATE", 200);
    let fd_limit = soft_fd_limit();
    let largest = steps.iter().copied().max().unwrap_or(0).max(burst);
    // Each client process and the api hold one socket per follower; keep room for the rest.
    let per_process = fd_limit.saturating_sub(500).max(1) as usize;
    let processes: usize = env_or("SSE_BENCH_CLIENT_PROCS", 4)
        .max(largest.div_ceil(per_process))
        .max(1);
    let api_room = fd_limit.saturating_sub(500) as usize;
    let steps: Vec<usize> = steps.into_iter().filter(|&s| s <= api_room).collect();
    println!(
        "sse_bench: open-files limit {fd_limit}; burst {burst}; idle steps {steps:?} over {processes} \
         client processes; {rate} events/s for {seconds} s with a real worker; {} cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  binary: {}", env!("CARGO_BIN_EXE_flashcard-service"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let redis = RedisServer::start();
        let max = (api_room.max(largest) + 200).to_string();
        let api = Service::start(
            "api",
            &[
                "--redis-url",
                &redis.url(),
                "--pipeline",
                PIPELINE,
                "--rate-limit-jobs",
                "0",
                "--sse-max-connections",
                &max,
                "--max-connections",
                &max,
                "--max-card-count",
                "50",
            ],
            &[],
        )
        .await;
        let mut clients: Vec<ClientProc> = (0..processes).map(ClientProc::spawn).collect();

        println!("\n[1+2] connect burst and idle followers held by one api process");
        let idle = idle_phase(&api, &mut clients, &steps, burst, return_seconds).await;

        println!("\n[3] event latency, worker's store write -> SSE client");
        let (lat, _worker) =
            latency_phase(&redis, &api, &mut clients, rate, seconds, worker_latency_ms, floor_rate).await;
        println!(
            "  {} deliveries of {} events written ({:.0} events/s), unmatched {}; streams ended {}, timed out {}; \
             `completed` data {} bytes",
            lat.deliveries,
            lat.expected_events,
            lat.events_per_second,
            lat.unmatched,
            lat.ended,
            lat.timed_out,
            lat.completed_bytes
        );
        println!(
            "  all events: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; `completed`: p50 {:.3} ms, p99 {:.3} ms",
            lat.all.p50, lat.all.p99, lat.all.max, lat.completed.p50, lat.completed.p99
        );

        println!("\n[4] floor: raw Redis XADD -> XREAD at {rate}/s, {} byte payloads", lat.completed_bytes);
        let (alone, alone_call) =
            floor_phase(redis.url(), redis.port, rate, seconds, lat.completed_bytes.max(64), None).await;
        println!(
            "  alone, from the write (MONITOR): n={} p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; \
             from before the XADD call: p50 {:.3} ms, p99 {:.3} ms",
            alone.count, alone.p50, alone.p99, alone.max, alone_call.p50, alone_call.p99
        );
        let floor = lat.floor_under_load;
        println!(
            "  under the same load (beside the worker, {floor_rate}/s): n={} p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            floor.count, floor.p50, floor.p99, floor.max
        );

        // The table.
        let last = idle.steps.last().copied();
        let per_follower = last.map(|(_, held, rss)| rss.saturating_sub(idle.base_kib) as f64 / held.max(1) as f64);
        let growth = idle.peak_kib.saturating_sub(idle.base_kib) as f64;
        let returned = if growth > 0.0 {
            idle.peak_kib.saturating_sub(idle.returned_kib) as f64 / growth
        } else {
            f64::NAN
        };
        let rows = [
            (
                format!("RSS per idle follower at {}", last.map_or(0, |l| l.1)),
                "<= 8 KiB".to_owned(),
                per_follower.map_or("-".into(), |p| format!("{p:.2} KiB")),
                per_follower.is_some_and(|p| p <= 8.0),
            ),
            (
                format!("growth returned {return_seconds} s after all closed"),
                ">= 80%".to_owned(),
                format!("{:.0}%", returned * 100.0),
                returned >= 0.8,
            ),
            (
                format!("TCP connect p99, {burst} at once"),
                "< 100 ms".to_owned(),
                format!("{:.1} ms (to `connected`: {:.1} ms)", idle.burst_connect.p99, idle.burst_first_event.p99),
                idle.burst_connect.p99 < 100.0 && idle.burst_failed == 0,
            ),
            (
                "event latency p50 vs floor p50 (same load)".to_owned(),
                "<= 2x".to_owned(),
                format!("{:.3} / {:.3} ms = {:.2}x", lat.all.p50, floor.p50, lat.all.p50 / floor.p50),
                lat.all.p50 <= 2.0 * floor.p50,
            ),
            (
                "event latency p99 vs floor p99 (same load)".to_owned(),
                "<= 3x".to_owned(),
                format!("{:.3} / {:.3} ms = {:.2}x", lat.all.p99, floor.p99, lat.all.p99 / floor.p99),
                lat.all.p99 <= 3.0 * floor.p99,
            ),
        ];
        println!("\n| measure | target | this run | met |\n| --- | --- | --- | --- |");
        for (name, target, value, ok) in &rows {
            println!("| {name} | {target} | {value} | {} |", verdict(*ok));
        }
        println!(
            "\nAgainst the floor measured alone: p50 {:.2}x, p99 {:.2}x.",
            lat.all.p50 / alone.p50,
            lat.all.p99 / alone.p99
        );
        println!(
            "RSS: base {:.1} MiB, peak {:.1} MiB, just after closing {:.1} MiB, {return_seconds} s later {:.1} MiB; \
             TcpExtListenOverflows during the burst: {}",
            idle.base_kib as f64 / 1024.0,
            idle.peak_kib as f64 / 1024.0,
            idle.closed_kib as f64 / 1024.0,
            idle.returned_kib as f64 / 1024.0,
            idle.overflows.map_or("?".into(), |o| o.to_string())
        );
        let result = json!({
            "steps": idle.steps.iter().map(|(t, h, r)| json!({"target": t, "held": h, "rssKiB": r})).collect::<Vec<_>>(),
            "baseKiB": idle.base_kib, "peakKiB": idle.peak_kib, "returnedKiB": idle.returned_kib,
            "burst": {"connectMs": idle.burst_connect, "connectedMs": idle.burst_first_event, "listenOverflows": idle.overflows},
            "latencyMs": {"all": lat.all, "completed": lat.completed, "eventsPerSecond": lat.events_per_second},
            "floorMs": {"underLoad": floor, "alone": alone, "aloneFromCall": alone_call},
        });
        println!("\nresult: {result}");
        for client in &mut clients {
            let _ = client.child.start_kill();
        }
    });
}
