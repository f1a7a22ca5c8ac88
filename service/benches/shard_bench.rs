//! Spread across shards: 8 pipelines on one Redis node, then the same 8 pipelines on a 3-master,
//! 3-replica Redis Cluster, in the same run on the same machine. Each pipeline is one
//! `flashcard-service standalone --redis-url ...` process (the real binary: its HTTP API and a
//! worker in one process, the local provider, small concurrency). The same load is sent to both:
//! every pipeline gets `SHARD_BENCH_JOBS` submissions over HTTP from `SHARD_BENCH_CLIENTS`
//! concurrent clients, and a run ends when every pipeline has completed all of its jobs.
//!
//! Pipeline names are chosen so their hash tags land on all three masters as evenly as 8 allows
//! (3/3/2): the slot of `fc:{<name>}:...` is CRC16(<name>) mod 16384, computed here and checked
//! against `CLUSTER KEYSLOT`; the table printed first says which slot and master each one got.
//! Besides jobs/s, each Redis node's CPU time (`INFO cpu`) and command count (`INFO stats`)
//! during the run show how the work spread over the masters.
//!
//! Run by hand (not part of `cargo test`): `service/benches/run-shard-bench.sh`, or
//! `cargo bench -p flashcard-service --bench shard_bench`. Needs `redis-server` and `redis-cli`.

// The service tests' process helper; a bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flashcard_core::keyspace::{Keyspace, PipelineId};
use futures::StreamExt;
use serde_json::{Value, json};
use support::admin::command;
use support::{RedisCluster, RedisServer, Service};

const PIPELINES: usize = 8;
const MASTERS: usize = 3;
const SLOTS: u16 = 16384;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key, honouring its `{hash tag}` like Redis does.
fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')? + open + 1;
        (close > open + 1).then_some(&bytes[open + 1..close])
    });
    crc16(tagged.unwrap_or(bytes)) % SLOTS
}

fn slot_key(name: &str) -> String {
    Keyspace::new(&PipelineId::new(None, name).expect("pipeline name")).waiting()
}

/// Master port for every slot range of a running cluster.
fn slot_owners(cluster: &RedisCluster) -> Vec<((u16, u16), u16)> {
    let view = cluster.nodes_view().expect("CLUSTER NODES");
    view.iter()
        .filter(|n| n.master && !n.failed)
        .flat_map(|n| n.slots.iter().map(move |&range| (range, n.port)))
        .collect()
}

fn owner(owners: &[((u16, u16), u16)], slot: u16) -> u16 {
    owners
        .iter()
        .find(|((a, b), _)| *a <= slot && slot <= *b)
        .map(|(_, port)| *port)
        .expect("every slot has a master")
}

/// Eight names `shard-<n>` whose slots spread over the masters: at most ceil(8/3) on each.
fn spread_names(owners: &[((u16, u16), u16)]) -> Vec<String> {
    let most = PIPELINES.div_ceil(MASTERS);
    let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
    let mut names = Vec::new();
    for n in 0.. {
        let name = format!("shard-{n}");
        let master = owner(owners, key_slot(&slot_key(&name)));
        let count = per_master.entry(master).or_default();
        if *count < most {
            *count += 1;
            names.push(name);
        }
        if names.len() == PIPELINES {
            break;
        }
    }
    names
}

/// CPU seconds and commands processed by a Redis node so far.
fn node_usage(port: u16) -> (f64, u64) {
    let cpu: String = command(port, redis::cmd("INFO").arg("cpu")).unwrap_or_default();
    let stats: String = command(port, redis::cmd("INFO").arg("stats")).unwrap_or_default();
    let field = |text: &str, name: &str| -> Option<String> {
        text.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
    };
    let seconds = ["used_cpu_user", "used_cpu_sys"]
        .iter()
        .filter_map(|f| field(&cpu, f)?.parse::<f64>().ok())
        .sum();
    let commands = field(&stats, "total_commands_processed")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (seconds, commands)
}

async fn completed(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(response) = client.get(format!("{base}/api/queue/stats")).send().await else {
        return 0;
    };
    let stats: Value = response.json().await.unwrap_or(Value::Null);
    stats["stats"]["completed"].as_u64().unwrap_or(0)
}

/// What one topology did.
struct Run {
    jobs: usize,
    seconds: f64,
    submit_seconds: f64,
    per_pipeline: Vec<f64>,
}

/// Starts one standalone process per pipeline on `url`, sends the load, waits for completion.
async fn run(url: &str, names: &[String], jobs: usize, clients: usize, concurrency: usize) -> Run {
    let concurrency = concurrency.to_string();
    let mut services = Vec::new();
    for name in names {
        let args = [
            "--redis-url",
            url,
            "--pipeline",
            name,
            "--rate-limit-jobs",
            "0",
            // One client, no cap: the same work as the peers, which have no per-client cap.
            "--client-concurrency",
            "0",
            "--worker-concurrency",
            &concurrency,
            "--poll-interval-ms",
            "200",
        ];
        services.push(Service::start("standalone", &args, &[]).await);
    }
    let client = support::http();
    let started = Instant::now();
    let drives = services.iter().map(|service| {
        let client = client.clone();
        let url = service.url("/api/ai/generate-flashcards");
        let base = service.base.clone();
        async move {
            let accepted = futures::stream::iter(0..jobs)
                .map(|n| {
                    let (client, url) = (client.clone(), url.clone());
                    async move {
                        let body = json!({"content": support::STUDY_TEXT, "subject": "bench",
                            "topic": "shards", "userId": format!("u{}", n % 100), "cardCount": 5});
                        client
                            .post(url)
                            .json(&body)
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 202)
                    }
                })
                .buffer_unordered(clients)
                .filter(|ok| futures::future::ready(*ok))
                .count()
                .await;
            assert_eq!(accepted, jobs, "every submission accepted");
            let submitted = started.elapsed().as_secs_f64();
            let deadline = Instant::now() + Duration::from_secs(600);
            while completed(&client, &base).await < jobs as u64 {
                assert!(Instant::now() < deadline, "jobs did not complete in time");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (submitted, started.elapsed().as_secs_f64())
        }
    });
    let finished = futures::future::join_all(drives).await;
    let seconds = started.elapsed().as_secs_f64();
    drop(services);
    Run {
        jobs: jobs * names.len(),
        seconds,
        submit_seconds: finished.iter().map(|(s, _)| *s).fold(0.0, f64::max),
        per_pipeline: finished
            .iter()
            .map(|(_, done)| jobs as f64 / done)
            .collect(),
    }
}

/// CPU seconds and commands of each node since `before`.
fn usage_since(before: &[(u16, (f64, u64))]) -> Vec<(u16, f64, u64)> {
    before
        .iter()
        .map(|&(port, (cpu0, cmd0))| {
            let (cpu1, cmd1) = node_usage(port);
            (port, cpu1 - cpu0, cmd1.saturating_sub(cmd0))
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    support::init_tls();
    let jobs = env_or("SHARD_BENCH_JOBS", 2000);
    let clients = env_or("SHARD_BENCH_CLIENTS", 8);
    let concurrency = env_or("SHARD_BENCH_CONCURRENCY", 4);

    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let owners = slot_owners(&cluster);
    let names = spread_names(&owners);
    println!("## 8 pipelines, their hash slots and masters\n");
    println!("| pipeline | hash tag | slot (CRC16) | CLUSTER KEYSLOT | master |");
    println!("| --- | --- | --- | --- | --- |");
    for name in &names {
        let key = slot_key(name);
        let computed = key_slot(&key);
        let asked = cluster.slot_of(&key);
        assert_eq!(
            computed, asked,
            "CRC16 slot of {key} disagrees with CLUSTER KEYSLOT"
        );
        let tag = &key[key.find('{').unwrap_or(0)..=key.find('}').unwrap_or(0)];
        println!(
            "| {name} | `{tag}` | {computed} | {asked} | 127.0.0.1:{} |",
            owner(&owners, computed)
        );
    }
    let masters: Vec<u16> = {
        let mut m: Vec<u16> = owners.iter().map(|(_, p)| *p).collect();
        m.sort();
        m.dedup();
        m
    };

    println!(
        "\n{PIPELINES} standalone processes (api + worker, worker concurrency {concurrency}), \
         {jobs} jobs each over HTTP from {clients} concurrent clients per pipeline, local provider\n"
    );

    let single = tokio::task::block_in_place(RedisServer::start);
    let before = vec![(single.port, node_usage(single.port))];
    let one = run(&single.url(), &names, jobs, clients, concurrency).await;
    let single_usage = usage_since(&before);
    drop(single);

    let before: Vec<(u16, (f64, u64))> = cluster
        .ports()
        .into_iter()
        .map(|p| (p, node_usage(p)))
        .collect();
    let many = run(&cluster.url(), &names, jobs, clients, concurrency).await;
    let cluster_usage = usage_since(&before);

    println!("## Throughput\n");
    println!(
        "| Redis | jobs | seconds | jobs/s (end to end) | submit phase jobs/s | slowest / fastest pipeline jobs/s |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (label, r) in [("1 node", &one), ("cluster, 3 masters", &many)] {
        let slowest = r.per_pipeline.iter().copied().fold(f64::INFINITY, f64::min);
        let fastest = r.per_pipeline.iter().copied().fold(0.0, f64::max);
        println!(
            "| {label} | {} | {:.1} | {:.0} | {:.0} | {slowest:.0} / {fastest:.0} |",
            r.jobs,
            r.seconds,
            r.jobs as f64 / r.seconds,
            r.jobs as f64 / r.submit_seconds,
        );
    }
    println!(
        "\ncluster / 1 node: {:.2}x\n",
        (many.jobs as f64 / many.seconds) / (one.jobs as f64 / one.seconds)
    );
    println!("## Redis work per node during each run\n");
    println!("| Redis | node | role | CPU seconds | commands |");
    println!("| --- | --- | --- | --- | --- |");
    for (port, cpu, commands) in single_usage {
        println!("| 1 node | {port} | single (8 pipelines) | {cpu:.2} | {commands} |");
    }
    for (port, cpu, commands) in cluster_usage {
        let role = if masters.contains(&port) {
            let n = names
                .iter()
                .filter(|name| owner(&owners, key_slot(&slot_key(name))) == port)
                .count();
            format!("master ({n} pipelines)")
        } else {
            "replica".to_owned()
        };
        println!("| cluster | {port} | {role} | {cpu:.2} | {commands} |");
    }
}
