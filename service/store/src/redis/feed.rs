//! The live event feed of one api process: follows the pipeline's event stream with
//! `XREAD BLOCK` from its current end and survives connection loss by resuming from the last id
//! it saw. Entries carry the rendered event text, forwarded as shared bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::Value;

use super::BlockingConn;
use crate::{FeedItem, StoreResult, StoredEvent};

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
fn entries(reply: Value) -> (Vec<StoredEvent>, Option<String>) {
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
            match (job, seq, kind, data) {
                (Some(job), Some(seq), Some(kind), Some(data)) => events.push(StoredEvent {
                    job_id: Arc::from(job),
                    seq,
                    kind: Arc::from(kind),
                    data,
                }),
                _ => tracing::warn!("skipping an event stream entry without job, seq, type, data"),
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
    stream: String,
) -> StoreResult<BoxStream<'static, FeedItem>> {
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

/// Where the feed stands: its connection, the stream, and the id of the last entry seen.
struct Reader {
    conn: BlockingConn,
    stream: String,
    cursor: String,
}

impl Reader {
    /// One `XREAD`: its events, `Alive` when the block ran out with none, or nothing after a
    /// failure (logged; the next read opens a new connection and resumes from the cursor).
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
                let (events, last) = entries(reply);
                if let Some(last) = last {
                    self.cursor = last;
                }
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
}
