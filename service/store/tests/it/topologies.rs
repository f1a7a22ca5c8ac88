//! The Redis connection layer against real servers the tests start: one node, a 3-master +
//! 3-replica Redis Cluster and a Sentinel setup (master, replica, three sentinels).
//!
//! On each: plain commands and pipelines, a Lua script whose keys share one hash tag, a `BLPOP`
//! woken by a push from another connection, an `XREAD BLOCK` that sees an `XADD`. On the cluster
//! and Sentinel: SIGKILL the master owning the slot and check that commands and the blocking
//! read recover within 10 s of the promotion, and that no blocking call outlives its deadline
//! meanwhile. Through a TCP proxy that stops forwarding without closing: blocking reads and
//! ordinary commands fail within their deadlines and a fresh connection works afterwards, also
//! for the store's event feed and `wait_for_work`. Every socket has TCP keepalive.
//!
//! Needs `redis-server`, `redis-sentinel` and `redis-cli` (`.ci/install-test-tools.sh`); a
//! missing binary fails the tests.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{RedisCluster, RedisSentinel, RedisServer, TcpProxy};
use flashcard_core::budget::Pricing;
use flashcard_core::job::JobRequest;
use flashcard_core::keyspace::PipelineId;
use flashcard_store::redis::{
    ConnectOptions, RedisClient, RedisConn, RedisStore, Topology, TopologyKind,
};
use flashcard_store::{Admission, ClaimRequest, Store, Submission};
use futures::StreamExt;
use redis::AsyncCommands;

/// Recovery budget after a promotion (the acceptance number).
const RECOVERY: Duration = Duration::from_secs(10);
/// Block time of the blocking reads in these tests.
const BLOCK: Duration = Duration::from_secs(1);
/// Allowed lateness on top of a deadline on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

fn options() -> ConnectOptions {
    ConnectOptions {
        connection_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(3),
        block_margin: Duration::from_secs(2),
        ..ConnectOptions::default()
    }
}

fn client(url: &str) -> RedisClient {
    RedisClient::with_options(Topology::parse(url).expect("valid URL"), options())
        .expect("client settings")
}

/// A script that touches two keys of one hash tag and returns both.
fn pair_script() -> redis::Script {
    redis::Script::new(
        "redis.call('SET', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], ARGV[2]) \
         return redis.call('MGET', KEYS[1], KEYS[2])",
    )
}

async fn run_script(conn: &mut RedisConn, tag: &str, a: &str, b: &str) -> redis::RedisResult<()> {
    let got: Vec<String> = pair_script()
        .key(format!("fc:{{{tag}}}:a"))
        .key(format!("fc:{{{tag}}}:b"))
        .arg(a)
        .arg(b)
        .invoke_async(conn)
        .await?;
    assert_eq!(got, [a, b]);
    Ok(())
}

/// Plain commands, a pipeline, a hash-tagged script and both blocking reads.
async fn exercise(client: &RedisClient, tag: &str) {
    let mut conn = client.connect().await.expect("connect");
    let key = format!("fc:{{{tag}}}:plain");
    let _: () = conn.set(&key, "v1").await.unwrap();
    let value: String = conn.get(&key).await.unwrap();
    assert_eq!(value, "v1");
    let n: i64 = conn.incr(format!("fc:{{{tag}}}:n"), 2).await.unwrap();
    assert_eq!(n, 2);
    let (a, b): (String, i64) = redis::pipe()
        .atomic()
        .get(&key)
        .incr(format!("fc:{{{tag}}}:n"), 1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((a.as_str(), b), ("v1", 3));
    run_script(&mut conn, tag, "x", "y").await.unwrap();

    // BLPOP: times out empty, then wakes when another connection pushes.
    let wake = format!("fc:{{{tag}}}:wake");
    let mut blocking = client.blocking(Duration::from_secs(10));
    let started = Instant::now();
    assert_eq!(
        blocking
            .blpop(&wake, Duration::from_millis(200))
            .await
            .unwrap(),
        None
    );
    assert!(started.elapsed() < Duration::from_millis(200) + SLACK);
    let mut pusher = conn.clone();
    let wake_key = wake.clone();
    let push = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _: i64 = pusher.lpush(&wake_key, "job").await.unwrap();
    });
    let started = Instant::now();
    let popped = blocking.blpop(&wake, Duration::from_secs(5)).await.unwrap();
    assert_eq!(popped, Some((wake.clone(), "job".to_owned())));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "BLPOP woke late: {:?}",
        started.elapsed()
    );
    push.await.unwrap();

    // XREAD BLOCK after a known id sees the next XADD.
    let stream = format!("fc:{{{tag}}}:events");
    let first: String = conn.xadd(&stream, "*", &[("n", "1")]).await.unwrap();
    let mut adder = conn.clone();
    let stream_key = stream.clone();
    let add = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id: String = adder.xadd(&stream_key, "*", &[("n", "2")]).await.unwrap();
        id
    });
    let reply = blocking
        .xread_block(&stream, &first, 10, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("an entry before the block ended");
    let second = add.await.unwrap();
    let ids: Vec<&str> = reply.keys[0].ids.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [second.as_str()]);
    let none = blocking
        .xread_block(&stream, &second, 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(none.is_none());
}

/// What the background blocking reader saw during a failover.
#[derive(Default)]
struct ReaderLog {
    /// When a pop succeeded.
    pops: Vec<Instant>,
    /// Calls that took longer than their deadline plus slack.
    late: Vec<Duration>,
    errors: u32,
}

/// Kills the master (via `kill`), waits for the promotion (via `promoted`) and checks that
/// ordinary commands, a script and a blocking read all work again within [`RECOVERY`].
async fn failover_recovers(
    client: &RedisClient,
    tag: &str,
    kill: impl FnOnce() -> u16,
    promoted: impl FnOnce(u16) -> (u16, Duration),
) {
    let mut conn = client.connect().await.expect("connect");
    let key = format!("fc:{{{tag}}}:k");
    let wake = format!("fc:{{{tag}}}:wake");
    let _: () = conn.set(&key, "before").await.unwrap();
    run_script(&mut conn, tag, "1", "2").await.unwrap();

    let log = Arc::new(Mutex::new(ReaderLog::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut blocking = client.blocking(Duration::from_secs(10));
    let deadline = blocking.deadline(BLOCK);
    let reader = {
        let (log, stop, wake) = (log.clone(), stop.clone(), wake.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let started = Instant::now();
                let result = blocking.blpop(&wake, BLOCK).await;
                let took = started.elapsed();
                let failed = {
                    let mut log = log.lock().unwrap();
                    if took > deadline + SLACK {
                        log.late.push(took);
                    }
                    match result {
                        Ok(Some(_)) => log.pops.push(Instant::now()),
                        Ok(None) => {}
                        Err(_) => log.errors += 1,
                    }
                    result.is_err()
                };
                if failed {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };
    let pusher = {
        let (mut conn, stop, wake) = (conn.clone(), stop.clone(), wake.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _: redis::RedisResult<i64> = conn.lpush(&wake, "job").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // The reader is popping before the kill.
    wait_for(Duration::from_secs(5), || {
        !log.lock().unwrap().pops.is_empty()
    })
    .await;

    let killed_at = Instant::now();
    let old = kill();
    let (new, took) = tokio::task::block_in_place(|| promoted(old));
    let promoted_at = Instant::now();
    assert_ne!(new, old);

    // Commands and a script work again (the script may need reloading on the new master).
    let commands_back = loop {
        let attempt = async {
            let _: () = conn.set(&key, "after").await?;
            let v: String = conn.get(&key).await?;
            assert_eq!(v, "after");
            run_script(&mut conn, tag, "3", "4").await
        };
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
            break promoted_at.elapsed();
        }
        assert!(
            promoted_at.elapsed() < RECOVERY,
            "commands did not recover within {RECOVERY:?} of the promotion"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The blocking reader pops again.
    let reader_back = wait_for(RECOVERY, || {
        log.lock()
            .unwrap()
            .pops
            .last()
            .is_some_and(|t| *t > promoted_at)
    })
    .await
    .map(|_| promoted_at.elapsed())
    .unwrap_or_else(|| panic!("the blocking read did not recover within {RECOVERY:?}"));
    stop.cancel();
    reader.await.unwrap();
    pusher.await.unwrap();
    let log = log.lock().unwrap();
    assert!(
        log.late.is_empty(),
        "blocking calls outlived their {deadline:?} deadline: {:?}",
        log.late
    );
    eprintln!(
        "{} failover: promotion {:.1}s after the kill; commands back {:.2}s and blocking read \
         back {:.2}s after the promotion ({:.1}s after the kill); {} blocking-read errors \
         meanwhile",
        client.kind(),
        took.as_secs_f64(),
        commands_back.as_secs_f64(),
        reader_back.as_secs_f64(),
        killed_at.elapsed().as_secs_f64(),
        log.errors
    );
}

/// Polls `done` every 50 ms; `Some(elapsed)` when it held within `timeout`.
async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Remote ports of this process's TCP sockets, each with whether its keepalive timer runs
/// (`/proc/self/net/tcp{,6}`, timer kind 2).
fn own_sockets() -> Vec<(u16, bool)> {
    let own: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let mut sockets = Vec::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !own.contains(f[9]) || f[3] != "01" {
                continue;
            }
            let Some(port) = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            sockets.push((port, f[5].starts_with("02:")));
        }
    }
    sockets
}

/// Every established socket of this process to one of `ports` has TCP keepalive, and there is
/// at least one.
fn assert_keepalive(ports: &[u16]) {
    let to_redis: Vec<(u16, bool)> = own_sockets()
        .into_iter()
        .filter(|(port, _)| ports.contains(port))
        .collect();
    assert!(!to_redis.is_empty(), "no connection to {ports:?} found");
    let without: Vec<u16> = to_redis
        .iter()
        .filter(|(_, keepalive)| !keepalive)
        .map(|(p, _)| *p)
        .collect();
    assert!(
        without.is_empty(),
        "connections without TCP keepalive to {without:?} (of {to_redis:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_commands_scripts_and_blocking_reads() {
    let server = RedisServer::start();
    let client = client(&server.url());
    assert_eq!(client.kind(), TopologyKind::Single);
    exercise(&client, "single").await;
    // Keep a shared and a blocking connection open while the sockets are inspected.
    let conn = client.connect().await.unwrap();
    let mut blocking = client.blocking(BLOCK);
    blocking
        .blpop("fc:{single}:idle", Duration::from_millis(10))
        .await
        .unwrap();
    assert_keepalive(&[server.port]);
    drop((conn, blocking));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_scripts_blocking_reads_and_failover() {
    let mut cluster = RedisCluster::start();
    let client = client(&cluster.url());
    assert_eq!(client.kind(), TopologyKind::Cluster);
    // Pipelines' hash tags spread over the shards.
    let masters: HashSet<u16> = (0..8)
        .map(|i| {
            cluster
                .master_of(&format!("fc:{{pipeline-{i}}}:waiting"))
                .unwrap()
        })
        .collect();
    assert!(masters.len() >= 2, "8 pipelines all on one master");
    for tag in ["p", "pipeline-1", "pipeline-2", "pipeline-3"] {
        exercise(&client, tag).await;
    }
    let conn = client.connect().await.unwrap();
    assert_keepalive(&cluster.ports());
    drop(conn);

    let key = "fc:{failover}:k";
    let cluster = Mutex::new(&mut cluster);
    failover_recovers(
        &client,
        "failover",
        || cluster.lock().unwrap().kill_master_of(key),
        |old| {
            cluster
                .lock()
                .unwrap()
                .wait_for_promotion(key, old, Duration::from_secs(30))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_commands_scripts_blocking_reads_and_failover() {
    let mut setup = RedisSentinel::start();
    let client = client(&setup.url());
    assert_eq!(client.kind(), TopologyKind::Sentinel);
    exercise(&client, "s").await;
    let conn = client.connect().await.unwrap();
    assert_keepalive(&[setup.master_port().unwrap()]);
    drop(conn);

    let setup = Mutex::new(&mut setup);
    failover_recovers(
        &client,
        "failover",
        || setup.lock().unwrap().kill_master(),
        |old| {
            setup
                .lock()
                .unwrap()
                .wait_for_failover(old, Duration::from_secs(30))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_fails_within_its_deadline_and_is_replaced() {
    let server = RedisServer::start();
    let direct = client(&server.url());
    let mut direct_conn = direct.connect().await.unwrap();
    let proxy = TcpProxy::start(server.port).await;
    let client = client(&proxy.url());
    let mut conn = client.connect().await.unwrap();
    let mut blocking = client.blocking(Duration::from_secs(5));
    assert_eq!(
        blocking
            .blpop("fc:{h}:wake", Duration::from_millis(100))
            .await
            .unwrap(),
        None
    );
    let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();

    proxy.stall();
    // The blocking read errs after block + margin instead of hanging.
    let started = Instant::now();
    let error = blocking.blpop("fc:{h}:wake", BLOCK).await.unwrap_err();
    let took = started.elapsed();
    assert!(error.is_timeout(), "expected a timeout, got {error}");
    assert!(
        took >= BLOCK && took < blocking.deadline(BLOCK) + SLACK,
        "took {took:?}"
    );
    // A fresh connection works and sees a push made meanwhile.
    let _: i64 = direct_conn.lpush("fc:{h}:wake", "job").await.unwrap();
    let popped = blocking.blpop("fc:{h}:wake", BLOCK).await.unwrap();
    assert_eq!(popped, Some(("fc:{h}:wake".into(), "job".into())));

    // The shared handle: the stalled command fails at the response timeout, the next one runs
    // on a new connection.
    let started = Instant::now();
    let error = redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "expected a timeout, got {error}");
    assert!(started.elapsed() < options().response_timeout + SLACK);
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    assert!(proxy.connections() >= 4, "new connections were made");
}

fn request() -> JobRequest {
    JobRequest {
        content: "Mitochondria are organelles.".into(),
        subject: "biology".into(),
        topic: "cells".into(),
        user_id: "u".into(),
        card_count: 3,
    }
}

/// Submits one job and claims it (its `active` event goes to the feed); returns its id.
async fn submit_and_claim(store: &RedisStore) -> String {
    let submission = Submission::new(request(), 1);
    let Admission::Accepted { job_id } = store.submit(submission).await.unwrap() else {
        panic!("not accepted")
    };
    let claim = ClaimRequest {
        call_id: flashcard_store::CallId::new(),
        worker_id: "w",
        lease: Duration::from_secs(30),
        max_jobs: 1,
        client_cap: 0,
        pricing: Pricing::default(),
        started: None,
    };
    assert_eq!(store.claim(&claim).await.unwrap().jobs.len(), 1);
    job_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_event_feed_and_wait_for_work_survive_a_stalled_connection() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port).await;
    let pipeline = PipelineId::new(None, "stall").unwrap();
    let direct = RedisStore::connect(&server.url(), &pipeline).await.unwrap();
    let proxied = RedisStore::connect(&proxy.url(), &pipeline).await.unwrap();
    // Events only (the feed's signs of life are for readiness).
    let feed = proxied
        .event_feed(Arc::new(|_: &str| true))
        .await
        .unwrap()
        .filter_map(|item| async move {
            match item {
                flashcard_store::FeedItem::Event(event) => Some(event),
                flashcard_store::FeedItem::Alive => None,
            }
        });
    let mut feed = std::pin::pin!(feed);
    submit_and_claim(&direct).await;
    let first = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("an event before the stall")
        .unwrap();
    assert_eq!(first.kind(), "active");
    // wait_for_work works through the proxy before the stall.
    proxied
        .wait_for_work(Duration::from_millis(100))
        .await
        .unwrap();

    proxy.stall();
    // wait_for_work errs within its deadline (1 s block + 3 s default margin), then recovers.
    let started = Instant::now();
    assert!(proxied.wait_for_work(BLOCK).await.is_err());
    assert!(started.elapsed() < BLOCK + Duration::from_secs(3) + SLACK);
    proxied.wait_for_work(BLOCK).await.unwrap();

    // An event written during the stall reaches the feed once it has reconnected: within one
    // block (5 s) + margin (3 s) + the 1 s pause before reconnecting.
    let id = submit_and_claim(&direct).await;
    let started = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(15), feed.next())
        .await
        .expect("the feed resumed after the stall")
        .unwrap();
    assert_eq!((&*next.job_id, next.kind()), (id.as_str(), "active"));
    eprintln!(
        "stalled feed resumed after {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
