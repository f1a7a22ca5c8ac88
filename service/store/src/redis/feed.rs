//! The live event feed of one api process: follows the pipeline's event stream with
//! `XREAD BLOCK` from its current end and survives connection loss by resuming from the last id
//! it saw. Stream entries carry only the job id, the event's number and its kind; the rendered
//! text lives once, in the job's history, and is read from there (one pipelined `LRANGE` per
//! followed job and batch) only for the jobs this process's followers want.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::Value;

use super::BlockingConn;
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
    /// n - 1): one `LRANGE` per job over the numbers this batch holds, all in one pipeline. An
    /// event whose history is gone (trimmed) or unreadable is left out; its followers notice
    /// the gap and catch up from the history themselves.
    async fn with_texts(&mut self, entries: Vec<Entry>) -> Vec<StoredEvent> {
        let mut ranges: Vec<(String, u64, u64)> = Vec::new();
        for entry in entries.iter().filter(|e| e.data.is_none()) {
            match ranges.iter_mut().find(|(job, _, _)| *job == entry.job) {
                Some(range) => {
                    range.1 = range.1.min(entry.seq);
                    range.2 = range.2.max(entry.seq);
                }
                None => ranges.push((entry.job.clone(), entry.seq, entry.seq)),
            }
        }
        let mut texts: Vec<(String, u64, Vec<Vec<u8>>)> = Vec::new();
        if !ranges.is_empty() {
            let mut pipe = redis::pipe();
            for (job, first, last) in &ranges {
                let (from, to) = (first.saturating_sub(1), last.saturating_sub(1));
                pipe.lrange(self.keys.job_events(job), from as isize, to as isize);
            }
            // On the feed's own connection, which has just answered: the texts of an event are
            // read over the link that brought it.
            match self.conn.query_pipeline::<Vec<Vec<Vec<u8>>>>(&pipe).await {
                Ok(lists) => {
                    for ((job, first, _), list) in ranges.into_iter().zip(lists) {
                        texts.push((job, first, list));
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
                        let (_, first, list) =
                            texts.iter().find(|(job, _, _)| *job == entry.job)?;
                        let text = list.get(entry.seq.checked_sub(*first)? as usize)?;
                        Bytes::copy_from_slice(text)
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
