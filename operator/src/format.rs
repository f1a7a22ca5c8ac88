//! Amounts as people read them in Events, conditions, kill-switch reasons and `kubectl get`.
//!
//! Spend is kept in integer micro-dollars, and LLM jobs often cost a fraction of a cent, so a
//! fixed two decimals would print a real spend of $0.0042 as "$0.00". These helpers print whole
//! cents with two decimals and anything finer with as many digits as it has (up to the
//! micro-dollar), computed from the integer so no float rounding creeps in.

/// Micro-dollars as a plain decimal: `510.00`, `0.0042`, `1.234567`.
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
pub fn usd(micros: u64) -> String {
    format!("${}", usd_amount(micros))
}

/// A percentage with one decimal, or more when it is below 1 % (so a small but real spend never
/// reads "0.0%"): `85.0%`, `0.042%`, `0%`.
pub fn percent(p: f64) -> String {
    if !p.is_finite() || p <= 0.0 {
        return "0%".into();
    }
    if p >= 1.0 {
        return format!("{p:.1}%");
    }
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "0" {
        // Below 0.0001 %: say so instead of printing zero.
        "<0.0001%".into()
    } else {
        format!("{s}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_cents_keep_two_decimals() {
        assert_eq!(usd(510_000_000), "$510.00");
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(10_000), "$0.01");
        assert_eq!(usd(50_020_000), "$50.02");
    }

    #[test]
    fn sub_cent_amounts_show_every_digit() {
        assert_eq!(usd(4_200), "$0.0042");
        assert_eq!(usd(1), "$0.000001");
        assert_eq!(usd(1_234_567), "$1.234567");
        assert_eq!(usd_amount(15_000), "0.015");
    }

    #[test]
    fn small_percentages_are_not_zero() {
        assert_eq!(percent(85.0), "85.0%");
        assert_eq!(percent(100.0), "100.0%");
        assert_eq!(percent(0.042), "0.042%");
        assert_eq!(percent(0.5), "0.5%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.000_01), "<0.0001%");
    }
}
