//! A real Redis Cluster for tests: 3 masters and 3 replicas (`redis-server --cluster-enabled
//! yes` x6 on free loopback ports, joined by `redis-cli --cluster create`), with helpers to find
//! and SIGKILL the master owning a key's slot and to wait for its replica's promotion. Every
//! process is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::admin::{command, info_field, log_tail, spawn_redis, temp_dir, wait_pong, wait_until};
use crate::free_port;

/// Cluster node timeout: how long a master may be silent before it is failed over. Low for
/// fast tests, not so low that a loaded machine sees false failures.
pub const NODE_TIMEOUT_MS: u64 = 2000;
const NODES: usize = 6;
const STARTUP: Duration = Duration::from_secs(60);

struct ClusterNode {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running 6-node cluster.
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    dir: PathBuf,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts the six nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok` and every replica is in sync.
    pub fn start() -> Self {
        Self::start_with_node_timeout(NODE_TIMEOUT_MS)
    }

    /// Like [`RedisCluster::start`] with another `cluster-node-timeout` (a slower failover).
    pub fn start_with_node_timeout(node_timeout_ms: u64) -> Self {
        let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
        let dir = temp_dir(&format!("cluster-{}", ports[0]));
        let nodes = ports
            .iter()
            .map(|&port| {
                let log = dir.join(format!("node-{port}.log"));
                let args: Vec<String> = [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    &node_timeout_ms.to_string(),
                    // A replica that never lost its master may always be promoted.
                    "--cluster-replica-validity-factor",
                    "0",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let child = spawn_redis("redis-server", &args, &dir, &log);
                ClusterNode {
                    port,
                    child: Some(child),
                    log,
                }
            })
            .collect();
        let cluster = Self { nodes, dir };
        for node in &cluster.nodes {
            wait_pong(node.port, Duration::from_secs(10));
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-cli not found ({e}): install it (apt-get install redis-tools) or run \
                     .ci/install-test-tools.sh"
                )
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_healthy(STARTUP);
        cluster
    }

    /// `redis+cluster://` URL listing every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    fn alive_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Waits until every running node says `cluster_state:ok`, knows all slots, and every
    /// running replica's link to its master is up.
    pub fn wait_healthy(&self, timeout: Duration) {
        let alive = self.alive_ports();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until("cluster healthy", timeout, || {
                for &port in &alive {
                    let info: String = command(port, redis::cmd("CLUSTER").arg("INFO"))
                        .map_err(|e| format!("node {port}: {e}"))?;
                    if !info.contains("cluster_state:ok")
                        || !info.contains("cluster_slots_ok:16384")
                    {
                        return Err(format!("node {port}: {}", info.replace("\r\n", " ")));
                    }
                    if info_field(port, "replication", "role").as_deref() == Some("slave")
                        && info_field(port, "replication", "master_link_status").as_deref()
                            != Some("up")
                    {
                        return Err(format!("replica {port} not in sync"));
                    }
                }
                Ok(true)
            })
        }));
        if let Err(panic) = result {
            let logs: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("--- node {} ---\n{}", n.port, log_tail(&n.log, 15)))
                .collect();
            eprintln!("{}", logs.join("\n"));
            std::panic::resume_unwind(panic);
        }
    }

    /// `CLUSTER NODES` as seen by a running node.
    pub fn nodes_view(&self) -> Result<Vec<NodeLine>, String> {
        let mut last_error = String::from("no running node");
        for port in self.alive_ports() {
            match command::<String>(port, redis::cmd("CLUSTER").arg("NODES")) {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(e) => last_error = format!("node {port}: {e}"),
            }
        }
        Err(last_error)
    }

    /// The slot of `key` (hash tags respected).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.alive_ports()[0];
        let slot: i64 =
            command(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).expect("CLUSTER KEYSLOT");
        slot as u16
    }

    /// The port of the healthy master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> Result<u16, String> {
        let slot = self.slot_of(key);
        self.nodes_view()?
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|n| n.port)
            .ok_or_else(|| format!("no healthy master for slot {slot}"))
    }

    /// SIGKILLs the node on `port` (no goodbye to the cluster, like a crashed machine).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the master serving `key` and returns its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.master_of(key).expect("a master for the key");
        self.kill(port);
        port
    }

    /// Waits until a replica has taken over `key`'s slot from `old` and the surviving nodes say
    /// `cluster_state:ok`; returns the new master's port and how long it took.
    pub fn wait_for_promotion(&self, key: &str, old: u16, timeout: Duration) -> (u16, Duration) {
        let mut new = 0;
        let took = wait_until(
            &format!("a replica takes over {key:?} from {old}"),
            timeout,
            || {
                let port = self.master_of(key)?;
                new = port;
                Ok(port != old)
            },
        );
        self.wait_healthy(timeout);
        (new, took)
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            // "127.0.0.1:7000@17000" (optionally ",hostname").
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|v| (v, v)),
                })
                .collect();
            Some(NodeLine {
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
