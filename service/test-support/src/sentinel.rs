//! A real Sentinel setup for tests: one master, one replica and three `redis-sentinel`
//! processes on free loopback ports, with a low `down-after-milliseconds` so a failover takes
//! seconds; helpers to SIGKILL the master and wait for the promotion. Killed on drop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use crate::admin::{command, info_field, log_tail, spawn_redis, temp_dir, wait_pong, wait_until};
use crate::free_port;

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "fcmaster";
/// How long the master may be silent before a sentinel calls it down.
pub const DOWN_AFTER_MS: u64 = 2000;
const STARTUP: Duration = Duration::from_secs(60);

struct Process {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running master, replica and three sentinels.
pub struct RedisSentinel {
    /// `[0]` started as master, `[1]` as its replica.
    data: Vec<Process>,
    sentinels: Vec<Process>,
    dir: PathBuf,
}

impl RedisSentinel {
    /// Starts everything and waits until the replica is in sync and every sentinel knows the
    /// replica and the two other sentinels (so a failover can be agreed on).
    pub fn start() -> Self {
        let master_port = free_port();
        let replica_port = free_port();
        let dir = temp_dir(&format!("sentinel-{master_port}"));
        let data_node = |port: u16, replica_of: Option<u16>| {
            let log = dir.join(format!("redis-{port}.log"));
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dbfilename",
                &format!("dump-{port}.rdb"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(master) = replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            let child = spawn_redis("redis-server", &args, &dir, &log);
            Process {
                port,
                child: Some(child),
                log,
            }
        };
        let data = vec![
            data_node(master_port, None),
            data_node(replica_port, Some(master_port)),
        ];
        wait_pong(master_port, Duration::from_secs(10));
        wait_pong(replica_port, Duration::from_secs(10));
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let conf = dir.join(format!("sentinel-{port}.conf"));
                // Sentinels rewrite their config file, so each gets its own writable one.
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndaemonize no\n\
                         sentinel resolve-hostnames no\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                         sentinel failover-timeout {MASTER_NAME} 10000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n"
                    ),
                )
                .expect("write sentinel config");
                let log = dir.join(format!("sentinel-{port}.log"));
                let args = vec![conf.display().to_string()];
                let child = spawn_redis("redis-sentinel", &args, &dir, &log);
                Process {
                    port,
                    child: Some(child),
                    log,
                }
            })
            .collect();
        let setup = Self {
            data,
            sentinels,
            dir,
        };
        setup.with_logs_on_panic(|| {
            for s in &setup.sentinels {
                wait_pong(s.port, Duration::from_secs(10));
            }
            wait_until("replica in sync", STARTUP, || {
                Ok(
                    info_field(replica_port, "replication", "master_link_status").as_deref()
                        == Some("up"),
                )
            });
            wait_until("sentinels know the replica and each other", STARTUP, || {
                for s in &setup.sentinels {
                    let master = sentinel_master(s.port)?;
                    let replicas: u32 = field(&master, "num-slaves")?;
                    let others: u32 = field(&master, "num-other-sentinels")?;
                    if replicas < 1 || others < 2 {
                        return Err(format!(
                            "sentinel {}: {replicas} replicas, {others} other sentinels",
                            s.port
                        ));
                    }
                }
                Ok(true)
            });
        });
        setup
    }

    /// `redis+sentinel://` URL listing the three sentinels.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", nodes.join(","))
    }

    /// The master's port as the first answering sentinel names it.
    pub fn master_port(&self) -> Result<u16, String> {
        let mut last = String::from("no sentinel answered");
        for s in self.sentinels.iter().filter(|s| s.child.is_some()) {
            match command::<Vec<String>>(
                s.port,
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME),
            ) {
                Ok(addr) if addr.len() == 2 => {
                    return addr[1]
                        .parse()
                        .map_err(|_| format!("bad port {:?}", addr[1]));
                }
                Ok(addr) => last = format!("sentinel {}: {addr:?}", s.port),
                Err(e) => last = format!("sentinel {}: {e}", s.port),
            }
        }
        Err(last)
    }

    /// SIGKILLs the current master; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("sentinels name a master");
        if let Some(p) = self.data.iter_mut().find(|p| p.port == port) {
            p.kill();
        }
        port
    }

    /// Waits until every sentinel names a master other than `old` and that node says it is a
    /// master; returns its port and how long it took.
    pub fn wait_for_failover(&self, old: u16, timeout: Duration) -> (u16, Duration) {
        let mut new = 0;
        let took = self.with_logs_on_panic(|| {
            wait_until(&format!("failover away from {old}"), timeout, || {
                for s in self.sentinels.iter().filter(|s| s.child.is_some()) {
                    let addr: Vec<String> = command(
                        s.port,
                        redis::cmd("SENTINEL")
                            .arg("GET-MASTER-ADDR-BY-NAME")
                            .arg(MASTER_NAME),
                    )
                    .map_err(|e| format!("sentinel {}: {e}", s.port))?;
                    let port: u16 = addr
                        .get(1)
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| format!("sentinel {}: {addr:?}", s.port))?;
                    if port == old {
                        return Ok(false);
                    }
                    new = port;
                }
                Ok(info_field(new, "replication", "role").as_deref() == Some("master"))
            })
        });
        (new, took)
    }

    fn with_logs_on_panic<T>(&self, f: impl FnOnce() -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(panic) => {
                for p in self.data.iter().chain(&self.sentinels) {
                    eprintln!("--- {} ---\n{}", p.port, log_tail(&p.log, 15));
                }
                std::panic::resume_unwind(panic)
            }
        }
    }
}

fn sentinel_master(port: u16) -> Result<HashMap<String, String>, String> {
    command(port, redis::cmd("SENTINEL").arg("MASTER").arg(MASTER_NAME))
        .map_err(|e| format!("sentinel {port}: {e}"))
}

fn field<T: std::str::FromStr>(map: &HashMap<String, String>, name: &str) -> Result<T, String> {
    map.get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {name} in {map:?}"))
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for p in self.sentinels.iter_mut().chain(self.data.iter_mut()) {
            p.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
