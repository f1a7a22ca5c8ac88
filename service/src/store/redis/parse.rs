//! Turns Redis replies (hash fields, event JSON, stream entries) back into store types.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use redis::streams::StreamReadReply;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::job::{JobRecord, JobState};
use crate::keyspace::{job_field, kill_switch_field, spend_field, worker_field};
use crate::store::{KillSwitch, SetBy, Spend, StoreError, StoreResult, StoredEvent, WorkerInfo};

use super::BlockingConn;

/// Entries read from the event stream per call.
const FEED_BATCH: usize = 1000;
/// Longest block of one `XREAD`; bounds how long a closed feed lingers.
pub(super) const FEED_BLOCK: Duration = Duration::from_secs(5);
/// Buffered events between the stream reader and the api's fan-out.
const FEED_BUFFER: usize = 4096;

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

pub(super) fn job_record(fields: Vec<(String, String)>) -> StoreResult<JobRecord> {
    let map: HashMap<String, String> = fields.into_iter().collect();
    let get = |name: &str| map.get(name).map(String::as_str);
    let number = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
    let id = get(job_field::ID)
        .ok_or_else(|| corrupt("job without id"))?
        .to_owned();
    let state = get(job_field::STATE)
        .and_then(JobState::parse)
        .ok_or_else(|| corrupt(format!("job {id} has no valid state")))?;
    let request = get(job_field::REQUEST)
        .ok_or_else(|| corrupt(format!("job {id} has no request")))
        .and_then(|r| serde_json::from_str(r).map_err(|e| corrupt(format!("job {id}: {e}"))))?;
    let result = match get(job_field::RESULT) {
        Some(r) => Some(serde_json::from_str(r).map_err(|e| corrupt(format!("job {id}: {e}")))?),
        None => None,
    };
    Ok(JobRecord {
        state,
        request,
        attempts_made: number(job_field::ATTEMPTS).unwrap_or(0) as u32,
        max_attempts: number(job_field::MAX_ATTEMPTS).unwrap_or(1) as u32,
        stalls: number(job_field::STALLS).unwrap_or(0) as u32,
        created_at: number(job_field::CREATED_AT).unwrap_or(0),
        started_at: number(job_field::STARTED_AT),
        finished_at: number(job_field::FINISHED_AT),
        result,
        error: get(job_field::ERROR).map(str::to_owned),
        event_seq: number(job_field::EVENT_SEQ).unwrap_or(0),
        id,
    })
}

pub(super) fn event(job_id: &str, text: &str) -> StoreResult<StoredEvent> {
    let body: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(format!("event of {job_id}: {e}")))?;
    let seq = body
        .get("seq")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| corrupt(format!("event of {job_id} without seq")))?;
    Ok(StoredEvent {
        job_id: job_id.to_owned(),
        seq,
        body,
    })
}

pub(super) fn worker_info(id: String, fields: Vec<(String, String)>) -> WorkerInfo {
    let map: HashMap<String, String> = fields.into_iter().collect();
    let get = |name: &str| map.get(name).cloned().unwrap_or_default();
    WorkerInfo {
        pod: get(worker_field::POD),
        active: get(worker_field::ACTIVE).parse().unwrap_or(0),
        concurrency: get(worker_field::CONCURRENCY).parse().unwrap_or(0),
        breaker: get(worker_field::BREAKER),
        draining: get(worker_field::DRAINING) == "true",
        last_seen: get(worker_field::LAST_SEEN).parse().unwrap_or(0),
        id,
    }
}

pub(super) fn kill_switch(fields: Vec<(String, String)>) -> KillSwitch {
    let map: HashMap<String, String> = fields.into_iter().collect();
    KillSwitch {
        enabled: map.get(kill_switch_field::ENABLED).map(String::as_str) == Some("true"),
        reason: map.get(kill_switch_field::REASON).cloned(),
        set_by: map
            .get(kill_switch_field::SET_BY)
            .and_then(|s| SetBy::parse(s)),
        since: map
            .get(kill_switch_field::SINCE)
            .and_then(|s| s.parse().ok()),
    }
}

pub(super) fn spend(fields: Vec<(String, String)>) -> Spend {
    let map: HashMap<String, String> = fields.into_iter().collect();
    let number = |name: &str| {
        map.get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            .max(0) as u64
    };
    Spend {
        spent_micros: number(spend_field::SPENT_MICROS),
        reserved_micros: number(spend_field::RESERVED_MICROS),
        input_tokens: number(spend_field::INPUT_TOKENS),
        output_tokens: number(spend_field::OUTPUT_TOKENS),
        jobs: number(spend_field::JOBS),
    }
}

/// Starts the stream reader of one process: it follows the pipeline's event stream from its
/// current end and survives connection loss by resuming from the last id it saw. Each read has a
/// deadline (block + margin), so a stalled connection is replaced instead of hanging.
pub(super) async fn event_feed(
    mut conn: BlockingConn,
    stream: String,
) -> StoreResult<BoxStream<'static, StoredEvent>> {
    // Start after the newest entry now, so nothing written after this call is missed.
    let mut newest_cmd = redis::cmd("XREVRANGE");
    newest_cmd
        .arg(&stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    let newest: Vec<(String, Vec<(String, String)>)> =
        conn.query(&newest_cmd, Duration::ZERO).await?;
    let mut cursor = newest
        .first()
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| "0-0".to_owned());
    let (tx, rx) = mpsc::channel(FEED_BUFFER);
    tokio::spawn(async move {
        loop {
            if tx.is_closed() {
                return;
            }
            let reply: redis::RedisResult<Option<StreamReadReply>> = conn
                .xread_block(&stream, &cursor, FEED_BATCH, FEED_BLOCK)
                .await;
            match reply {
                Ok(Some(reply)) => {
                    for key in reply.keys {
                        for entry in key.ids {
                            cursor = entry.id.clone();
                            let job: Option<String> = entry.get("job");
                            let text: Option<String> = entry.get("event");
                            let (Some(job), Some(text)) = (job, text) else {
                                continue;
                            };
                            match event(&job, &text) {
                                Ok(ev) => {
                                    if tx.send(ev).await.is_err() {
                                        return;
                                    }
                                }
                                Err(e) => tracing::warn!(error = %e, "skipping corrupt event"),
                            }
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // The next read opens a new connection.
                    tracing::warn!(error = %e, "event stream read failed; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx).boxed())
}
