//! apalis side of the queue benchmark (driven by service/benches/queue_bench.rs), speaking the
//! same protocol as `../bullmq.mjs` so the orchestrator treats both peers alike:
//!
//!   apalis-bench-peer --port 6390 --queue q1 --jobs 10000 --mode single|bulk
//!        [--producers 50] [--bulk 50] [--concurrency 50] [--timeout-ms 300000]
//!
//! Producer (this process) and worker (this binary again, `worker ...`, a child process, as
//! BullMQ's worker is) on one redis-server. `single`: `producers` concurrent loops, each awaiting
//! one `push` per job; `bulk`: one loop awaiting `push_bulk` of `bulk` jobs. The worker runs
//! no-op jobs at `concurrency`, fetching up to `concurrency` jobs per poll (apalis-redis
//! `batch_size`, its fastest setting) with a 10 ms heartbeat (see `storage`).
//!
//! Lines on stdout (JSON) and stdin, as with the BullMQ peer: `{"event":"ready",...}`, then
//! `go` on stdin, `{"event":"result",...}` after the last completion, then `close`. apalis keeps
//! finished ids in a plain SET (no completion time), so the producer polls its size every 2 ms
//! (about 0.1 `SCARD` per job in the counts) and takes the first poll that sees every job done
//! as the end.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apalis::prelude::*;
use apalis_redis::{Config, RedisStorage};
use serde::{Deserialize, Serialize};

/// A job: the orchestrator's request body (`PEER_JOB_DATA`) and its index.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    i: usize,
    #[serde(flatten)]
    data: serde_json::Map<String, serde_json::Value>,
}

/// `PEER_JOB_DATA` / `PEER_JOB_RESULT`: the service's own request body and result, so apalis
/// stores and moves the same bytes per job as the service does.
fn env_json(name: &str) -> serde_json::Value {
    match std::env::var(name) {
        Ok(text) => {
            serde_json::from_str(&text).unwrap_or_else(|e| fail(format!("{name} is not JSON: {e}")))
        }
        Err(_) => serde_json::Value::Null,
    }
}

#[derive(Debug, Clone)]
struct Opts {
    worker: bool,
    port: u16,
    queue: String,
    jobs: usize,
    mode: String,
    producers: usize,
    bulk: usize,
    concurrency: usize,
    timeout_ms: u64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("apalis-bench-peer: {message}");
    std::process::exit(2);
}

fn parse(args: &[String]) -> Opts {
    let mut o = Opts {
        worker: false,
        port: 6379,
        queue: "bench".into(),
        jobs: 10_000,
        mode: "single".into(),
        producers: 50,
        bulk: 50,
        concurrency: 50,
        timeout_ms: 300_000,
    };
    let mut rest = args;
    if rest.first().map(String::as_str) == Some("worker") {
        o.worker = true;
        rest = &rest[1..];
    }
    for pair in rest.chunks(2) {
        let [name, value] = pair else {
            fail(format!("missing value for {}", pair[0]))
        };
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| fail(format!("bad number {name}")))
        };
        match name.as_str() {
            "--port" => o.port = number() as u16,
            "--queue" => o.queue = value.clone(),
            "--jobs" => o.jobs = number() as usize,
            "--mode" => o.mode = value.clone(),
            "--producers" => o.producers = number().max(1) as usize,
            "--bulk" => o.bulk = number().max(1) as usize,
            "--concurrency" => o.concurrency = number().max(1) as usize,
            "--timeout-ms" => o.timeout_ms = number(),
            other => fail(format!("unknown option {other}")),
        }
    }
    if o.mode != "single" && o.mode != "bulk" {
        fail("--mode must be single or bulk");
    }
    o
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn emit(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

async fn storage(o: &Opts) -> Result<RedisStorage<Job>, Error> {
    let conn = apalis_redis::connect(format!("redis://127.0.0.1:{}/", o.port)).await?;
    // apalis-redis 1.0 pushes every task into its scheduled set (run_at = now), which wakes no
    // idle worker: an idle worker polls again only at its next heartbeat (30 s by default), so
    // the heartbeat is what sets its pickup latency. 10 ms keeps an idle worker close to a
    // blocking wait at about 100 cheap calls a second. Registration times are kept in whole
    // seconds, so the orphan window (interval x missed heartbeats) stays at 10 s.
    let config = Config::default()
        .queue(&o.queue)
        .batch_size(o.concurrency)
        .heartbeat_interval(Duration::from_millis(10))
        .missed_heartbeats(1000);
    Ok(RedisStorage::new(conn).with_config(config))
}

async fn no_op(
    _job: Job,
    result: Data<Arc<serde_json::Value>>,
) -> Result<serde_json::Value, BoxDynError> {
    Ok(serde_json::Value::clone(&result))
}

async fn run_worker(o: Opts) -> Result<(), Error> {
    let backend = storage(&o).await?;
    let worker = WorkerBuilder::new(format!("bench-{}", std::process::id()))
        .backend(backend)
        .concurrency(o.concurrency)
        .data(Arc::new(env_json("PEER_JOB_RESULT")))
        .build(no_op);
    println!("ready");
    worker.run().await?;
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run_producer(o: Opts, args: Vec<String>) -> Result<(), Error> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("worker")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut worker_out = std::io::BufReader::new(child.stdout.take().ok_or("no worker stdout")?);
    let mut line = String::new();
    worker_out.read_line(&mut line)?;
    if line.trim() != "ready" {
        fail(format!("worker said {line:?} instead of ready"));
    }
    let store = storage(&o).await?;
    let done_set = store.get_config().done_jobs_set();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", o.port))?;
    let mut poll = client.get_multiplexed_async_connection().await?;
    emit(serde_json::json!({
        "event": "ready",
        "apalis": "1.0",
        "workerPid": child.id(),
    }));
    let mut stdin = std::io::stdin().lock();
    let mut go = String::new();
    stdin.read_line(&mut go)?;
    if go.trim() != "go" {
        fail(format!("expected \"go\", got {go:?}"));
    }

    let data = match env_json("PEER_JOB_DATA") {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let jobs = o.jobs;
    let started = now_ms();
    let deadline = Instant::now() + Duration::from_millis(o.timeout_ms);
    // Completion: the first poll that finds every job in the done set.
    let watcher = tokio::spawn(async move {
        loop {
            let n: usize = redis::cmd("SCARD")
                .arg(&done_set)
                .query_async(&mut poll)
                .await
                .unwrap_or(0);
            if n >= jobs {
                return Ok(now_ms());
            }
            if Instant::now() > deadline {
                return Err(n);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut latencies_us: Vec<u64> = Vec::with_capacity(jobs);
    if o.mode == "single" {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..o.producers {
            let mut store = store.clone();
            let next = next.clone();
            let data = data.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs {
                        break;
                    }
                    let t = Instant::now();
                    let job = Job {
                        i,
                        data: data.clone(),
                    };
                    store.push(job).await.map_err(|e| e.to_string())?;
                    lat.push(t.elapsed().as_micros() as u64);
                }
                Ok::<_, String>(lat)
            }));
        }
        for task in tasks {
            latencies_us.extend(task.await?.map_err(|e| format!("push: {e}"))?);
        }
    } else {
        let mut store = store.clone();
        let mut i = 0;
        while i < jobs {
            let n = o.bulk.min(jobs - i);
            let batch = (i..i + n)
                .map(|i| Job {
                    i,
                    data: data.clone(),
                })
                .collect();
            let t = Instant::now();
            store
                .push_bulk(batch)
                .await
                .map_err(|e| format!("push_bulk: {e}"))?;
            latencies_us.push(t.elapsed().as_micros() as u64);
            i += n;
        }
    }
    let added = now_ms();
    let last = match watcher.await? {
        Ok(at) => at,
        Err(n) => fail(format!(
            "only {n} of {jobs} jobs done within {} ms",
            o.timeout_ms
        )),
    };
    latencies_us.sort_unstable();
    emit(serde_json::json!({
        "event": "result",
        "mode": o.mode,
        "jobs": jobs,
        "completed": jobs,
        "failed": 0,
        "startedAt": started,
        "addedAt": added,
        "lastCompletedAt": last,
        "callP50Us": percentile(&latencies_us, 0.5),
        "callP99Us": percentile(&latencies_us, 0.99),
        "callMaxUs": percentile(&latencies_us, 1.0),
        "calls": latencies_us.len(),
    }));
    let mut close = String::new();
    let _ = stdin.read_line(&mut close);
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = parse(&args);
    let result = if opts.worker {
        run_worker(opts).await
    } else {
        run_producer(opts, args).await
    };
    if let Err(e) = result {
        fail(e);
    }
}
