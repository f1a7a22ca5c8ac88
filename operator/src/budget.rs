//! The budget decision: what the operator writes into the pipeline's store. Pure; the
//! reconciler applies it.
//!
//! - the budget in force (limit, period, warn percent, enforcement from
//!   `spec.budget.killSwitch.automatic`) is written to the store whenever it differs, so every
//!   api and worker pod follows a change at once, without a rollout;
//! - the automatic budget stop (`setBy=budget`) is the store's own: it switches on when spend
//!   reaches the enforced limit and ends by itself when the limit covers the spend again or the
//!   period rolls over (see `flashcard_store::budget_stop_lapsed`);
//! - manual (`spec.budget.killSwitch.manual`): on with the given reason, `setBy=resource`;
//!   cleared only when the manual switch is turned off again;
//! - a switch an earlier operator version set (`setBy=operator`) is cleared: the budget stop
//!   now does its job;
//! - a kill-switch a person set through the admin API is never cleared.
//!
//! After the store lost its data ([`restore`]), the period's spend is restored from the last
//! value the status recorded.

use flashcard_core::budget::usd_to_micros;
use flashcard_store::{BudgetConfig, BudgetSource, BudgetState, KillSwitch, SetBy};

use crate::crd::{BudgetSpec, BudgetStatus};

/// Who holds the kill-switch, as the status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An earlier operator version, because the budget was reached.
    Operator,
    /// A person, through `spec.budget.killSwitch.manual`.
    Resource,
    /// The automatic budget stop: spend reached the limit in force.
    Budget,
    /// A person, through the admin API.
    Admin,
}

impl Holder {
    pub fn as_str(self) -> &'static str {
        match self {
            Holder::Operator => "operator",
            Holder::Resource => "resource",
            Holder::Budget => "budget",
            Holder::Admin => "admin",
        }
    }

    /// Who holds an enabled kill-switch.
    pub fn of(ks: &KillSwitch) -> Option<Self> {
        if !ks.enabled {
            return None;
        }
        Some(match ks.set_by {
            Some(SetBy::Operator) => Holder::Operator,
            Some(SetBy::Resource) => Holder::Resource,
            Some(SetBy::Budget) => Holder::Budget,
            Some(SetBy::Admin) | None => Holder::Admin,
        })
    }
}

/// What to do with the store's kill-switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Keep,
    /// Write this (enabled) state.
    Enable(KillSwitch),
    /// Clear it if it is still set by this writer (`clear_kill_switch_if`).
    Clear(SetBy),
}

/// Spend relative to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    NoLimit,
    WithinBudget,
    NearlyExhausted,
    LimitReached,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::NoLimit => "NoLimit",
            Level::WithinBudget => "WithinBudget",
            Level::NearlyExhausted => "NearlyExhausted",
            Level::LimitReached => "LimitReached",
        }
    }
}

/// The decision and the facts behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The budget to write, when the store's differs from the spec.
    pub write: Option<BudgetConfig>,
    pub action: Action,
    pub level: Level,
    /// Spend as percent of the limit (0 without a limit).
    pub percent: f64,
    /// The kill-switch state after the action.
    pub after: KillSwitch,
}

/// The budget in force that `spec` asks for.
pub fn desired(spec: &BudgetSpec) -> BudgetConfig {
    BudgetConfig {
        limit_micros: usd_to_micros(spec.limit_usd),
        period: spec.period.into(),
        warn_percent: spec.warn_at_percent,
        enforce: spec.kill_switch.automatic,
        source: BudgetSource::Operator,
    }
}

/// Decides from the spec and what the store holds; `now_ms` stamps a new kill-switch.
pub fn decide(spec: &BudgetSpec, state: &BudgetState, now_ms: u64) -> Decision {
    let want = desired(spec);
    let write = (!state.stored || state.config != want).then_some(want);
    let limit_micros = want.limit_micros;
    let spent_micros = state.spend.spent_micros;
    let percent = if limit_micros == 0 {
        0.0
    } else {
        spent_micros as f64 * 100.0 / limit_micros as f64
    };
    let level = if limit_micros == 0 {
        Level::NoLimit
    } else if spent_micros >= limit_micros {
        Level::LimitReached
    } else if percent >= spec.warn_at_percent {
        Level::NearlyExhausted
    } else {
        Level::WithinBudget
    };
    let current = &state.kill_switch;
    let holder = Holder::of(current);
    let ks = &spec.kill_switch;
    let action = if ks.manual {
        match holder {
            Some(Holder::Resource) if current.reason.as_deref() == Some(ks.reason.as_str()) => {
                Action::Keep
            }
            Some(Holder::Admin) => Action::Keep,
            _ => Action::Enable(KillSwitch::manual(
                SetBy::Resource,
                Some(ks.reason.clone()),
                now_ms,
            )),
        }
    } else {
        match holder {
            Some(Holder::Resource) => Action::Clear(SetBy::Resource),
            Some(Holder::Operator) => Action::Clear(SetBy::Operator),
            Some(Holder::Budget | Holder::Admin) | None => Action::Keep,
        }
    };
    let after = match &action {
        Action::Keep => current.clone(),
        Action::Enable(ks) => ks.clone(),
        Action::Clear(_) => KillSwitch::off(),
    };
    Decision {
        write,
        action,
        level,
        percent,
        after,
    }
}

/// What to do about the store's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// The store has the epoch the status recorded.
    Nothing,
    /// No epoch was recorded yet (first reconcile, or an upgrade): adopt the store's, creating
    /// one if it has none.
    Adopt,
    /// The store lost its data (its epoch is gone or another): raise the period's spend back to
    /// what the status recorded, then adopt a new epoch.
    Restore { period: String, spent_micros: u64 },
}

/// Compares the store's epoch with the one the status recorded.
pub fn restore(recorded: Option<&BudgetStatus>, state: &BudgetState) -> Restore {
    let seen = state.epoch.as_ref().map(|e| e.id.as_str());
    match recorded.and_then(|b| b.store_epoch.as_deref()) {
        None => {
            if seen.is_some() {
                Restore::Nothing
            } else {
                Restore::Adopt
            }
        }
        Some(epoch) if Some(epoch) == seen => Restore::Nothing,
        Some(_) => {
            let b = recorded.map(|b| (b.period.clone(), b.spent_micros));
            match b {
                // Spend of an earlier period is history: the new period starts at zero anyway.
                Some((period, spent)) if period == state.period && spent > 0 => Restore::Restore {
                    period,
                    spent_micros: spent,
                },
                _ => Restore::Adopt,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KillSwitchSpec;
    use flashcard_store::{Epoch, Spend};

    fn spec(limit: f64) -> BudgetSpec {
        BudgetSpec {
            limit_usd: limit,
            ..BudgetSpec::default()
        }
    }

    fn state(spec: &BudgetSpec, spent_usd: f64, ks: KillSwitch) -> BudgetState {
        BudgetState {
            config: desired(spec),
            stored: true,
            kill_switch: ks,
            period: "2026-12".into(),
            spend: Spend {
                spent_micros: usd_to_micros(spent_usd),
                ..Spend::default()
            },
            epoch: Some(Epoch {
                id: "e1".into(),
                created_ms: 1,
            }),
        }
    }

    fn on(set_by: SetBy, reason: &str) -> KillSwitch {
        KillSwitch::manual(set_by, Some(reason.into()), 1)
    }

    #[test]
    fn writes_the_budget_only_when_the_store_differs() {
        let s = spec(100.0);
        let same = decide(&s, &state(&s, 0.0, KillSwitch::off()), 0);
        assert_eq!(same.write, None);
        let raised = spec(200.0);
        let d = decide(&raised, &state(&s, 0.0, KillSwitch::off()), 0);
        let written = d.write.expect("a changed limit is written");
        assert_eq!(written.limit_micros, 200_000_000);
        assert_eq!(written.source, BudgetSource::Operator);
        assert!(written.enforce);
        let mut missing = state(&s, 0.0, KillSwitch::off());
        missing.stored = false;
        assert!(
            decide(&s, &missing, 0).write.is_some(),
            "a lost budget is rewritten"
        );
        let mut advisory = spec(100.0);
        advisory.kill_switch.automatic = false;
        let d = decide(&advisory, &state(&s, 0.0, KillSwitch::off()), 0);
        assert_eq!(d.write.map(|w| w.enforce), Some(false));
    }

    #[test]
    fn levels_follow_the_spend() {
        let s = spec(100.0);
        let d = decide(&s, &state(&s, 85.0, KillSwitch::off()), 0);
        assert_eq!((d.action, d.level), (Action::Keep, Level::NearlyExhausted));
        assert!((d.percent - 85.0).abs() < 1e-9);
        assert_eq!(
            decide(&s, &state(&s, 10.0, KillSwitch::off()), 0).level,
            Level::WithinBudget
        );
        assert_eq!(
            decide(&s, &state(&s, 100.0, KillSwitch::off()), 0).level,
            Level::LimitReached
        );
        let none = spec(0.0);
        assert_eq!(
            decide(&none, &state(&none, 5.0, KillSwitch::off()), 0).level,
            Level::NoLimit
        );
    }

    #[test]
    fn the_budget_stop_is_left_to_the_store() {
        let s = spec(100.0);
        let stop = on(SetBy::Budget, "Budget limit reached");
        let d = decide(&s, &state(&s, 120.0, stop.clone()), 0);
        assert_eq!(d.action, Action::Keep);
        assert_eq!(Holder::of(&d.after), Some(Holder::Budget));
    }

    #[test]
    fn an_earlier_operator_switch_is_cleared() {
        let s = spec(100.0);
        let old = on(SetBy::Operator, "budget reached");
        let d = decide(&s, &state(&s, 120.0, old), 0);
        assert_eq!(d.action, Action::Clear(SetBy::Operator));
    }

    #[test]
    fn never_clears_an_admin_switch() {
        let admin = on(SetBy::Admin, "incident 42");
        for (limit, spent) in [(100.0, 0.0), (100.0, 500.0), (0.0, 0.0)] {
            let s = spec(limit);
            let d = decide(&s, &state(&s, spent, admin.clone()), 0);
            assert_eq!(d.action, Action::Keep);
            assert!(d.after.enabled);
        }
        let mut manual = spec(0.0);
        manual.kill_switch.manual = true;
        manual.kill_switch.reason = "x".into();
        assert_eq!(
            decide(&manual, &state(&manual, 0.0, admin), 0).action,
            Action::Keep
        );
    }

    #[test]
    fn manual_switch_from_the_resource() {
        let mut s = spec(100.0);
        s.kill_switch = KillSwitchSpec {
            automatic: true,
            manual: true,
            reason: "maintenance".into(),
        };
        let d = decide(&s, &state(&s, 0.0, KillSwitch::off()), 7);
        let Action::Enable(ks) = &d.action else {
            panic!("{:?}", d.action)
        };
        assert_eq!((ks.set_by, ks.since), (Some(SetBy::Resource), Some(7)));
        assert_eq!(ks.reason.as_deref(), Some("maintenance"));
        let applied = ks.clone();
        assert_eq!(
            decide(&s, &state(&s, 500.0, applied.clone()), 8).action,
            Action::Keep
        );
        // It takes over from the budget stop (a person's switch is never cleared by itself).
        let d = decide(&s, &state(&s, 0.0, on(SetBy::Budget, "x")), 9);
        assert!(matches!(d.action, Action::Enable(ref k) if k.set_by == Some(SetBy::Resource)));
        s.kill_switch.manual = false;
        assert_eq!(
            decide(&s, &state(&s, 0.0, applied), 10).action,
            Action::Clear(SetBy::Resource)
        );
    }

    fn recorded(epoch: Option<&str>, period: &str, spent_micros: u64) -> BudgetStatus {
        BudgetStatus {
            period: period.into(),
            spent_micros,
            store_epoch: epoch.map(str::to_owned),
            ..BudgetStatus::default()
        }
    }

    #[test]
    fn a_store_that_lost_its_data_gets_the_recorded_spend_back() {
        let s = spec(100.0);
        let mut lost = state(&s, 0.0, KillSwitch::off());
        lost.epoch = None;
        let status = recorded(Some("e1"), "2026-12", 37_000_000);
        assert_eq!(
            restore(Some(&status), &lost),
            Restore::Restore {
                period: "2026-12".into(),
                spent_micros: 37_000_000
            }
        );
        // A new epoch some process created in the meantime tells the same.
        let mut other = state(&s, 0.0, KillSwitch::off());
        other.epoch = Some(Epoch {
            id: "e2".into(),
            created_ms: 2,
        });
        assert!(matches!(
            restore(Some(&status), &other),
            Restore::Restore { .. }
        ));
        // The recorded spend belongs to an earlier period: nothing to bring back.
        let old = recorded(Some("e1"), "2026-11", 37_000_000);
        assert_eq!(restore(Some(&old), &lost), Restore::Adopt);
    }

    #[test]
    fn the_same_epoch_or_none_recorded_restores_nothing() {
        let s = spec(100.0);
        let live = state(&s, 5.0, KillSwitch::off());
        assert_eq!(
            restore(Some(&recorded(Some("e1"), "2026-12", 1)), &live),
            Restore::Nothing
        );
        assert_eq!(restore(None, &live), Restore::Nothing);
        let mut fresh = live.clone();
        fresh.epoch = None;
        assert_eq!(restore(None, &fresh), Restore::Adopt);
        assert_eq!(
            restore(Some(&recorded(None, "2026-12", 9)), &fresh),
            Restore::Adopt
        );
    }
}
