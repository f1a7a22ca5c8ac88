//! Builds the status (conditions, API pods, queue, workers, budget) and writes it with
//! server-side apply to the status subresource, only when it changed.
//!
//! Every condition is a function of observed facts, never of what this reconcile happened to
//! do, so an idle pipeline's status stays byte-for-byte the same and is not written:
//!
//! - `Ready`: the API Deployment has its desired ready pods and the store answers;
//! - `Progressing`: a Deployment has not finished its rollout (`kubectl rollout status` rules);
//! - `Scaling`, `BudgetExceeded`, `MonitoringAvailable`: the autoscaler, the kill-switch, the
//!   prometheus-operator CRDs.

use flashcard_core::budget::{micros_to_usd, usd_to_micros};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::observe::Observed;
use crate::budget::{Holder, Level};
use crate::context::{PipelineMemory, WrittenStatus};
use crate::crd::{
    ApiStatus, BudgetStatus, FlashcardPipeline, FlashcardPipelineStatus, QueueStatus,
    WorkersStatus, condition,
};
use crate::render::MANAGER;
use crate::scaling::{ScaleDecision, ScaleReason};
use flashcard_core::budget::{format_percent, format_usd, usd_amount};

/// A Deployment's pods as its status reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Replicas asked for (`spec.replicas`).
    pub desired: u32,
    /// Pods of any revision (`status.replicas`).
    pub total: u32,
    pub updated: u32,
    pub ready: u32,
    pub available: u32,
    /// The Deployment controller has seen the current spec (`observedGeneration >= generation`).
    pub observed: bool,
    /// The Deployment is known at all (applied or watched).
    pub known: bool,
}

impl Rollout {
    /// From the Deployment (None: not seen yet); `desired` is what the operator asks for.
    pub fn of(d: Option<&Deployment>, desired: u32) -> Self {
        let Some(d) = d else {
            return Self {
                desired,
                ..Self::default()
            };
        };
        let n = |x: Option<i32>| x.unwrap_or(0).max(0) as u32;
        let s = d.status.clone().unwrap_or_default();
        let observed = match (d.metadata.generation, s.observed_generation) {
            (Some(g), Some(o)) => o >= g,
            (Some(_), None) => false,
            (None, _) => true,
        };
        Self {
            desired,
            total: n(s.replicas),
            updated: n(s.updated_replicas),
            ready: n(s.ready_replicas),
            available: n(s.available_replicas),
            observed,
            known: true,
        }
    }

    /// Why the rollout is not complete (None: complete), by the rules of `kubectl rollout
    /// status`.
    pub fn pending(&self) -> Option<String> {
        if !self.known {
            return Some("not created yet".into());
        }
        if !self.observed {
            return Some("waiting for the Deployment controller".into());
        }
        if self.updated < self.desired {
            return Some(format!("{}/{} pods updated", self.updated, self.desired));
        }
        if self.total > self.updated {
            return Some(format!(
                "{} old pod(s) terminating",
                self.total - self.updated
            ));
        }
        if self.available < self.updated {
            return Some(format!(
                "{}/{} pods available",
                self.available, self.updated
            ));
        }
        None
    }
}

/// Everything one reconcile learned.
pub struct Facts<'a> {
    pub observed: Result<&'a Observed, &'a str>,
    pub scale: ScaleDecision,
    /// Set when the replica count changed in this reconcile.
    pub scaled_at: Option<jiff::Timestamp>,
    pub monitoring: bool,
    /// Children this pass could not apply.
    pub failed: &'a [super::apply::FailedChild],
    /// `Err`: the Secrets that do not consent (or why that is unknown).
    pub secrets: Result<(), &'a [String]>,
    pub api: Rollout,
    pub worker: Rollout,
}

pub(crate) fn cond(
    type_: &str,
    ok: Option<bool>,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: match ok {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        }
        .into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    }
}

/// Keeps the old transition time of conditions whose status did not change.
fn carry_transition_times(new: &mut [Condition], old: &[Condition]) {
    for c in new {
        if let Some(o) = old.iter().find(|o| o.type_ == c.type_)
            && o.status == c.status
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

/// The status as it is now: the pipeline's, unless the watch has not yet delivered the status
/// this process wrote last (then that one).
pub fn current(p: &FlashcardPipeline, mem: &PipelineMemory) -> Option<FlashcardPipelineStatus> {
    let rv = p.meta().resource_version.as_ref();
    match &mem.written {
        Some(w) if w.before.is_some() && w.before.as_ref() == rv => Some(w.status.clone()),
        _ => p.status.clone(),
    }
}

/// The new status; `old` is [`current`].
pub fn build(
    p: &FlashcardPipeline,
    old: Option<&FlashcardPipelineStatus>,
    f: &Facts<'_>,
) -> FlashcardPipelineStatus {
    let old = old.cloned().unwrap_or_default();
    let generation = p.meta().generation;
    let queue = match f.observed {
        Ok(o) => QueueStatus {
            waiting: o.queue.waiting,
            active: o.queue.active,
            delayed: o.queue.delayed,
        },
        Err(_) => old.queue.clone(),
    };
    let live = match f.observed {
        Ok(o) => o.workers.len() as u32,
        Err(_) => old.workers.live,
    };
    let (last_scale_time, last_scale_reason) = match f.scaled_at {
        Some(t) => (
            Some(t.to_string()),
            Some(f.scale.reason.as_str().to_owned()),
        ),
        None => (
            old.workers.last_scale_time.clone(),
            old.workers.last_scale_reason.clone(),
        ),
    };
    let workers = WorkersStatus {
        desired: f.scale.replicas,
        ready: f.worker.ready,
        live,
        summary: format!("{}/{}", f.worker.ready, f.scale.replicas),
        last_scale_time,
        last_scale_reason,
    };
    let api = ApiStatus {
        desired: f.api.desired,
        ready: f.api.ready,
        summary: format!("{}/{}", f.api.ready, f.api.desired),
    };
    let limit_micros = usd_to_micros(p.spec.budget.limit_usd);
    let limit_usd = micros_to_usd(limit_micros);
    let budget = match f.observed {
        Ok(o) => {
            let ks = &o.budget.after;
            BudgetStatus {
                period: o.period.clone(),
                spent_usd: micros_to_usd(o.spent_micros),
                spent_micros: o.spent_micros,
                reserved_usd: micros_to_usd(o.reserved_micros),
                store_epoch: o.epoch.clone(),
                limit_usd,
                percent: (o.budget.percent * 100.0).round() / 100.0,
                summary: format!(
                    "{}/{}",
                    usd_amount(o.spent_micros),
                    usd_amount(limit_micros)
                ),
                kill_switch: ks.enabled,
                kill_switch_set_by: Holder::of(ks).map(|h| h.as_str().to_owned()),
                kill_switch_reason: ks.enabled.then(|| ks.reason.clone()).flatten(),
            }
        }
        Err(_) => BudgetStatus {
            limit_usd,
            ..old.budget.clone()
        },
    };

    let mut conditions = vec![
        ready(f, generation),
        progressing(f, generation),
        scaling(p, f, generation),
        budget_exceeded(f, limit_micros, generation),
        monitoring(f, generation),
        applied(f, generation),
        secrets_allowed(f, generation),
    ];
    if let Some(restored) = spend_restored(f, &old.conditions, generation) {
        conditions.push(restored);
    }
    carry_transition_times(&mut conditions, &old.conditions);
    FlashcardPipelineStatus {
        conditions,
        observed_generation: generation,
        api,
        queue,
        workers,
        budget,
    }
}

/// Whether every child is applied; False names each one the API server refused (the others
/// are applied all the same).
fn applied(f: &Facts<'_>, generation: Option<i64>) -> Condition {
    if f.failed.is_empty() {
        cond(
            condition::APPLIED,
            Some(true),
            "Applied",
            "every child is applied".into(),
            generation,
        )
    } else {
        cond(
            condition::APPLIED,
            Some(false),
            "ApplyFailed",
            super::apply::describe(f.failed),
            generation,
        )
    }
}

/// Whether every Secret the pipeline names consents to it ([`crate::consent`]).
fn secrets_allowed(f: &Facts<'_>, generation: Option<i64>) -> Condition {
    match f.secrets {
        Ok(()) => cond(
            condition::SECRETS_ALLOWED,
            Some(true),
            "SecretsLabelled",
            format!(
                "every referenced Secret is labelled {}={}",
                crate::consent::CONSENT_LABEL,
                crate::consent::CONSENT_VALUE
            ),
            generation,
        ),
        Err(why) => cond(
            condition::SECRETS_ALLOWED,
            Some(false),
            refusal_reason(why),
            format!("{}; no Deployment is applied", why.join("; ")),
            generation,
        ),
    }
}

/// The reason of a refusal: no admin URL for a pipeline on the operator's Redis, or a Secret
/// without the consent label.
fn refusal_reason(why: &[String]) -> &'static str {
    if why.iter().any(|w| w == crate::state::NO_ADMIN_URL) {
        "NoOperatorRedis"
    } else {
        "SecretNotLabelled"
    }
}

fn ready(f: &Facts<'_>, generation: Option<i64>) -> Condition {
    let pods = format!("API pods {}/{} ready", f.api.ready, f.api.desired);
    let required: Vec<&str> = f
        .failed
        .iter()
        .filter(|c| !c.optional)
        .map(|c| c.key.as_str())
        .collect();
    if let Err(why) = f.secrets {
        return cond(
            condition::READY,
            Some(false),
            refusal_reason(why),
            format!("{}; {pods}", why.join("; ")),
            generation,
        );
    }
    match f.observed {
        Ok(_) if !required.is_empty() => cond(
            condition::READY,
            Some(false),
            "ApplyFailed",
            format!("cannot apply {}; {pods}", required.join(", ")),
            generation,
        ),
        Err(e) => cond(
            condition::READY,
            Some(false),
            "StoreUnavailable",
            format!("cannot read the store: {e}; {pods}"),
            generation,
        ),
        Ok(_) if f.api.ready < f.api.desired => cond(
            condition::READY,
            Some(false),
            "ApiNotReady",
            pods,
            generation,
        ),
        Ok(_) => cond(
            condition::READY,
            Some(true),
            "Available",
            format!("{pods}; store reachable"),
            generation,
        ),
    }
}

fn progressing(f: &Facts<'_>, generation: Option<i64>) -> Condition {
    let pending: Vec<String> = [("API", &f.api), ("worker", &f.worker)]
        .into_iter()
        .filter_map(|(what, r)| r.pending().map(|why| format!("{what} Deployment: {why}")))
        .collect();
    if pending.is_empty() {
        cond(
            condition::PROGRESSING,
            Some(false),
            "RolloutComplete",
            "the API and worker Deployments are up to date".into(),
            generation,
        )
    } else {
        cond(
            condition::PROGRESSING,
            Some(true),
            "RollingOut",
            pending.join("; "),
            generation,
        )
    }
}

/// The autoscaler's state, not its last step (that is `workers.lastScaleReason` and an Event):
/// a scale-up is not followed by a second status write saying "now steady".
fn scaling(p: &FlashcardPipeline, f: &Facts<'_>, generation: Option<i64>) -> Condition {
    let msg = format!(
        "{} worker(s); the queue asks for {} (min {}, max {})",
        f.scale.replicas,
        f.scale.recommended,
        p.spec.worker.min_replicas,
        p.spec.worker.max_replicas
    );
    let (active, reason) = match f.scale.reason {
        ScaleReason::Paused => (false, "Paused"),
        ScaleReason::StoreUnavailable => (false, "StoreUnavailable"),
        ScaleReason::Stabilizing => (true, "Stabilizing"),
        ScaleReason::QueueGrew | ScaleReason::QueueShrank | ScaleReason::Steady => {
            (true, "FollowingQueue")
        }
    };
    cond(condition::SCALING, Some(active), reason, msg, generation)
}

fn budget_exceeded(f: &Facts<'_>, limit_micros: u64, generation: Option<i64>) -> Condition {
    let Ok(o) = f.observed else {
        return cond(
            condition::BUDGET_EXCEEDED,
            None,
            "StoreUnavailable",
            "spend unknown: the store cannot be read".into(),
            generation,
        );
    };
    let ks = &o.budget.after;
    match Holder::of(ks) {
        Some(h) => {
            let reason = match h {
                Holder::Budget => "LimitReached",
                Holder::Operator => "EarlierOperatorSwitch",
                Holder::Resource => "ManualKillSwitch",
                Holder::Admin => "AdminKillSwitch",
            };
            let why = ks.reason.clone().unwrap_or_default();
            cond(
                condition::BUDGET_EXCEEDED,
                Some(true),
                reason,
                format!("kill-switch on ({}): {why}", h.as_str()),
                generation,
            )
        }
        None => {
            let msg = match o.budget.level {
                Level::NoLimit => "no budget limit".to_owned(),
                _ => format!(
                    "{} of {} spent in {}",
                    format_percent(o.budget.percent),
                    format_usd(limit_micros),
                    o.period
                ),
            };
            cond(
                condition::BUDGET_EXCEEDED,
                Some(false),
                o.budget.level.as_str(),
                msg,
                generation,
            )
        }
    }
}

/// After the store lost its data: says when and how much spend was restored. Present from the
/// first restore on (it is history worth keeping next to the spend it explains).
fn spend_restored(f: &Facts<'_>, old: &[Condition], generation: Option<i64>) -> Option<Condition> {
    match f
        .observed
        .ok()
        .and_then(|o| o.restored_micros.map(|m| (o, m)))
    {
        Some((o, micros)) => Some(cond(
            condition::SPEND_RESTORED,
            Some(true),
            "StoreLostData",
            format!(
                "the store lost its data at {}; {} of spend in {} restored from this status",
                jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                format_usd(micros),
                o.period
            ),
            generation,
        )),
        None => old
            .iter()
            .find(|c| c.type_ == condition::SPEND_RESTORED)
            .cloned(),
    }
}

fn monitoring(f: &Facts<'_>, generation: Option<i64>) -> Condition {
    let refused: Vec<&str> = f
        .failed
        .iter()
        .filter(|c| c.optional)
        .map(|c| c.key.as_str())
        .collect();
    if f.monitoring && !refused.is_empty() {
        cond(
            condition::MONITORING_AVAILABLE,
            Some(false),
            "ApplyFailed",
            format!(
                "cannot apply {} (see condition Applied); the pipeline runs without it",
                refused.join(", ")
            ),
            generation,
        )
    } else if f.monitoring {
        cond(
            condition::MONITORING_AVAILABLE,
            Some(true),
            "PrometheusOperatorFound",
            "PrometheusRule and ServiceMonitor applied".into(),
            generation,
        )
    } else {
        cond(
            condition::MONITORING_AVAILABLE,
            Some(false),
            "PrometheusOperatorMissing",
            "monitoring.coreos.com CRDs are not installed; PrometheusRule and ServiceMonitor skipped"
                .into(),
            generation,
        )
    }
}

/// Least time between two status writes that change only gauges (queue depth, live workers,
/// spend figures): the status is not a metrics channel (Prometheus has the live figures), and
/// a busy pipeline would otherwise write etcd at every poll. Any other change (a condition,
/// replicas, the kill-switch, the budget in force) is written at once. The spend recorded for
/// a restore after the store lost its data is at most this old.
pub const GAUGE_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether `new` differs from `old` in its gauges only.
fn only_gauges_differ(old: &FlashcardPipelineStatus, new: &FlashcardPipelineStatus) -> bool {
    let mut settled = new.clone();
    settled.queue = old.queue.clone();
    settled.workers.live = old.workers.live;
    let (b, o) = (&mut settled.budget, &old.budget);
    b.spent_usd = o.spent_usd;
    b.spent_micros = o.spent_micros;
    b.reserved_usd = o.reserved_usd;
    b.percent = o.percent;
    b.summary = o.summary.clone();
    &settled == old
}

/// Whether to write `new` over `old` ([`current`]), given when this process last wrote.
pub fn should_write(
    old: Option<&FlashcardPipelineStatus>,
    new: &FlashcardPipelineStatus,
    written_at: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
) -> bool {
    match (old, written_at) {
        (Some(old), _) if old == new => false,
        (Some(old), Some(at)) if only_gauges_differ(old, new) => {
            now.duration_since(at) >= GAUGE_WRITE_INTERVAL
        }
        _ => true,
    }
}

/// Writes `status` when [`should_write`] says so; returns whether it patched. Remembers what
/// it wrote, so the next reconcile does not repeat it before the watch delivers it.
pub async fn write(
    api: &Api<FlashcardPipeline>,
    p: &FlashcardPipeline,
    old: Option<&FlashcardPipelineStatus>,
    status: FlashcardPipelineStatus,
    mem: &mut PipelineMemory,
) -> Result<bool, kube::Error> {
    let now = tokio::time::Instant::now();
    if !should_write(old, &status, mem.written_at, now) {
        return Ok(false);
    }

    let patch = json!({
        "apiVersion": "flashcards.dev/v1alpha1",
        "kind": "FlashcardPipeline",
        "status": status,
    });
    let written = api
        .patch_status(
            &p.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    mem.written = Some(WrittenStatus {
        before: p.meta().resource_version.clone(),
        after: written.meta().resource_version.clone(),
        status,
    });
    mem.written_at = Some(now);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gauges (queue depth, live workers, spend figures) are written at most every
    /// `GAUGE_WRITE_INTERVAL`; anything else at once, and nothing that did not change.
    #[test]
    fn gauge_only_changes_wait_and_the_rest_is_written_at_once() {
        let t0 = tokio::time::Instant::now();
        let old = FlashcardPipelineStatus::default();
        assert!(!should_write(Some(&old), &old, Some(t0), t0));
        let mut busy = old.clone();
        busy.queue.waiting = 120;
        busy.workers.live = 3;
        busy.budget.spent_micros = 5_000;
        busy.budget.spent_usd = 0.005;
        busy.budget.summary = "$0.01/$10.00".into();
        let soon = t0 + std::time::Duration::from_secs(5);
        assert!(!should_write(Some(&old), &busy, Some(t0), soon));
        assert!(should_write(
            Some(&old),
            &busy,
            Some(t0),
            t0 + GAUGE_WRITE_INTERVAL
        ));
        // Not written by this process yet (a restart, a new term): written at once.
        assert!(should_write(Some(&old), &busy, None, soon));
        // A change beyond the gauges is written at once.
        let mut scaled = busy.clone();
        scaled.workers.desired = 4;
        assert!(should_write(Some(&old), &scaled, Some(t0), soon));
        let mut stopped = busy.clone();
        stopped.budget.kill_switch = true;
        assert!(should_write(Some(&old), &stopped, Some(t0), soon));
        assert!(should_write(None, &busy, Some(t0), soon));
    }
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.status = Some(status);
        d
    }

    #[test]
    fn rollout_follows_kubectl_rollout_status() {
        let pending = deployment(
            1,
            DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(2),
                updated_replicas: Some(2),
                ..Default::default()
            },
        );
        let r = Rollout::of(Some(&pending), 2);
        assert_eq!(r.ready, 0);
        assert_eq!(r.pending().as_deref(), Some("0/2 pods available"));

        let stale = deployment(
            3,
            DeploymentStatus {
                observed_generation: Some(2),
                ..Default::default()
            },
        );
        assert!(
            Rollout::of(Some(&stale), 1)
                .pending()
                .unwrap()
                .contains("controller")
        );

        let surge = deployment(
            2,
            DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(3),
                updated_replicas: Some(2),
                ready_replicas: Some(3),
                available_replicas: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(
            Rollout::of(Some(&surge), 2).pending().as_deref(),
            Some("1 old pod(s) terminating")
        );

        let done = deployment(
            2,
            DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(2),
                updated_replicas: Some(2),
                ready_replicas: Some(2),
                available_replicas: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(Rollout::of(Some(&done), 2).pending(), None);
        assert_eq!(
            Rollout::of(None, 2).pending().as_deref(),
            Some("not created yet")
        );
        // Scaled to zero and nothing left: complete.
        let zero = deployment(
            4,
            DeploymentStatus {
                observed_generation: Some(4),
                ..Default::default()
            },
        );
        assert_eq!(Rollout::of(Some(&zero), 0).pending(), None);
    }
}
