//! Budget periods and prices: how provider usage turns into micro-dollars per period.

use serde::{Deserialize, Serialize};

/// How often the budget resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Daily,
    Weekly,
    #[default]
    Monthly,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Weekly => "weekly",
            BudgetPeriod::Monthly => "monthly",
        }
    }

    /// The store key suffix of the period containing `at` (UTC): `2026-11-26`, `2026-W48`, `2026-11`.
    pub fn key(self, at: jiff::Timestamp) -> String {
        let date = at.to_zoned(jiff::tz::TimeZone::UTC).date();
        match self {
            BudgetPeriod::Daily => format!("{date}"),
            BudgetPeriod::Weekly => {
                let week = date.iso_week_date();
                format!("{}-W{:02}", week.year(), week.week())
            }
            BudgetPeriod::Monthly => format!("{:04}-{:02}", date.year(), date.month()),
        }
    }

    /// The key of the period containing now.
    pub fn current_key(self) -> String {
        self.key(jiff::Timestamp::now())
    }
}

/// Prices of one model, in US dollars per 1,000 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    pub input_per_1k: f64,
    pub output_per_1k: f64,
}

impl Prices {
    /// Micro-dollars per input and per output token.
    pub fn per_token_micros(&self) -> (f64, f64) {
        (self.input_per_1k * 1_000.0, self.output_per_1k * 1_000.0)
    }

    /// The reservation pricing of a provider with these prices and token bounds.
    pub fn pricing(&self, bounds: crate::provider::TokenBounds) -> crate::store::Pricing {
        let (input, output) = self.per_token_micros();
        crate::store::Pricing {
            input_micros_per_token: input,
            output_micros_per_token: output,
            prompt_overhead_tokens: bounds.prompt_overhead_tokens,
            output_tokens_per_card: bounds.output_tokens_per_card,
            output_overhead_tokens: bounds.output_overhead_tokens,
        }
    }

    /// Cost in micro-dollars, rounded up so spend is never under-counted; the same arithmetic
    /// as reservations ([`crate::store::Pricing::cost`]), so a call that uses exactly its bound
    /// costs exactly its reservation.
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        self.pricing(Default::default())
            .cost(input_tokens, output_tokens)
    }
}

/// US dollars to micro-dollars (negative and non-finite amounts are 0).
pub fn usd_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1_000_000.0).round() as u64
    } else {
        0
    }
}

/// An amount for people: `$1.37`, or enough digits to tell sub-cent amounts apart
/// (`$0.000183`), never `$0.00` for something that is not zero.
pub fn format_usd(micros: u64) -> String {
    if micros == 0 || micros >= 10_000 {
        return format!("${:.2}", micros_to_usd(micros));
    }
    let text = format!("{:.6}", micros_to_usd(micros));
    format!("${}", text.trim_end_matches('0'))
}

/// Micro-dollars to US dollars.
pub fn micros_to_usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_keys() {
        let at: jiff::Timestamp = "2026-11-26T20:00:00Z".parse().unwrap();
        assert_eq!(BudgetPeriod::Daily.key(at), "2026-11-26");
        assert_eq!(BudgetPeriod::Weekly.key(at), "2026-W48");
        assert_eq!(BudgetPeriod::Monthly.key(at), "2026-11");
        let new_year: jiff::Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(BudgetPeriod::Weekly.key(new_year), "2026-W53");
    }

    #[test]
    fn amounts_keep_their_digits() {
        assert_eq!(format_usd(0), "$0.00");
        assert_eq!(format_usd(1_370_000), "$1.37");
        assert_eq!(format_usd(183), "$0.000183");
        assert_eq!(format_usd(5_000), "$0.005");
        assert_eq!(format_usd(10_000), "$0.01");
    }

    #[test]
    fn cost_rounds_up() {
        let prices = Prices {
            input_per_1k: 0.00015,
            output_per_1k: 0.0006,
        };
        // 1000 input tokens = $0.00015 = 150 micro-dollars; 1000 output = 600.
        assert_eq!(prices.cost_micros(1000, 1000), 750);
        assert_eq!(prices.cost_micros(1, 0), 1);
        assert_eq!(Prices::default().cost_micros(5000, 5000), 0);
    }
}
