//! Per-pipeline Redis ACL users: with an admin connection, one user per pipeline whose key
//! pattern is the pipeline's own hash tag (`~fc:{<namespace>.<name>}:*`), no Pub/Sub channels,
//! and every command except the administrative and dangerous ones (`FLUSHALL`, `CONFIG`,
//! `KEYS`, `DEBUG`, ...), the script cache's `FLUSH`/`KILL` and `FUNCTION` (which would reach
//! other tenants' scripts). Key patterns are checked for every command, including the ones a
//! script runs, so a pipeline's pods holding this credential get `NOPERM` on any other
//! pipeline's keys and cannot stop another tenant's scripts.
//! `SCAN` is allowed (the purge script uses it): such a user can list other pipelines' key names,
//! never read or change them.
//!
//! A pipeline that leaves out `spec.redis.urlSecretRef` uses the operator's Redis (the admin URL
//! the operator was given, `--redis-admin-url`) through its own user: [`ManagedRedis`] derives the
//! user's password, makes the user before the pipeline's store is used, and deletes it with the
//! pipeline. The password is an HMAC of the pipeline's identity (namespace, name, uid and the
//! value of [`ROTATE_ANNOTATION`]) keyed by the admin URL, so the operator never stores or reads
//! it back: every pass can ensure the same user, a re-created pipeline (new uid) gets a new
//! password, changing the annotation rotates it, and changing the admin credential rotates
//! every pipeline's.
//!
//! ACL users live in the server's memory: Redis does not replicate them and forgets them on a
//! restart (unless an `aclfile` is saved). The operator ensures the user again whenever the
//! pipeline's store fails, so after a restart or a failover to a master that never had the user
//! the pods are let in again within one reconcile. On a Redis Cluster `ACL SETUSER`/`DELUSER` go
//! to every node.

use flashcard_core::hex;
use flashcard_core::keyspace::{Keyspace, PipelineId};
use flashcard_store::redis::{RedisClient, Topology, topology};
use kube::ResourceExt;
use redis::aio::ConnectionLike;

use crate::crd::FlashcardPipeline;

/// Changing this annotation's value (any value, e.g. a date) rotates the pipeline's password;
/// the pods roll to pick up the new one.
pub const ROTATE_ANNOTATION: &str = "flashcards.dev/rotate-redis-credential";

/// Why an ACL change failed.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the Redis admin URL: {0}")]
    Url(#[from] flashcard_store::redis::TopologyError),
    #[error("the Redis admin URL has no password: the pipelines' users would be guessable")]
    NoPassword,
    #[error("the pipeline's name is not a Redis hash tag: {0}")]
    Pipeline(#[from] flashcard_core::keyspace::InvalidPipelineName),
}

/// The ACL user of a pipeline: `fc-<namespace>.<name>` (the pipeline's hash tag).
pub fn user_name(pipeline: &PipelineId) -> String {
    format!("fc-{}", pipeline.tag())
}

/// The rules of a pipeline's user, after `reset` (which starts from no keys, no channels, no
/// commands, no password, disabled).
fn rules(pipeline: &PipelineId, password: &str) -> Vec<String> {
    let pattern = format!("~{}*", Keyspace::new(pipeline).prefix());
    [
        "reset",
        "on",
        &format!(">{password}"),
        &pattern,
        "resetchannels",
        "+@all",
        "-@admin",
        "-@dangerous",
        "-script|flush",
        "-script|kill",
        "-function",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// What a pipeline's pods use to reach the operator's Redis. `Debug` never shows the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The admin URL with the pipeline's user and password instead of the admin's.
    pub url: String,
    /// A short hash of the password: the pod template's annotation, so a rotation rolls the pods.
    pub fingerprint: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The operator's Redis, reached with an admin URL; makes and deletes the pipelines' users.
/// `Debug` never shows the URL.
pub struct ManagedRedis {
    admin_url: String,
    key: ring::hmac::Key,
}

impl std::fmt::Debug for ManagedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedRedis").finish_non_exhaustive()
    }
}

impl ManagedRedis {
    /// Checks the admin URL (any topology; it must carry a password). Connects to nothing yet.
    pub fn new(admin_url: &str) -> Result<Self, AclError> {
        let has_password = match Topology::parse(admin_url)? {
            Topology::Single(info) => info.redis_settings().password().is_some(),
            Topology::Cluster(c) => c.credentials.password.is_some(),
            Topology::Sentinel(s) => s.credentials.password.is_some(),
        };
        if !has_password {
            return Err(AclError::NoPassword);
        }
        // Refuses a unix socket now rather than at the first pipeline.
        topology::with_credentials(admin_url, "check", "check")?;
        Ok(Self {
            admin_url: admin_url.trim().to_owned(),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, admin_url.trim().as_bytes()),
        })
    }

    fn id(p: &FlashcardPipeline) -> Result<PipelineId, AclError> {
        Ok(PipelineId::new(p.namespace().as_deref(), &p.name_any())?)
    }

    /// The pipeline's password: HMAC-SHA256 of its namespace, name, uid and rotation value.
    pub fn password(&self, p: &FlashcardPipeline) -> String {
        let rotation = p.annotations().get(ROTATE_ANNOTATION).cloned();
        let message = [
            "flashcards.dev/redis-user/v1".to_owned(),
            p.namespace().unwrap_or_default(),
            p.name_any(),
            p.uid().unwrap_or_default(),
            rotation.unwrap_or_default(),
        ]
        .join("\0");
        hex(ring::hmac::sign(&self.key, message.as_bytes()).as_ref())
    }

    /// The URL and fingerprint the pipeline's pods get (no network call).
    pub fn credential(&self, p: &FlashcardPipeline) -> Result<Credential, AclError> {
        let id = Self::id(p)?;
        let password = self.password(p);
        let url = topology::with_credentials(&self.admin_url, &user_name(&id), &password)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
        Ok(Credential {
            url,
            fingerprint: hex(&digest.as_ref()[..8]),
        })
    }

    async fn admin(&self) -> Result<flashcard_store::redis::RedisConn, AclError> {
        Ok(RedisClient::open(&self.admin_url)?.connect().await?)
    }

    /// Makes the pipeline's user with its current password (or resets it to that password).
    pub async fn ensure(&self, p: &FlashcardPipeline) -> Result<(), AclError> {
        let id = Self::id(p)?;
        ensure_user(&mut self.admin().await?, &id, &self.password(p)).await
    }

    /// Deletes the pipeline's user (and its connections).
    pub async fn retire(&self, p: &FlashcardPipeline) -> Result<(), AclError> {
        let id = Self::id(p)?;
        delete_user(&mut self.admin().await?, &id).await
    }
}

/// Makes the pipeline's user with `password`, or resets an existing one to it (a rotation: the
/// old password stops working at once; connections already authenticated stay open).
pub async fn ensure_user(
    admin: &mut impl ConnectionLike,
    pipeline: &PipelineId,
    password: &str,
) -> Result<(), AclError> {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user_name(pipeline))
        .arg(rules(pipeline, password))
        .query_async(admin)
        .await?;
    Ok(())
}

/// Deletes the pipeline's user and closes its connections (a deleted pipeline's pods lose
/// access at once). Deleting a user that does not exist is not an error.
pub async fn delete_user(
    admin: &mut impl ConnectionLike,
    pipeline: &PipelineId,
) -> Result<(), AclError> {
    let _: u64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(user_name(pipeline))
        .query_async(admin)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_reaches_only_its_pipelines_keys() {
        let p = PipelineId::new(Some("study"), "biology").unwrap();
        assert_eq!(user_name(&p), "fc-study.biology");
        let r = rules(&p, "pw");
        assert_eq!(&r[..3], ["reset", "on", ">pw"]);
        assert!(r.contains(&"~fc:{study.biology}:*".to_owned()), "{r:?}");
        assert!(!r.iter().any(|x| x.starts_with('&')), "no channels: {r:?}");
    }

    fn pipeline(name: &str, uid: &str, rotation: Option<&str>) -> FlashcardPipeline {
        let mut p = crate::render::test_support::minimal();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("study".into());
        p.metadata.uid = Some(uid.into());
        if let Some(r) = rotation {
            p.annotations_mut()
                .insert(ROTATE_ANNOTATION.into(), r.into());
        }
        p
    }

    #[test]
    fn passwords_follow_the_pipeline_its_rotation_and_the_admin_credential() {
        let admin = ManagedRedis::new("redis://:admin@redis.db:6380/2").unwrap();
        let p = pipeline("biology", "u1", None);
        let pw = admin.password(&p);
        assert_eq!(pw.len(), 64);
        assert_eq!(pw, admin.password(&p.clone()), "the same every pass");
        let others = [
            admin.password(&pipeline("chemistry", "u1", None)),
            admin.password(&pipeline("biology", "u2", None)),
            admin.password(&pipeline("biology", "u1", Some("2026-12-07"))),
            ManagedRedis::new("redis://:other@redis.db:6380/2")
                .unwrap()
                .password(&p),
        ];
        for other in others {
            assert_ne!(pw, other);
        }
        let c = admin.credential(&p).unwrap();
        assert_eq!(
            c.url,
            format!("redis://fc-study.biology:{pw}@redis.db:6380/2")
        );
        assert_eq!(c.fingerprint.len(), 16);
        assert!(!format!("{c:?}{admin:?}").contains(&pw));
        assert!(!format!("{admin:?}").contains("admin"));
    }

    #[test]
    fn an_admin_url_without_a_password_is_refused() {
        assert!(matches!(
            ManagedRedis::new("redis://redis.db:6379"),
            Err(AclError::NoPassword)
        ));
        assert!(ManagedRedis::new("unix:///tmp/r.sock?pass=x").is_err());
        assert!(ManagedRedis::new("redis+cluster://:pw@h1:7000,h2:7000").is_ok());
    }
}
