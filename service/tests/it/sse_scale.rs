//! Acceptance: 1,000 concurrent SSE subscribers across 100 jobs in one api process all receive
//! their terminal events, and afterwards `/api/sse/stats` shows 0 connections.
//!
//! Set-up: redis-server, one `api` process and (later) one `worker` process. The 100 jobs are
//! enqueued while no worker runs, so they stay `waiting`; all 1,000 subscribers connect (10 per
//! job) and the stats must show them; only then does the worker start, so every terminal event is
//! delivered live through the hub's fan-out, not replayed from history.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{RedisServer, STUDY_TEXT, Service, SseEvent, http};
use serde_json::{Value, json};
use tokio::sync::{Barrier, Semaphore};

const JOBS: usize = 100;
const SUBSCRIBERS_PER_JOB: usize = 10;
const SUBSCRIBERS: usize = JOBS * SUBSCRIBERS_PER_JOB;
/// Sockets this process and the api process each need, with room for pipes, Redis and logs.
const FDS_NEEDED: u64 = SUBSCRIBERS as u64 + 512;

/// Soft and hard `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn nofile_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line.split_whitespace().filter_map(|w| {
        if w == "unlimited" {
            Some(u64::MAX)
        } else {
            w.parse().ok()
        }
    });
    Some((numbers.next()?, numbers.next()?))
}

/// Makes sure this process (and the service processes it spawns, which inherit the limit) may
/// open enough sockets. The soft limit is raised with util-linux `prlimit` when it is too low;
/// a hard limit that is too low fails the test with the reason.
fn ensure_fd_limit() {
    let Some((soft, hard)) = nofile_limits() else {
        return; // Not Linux /proc: trust the environment.
    };
    if soft >= FDS_NEEDED {
        return;
    }
    assert!(
        hard >= FDS_NEEDED,
        "the open-files hard limit ({hard}) is below the {FDS_NEEDED} this test needs; raise it \
         (ulimit -Hn) for the test run"
    );
    let target = hard.min(FDS_NEEDED * 4);
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={target}:"),
        ])
        .status();
    let (soft, _) = nofile_limits().unwrap_or((0, 0));
    assert!(
        soft >= FDS_NEEDED,
        "open-files soft limit is {soft}, below the {FDS_NEEDED} needed, and raising it with \
         `prlimit` failed ({status:?}); run `ulimit -n {target}` before the tests"
    );
}

/// Per-job detail of the stats is only for the admin.
const ADMIN_TOKEN: &str = "sse-scale-admin";

async fn sse_stats(api: &Service) -> Value {
    http()
        .get(api.url("/api/sse/stats"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /api/sse/stats")
        .json()
        .await
        .expect("stats JSON")
}

/// Checks one subscriber's events: `connected` first, job events with strictly increasing ids,
/// exactly one terminal event, and it is the last.
fn check_events(job: &str, events: &[SseEvent], ended: bool) -> Result<(), String> {
    if !ended {
        return Err(format!("stream of {job} did not end: {events:?}"));
    }
    let first = events
        .first()
        .ok_or_else(|| format!("no events for {job}"))?;
    if first.event != "connected" || first.data["jobId"] != job {
        return Err(format!(
            "first event of {job} is not `connected`: {first:?}"
        ));
    }
    let job_events: Vec<&SseEvent> = events
        .iter()
        .filter(|e| e.event != "heartbeat")
        .skip(1)
        .collect();
    let mut last_id = 0u64;
    for event in &job_events {
        let id: u64 = event
            .id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| format!("job event without numeric id for {job}: {event:?}"))?;
        if id <= last_id {
            return Err(format!("ids of {job} not increasing: {job_events:?}"));
        }
        last_id = id;
        if event.data["jobId"] != job {
            return Err(format!(
                "event for another job on {job}'s stream: {event:?}"
            ));
        }
    }
    let terminal: Vec<&&SseEvent> = job_events
        .iter()
        .filter(|e| matches!(e.event.as_str(), "completed" | "failed"))
        .collect();
    let last = job_events
        .last()
        .ok_or_else(|| format!("no job events for {job}"))?;
    if terminal.len() != 1 || last.event != "completed" {
        return Err(format!(
            "{job}: expected one `completed` event, last: {job_events:?}"
        ));
    }
    let cards = last.data["result"]["flashcards"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    if cards == 0 {
        return Err(format!(
            "{job}: completed without flashcards: {}",
            last.data
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_subscribers_across_hundred_jobs_all_get_terminal_events() {
    ensure_fd_limit();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let common = [
        "--redis-url",
        redis_url.as_str(),
        "--pipeline",
        "sse-scale",
        "--rate-limit-jobs",
        "0",
    ];
    let mut api_args = common.to_vec();
    api_args.extend([
        "--sse-heartbeat-seconds",
        "2",
        "--sse-max-connections",
        "5000",
    ]);
    let api = Service::start("api", &api_args, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let public: Value = http()
        .get(api.url("/api/sse/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        public.get("subscriptionsPerJob").is_none(),
        "which jobs are followed is not public: {public}"
    );

    // 100 jobs that stay waiting: no worker runs yet.
    let mut jobs = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        jobs.push(
            api.submit(
                &format!("{STUDY_TEXT} Sample number {i} is unique."),
                "scale",
            )
            .await,
        );
    }

    // 1,000 subscribers, 10 per job; each reports once it holds its `connected` event.
    let client = http();
    let connected = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let opening = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(SUBSCRIBERS);
    for n in 0..SUBSCRIBERS {
        let job = jobs[n % JOBS].clone();
        let url = api.url(&format!("/api/job-events?jobId={job}"));
        let (client, connected, opening) = (client.clone(), connected.clone(), opening.clone());
        tasks.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await.expect("semaphore");
            let response = client.get(&url).send().await;
            let response = match response {
                Ok(r) if r.status() == 200 => r,
                Ok(r) => {
                    connected.wait().await;
                    return Err(format!("{job}: HTTP {}", r.status()));
                }
                Err(e) => {
                    connected.wait().await;
                    return Err(format!("{job}: {e}"));
                }
            };
            let mut reader = SseReader::new(response);
            let first = reader.next(Duration::from_secs(60)).await;
            drop(permit);
            connected.wait().await;
            let mut events = match first {
                Ok(Some(event)) => vec![event],
                Ok(None) => return Err(format!("{job}: stream ended before `connected`")),
                Err(e) => return Err(format!("{job}: {e}")),
            };
            let ended = loop {
                match reader.next(Duration::from_secs(150)).await {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => break true,
                    Err(e) => return Err(format!("{job}: {e} after {events:?}")),
                }
            };
            check_events(&job, &events, ended).map(|()| job)
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), connected.wait())
        .await
        .expect("1,000 subscribers did not connect within 120 s");

    let stats = sse_stats(&api).await;
    assert_eq!(stats["connections"], json!(SUBSCRIBERS), "{stats}");
    assert_eq!(stats["subscribedJobs"], json!(JOBS), "{stats}");
    let per_job = stats["subscriptionsPerJob"]
        .as_object()
        .expect("subscriptionsPerJob");
    assert_eq!(per_job.len(), JOBS);
    assert!(
        per_job.values().all(|v| v == &json!(SUBSCRIBERS_PER_JOB)),
        "{stats}"
    );

    // Now the worker drains the queue; every subscriber must get its terminal event live.
    let mut worker_args = common.to_vec();
    worker_args.extend(["--worker-concurrency", "16", "--poll-interval-ms", "100"]);
    let worker = Service::start("worker", &worker_args, &[]).await;

    let mut delivered: HashMap<String, usize> = HashMap::new();
    let mut failures = Vec::new();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(180), task).await {
            Ok(Ok(Ok(job))) => *delivered.entry(job).or_default() += 1,
            Ok(Ok(Err(e))) => failures.push(e),
            Ok(Err(e)) => failures.push(format!("subscriber task panicked: {e}")),
            Err(_) => failures.push("subscriber timed out".to_owned()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {SUBSCRIBERS} subscribers failed; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(delivered.len(), JOBS);
    assert!(
        delivered.values().all(|&n| n == SUBSCRIBERS_PER_JOB),
        "{delivered:?}"
    );

    // All streams ended: the api holds no connection and no subscription.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = sse_stats(&api).await;
        if stats["connections"] == json!(0) || tokio::time::Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats["connections"], json!(0), "{stats}");
    assert_eq!(stats["subscribedJobs"], json!(0), "{stats}");
    assert!(stats["followersCaughtUp"].is_u64(), "{stats}");
    // connected + active + completed for each subscriber, at least.
    let sent = stats["eventsSent"].as_u64().unwrap_or(0);
    assert!(
        sent >= 3 * SUBSCRIBERS as u64,
        "eventsSent {sent} < {}: {stats}",
        3 * SUBSCRIBERS
    );
    drop(worker);
}

/// An SSE stream read event by event (the connection stays open between reads).
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the server ended the stream. Panics after `timeout`.
    async fn next(&mut self, timeout: Duration) -> Result<Option<SseEvent>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block) {
                    return Ok(Some(event));
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return Err(format!("no SSE event within {timeout:?}")),
                Ok(Err(e)) => return Err(format!("SSE read error: {e}")),
                Ok(Ok(None)) => return Ok(None),
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
            }
        }
    }
}

/// Parses one SSE block; blocks without `data` (comments, `retry:` only) give `None`.
fn parse_block(block: &str) -> Option<SseEvent> {
    let mut event = SseEvent {
        event: "message".into(),
        id: None,
        data: Value::Null,
    };
    let mut data: Option<String> = None;
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(v) = line.strip_prefix("event:") {
            event.event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("id:") {
            event.id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_owned()),
            }
        }
    }
    let data = data?;
    event.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
    Some(event)
}
