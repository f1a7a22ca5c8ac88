//! SSE benchmark against real processes: `redis-server` and `flashcard-service api` (the binary
//! Cargo builds for this bench, `CARGO_BIN_EXE_flashcard-service`, i.e. the release build under
//! `cargo bench`; `FLASHCARD_SERVICE_BIN` overrides it).
//!
//! 1. Idle connections: opens SSE connections in steps (default 1,000 / 5,000 / 10,000) to jobs
//!    that stay `waiting` (no worker runs), checks `/api/sse/stats` and reports the api process's
//!    RSS per connection (`/proc/<pid>/status` VmRSS).
//! 2. Event latency: ~100 clients follow 25 jobs; a producer writes job events the way the worker
//!    does (the store's Lua scripts: `claim` emits `active`, `fail` with a retry emits
//!    `retrying`) at ~1,000 events/s; latency runs from just before the store call to the client
//!    having parsed the event off its socket. The floor, measured in the same run at the same
//!    rate, is a raw Redis `XADD` -> `XREAD` round trip; the figures are also compared with
//!    `benches/sse_baseline.json` (`SSE_BENCH_WRITE_BASELINE=1` rewrites it).
//!
//! Run with `service/benches/run-sse-bench.sh` (raises the open-files limit first). Knobs:
//! `SSE_BENCH_STEPS=1000,5000,10000`, `SSE_BENCH_RATE=1000`, `SSE_BENCH_SECONDS=10`,
//! `SSE_BENCH_CLIENTS=100`, `SSE_BENCH_JOBS=25`. Loopback only; every phase is bounded in time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashcard_service::job::JobRequest;
use flashcard_service::keyspace::PipelineId;
use flashcard_service::store::redis::RedisStore;
use flashcard_service::store::{
    Admission, ClaimRequest, Cost, Outcome, Pricing, Store, Submission,
};
use serde_json::{Value, json};
use support::{RedisServer, Service, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const BASELINE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sse_baseline.json");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn soft_fd_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn sse_stats(api: &Service) -> Value {
    http()
        .get(api.url("/api/sse/stats"))
        .send()
        .await
        .expect("GET /api/sse/stats")
        .json()
        .await
        .expect("stats JSON")
}

fn request(i: usize) -> JobRequest {
    JobRequest {
        content: format!("Latency is the time between a cause and its effect. Sample {i}."),
        subject: "Benchmarks".into(),
        topic: "SSE".into(),
        user_id: "bench".into(),
        card_count: 3,
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal SSE client over raw TCP (HTTP/1.1, chunked): light enough to hold 10,000 of them.
// ---------------------------------------------------------------------------------------------

struct RawSse {
    stream: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

/// One SSE event: name and id (the data is not parsed, to keep the client cheap).
struct Frame {
    event: String,
    id: Option<u64>,
}

impl RawSse {
    async fn connect(addr: SocketAddr, job: &str) -> Result<Self, String> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
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
            let mut buf = [0u8; 1024];
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
        if !head.contains("transfer-encoding: chunked") {
            return Err("expected a chunked SSE body".into());
        }
        raw.drain(..header_end + 4);
        let mut sse = Self {
            stream,
            raw,
            body: Vec::new(),
            ended: false,
        };
        // The first chunks may have come with the headers.
        sse.decode()?;
        Ok(sse)
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
                };
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        frame.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        frame.id = v.trim().parse().ok();
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
            let mut buf = [0u8; 8192];
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Ok(None);
            }
            self.raw.extend_from_slice(&buf[..n]);
            self.decode()?;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Summary {
    count: usize,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn summarize(mut micros: Vec<f64>) -> Summary {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if micros.is_empty() {
            f64::NAN
        } else {
            micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)]
        }
    };
    Summary {
        count: micros.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: micros.last().copied().unwrap_or(f64::NAN),
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: idle connections
// ---------------------------------------------------------------------------------------------

struct IdleStep {
    target: usize,
    held: usize,
    failed: usize,
    stats_connections: u64,
    rss_kb: u64,
    open_seconds: f64,
}

async fn idle_connections(redis: &RedisServer, steps: &[usize]) -> (u64, Vec<IdleStep>, f64) {
    let url = redis.url();
    let max = steps.iter().copied().max().unwrap_or(0);
    let max_conns = (max + 100).to_string();
    let api = Service::start(
        "api",
        &[
            "--redis-url",
            &url,
            "--pipeline",
            "bench-idle",
            "--rate-limit-jobs",
            "0",
            "--sse-max-connections",
            &max_conns,
        ],
        &[],
    )
    .await;
    let pid = api.child.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{}", api.port).parse().expect("addr");
    let mut jobs = Vec::new();
    for i in 0..100 {
        jobs.push(
            api.submit(
                &format!("Idle job {i}: a connection is a channel."),
                "bench",
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kb(pid);
    let mut held: Vec<RawSse> = Vec::with_capacity(max);
    let mut results = Vec::new();
    let opening = Arc::new(Semaphore::new(256));
    let mut failed_total = 0;
    for &target in steps {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(180);
        let mut pending = Vec::new();
        for n in held.len()..target {
            let job = jobs[n % jobs.len()].clone();
            let opening = opening.clone();
            pending.push(tokio::spawn(async move {
                let _permit = opening.acquire_owned().await.map_err(|e| e.to_string())?;
                let began = Instant::now();
                let mut sse =
                    tokio::time::timeout(Duration::from_secs(20), RawSse::connect(addr, &job))
                        .await
                        .map_err(|_| "connect timed out".to_owned())??;
                // Wait for `connected`: the subscription is in place once it arrives.
                match tokio::time::timeout(Duration::from_secs(20), sse.next()).await {
                    Ok(Ok(Some(f))) if f.event == "connected" => Ok((sse, began.elapsed())),
                    Ok(Ok(other)) => Err(format!("first event: {:?}", other.map(|f| f.event))),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("no connected event".into()),
                }
            }));
        }
        let mut failed = 0;
        let mut first_error = None;
        let mut setup_us = Vec::new();
        for task in pending {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, task).await {
                Ok(Ok(Ok((sse, took)))) => {
                    held.push(sse);
                    setup_us.push(took.as_secs_f64() * 1e6);
                }
                Ok(Ok(Err(e))) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                _ => failed += 1,
            }
        }
        failed_total += failed;
        let setup = summarize(setup_us);
        let open_seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = sse_stats(&api).await;
        let step = IdleStep {
            target,
            held: held.len(),
            failed,
            stats_connections: stats["connections"].as_u64().unwrap_or(0),
            rss_kb: rss_kb(pid),
            open_seconds,
        };
        let per_conn = (step.rss_kb.saturating_sub(rss_before)) as f64 / step.held.max(1) as f64;
        println!(
            "  idle step {:>6}: held {:>6} (failed {failed}), stats.connections {:>6}, api RSS {:>7.1} MiB, \
             {per_conn:>5.1} KiB/connection, opened in {open_seconds:.2} s \
             (connect -> `connected` p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms){}",
            step.target,
            step.held,
            step.stats_connections,
            step.rss_kb as f64 / 1024.0,
            setup.p50_us / 1e3,
            setup.p99_us / 1e3,
            setup.max_us / 1e3,
            first_error
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        );
        results.push(step);
        if failed > 0 {
            println!("  stopping the idle steps: connections failed");
            break;
        }
    }
    let closing = Instant::now();
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    let drained = loop {
        let stats = sse_stats(&api).await;
        if stats["connections"] == json!(0) || Instant::now() > deadline {
            break stats["connections"] == json!(0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let close_seconds = closing.elapsed().as_secs_f64();
    println!(
        "  closed all: stats.connections back to 0: {drained} after {close_seconds:.2} s; api RSS {:.1} MiB (before: {:.1} MiB)",
        rss_kb(pid) as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    if failed_total > 0 {
        println!("  {failed_total} connections failed in total");
    }
    (rss_before, results, close_seconds)
}

// ---------------------------------------------------------------------------------------------
// Part 2: latency
// ---------------------------------------------------------------------------------------------

/// Paces `ops` calls of `op` at `rate` per second on the current thread's runtime.
async fn paced<F, Fut>(rate: u64, seconds: u64, mut op: F) -> (usize, Duration)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let total = (rate * seconds) as usize;
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
    (done, started.elapsed())
}

/// Raw Redis floor: XADD by one connection, XREAD BLOCK by another, same rate and payload size.
async fn redis_floor(url: &str, rate: u64, seconds: u64) -> (Summary, f64) {
    let client = redis::Client::open(url).expect("redis url");
    let mut reader = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis reader");
    let key = "bench:floor";
    let payload = "x".repeat(220);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    let reader_task = tokio::spawn(async move {
        let mut cursor = "$".to_owned();
        while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
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
            let now = Instant::now();
            for stream in reply.keys {
                for entry in stream.ids {
                    cursor = entry.id.clone();
                    if let Some(n) = entry.get::<usize>("n") {
                        let _ = tx.send((n, now));
                    }
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent_at: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; (rate * seconds) as usize]));
    let url_owned = url.to_owned();
    let sent = sent_at.clone();
    let producer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("producer runtime");
        runtime.block_on(async move {
            let client = redis::Client::open(url_owned.as_str()).expect("redis url");
            let writer = client
                .get_multiplexed_async_connection()
                .await
                .expect("redis writer");
            paced(rate, seconds, |n| {
                let mut writer = writer.clone();
                let payload = payload.clone();
                let sent = sent.clone();
                async move {
                    let t0 = Instant::now();
                    let _: redis::RedisResult<String> = redis::cmd("XADD")
                        .arg(key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(10_000)
                        .arg("*")
                        .arg("n")
                        .arg(n)
                        .arg("event")
                        .arg(&payload)
                        .query_async(&mut writer)
                        .await;
                    if let Ok(mut s) = sent.lock() {
                        s[n] = Some(t0);
                    }
                }
            })
            .await
        })
    });
    let (done, elapsed) = tokio::task::spawn_blocking(move || producer.join().expect("producer"))
        .await
        .expect("join producer");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(2), reader_task).await;
    let sent = sent_at.lock().map(|s| s.clone()).unwrap_or_default();
    let micros: Vec<f64> = rx
        .try_iter()
        .filter_map(|(n, at)| {
            sent.get(n)
                .copied()
                .flatten()
                .map(|t0| at.duration_since(t0).as_secs_f64() * 1e6)
        })
        .collect();
    (summarize(micros), done as f64 / elapsed.as_secs_f64())
}

struct LatencyResult {
    summary: Summary,
    produced: usize,
    produce_rate: f64,
    deliveries_expected: usize,
    unmatched: usize,
    stats: Value,
}

async fn event_latency(
    redis: &RedisServer,
    rate: u64,
    seconds: u64,
    clients: usize,
    jobs: usize,
) -> LatencyResult {
    let url = redis.url();
    let pipeline = "bench-latency";
    let api = Service::start(
        "api",
        &[
            "--redis-url",
            &url,
            "--pipeline",
            pipeline,
            "--sse-client-buffer",
            "256",
        ],
        &[],
    )
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{}", api.port).parse().expect("addr");
    let store = Arc::new(
        RedisStore::connect(&url, &PipelineId::new(None, pipeline).expect("pipeline"))
            .await
            .expect("connect store"),
    );
    let mut job_ids = Vec::new();
    for i in 0..jobs {
        let request = request(i);
        let submission = Submission {
            job_id: flashcard_service::job::new_job_id(),
            owner: request.user_id.clone(),
            request,
            idempotency: None,
            rate_limit: None,
            max_attempts: 1_000_000,
            traceparent: None,
        };
        match store.submit(submission).await.expect("submit") {
            Admission::Accepted { job_id } => job_ids.push(job_id),
            other => panic!("not accepted: {other:?}"),
        }
    }
    let job_index: Arc<HashMap<String, usize>> = Arc::new(
        job_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect(),
    );

    // Subscribers: receipts (job index, seq, time) per client.
    let mut readers = Vec::new();
    for c in 0..clients {
        let job = c % jobs;
        let mut sse = RawSse::connect(addr, &job_ids[job])
            .await
            .expect("subscribe");
        match sse.next().await {
            Ok(Some(f)) if f.event == "connected" => {}
            _ => panic!("subscriber {c} got no connected event"),
        }
        readers.push(tokio::spawn(async move {
            let mut receipts: Vec<(usize, u64, Instant)> = Vec::with_capacity(8192);
            let limit = Instant::now() + Duration::from_secs(seconds * 3 + 30);
            loop {
                let left = limit.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, sse.next()).await {
                    Ok(Ok(Some(frame))) => {
                        let at = Instant::now();
                        if let Some(id) = frame.id {
                            receipts.push((job, id, at));
                        }
                    }
                    _ => return receipts,
                }
            }
        }));
    }
    let stats = sse_stats(&api).await;
    assert_eq!(
        stats["connections"],
        json!(clients),
        "subscribers not all held: {stats}"
    );

    // Producer on its own thread and runtime, so the readers do not disturb its pacing.
    let sent_at: Arc<std::sync::Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let sent = sent_at.clone();
    let store_p = store.clone();
    let index = job_index.clone();
    let producer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("producer runtime");
        runtime.block_on(async move {
            let held: Arc<std::sync::Mutex<Option<(flashcard_service::store::Lease, usize, u64)>>> =
                Arc::default();
            paced(rate, seconds, |_| {
                let store = store_p.clone();
                let sent = sent.clone();
                let held = held.clone();
                let index = index.clone();
                async move {
                    let lease = held.lock().ok().and_then(|mut h| h.take());
                    let t0 = Instant::now();
                    match lease {
                        // Odd step: the attempt fails with an immediate retry (`retrying`).
                        Some((lease, job, seq)) => {
                            let retry = Outcome::Retry {
                                error: "bench: retry",
                                delay: Duration::ZERO,
                                duration_ms: 1,
                            };
                            if store
                                .finish(&lease, retry, Cost::default(), None)
                                .await
                                .is_ok()
                                && let Ok(mut s) = sent.lock()
                            {
                                s.insert((job, seq + 1), t0);
                            }
                        }
                        // Even step: claim the next job (`active`).
                        None => {
                            let request = ClaimRequest {
                                worker_id: "bench-producer",
                                lease: Duration::from_secs(120),
                                max_jobs: 1,
                                pricing: Pricing::default(),
                                started: None,
                            };
                            if let Some(claim) = store
                                .claim(&request)
                                .await
                                .ok()
                                .and_then(|c| c.jobs.into_iter().next())
                            {
                                let job = index.get(&claim.job.id).copied().unwrap_or(usize::MAX);
                                if let Ok(mut s) = sent.lock() {
                                    s.insert((job, claim.job.event_seq), t0);
                                }
                                if let Ok(mut h) = held.lock() {
                                    *h = Some((claim.lease, job, claim.job.event_seq));
                                }
                            }
                        }
                    }
                }
            })
            .await
        })
    });
    let (produced, elapsed) =
        tokio::task::spawn_blocking(move || producer.join().expect("producer"))
            .await
            .expect("join producer");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = sse_stats(&api).await;
    drop(api); // ends the streams, so the readers return
    let sent = sent_at.lock().map(|s| s.clone()).unwrap_or_default();
    let mut micros = Vec::new();
    let mut unmatched = 0;
    for reader in readers {
        let receipts = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("reader did not stop")
            .expect("reader panicked");
        for (job, seq, at) in receipts {
            match sent.get(&(job, seq)) {
                Some(t0) => micros.push(at.duration_since(*t0).as_secs_f64() * 1e6),
                None => unmatched += 1,
            }
        }
    }
    // Every event of a job goes to each of its subscribers.
    let per_job = clients / jobs;
    LatencyResult {
        summary: summarize(micros),
        produced,
        produce_rate: produced as f64 / elapsed.as_secs_f64(),
        deliveries_expected: sent.len() * per_job,
        unmatched,
        stats,
    }
}

fn ratio(now: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 && now.is_finite() => format!("{:.2}x baseline ({b:.0})", now / b),
        _ => "no baseline".into(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore arguments.
    support::init_tls();
    let steps: Vec<usize> = std::env::var("SSE_BENCH_STEPS")
        .unwrap_or_else(|_| "1000,5000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rate: u64 = env_or("SSE_BENCH_RATE", 1000);
    let seconds: u64 = env_or("SSE_BENCH_SECONDS", 10);
    let clients: usize = env_or("SSE_BENCH_CLIENTS", 100);
    let jobs: usize = env_or("SSE_BENCH_JOBS", 25).clamp(1, clients.max(1));
    let fd_limit = soft_fd_limit();
    // This process holds each connection's socket; keep room for everything else.
    let fd_room = fd_limit.saturating_sub(300) as usize;
    let steps: Vec<usize> = steps.into_iter().filter(|&s| s <= fd_room).collect();
    println!(
        "sse_bench: open-files limit {fd_limit}; idle steps {steps:?}; {rate} events/s for {seconds} s, {clients} clients on {jobs} jobs"
    );
    println!("  binary: {}", env!("CARGO_BIN_EXE_flashcard-service"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let redis = RedisServer::start();

        println!("\n[1] idle SSE connections held by one api process");
        let (rss_before, idle, close_seconds) = idle_connections(&redis, &steps).await;
        let best = idle.iter().rfind(|s| s.failed == 0 && s.stats_connections as usize == s.held);

        println!("\n[2] event latency, store write -> SSE client");
        let (floor, floor_rate) = redis_floor(&redis.url(), rate, seconds).await;
        println!(
            "  floor (raw Redis XADD -> XREAD): n={} p50 {:.0} us, p99 {:.0} us, max {:.0} us at {floor_rate:.0}/s",
            floor.count, floor.p50_us, floor.p99_us, floor.max_us
        );
        let lat = event_latency(&redis, rate, seconds, clients, jobs).await;
        let s = lat.summary;
        println!(
            "  SSE path (Lua claim/fail -> XADD -> api XREAD -> hub -> SSE -> client): deliveries {} of {} expected, unmatched {}",
            s.count, lat.deliveries_expected, lat.unmatched
        );
        println!(
            "  p50 {:.0} us, p99 {:.0} us, max {:.0} us; produced {} events at {:.0}/s, delivered {:.0} events/s to {clients} clients",
            s.p50_us,
            s.p99_us,
            s.max_us,
            lat.produced,
            lat.produce_rate,
            s.count as f64 / seconds as f64
        );
        println!(
            "  vs floor: p50 +{:.0} us ({:.1}x), p99 +{:.0} us ({:.1}x); api dropped slow clients: {}",
            s.p50_us - floor.p50_us,
            s.p50_us / floor.p50_us,
            s.p99_us - floor.p99_us,
            s.p99_us / floor.p99_us,
            lat.stats["clientsDroppedSlow"]
        );

        let rss_per_conn = best.map(|b| b.rss_kb.saturating_sub(rss_before) as f64 / b.held.max(1) as f64);
        let current = json!({
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "idle": {
                "connectionsHeld": best.map(|b| b.held).unwrap_or(0),
                "rssPerConnectionKiB": rss_per_conn,
                "closeAllSeconds": close_seconds,
                "steps": idle.iter().map(|s| json!({
                    "target": s.target, "held": s.held, "failed": s.failed,
                    "statsConnections": s.stats_connections, "rssKiB": s.rss_kb,
                    "openSeconds": s.open_seconds,
                })).collect::<Vec<_>>(),
            },
            "latency": {
                "ratePerSecond": rate, "seconds": seconds, "clients": clients, "jobs": jobs,
                "p50Us": s.p50_us, "p99Us": s.p99_us, "maxUs": s.max_us,
                "producedPerSecond": lat.produce_rate,
                "deliveredPerSecond": s.count as f64 / seconds as f64,
            },
            "floor": {"p50Us": floor.p50_us, "p99Us": floor.p99_us},
        });
        let baseline: Option<Value> = std::fs::read_to_string(BASELINE_PATH)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let base = |path: &[&str]| {
            let mut v = baseline.as_ref()?;
            for p in path {
                v = v.get(*p)?;
            }
            v.as_f64()
        };
        println!("\n[3] against {BASELINE_PATH}");
        println!("  p50 {:.0} us: {}", s.p50_us, ratio(s.p50_us, base(&["latency", "p50Us"])));
        println!("  p99 {:.0} us: {}", s.p99_us, ratio(s.p99_us, base(&["latency", "p99Us"])));
        if let Some(per) = rss_per_conn {
            println!("  RSS/connection {per:.1} KiB: {}", ratio(per, base(&["idle", "rssPerConnectionKiB"])));
        }
        if std::env::var("SSE_BENCH_WRITE_BASELINE").is_ok_and(|v| v == "1") {
            let text = serde_json::to_string_pretty(&current).expect("json");
            std::fs::write(BASELINE_PATH, text + "\n").expect("write baseline");
            println!("  baseline rewritten");
        }
        println!("\nresult: {current}");
    });
}
