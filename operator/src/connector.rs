//! The real store connector: reads the Redis URL from the pipeline's Secret (by reference; the
//! URL is never logged or written anywhere) and keeps one `RedisStore` per pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flashcard_service::keyspace::PipelineId;
use flashcard_service::store::redis::RedisStore;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

use crate::crd::FlashcardPipeline;
use crate::state::{Connector, PipelineState};

/// How long a Secret read is trusted before it is read again (a rotated URL reconnects).
pub const SECRET_TTL: Duration = Duration::from_secs(60);
/// Longest wait for a new Redis connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Entry {
    url_fingerprint: u64,
    checked: Instant,
    store: Arc<RedisStore>,
}

/// Connects pipelines to their Redis.
pub struct RedisConnector {
    client: Client,
    stores: Mutex<HashMap<String, Entry>>,
}

impl RedisConnector {
    pub fn new(client: Client) -> Self {
        Self {
            client,
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
}

fn fingerprint(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[async_trait]
impl Connector for RedisConnector {
    async fn connect(&self, p: &FlashcardPipeline) -> Result<Arc<dyn PipelineState>, String> {
        let ns = p.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", p.name_any());
        let mut stores = self.stores.lock().await;
        if let Some(e) = stores.get(&key)
            && e.checked.elapsed() < SECRET_TTL
        {
            return Ok(e.store.clone());
        }
        let url = self.read_url(p, &ns).await?;
        let fp = fingerprint(&url);
        if let Some(e) = stores.get_mut(&key)
            && e.url_fingerprint == fp
        {
            e.checked = Instant::now();
            return Ok(e.store.clone());
        }
        // The namespace is part of the keys: same-named pipelines of two namespaces never meet.
        let pipeline = PipelineId::new(Some(&ns), &p.name_any()).map_err(|e| e.to_string())?;
        let store = tokio::time::timeout(CONNECT_TIMEOUT, RedisStore::connect(&url, &pipeline))
            .await
            .map_err(|_| "redis: connect timed out".to_owned())?
            // The error text is logged and put in status: it names the failure, never the URL.
            .map_err(|e| format!("redis: {e}"))?;
        let store = Arc::new(store);
        stores.insert(
            key,
            Entry {
                url_fingerprint: fp,
                checked: Instant::now(),
                store: store.clone(),
            },
        );
        Ok(store)
    }

    async fn forget(&self, key: &str) {
        self.stores.lock().await.remove(key);
    }
}
