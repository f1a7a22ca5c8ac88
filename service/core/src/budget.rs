//! Budget periods and prices: how provider usage turns into micro-dollars per period.

use serde::{Deserialize, Serialize};

/// How often the budget resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
    pub fn pricing(&self, bounds: TokenBounds) -> Pricing {
        let (input, output) = self.per_token_micros();
        Pricing {
            input_micros_per_token: input,
            output_micros_per_token: output,
            prompt_overhead_tokens: bounds.prompt_overhead_tokens,
            output_tokens_per_card: bounds.output_tokens_per_card,
            output_overhead_tokens: bounds.output_overhead_tokens,
        }
    }

    /// Cost in micro-dollars, rounded up so spend is never under-counted; the same arithmetic
    /// as reservations ([`Pricing::cost`]), so a call that uses exactly its bound
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

/// Micro-dollars as a plain decimal: `510.00`, `0.0042`, `1.234567`. Whole cents keep two
/// decimals; anything finer shows every digit down to the micro-dollar (LLM jobs often cost a
/// fraction of a cent, and "$0.00 of $0.00" says nothing), computed from the integer so no
/// float rounding creeps in.
pub fn usd_amount(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let frac = micros % 1_000_000;
    if frac.is_multiple_of(10_000) {
        format!("{whole}.{:02}", frac / 10_000)
    } else {
        let digits = format!("{frac:06}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Micro-dollars with a dollar sign: `$510.00`, `$0.0042`.
pub fn format_usd(micros: u64) -> String {
    format!("${}", usd_amount(micros))
}

/// A percentage with one decimal, or more when it is below 1 % (so a small but real spend never
/// reads "0.0%"): `85.0%`, `0.042%`, `0%`.
pub fn format_percent(p: f64) -> String {
    if !p.is_finite() || p <= 0.0 {
        return "0%".into();
    }
    if p >= 1.0 {
        return format!("{p:.1}%");
    }
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "0" {
        "<0.0001%".into()
    } else {
        format!("{s}%")
    }
}

/// Micro-dollars to US dollars.
pub fn micros_to_usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// What a reservation is computed from: per-token prices and the token bounds of a request.
/// The claim script computes the same number in Lua (`reservation` in `claim_lib.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pricing {
    /// Micro-dollars per input token.
    pub input_micros_per_token: f64,
    /// Micro-dollars per output token.
    pub output_micros_per_token: f64,
    /// Input tokens of the fixed prompt around the request's text (system prompt, schema,
    /// chat format), bounded like the text: at most one token per byte.
    pub prompt_overhead_tokens: u64,
    /// `max_tokens` asked for per requested card, and for the JSON around the cards.
    pub output_tokens_per_card: u64,
    pub output_overhead_tokens: u64,
}

impl Pricing {
    /// Upper bound of a call's cost in micro-dollars: input bounded by one token per byte,
    /// output by the `max_tokens` the provider is asked for.
    pub fn reservation(&self, input_bytes: u64, card_count: u32) -> u64 {
        let input = input_bytes + self.prompt_overhead_tokens;
        let output = u64::from(card_count.max(1)) * self.output_tokens_per_card
            + self.output_overhead_tokens;
        self.cost(input, output)
    }

    /// Cost of a call in micro-dollars, rounded up so spend is never under-counted.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let micros = input_tokens as f64 * self.input_micros_per_token
            + output_tokens as f64 * self.output_micros_per_token;
        if micros.is_finite() && micros > 0.0 {
            micros.ceil() as u64
        } else {
            0
        }
    }

    /// Costs nothing (the offline provider by default).
    pub fn is_free(&self) -> bool {
        self.input_micros_per_token <= 0.0 && self.output_micros_per_token <= 0.0
    }
}

/// Request-independent token bounds of a provider's calls (see [`Pricing`]): a
/// call for a request of `b` text bytes and `n` cards uses at most
/// `b + prompt_overhead_tokens` input and `n * output_tokens_per_card + output_overhead_tokens`
/// output tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBounds {
    pub prompt_overhead_tokens: u64,
    pub output_tokens_per_card: u64,
    pub output_overhead_tokens: u64,
}

impl TokenBounds {
    /// The largest usage of a call for `request`.
    pub fn max_usage(&self, request: &crate::job::JobRequest) -> crate::job::TokenUsage {
        crate::job::TokenUsage {
            input_tokens: crate::job::input_bytes(request) + self.prompt_overhead_tokens,
            output_tokens: u64::from(request.card_count.max(1)) * self.output_tokens_per_card
                + self.output_overhead_tokens,
            reasoning_tokens: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_bounds_the_cost_of_any_call_within_the_bounds() {
        let p = Pricing {
            input_micros_per_token: 0.15,
            output_micros_per_token: 0.6,
            prompt_overhead_tokens: 400,
            output_tokens_per_card: 120,
            output_overhead_tokens: 32,
        };
        let bound = p.reservation(1000, 10);
        assert_eq!(bound, p.cost(1400, 1232));
        assert!(p.cost(1400, 1232) >= p.cost(700, 1232));
        assert_eq!(Pricing::default().reservation(10_000, 50), 0);
        assert!(Pricing::default().is_free());
    }

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
    fn whole_cents_keep_two_decimals() {
        assert_eq!(format_usd(510_000_000), "$510.00");
        assert_eq!(format_usd(0), "$0.00");
        assert_eq!(format_usd(10_000), "$0.01");
        assert_eq!(format_usd(50_020_000), "$50.02");
    }

    #[test]
    fn sub_cent_amounts_show_every_digit() {
        assert_eq!(format_usd(4_200), "$0.0042");
        assert_eq!(format_usd(10_400), "$0.0104");
        assert_eq!(format_usd(1), "$0.000001");
        assert_eq!(format_usd(1_234_567), "$1.234567");
        assert_eq!(usd_amount(15_000), "0.015");
    }

    #[test]
    fn small_percentages_are_not_zero() {
        assert_eq!(format_percent(85.0), "85.0%");
        assert_eq!(format_percent(100.0), "100.0%");
        assert_eq!(format_percent(0.042), "0.042%");
        assert_eq!(format_percent(0.5), "0.5%");
        assert_eq!(format_percent(0.0), "0%");
        assert_eq!(format_percent(0.000_01), "<0.0001%");
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
