//! Turns Redis replies (hash fields, script replies) back into store types.

use std::collections::HashMap;

use redis::Value;

use crate::{
    BudgetConfig, BudgetSource, Claim, Claimed, KillSwitch, Lease, SetBy, Spend, StoreError,
    StoreResult, WorkerInfo, budget_stop_reason,
};
use flashcard_core::budget::BudgetPeriod;
use flashcard_core::job::{JobRecord, JobRequest, JobState};
use flashcard_core::keyspace::{budget_field, job_field, kill_switch_field, worker_field};

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// Reads a script's array reply in order.
pub(super) struct Reply {
    items: std::vec::IntoIter<Value>,
    what: &'static str,
}

impl Reply {
    pub(super) fn new(value: Value, what: &'static str) -> StoreResult<Self> {
        match value {
            Value::Array(items) => Ok(Self {
                items: items.into_iter(),
                what,
            }),
            other => Err(corrupt(format!("{what}: expected an array, got {other:?}"))),
        }
    }

    fn next(&mut self) -> StoreResult<Value> {
        self.items
            .next()
            .ok_or_else(|| corrupt(format!("{}: reply too short", self.what)))
    }

    pub(super) fn bytes(&mut self) -> StoreResult<Vec<u8>> {
        match self.next()? {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            Value::Int(n) => Ok(n.to_string().into_bytes()),
            Value::Okay => Ok(b"OK".to_vec()),
            Value::Nil => Ok(Vec::new()),
            other => Err(corrupt(format!(
                "{}: expected a string, got {other:?}",
                self.what
            ))),
        }
    }

    pub(super) fn string(&mut self) -> StoreResult<String> {
        String::from_utf8(self.bytes()?).map_err(|_| corrupt(format!("{}: not UTF-8", self.what)))
    }

    pub(super) fn u64(&mut self) -> StoreResult<u64> {
        let what = self.what;
        match self.next()? {
            Value::Int(n) => Ok(n.max(0) as u64),
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .map(|n| n.max(0) as u64)
                .ok_or_else(|| corrupt(format!("{what}: expected a number"))),
            Value::Nil => Ok(0),
            other => Err(corrupt(format!("{what}: expected a number, got {other:?}"))),
        }
    }

    pub(super) fn array(&mut self) -> StoreResult<Reply> {
        let what = self.what;
        Reply::new(self.next()?, what)
    }

    /// A nested `HGETALL` reply as field pairs.
    pub(super) fn pairs(&mut self) -> StoreResult<Vec<(String, String)>> {
        let mut inner = self.array()?;
        let mut pairs = Vec::new();
        while inner.items.len() > 0 {
            pairs.push((inner.string()?, inner.string()?));
        }
        Ok(pairs)
    }

    /// A nested spend array (`spentMicros`, `reservedMicros`, ... in the scripts' order).
    pub(super) fn spend(&mut self) -> StoreResult<Spend> {
        let mut s = self.array()?;
        Ok(Spend {
            spent_micros: s.u64()?,
            reserved_micros: s.u64()?,
            input_tokens: s.u64()?,
            output_tokens: s.u64()?,
            jobs: s.u64()?,
            overrun_micros: s.u64()?,
            restored_micros: s.u64()?,
            bound_micros: s.u64()?,
            bound_calls: s.u64()?,
        })
    }
}

pub(super) fn job_record(fields: Vec<(String, String)>) -> StoreResult<JobRecord> {
    let map: HashMap<String, String> = fields.into_iter().collect();
    let get = |name: &str| map.get(name).map(String::as_str);
    let number = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
    let id = get(job_field::ID)
        .ok_or_else(|| corrupt("job without id"))?
        .to_owned();
    let state = get(job_field::STATE)
        .and_then(JobState::parse)
        .ok_or_else(|| corrupt(format!("job {id} has no valid state")))?;
    // A request this version cannot read (written by a newer one; such a job is failed with
    // `JOB_UNREADABLE` when claimed) still leaves the rest of the record readable: the status
    // and history never show the request, so it reads as empty.
    let request = match get(job_field::REQUEST).map(serde_json::from_str::<JobRequest>) {
        Some(Ok(request)) => request,
        Some(Err(e)) => {
            tracing::warn!(job = %id, error = %e, "job request unreadable by this version");
            JobRequest {
                content: String::new(),
                subject: String::new(),
                topic: String::new(),
                user_id: String::new(),
                card_count: 0,
            }
        }
        None => return Err(corrupt(format!("job {id} has no request"))),
    };
    let result = match get(job_field::RESULT) {
        Some(r) => Some(serde_json::from_str(r).map_err(|e| corrupt(format!("job {id}: {e}")))?),
        None => None,
    };
    Ok(JobRecord {
        state,
        request,
        attempts_made: number(job_field::ATTEMPTS).unwrap_or(0) as u32,
        max_attempts: number(job_field::MAX_ATTEMPTS).unwrap_or(1) as u32,
        stalls: number(job_field::STALLS).unwrap_or(0) as u32,
        created_at: number(job_field::CREATED_AT).unwrap_or(0),
        started_at: number(job_field::STARTED_AT),
        finished_at: number(job_field::FINISHED_AT),
        result,
        error: get(job_field::ERROR).map(str::to_owned),
        error_code: get(job_field::ERROR_CODE).map(str::to_owned),
        event_seq: number(job_field::EVENT_SEQ).unwrap_or(0),
        owner: get(job_field::OWNER).unwrap_or_default().to_owned(),
        traceparent: get(job_field::TRACEPARENT)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        id,
    })
}

/// A claim reply, decoded job by job.
pub(super) struct ParsedClaim {
    pub claimed: Claimed,
    /// Jobs taken under the lease whose record did not decode, with the reason.
    pub unreadable: Vec<(Lease, String)>,
}

/// The jobs of a claim reply (`{blocked, budgetFailed, n, fields...}`, 12 fields per job, see
/// `claim_lib.lua`). The reply's shape must be right; a job whose request does not decode is
/// reported in `unreadable` and the rest of the batch is kept.
pub(super) fn claimed(mut reply: Reply, token: &str) -> StoreResult<ParsedClaim> {
    let blocked = reply.u64()? == 1;
    let budget_failed = reply.u64()? as u32;
    let n = reply.u64()? as usize;
    let mut jobs = Vec::with_capacity(n);
    let mut unreadable = Vec::new();
    for _ in 0..n {
        let id = reply.string()?;
        let request_bytes = reply.bytes()?;
        let attempts_made = reply.u64()? as u32;
        let max_attempts = reply.u64()? as u32;
        let stalls = reply.u64()? as u32;
        let created_at = reply.u64()?;
        let started_at = reply.u64()?;
        let event_seq = reply.u64()?;
        let owner = reply.string()?;
        let traceparent = Some(reply.string()?).filter(|t| !t.is_empty());
        let reserved_micros = reply.u64()?;
        let period = reply.string()?;
        let lease = Lease {
            job_id: id.clone(),
            token: token.to_owned(),
            period,
        };
        let request = match serde_json::from_slice(&request_bytes) {
            Ok(request) => request,
            Err(e) => {
                unreadable.push((lease, format!("request: {e}")));
                continue;
            }
        };
        jobs.push(Claim {
            lease,
            reserved_micros,
            job: JobRecord {
                id,
                state: JobState::Active,
                request,
                attempts_made,
                max_attempts: max_attempts.max(1),
                stalls,
                created_at,
                started_at: Some(started_at),
                finished_at: None,
                result: None,
                error: None,
                error_code: None,
                event_seq,
                owner,
                traceparent,
            },
        });
    }
    Ok(ParsedClaim {
        claimed: Claimed {
            jobs,
            budget_blocked: blocked,
            budget_failed,
            unreadable: 0,
        },
        unreadable,
    })
}

pub(super) fn worker_info(id: String, fields: Vec<(String, String)>) -> WorkerInfo {
    let map: HashMap<String, String> = fields.into_iter().collect();
    let get = |name: &str| map.get(name).cloned().unwrap_or_default();
    WorkerInfo {
        pod: get(worker_field::POD),
        active: get(worker_field::ACTIVE).parse().unwrap_or(0),
        concurrency: get(worker_field::CONCURRENCY).parse().unwrap_or(0),
        breaker: get(worker_field::BREAKER),
        draining: get(worker_field::DRAINING) == "true",
        last_seen: get(worker_field::LAST_SEEN).parse().unwrap_or(0),
        id,
    }
}

/// The kill-switch; the automatic budget stop's reason is rendered from what it recorded.
pub(super) fn kill_switch(fields: Vec<(String, String)>) -> KillSwitch {
    let map: HashMap<String, String> = fields.into_iter().collect();
    let number = |name: &str| map.get(name).and_then(|s| s.parse::<u64>().ok());
    let set_by = map
        .get(kill_switch_field::SET_BY)
        .and_then(|s| SetBy::parse(s));
    let period = map.get(kill_switch_field::PERIOD).cloned();
    let limit_micros = number(kill_switch_field::LIMIT_MICROS);
    let enabled = map.get(kill_switch_field::ENABLED).map(String::as_str) == Some("true");
    let reason = match (map.get(kill_switch_field::REASON), set_by) {
        (Some(reason), _) => Some(reason.clone()),
        (None, Some(SetBy::Budget)) if enabled => Some(budget_stop_reason(
            number(kill_switch_field::SPENT_MICROS).unwrap_or(0),
            limit_micros.unwrap_or(0),
            period.as_deref().unwrap_or("?"),
        )),
        (None, _) => None,
    };
    KillSwitch {
        enabled,
        reason,
        set_by,
        since: number(kill_switch_field::SINCE),
        limit_micros,
        period,
    }
}

pub(super) fn budget_config(fields: Vec<(String, String)>) -> Option<BudgetConfig> {
    let map: HashMap<String, String> = fields.into_iter().collect();
    let limit_micros = map.get(budget_field::LIMIT_MICROS)?.parse().ok()?;
    Some(BudgetConfig {
        limit_micros,
        period: match map.get(budget_field::PERIOD).map(String::as_str) {
            Some("daily") => BudgetPeriod::Daily,
            Some("weekly") => BudgetPeriod::Weekly,
            _ => BudgetPeriod::Monthly,
        },
        warn_percent: map
            .get(budget_field::WARN_PERCENT)
            .and_then(|w| w.parse().ok())
            .unwrap_or(80.0),
        enforce: map.get(budget_field::ENFORCE).map(String::as_str) != Some("0"),
        source: map
            .get(budget_field::SOURCE)
            .and_then(|s| BudgetSource::parse(s))
            .unwrap_or(BudgetSource::Flags),
    })
}

pub(super) fn spend(fields: Vec<(String, String)>) -> Spend {
    let map: HashMap<String, String> = fields.into_iter().collect();
    let number = |name: &str| {
        map.get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            .max(0) as u64
    };
    use flashcard_core::keyspace::spend_field as f;
    Spend {
        spent_micros: number(f::SPENT_MICROS),
        reserved_micros: number(f::RESERVED_MICROS),
        input_tokens: number(f::INPUT_TOKENS),
        output_tokens: number(f::OUTPUT_TOKENS),
        jobs: number(f::JOBS),
        overrun_micros: number(f::OVERRUN_MICROS),
        restored_micros: number(f::RESTORED_MICROS),
        bound_micros: number(f::BOUND_MICROS),
        bound_calls: number(f::BOUND_CALLS),
    }
}
