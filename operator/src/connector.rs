//! The real store connector: reads the Redis URL from the pipeline's Secret (by reference; the
//! URL is never logged or written anywhere) and keeps one `RedisStore` per pipeline.
//!
//! API load: a pipeline whose store works costs one Secret read per [`SecretTiming::ttl`]
//! (300 s), 0.2 requests a minute. When the store fails (the reconciler reports a failed read,
//! or connecting with the cached URL is refused) the next connect reads the Secret again, so a
//! rotated password is picked up in the same reconcile (the reconciler connects again at once
//! after reporting); while the Redis stays unreachable those reads happen at most once per
//! [`SecretTiming::retry`] (30 s), so an outage costs at most two reads a minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flashcard_core::keyspace::PipelineId;
use flashcard_store::redis::RedisStore;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::crd::FlashcardPipeline;
use crate::state::{Connector, PipelineState};

/// How long a Secret read is trusted while the store works (a rotated URL whose old password
/// still works is picked up after this long).
pub const SECRET_TTL: Duration = Duration::from_secs(300);
/// Shortest time between two Secret reads while the store fails.
pub const SECRET_RETRY: Duration = Duration::from_secs(30);
/// Longest wait for a new Redis connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// When the connector reads a pipeline's Secret again.
#[derive(Debug, Clone, Copy)]
pub struct SecretTiming {
    /// Trust a read this long while the store works.
    pub ttl: Duration,
    /// Read again at most this often while the store fails.
    pub retry: Duration,
}

impl Default for SecretTiming {
    fn default() -> Self {
        Self {
            ttl: SECRET_TTL,
            retry: SECRET_RETRY,
        }
    }
}

struct Entry {
    /// The URL last read (kept in memory only, to reconnect without an API request).
    url: String,
    /// When the Secret was last read.
    read_at: Instant,
    /// The store failed since that read.
    failed: bool,
    /// None: the last connection attempt with `url` failed.
    store: Option<Arc<RedisStore>>,
}

impl Entry {
    fn read_due(&self, timing: &SecretTiming) -> bool {
        let age = self.read_at.elapsed();
        let broken = self.failed || self.store.is_none();
        age >= timing.ttl || (broken && age >= timing.retry)
    }
}

/// Connects pipelines to their Redis.
pub struct RedisConnector {
    client: Client,
    timing: SecretTiming,
    stores: Mutex<HashMap<String, Entry>>,
}

impl RedisConnector {
    pub fn new(client: Client) -> Self {
        Self::with_timing(client, SecretTiming::default())
    }

    pub fn with_timing(client: Client, timing: SecretTiming) -> Self {
        Self {
            client,
            timing,
            stores: Mutex::new(HashMap::new()),
        }
    }

    async fn read_url(&self, p: &FlashcardPipeline, ns: &str) -> Result<String, String> {
        let r = &p.spec.redis.url_secret_ref;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = api
            .get(&r.name)
            .await
            .map_err(|e| format!("secret {}: {e}", r.name))?;
        let bytes = secret
            .data
            .and_then(|d| d.get(&r.key).cloned())
            .ok_or_else(|| format!("secret {} has no key {}", r.name, r.key))?;
        String::from_utf8(bytes.0)
            .map_err(|_| format!("secret {} key {} is not UTF-8", r.name, r.key))
    }

    /// A new store on `url`, bounded by [`CONNECT_TIMEOUT`].
    async fn open(url: &str, pipeline: &PipelineId) -> Result<Arc<RedisStore>, String> {
        let store = tokio::time::timeout(CONNECT_TIMEOUT, RedisStore::connect(url, pipeline))
            .await
            .map_err(|_| "redis: connect timed out".to_owned())?
            // The error text is logged and put in status: it names the failure, never the URL.
            .map_err(|e| format!("redis: {e}"))?;
        Ok(Arc::new(store))
    }

    /// Reads the Secret into `entry` (a new entry if there is none or the URL changed); the
    /// store is kept when the URL is the same.
    async fn refresh(
        &self,
        stores: &mut HashMap<String, Entry>,
        key: &str,
        p: &FlashcardPipeline,
        ns: &str,
    ) -> Result<(), String> {
        let url = self.read_url(p, ns).await?;
        match stores.get_mut(key) {
            Some(e) if e.url == url => {
                e.read_at = Instant::now();
                e.failed = false;
            }
            _ => {
                stores.insert(
                    key.to_owned(),
                    Entry {
                        url,
                        read_at: Instant::now(),
                        failed: false,
                        store: None,
                    },
                );
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for RedisConnector {
    async fn connect(&self, p: &FlashcardPipeline) -> Result<Arc<dyn PipelineState>, String> {
        let ns = p.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", p.name_any());
        // The namespace is part of the keys: same-named pipelines of two namespaces never meet.
        let pipeline = PipelineId::new(Some(&ns), &p.name_any()).map_err(|e| e.to_string())?;
        let mut stores = self.stores.lock().await;
        if stores.get(&key).is_none_or(|e| e.read_due(&self.timing))
            && let Err(e) = self.refresh(&mut stores, &key, p, &ns).await
        {
            match stores.get_mut(&key) {
                // The API server did not answer, but the store works: keep it, read later.
                Some(entry) if entry.store.is_some() && !entry.failed => {
                    tracing::warn!(pipeline = %key, error = %e, "cannot read the Redis Secret; keeping the connection");
                    entry.read_at = Instant::now();
                }
                _ => return Err(e),
            }
        }
        let Some(entry) = stores.get_mut(&key) else {
            return Err("no Redis URL".into());
        };
        if let Some(store) = &entry.store {
            // A store that failed reconnects by itself; only a new URL replaces it.
            return Ok(store.clone());
        }
        let store = Self::open(&entry.url, &pipeline).await?;
        entry.store = Some(store.clone());
        Ok(store)
    }

    async fn forget(&self, key: &str) {
        self.stores.lock().await.remove(key);
    }

    async fn report_failure(&self, p: &FlashcardPipeline) {
        let key = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
        if let Some(e) = self.stores.lock().await.get_mut(&key) {
            e.failed = true;
        }
    }
}
