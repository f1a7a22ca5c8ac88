//! The Redis keyspace: the one place that names every key the api, worker and operator share.
//!
//! All keys of one pipeline live under the hash tag `{<pipeline>}` (`fc:{biology}:waiting`, ...), so
//! a pipeline maps to a single Redis Cluster slot and every Lua script may touch all of them.
//!
//! | key | type | contents |
//! | --- | --- | --- |
//! | `waiting` | LIST | job ids ready to run, oldest at the head |
//! | `active` | ZSET | job id -> lease deadline (ms since epoch) |
//! | `delayed` | ZSET | job id -> time the retry is due (ms) |
//! | `completed` / `failed` | ZSET | job id -> finish time (ms); retention trims them |
//! | `job:<id>` | HASH | the job record (see [`job_field`]) |
//! | `job:<id>:events` | LIST | the job's events (JSON), in order; replayed for `Last-Event-ID` |
//! | `events` | STREAM | every job event of the pipeline, read by each api pod for live fan-out |
//! | `idem:<key>` | STRING | job id for an `Idempotency-Key` |
//! | `wake` | LIST | markers pushed on enqueue so idle workers wake up at once |
//! | `workers` | ZSET | worker id -> heartbeat expiry (ms) |
//! | `worker:<id>` | HASH | worker info: pod, active jobs, concurrency, breaker state |
//! | `killswitch` | HASH | `enabled`, `reason`, `setBy`, `since` |
//! | `spend:<period>` | HASH | spend of one budget period (see [`spend_field`]) |
//! | `outcomes:<minute>` | HASH | `completed` / `failed` final outcomes in that minute (expires) |
//! | `rate:<user>:<window>` | STRING | jobs submitted by a user in one rate-limit window |

use std::fmt;

/// A pipeline name that is safe inside a hash tag: 1-63 chars of `[a-z0-9-]`, like a Kubernetes name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineName(String);

/// The pipeline name was rejected.
#[derive(Debug, thiserror::Error)]
#[error("invalid pipeline name {0:?}: use 1-63 characters of a-z, 0-9 and '-'")]
pub struct InvalidPipelineName(pub String);

impl PipelineName {
    pub fn new(name: &str) -> Result<Self, InvalidPipelineName> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidPipelineName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PipelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names the keys of one pipeline.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    pub fn new(pipeline: &PipelineName) -> Self {
        Self {
            prefix: format!("fc:{{{pipeline}}}:"),
        }
    }

    /// The common prefix (`fc:{<pipeline>}:`); Lua scripts derive per-job keys from it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    pub fn waiting(&self) -> String {
        self.key("waiting")
    }
    pub fn active(&self) -> String {
        self.key("active")
    }
    pub fn delayed(&self) -> String {
        self.key("delayed")
    }
    pub fn completed(&self) -> String {
        self.key("completed")
    }
    pub fn failed(&self) -> String {
        self.key("failed")
    }
    pub fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }
    pub fn job_events(&self, id: &str) -> String {
        self.key(&format!("job:{id}:events"))
    }
    pub fn events(&self) -> String {
        self.key("events")
    }
    pub fn idempotency(&self, key: &str) -> String {
        self.key(&format!("idem:{key}"))
    }
    pub fn wake(&self) -> String {
        self.key("wake")
    }
    pub fn workers(&self) -> String {
        self.key("workers")
    }
    pub fn worker(&self, id: &str) -> String {
        self.key(&format!("worker:{id}"))
    }
    pub fn kill_switch(&self) -> String {
        self.key("killswitch")
    }
    pub fn spend(&self, period: &str) -> String {
        self.key(&format!("spend:{period}"))
    }
    pub fn outcomes(&self, minute: u64) -> String {
        self.key(&format!("outcomes:{minute}"))
    }
    pub fn rate_limit(&self, user: &str, window: u64) -> String {
        self.key(&format!("rate:{user}:{window}"))
    }
}

/// Fields of the `job:<id>` hash.
pub mod job_field {
    pub const ID: &str = "id";
    pub const STATE: &str = "state";
    pub const REQUEST: &str = "request";
    pub const ATTEMPTS: &str = "attempts";
    pub const MAX_ATTEMPTS: &str = "maxAttempts";
    pub const STALLS: &str = "stalls";
    pub const CREATED_AT: &str = "createdAt";
    pub const STARTED_AT: &str = "startedAt";
    pub const FINISHED_AT: &str = "finishedAt";
    pub const RESULT: &str = "result";
    pub const ERROR: &str = "error";
    pub const LEASE: &str = "lease";
    pub const WORKER: &str = "worker";
    pub const EVENT_SEQ: &str = "eventSeq";
    pub const IDEMPOTENCY_KEY: &str = "idempotencyKey";
}

/// Fields of the `worker:<id>` hash.
pub mod worker_field {
    pub const POD: &str = "pod";
    pub const ACTIVE: &str = "active";
    pub const CONCURRENCY: &str = "concurrency";
    pub const BREAKER: &str = "breaker";
    pub const DRAINING: &str = "draining";
    pub const LAST_SEEN: &str = "lastSeen";
}

/// Fields of the `killswitch` hash.
pub mod kill_switch_field {
    pub const ENABLED: &str = "enabled";
    pub const REASON: &str = "reason";
    pub const SET_BY: &str = "setBy";
    pub const SINCE: &str = "since";
}

/// Fields of a `spend:<period>` hash; money in integer micro-dollars.
pub mod spend_field {
    pub const SPENT_MICROS: &str = "spentMicros";
    pub const RESERVED_MICROS: &str = "reservedMicros";
    pub const INPUT_TOKENS: &str = "inputTokens";
    pub const OUTPUT_TOKENS: &str = "outputTokens";
    pub const JOBS: &str = "jobs";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let ks = Keyspace::new(&PipelineName::new("biology").unwrap());
        for key in [
            ks.waiting(),
            ks.job("abc"),
            ks.events(),
            ks.spend("2026-11"),
        ] {
            assert!(key.starts_with("fc:{biology}:"), "{key}");
        }
    }

    #[test]
    fn pipeline_names_are_validated() {
        assert!(PipelineName::new("default").is_ok());
        assert!(PipelineName::new("").is_err());
        assert!(PipelineName::new("a}b").is_err());
        assert!(PipelineName::new("Upper").is_err());
        assert!(PipelineName::new(&"a".repeat(64)).is_err());
    }
}
