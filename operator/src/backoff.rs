//! Per-pipeline exponential backoff with jitter: how long a pipeline waits after a failed pass
//! (API errors, see `reconcile::error_policy`) or after a pass whose store did not answer. Each
//! pipeline counts its own failures, so one tenant's broken Secret, webhook or Redis never slows
//! another's reconciles, and many pipelines that failed together (an apiserver or Redis outage)
//! do not retry in one burst.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The delays of one kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay, however many failures in a row.
    pub cap: Duration,
}

/// After a failed reconcile (an API error): 2 s, 4 s, 8 s ... up to 5 minutes.
pub const RECONCILE_ERRORS: Schedule = Schedule {
    base: Duration::from_secs(2),
    cap: Duration::from_secs(300),
};

impl Schedule {
    /// The delay after `failures` failures in a row (at least 1), before jitter: `base *
    /// 2^(failures-1)`, at most `cap`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// The delay with jitter: uniform in `[ceiling/2, ceiling]` ("equal jitter": never less
    /// than half, so a failing pipeline cannot spin, and spread so failures do not align).
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random_range(0.0..=1.0))
    }
}

/// Failures in a row per pipeline (`namespace/name`).
#[derive(Debug, Default)]
pub struct Failures {
    counts: Mutex<HashMap<String, u32>>,
}

impl Failures {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more failure of `key` and returns how many there are in a row now.
    pub fn record(&self, key: &str) -> u32 {
        let mut counts = self.counts();
        let n = counts.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        *n
    }

    /// A pass of `key` succeeded: its next failure starts from the base delay again.
    pub fn reset(&self, key: &str) {
        self.counts().remove(key);
    }

    /// Failures of `key` in a row.
    pub fn get(&self, key: &str) -> u32 {
        self.counts().get(key).copied().unwrap_or(0)
    }

    /// Forgets pipelines that no longer exist.
    pub fn retain(&self, alive: &std::collections::HashSet<String>) {
        self.counts().retain(|k, _| alive.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_stays_in_the_upper_half() {
        let s = RECONCILE_ERRORS;
        assert_eq!(s.ceiling(0), Duration::from_secs(2));
        assert_eq!(s.ceiling(1), Duration::from_secs(2));
        assert_eq!(s.ceiling(2), Duration::from_secs(4));
        assert_eq!(s.ceiling(5), Duration::from_secs(32));
        assert_eq!(s.ceiling(9), Duration::from_secs(300));
        assert_eq!(s.ceiling(u32::MAX), Duration::from_secs(300));
        let delays: Vec<Duration> = (0..200).map(|_| s.delay(3)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(4) && *d <= Duration::from_secs(8))
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jittered, not one value");
    }

    #[test]
    fn each_pipeline_counts_its_own_failures() {
        let f = Failures::default();
        assert_eq!(f.record("a/x"), 1);
        assert_eq!(f.record("a/x"), 2);
        assert_eq!(
            f.record("b/x"),
            1,
            "another namespace's pipeline starts at one"
        );
        f.reset("a/x");
        assert_eq!(f.get("a/x"), 0);
        assert_eq!(f.get("b/x"), 1);
        f.retain(&std::collections::HashSet::new());
        assert_eq!(f.get("b/x"), 0);
    }
}
