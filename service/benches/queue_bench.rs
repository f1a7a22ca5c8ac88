//! Side-by-side queue benchmark (issues 11, 23; targets of 23): BullMQ, apalis and this service
//! on one `redis-server`, in the same run, with `redis-benchmark` LPUSH as the ceiling and client commands per job from
//! `INFO commandstats` deltas. Run it with `service/benches/run-queue-bench.sh` (installs the npm
//! peers, builds the release binary, then runs this); knobs are environment variables:
//! `JOBS` (10000), `ROUNDS` (3), `CONNECTIONS` (50: HTTP connections and BullMQ producers),
//! `CONCURRENCY` (50: worker concurrency on both sides), `BULK` (50: jobs per `addBulk`),
//! `BENCH_TIMEOUT_SECONDS` (300 per measured run), `FLASHCARD_SERVICE_BIN` (the binary under
//! test; the script passes a copy of `cargo build --release`), `BENCH_PEERS_DIR` (where npm
//! installed `bullmq` and `ioredis`; without it the BullMQ rows say why they are missing), `NODE`,
//! `APALIS_PEER_BIN` (the apalis peer, `benches/peers/apalis`, built by the script; without it
//! the apalis rows are missing), `QUEUE_BENCH_VERBOSE=1` (print every command count of each measured part).
//!
//! Each round, on one redis-server (loopback, no persistence, `FLUSHALL` before every part):
//! 1. `redis-benchmark -t lpush -n 100000 -c 50` at `-P 1` and `-P 16`.
//! 2. BullMQ (`benches/peers/bullmq.mjs`): N no-op jobs, worker at `CONCURRENCY` in a separate
//!    process; once with one awaited `add` per job from `CONNECTIONS` concurrent producers, once
//!    with `addBulk` of `BULK` jobs per call. End to end: first add to the last `completed` event.
//!    apalis 1.0 + apalis-redis (`benches/peers/apalis`), the same two ways (`push`, `push_bulk`),
//!    worker fetching up to `CONCURRENCY` jobs per poll; end: the first 2 ms poll of its done set
//!    that holds every job (apalis keeps no completion time).
//! 3. Ours, black-box: separate `api` and `worker` processes (local provider, prices 0, rate
//!    limit off, `RUST_LOG=warn`), fresh pipeline; the worker really generates each job's one
//!    card (the offline generator, about 40 µs of CPU on this two-sentence text), so its jobs are
//!    not no-ops like BullMQ's; N POSTs over `CONNECTIONS` keep-alive
//!    connections from this process (a minimal HTTP/1.1 client, so the load tool costs little CPU
//!    and every request's latency is timed from its write to the end of its response). End to
//!    end: first POST to the last completion recorded in the store (the highest score of the
//!    pipeline's `completed` ZSET, written by the finish script from Redis's clock).
//! 4. Ours, POST path only: the api alone (no worker), then `standalone` (memory store) with its
//!    worker parked on one job (simulated provider latency of an hour), N POSTs each.
//!
//! Commands per job: the `INFO commandstats` delta over the measured part, less the commands this
//! process sent itself (completion polls, the final read). Script calls (`EVAL*`, `FCALL*`),
//! blocking waits (`BLPOP`, `BZPOPMIN`, ...), `EXEC` and connection commands (`PING`, `CLIENT`,
//! `SCRIPT`, ...) are client commands, each one round trip unless pipelined. `XREAD` is the api's
//! event feed (one per api process, for SSE fan-out) and is shown apart. Every other command ran
//! inside a script or was queued inside `MULTI` (neither side sends plain commands on its job
//! path); those are shown as "inside scripts". Background work (store watch once a second per
//! process, worker heartbeats every 5 s, maintenance every 15 s) is included; the idle rate of
//! client commands is measured first, so the table can say how much of the figure it can be.
//! (Checked with `MONITOR`: BullMQ's clients send only `EVALSHA`, `BZPOPMIN` and start-up
//! commands; ours only `EVALSHA`, `BLPOP`, `XREAD` and the heartbeat's `MULTI`.) "script µs in
//! redis" is the `usec` of the script calls: redis-server's time inside scripts per job.
//!
//! CPU per job: user + system time of each process (`/proc/<pid>/stat`; redis-server's from
//! `INFO cpu`) over the measured part, divided by the jobs; bytes to / from redis-server from
//! `INFO stats` (`total_net_input_bytes` / `total_net_output_bytes`). On a shared machine CPU per
//! job is steadier than throughput, which follows how much CPU the other tenants leave.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use flashcard_core::keyspace::{Keyspace, PipelineId};
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, Command};

const SCRIPT_COMMANDS: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];
const BLOCKING_COMMANDS: &[&str] = &[
    "blpop",
    "brpop",
    "brpoplpush",
    "blmove",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    "xreadgroup",
    "wait",
];
/// Commands (or command families, `name|sub`) that only a client sends.
const CONNECTION_COMMANDS: &[&str] = &[
    "ping", "hello", "select", "auth", "echo", "quit", "reset", "readonly", "client", "script",
    "config", "command", "cluster", "info", "memory", "object",
];
/// The job every side runs: this body is POSTed to ours and is the data of every peer's job.
fn job_body() -> Value {
    serde_json::json!({
        "content": JOB_CONTENT,
        "subject": "biology",
        "topic": "cells",
        "userId": "bench",
        "cardCount": 1,
    })
}

/// What our worker stores as the result of that job (the offline generator's card, usage,
/// model); the peers' no-op processors return this same JSON, so every queue stores and moves
/// the same bytes per job and only ours computes them.
async fn job_result() -> Result<String> {
    use flashcard_core::job::{JobRequest, JobResult};
    use flashcard_provider::Provider as _;
    use flashcard_provider::local::LocalProvider;
    let provider = LocalProvider::new();
    let request = JobRequest {
        content: JOB_CONTENT.into(),
        subject: "biology".into(),
        topic: "cells".into(),
        user_id: "bench".into(),
        card_count: 1,
    };
    let generation = provider
        .generate(&request)
        .await
        .map_err(|e| anyhow!("the offline generator failed on the bench's job: {e}"))?;
    let result = JobResult {
        token_usage: generation.usage.total(),
        usage: generation.usage,
        flashcards: generation.flashcards,
        provider: provider.name().to_owned(),
        model: provider.model().to_owned(),
        cost_micros: 0,
    };
    Ok(serde_json::to_string(&result)?)
}

const JOB_CONTENT: &str = "Mitochondria are organelles that produce most of the ATP of a cell. \
Ribosomes are molecular machines that build proteins from amino acids.";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// What the run is told by its environment.
struct Knobs {
    jobs: usize,
    rounds: usize,
    connections: usize,
    concurrency: usize,
    bulk: usize,
    timeout: Duration,
    service_bin: PathBuf,
    peers_dir: PathBuf,
    node: String,
    bullmq_script: PathBuf,
    /// The apalis peer (`benches/peers/apalis`, built by run-queue-bench.sh).
    apalis_bin: PathBuf,
    work_dir: PathBuf,
}

impl Knobs {
    fn from_env() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let knobs = Self {
            jobs: env_or("JOBS", 10_000),
            rounds: env_or("ROUNDS", 3),
            connections: env_or("CONNECTIONS", 50),
            concurrency: env_or("CONCURRENCY", 50),
            bulk: env_or("BULK", 50),
            timeout: Duration::from_secs(env_or("BENCH_TIMEOUT_SECONDS", 300)),
            service_bin: std::env::var_os("FLASHCARD_SERVICE_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flashcard-service"))),
            peers_dir: std::env::var_os("BENCH_PEERS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/bench-peers")),
            node: std::env::var("NODE").unwrap_or_else(|_| "node".into()),
            bullmq_script: Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/bullmq.mjs"),
            apalis_bin: std::env::var_os("APALIS_PEER_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    root.join("target/bench-peers/apalis-target/release/apalis-bench-peer")
                }),
            work_dir: std::env::temp_dir().join(format!("fc-queue-bench-{}", std::process::id())),
        };
        if knobs.jobs == 0 || knobs.rounds == 0 || knobs.connections == 0 {
            bail!("JOBS, ROUNDS and CONNECTIONS must be at least 1");
        }
        if !knobs.service_bin.is_file() {
            bail!(
                "service binary {} not found (set FLASHCARD_SERVICE_BIN, or run service/benches/run-queue-bench.sh)",
                knobs.service_bin.display()
            );
        }
        Ok(knobs)
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    lines[start..].join("\n")
}

/// A child process: killed when dropped (also when the run is interrupted or fails).
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create log {}", log.display()))?;
        command.stderr(Stdio::from(file)).kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            )),
            _ => None,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!("queue-bench: {} ignored SIGTERM; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redis: the server, and this process's own connection for snapshots and completion polls.

struct RedisServer {
    proc: Proc,
    port: u16,
}

impl RedisServer {
    async fn start(work_dir: &Path) -> Result<Self> {
        let mut last_error = anyhow!("redis-server did not start");
        for _ in 0..3 {
            let port = free_port()?;
            let dir = work_dir.join(format!("redis-{port}"));
            std::fs::create_dir_all(&dir)?;
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--maxmemory-policy", "noeviction", "--dir"])
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            let mut proc = Proc::spawn("redis-server", command, work_dir.join("redis.log"))
                .context("redis-server is needed (apt-get install redis-server)")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(why) = proc.exited() {
                    last_error = anyhow!(why);
                    break;
                }
                if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                {
                    return Ok(Self { proc, port });
                }
                if Instant::now() > deadline {
                    last_error = anyhow!("redis-server on port {port} not ready within 10 s");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Err(last_error)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// Commands counted by `INFO commandstats`, by name (`name` or `name|subcommand`), and the µs
/// redis-server spent in script calls (everything a script does, its commands included).
#[derive(Debug, Clone, Default)]
struct Commands(BTreeMap<String, u64>, u64);

impl Commands {
    fn parse(info: &str) -> Self {
        let mut map = BTreeMap::new();
        let mut script_usec = 0;
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if SCRIPT_COMMANDS.contains(&name) {
                script_usec += fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("usec="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            map.insert(name.to_owned(), calls);
        }
        Self(map, script_usec)
    }

    fn minus(&self, before: &Commands, own: &BTreeMap<&'static str, u64>) -> Self {
        let mut map = BTreeMap::new();
        for (name, calls) in &self.0 {
            let base = before.0.get(name).copied().unwrap_or(0);
            let mine = own.get(name.as_str()).copied().unwrap_or(0);
            let n = calls.saturating_sub(base).saturating_sub(mine);
            if n > 0 && name != "info" {
                map.insert(name.clone(), n);
            }
        }
        Self(map, self.1.saturating_sub(before.1))
    }

    fn family(name: &str) -> &str {
        name.split('|').next().unwrap_or(name)
    }

    fn sum(&self, pick: impl Fn(&str) -> bool) -> u64 {
        self.0
            .iter()
            .filter(|(name, _)| pick(name))
            .map(|(_, n)| *n)
            .sum()
    }

    fn scripts(&self) -> u64 {
        self.sum(|n| SCRIPT_COMMANDS.contains(&n))
    }
    fn blocking(&self) -> u64 {
        self.sum(|n| BLOCKING_COMMANDS.contains(&n))
    }
    fn feed(&self) -> u64 {
        self.sum(|n| n == "xread")
    }
    fn exec(&self) -> u64 {
        self.sum(|n| n == "exec")
    }
    fn connection(&self) -> u64 {
        self.sum(|n| CONNECTION_COMMANDS.contains(&Self::family(n)))
    }
    /// Client commands, each a round trip unless pipelined; the feed's XREAD excluded.
    fn client(&self) -> u64 {
        self.scripts() + self.blocking() + self.exec() + self.connection()
    }
    fn inside(&self) -> u64 {
        self.sum(|n| {
            !(SCRIPT_COMMANDS.contains(&n)
                || BLOCKING_COMMANDS.contains(&n)
                || CONNECTION_COMMANDS.contains(&Self::family(n))
                || n == "xread"
                || n == "exec"
                || n == "multi")
        })
    }
    fn top(&self, n: usize) -> String {
        let mut all: Vec<(&String, &u64)> = self.0.iter().collect();
        all.sort_by(|a, b| b.1.cmp(a.1));
        all.iter()
            .take(n)
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// With `QUEUE_BENCH_VERBOSE=1`, prints every command count of a measured part.
fn dump(label: &str, commands: &Commands) {
    if env_or("QUEUE_BENCH_VERBOSE", 0) == 1 {
        eprintln!("queue-bench: {label}: {:?}", commands.0);
    }
}

/// With `QUEUE_BENCH_VERBOSE=1`, prints the POST rate in each tenth of a load.
fn drift(label: &str, load: &Load) {
    if env_or("QUEUE_BENCH_VERBOSE", 0) == 1 {
        let tenth = load.elapsed.as_secs_f64() / 10.0;
        let rates: Vec<String> = load
            .tenths
            .iter()
            .map(|n| format!("{:.0}", f64::from(*n) / tenth.max(1e-9)))
            .collect();
        eprintln!(
            "queue-bench: {label}: POST/s per tenth of the run: {}",
            rates.join(" ")
        );
    }
}

/// This process's connection to the benchmark's Redis; counts what it sends inside a window.
struct Probe {
    conn: MultiplexedConnection,
    own: BTreeMap<&'static str, u64>,
}

struct Window {
    before: Commands,
    redis_cpu: f64,
    net: (u64, u64),
    started: Instant,
}

/// What a window saw.
struct Measured {
    commands: Commands,
    seconds: f64,
    /// CPU seconds redis-server used (`INFO cpu`).
    redis_cpu: f64,
    /// Bytes redis-server read from and wrote to its clients (`INFO stats`).
    net_in: u64,
    net_out: u64,
}

/// `total_net_input_bytes` and `total_net_output_bytes` of an `INFO` reply.
fn redis_net(info: &str) -> (u64, u64) {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("total_net_input_bytes:"),
        field("total_net_output_bytes:"),
    )
}

/// `used_cpu_user + used_cpu_sys` of an `INFO` reply.
fn redis_cpu(info: &str) -> f64 {
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_user:")
                .or_else(|| l.strip_prefix("used_cpu_sys:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses: state is the
    // first, utime the 12th and stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time of some processes over a measured part.
struct CpuSampler {
    start: Vec<(&'static str, u32, f64)>,
}

impl CpuSampler {
    fn start(pids: &[(&'static str, Option<u32>)]) -> Self {
        Self {
            start: pids
                .iter()
                .filter_map(|(name, pid)| {
                    let pid = (*pid)?;
                    Some((*name, pid, process_cpu(pid)?))
                })
                .collect(),
        }
    }

    /// CPU seconds of `name` since the start (NaN if it was not sampled).
    fn used(&self, name: &str) -> f64 {
        self.start
            .iter()
            .find(|(n, _, _)| *n == name)
            .and_then(|(_, pid, before)| Some(process_cpu(*pid)? - before))
            .unwrap_or(f64::NAN)
    }
}

/// CPU seconds per part of a measured run.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    redis: f64,
    /// The api, or BullMQ's producer process.
    submit: f64,
    worker: f64,
    /// This process (the HTTP load client); BullMQ's producer is its own client.
    client: f64,
    /// Bytes clients sent to redis-server and received from it (NaN without Redis).
    net_in: f64,
    net_out: f64,
}

impl Cpu {
    fn of(sampler: &CpuSampler, measured: Option<&Measured>) -> Self {
        Self {
            redis: measured.map(|m| m.redis_cpu).unwrap_or(f64::NAN),
            submit: sampler.used("submit"),
            worker: sampler.used("worker"),
            client: sampler.used("client"),
            net_in: measured.map(|m| m.net_in as f64).unwrap_or(f64::NAN),
            net_out: measured.map(|m| m.net_out as f64).unwrap_or(f64::NAN),
        }
    }
}

impl Probe {
    async fn connect(url: &str) -> Result<Self> {
        // FLUSHALL SYNC of a few hundred thousand keys on a busy machine takes longer than
        // redis-rs's default response timeout.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(120)))
            .set_connection_timeout(Some(Duration::from_secs(10)));
        let conn = redis::Client::open(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("cannot connect to the benchmark's redis-server")?;
        Ok(Self {
            conn,
            own: BTreeMap::new(),
        })
    }

    /// Command counts, CPU seconds and network bytes of redis-server, in one `INFO`.
    async fn commandstats(&mut self) -> Result<(Commands, f64, (u64, u64))> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("cpu")
            .arg("stats")
            .query_async(&mut self.conn)
            .await?;
        Ok((Commands::parse(&info), redis_cpu(&info), redis_net(&info)))
    }

    async fn begin(&mut self) -> Result<Window> {
        let (before, redis_cpu, net) = self.commandstats().await?;
        self.own.clear();
        Ok(Window {
            before,
            redis_cpu,
            net,
            started: Instant::now(),
        })
    }

    /// Commands since `begin` (less this process's own), the seconds between, redis-server CPU.
    async fn end(&mut self, window: Window) -> Result<Measured> {
        let seconds = window.started.elapsed().as_secs_f64();
        let (after, redis_cpu, net) = self.commandstats().await?;
        Ok(Measured {
            commands: after.minus(&window.before, &self.own),
            seconds,
            redis_cpu: redis_cpu - window.redis_cpu,
            net_in: net.0.saturating_sub(window.net.0),
            net_out: net.1.saturating_sub(window.net.1),
        })
    }

    async fn flushall(&mut self) -> Result<()> {
        let _: () = redis::cmd("FLUSHALL")
            .arg("SYNC")
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn server_version(&mut self) -> Result<String> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn)
            .await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned())
    }

    async fn zcard(&mut self, key: &str) -> Result<u64> {
        *self.own.entry("zcard").or_default() += 1;
        Ok(redis::cmd("ZCARD")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    /// Completed and failed counts in one round trip.
    async fn finished(&mut self, keys: &Keyspace) -> Result<(u64, u64)> {
        *self.own.entry("zcard").or_default() += 2;
        Ok(redis::pipe()
            .cmd("ZCARD")
            .arg(keys.completed())
            .cmd("ZCARD")
            .arg(keys.failed())
            .query_async(&mut self.conn)
            .await?)
    }

    /// The highest score of a ZSET (ms since the epoch for `completed`).
    async fn last_score(&mut self, key: &str) -> Result<Option<f64>> {
        *self.own.entry("zrange").or_default() += 1;
        let last: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(-1)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn)
            .await?;
        Ok(last.first().map(|(_, score)| *score))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: a minimal keep-alive HTTP/1.1 client (requests are written whole, responses must carry
// Content-Length, which axum's JSON answers do).

struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl HttpConn {
    async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its whole response; returns the status and the body.
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).context("response head")?;
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .ok_or_else(|| anyhow!("response without Content-Length: {head:?}"))?;
                let total = end + 4 + length;
                while self.buf.len() < total {
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        bail!("connection closed mid-response");
                    }
                }
                let body = self.buf[end + 4..total].to_vec();
                return Ok((status, body));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed before the response");
            }
        }
    }
}

async fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut conn = HttpConn::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    Ok(conn.exchange(request.as_bytes()).await?.0)
}

/// The POST load of one run.
struct Load {
    /// Wall clock (ms since the epoch) just before the first request was written.
    started_wall_ms: f64,
    /// First write to the last response.
    elapsed: Duration,
    /// Per-request latency in µs, sorted.
    latencies_us: Vec<u32>,
    /// Answers per tenth of the run (to see whether throughput drifts as the run goes on).
    tenths: [u32; 10],
}

impl Load {
    fn per_second(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        let v = &self.latencies_us;
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        f64::from(v[i.min(v.len() - 1)]) / 1000.0
    }
}

/// `jobs` POSTs of the job endpoint over `connections` connections opened beforehand; every
/// answer must be 202.
async fn post_load(
    addr: SocketAddr,
    jobs: usize,
    connections: usize,
    timeout: Duration,
) -> Result<Load> {
    let body = job_body().to_string();
    let request = Arc::new(
        format!(
            "POST /api/ai/generate-flashcards HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections.min(jobs) {
        conns.push(
            HttpConn::connect(addr)
                .await
                .context("connecting to the api")?,
        );
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started_wall_ms = wall_ms();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns.len());
    for mut conn in conns {
        let next = next.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(jobs / connections + 1);
            let mut answered = Vec::with_capacity(jobs / connections + 1);
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                let sent = Instant::now();
                let (status, body) = conn.exchange(&request).await?;
                if status != 202 {
                    bail!("POST answered {status}: {}", String::from_utf8_lossy(&body));
                }
                let now = Instant::now();
                latencies.push((now - sent).as_micros().min(u128::from(u32::MAX)) as u32);
                answered.push(now);
            }
            Ok::<_, anyhow::Error>((latencies, answered, Instant::now()))
        }));
    }
    let mut latencies_us = Vec::with_capacity(jobs);
    let mut answered_all = Vec::with_capacity(jobs);
    let mut last = started;
    let joined = tokio::time::timeout(timeout, futures::future::join_all(tasks))
        .await
        .map_err(|_| anyhow!("the POST load did not finish within {timeout:?}"))?;
    for task in joined {
        let (latencies, answered, done) = task.context("load task panicked")??;
        latencies_us.extend(latencies);
        answered_all.extend(answered);
        last = last.max(done);
    }
    latencies_us.sort_unstable();
    let elapsed = last - started;
    let mut tenths = [0u32; 10];
    for at in answered_all {
        let f = (at - started).as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
        tenths[((f * 10.0) as usize).min(9)] += 1;
    }
    Ok(Load {
        started_wall_ms,
        elapsed,
        latencies_us,
        tenths,
    })
}

// ---------------------------------------------------------------------------------------------
// The service under test.

struct Service {
    proc: Proc,
    addr: SocketAddr,
}

impl Service {
    async fn start(knobs: &Knobs, mode: &str, args: &[String], label: &str) -> Result<Self> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut command = Command::new(&knobs.service_bin);
        command
            .arg(mode)
            .args(["--listen", &addr.to_string(), "--log-format", "text"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let log = knobs.work_dir.join(format!("{label}.log"));
        let mut proc = Proc::spawn(label, command, log)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(why) = proc.exited() {
                bail!(why);
            }
            if let Ok(200) = http_status(addr, "/readyz").await {
                return Ok(Self { proc, addr });
            }
            if Instant::now() > deadline {
                bail!("{label} not ready within 30 s; log: {}", proc.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.proc.stop(Duration::from_secs(15)).await;
    }
}

fn redis_args(knobs: &Knobs, url: &str, pipeline: &str) -> Vec<String> {
    let retention = (knobs.jobs * 2).max(10_000).to_string();
    [
        "--redis-url",
        url,
        "--pipeline",
        pipeline,
        // One client, no cap: the same work as the peers, which have no per-client cap.
        "--client-concurrency",
        "0",
        "--worker-concurrency",
        &knobs.concurrency.to_string(),
        "--provider",
        "local",
        "--price-input-per-1k",
        "0",
        "--price-output-per-1k",
        "0",
        "--rate-limit-jobs",
        "0",
        "--retention-count",
        &retention,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Measured parts.

#[derive(Debug, Clone, Copy)]
struct Ceiling {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn redis_benchmark(port: u16, pipeline: u32, timeout: Duration) -> Result<Ceiling> {
    let run = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-t",
            "lpush",
            "-n",
            "100000",
            "-c",
            "50",
            "-P",
            &pipeline.to_string(),
        ])
        .arg("--csv")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow!("redis-benchmark did not finish within {timeout:?}"))?
        .context("redis-benchmark is needed (it comes with redis-server)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|l| l.starts_with("\"LPUSH\""))
        .ok_or_else(|| anyhow!("unexpected redis-benchmark output: {text}"))?;
    let fields: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    Ok(Ceiling {
        rps: fields.first().copied().unwrap_or(f64::NAN),
        p50_ms: fields.get(3).copied().unwrap_or(f64::NAN),
        p99_ms: fields.get(5).copied().unwrap_or(f64::NAN),
    })
}

#[derive(Debug, Clone)]
struct QueueRun {
    jobs_per_s: f64,
    /// Submissions per second (adds, or POST 202s) over the submitting part.
    submit_per_s: f64,
    /// Per call (add / addBulk / POST) latency.
    p50_ms: f64,
    p99_ms: f64,
    commands: Commands,
    cpu: Cpu,
}

async fn read_event(
    peer: Peer,
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    proc: &mut Proc,
    event: &str,
    timeout: Duration,
) -> Result<Value> {
    let name = peer.name();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => bail!("{name} peer: no {event:?} within {timeout:?}"),
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "{name} peer ended before {event:?}: {}",
                    proc.exited().unwrap_or_else(|| log_tail(&proc.log))
                );
            }
        };
        if let Ok(value) = serde_json::from_str::<Value>(&line)
            && value["event"] == event
        {
            return Ok(value);
        }
    }
}

/// A queue the service is compared with. Both speak one protocol (see `peers/bullmq.mjs`):
/// a producer process that forks its worker, `ready` / `go` / `result` / `close` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// BullMQ on Node.js: single `add` / `addBulk`.
    Bullmq,
    /// apalis + apalis-redis (Rust): single `push` / `push_bulk`.
    Apalis,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Bullmq => "BullMQ",
            Peer::Apalis => "apalis",
        }
    }

    fn command(self, knobs: &Knobs) -> Command {
        match self {
            Peer::Bullmq => {
                let mut command = Command::new(&knobs.node);
                command
                    .arg(&knobs.bullmq_script)
                    .env("BENCH_PEERS_DIR", &knobs.peers_dir);
                command
            }
            Peer::Apalis => Command::new(&knobs.apalis_bin),
        }
    }

    /// What the peer's `ready` line says about its versions.
    fn version(self, ready: &Value) -> String {
        let s = |k: &str| ready[k].as_str().unwrap_or("?").to_owned();
        match self {
            Peer::Bullmq => format!(
                "BullMQ {} (ioredis {}, node {})",
                s("bullmq"),
                s("ioredis"),
                s("node")
            ),
            Peer::Apalis => format!("apalis {} (apalis-redis, redis-rs)", s("apalis")),
        }
    }

    /// Why the peer cannot run here, if it cannot.
    fn unavailable(self, knobs: &Knobs) -> Option<String> {
        match self {
            Peer::Bullmq => bullmq_available(knobs).err(),
            Peer::Apalis => (!knobs.apalis_bin.is_file()).then(|| {
                format!(
                    "not run: {} is not built (service/benches/run-queue-bench.sh builds it)",
                    knobs.apalis_bin.display()
                )
            }),
        }
    }
}

async fn peer_run(
    peer: Peer,
    knobs: &Knobs,
    server: &RedisServer,
    probe: &mut Probe,
    mode: &str,
    queue: &str,
    version: &mut Option<String>,
) -> Result<QueueRun> {
    let name = peer.name();
    let mut command = peer.command(knobs);
    command
        .env("PEER_JOB_DATA", job_body().to_string())
        .env("PEER_JOB_RESULT", job_result().await?)
        .args(["--port", &server.port.to_string(), "--queue", queue])
        .args(["--jobs", &knobs.jobs.to_string(), "--mode", mode])
        .args(["--producers", &knobs.connections.to_string()])
        .args(["--bulk", &knobs.bulk.to_string()])
        .args(["--concurrency", &knobs.concurrency.to_string()])
        .args(["--timeout-ms", &knobs.timeout.as_millis().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let label = format!("{}-{queue}", name.to_lowercase());
    let mut proc = Proc::spawn(&label, command, knobs.work_dir.join(format!("{label}.log")))?;
    let stdout = proc.child.stdout.take().context("peer stdout")?;
    let mut stdin: ChildStdin = proc.child.stdin.take().context("peer stdin")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = read_event(
        peer,
        &mut lines,
        &mut proc,
        "ready",
        Duration::from_secs(60),
    )
    .await?;
    if version.is_none() {
        *version = Some(peer.version(&ready));
    }
    let worker_pid = ready["workerPid"].as_u64().map(|p| p as u32);
    let window = probe.begin().await?;
    let sampler = CpuSampler::start(&[("submit", proc.child.id()), ("worker", worker_pid)]);
    stdin.write_all(b"go\n").await?;
    let result = read_event(peer, &mut lines, &mut proc, "result", knobs.timeout).await?;
    let measured = probe.end(window).await?;
    let cpu = Cpu::of(&sampler, Some(&measured));
    let commands = measured.commands;
    dump(&format!("{name} {mode}"), &commands);
    let _ = stdin.write_all(b"close\n").await;
    drop(stdin);
    if tokio::time::timeout(Duration::from_secs(20), proc.child.wait())
        .await
        .is_err()
    {
        eprintln!("queue-bench: the {name} peer did not exit; killing it");
        let _ = proc.child.kill().await;
    }
    let num = |k: &str| result[k].as_f64().unwrap_or(f64::NAN);
    let failed = num("failed");
    if failed > 0.0 {
        bail!("{name}: {failed} jobs failed");
    }
    let started = num("startedAt");
    Ok(QueueRun {
        jobs_per_s: knobs.jobs as f64 / ((num("lastCompletedAt") - started) / 1000.0).max(1e-6),
        submit_per_s: knobs.jobs as f64 / ((num("addedAt") - started) / 1000.0).max(1e-6),
        p50_ms: num("callP50Us") / 1000.0,
        p99_ms: num("callP99Us") / 1000.0,
        commands,
        cpu,
    })
}

struct OursRun {
    e2e: QueueRun,
    /// Client commands per second with api and worker up and no jobs.
    idle_client_per_s: f64,
    seconds: f64,
}

async fn ours_e2e(
    knobs: &Knobs,
    server: &RedisServer,
    probe: &mut Probe,
    round: usize,
) -> Result<OursRun> {
    let pipeline = format!("bench-e2e-{round}");
    let keys = Keyspace::new(&PipelineId::new(None, &pipeline)?);
    let args = redis_args(knobs, &server.url(), &pipeline);
    let worker = Service::start(knobs, "worker", &args, &format!("worker-{round}")).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe.zcard(&keys.workers()).await? == 0 {
        if Instant::now() > deadline {
            bail!("the worker wrote no heartbeat within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let api = Service::start(knobs, "api", &args, &format!("api-{round}")).await?;

    let idle = probe.begin().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = probe.end(idle).await?;
    let idle_client_per_s = idle.commands.client() as f64 / idle.seconds;

    let window = probe.begin().await?;
    let sampler = CpuSampler::start(&[
        ("submit", api.proc.child.id()),
        ("worker", worker.proc.child.id()),
        ("client", Some(std::process::id())),
    ]);
    let load = post_load(api.addr, knobs.jobs, knobs.connections, knobs.timeout).await?;
    let deadline = Instant::now() + knobs.timeout;
    loop {
        let (completed, failed) = probe.finished(&keys).await?;
        if failed > 0 {
            bail!(
                "{failed} of our jobs failed (see {})",
                knobs.work_dir.display()
            );
        }
        if completed >= knobs.jobs as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {completed} of {} jobs completed within {:?}",
                knobs.jobs,
                knobs.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = probe
        .last_score(&keys.completed())
        .await?
        .ok_or_else(|| anyhow!("no completed job recorded"))?;
    let measured = probe.end(window).await?;
    let cpu = Cpu::of(&sampler, Some(&measured));
    let (commands, seconds) = (measured.commands, measured.seconds);
    dump("ours, end to end", &commands);
    drift("ours, end to end", &load);
    dump("ours, idle api + worker", &idle.commands);
    api.stop().await;
    worker.stop().await;
    let elapsed_s = ((last - load.started_wall_ms) / 1000.0).max(1e-6);
    Ok(OursRun {
        e2e: QueueRun {
            jobs_per_s: knobs.jobs as f64 / elapsed_s,
            submit_per_s: load.per_second(knobs.jobs),
            p50_ms: load.percentile_ms(0.5),
            p99_ms: load.percentile_ms(0.99),
            commands,
            cpu,
        },
        idle_client_per_s,
        seconds,
    })
}

struct PostRun {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    commands: Option<Commands>,
    cpu: Cpu,
}

impl PostRun {
    fn of(load: &Load, jobs: usize, commands: Option<Commands>, cpu: Cpu) -> Self {
        Self {
            rps: load.per_second(jobs),
            p50_ms: load.percentile_ms(0.5),
            p99_ms: load.percentile_ms(0.99),
            max_ms: load.percentile_ms(1.0),
            commands,
            cpu,
        }
    }
}

async fn ours_post_only(
    knobs: &Knobs,
    server: &RedisServer,
    probe: &mut Probe,
    round: usize,
) -> Result<PostRun> {
    let pipeline = format!("bench-post-{round}");
    let args = redis_args(knobs, &server.url(), &pipeline);
    let api = Service::start(knobs, "api", &args, &format!("api-post-{round}")).await?;
    let window = probe.begin().await?;
    let sampler = CpuSampler::start(&[
        ("submit", api.proc.child.id()),
        ("client", Some(std::process::id())),
    ]);
    let load = post_load(api.addr, knobs.jobs, knobs.connections, knobs.timeout).await?;
    let measured = probe.end(window).await?;
    let cpu = Cpu::of(&sampler, Some(&measured));
    dump("ours, api alone", &measured.commands);
    drift("ours, api alone", &load);
    api.stop().await;
    Ok(PostRun::of(&load, knobs.jobs, Some(measured.commands), cpu))
}

async fn standalone_post_only(knobs: &Knobs, round: usize) -> Result<PostRun> {
    // The in-process worker takes one job and waits an hour on it, so only the POST path runs.
    let args: Vec<String> = [
        "--rate-limit-jobs",
        "0",
        "--worker-concurrency",
        "1",
        "--simulated-latency-ms",
        "3600000",
        "--shutdown-grace-seconds",
        "0",
        "--price-input-per-1k",
        "0",
        "--price-output-per-1k",
        "0",
        "--retention-count",
        &(knobs.jobs * 2).max(10_000).to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let service =
        Service::start(knobs, "standalone", &args, &format!("standalone-{round}")).await?;
    let sampler = CpuSampler::start(&[
        ("submit", service.proc.child.id()),
        ("client", Some(std::process::id())),
    ]);
    let load = post_load(service.addr, knobs.jobs, knobs.connections, knobs.timeout).await?;
    drift("standalone", &load);
    let cpu = Cpu::of(&sampler, None);
    service.stop().await;
    Ok(PostRun::of(&load, knobs.jobs, None, cpu))
}

// ---------------------------------------------------------------------------------------------
// Report.

#[derive(Default)]
struct Rounds {
    lpush_p1: Vec<Ceiling>,
    lpush_p16: Vec<Ceiling>,
    bull_single: Vec<QueueRun>,
    bull_bulk: Vec<QueueRun>,
    apalis_single: Vec<QueueRun>,
    apalis_bulk: Vec<QueueRun>,
    ours: Vec<OursRun>,
    post: Vec<PostRun>,
    standalone: Vec<PostRun>,
}

fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some((v[0], median, v[v.len() - 1]))
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn row(out: &mut String, label: &str, values: &[f64], note: &str) {
    match spread(values) {
        Some((min, median, max)) => {
            let _ = writeln!(
                out,
                "  {label:<50} {:>9} {:>9} {:>9}  {note}",
                fmt_num(min),
                fmt_num(median),
                fmt_num(max)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  {label:<50} {:>9} {:>9} {:>9}  {note}",
                "-", "-", "-"
            );
        }
    }
}

/// Per-job command figures of several runs: (client, script calls, blocking, exec, connection,
/// inside scripts, feed), each the median over the runs.
fn command_row(out: &mut String, label: &str, runs: &[(&Commands, usize)]) {
    if runs.is_empty() {
        let _ = writeln!(out, "  {label:<38} not run");
        return;
    }
    let per = |f: &dyn Fn(&Commands) -> u64| -> String {
        let values: Vec<f64> = runs.iter().map(|(c, n)| f(c) as f64 / *n as f64).collect();
        spread(&values)
            .map(|s| fmt_num(s.1))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        out,
        "  {label:<38} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>7} {:>8}",
        per(&|c| c.client()),
        per(&|c| c.scripts()),
        per(&|c| c.blocking()),
        per(&|c| c.exec()),
        per(&|c| c.connection()),
        per(&|c| c.inside()),
        per(&|c| c.feed()),
        per(&|c| c.1),
    );
}

fn ratio_row(out: &mut String, label: &str, values: &[f64], target: &str, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    };
    match spread(values) {
        Some((min, median, max)) => {
            let _ = writeln!(
                out,
                "  {label:<46} {:>7} ({} - {})  target {target:<9} {verdict}",
                fmt_num(median),
                fmt_num(min),
                fmt_num(max)
            );
        }
        None => {
            let _ = writeln!(out, "  {label:<46} {:>7}  target {target:<9} n/a", "-");
        }
    }
}

fn as_refs(v: &[(Commands, usize)]) -> Vec<(&Commands, usize)> {
    v.iter().map(|(c, n)| (c, *n)).collect()
}

fn paired(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

fn median(values: &[f64]) -> Option<f64> {
    spread(values).map(|s| s.1)
}

fn report(
    knobs: &Knobs,
    rounds: &Rounds,
    header: &str,
    bullmq_note: &str,
    apalis_note: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<50} {:>9} {:>9} {:>9}",
        "end to end (first submit -> last completion), jobs/s", "min", "median", "max"
    );
    let jobs_s = |runs: &[QueueRun]| runs.iter().map(|r| r.jobs_per_s).collect::<Vec<_>>();
    let bull_single = jobs_s(&rounds.bull_single);
    let bull_bulk = jobs_s(&rounds.bull_bulk);
    let apalis_single = jobs_s(&rounds.apalis_single);
    let apalis_bulk = jobs_s(&rounds.apalis_bulk);
    let ours_e2e: Vec<f64> = rounds.ours.iter().map(|r| r.e2e.jobs_per_s).collect();
    let missing = bullmq_note;
    row(
        &mut out,
        &format!(
            "BullMQ, awaited add per job ({} producers)",
            knobs.connections
        ),
        &bull_single,
        missing,
    );
    row(
        &mut out,
        &format!("BullMQ, addBulk of {}", knobs.bulk),
        &bull_bulk,
        missing,
    );
    row(
        &mut out,
        &format!(
            "apalis, awaited push per job ({} producers)",
            knobs.connections
        ),
        &apalis_single,
        apalis_note,
    );
    row(
        &mut out,
        &format!("apalis, push_bulk of {}", knobs.bulk),
        &apalis_bulk,
        apalis_note,
    );
    row(
        &mut out,
        &format!(
            "ours, api + worker, POST over HTTP ({} conns)",
            knobs.connections
        ),
        &ours_e2e,
        "",
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<50} {:>9} {:>9} {:>9}  p50 / p99 ms (medians)",
        "submit path, req/s", "min", "median", "max"
    );
    let ceiling_row = |out: &mut String, label: &str, runs: &[Ceiling]| {
        let rps: Vec<f64> = runs.iter().map(|c| c.rps).collect();
        let p50 = median(&runs.iter().map(|c| c.p50_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let p99 = median(&runs.iter().map(|c| c.p99_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        row(
            out,
            label,
            &rps,
            &format!("{} / {}", fmt_num(p50), fmt_num(p99)),
        );
    };
    ceiling_row(
        &mut out,
        "redis-benchmark LPUSH -c 50 -P 1",
        &rounds.lpush_p1,
    );
    ceiling_row(
        &mut out,
        "redis-benchmark LPUSH -c 50 -P 16",
        &rounds.lpush_p16,
    );
    let post_row = |out: &mut String, label: &str, runs: &[PostRun]| {
        let rps: Vec<f64> = runs.iter().map(|c| c.rps).collect();
        let p50 = median(&runs.iter().map(|c| c.p50_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let p99 = median(&runs.iter().map(|c| c.p99_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let max = median(&runs.iter().map(|c| c.max_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        row(
            out,
            label,
            &rps,
            &format!("{} / {} (max {})", fmt_num(p50), fmt_num(p99), fmt_num(max)),
        );
    };
    post_row(&mut out, "ours, POST 202, api alone (Redis)", &rounds.post);
    post_row(
        &mut out,
        "ours, POST 202, standalone (memory store)",
        &rounds.standalone,
    );
    let run_row = |out: &mut String, label: &str, runs: &[QueueRun], note: &str| {
        let rps: Vec<f64> = runs.iter().map(|c| c.submit_per_s).collect();
        let p50 = median(&runs.iter().map(|c| c.p50_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let p99 = median(&runs.iter().map(|c| c.p99_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        row(
            out,
            label,
            &rps,
            &format!("{} / {}{note}", fmt_num(p50), fmt_num(p99)),
        );
    };
    let ours_runs: Vec<QueueRun> = rounds.ours.iter().map(|r| r.e2e.clone()).collect();
    run_row(
        &mut out,
        "ours, POST 202 during the end-to-end run",
        &ours_runs,
        "",
    );
    run_row(
        &mut out,
        "BullMQ add during its end-to-end run",
        &rounds.bull_single,
        "",
    );
    run_row(
        &mut out,
        "BullMQ addBulk during its end-to-end run (jobs/s)",
        &rounds.bull_bulk,
        " per call",
    );
    run_row(
        &mut out,
        "apalis push during its end-to-end run",
        &rounds.apalis_single,
        "",
    );
    run_row(
        &mut out,
        "apalis push_bulk during its end-to-end run (jobs/s)",
        &rounds.apalis_bulk,
        " per call",
    );

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  commands per job (INFO commandstats, median)  client scripts blocking  EXEC  conn.  inside    feed  script µs"
    );
    let _ = writeln!(
        out,
        "  {:<38} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>7} {:>8}",
        "", "total", "calls", "waits", "", "", "scripts", "XREAD", "in redis"
    );
    let cmds = |runs: &[QueueRun]| -> Vec<(Commands, usize)> {
        runs.iter()
            .map(|r| (r.commands.clone(), knobs.jobs))
            .collect()
    };
    let bs = cmds(&rounds.bull_single);
    let bb = cmds(&rounds.bull_bulk);
    let a_s = cmds(&rounds.apalis_single);
    let a_b = cmds(&rounds.apalis_bulk);
    let oe = cmds(&ours_runs);
    let op: Vec<(Commands, usize)> = rounds
        .post
        .iter()
        .filter_map(|r| r.commands.clone().map(|c| (c, knobs.jobs)))
        .collect();
    command_row(&mut out, "BullMQ, add per job", &as_refs(&bs));
    command_row(&mut out, "BullMQ, addBulk (adds pipelined)", &as_refs(&bb));
    command_row(
        &mut out,
        "apalis, push per job (+ SCARD polls)",
        &as_refs(&a_s),
    );
    command_row(
        &mut out,
        "apalis, push_bulk (+ SCARD polls)",
        &as_refs(&a_b),
    );
    command_row(&mut out, "ours, POST through completion", &as_refs(&oe));
    command_row(&mut out, "ours, POST only (api alone)", &as_refs(&op));
    let background: Vec<f64> = rounds
        .ours
        .iter()
        .map(|r| r.idle_client_per_s * r.seconds / knobs.jobs as f64)
        .collect();
    if let Some((_, b, _)) = spread(&background) {
        let _ = writeln!(
            out,
            "  ours, background at most (idle client commands/s x run time / jobs): {}/job",
            fmt_num(b)
        );
    }
    for (label, runs) in [
        ("BullMQ add", &bs),
        ("BullMQ addBulk", &bb),
        ("apalis push", &a_s),
        ("apalis push_bulk", &a_b),
        ("ours", &oe),
    ] {
        if let Some((c, _)) = runs.last() {
            let _ = writeln!(out, "  {label}, last round, commands: {}", c.top(12));
        }
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  CPU per job, µs (median)                 redis  api or  worker    total  load client | bytes to / from redis"
    );
    let _ = writeln!(
        out,
        "  {:<38} {:>7} {:>8} {:>6} {:>8} {:>8}   | {:>8} {:>8}",
        "", "", "producer", "", "(3 cols)", "(HTTP)", "per job", "per job"
    );
    let cpu_row = |out: &mut String, label: &str, cpus: &[Cpu]| {
        let us = |f: &dyn Fn(&Cpu) -> f64| -> String {
            let v: Vec<f64> = cpus
                .iter()
                .map(|c| f(c) * 1e6 / knobs.jobs as f64)
                .collect();
            median(&v).map(fmt_num).unwrap_or_else(|| "-".into())
        };
        let bytes = |f: &dyn Fn(&Cpu) -> f64| -> String {
            let v: Vec<f64> = cpus.iter().map(|c| f(c) / knobs.jobs as f64).collect();
            median(&v).map(fmt_num).unwrap_or_else(|| "-".into())
        };
        let total = |c: &Cpu| {
            [c.redis, c.submit, c.worker]
                .iter()
                .filter(|x| x.is_finite())
                .sum::<f64>()
        };
        let _ = writeln!(
            out,
            "  {label:<38} {:>7} {:>8} {:>6} {:>8} {:>8}   | {:>8} {:>8}",
            us(&|c| c.redis),
            us(&|c| c.submit),
            us(&|c| c.worker),
            us(&total),
            us(&|c| c.client),
            bytes(&|c| c.net_in),
            bytes(&|c| c.net_out),
        );
    };
    let cpus = |runs: &[QueueRun]| runs.iter().map(|r| r.cpu).collect::<Vec<_>>();
    cpu_row(&mut out, "BullMQ, add per job", &cpus(&rounds.bull_single));
    cpu_row(&mut out, "BullMQ, addBulk", &cpus(&rounds.bull_bulk));
    cpu_row(
        &mut out,
        "apalis, push per job",
        &cpus(&rounds.apalis_single),
    );
    cpu_row(&mut out, "apalis, push_bulk", &cpus(&rounds.apalis_bulk));
    cpu_row(&mut out, "ours, POST through completion", &cpus(&ours_runs));
    let post_cpus = |runs: &[PostRun]| runs.iter().map(|r| r.cpu).collect::<Vec<_>>();
    cpu_row(
        &mut out,
        "ours, POST only (api alone)",
        &post_cpus(&rounds.post),
    );
    cpu_row(
        &mut out,
        "ours, POST only (standalone)",
        &post_cpus(&rounds.standalone),
    );

    let _ = writeln!(out);
    let _ = writeln!(out, "  ratios (median of the per-round ratios, min - max)");
    let vs_single = paired(&ours_e2e, &bull_single);
    let vs_bulk = paired(&ours_e2e, &bull_bulk);
    let ms = |v: &[f64], t: f64| median(v).map(|m| m >= t);
    ratio_row(
        &mut out,
        "end to end: ours / BullMQ add",
        &vs_single,
        ">= 1.2x",
        ms(&vs_single, 1.2),
    );
    ratio_row(
        &mut out,
        "end to end: ours / BullMQ addBulk",
        &vs_bulk,
        ">= 1.0x",
        ms(&vs_bulk, 1.0),
    );
    let vs_apalis = paired(&ours_e2e, &apalis_single);
    ratio_row(
        &mut out,
        "end to end: ours / apalis push",
        &vs_apalis,
        ">= 1.0x",
        ms(&vs_apalis, 1.0),
    );
    let vs_apalis_bulk = paired(&ours_e2e, &apalis_bulk);
    ratio_row(
        &mut out,
        "end to end: ours / apalis push_bulk",
        &vs_apalis_bulk,
        "-",
        None,
    );
    let post_rps: Vec<f64> = rounds.post.iter().map(|r| r.rps).collect();
    let p1: Vec<f64> = rounds.lpush_p1.iter().map(|c| c.rps).collect();
    let post_vs_lpush = paired(&post_rps, &p1);
    ratio_row(
        &mut out,
        "POST 202 (api alone) / LPUSH -P 1",
        &post_vs_lpush,
        ">= 0.3x",
        ms(&post_vs_lpush, 0.3),
    );
    // Same job count on both sides, so the ratio of the runs' totals is the per-job ratio.
    let part = |runs: &[QueueRun], f: fn(&Cpu) -> f64| {
        runs.iter().map(|r| f(&r.cpu)).collect::<Vec<f64>>()
    };
    let redis_cpu_vs = paired(
        &part(&ours_runs, |c| c.redis),
        &part(&rounds.bull_single, |c| c.redis),
    );
    ratio_row(
        &mut out,
        "Redis CPU per job: ours / BullMQ add",
        &redis_cpu_vs,
        "<= 1.0x",
        median(&redis_cpu_vs).map(|m| m <= 1.0),
    );
    let bytes_vs = paired(
        &part(&ours_runs, |c| c.net_in),
        &part(&rounds.bull_single, |c| c.net_in),
    );
    ratio_row(
        &mut out,
        "bytes to Redis per job: ours / BullMQ add",
        &bytes_vs,
        "<= 1.0x",
        median(&bytes_vs).map(|m| m <= 1.0),
    );
    let post_p99: Vec<f64> = rounds.post.iter().map(|r| r.p99_ms).collect();
    ratio_row(
        &mut out,
        "POST 202 p99 ms (api alone)",
        &post_p99,
        "< 10 ms",
        median(&post_p99).map(|m| m < 10.0),
    );
    let rt: Vec<f64> = oe
        .iter()
        .map(|(c, n)| c.client() as f64 / *n as f64)
        .collect();
    ratio_row(
        &mut out,
        "client round trips per job (ours, feed excl.)",
        &rt,
        "<= 3",
        median(&rt).map(|m| m <= 3.0),
    );
    let bull_rt: Vec<f64> = bs
        .iter()
        .map(|(c, n)| c.client() as f64 / *n as f64)
        .collect();
    ratio_row(
        &mut out,
        "client round trips per job (BullMQ add)",
        &bull_rt,
        "-",
        None,
    );
    let standalone_tail: Vec<f64> = rounds
        .standalone
        .iter()
        .map(|r| r.p99_ms / r.p50_ms)
        .collect();
    ratio_row(
        &mut out,
        "standalone POST p99 / p50",
        &standalone_tail,
        "<= 3x",
        median(&standalone_tail).map(|m| m <= 3.0),
    );
    // The machine's own tail: what a trivial server shows at the same concurrency right now.
    let lpush_tail: Vec<f64> = rounds
        .lpush_p1
        .iter()
        .map(|c| c.p99_ms / c.p50_ms)
        .collect();
    ratio_row(
        &mut out,
        "reference: LPUSH -P 1 p99 / p50 (machine noise)",
        &lpush_tail,
        "-",
        None,
    );
    out
}

// ---------------------------------------------------------------------------------------------

fn bullmq_available(knobs: &Knobs) -> Result<(), String> {
    if !knobs
        .peers_dir
        .join("node_modules/bullmq/package.json")
        .is_file()
    {
        return Err(format!(
            "not run: bullmq is not installed in {} (service/benches/run-queue-bench.sh installs it)",
            knobs.peers_dir.display()
        ));
    }
    match std::process::Command::new(&knobs.node)
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err(format!("not run: {} (Node.js) is missing", knobs.node)),
    }
}

async fn run() -> Result<String> {
    let knobs = Knobs::from_env()?;
    std::fs::create_dir_all(&knobs.work_dir)?;
    let load_before = load_average();
    let server = RedisServer::start(&knobs.work_dir).await?;
    let mut probe = Probe::connect(&server.url()).await?;
    let redis_version = probe.server_version().await?;
    let missing: Vec<(Peer, Option<String>)> = [Peer::Bullmq, Peer::Apalis]
        .into_iter()
        .map(|p| (p, p.unavailable(&knobs)))
        .collect();
    for (peer, why) in &missing {
        if let Some(why) = why {
            eprintln!("queue-bench: {} {why}", peer.name());
        }
    }
    let mut versions: Vec<(Peer, Option<String>)> = Vec::new();
    let mut rounds = Rounds::default();
    let t = knobs.timeout;
    for round in 1..=knobs.rounds {
        let r = format!("round {round}/{}", knobs.rounds);
        probe.flushall().await?;
        let p1 = redis_benchmark(server.port, 1, t).await?;
        probe.flushall().await?;
        let p16 = redis_benchmark(server.port, 16, t).await?;
        probe.flushall().await?;
        eprintln!(
            "queue-bench: {r}: LPUSH -P 1 {:.0} req/s, -P 16 {:.0} req/s",
            p1.rps, p16.rps
        );
        rounds.lpush_p1.push(p1);
        rounds.lpush_p16.push(p16);
        for (peer, why) in &missing {
            if why.is_some() {
                continue;
            }
            let name = peer.name();
            let mut version = None;
            for mode in ["single", "bulk"] {
                probe.flushall().await?;
                let queue = format!("bench-{mode}-{round}");
                let run = peer_run(
                    *peer,
                    &knobs,
                    &server,
                    &mut probe,
                    mode,
                    &queue,
                    &mut version,
                )
                .await
                .with_context(|| {
                    format!("{name} {mode} run (log in {})", knobs.work_dir.display())
                })?;
                eprintln!(
                    "queue-bench: {r}: {name} {mode}: {:.0} jobs/s end to end, {:.1} client commands/job",
                    run.jobs_per_s,
                    run.commands.client() as f64 / knobs.jobs as f64
                );
                let runs = match (peer, mode) {
                    (Peer::Bullmq, "single") => &mut rounds.bull_single,
                    (Peer::Bullmq, _) => &mut rounds.bull_bulk,
                    (Peer::Apalis, "single") => &mut rounds.apalis_single,
                    (Peer::Apalis, _) => &mut rounds.apalis_bulk,
                };
                runs.push(run);
            }
            if round == 1 {
                versions.push((*peer, version));
            }
        }
        probe.flushall().await?;
        let ours = ours_e2e(&knobs, &server, &mut probe, round).await?;
        eprintln!(
            "queue-bench: {r}: ours: {:.0} jobs/s end to end, POST {:.0}/s during it, {:.2} client commands/job",
            ours.e2e.jobs_per_s,
            ours.e2e.submit_per_s,
            ours.e2e.commands.client() as f64 / knobs.jobs as f64
        );
        rounds.ours.push(ours);
        probe.flushall().await?;
        let post = ours_post_only(&knobs, &server, &mut probe, round).await?;
        eprintln!(
            "queue-bench: {r}: ours, api alone: {:.0} POST/s, p50 {:.2} ms, p99 {:.2} ms",
            post.rps, post.p50_ms, post.p99_ms
        );
        rounds.post.push(post);
        probe.flushall().await?;
        let standalone = standalone_post_only(&knobs, round).await?;
        eprintln!(
            "queue-bench: {r}: standalone: {:.0} POST/s, p50 {:.2} ms, p99 {:.2} ms",
            standalone.rps, standalone.p50_ms, standalone.p99_ms
        );
        rounds.standalone.push(standalone);
    }
    probe.flushall().await?;
    drop(probe);
    server.proc.stop(Duration::from_secs(5)).await;
    let peers_text = [Peer::Bullmq, Peer::Apalis]
        .iter()
        .map(|p| {
            versions
                .iter()
                .find(|(q, _)| q == p)
                .and_then(|(_, v)| v.clone())
                .unwrap_or_else(|| format!("{} not run", p.name()))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let header = format!(
        "queue benchmark: {} jobs x {} rounds (the peers' processors do nothing; ours runs the offline \
`local` generator, about 40 µs of CPU per one-card job), {} connections / producers, worker concurrency {}, \
one redis-server {redis_version} (loopback, no persistence) for every side\n{peers_text}; ours: {}\n\
load average (1/5/15 min) before: {load_before}, after: {}; {} CPUs",
        knobs.jobs,
        knobs.rounds,
        knobs.connections,
        knobs.concurrency,
        knobs.service_bin.display(),
        load_average(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );
    let note = |peer: Peer| {
        missing
            .iter()
            .find(|(p, _)| *p == peer)
            .and_then(|(_, why)| why.clone())
            .unwrap_or_default()
    };
    let table = report(
        &knobs,
        &rounds,
        &header,
        &note(Peer::Bullmq),
        &note(Peer::Apalis),
    );
    let _ = std::fs::remove_dir_all(&knobs.work_dir);
    Ok(table)
}

async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => return "SIGTERM",
                _ = tokio::signal::ctrl_c() => return "interrupted",
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "interrupted"
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("queue-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Every child is killed when `run`'s future is dropped (kill_on_drop), on error or signal.
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = run() => result,
            why = interrupted() => Err(anyhow!("{why}: stopped; every process it started is killed")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("queue-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
