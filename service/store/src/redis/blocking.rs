//! Blocking reads with deadlines: `BLPOP` on a wake list, `XREAD BLOCK` on an events stream.
//!
//! A blocking command holds its connection until it answers, so it gets a connection of its own
//! (on a cluster, a cluster connection of its own: redis-rs routes the command to the node owning
//! the key's slot and follows `MOVED` after a failover). Every call has a deadline of its block
//! time plus [`ConnectOptions::block_margin`](super::connection::ConnectOptions): a connection
//! that stalled without closing (half-open, a frozen proxy) makes the call fail with a timeout
//! error (`is_timeout()`) instead of hanging, and the next call opens a new connection (for
//! Sentinel, to the master the sentinels name then). Any error, and a call whose future is
//! dropped midway, retires the connection, so a late reply can never be read by the next call.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::streams::StreamReadReply;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult};

use super::connection::{ClientInner, timeout_error};

/// The shortest block sent to Redis: 0 would mean "block forever".
const MIN_BLOCK: Duration = Duration::from_millis(10);

enum Dedicated {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// What a call sends: one command, or a pipeline of non-blocking ones.
#[derive(Clone, Copy)]
enum Request<'a> {
    Cmd(&'a Cmd),
    Pipeline(&'a Pipeline),
}

impl Dedicated {
    async fn query<T: FromRedisValue>(&mut self, request: Request<'_>) -> RedisResult<T> {
        match (self, request) {
            (Self::Node(conn), Request::Cmd(cmd)) => cmd.query_async(conn).await,
            (Self::Cluster(conn), Request::Cmd(cmd)) => cmd.query_async(conn).await,
            (Self::Node(conn), Request::Pipeline(pipe)) => pipe.query_async(conn).await,
            (Self::Cluster(conn), Request::Pipeline(pipe)) => pipe.query_async(conn).await,
        }
    }
}

/// A dedicated connection for blocking reads; see the module docs. Not `Clone`: one blocking
/// reader per connection.
pub struct BlockingConn {
    client: Arc<ClientInner>,
    max_block: Duration,
    conn: Option<Dedicated>,
}

impl BlockingConn {
    pub(super) fn new(client: Arc<ClientInner>, max_block: Duration) -> Self {
        Self {
            client,
            max_block: max_block.max(MIN_BLOCK),
            conn: None,
        }
    }

    /// The longest block a call may ask for; longer ones are cut to it.
    pub fn max_block(&self) -> Duration {
        self.max_block
    }

    /// The deadline of a call that blocks for `block` (at most [`Self::max_block`]).
    pub fn deadline(&self, block: Duration) -> Duration {
        block.min(self.max_block) + self.client.options.block_margin
    }

    /// Runs `cmd`, which blocks Redis for at most `block` (pass zero for a command that does not
    /// block), and fails with a timeout error once `block + margin` has passed. Connects first
    /// if needed (bounded by the connection timeout).
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd, block: Duration) -> RedisResult<T> {
        self.send(Request::Cmd(cmd), block).await
    }

    /// Runs a pipeline of commands that do not block, with the same deadline rules.
    pub async fn query_pipeline<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> RedisResult<T> {
        self.send(Request::Pipeline(pipe), Duration::ZERO).await
    }

    async fn send<T: FromRedisValue>(
        &mut self,
        request: Request<'_>,
        block: Duration,
    ) -> RedisResult<T> {
        // Taken out for the call, put back only after a full answer: if this future is dropped
        // or fails, the connection goes with it.
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.open().await?,
        };
        let deadline = self.deadline(block);
        match tokio::time::timeout(deadline, conn.query(request)).await {
            Ok(Ok(value)) => {
                self.conn = Some(conn);
                Ok(value)
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(timeout_error("blocking Redis read passed its deadline")),
        }
    }

    /// `BLPOP key timeout`: the popped `(key, element)`, or `None` when `timeout` passed first.
    pub async fn blpop(
        &mut self,
        key: &str,
        timeout: Duration,
    ) -> RedisResult<Option<(String, String)>> {
        let block = timeout.clamp(MIN_BLOCK, self.max_block);
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(key).arg(block.as_secs_f64());
        self.query(&cmd, block).await
    }

    /// `XREAD COUNT count BLOCK block STREAMS stream after`: up to `count` entries after the id
    /// `after`, or `None` when `block` passed first.
    pub async fn xread_block(
        &mut self,
        stream: &str,
        after: &str,
        count: usize,
        block: Duration,
    ) -> RedisResult<Option<StreamReadReply>> {
        let block = block.clamp(MIN_BLOCK, self.max_block);
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(after);
        self.query(&cmd, block).await
    }

    async fn open(&self) -> RedisResult<Dedicated> {
        let response_timeout = self.max_block + self.client.options.block_margin;
        match self.client.cluster() {
            Some(cluster) => Ok(Dedicated::Cluster(
                self.client.open_cluster(cluster, response_timeout).await?,
            )),
            None => {
                let config = self.client.options.async_config(response_timeout);
                Ok(Dedicated::Node(self.client.open_node(&config).await?))
            }
        }
    }
}
