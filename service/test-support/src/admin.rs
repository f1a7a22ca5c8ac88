//! Small synchronous helpers for test servers: one command on a node, INFO fields, and a
//! poll-until-true loop with a deadline (no fixed sleeps).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs one command on the node at `127.0.0.1:port` over a fresh connection with short timeouts,
/// so a dead node answers with an error instead of a hang.
pub fn command<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    cmd.query(&mut conn)
}

/// One `field:value` line of `INFO <section>` on a node, if it answers.
pub fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let info: String = command(port, redis::cmd("INFO").arg(section)).ok()?;
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// Polls `check` every 50 ms until it returns `Ok(true)`; panics after `timeout` with `what` and
/// the last detail `check` gave (`Err(detail)` or `Ok(false)`).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool, String>,
) -> Duration {
    let started = Instant::now();
    let mut last = String::from("(never checked)");
    while started.elapsed() < timeout {
        match check() {
            Ok(true) => return started.elapsed(),
            Ok(false) => last = "not yet".into(),
            Err(detail) => last = detail,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not reached within {timeout:?}; last: {last}");
}

/// Spawns a Redis binary (`redis-server`, `redis-sentinel`) with its output in `log`. Panics
/// with an install hint when the binary is missing: Redis tests are never skipped silently.
pub fn spawn_redis(binary: &str, args: &[String], dir: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("create redis log file");
    let err = out.try_clone().expect("clone log file handle");
    Command::new(binary)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{binary} not found ({e}): install it (apt-get install redis-server \
                 redis-sentinel redis-tools) or run .ci/install-test-tools.sh"
            )
        })
}

/// The last lines of a log file, for failure messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until the node on `port` answers PING.
pub fn wait_pong(port: u16, timeout: Duration) {
    wait_until(&format!("node {port} answers PING"), timeout, || {
        command::<String>(port, &redis::cmd("PING"))
            .map(|pong| pong == "PONG")
            .map_err(|e| e.to_string())
    });
}

/// A fresh, empty temp directory for one test server group.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
