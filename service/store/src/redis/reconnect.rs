//! A connection that replaces itself: behind the shared handle of every topology.
//!
//! Like redis-rs's `ConnectionManager`, but (1) a response timeout also counts as a broken
//! connection, so a connection that stalled without closing is replaced instead of timing out
//! forever, and (2) a new connection is made through [`ClientInner::open_shared`], which for
//! Sentinel asks the sentinels for the current master, so a failover is followed. On a cluster
//! the connection is redis-rs's `ClusterConnection`, which itself reconnects lost nodes and
//! follows redirects; it is replaced only after a timeout. Connecting is lazy and single-flight:
//! the first command after a failure reconnects, concurrent ones wait for it, and for a short
//! while after a failed attempt commands fail at once instead of piling up connection attempts
//! on a Redis that is down.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

use super::connection::{ClientInner, needs_new_connection};
use super::topology::TopologyKind;

/// One live connection; clones share it.
#[derive(Clone)]
pub(super) enum Shared {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Shared {
    async fn command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Node(conn) => conn.req_packed_command(cmd).await,
            Self::Cluster(conn) => conn.req_packed_command(cmd).await,
        }
    }

    async fn pipeline(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Self::Node(conn) => conn.req_packed_commands(pipeline, offset, count).await,
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count).await,
        }
    }
}

/// How long commands fail fast after a failed connection attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// The connection in use and a number that changes whenever it is replaced, so a late error
/// from an old connection does not throw away a new one.
#[derive(Default)]
struct Current {
    generation: u64,
    conn: Option<Shared>,
}

pub(super) struct Reconnecting {
    client: Arc<ClientInner>,
    kind: TopologyKind,
    current: Mutex<Current>,
    /// Held while connecting; remembers the last failed attempt.
    connecting: tokio::sync::Mutex<Option<(Instant, RedisError)>>,
}

impl Reconnecting {
    pub(super) fn new(client: Arc<ClientInner>, kind: TopologyKind) -> Self {
        Self {
            client,
            kind,
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
        let result = conn.command(cmd).await;
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
        let result = conn.pipeline(pipeline, offset, count).await;
        self.check(generation, &result);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // The guarded data stays consistent even if a holder panicked.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_use(&self) -> Option<(u64, Shared)> {
        let current = self.lock();
        current.conn.clone().map(|c| (current.generation, c))
    }

    async fn get(&self) -> RedisResult<(u64, Shared)> {
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
        match self.client.open_shared().await {
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
