//! Failover with jobs flowing: an `api` and two `worker` processes of the real binary on (a) a
//! 3-master + 3-replica Redis Cluster and (b) a Sentinel setup (master, replica, three
//! sentinels), a producer submitting jobs over HTTP the whole time, and the master that owns the
//! pipeline's slot (cluster) or the Sentinel master SIGKILLed mid-stream.
//!
//! What must hold:
//! - every HTTP request answers within [`CLIENT_TIMEOUT`] (a timeout counts as a failure), and
//!   the answer is either `202` or `503` with `Retry-After` and the JSON body
//!   `{"code": "STORE_UNAVAILABLE", "error": ...}`: never a 500, never a hang;
//! - submissions succeed again (202) within [`RESUME`] of the promotion, and stay successful;
//! - every job that got a 202 ends exactly once: it is `completed` or `failed`, and its event
//!   history holds exactly one terminal event;
//! - jobs lost because the replica had not received them yet (the 202 was sent, then the master
//!   died before replicating) are counted and printed, and bounded by [`MAX_LOST`].
//!
//! Figures (time to promotion, the 503 window, time to resume, lost jobs) are printed; run with
//! `cargo test -p flashcard-service --test it redis_failover -- --nocapture` to see them.
//!
//! Needs `redis-server`, `redis-sentinel` and `redis-cli` (`.ci/install-test-tools.sh`); a
//! missing binary fails the tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{RedisCluster, RedisSentinel, STUDY_TEXT, Service};
use flashcard_core::job::JobState;
use flashcard_core::keyspace::{Keyspace, PipelineId};
use flashcard_store::Store;
use flashcard_store::redis::RedisStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PIPELINE: &str = "drill";
const NAMESPACE: &str = "failover";
/// Longest wait for any HTTP answer: "never hangs". The store's own deadlines are shorter.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);
/// Submissions succeed again within this long after the promotion (the number).
const RESUME: Duration = Duration::from_secs(10);
/// Time between two submissions of the producer: 25 jobs/s.
const SUBMIT_EVERY: Duration = Duration::from_millis(40);
/// Jobs flowing (and some finished) before the kill.
const WARM_UP: Duration = Duration::from_secs(3);
/// Submissions must keep succeeding for this long after they resumed.
const STEADY: Duration = Duration::from_secs(3);
/// Longest wait for a promotion (node timeout / down-after are 2 s; the machine is loaded).
const PROMOTION: Duration = Duration::from_secs(30);
/// Longest wait, after the producer stopped, for every accepted job to end.
const DRAIN: Duration = Duration::from_secs(40);
/// Acknowledged jobs that may be lost to asynchronous replication in one failover.
///
/// Redis replicates asynchronously: the master answers a script and feeds the replication
/// stream in the same event-loop turn, and both go out in the next write pass, so a SIGKILL can
/// only drop the writes of the master's last few milliseconds, and only those of them whose
/// 202 left before the replica's copy did. At 25 jobs/s that is 0 almost always and 1 rarely;
/// more than 3 would mean something else than replication lag (a promotion of a stale replica,
/// a write that went to the wrong node), so the test fails then. The count is printed either
/// way.
const MAX_LOST: usize = 3;
/// `cluster-node-timeout` of the cluster drill: longer than the store's 3 s response timeout, so
/// the failover outlasts what a request may wait and the api has to refuse (503) rather than
/// only wait it out; a shorter failover is ridden out by redis-rs's retries and answers 202.
const CLUSTER_NODE_TIMEOUT_MS: u64 = 6000;

fn pipeline() -> PipelineId {
    PipelineId::new(Some(NAMESPACE), PIPELINE).expect("valid pipeline id")
}

/// A key in the pipeline's hash slot (every key of the pipeline shares its hash tag).
fn slot_key() -> String {
    Keyspace::new(&pipeline()).waiting()
}

fn client() -> reqwest::Client {
    crate::support::init_tls();
    reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("HTTP client")
}

async fn start(mode: &str, url: &str, extra: &[&str]) -> Service {
    let mut args = vec![
        "--redis-url",
        url,
        "--pipeline",
        PIPELINE,
        "--pipeline-namespace",
        NAMESPACE,
        "--rate-limit-jobs",
        "0",
        "--lease-ms",
        "3000",
        "--max-stalls",
        "5",
        "--backoff-ms",
        "200",
    ];
    args.extend_from_slice(extra);
    Service::start(mode, &args, &[]).await
}

/// The answer to one submission.
#[derive(Debug, Clone)]
enum Answer {
    Accepted(String),
    /// 503 with `Retry-After` and the `STORE_UNAVAILABLE` JSON body.
    Unavailable,
    /// Anything else: a wrong status, a 503 without `Retry-After` or with another body.
    Wrong(String),
    Timeout,
    /// The connection failed (the api process is never restarted, so this is a failure too).
    Transport(String),
}

#[derive(Debug, Clone)]
struct Request {
    sent: Instant,
    answered: Instant,
    answer: Answer,
}

async fn classify(response: reqwest::Result<reqwest::Response>) -> Answer {
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Answer::Timeout,
        Err(e) => return Answer::Transport(e.to_string()),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(e) if e.is_timeout() => return Answer::Timeout,
        Err(e) => return Answer::Wrong(format!("{status} with a body that is not JSON: {e}")),
    };
    match status {
        202 => match body["jobId"].as_str() {
            Some(id) => Answer::Accepted(id.to_owned()),
            None => Answer::Wrong(format!("202 without jobId: {body}")),
        },
        503 if retry_after.is_some_and(|s| s >= 1)
            && body["code"] == "STORE_UNAVAILABLE"
            && body["error"].is_string() =>
        {
            Answer::Unavailable
        }
        _ => Answer::Wrong(format!("{status} (Retry-After {retry_after:?}): {body}")),
    }
}

/// Submits a job every [`SUBMIT_EVERY`] until `stop`, each request on its own task (a slow
/// answer never slows the producer down), and records every answer.
fn producer(api: &Service, stop: CancellationToken) -> (tokio::task::JoinHandle<()>, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let url = api.url("/api/ai/generate-flashcards");
    let http = client();
    let task = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SUBMIT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut requests = tokio::task::JoinSet::new();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                tick.tick().await;
                n += 1;
                let body = json!({
                    "content": STUDY_TEXT, "subject": "biology", "topic": "cells",
                    "userId": format!("user-{}", n % 50), "cardCount": 3,
                });
                let (http, url, log) = (http.clone(), url.clone(), log.clone());
                requests.spawn(async move {
                    let sent = Instant::now();
                    let answer = classify(http.post(&url).json(&body).send().await).await;
                    log.lock().unwrap().push(Request {
                        sent,
                        answered: Instant::now(),
                        answer,
                    });
                });
                while requests.try_join_next().is_some() {}
            }
            while requests.join_next().await.is_some() {}
        })
    };
    (task, log)
}

type Log = Arc<Mutex<Vec<Request>>>;

/// Polls a job's status endpoint the whole time: reads must not hang or 500 either.
fn status_prober(
    api: &Service,
    job_id: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<String>> {
    let url = api.url(&format!("/api/job-status/{job_id}"));
    let http = client();
    tokio::spawn(async move {
        let mut wrong = Vec::new();
        while !stop.is_cancelled() {
            let started = Instant::now();
            match http.get(&url).send().await {
                Ok(r) if r.status() == 200 => {}
                Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {}
                Ok(r) => wrong.push(format!("status read answered {}", r.status())),
                Err(e) => wrong.push(format!(
                    "status read failed after {:?}: {e}",
                    started.elapsed()
                )),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wrong
    })
}

async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one drill measured.
struct Figures {
    promotion: Duration,
    unavailable: usize,
    window: Option<(Duration, Duration)>,
    resumed: Duration,
    accepted: usize,
    lost: Vec<String>,
    completed: usize,
    failed: usize,
    slowest: Duration,
}

/// The drill: api + two workers on `url`, jobs flowing, `kill` the master, wait for
/// `promoted`, then check the answers and every accepted job.
async fn drill(
    label: &str,
    url: &str,
    kill: impl FnOnce() -> u16,
    promoted: impl FnOnce(u16) -> (u16, Duration),
) -> Figures {
    let mut api = start("api", url, &[]).await;
    let workers = [
        "--worker-concurrency",
        "4",
        "--simulated-latency-ms",
        "100",
        "--poll-interval-ms",
        "200",
        "--heartbeat-ms",
        "1000",
    ];
    let mut worker_processes = [
        start("worker", url, &workers).await,
        start("worker", url, &workers).await,
    ];
    let store = RedisStore::connect(url, &pipeline())
        .await
        .expect("store for checks");

    let stop = CancellationToken::new();
    let (producer, log) = producer(&api, stop.clone());
    // Jobs are flowing: accepted and completed before the kill.
    wait_until(
        "jobs accepted and completed before the kill",
        Duration::from_secs(30),
        async || store.counts().await.is_ok_and(|c| c.completed >= 10),
    )
    .await;
    tokio::time::sleep(WARM_UP).await;
    let first_job = log
        .lock()
        .unwrap()
        .iter()
        .find_map(|r| match &r.answer {
            Answer::Accepted(id) => Some(id.clone()),
            _ => None,
        })
        .expect("a job was accepted before the kill");
    let prober = status_prober(&api, first_job, stop.clone());

    let killed_at = Instant::now();
    let old = tokio::task::block_in_place(kill);
    let (new, promotion) = tokio::task::block_in_place(|| promoted(old));
    let promoted_at = Instant::now();
    assert_ne!(new, old, "{label}: a new master took over");

    // Submissions succeed again, and keep succeeding for STEADY.
    let resumed_at = loop {
        let first_ok = log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.sent >= promoted_at && matches!(r.answer, Answer::Accepted(_)))
            .map(|r| r.answered)
            .min();
        if let Some(at) = first_ok {
            break at;
        }
        assert!(
            promoted_at.elapsed() < RESUME + CLIENT_TIMEOUT,
            "{label}: no submission accepted within {RESUME:?} of the promotion"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(STEADY).await;
    stop.cancel();
    producer.await.expect("producer");
    let status_wrong = prober.await.expect("status prober");
    let requests = log.lock().unwrap().clone();

    // Every answer was in time, and a 202 or a proper 503.
    let mut problems: Vec<String> = Vec::new();
    for r in &requests {
        let at = r.sent.saturating_duration_since(killed_at).as_secs_f64();
        let sent = if r.sent >= killed_at {
            format!("{at:.2}s after the kill")
        } else {
            "before the kill".to_owned()
        };
        match &r.answer {
            Answer::Accepted(_) | Answer::Unavailable => {}
            Answer::Timeout => problems.push(format!("request sent {sent} timed out")),
            Answer::Wrong(what) => problems.push(format!("request sent {sent}: {what}")),
            Answer::Transport(e) => problems.push(format!("request sent {sent}: {e}")),
        }
    }
    problems.extend(status_wrong);
    let slowest = requests
        .iter()
        .map(|r| r.answered - r.sent)
        .max()
        .unwrap_or_default();

    let unavailable: Vec<&Request> = requests
        .iter()
        .filter(|r| matches!(r.answer, Answer::Unavailable))
        .collect();
    let window = unavailable
        .iter()
        .map(|r| r.answered)
        .min()
        .zip(unavailable.iter().map(|r| r.answered).max())
        .map(|(a, b)| {
            (
                a.saturating_duration_since(killed_at),
                b.saturating_duration_since(killed_at),
            )
        });
    let resumed = resumed_at.saturating_duration_since(promoted_at);
    // Once resumed, submissions keep succeeding (2 s of slack for stragglers sent just before).
    let late_failures = requests
        .iter()
        .filter(|r| r.sent > resumed_at + Duration::from_secs(2))
        .filter(|r| !matches!(r.answer, Answer::Accepted(_)))
        .count();
    if late_failures > 0 {
        problems.push(format!(
            "{late_failures} submissions failed after submissions had resumed"
        ));
    }

    // Every accepted job ends exactly once (or was lost to replication: counted below).
    let accepted: Vec<String> = requests
        .iter()
        .filter_map(|r| match &r.answer {
            Answer::Accepted(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let mut unique = accepted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        accepted.len(),
        "{label}: a job id was answered twice"
    );
    let mut states: HashMap<String, Option<JobState>> = HashMap::new();
    let drain_deadline = Instant::now() + DRAIN;
    loop {
        let mut pending = 0;
        for id in &accepted {
            if matches!(
                states.get(id),
                Some(Some(JobState::Completed | JobState::Failed))
            ) {
                continue;
            }
            let state = match store.job(id).await {
                Ok(job) => job.map(|j| j.state),
                Err(_) => Some(JobState::Waiting),
            };
            if !matches!(state, None | Some(JobState::Completed | JobState::Failed)) {
                pending += 1;
            }
            states.insert(id.clone(), state);
        }
        if pending == 0 {
            break;
        }
        if Instant::now() > drain_deadline {
            let stuck: BTreeMap<&String, &Option<JobState>> = states
                .iter()
                .filter(|(_, s)| !matches!(s, None | Some(JobState::Completed | JobState::Failed)))
                .take(10)
                .collect();
            panic!("{label}: {pending} accepted jobs did not end within {DRAIN:?}: {stuck:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lost: Vec<String> = accepted
        .iter()
        .filter(|id| matches!(states.get(*id), Some(None)))
        .cloned()
        .collect();
    let mut completed = 0;
    let mut failed = 0;
    for id in accepted.iter().filter(|id| !lost.contains(id)) {
        let events = store.events_after(id, 0).await.expect("events");
        let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
        let terminal = kinds
            .iter()
            .filter(|k| matches!(**k, "completed" | "failed"))
            .count();
        if terminal != 1 {
            problems.push(format!("job {id} ended {terminal} times: {kinds:?}"));
        }
        match states.get(id) {
            Some(Some(JobState::Completed)) => completed += 1,
            _ => failed += 1,
        }
    }
    // No process gave up on the way: the api and both workers are still running.
    for (name, process) in
        std::iter::once(("api", &mut api)).chain(worker_processes.iter_mut().map(|w| ("worker", w)))
    {
        if let Ok(Some(status)) = process.child.0.try_wait() {
            problems.push(format!(
                "the {name} process exited during the drill: {status}"
            ));
        }
    }
    let figures = Figures {
        promotion,
        unavailable: unavailable.len(),
        window,
        resumed,
        accepted: accepted.len(),
        lost,
        completed,
        failed,
        slowest,
    };
    report(label, &figures, requests.len(), killed_at, promoted_at);
    assert!(
        problems.is_empty(),
        "{label}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        figures.unavailable > 0,
        "{label}: no 503 during a failover that outlasted the store's deadline"
    );
    assert!(
        resumed <= RESUME,
        "{label}: submissions resumed {resumed:?} after the promotion (> {RESUME:?})"
    );
    assert!(
        figures.lost.len() <= MAX_LOST,
        "{label}: {} acknowledged jobs lost (> {MAX_LOST}): {:?}",
        figures.lost.len(),
        figures.lost
    );
    figures
}

fn report(label: &str, f: &Figures, requests: usize, killed_at: Instant, promoted_at: Instant) {
    let window = match f.window {
        Some((from, to)) => format!(
            "{} answers 503 between {:.2}s and {:.2}s after the kill",
            f.unavailable,
            from.as_secs_f64(),
            to.as_secs_f64()
        ),
        None => "no 503 (every request during the failover waited it out)".to_owned(),
    };
    println!(
        "{label} failover: promotion {:.2}s after the kill; {window}; submissions resumed {:.2}s \
         after the promotion; slowest answer {:.2}s; {requests} requests, {} accepted: {} \
         completed, {} failed, {} lost to asynchronous replication {:?} (test ran {:.1}s after \
         the kill, {:.1}s after the promotion)",
        f.promotion.as_secs_f64(),
        f.resumed.as_secs_f64(),
        f.slowest.as_secs_f64(),
        f.accepted,
        f.completed,
        f.failed,
        f.lost.len(),
        f.lost,
        killed_at.elapsed().as_secs_f64(),
        promoted_at.elapsed().as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_of_the_pipeline_slot_killed_while_jobs_flow() {
    let mut cluster = tokio::task::block_in_place(|| {
        RedisCluster::start_with_node_timeout(CLUSTER_NODE_TIMEOUT_MS)
    });
    let url = cluster.url();
    let key = slot_key();
    let cluster = Mutex::new(&mut cluster);
    drill(
        "cluster",
        &url,
        || cluster.lock().unwrap().kill_master_of(&key),
        |old| {
            cluster
                .lock()
                .unwrap()
                .wait_for_promotion(&key, old, PROMOTION)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_killed_while_jobs_flow() {
    let mut setup = tokio::task::block_in_place(RedisSentinel::start);
    let url = setup.url();
    let setup = Mutex::new(&mut setup);
    drill(
        "sentinel",
        &url,
        || setup.lock().unwrap().kill_master(),
        |old| setup.lock().unwrap().wait_for_failover(old, PROMOTION),
    )
    .await;
}
