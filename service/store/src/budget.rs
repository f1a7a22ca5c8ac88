//! The budget as the store keeps it: the budget in force, reservation pricing, the store epoch,
//! and the rule that ends the automatic budget stop. Both backends (and the Lua scripts, which
//! mirror `flashcard_core::budget::Pricing::reservation` and [`budget_stop_lapsed`]; a test on a
//! real redis-server holds the stop rule equal in both) follow these definitions.

use serde::{Deserialize, Serialize};

use super::{KillSwitch, SetBy, Spend};
use flashcard_core::budget::{BudgetPeriod, format_usd};

/// Who wrote the budget in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetSource {
    /// The operator, from the `FlashcardPipeline`; flags never replace it.
    Operator,
    /// A process's command line (standalone, or api/worker without the operator).
    Flags,
}

impl BudgetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetSource::Operator => "operator",
            BudgetSource::Flags => "flags",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operator" => Some(BudgetSource::Operator),
            "flags" => Some(BudgetSource::Flags),
            _ => None,
        }
    }
}

/// The budget in force: one source for every api and worker process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetConfig {
    /// Limit per period in micro-dollars; 0 = no limit.
    pub limit_micros: u64,
    pub period: BudgetPeriod,
    /// Percent of the limit at which the budget counts as nearly exhausted.
    pub warn_percent: f64,
    /// Reservations are refused past the limit and the automatic budget stop switches on
    /// (`spec.budget.killSwitch.automatic`); without it the limit only alerts.
    pub enforce: bool,
    pub source: BudgetSource,
}

impl BudgetConfig {
    /// No limit (what a store without a budget means).
    pub fn unlimited() -> Self {
        Self {
            limit_micros: 0,
            period: BudgetPeriod::Monthly,
            warn_percent: 80.0,
            enforce: true,
            source: BudgetSource::Flags,
        }
    }

    /// The limit reservations and the budget stop are held to (0 when not enforced).
    pub fn enforced_limit(&self) -> u64 {
        if self.enforce { self.limit_micros } else { 0 }
    }

    /// The key of the period containing `at`.
    pub fn period_key(&self, at: jiff::Timestamp) -> String {
        self.period.key(at)
    }
}

/// The identity of a store's data: created once; a missing or different epoch means the data
/// was lost (e.g. Redis restarted without persistence) and spend started over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Epoch {
    pub id: String,
    /// When it was created, ms since the epoch.
    pub created_ms: u64,
}

impl Epoch {
    pub fn new(now_ms: u64) -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            created_ms: now_ms,
        }
    }

    /// Stored as `<id>:<created_ms>`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.id, self.created_ms)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (id, created) = text.split_once(':')?;
        Some(Self {
            id: id.to_owned(),
            created_ms: created.parse().ok()?,
        })
    }
}

/// Budget, kill-switch, spend and epoch, read together.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetState {
    /// The budget in force (the stored one, or no limit if none was written).
    pub config: BudgetConfig,
    /// A budget was written to the store.
    pub stored: bool,
    pub kill_switch: KillSwitch,
    /// Key of the current period under `config`.
    pub period: String,
    pub spend: Spend,
    pub epoch: Option<Epoch>,
}

/// The keys of the current daily, weekly and monthly periods: scripts are given all three and
/// pick the one of the budget in force, so a changed period applies at once.
pub fn period_keys(at: jiff::Timestamp) -> [String; 3] {
    [
        BudgetPeriod::Daily.key(at),
        BudgetPeriod::Weekly.key(at),
        BudgetPeriod::Monthly.key(at),
    ]
}

/// Whether an automatic budget stop has ended by itself: its period is over, the limit was
/// removed or is no longer enforced, or the limit was raised above both the one it was taken
/// under and the spend. A person's switch never lapses.
pub fn budget_stop_lapsed(
    ks: &KillSwitch,
    config: &BudgetConfig,
    spent_micros: u64,
    now: jiff::Timestamp,
) -> bool {
    if !ks.enabled || ks.set_by != Some(SetBy::Budget) {
        return false;
    }
    let current = config.period_key(now);
    let taken_in = ks.period.as_deref();
    let limit = config.enforced_limit();
    taken_in.is_some_and(|p| p != current)
        || limit == 0
        || (limit > ks.limit_micros.unwrap_or(0) && limit > spent_micros)
}

/// Why the automatic budget stop is on (rendered from what the stop recorded).
pub fn budget_stop_reason(spent_micros: u64, limit_micros: u64, period: &str) -> String {
    format!(
        "Budget limit reached: {} of {} spent in period {period}",
        format_usd(spent_micros),
        format_usd(limit_micros)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(limit: u64, period: &str) -> KillSwitch {
        KillSwitch {
            limit_micros: Some(limit),
            period: Some(period.into()),
            ..KillSwitch::manual(SetBy::Budget, Some("x".into()), 0)
        }
    }

    fn config(limit: u64) -> BudgetConfig {
        BudgetConfig {
            limit_micros: limit,
            ..BudgetConfig::unlimited()
        }
    }

    #[test]
    fn budget_stop_lapses_only_when_the_budget_covers_the_spend_again() {
        let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let ks = stop(1_000_000, "2026-12");
        // Same limit: stays, whatever the spend.
        assert!(!budget_stop_lapsed(&ks, &config(1_000_000), 1_000_000, now));
        assert!(!budget_stop_lapsed(&ks, &config(1_000_000), 900_000, now));
        // Raised above the spend: ends.
        assert!(budget_stop_lapsed(&ks, &config(2_000_000), 1_100_000, now));
        // Raised, but still below the spend: stays.
        assert!(!budget_stop_lapsed(&ks, &config(1_050_000), 1_100_000, now));
        // Lowered: stays.
        assert!(!budget_stop_lapsed(&ks, &config(500_000), 100, now));
        // Removed, or not enforced: ends.
        assert!(budget_stop_lapsed(&ks, &config(0), 1_100_000, now));
        let advisory = BudgetConfig {
            enforce: false,
            ..config(1_000_000)
        };
        assert!(budget_stop_lapsed(&ks, &advisory, 1_100_000, now));
        // Next period: ends.
        assert!(budget_stop_lapsed(
            &stop(1_000_000, "2026-11"),
            &config(1_000_000),
            0,
            now
        ));
    }

    #[test]
    fn a_person_s_switch_never_lapses() {
        let now = jiff::Timestamp::now();
        for by in [SetBy::Admin, SetBy::Resource, SetBy::Operator] {
            let ks = KillSwitch::manual(by, None, 0);
            assert!(!budget_stop_lapsed(&ks, &config(0), 0, now), "{by:?}");
        }
    }

    #[test]
    fn epoch_round_trips() {
        let e = Epoch::new(1234);
        assert_eq!(Epoch::decode(&e.encode()), Some(e));
        assert_eq!(Epoch::decode("garbage"), None);
    }
}
