//! The live event feed of one api process: follows the pipeline's event stream with
//! `XREAD BLOCK` from its current end and survives connection loss by resuming from the last id
//! it saw. Stream entries carry only the job id, the event's number and its kind; the rendered
//! text lives once, in the job's history, and is read from there (one pipelined `LRANGE` per
//! followed job and batch) only for the jobs this process's followers want.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::Value;

use super::{BlockingConn, history};
use crate::{FeedInterest, FeedItem, StoreResult, StoredEvent};
use flashcard_core::keyspace::Keyspace;

/// Entries read from the event stream per call.
const FEED_BATCH: usize = 1000;
/// Longest block of one `XREAD`; bounds how long a closed feed lingers.
pub(super) const FEED_BLOCK: Duration = Duration::from_secs(5);

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Events of one `XREAD` reply, and the id of the last entry.
/// An entry of the stream: job, seq, kind (and the text, from writers that still put it there).
struct Entry {
    job: String,
    seq: u64,
    kind: String,
    data: Option<Bytes>,
}

fn entries(reply: Value) -> (Vec<Entry>, Option<String>) {
    let mut events = Vec::new();
    let mut last = None;
    let streams = match reply {
        Value::Array(streams) => streams,
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => return (events, last),
    };
    for stream in streams {
        // RESP2: [name, entries]; RESP3 maps give the entries directly.
        let list = match stream {
            Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
            other => Some(other),
        };
        let Some(Value::Array(list)) = list else {
            continue;
        };
        for entry in list {
            let Value::Array(mut parts) = entry else {
                continue;
            };
            if parts.len() != 2 {
                continue;
            }
            let fields = parts.pop();
            let id = parts.pop();
            if let Some(id) = id.as_ref().and_then(bulk) {
                last = Some(String::from_utf8_lossy(id).into_owned());
            }
            let Some(Value::Array(fields)) = fields else {
                continue;
            };
            let (mut job, mut seq, mut kind, mut data) = (None, None, None, None);
            for pair in fields.chunks(2) {
                let (Some(name), Some(value)) = (pair.first().and_then(bulk), pair.get(1)) else {
                    continue;
                };
                match name {
                    b"job" => job = bulk(value).map(|b| String::from_utf8_lossy(b).into_owned()),
                    b"seq" => {
                        seq = bulk(value)
                            .and_then(|b| std::str::from_utf8(b).ok())
                            .and_then(|s| s.parse::<u64>().ok())
                    }
                    b"type" => kind = bulk(value).map(|b| String::from_utf8_lossy(b).into_owned()),
                    b"data" => data = bulk(value).map(Bytes::copy_from_slice),
                    _ => {}
                }
            }
            match (job, seq, kind) {
                (Some(job), Some(seq), Some(kind)) => events.push(Entry {
                    job,
                    seq,
                    kind,
                    data,
                }),
                _ => tracing::warn!("skipping an event stream entry without job, seq, type"),
            }
        }
    }
    (events, last)
}

/// The stream reader of one process, as a stream its consumer (the api's fan-out) polls
/// directly: each poll past the last batch runs the next `XREAD` in the consumer's own task, so
/// an event reaches the followers with no hand-off between tasks on the way. Its connection has
/// a deadline of the block time plus a margin, so a stalled connection fails (and is replaced
/// on the next read) instead of hanging; the reader then resumes from the last id it saw.
/// Dropping the stream ends it.
pub(super) async fn event_feed(
    mut conn: BlockingConn,
    keys: Keyspace,
    interest: FeedInterest,
) -> StoreResult<BoxStream<'static, FeedItem>> {
    let stream = keys.events();
    // Start after the newest entry now, so nothing written after this call is missed.
    let mut newest_cmd = redis::cmd("XREVRANGE");
    newest_cmd
        .arg(&stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    let newest: Value = conn.query(&newest_cmd, Duration::ZERO).await?;
    let cursor = match &newest {
        Value::Array(items) => items
            .first()
            .and_then(|e| match e {
                Value::Array(parts) => parts.first().and_then(bulk),
                _ => None,
            })
            .map(|id| String::from_utf8_lossy(id).into_owned()),
        _ => None,
    }
    .unwrap_or_else(|| "0-0".to_owned());
    let reader = Reader {
        conn,
        keys,
        interest,
        stream,
        cursor,
    };
    Ok(futures::stream::unfold(reader, |mut reader| async move {
        let batch = reader.next_batch().await;
        Some((futures::stream::iter(batch), reader))
    })
    .flatten()
    .boxed())
}

/// What one batch read of a job's history: the texts from event `first` on, and the job's
/// result when it completed in the batch.
struct History {
    first: u64,
    texts: Vec<Vec<u8>>,
    result: Option<Vec<u8>>,
}

/// Where the feed stands: its connections, the stream, and the id of the last entry seen.
struct Reader {
    conn: BlockingConn,
    keys: Keyspace,
    interest: FeedInterest,
    stream: String,
    cursor: String,
}

impl Reader {
    async fn next_batch(&mut self) -> Vec<FeedItem> {
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(FEED_BATCH)
            .arg("BLOCK")
            .arg(FEED_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(&self.cursor);
        match self.conn.query::<Value>(&read, FEED_BLOCK).await {
            Ok(reply) => {
                let (entries, last) = entries(reply);
                if let Some(last) = last {
                    self.cursor = last;
                }
                let wanted: Vec<Entry> = entries
                    .into_iter()
                    .filter(|e| (self.interest)(&e.job))
                    .collect();
                let events = self.with_texts(wanted).await;
                if events.is_empty() {
                    vec![FeedItem::Alive]
                } else {
                    events.into_iter().map(FeedItem::Event).collect()
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "event stream read failed; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        }
    }

    /// Reads the texts of `entries` from their jobs' histories (event `seq` n sits at index
    /// n - 1): one `LRANGE` per job over the numbers this batch holds, and the result of each
    /// job completed in it (`completed` is stored without it), all in one transaction. An event
    /// whose history is gone (trimmed) or unreadable is left out; its followers notice the gap
    /// and catch up from the history themselves.
    async fn with_texts(&mut self, entries: Vec<Entry>) -> Vec<StoredEvent> {
        // Per job: the first and last number wanted, and whether it completed in this batch.
        let mut ranges: HashMap<&str, (u64, u64, bool)> = HashMap::new();
        for entry in entries.iter().filter(|e| e.data.is_none()) {
            let completed = entry.kind == history::COMPLETED;
            ranges
                .entry(entry.job.as_str())
                .and_modify(|(first, last, done)| {
                    *first = (*first).min(entry.seq);
                    *last = (*last).max(entry.seq);
                    *done |= completed;
                })
                .or_insert((entry.seq, entry.seq, completed));
        }
        let mut texts: HashMap<String, History> = HashMap::new();
        if !ranges.is_empty() {
            let jobs: Vec<(&str, (u64, u64, bool))> = ranges.into_iter().collect();
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (job, (first, last, _)) in &jobs {
                let (from, to) = (first.saturating_sub(1), last.saturating_sub(1));
                pipe.lrange(self.keys.job_events(job), from as isize, to as isize);
            }
            for (job, _) in jobs.iter().filter(|(_, (_, _, done))| *done) {
                pipe.hget(self.keys.job(job), "result");
            }
            // On the feed's own connection, which has just answered: the texts of an event are
            // read over the link that brought it.
            match self.conn.query_pipeline::<Vec<Value>>(&pipe).await {
                Ok(replies) => {
                    let mut replies = replies.into_iter();
                    let lists: Vec<Vec<Vec<u8>>> = (&mut replies)
                        .take(jobs.len())
                        .map(|list| redis::from_redis_value(list).unwrap_or_default())
                        .collect();
                    for ((job, (first, _, done)), list) in jobs.iter().zip(lists) {
                        let result = match done {
                            true => replies.next().and_then(|v| bulk(&v).map(<[u8]>::to_vec)),
                            false => None,
                        };
                        let history = History {
                            first: *first,
                            texts: list,
                            result,
                        };
                        texts.insert((*job).to_owned(), history);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read event texts; followers catch up");
                }
            }
        }
        entries
            .into_iter()
            .filter_map(|entry| {
                let data = match entry.data {
                    Some(data) => data,
                    None => {
                        let read = texts.get(&entry.job)?;
                        let text = read
                            .texts
                            .get(entry.seq.checked_sub(read.first)? as usize)?;
                        history::follower_text(
                            &entry.kind,
                            Bytes::copy_from_slice(text),
                            read.result.as_deref(),
                        )?
                    }
                };
                Some(StoredEvent {
                    job_id: Arc::from(entry.job),
                    seq: entry.seq,
                    kind: Arc::from(entry.kind),
                    data,
                })
            })
            .collect()
    }
}
