//! The "work arrived" signals of one follower: `XREAD BLOCK` on the pipeline's `signals` stream
//! (written by `submit.lua` when a job finds the waiting list empty), from its end at the time
//! of the call, resuming from the last id seen after a connection loss, so a signal written
//! while the follower reconnects is still delivered.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use redis::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::BlockingConn;
use crate::StoreResult;

/// Longest block of one `XREAD`; bounds how long a dropped follower keeps its connection.
pub(super) const SIGNAL_BLOCK: Duration = Duration::from_secs(5);
/// Entries read per call (the stream is capped near 100).
const SIGNAL_BATCH: usize = 128;
/// Pause after a failed read before the next one (on a fresh connection).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The id of the newest entry of `stream`, or `0-0` when it is empty or missing.
async fn newest_id(conn: &mut BlockingConn, stream: &str) -> StoreResult<String> {
    let mut cmd = redis::cmd("XREVRANGE");
    cmd.arg(stream).arg("+").arg("-").arg("COUNT").arg(1);
    let newest: Value = conn.query(&cmd, Duration::ZERO).await?;
    let id = match newest {
        Value::Array(items) => items.into_iter().next().and_then(|entry| match entry {
            Value::Array(parts) => parts.into_iter().next().and_then(|id| match id {
                Value::BulkString(b) => String::from_utf8(b).ok(),
                Value::SimpleString(s) => Some(s),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    };
    Ok(id.unwrap_or_else(|| "0-0".to_owned()))
}

/// Starts the reader of one follower. Each item is the number of signals read in one `XREAD`.
pub(super) async fn work_signals(
    mut conn: BlockingConn,
    stream: String,
) -> StoreResult<BoxStream<'static, u64>> {
    // Start after the newest entry now: what was signalled before the follower existed is
    // already in the queue counts its first reconcile reads.
    let mut cursor = newest_id(&mut conn, &stream).await?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            if tx.is_closed() {
                return;
            }
            match conn
                .xread_block(&stream, &cursor, SIGNAL_BATCH, SIGNAL_BLOCK)
                .await
            {
                Ok(Some(reply)) => {
                    let mut read = 0u64;
                    for key in reply.keys {
                        for entry in key.ids {
                            read += 1;
                            cursor = entry.id;
                        }
                    }
                    if read > 0 && tx.send(read).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // The next read opens a new connection and resumes from `cursor`.
                    tracing::warn!(error = %e, "signals stream read failed; reconnecting");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx).boxed())
}
