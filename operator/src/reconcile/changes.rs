//! The Events of one reconcile: what changed between the last status and the new one, plus the
//! scale change. Pure, so every Event and its note is unit-tested.
//!
//! Reasons carry the direction or the holder (`ScaledUp`/`ScaledDown`, `KillSwitchOnBudget`,
//! `KillSwitchOnManual`, ...), and the recorder keys by note as well (see [`crate::events`]), so
//! each distinct change is its own Event. Deriving them from the persisted status rather than
//! from process memory means an operator restart or a new leader does not repeat them.

use crate::crd::{FlashcardPipelineStatus, condition};
use crate::events::Event;
use crate::scaling::{QueueDepth, ScaleDecision};
use flashcard_core::budget::format_percent;

/// A change of the worker replicas in this reconcile.
#[derive(Debug, Clone, Copy)]
pub struct ScaleChange {
    pub from: u32,
    pub decision: ScaleDecision,
    pub queue: Option<QueueDepth>,
}

fn reason_of<'a>(s: &'a FlashcardPipelineStatus, type_: &str) -> Option<&'a str> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

fn message_of<'a>(s: &'a FlashcardPipelineStatus, type_: &str) -> &'a str {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or("", |c| c.message.as_str())
}

/// The message of condition `type_` when its reason is `reason`.
fn failing<'a>(s: &'a FlashcardPipelineStatus, type_: &str, reason: &str) -> Option<&'a str> {
    (reason_of(s, type_) == Some(reason)).then(|| message_of(s, type_))
}

/// The Events for the step from `old` (None: the pipeline had no status) to `new`.
pub fn events(
    old: Option<&FlashcardPipelineStatus>,
    new: &FlashcardPipelineStatus,
    scale: Option<ScaleChange>,
) -> Vec<Event> {
    let blank = FlashcardPipelineStatus::default();
    let old = old.unwrap_or(&blank);
    let mut out = Vec::new();

    if let Some(s) = scale {
        let to = s.decision.replicas;
        let reason = if to > s.from {
            "ScaledUp"
        } else {
            "ScaledDown"
        };
        let q = s.queue.unwrap_or_default();
        out.push(Event::normal(
            reason,
            "Scale",
            format!(
                "workers {} -> {to}: {} (waiting {}, active {}, delayed {})",
                s.from,
                s.decision.reason.as_str(),
                q.waiting,
                q.active,
                q.delayed
            ),
        ));
    }

    // The kill-switch: on, off, or on for another holder or reason.
    let (ob, nb) = (&old.budget, &new.budget);
    let same = ob.kill_switch == nb.kill_switch
        && ob.kill_switch_set_by == nb.kill_switch_set_by
        && ob.kill_switch_reason == nb.kill_switch_reason;
    if !same {
        if nb.kill_switch {
            let by = nb.kill_switch_set_by.as_deref().unwrap_or("admin");
            let reason = match by {
                "budget" => "KillSwitchOnBudget",
                "resource" => "KillSwitchOnManual",
                "operator" => "KillSwitchOnOperator",
                _ => "KillSwitchOnAdmin",
            };
            let why = nb
                .kill_switch_reason
                .as_deref()
                .unwrap_or("no reason given");
            out.push(Event::warning(
                reason,
                "KillSwitch",
                format!("kill-switch on (set by {by}): {why}; new jobs get 429"),
            ));
        } else if ob.kill_switch {
            let by = ob.kill_switch_set_by.as_deref().unwrap_or("admin");
            out.push(Event::normal(
                "KillSwitchOff",
                "KillSwitch",
                format!(
                    "kill-switch off (was set by {by}): {} of the budget spent in {}",
                    format_percent(nb.percent),
                    nb.period
                ),
            ));
        }
    }

    let restored = message_of(new, condition::SPEND_RESTORED);
    if !restored.is_empty() && restored != message_of(old, condition::SPEND_RESTORED) {
        out.push(Event::warning(
            "SpendRestored",
            "Budget",
            restored.to_owned(),
        ));
    }

    if reason_of(new, condition::BUDGET_EXCEEDED) == Some("NearlyExhausted")
        && reason_of(old, condition::BUDGET_EXCEEDED) != Some("NearlyExhausted")
    {
        out.push(Event::warning(
            "BudgetNearlyExhausted",
            "Budget",
            message_of(new, condition::BUDGET_EXCEEDED).to_owned(),
        ));
    }

    for (type_, reason) in [
        (condition::APPLIED, "ApplyFailed"),
        (condition::SECRETS_ALLOWED, "SecretNotLabelled"),
    ] {
        if let Some(why) = failing(new, type_, reason)
            && failing(old, type_, reason) != Some(why)
        {
            out.push(Event::warning(reason, "Apply", why.to_owned()));
        }
    }

    let store_down =
        |s: &FlashcardPipelineStatus| reason_of(s, condition::READY) == Some("StoreUnavailable");
    if store_down(new) && !store_down(old) {
        out.push(Event::warning(
            "StoreUnavailable",
            "Observe",
            format!(
                "keeping {} workers: {}",
                new.workers.desired,
                message_of(new, condition::READY)
            ),
        ));
    } else if store_down(old) && !store_down(new) && !old.conditions.is_empty() {
        out.push(Event::normal(
            "StoreAvailable",
            "Observe",
            "the store answers again".to_owned(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::ScaleReason;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn with_ready(reason: &str) -> FlashcardPipelineStatus {
        FlashcardPipelineStatus {
            conditions: vec![Condition {
                type_: condition::READY.into(),
                status: "False".into(),
                reason: reason.into(),
                message: "cannot read the store: refused".into(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        }
    }

    fn switched(by: Option<&str>, reason: Option<&str>) -> FlashcardPipelineStatus {
        let mut s = FlashcardPipelineStatus::default();
        s.budget.kill_switch = by.is_some();
        s.budget.kill_switch_set_by = by.map(Into::into);
        s.budget.kill_switch_reason = reason.map(Into::into);
        s.budget.period = "2026-11".into();
        s
    }

    #[test]
    fn scale_events_carry_the_direction() {
        let change = |from, to| ScaleChange {
            from,
            decision: ScaleDecision {
                replicas: to,
                recommended: to,
                reason: ScaleReason::QueueGrew,
            },
            queue: Some(QueueDepth {
                waiting: 200,
                active: 0,
                delayed: 0,
            }),
        };
        let s = FlashcardPipelineStatus::default();
        let up = events(Some(&s), &s, Some(change(0, 13)));
        assert_eq!(up[0].reason, "ScaledUp");
        assert_eq!(
            up[0].note,
            "workers 0 -> 13: QueueGrew (waiting 200, active 0, delayed 0)"
        );
        let down = events(Some(&s), &s, Some(change(13, 1)));
        assert_eq!(down[0].reason, "ScaledDown");
        assert!(down[0].note.starts_with("workers 13 -> 1"));
    }

    #[test]
    fn each_holder_has_its_own_reason_and_note() {
        let off = switched(None, None);
        let budget = switched(
            Some("budget"),
            Some("Budget limit reached: $0.0052 of $0.005 spent in period 2026-11"),
        );
        let manual = switched(Some("resource"), Some("maintenance"));
        let admin = switched(Some("admin"), Some("incident 7"));
        let e = events(Some(&off), &budget, None);
        assert_eq!(e[0].reason, "KillSwitchOnBudget");
        assert!(e[0].note.contains("$0.0052 of $0.005"), "{}", e[0].note);
        let e = events(Some(&budget), &manual, None);
        assert_eq!(e[0].reason, "KillSwitchOnManual");
        assert!(e[0].note.contains("(set by resource): maintenance"));
        let e = events(Some(&manual), &admin, None);
        assert_eq!(e[0].reason, "KillSwitchOnAdmin");
        let e = events(Some(&admin), &off, None);
        assert_eq!(e[0].reason, "KillSwitchOff");
        assert!(e[0].note.contains("was set by admin"));
        // Unchanged: nothing.
        assert!(events(Some(&admin), &admin, None).is_empty());
        // A new manual reason is a new Event.
        let manual2 = switched(Some("resource"), Some("migration"));
        assert!(
            events(Some(&manual), &manual2, None)[0]
                .note
                .contains("migration")
        );
    }

    #[test]
    fn restored_spend_is_an_event_once() {
        let mut restored = FlashcardPipelineStatus::default();
        restored.conditions.push(Condition {
            type_: condition::SPEND_RESTORED.into(),
            status: "True".into(),
            reason: "StoreLostData".into(),
            message: "the store lost its data at 2026-12-01T10:00:00Z; $37.00 restored".into(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        });
        let before = FlashcardPipelineStatus::default();
        let e = events(Some(&before), &restored, None);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].reason, "SpendRestored");
        assert!(e[0].note.contains("$37.00 restored"));
        assert!(events(Some(&restored), &restored, None).is_empty());
    }

    #[test]
    fn store_outage_is_reported_once_and_its_end_too() {
        let up = with_ready("Available");
        let down = with_ready("StoreUnavailable");
        let e = events(Some(&up), &down, None);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].reason, "StoreUnavailable");
        assert!(events(Some(&down), &down, None).is_empty());
        assert_eq!(events(Some(&down), &up, None)[0].reason, "StoreAvailable");
        // A first status that is already "down" is reported; one that is fine is not news.
        assert_eq!(events(None, &down, None)[0].reason, "StoreUnavailable");
        assert!(events(None, &up, None).is_empty());
    }
}
