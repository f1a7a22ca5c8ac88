//! The Lua scripts and how they are called: one script per transition, every key passed in
//! `KEYS` (named by [`Keyspace`], so a Redis Cluster client can route the call), every argument
//! by name.
//!
//! Each script is declared once here with the roles of its keys and the names of its
//! arguments. Loading prepends generated tables `K` (role -> `KEYS[i]`) and `A` (name ->
//! `ARGV[i]`) to the Lua source, and a call pushes keys and arguments in the declared order
//! (checked by name), so the Rust caller and the Lua body cannot disagree on positions.

use std::fmt::Write as _;

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, Script, ScriptInvocation, ToRedisArgs};

use crate::{StoreError, StoreResult};
use flashcard_core::keyspace::Keyspace;

const PRELUDE: &str = include_str!("scripts/prelude.lua");
const BUDGET_LIB: &str = include_str!("scripts/budget_lib.lua");
const CLAIM_LIB: &str = include_str!("scripts/claim_lib.lua");
const QUEUE_LIB: &str = include_str!("scripts/queue_lib.lua");

/// Keys of fair queuing (`queue_lib.lua`).
const QUEUE_KEYS: &[&str] = &[
    "waiting",
    "ready",
    "client_queue_prefix",
    "client_active",
    "held",
    "queued",
];

/// Budget keys and arguments every script using `budget_lib.lua` declares.
const BUDGET_KEYS: &[&str] = &[
    "killswitch",
    "budget",
    "spend_daily",
    "spend_weekly",
    "spend_monthly",
];
const BUDGET_ARGS: &[&str] = &["period_daily", "period_weekly", "period_monthly"];

/// Keys and arguments of the claim part (`claim_lib.lua`), after [`QUEUE_KEYS`].
const CLAIM_KEYS: &[&str] = &[
    "wake",
    "delayed",
    "active",
    "failed",
    "job_prefix",
    "events",
    "outcomes",
    "claim_record",
];
pub(super) const CLAIM_ARGS: &[&str] = &[
    "worker",
    "lease_ms",
    "token",
    "max_jobs",
    "client_cap",
    "price_in",
    "price_out",
    "prompt_overhead",
    "out_per_card",
    "out_overhead",
    "active_body",
    "started_body",
    "budget_wait_body",
    "budget_failed_body",
    "budget_error",
    "budget_code",
];

/// One script as declared: key roles, argument names, libraries, body.
struct Spec {
    name: &'static str,
    keys: Vec<&'static str>,
    args: Vec<&'static str>,
    /// Arguments after the named ones are free-form (e.g. id/token pairs).
    variadic: bool,
    libs: &'static [&'static str],
    body: &'static str,
    /// Declared `no-writes` (Redis 7 script flags): Redis refuses any write in it, and it may
    /// run where writes may not (a replica, `EVALSHA_RO`, a primary out of memory).
    read_only: bool,
}

/// A loaded script.
pub(super) struct Loaded {
    spec: Spec,
    script: Script,
}

fn join(parts: &[&[&'static str]]) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = Vec::new();
    for part in parts {
        for name in *part {
            if !all.contains(name) {
                all.push(name);
            }
        }
    }
    all
}

impl Loaded {
    fn new(spec: Spec) -> Self {
        let mut source = String::new();
        if spec.read_only {
            source.push_str("#!lua flags=no-writes\n");
        }
        // Checked before anything runs: a call with keys or arguments missing fails before its
        // first write, and a name the script does not declare raises instead of reading nil.
        let _ = writeln!(
            source,
            "if #KEYS ~= {keys} or #ARGV < {args} then return redis.error_reply('ERR script {name}: \
             {keys} keys and {args} arguments needed, got ' .. #KEYS .. ' and ' .. #ARGV) end",
            keys = spec.keys.len(),
            args = spec.args.len(),
            name = spec.name,
        );
        source.push_str("local K = {");
        for (i, role) in spec.keys.iter().enumerate() {
            let _ = write!(source, "{role} = KEYS[{}], ", i + 1);
        }
        source.push_str("}\nlocal A = {");
        for (i, name) in spec.args.iter().enumerate() {
            let _ = write!(source, "{name} = ARGV[{}], ", i + 1);
        }
        source.push_str("}\n");
        let _ = writeln!(
            source,
            "local function undeclared(kind) return {{__index = function(_, name) \
             error('script {name}: undeclared ' .. kind .. ' ' .. tostring(name)) end}} end\n\
             setmetatable(K, undeclared('key')) setmetatable(A, undeclared('argument'))",
            name = spec.name,
        );
        source.push_str(PRELUDE);
        for lib in spec.libs {
            source.push_str(lib);
        }
        source.push_str(spec.body);
        Self {
            script: Script::new(&source),
            spec,
        }
    }

    /// Starts a call, with every declared key resolved from `keys`.
    pub(super) fn call(&self, keys: &KeyArgs<'_>) -> StoreResult<Call<'_>> {
        let mut invocation = self.script.prepare_invoke();
        for role in &self.spec.keys {
            let key = keys.resolve(role).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "script {} needs key {role}, which the caller did not give",
                    self.spec.name
                ))
            })?;
            invocation.key(key);
        }
        Ok(Call {
            loaded: self,
            invocation,
            next: 0,
            error: None,
        })
    }

    #[cfg(test)]
    fn source_len(&self) -> usize {
        self.spec.keys.len() + self.spec.args.len()
    }
}

/// A call being built: arguments are given by name, in the declared order.
pub(super) struct Call<'a> {
    loaded: &'a Loaded,
    invocation: ScriptInvocation<'a>,
    next: usize,
    error: Option<String>,
}

impl<'a> Call<'a> {
    pub(super) fn arg<T: ToRedisArgs>(mut self, name: &str, value: T) -> Self {
        let spec = &self.loaded.spec;
        match spec.args.get(self.next) {
            Some(expected) if *expected == name => {}
            expected => {
                self.error.get_or_insert_with(|| {
                    format!(
                        "script {}: argument {} is {name}, declared {expected:?}",
                        spec.name, self.next
                    )
                });
            }
        }
        self.invocation.arg(value);
        self.next += 1;
        self
    }

    /// A free-form argument after the named ones (variadic scripts only).
    pub(super) fn extra<T: ToRedisArgs>(mut self, value: T) -> Self {
        if !self.loaded.spec.variadic || self.next < self.loaded.spec.args.len() {
            self.error.get_or_insert_with(|| {
                format!("script {}: extra argument too early", self.loaded.spec.name)
            });
        }
        self.invocation.arg(value);
        self.next += 1;
        self
    }

    pub(super) async fn invoke<T: FromRedisValue, C: ConnectionLike + Send>(
        self,
        conn: &mut C,
    ) -> StoreResult<T> {
        let spec = &self.loaded.spec;
        if let Some(error) = self.error {
            return Err(StoreError::Corrupt(error));
        }
        if self.next < spec.args.len() {
            return Err(StoreError::Corrupt(format!(
                "script {}: {} of {} arguments given",
                spec.name,
                self.next,
                spec.args.len()
            )));
        }
        Ok(self.invocation.invoke_async(conn).await?)
    }
}

/// What a call's keys are resolved from.
#[derive(Default)]
pub(super) struct KeyArgs<'a> {
    pub ks: Option<&'a Keyspace>,
    /// The one job a script works on.
    pub job: Option<&'a str>,
    /// The idempotency digest of a submission.
    pub idem: Option<&'a str>,
    /// The rate-limit key of a submission.
    pub rate: Option<String>,
    /// Current daily, weekly and monthly period keys.
    pub periods: Option<&'a [String; 3]>,
    /// The period of an attempt's reservation.
    pub lease_period: Option<&'a str>,
    /// The period a script works on.
    pub spend_period: Option<&'a str>,
    /// The current minute (outcome counters).
    pub minute: Option<u64>,
    /// The id of a claim call (its record, see [`Keyspace::claim_record`]).
    pub call_id: Option<&'a str>,
    /// The worker a heartbeat is for.
    pub worker: Option<&'a str>,
    /// The client digest a submission waits under.
    pub client: Option<&'a str>,
}

impl<'a> KeyArgs<'a> {
    pub(super) fn new(ks: &'a Keyspace) -> Self {
        Self {
            ks: Some(ks),
            ..Self::default()
        }
    }

    fn resolve(&self, role: &str) -> Option<String> {
        let ks = self.ks?;
        Some(match role {
            "waiting" => ks.waiting(),
            "ready" => ks.ready(),
            "client_queue_prefix" => ks.client_queue_prefix(),
            "client_active" => ks.client_active(),
            "held" => ks.held(),
            "queued" => ks.queued(),
            "client_queue" => ks.client_queue(self.client?),
            "delayed" => ks.delayed(),
            "active" => ks.active(),
            "completed" => ks.completed(),
            "failed" => ks.failed(),
            "cancelled" => ks.cancelled(),
            "wake" => ks.wake(),
            "signals" => ks.signals(),
            "events" => ks.events(),
            "killswitch" => ks.kill_switch(),
            "budget" => ks.budget(),
            "epoch" => ks.epoch(),
            "job_prefix" => ks.job_prefix(),
            "spend_prefix" => ks.spend_prefix(),
            "idem_prefix" => ks.idempotency_prefix(),
            "job" => ks.job(self.job?),
            "job_events" => ks.job_events(self.job?),
            "idem" => match self.idem {
                Some(digest) => ks.idempotency(digest),
                None => ks.unused(),
            },
            "rate" => self.rate.clone().unwrap_or_else(|| ks.unused()),
            "claim_record" => match self.call_id {
                Some(id) => ks.claim_record(id),
                None => ks.unused(),
            },
            "unused" => ks.unused(),
            "workers" => ks.workers(),
            "worker" => ks.worker(self.worker?),
            "spend_daily" => ks.spend(&self.periods?[0]),
            "spend_weekly" => ks.spend(&self.periods?[1]),
            "spend_monthly" => ks.spend(&self.periods?[2]),
            "spend_lease" => ks.spend(self.lease_period?),
            "spend" => ks.spend(self.spend_period?),
            "outcomes" => ks.outcomes(self.minute?),
            _ => return None,
        })
    }
}

/// Every script of the store.
pub(super) struct Scripts {
    pub submit: Loaded,
    pub claim: Loaded,
    pub finish: Loaded,
    pub renew: Loaded,
    pub progress: Loaded,
    pub cancel: Loaded,
    pub recover: Loaded,
    pub trim: Loaded,
    pub budget_state: Loaded,
    pub set_budget: Loaded,
    pub clear_kill_switch: Loaded,
    pub ensure_epoch: Loaded,
    pub restore_spend: Loaded,
    pub purge: Loaded,
    pub server_time: Loaded,
    pub heartbeat: Loaded,
}

impl Scripts {
    pub(super) fn load() -> Self {
        let spec = |name, keys: Vec<&'static str>, args: Vec<&'static str>, libs, body| Spec {
            name,
            keys,
            args,
            variadic: false,
            libs,
            body,
            read_only: false,
        };
        Self {
            submit: Loaded::new(spec(
                "submit",
                join(&[
                    &[
                        "job",
                        "client_queue",
                        "wake",
                        "signals",
                        "idem",
                        "rate",
                        "job_prefix",
                    ],
                    QUEUE_KEYS,
                    BUDGET_KEYS,
                ]),
                join(&[
                    &[
                        "job_id",
                        "request",
                        "owner",
                        "client",
                        "max_attempts",
                        "input_bytes",
                        "card_count",
                        "traceparent",
                        "idem_digest",
                        "fingerprint",
                        "idem_ttl",
                        "rate_max",
                        "rate_window_ms",
                    ],
                    BUDGET_ARGS,
                ]),
                &[BUDGET_LIB, QUEUE_LIB],
                include_str!("scripts/submit.lua"),
            )),
            claim: Loaded::new(spec(
                "claim",
                join(&[QUEUE_KEYS, CLAIM_KEYS, BUDGET_KEYS]),
                join(&[CLAIM_ARGS, BUDGET_ARGS]),
                &[BUDGET_LIB, QUEUE_LIB, CLAIM_LIB],
                include_str!("scripts/claim.lua"),
            )),
            finish: Loaded::new(spec(
                "finish",
                join(&[
                    &["job", "job_events", "completed", "wake", "spend_lease"],
                    QUEUE_KEYS,
                    CLAIM_KEYS,
                    BUDGET_KEYS,
                ]),
                join(&[
                    &[
                        "id",
                        "lease_token",
                        "outcome",
                        "result",
                        "body",
                        "exhausted_body",
                        "delay_ms",
                        "error",
                        "error_code",
                        "cost",
                        "input_tokens",
                        "output_tokens",
                        "called",
                        "at_bound",
                    ],
                    CLAIM_ARGS,
                    BUDGET_ARGS,
                ]),
                &[BUDGET_LIB, QUEUE_LIB, CLAIM_LIB],
                include_str!("scripts/finish.lua"),
            )),
            renew: Loaded::new(Spec {
                variadic: true,
                ..spec(
                    "renew",
                    vec!["active", "job_prefix"],
                    vec!["lease_ms"],
                    &[],
                    include_str!("scripts/renew.lua"),
                )
            }),
            progress: Loaded::new(spec(
                "progress",
                vec!["job", "job_events", "events"],
                vec!["id", "token", "body"],
                &[],
                include_str!("scripts/progress.lua"),
            )),
            cancel: Loaded::new(spec(
                "cancel",
                join(&[
                    &[
                        "job",
                        "job_events",
                        "delayed",
                        "active",
                        "cancelled",
                        "spend_prefix",
                        "events",
                        "wake",
                    ],
                    QUEUE_KEYS,
                ]),
                vec!["id", "owner", "by", "body"],
                &[QUEUE_LIB],
                include_str!("scripts/cancel.lua"),
            )),
            recover: Loaded::new(spec(
                "recover",
                join(&[
                    &[
                        "active",
                        "failed",
                        "wake",
                        "events",
                        "job_prefix",
                        "spend_prefix",
                        "outcomes",
                    ],
                    QUEUE_KEYS,
                ]),
                vec![
                    "max_stalls",
                    "stalled_error",
                    "stalled_code",
                    "waiting_body",
                    "failed_body",
                ],
                &[QUEUE_LIB],
                include_str!("scripts/recover.lua"),
            )),
            trim: Loaded::new(spec(
                "trim",
                vec![
                    "completed",
                    "failed",
                    "cancelled",
                    "job_prefix",
                    "idem_prefix",
                    "events",
                ],
                vec!["max_age_ms", "max_count", "batch"],
                &[],
                include_str!("scripts/trim.lua"),
            )),
            budget_state: Loaded::new(Spec {
                read_only: true,
                ..spec(
                    "budget_state",
                    join(&[BUDGET_KEYS, &["epoch"]]),
                    BUDGET_ARGS.to_vec(),
                    &[BUDGET_LIB],
                    include_str!("scripts/budget_state.lua"),
                )
            }),
            set_budget: Loaded::new(spec(
                "set_budget",
                BUDGET_KEYS.to_vec(),
                join(&[
                    &[
                        "limit_micros",
                        "period",
                        "warn_percent",
                        "enforce",
                        "source",
                    ],
                    BUDGET_ARGS,
                ]),
                &[BUDGET_LIB],
                include_str!("scripts/set_budget.lua"),
            )),
            clear_kill_switch: Loaded::new(spec(
                "clear_kill_switch",
                vec!["killswitch"],
                vec!["set_by"],
                &[],
                include_str!("scripts/clear_kill_switch.lua"),
            )),
            ensure_epoch: Loaded::new(spec(
                "ensure_epoch",
                vec!["epoch"],
                vec!["epoch"],
                &[],
                include_str!("scripts/ensure_epoch.lua"),
            )),
            restore_spend: Loaded::new(spec(
                "restore_spend",
                vec!["spend"],
                vec!["spent_micros"],
                &[],
                include_str!("scripts/restore_spend.lua"),
            )),
            // `unused` is there only to route the call: on a cluster, to the node that owns the
            // pipeline's slot, whose SCAN is the one that sees the pipeline's keys.
            purge: Loaded::new(spec(
                "purge",
                vec!["unused"],
                vec!["pattern", "cursor", "count"],
                &[],
                include_str!("scripts/purge.lua"),
            )),
            server_time: Loaded::new(Spec {
                read_only: true,
                ..spec(
                    "server_time",
                    vec!["unused"],
                    vec![],
                    &[],
                    include_str!("scripts/server_time.lua"),
                )
            }),
            heartbeat: Loaded::new(spec(
                "heartbeat",
                vec!["worker", "workers"],
                vec![
                    "worker_id",
                    "pod",
                    "active",
                    "concurrency",
                    "breaker",
                    "draining",
                    "ttl_ms",
                ],
                &[],
                include_str!("scripts/heartbeat.lua"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_key_resolves_under_the_pipeline_tag() {
        let ks =
            Keyspace::new(&flashcard_core::keyspace::PipelineId::new(Some("ns"), "p").unwrap());
        let periods = [
            "2026-12-01".to_owned(),
            "2026-W49".to_owned(),
            "2026-12".to_owned(),
        ];
        let args = KeyArgs {
            job: Some("j"),
            idem: Some("d"),
            rate: Some(ks.rate_limit("c", 1)),
            periods: Some(&periods),
            lease_period: Some("2026-12"),
            spend_period: Some("2026-12"),
            minute: Some(1),
            call_id: Some("c"),
            worker: Some("w"),
            client: Some("c"),
            ..KeyArgs::new(&ks)
        };
        let scripts = Scripts::load();
        for loaded in [
            &scripts.submit,
            &scripts.claim,
            &scripts.finish,
            &scripts.renew,
            &scripts.progress,
            &scripts.cancel,
            &scripts.recover,
            &scripts.trim,
            &scripts.budget_state,
            &scripts.set_budget,
            &scripts.clear_kill_switch,
            &scripts.ensure_epoch,
            &scripts.restore_spend,
            &scripts.purge,
            &scripts.server_time,
            &scripts.heartbeat,
        ] {
            assert!(loaded.source_len() > 0);
            for role in &loaded.spec.keys {
                let key = args
                    .resolve(role)
                    .unwrap_or_else(|| panic!("{}: unknown key {role}", loaded.spec.name));
                assert!(key.starts_with("fc:{ns.p}:"), "{key}");
            }
        }
    }

    async fn redis_server() -> (
        flashcard_test_support::RedisServer,
        redis::aio::MultiplexedConnection,
    ) {
        let server = flashcard_test_support::RedisServer::start();
        let conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (server, conn)
    }

    /// The generated guards, on a real redis-server: a call short of keys or arguments is
    /// refused before the body runs (so before any write), and a name the script does not
    /// declare raises instead of reading nil.
    #[tokio::test]
    async fn calls_short_of_keys_or_arguments_and_undeclared_names_are_refused() {
        let (_server, mut conn) = redis_server().await;
        let writes = Loaded::new(Spec {
            name: "probe",
            keys: vec!["waiting", "active"],
            args: vec!["id", "token"],
            variadic: false,
            libs: &[],
            body: "redis.call('RPUSH', K.waiting, A.id) return A.missing_name",
            read_only: false,
        });
        let short: redis::RedisResult<redis::Value> = writes
            .script
            .key("fc:{t}:waiting")
            .arg("j1")
            .invoke_async(&mut conn)
            .await;
        let err = short.unwrap_err().to_string();
        assert!(
            err.contains("probe: 2 keys and 2 arguments needed"),
            "{err}"
        );
        let len: i64 = redis::cmd("LLEN")
            .arg("fc:{t}:waiting")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 0, "nothing written");
        let undeclared: redis::RedisResult<redis::Value> = writes
            .script
            .key("fc:{t}:waiting")
            .key("fc:{t}:active")
            .arg("j1")
            .arg("t")
            .invoke_async(&mut conn)
            .await;
        let err = undeclared.unwrap_err().to_string();
        assert!(err.contains("undeclared argument missing_name"), "{err}");
    }

    #[test]
    fn arguments_out_of_order_are_refused() {
        let ks = Keyspace::new(&flashcard_core::keyspace::PipelineId::new(None, "p").unwrap());
        let scripts = Scripts::load();
        let call = scripts
            .clear_kill_switch
            .call(&KeyArgs::new(&ks))
            .unwrap()
            .arg("wrong", "x");
        assert!(call.error.is_some());
    }

    /// The automatic budget stop's end rule is written twice, in `budget_lib.lua` (the Redis
    /// store) and in `budget_stop_lapsed` (the memory store, the operator's test double): both
    /// give the same answer on every combination of switch, budget and spend.
    #[tokio::test]
    async fn the_lua_and_rust_budget_stop_rules_agree() {
        use crate::{BudgetConfig, KillSwitch, SetBy, budget_stop_lapsed};
        let (_server, mut conn) = redis_server().await;
        let rule = Loaded::new(Spec {
            name: "stop_rule",
            keys: vec![],
            args: vec![
                "enabled", "set_by", "limit", "taken_in", "enforced", "current", "spent",
            ],
            variadic: false,
            libs: &[BUDGET_LIB],
            body: "local function opt(v) if v == '' then return nil end return v end
                   local ks = {A.enabled, A.set_by, opt(A.limit), opt(A.taken_in)}
                   local budget = {enforced = num(A.enforced), period = A.current}
                   if stop_lapsed(ks, budget, num(A.spent)) then return 1 end
                   return 0",
            read_only: true,
        });
        let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut cases = 0;
        for enabled in [true, false] {
            for set_by in [
                SetBy::Budget,
                SetBy::Admin,
                SetBy::Resource,
                SetBy::Operator,
            ] {
                for stop_limit in [None, Some(0), Some(1_000_000), Some(2_000_000)] {
                    for taken_in in [None, Some("2026-12"), Some("2026-11")] {
                        for budget_limit in [0, 500_000, 1_000_000, 1_500_000, 2_000_000] {
                            for enforce in [true, false] {
                                for spent in [0, 999_999, 1_000_000, 1_500_000, 3_000_000] {
                                    let ks = KillSwitch {
                                        enabled,
                                        reason: None,
                                        set_by: Some(set_by),
                                        since: Some(0),
                                        limit_micros: stop_limit,
                                        period: taken_in.map(str::to_owned),
                                    };
                                    let config = BudgetConfig {
                                        limit_micros: budget_limit,
                                        enforce,
                                        ..BudgetConfig::unlimited()
                                    };
                                    let current = config.period_key(now);
                                    let rust = budget_stop_lapsed(&ks, &config, spent, now);
                                    let lua: i64 = rule
                                        .script
                                        .arg(if enabled { "true" } else { "false" })
                                        .arg(set_by.as_str())
                                        .arg(stop_limit.map(|l| l.to_string()).unwrap_or_default())
                                        .arg(taken_in.unwrap_or_default())
                                        .arg(config.enforced_limit())
                                        .arg(&current)
                                        .arg(spent)
                                        .invoke_async(&mut conn)
                                        .await
                                        .unwrap();
                                    assert_eq!(lua == 1, rust, "{ks:?} {config:?} spent {spent}");
                                    cases += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 4800);
    }
}
