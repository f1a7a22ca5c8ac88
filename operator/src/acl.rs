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
//! This module is the Redis side: making, rotating and deleting a user, and the URL the
//! pipeline's pods would use. The reconciler does not call it yet (see the README: pipelines get
//! their own credentials by hand for now).

use std::fmt::Write as _;

use flashcard_core::keyspace::{Keyspace, PipelineId};
use redis::aio::ConnectionLike;

/// Why an ACL change failed.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the admin URL is not a URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("the admin URL cannot carry credentials")]
    NoCredentials,
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

/// A new random password: 32 bytes, hex.
pub fn new_password() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
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

/// The URL the pipeline's pods use: the admin URL with the pipeline's user and password instead
/// of the admin's (same scheme, host, port, database and options).
pub fn user_url(
    admin_url: &str,
    pipeline: &PipelineId,
    password: &str,
) -> Result<String, AclError> {
    let mut url = url::Url::parse(admin_url)?;
    url.set_username(&user_name(pipeline))
        .map_err(|()| AclError::NoCredentials)?;
    url.set_password(Some(password))
        .map_err(|()| AclError::NoCredentials)?;
    Ok(url.into())
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

    #[test]
    fn the_url_keeps_everything_but_the_credentials() {
        let p = PipelineId::new(Some("study"), "biology").unwrap();
        assert_eq!(
            user_url("rediss://:admin@redis.db:6380/2", &p, "s3cret").unwrap(),
            "rediss://fc-study.biology:s3cret@redis.db:6380/2"
        );
        assert!(user_url("not a url", &p, "x").is_err());
        let pw = new_password();
        assert_eq!(pw.len(), 64);
        assert_ne!(pw, new_password());
    }
}
