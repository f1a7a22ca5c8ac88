//! A multiplexed connection that replaces itself: the shared handle for one node and for the
//! Sentinel master.
//!
//! Like redis-rs's `ConnectionManager`, but (1) a response timeout also counts as a broken
//! connection, so a connection that stalled without closing is replaced instead of timing out
//! forever, and (2) a new connection is made through [`ClientInner::open_node`], which for
//! Sentinel asks the sentinels for the current master, so a failover is followed. Connecting is
//! lazy and single-flight: the first command after a failure reconnects, concurrent ones wait for
//! it, and for a short while after a failed attempt commands fail at once instead of piling up
//! connection attempts on a Redis that is down.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisResult, Value};

use super::connection::{ClientInner, needs_new_connection};
use super::topology::TopologyKind;

/// How long commands fail fast after a failed connection attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// The connection in use and a number that changes whenever it is replaced, so a late error
/// from an old connection does not throw away a new one.
#[derive(Default)]
struct Current {
    generation: u64,
    conn: Option<MultiplexedConnection>,
}

pub(super) struct Reconnecting {
    client: Arc<ClientInner>,
    kind: TopologyKind,
    config: AsyncConnectionConfig,
    current: Mutex<Current>,
    /// Held while connecting; remembers the last failed attempt.
    connecting: tokio::sync::Mutex<Option<(Instant, RedisError)>>,
}

impl Reconnecting {
    pub(super) fn new(client: Arc<ClientInner>, kind: TopologyKind) -> Self {
        let config = client.options.async_config(client.options.response_timeout);
        Self {
            client,
            kind,
            config,
            current: Mutex::new(Current::default()),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) fn kind(&self) -> TopologyKind {
        self.kind
    }

    /// Connects now if not connected.
    pub(super) async fn connect_now(&self) -> RedisResult<()> {
        self.get().await.map(|_| ())
    }

    pub(super) async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.get().await?;
        let result = conn.req_packed_command(cmd).await;
        self.check(generation, &result);
        result
    }

    pub(super) async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.get().await?;
        let result = conn.req_packed_commands(pipeline, offset, count).await;
        self.check(generation, &result);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // The guarded data stays consistent even if a holder panicked.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_use(&self) -> Option<(u64, MultiplexedConnection)> {
        let current = self.lock();
        current.conn.clone().map(|c| (current.generation, c))
    }

    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(found) = self.in_use() {
            return Ok(found);
        }
        let mut last_failure = self.connecting.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(found) = self.in_use() {
            return Ok(found);
        }
        if let Some((at, error)) = last_failure.as_ref()
            && at.elapsed() < RETRY_AFTER_FAILURE
        {
            return Err(error.clone());
        }
        match self.client.open_node(&self.config).await {
            Ok(conn) => {
                *last_failure = None;
                let mut current = self.lock();
                current.generation += 1;
                current.conn = Some(conn.clone());
                Ok((current.generation, conn))
            }
            Err(error) => {
                *last_failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Drops the connection a failed command used if the error says it is broken.
    fn check<T>(&self, generation: u64, result: &RedisResult<T>) {
        if let Err(error) = result
            && needs_new_connection(error, self.kind)
        {
            let mut current = self.lock();
            if current.generation == generation && current.conn.is_some() {
                tracing::debug!(topology = %self.kind, error = %error, "replacing the Redis connection");
                current.conn = None;
            }
        }
    }
}
