//! The real store connector: reads the Redis URL from the pipeline's Secret (by reference; the
//! URL is never logged or written anywhere) and keeps one `RedisStore` per pipeline.
//!
//! API load: a pipeline whose store works costs one Secret read per [`SecretTiming::ttl`]
//! (300 s), 0.2 requests a minute. When the store fails (the reconciler reports a failed read,
//! or connecting with the cached URL is refused) the next connect reads the Secret again, so a
//! rotated password is picked up in the same reconcile (the reconciler connects again at once
//! after reporting); while the Redis stays unreachable those reads happen at most once per
//! [`SecretTiming::retry`] (30 s), so an outage costs at most two reads a minute.
//!
//! A pipeline on the operator's Redis (no `spec.redis.urlSecretRef`) costs no Secret read: its
//! URL is the admin URL with the pipeline's own ACL user ([`crate::acl`]), and the user is
//! ensured (`ACL SETUSER` with the admin URL) before its first connection, after a rotation and
//! after every failure, since a restarted Redis or a promoted replica does not know it.

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

use crate::acl::{Credential, ManagedRedis};
use crate::crd::FlashcardPipeline;
use crate::state::{Connector, NO_ADMIN_URL, PipelineState};

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

/// Connects pipelines to their Redis. Each pipeline has its own slot, locked across its Secret
/// read and its connect (so one pipeline never reads its Secret or dials twice at once); the map
/// of slots is locked only to find or insert one, never across a network call, so a pipeline
/// whose Redis or Secret read hangs holds up nobody else.
pub struct RedisConnector {
    client: Client,
    timing: SecretTiming,
    slots: std::sync::Mutex<HashMap<String, Slot>>,
    /// The operator's Redis, for pipelines without a URL of their own.
    managed: Option<Arc<ManagedRedis>>,
}

/// One pipeline's connection state.
type Slot = Arc<Mutex<SlotState>>;

#[derive(Default)]
struct SlotState {
    /// `None`: nothing read yet.
    entry: Option<Entry>,
    /// The last consent check ([`crate::consent`]): when, and the refusals it found.
    consent: Option<(Instant, Vec<String>)>,
}

impl RedisConnector {
    pub fn new(client: Client) -> Self {
        Self::with_timing(client, SecretTiming::default())
    }

    pub fn with_timing(client: Client, timing: SecretTiming) -> Self {
        Self {
            client,
            timing,
            slots: std::sync::Mutex::new(HashMap::new()),
            managed: None,
        }
    }

    /// Serves pipelines without `spec.redis.urlSecretRef` from the operator's Redis.
    pub fn with_managed(mut self, managed: Option<Arc<ManagedRedis>>) -> Self {
        self.managed = managed;
        self
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of `key`, made if there is none.
    fn slot(&self, key: &str) -> Slot {
        self.slots().entry(key.to_owned()).or_default().clone()
    }

    /// The Redis URL from the pipeline's Secret; `Ok(Err(why))` when the Secret does not consent
    /// to the pipeline (then no connection is kept, however well it works).
    async fn read_url(
        &self,
        p: &FlashcardPipeline,
        ns: &str,
    ) -> Result<Result<String, String>, String> {
        let Some(r) = &p.spec.redis.url_secret_ref else {
            return Err(NO_ADMIN_URL.to_owned());
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = api
            .get(&r.name)
            .await
            .map_err(|e| format!("secret {}: {e}", r.name))?;
        if !crate::consent::consents(secret.labels()) {
            return Ok(Err(crate::consent::refusal(&r.name)));
        }
        let bytes = secret
            .data
            .and_then(|d| d.get(&r.key).cloned())
            .ok_or_else(|| format!("secret {} has no key {}", r.name, r.key))?;
        String::from_utf8(bytes.0)
            .map(Ok)
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
        entry: &mut Option<Entry>,
        p: &FlashcardPipeline,
        ns: &str,
    ) -> Result<(), String> {
        let url = match self.read_url(p, ns).await? {
            Ok(url) => url,
            Err(refused) => {
                *entry = None;
                return Err(refused);
            }
        };
        match entry {
            Some(e) if e.url == url => {
                e.read_at = Instant::now();
                e.failed = false;
            }
            _ => {
                *entry = Some(Entry {
                    url,
                    read_at: Instant::now(),
                    failed: false,
                    store: None,
                });
            }
        }
        Ok(())
    }
}

impl RedisConnector {
    /// [`Connector::connect`] for a pipeline on the operator's Redis.
    async fn connect_managed(
        &self,
        managed: &ManagedRedis,
        p: &FlashcardPipeline,
        key: &str,
        pipeline: &PipelineId,
    ) -> Result<Arc<dyn PipelineState>, String> {
        let credential = managed.credential(p).map_err(|e| e.to_string())?;
        let slot = self.slot(key);
        let mut state = slot.lock().await;
        let entry = &mut state.entry;
        let ensure = entry
            .as_ref()
            .is_none_or(|e| e.url != credential.url || e.failed || e.store.is_none());
        if ensure {
            managed
                .ensure(p)
                .await
                .map_err(|e| format!("cannot make the pipeline's Redis user: {e}"))?;
            match entry {
                // The store reconnects by itself now that its user exists again.
                Some(e) if e.url == credential.url => e.failed = false,
                _ => {
                    *entry = Some(Entry {
                        url: credential.url,
                        read_at: Instant::now(),
                        failed: false,
                        store: None,
                    })
                }
            }
        }
        Self::store_of(entry, pipeline).await
    }

    /// The entry's store, or a new one on its URL (a store that failed reconnects by itself;
    /// only a new URL replaces it).
    async fn store_of(
        entry: &mut Option<Entry>,
        pipeline: &PipelineId,
    ) -> Result<Arc<dyn PipelineState>, String> {
        let Some(entry) = entry.as_mut() else {
            return Err("no Redis URL".into());
        };
        if let Some(store) = &entry.store {
            return Ok(store.clone());
        }
        let store = Self::open(&entry.url, pipeline).await?;
        entry.store = Some(store.clone());
        Ok(store)
    }
}

#[async_trait]
impl Connector for RedisConnector {
    async fn connect(&self, p: &FlashcardPipeline) -> Result<Arc<dyn PipelineState>, String> {
        let ns = p.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", p.name_any());
        // The namespace is part of the keys: same-named pipelines of two namespaces never meet.
        let pipeline = PipelineId::new(Some(&ns), &p.name_any()).map_err(|e| e.to_string())?;
        if p.spec.redis.managed() {
            let Some(managed) = &self.managed else {
                return Err(NO_ADMIN_URL.to_owned());
            };
            return self.connect_managed(managed, p, &key, &pipeline).await;
        }
        let slot = self.slot(&key);
        let mut state = slot.lock().await;
        let entry = &mut state.entry;
        if entry.as_ref().is_none_or(|e| e.read_due(&self.timing))
            && let Err(e) = self.refresh(entry, p, &ns).await
        {
            match entry.as_mut() {
                // The API server did not answer, but the store works: keep it, read later.
                Some(entry) if entry.store.is_some() && !entry.failed => {
                    tracing::warn!(pipeline = %key, error = %e, "cannot read the Redis Secret; keeping the connection");
                    entry.read_at = Instant::now();
                }
                _ => return Err(e),
            }
        }
        Self::store_of(entry, &pipeline).await
    }

    async fn forget(&self, key: &str) {
        // A connect in flight keeps its slot alive until it ends; the map no longer knows it, so
        // its result is dropped with it.
        self.slots().remove(key);
    }

    async fn report_failure(&self, p: &FlashcardPipeline) {
        let key = p.key();
        let slot = self.slots().get(&key).cloned();
        if let Some(slot) = slot
            && let Some(e) = slot.lock().await.entry.as_mut()
        {
            e.failed = true;
        }
    }

    async fn refused_secrets(&self, p: &FlashcardPipeline) -> Result<Vec<String>, String> {
        let key = p.key();
        let slot = self.slot(&key);
        let mut state = slot.lock().await;
        if let Some((at, refused)) = &state.consent {
            // Consent is trusted as long as a Secret read; a refusal is looked at again soon,
            // so labelling the Secret takes effect within the retry interval.
            let trusted = if refused.is_empty() {
                self.timing.ttl
            } else {
                self.timing.retry
            };
            if at.elapsed() < trusted {
                return Ok(refused.clone());
            }
        }
        let refused = crate::consent::refused(&self.client, p)
            .await
            .map_err(|e| format!("cannot read the Secrets' labels: {e}"))?;
        state.consent = Some((Instant::now(), refused.clone()));
        Ok(refused)
    }

    fn credential(&self, p: &FlashcardPipeline) -> Result<Option<Credential>, String> {
        if !p.spec.redis.managed() {
            return Ok(None);
        }
        let managed = self
            .managed
            .as_ref()
            .ok_or_else(|| NO_ADMIN_URL.to_owned())?;
        managed.credential(p).map(Some).map_err(|e| e.to_string())
    }

    async fn retire(&self, p: &FlashcardPipeline) -> Result<(), String> {
        match &self.managed {
            Some(managed) if p.spec.redis.managed() => managed
                .retire(p)
                .await
                .map_err(|e| format!("cannot delete the pipeline's Redis user: {e}")),
            _ => Ok(()),
        }
    }
}
