//! The Redis keyspace: the one place that names every key the api, worker and operator share.
//!
//! All keys of one pipeline live under one hash tag, `fc:{<namespace>.<pipeline>}:` (or
//! `fc:{<pipeline>}:` outside Kubernetes), so a pipeline maps to a single Redis Cluster slot,
//! every Lua script may touch all of its keys, and two pipelines of the same name in different
//! namespaces never share a key. Namespaces and pipeline names are DNS labels (`[a-z0-9-]`), so
//! the `.` between them cannot be forged by either part.
//!
//! | key | type | contents |
//! | --- | --- | --- |
//! | `waiting` | LIST | job ids ready to run, oldest at the head |
//! | `active` | ZSET | job id -> lease deadline (ms since epoch, Redis clock) |
//! | `delayed` | ZSET | job id -> time the retry is due (ms) |
//! | `completed` / `failed` | ZSET | job id -> finish time (ms); retention trims them |
//! | `job:<id>` | HASH | the job record (see [`job_field`]) |
//! | `job:<id>:events` | LIST | the job's events (rendered JSON), in order; replayed for `Last-Event-ID` |
//! | `events` | STREAM | every job event of the pipeline, read by each api pod for live fan-out |
//! | `idem:<digest>` | STRING | job id for an (owner, `Idempotency-Key`) pair |
//! | `wake` | LIST | markers pushed when work may be claimable, so idle workers wake at once |
//! | `signals` | STREAM | one entry per job submitted to an empty waiting list (capped near 100), followed by the operator to scale at once |
//! | `workers` | ZSET | worker id -> heartbeat expiry (ms) |
//! | `worker:<id>` | HASH | worker info: pod, active jobs, concurrency, breaker state |
//! | `killswitch` | HASH | see [`kill_switch_field`] |
//! | `budget` | HASH | the budget in force (see [`budget_field`]), written by the operator |
//! | `spend:<period>` | HASH | spend of one budget period (see [`spend_field`]) |
//! | `epoch` | STRING | identity of this store's data; a missing or new epoch means it was lost |
//! | `outcomes:<minute>` | HASH | `completed` / `failed` final outcomes in that minute (expires) |
//! | `rate:<digest>:<window>` | STRING | jobs submitted by one client in one rate-limit window |

use std::fmt;

/// A DNS-label-like name that is safe inside a hash tag: 1-63 chars of `[a-z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineName(String);

/// The pipeline name (or namespace) was rejected.
#[derive(Debug, thiserror::Error)]
#[error("invalid pipeline name or namespace {0:?}: use 1-63 characters of a-z, 0-9 and '-'")]
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

/// Which pipeline a store belongs to: its name and, in Kubernetes, its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineId {
    namespace: Option<PipelineName>,
    name: PipelineName,
}

impl PipelineId {
    /// A pipeline in a namespace (as the operator runs it). An empty namespace means none.
    pub fn new(namespace: Option<&str>, name: &str) -> Result<Self, InvalidPipelineName> {
        let namespace = match namespace.map(str::trim) {
            None | Some("") => None,
            Some(ns) => Some(PipelineName::new(ns)?),
        };
        Ok(Self {
            namespace,
            name: PipelineName::new(name)?,
        })
    }

    /// The pipeline's name (the `pipeline` metric label).
    pub fn name(&self) -> &PipelineName {
        &self.name
    }

    pub fn namespace(&self) -> Option<&PipelineName> {
        self.namespace.as_ref()
    }

    /// The hash tag's content: `<namespace>.<name>`, or `<name>` without a namespace.
    pub fn tag(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}.{}", self.name),
            None => self.name.to_string(),
        }
    }
}

impl From<PipelineName> for PipelineId {
    fn from(name: PipelineName) -> Self {
        Self {
            namespace: None,
            name,
        }
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// Names the keys of one pipeline.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    pub fn new(pipeline: &PipelineId) -> Self {
        Self {
            prefix: format!("fc:{{{}}}:", pipeline.tag()),
        }
    }

    /// The common prefix (`fc:{<tag>}:`): every key of the pipeline starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A pattern matching every key of the pipeline (for `SCAN`), with glob characters escaped.
    pub fn pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 1);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Jobs submitted before fair queuing (no `client` field): claimed when no client is ready.
    pub fn waiting(&self) -> String {
        self.key("waiting")
    }
    pub fn active(&self) -> String {
        self.key("active")
    }
    /// Fair queuing's ring: the clients with waiting work that may start another job, each
    /// at most once, in turn order.
    pub fn ready(&self) -> String {
        self.key("clients:ready")
    }
    /// One client's waiting jobs; `client` comes from [`client_digest`].
    pub fn client_queue(&self, client: &str) -> String {
        format!("{}{client}", self.client_queue_prefix())
    }
    /// Prefix of the clients' waiting lists: claims, recovery and cancellation derive a
    /// client's list from it and the job's `client` field.
    pub fn client_queue_prefix(&self) -> String {
        self.key("clients:queue:")
    }
    /// Active jobs per client (client -> count; a client with none has no field).
    pub fn client_active(&self) -> String {
        self.key("clients:active")
    }
    /// Clients out of the ring at their concurrency cap until one of their jobs ends.
    pub fn held(&self) -> String {
        self.key("clients:held")
    }
    /// How many jobs wait in the clients' lists (the queue depth, with `waiting`).
    pub fn queued(&self) -> String {
        self.key("clients:queued")
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
    /// Cancelled jobs by cancellation time (kept, and trimmed, like finished ones).
    pub fn cancelled(&self) -> String {
        self.key("cancelled")
    }
    pub fn job(&self, id: &str) -> String {
        format!("{}{id}", self.job_prefix())
    }
    /// Prefix of the job records: scripts that pick jobs themselves (claims, recovery) derive
    /// `job:<id>` and `job:<id>:events` from it, so it is declared to them as a key.
    pub fn job_prefix(&self) -> String {
        self.key("job:")
    }
    pub fn job_events(&self, id: &str) -> String {
        format!("{}:events", self.job(id))
    }
    pub fn events(&self) -> String {
        self.key("events")
    }
    /// The mapping of one (owner, key) pair; `digest` comes from [`idempotency_digest`].
    pub fn idempotency(&self, digest: &str) -> String {
        format!("{}{digest}", self.idempotency_prefix())
    }
    /// Prefix of the idempotency mappings: retention derives a trimmed job's mapping from it.
    pub fn idempotency_prefix(&self) -> String {
        self.key("idem:")
    }
    pub fn wake(&self) -> String {
        self.key("wake")
    }
    /// "Work arrived" signals. A stream, not a list: the operator reads it without taking
    /// anything from the workers (who pop `wake`).
    pub fn signals(&self) -> String {
        self.key("signals")
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
    pub fn budget(&self) -> String {
        self.key("budget")
    }
    pub fn spend(&self, period: &str) -> String {
        format!("{}{period}", self.spend_prefix())
    }
    /// Prefix of the spend hashes: stall recovery releases reservations of whatever period a
    /// job reserved in, so it derives `spend:<period>` from it.
    pub fn spend_prefix(&self) -> String {
        self.key("spend:")
    }
    pub fn epoch(&self) -> String {
        self.key("epoch")
    }
    /// What one claim call took, keyed by the call id its caller made once and reuses on a
    /// retry: a repeated call (its first reply was lost) answers from it instead of claiming
    /// again. Lives one lease.
    pub fn claim_record(&self, call_id: &str) -> String {
        self.key(&format!("claim:{call_id}"))
    }
    pub fn outcomes(&self, minute: u64) -> String {
        self.key(&format!("outcomes:{minute}"))
    }
    /// One client's counter in one window; `digest` comes from [`client_digest`].
    pub fn rate_limit(&self, digest: &str, window: u64) -> String {
        self.key(&format!("rate:{digest}:{window}"))
    }
    /// A key no script ever writes, passed where an optional key is absent (so every script
    /// call declares the same number of keys, all in the pipeline's slot).
    pub fn unused(&self) -> String {
        self.key("unused")
    }
}

/// Hex SHA-256 of length-prefixed parts: no two different part lists give the same input, so
/// (`a:b`, `c`) and (`a`, `b:c`) can never collide.
fn digest(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    crate::hex(ctx.finish().as_ref())
}

/// The digest naming an (owner, `Idempotency-Key`) mapping.
pub fn idempotency_digest(owner: &str, key: &str) -> String {
    digest(&["idem", owner, key])
}

/// The digest naming one client's rate-limit counters (client ids may hold any character).
pub fn client_digest(owner: &str) -> String {
    digest(&["client", owner])[..32].to_owned()
}

/// A fingerprint of a request body, to tell a retry from another request under the same key.
pub fn fingerprint(canonical_body: &str) -> String {
    digest(&["body", canonical_body])
}

/// Fields of the `job:<id>` hash.
pub mod job_field {
    pub const ID: &str = "id";
    pub const STATE: &str = "state";
    pub const REQUEST: &str = "request";
    pub const OWNER: &str = "owner";
    /// The owner's [`client_digest`](super::client_digest): which client list the job waits in.
    pub const CLIENT: &str = "client";
    pub const ATTEMPTS: &str = "attempts";
    pub const MAX_ATTEMPTS: &str = "maxAttempts";
    pub const STALLS: &str = "stalls";
    pub const CREATED_AT: &str = "createdAt";
    pub const STARTED_AT: &str = "startedAt";
    pub const FINISHED_AT: &str = "finishedAt";
    pub const RESULT: &str = "result";
    pub const ERROR: &str = "error";
    pub const ERROR_CODE: &str = "errorCode";
    pub const LEASE: &str = "lease";
    pub const WORKER: &str = "worker";
    pub const EVENT_SEQ: &str = "eventSeq";
    pub const IDEMPOTENCY: &str = "idem";
    pub const FINGERPRINT: &str = "fingerprint";
    /// UTF-8 bytes of the text sent to the model (content, subject, topic): a bound on its
    /// tokens for byte-level BPE tokenizers.
    pub const INPUT_BYTES: &str = "inputBytes";
    pub const CARD_COUNT: &str = "cardCount";
    /// Micro-dollars reserved for the running attempt, and the period they are reserved in.
    pub const RESERVED: &str = "reserved";
    pub const RESERVED_PERIOD: &str = "reservedPeriod";
    /// Set while the job waits because the budget cannot cover it right now.
    pub const BUDGET_WAIT: &str = "budgetWait";
    /// W3C `traceparent` of the request that created the job.
    pub const TRACEPARENT: &str = "traceparent";
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
    /// For the automatic budget stop: the limit (micro-dollars) and period it was taken under.
    pub const LIMIT_MICROS: &str = "limitMicros";
    pub const SPENT_MICROS: &str = "spentMicros";
    pub const PERIOD: &str = "period";
}

/// Fields of the `budget` hash.
pub mod budget_field {
    pub const LIMIT_MICROS: &str = "limitMicros";
    pub const PERIOD: &str = "period";
    pub const WARN_PERCENT: &str = "warnPercent";
    /// `1`: reservations are refused past the limit and the budget stop switches on.
    pub const ENFORCE: &str = "enforce";
    /// `operator` or `flags`: who wrote it.
    pub const SOURCE: &str = "source";
    pub const UPDATED_AT: &str = "updatedAt";
}

/// Fields of a `spend:<period>` hash; money in integer micro-dollars.
pub mod spend_field {
    pub const SPENT_MICROS: &str = "spentMicros";
    pub const RESERVED_MICROS: &str = "reservedMicros";
    pub const INPUT_TOKENS: &str = "inputTokens";
    pub const OUTPUT_TOKENS: &str = "outputTokens";
    pub const JOBS: &str = "jobs";
    /// Cost reported by providers beyond what was reserved for the call.
    pub const OVERRUN_MICROS: &str = "overrunMicros";
    /// The spend was restored (by the operator) after the store lost its data.
    pub const RESTORED_MICROS: &str = "restoredMicros";
    /// Spend of calls whose real cost is unknown (timed out after the request was sent, cut
    /// mid-reply, cancelled), settled at their reservation: the safe upper bound.
    pub const BOUND_MICROS: &str = "boundMicros";
    /// How many calls were settled at the bound.
    pub const BOUND_CALLS: &str = "boundCalls";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let ks = Keyspace::new(&PipelineId::new(Some("study"), "biology").unwrap());
        for key in [
            ks.waiting(),
            ks.job("abc"),
            ks.job_events("abc"),
            ks.events(),
            ks.spend("2026-11"),
            ks.budget(),
            ks.epoch(),
            ks.signals(),
        ] {
            assert!(key.starts_with("fc:{study.biology}:"), "{key}");
        }
        assert_eq!(ks.job("abc"), format!("{}abc", ks.job_prefix()));
        assert_eq!(ks.spend("2026-11"), format!("{}2026-11", ks.spend_prefix()));
    }

    #[test]
    fn same_name_in_two_namespaces_never_shares_a_key() {
        let a = Keyspace::new(&PipelineId::new(Some("team-a"), "shared").unwrap());
        let b = Keyspace::new(&PipelineId::new(Some("team-b"), "shared").unwrap());
        let legacy = Keyspace::new(&PipelineId::new(None, "shared").unwrap());
        assert_ne!(a.waiting(), b.waiting());
        assert_ne!(a.waiting(), legacy.waiting());
        assert_eq!(legacy.waiting(), "fc:{shared}:waiting");
        // `a.b` as a name is impossible, so `{a.b}` can only be namespace a, pipeline b.
        assert!(PipelineId::new(None, "team-a.shared").is_err());
        assert!(PipelineId::new(Some("team.a"), "shared").is_err());
    }

    #[test]
    fn pipeline_names_are_validated() {
        assert!(PipelineName::new("default").is_ok());
        assert!(PipelineName::new("").is_err());
        assert!(PipelineName::new("a}b").is_err());
        assert!(PipelineName::new("Upper").is_err());
        assert!(PipelineName::new(&"a".repeat(64)).is_err());
        assert_eq!(PipelineId::new(Some(""), "x").unwrap().tag(), "x");
    }

    #[test]
    fn digests_are_unambiguous() {
        assert_ne!(
            idempotency_digest("victim", "x:k1"),
            idempotency_digest("victim:x", "k1")
        );
        assert_eq!(idempotency_digest("u", "k"), idempotency_digest("u", "k"));
        assert_eq!(idempotency_digest("u", "k").len(), 64);
        assert_ne!(client_digest("a"), client_digest("b"));
    }

    #[test]
    fn scan_pattern_escapes_glob_characters() {
        let ks = Keyspace::new(&PipelineId::new(None, "p").unwrap());
        assert_eq!(ks.pattern(), "fc:{p}:*");
    }
}
