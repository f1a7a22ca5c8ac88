//! Builds the status (conditions, queue, workers, budget) and writes it with server-side apply
//! to the status subresource, only when it changed.

use flashcard_service::budget::{micros_to_usd, usd_to_micros};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::observe::Observed;
use crate::budget::{Holder, Level};
use crate::crd::{
    BudgetStatus, FlashcardPipeline, FlashcardPipelineStatus, QueueStatus, WorkersStatus, condition,
};
use crate::render::MANAGER;
use crate::scaling::{ScaleDecision, ScaleReason};

/// Everything one reconcile learned.
pub struct Facts<'a> {
    pub observed: Result<&'a Observed, &'a str>,
    pub scale: ScaleDecision,
    /// Set when the replica count changed in this reconcile.
    pub scaled_at: Option<jiff::Timestamp>,
    pub monitoring: bool,
    pub applied: bool,
}

fn cond(
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

/// The new status.
pub fn build(p: &FlashcardPipeline, f: &Facts<'_>) -> FlashcardPipelineStatus {
    let old = p.status.clone().unwrap_or_default();
    let generation = p.meta().generation;
    let live = f.observed.ok().map(|o| o.workers.len() as u32);
    let queue = match f.observed {
        Ok(o) => QueueStatus {
            waiting: o.queue.waiting,
            active: o.queue.active,
            delayed: o.queue.delayed,
        },
        Err(_) => old.queue.clone(),
    };
    let current = live.unwrap_or(old.workers.current);
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
        current,
        summary: format!("{current}/{}", f.scale.replicas),
        last_scale_time,
        last_scale_reason,
    };
    let limit_usd = micros_to_usd(usd_to_micros(p.spec.budget.limit_usd));
    let budget = match f.observed {
        Ok(o) => {
            let ks = &o.budget.after;
            let spent = micros_to_usd(o.spent_micros);
            BudgetStatus {
                period: o.period.clone(),
                spent_usd: spent,
                spent_micros: o.spent_micros,
                reserved_usd: micros_to_usd(o.reserved_micros),
                store_epoch: o.epoch.clone(),
                limit_usd,
                percent: (o.budget.percent * 100.0).round() / 100.0,
                summary: format!("{spent:.2}/{limit_usd:.2}"),
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

    let store_err = f.observed.err();
    let mut conditions = vec![
        match store_err {
            None => cond(
                condition::READY,
                Some(true),
                "Reconciled",
                "children applied; store reachable".into(),
                generation,
            ),
            Some(e) => cond(
                condition::READY,
                Some(false),
                "StoreUnavailable",
                format!("cannot read the store: {e}"),
                generation,
            ),
        },
        if f.applied {
            cond(
                condition::PROGRESSING,
                Some(true),
                "ChildrenApplied",
                "applied changed children".into(),
                generation,
            )
        } else {
            cond(
                condition::PROGRESSING,
                Some(false),
                "UpToDate",
                "children match the spec".into(),
                generation,
            )
        },
        {
            let msg = format!(
                "{} worker(s); the queue asks for {} (min {}, max {})",
                f.scale.replicas,
                f.scale.recommended,
                p.spec.worker.min_replicas,
                p.spec.worker.max_replicas
            );
            let active = !matches!(
                f.scale.reason,
                ScaleReason::Paused | ScaleReason::StoreUnavailable
            );
            cond(
                condition::SCALING,
                Some(active),
                f.scale.reason.as_str(),
                msg,
                generation,
            )
        },
        match f.observed {
            Ok(o) => {
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
                                "{:.1}% of ${limit_usd:.2} spent in {}",
                                o.budget.percent, o.period
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
            Err(_) => cond(
                condition::BUDGET_EXCEEDED,
                None,
                "StoreUnavailable",
                "spend unknown: the store cannot be read".into(),
                generation,
            ),
        },
        if f.monitoring {
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
                "monitoring.coreos.com CRDs are not installed; PrometheusRule and ServiceMonitor skipped".into(),
                generation,
            )
        },
    ];
    carry_transition_times(&mut conditions, &old.conditions);
    FlashcardPipelineStatus {
        conditions,
        observed_generation: generation,
        queue,
        workers,
        budget,
    }
}

/// Writes `status` unless it equals the current one; returns whether it patched.
pub async fn write(
    api: &Api<FlashcardPipeline>,
    p: &FlashcardPipeline,
    status: FlashcardPipelineStatus,
) -> Result<bool, kube::Error> {
    if p.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": "flashcards.dev/v1alpha1",
        "kind": "FlashcardPipeline",
        "status": status,
    });
    api.patch_status(
        &p.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}
