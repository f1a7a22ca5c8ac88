//! The budget decision: compare the period's spend with the spec and say what to do with the
//! store's kill-switch. Pure; the reconciler applies the action.
//!
//! - automatic: on at the limit (`setBy=operator`), off again when the spend is below the limit
//!   (next period, raised or removed limit, automatic switched off);
//! - manual (`spec.budget.killSwitch.manual`): on with the given reason, `setBy=resource`;
//!   cleared only when the manual switch is turned off again;
//! - the service's own budget switch (`setBy=budget`, set when the period's budget cannot cover
//!   another job): cleared when the period rolls over, or the limit is raised or removed;
//! - a kill-switch a person set through the admin API is never cleared.

use flashcard_service::budget::{BudgetPeriod, usd_to_micros};
use flashcard_service::store::{KillSwitch, SetBy};

use crate::crd::BudgetSpec;

/// Who holds the kill-switch, as the status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The operator, because the budget was reached.
    Operator,
    /// A person, through `spec.budget.killSwitch.manual`.
    Resource,
    /// The service, because the period's budget cannot cover another job.
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
    pub action: Action,
    pub level: Level,
    /// Spend as percent of the limit (0 without a limit).
    pub percent: f64,
    /// The kill-switch state after the action.
    pub after: KillSwitch,
}

/// Decides. `period` is the current period key; `now_ms` stamps a new kill-switch;
/// `previous_limit_usd` is the limit the last status reported (to notice a raised limit).
pub fn decide(
    spec: &BudgetSpec,
    spent_micros: u64,
    current: &KillSwitch,
    period: &str,
    now_ms: u64,
    previous_limit_usd: Option<f64>,
) -> Decision {
    let limit_micros = usd_to_micros(spec.limit_usd);
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
    let enable = |set_by: SetBy, reason: String| {
        Action::Enable(KillSwitch {
            enabled: true,
            reason: Some(reason),
            set_by: Some(set_by),
            since: Some(now_ms),
        })
    };
    let holder = Holder::of(current);
    let ks = &spec.kill_switch;
    let over = level == Level::LimitReached && ks.automatic;
    let budget_switch_stale = || {
        let rolled_over = current
            .since
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms as i64).ok())
            .is_some_and(|since| BudgetPeriod::from(spec.period).key(since) != period);
        let raised = previous_limit_usd.is_some_and(|before| spec.limit_usd > before);
        rolled_over || raised || limit_micros == 0
    };
    let action = if ks.manual {
        let reason = ks.reason.clone();
        match holder {
            Some(Holder::Resource) if current.reason.as_deref() == Some(reason.as_str()) => {
                Action::Keep
            }
            Some(Holder::Admin) => Action::Keep,
            _ => enable(SetBy::Resource, reason),
        }
    } else {
        match holder {
            Some(Holder::Admin) => Action::Keep,
            Some(Holder::Budget) if budget_switch_stale() => Action::Clear(SetBy::Budget),
            Some(Holder::Budget) => Action::Keep,
            Some(Holder::Resource) if over => enable(
                SetBy::Operator,
                limit_reason(spent_micros, limit_micros, period),
            ),
            Some(Holder::Resource) => Action::Clear(SetBy::Resource),
            Some(Holder::Operator) if over => Action::Keep,
            Some(Holder::Operator) => Action::Clear(SetBy::Operator),
            None if over => enable(
                SetBy::Operator,
                limit_reason(spent_micros, limit_micros, period),
            ),
            None => Action::Keep,
        }
    };
    let after = match &action {
        Action::Keep => current.clone(),
        Action::Enable(ks) => ks.clone(),
        Action::Clear(_) => KillSwitch::off(),
    };
    Decision {
        action,
        level,
        percent,
        after,
    }
}

fn limit_reason(spent: u64, limit: u64, period: &str) -> String {
    // Exact amounts: a sub-cent budget must not read "spent $0.00 of $0.00".
    format!(
        "budget reached: spent {} of {} in period {period}",
        crate::format::usd(spent),
        crate::format::usd(limit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KillSwitchSpec;

    fn spec(limit: f64) -> BudgetSpec {
        BudgetSpec {
            limit_usd: limit,
            ..BudgetSpec::default()
        }
    }

    fn usd(x: f64) -> u64 {
        usd_to_micros(x)
    }

    fn on(set_by: SetBy, reason: &str) -> KillSwitch {
        KillSwitch {
            enabled: true,
            reason: Some(reason.into()),
            set_by: Some(set_by),
            since: Some(1),
        }
    }

    #[test]
    fn switches_on_at_the_limit() {
        let d = decide(
            &spec(100.0),
            usd(100.0),
            &KillSwitch::off(),
            "2026-11",
            42,
            None,
        );
        assert_eq!(d.level, Level::LimitReached);
        let Action::Enable(ks) = &d.action else {
            panic!("{:?}", d.action)
        };
        assert_eq!(ks.set_by, Some(SetBy::Operator));
        assert_eq!(ks.since, Some(42));
        assert!(ks.reason.as_deref().unwrap().contains("$100.00 of $100.00"));
        assert!(d.after.enabled);
    }

    #[test]
    fn sub_cent_budgets_print_their_digits() {
        let d = decide(&spec(0.005), 5_200, &KillSwitch::off(), "2026-11", 1, None);
        let Action::Enable(ks) = &d.action else {
            panic!("{:?}", d.action)
        };
        let reason = ks.reason.as_deref().unwrap();
        assert!(reason.contains("spent $0.0052 of $0.005"), "{reason}");
    }

    #[test]
    fn below_limit_does_nothing_but_warns() {
        let d = decide(&spec(100.0), usd(85.0), &KillSwitch::off(), "p", 0, None);
        assert_eq!((d.action, d.level), (Action::Keep, Level::NearlyExhausted));
        assert!((d.percent - 85.0).abs() < 1e-9);
        let d = decide(&spec(100.0), usd(10.0), &KillSwitch::off(), "p", 0, None);
        assert_eq!(d.level, Level::WithinBudget);
    }

    #[test]
    fn stays_on_while_over_and_off_when_the_limit_is_raised() {
        let ours = on(SetBy::Operator, "budget reached");
        let d = decide(&spec(100.0), usd(120.0), &ours, "p", 0, None);
        assert_eq!(d.action, Action::Keep);
        let d = decide(&spec(200.0), usd(120.0), &ours, "p", 0, None);
        assert_eq!(d.action, Action::Clear(SetBy::Operator));
        assert!(!d.after.enabled);
    }

    #[test]
    fn period_roll_over_clears_the_operator_switch() {
        // The new period's spend starts at zero.
        let ours = on(SetBy::Operator, "budget reached");
        let d = decide(&spec(100.0), 0, &ours, "2026-12", 0, None);
        assert_eq!(d.action, Action::Clear(SetBy::Operator));
    }

    #[test]
    fn removing_the_limit_or_automatic_clears_the_operator_switch() {
        let ours = on(SetBy::Operator, "budget reached");
        assert_eq!(
            decide(&spec(0.0), usd(500.0), &ours, "p", 0, None).action,
            Action::Clear(SetBy::Operator)
        );
        let mut s = spec(100.0);
        s.kill_switch.automatic = false;
        assert_eq!(
            decide(&s, usd(500.0), &ours, "p", 0, None).action,
            Action::Clear(SetBy::Operator)
        );
        assert_eq!(
            decide(&s, usd(500.0), &KillSwitch::off(), "p", 0, None).action,
            Action::Keep
        );
    }

    #[test]
    fn never_clears_an_admin_switch() {
        let admin = on(SetBy::Admin, "incident 42");
        for (limit, spent) in [(100.0, 0.0), (100.0, 500.0), (0.0, 0.0)] {
            let d = decide(&spec(limit), usd(spent), &admin, "p", 0, None);
            assert_eq!(d.action, Action::Keep);
            assert!(d.after.enabled);
        }
    }

    #[test]
    fn service_budget_switch_ends_with_its_period_or_a_raised_limit() {
        // Set on 2026-11-26 (monthly period 2026-11).
        let since: jiff::Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let budget = KillSwitch {
            since: Some(since.as_millisecond() as u64),
            ..on(SetBy::Budget, "cannot cover another job")
        };
        let keep = decide(&spec(100.0), usd(99.0), &budget, "2026-11", 0, Some(100.0));
        assert_eq!(keep.action, Action::Keep);
        assert_eq!(Holder::of(&budget), Some(Holder::Budget));
        let next_period = decide(&spec(100.0), 0, &budget, "2026-12", 0, Some(100.0));
        assert_eq!(next_period.action, Action::Clear(SetBy::Budget));
        let raised = decide(&spec(150.0), usd(99.0), &budget, "2026-11", 0, Some(100.0));
        assert_eq!(raised.action, Action::Clear(SetBy::Budget));
        let removed = decide(&spec(0.0), usd(99.0), &budget, "2026-11", 0, Some(100.0));
        assert_eq!(removed.action, Action::Clear(SetBy::Budget));
    }

    #[test]
    fn manual_switch_from_the_resource() {
        let mut s = spec(100.0);
        s.kill_switch = KillSwitchSpec {
            automatic: true,
            manual: true,
            reason: "maintenance".into(),
        };
        let d = decide(&s, 0, &KillSwitch::off(), "p", 7, None);
        let Action::Enable(ks) = &d.action else {
            panic!("{:?}", d.action)
        };
        assert_eq!(ks.set_by, Some(SetBy::Resource));
        assert_eq!(ks.reason.as_deref(), Some("maintenance"));
        assert_eq!(Holder::of(ks), Some(Holder::Resource));
        // Applied: nothing more to do, even over the limit.
        let applied = ks.clone();
        assert_eq!(
            decide(&s, usd(500.0), &applied, "p", 8, None).action,
            Action::Keep
        );
        // An operator switch is taken over by the manual one (so it is no longer auto-cleared).
        let d = decide(&s, 0, &on(SetBy::Operator, "x"), "p", 9, None);
        assert!(matches!(d.action, Action::Enable(ref k) if k.set_by == Some(SetBy::Resource)));
        // Turned off in the resource: cleared.
        s.kill_switch.manual = false;
        assert_eq!(
            decide(&s, 0, &applied, "p", 10, None).action,
            Action::Clear(SetBy::Resource)
        );
        // ... unless the budget is exhausted: then the operator takes over.
        let d = decide(&s, usd(100.0), &applied, "p", 11, None);
        assert!(matches!(d.action, Action::Enable(ref k) if k.set_by == Some(SetBy::Operator)));
    }

    #[test]
    fn manual_switch_never_overrides_an_admin_switch() {
        let mut s = spec(0.0);
        s.kill_switch.manual = true;
        s.kill_switch.reason = "x".into();
        let admin = on(SetBy::Admin, "incident");
        assert_eq!(decide(&s, 0, &admin, "p", 0, None).action, Action::Keep);
    }
}
