//! The worker autoscaler's decision: a pure function of the queue, the spec and a short history.
//!
//! desired = clamp(ceil((waiting + active) / targetJobsPerReplica), min, max), with:
//! - scale-up applied at once;
//! - scale-down only to the highest recommendation within the stabilization window (the HPA's
//!   scale-down rule), so a short lull never kills workers;
//! - delayed jobs (retries) keep at least one worker, so a retry coming due is not stranded;
//! - scale to zero when idle for the window, and back to one as soon as a job waits;
//! - the last good count while the store is unreachable;
//! - a frozen count (or `pausedReplicas`) while paused.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;

use crate::crd::WorkerSpec;

/// Queue depth as the store reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub waiting: u64,
    pub active: u64,
    pub delayed: u64,
}

/// Why the replica count is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleReason {
    /// More jobs than the workers carry: scaled up at once.
    QueueGrew,
    /// Fewer jobs for the whole window: scaled down.
    QueueShrank,
    /// The queue is smaller, but the window still remembers a higher recommendation.
    Stabilizing,
    /// Nothing to change.
    Steady,
    /// Autoscaling is paused by the spec.
    Paused,
    /// The store cannot be read: the last good count is kept.
    StoreUnavailable,
}

impl ScaleReason {
    /// CamelCase, for condition reasons and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleReason::QueueGrew => "QueueGrew",
            ScaleReason::QueueShrank => "QueueShrank",
            ScaleReason::Stabilizing => "Stabilizing",
            ScaleReason::Steady => "Steady",
            ScaleReason::Paused => "Paused",
            ScaleReason::StoreUnavailable => "StoreUnavailable",
        }
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDecision {
    /// Replicas to set on the worker Deployment.
    pub replicas: u32,
    /// What the queue alone asks for (before stabilization).
    pub recommended: u32,
    pub reason: ScaleReason,
}

impl ScaleDecision {
    /// Whether `replicas` differs from the count before the decision.
    pub fn changes(&self, current: Option<u32>) -> bool {
        current != Some(self.replicas)
    }
}

/// Recommendations of the last stabilization window, per pipeline (in memory).
#[derive(Debug, Clone, Default)]
pub struct ScaleHistory {
    entries: VecDeque<(Timestamp, u32)>,
}

impl ScaleHistory {
    /// A history that starts from a known count (e.g. after an operator restart or a leader
    /// change), so the new leader does not scale down before a full window has passed.
    pub fn seeded(now: Timestamp, replicas: u32) -> Self {
        Self {
            entries: VecDeque::from([(now, replicas)]),
        }
    }

    /// Forgets recommendations at least `window` old, then remembers this one.
    fn record(&mut self, now: Timestamp, recommended: u32, window: Duration) {
        let window = jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX);
        self.entries
            .retain(|(t, _)| now.duration_since(*t) < window);
        self.entries.push_back((now, recommended));
    }

    fn max(&self) -> u32 {
        self.entries.iter().map(|(_, r)| *r).max().unwrap_or(0)
    }
}

/// What the queue alone asks for.
pub fn recommend(queue: QueueDepth, spec: &WorkerSpec) -> u32 {
    let target = u64::from(spec.target_jobs_per_replica.max(1));
    let load = queue.waiting.saturating_add(queue.active);
    let mut wanted = load.div_ceil(target);
    if queue.delayed > 0 {
        wanted = wanted.max(1);
    }
    let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
    let max = spec.max_replicas.max(spec.min_replicas);
    wanted.clamp(spec.min_replicas, max)
}

/// Decides the worker replicas. `queue` is `None` when the store could not be read; `current`
/// is the count the operator last set (`None` before the first decision).
pub fn decide(
    spec: &WorkerSpec,
    queue: Option<QueueDepth>,
    current: Option<u32>,
    history: &mut ScaleHistory,
    now: Timestamp,
) -> ScaleDecision {
    let max = spec.max_replicas.max(spec.min_replicas);
    if spec.paused {
        let replicas = spec
            .paused_replicas
            .or(current)
            .unwrap_or(spec.min_replicas);
        return ScaleDecision {
            replicas,
            recommended: replicas,
            reason: ScaleReason::Paused,
        };
    }
    let Some(queue) = queue else {
        let replicas = current
            .unwrap_or(spec.min_replicas)
            .clamp(spec.min_replicas, max);
        return ScaleDecision {
            replicas,
            recommended: replicas,
            reason: ScaleReason::StoreUnavailable,
        };
    };
    let recommended = recommend(queue, spec);
    let window = Duration::from_secs(spec.scale_down_stabilization_seconds.into());
    history.record(now, recommended, window);
    let current = current.map(|c| c.clamp(spec.min_replicas, max));
    let (replicas, reason) = match current {
        None => (recommended, ScaleReason::QueueGrew),
        Some(c) if recommended > c => (recommended, ScaleReason::QueueGrew),
        Some(c) if recommended == c => (c, ScaleReason::Steady),
        Some(c) => {
            // Scale down only to the highest recommendation of the window.
            let stabilized = history.max().clamp(recommended, c);
            if stabilized < c {
                (stabilized, ScaleReason::QueueShrank)
            } else {
                (c, ScaleReason::Stabilizing)
            }
        }
    };
    ScaleDecision {
        replicas,
        recommended,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: u32, max: u32, target: u32, window: u32) -> WorkerSpec {
        WorkerSpec {
            min_replicas: min,
            max_replicas: max,
            target_jobs_per_replica: target,
            scale_down_stabilization_seconds: window,
            ..WorkerSpec::default()
        }
    }

    fn q(waiting: u64, active: u64) -> Option<QueueDepth> {
        Some(QueueDepth {
            waiting,
            active,
            delayed: 0,
        })
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn recommendation_counts_waiting_and_active() {
        let s = spec(0, 10, 4, 300);
        assert_eq!(recommend(QueueDepth::default(), &s), 0);
        assert_eq!(recommend(q(1, 0).unwrap(), &s), 1);
        assert_eq!(recommend(q(4, 0).unwrap(), &s), 1);
        assert_eq!(recommend(q(3, 2).unwrap(), &s), 2, "in-flight jobs count");
        assert_eq!(recommend(q(1000, 0).unwrap(), &s), 10, "clamped to max");
        assert_eq!(
            recommend(QueueDepth::default(), &spec(2, 10, 4, 0)),
            2,
            "clamped to min"
        );
        let retries = QueueDepth {
            waiting: 0,
            active: 0,
            delayed: 3,
        };
        assert_eq!(
            recommend(retries, &s),
            1,
            "a pending retry keeps one worker"
        );
    }

    #[test]
    fn scales_up_at_once() {
        let s = spec(0, 10, 4, 300);
        let mut h = ScaleHistory::seeded(t(0), 1);
        let d = decide(&s, q(20, 4), Some(1), &mut h, t(1));
        assert_eq!(d.replicas, 6);
        assert_eq!(d.reason, ScaleReason::QueueGrew);
        assert!(d.changes(Some(1)));
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let s = spec(0, 10, 4, 300);
        let mut h = ScaleHistory::default();
        assert_eq!(decide(&s, q(40, 0), None, &mut h, t(0)).replicas, 10);
        // The queue drains: the window still remembers 10.
        let d = decide(&s, q(4, 0), Some(10), &mut h, t(60));
        assert_eq!((d.replicas, d.reason), (10, ScaleReason::Stabilizing));
        assert_eq!(d.recommended, 1);
        let d = decide(&s, q(4, 0), Some(10), &mut h, t(299));
        assert_eq!(d.replicas, 10);
        // After the window only the lower recommendations remain.
        let d = decide(&s, q(4, 0), Some(10), &mut h, t(301));
        assert_eq!((d.replicas, d.reason), (1, ScaleReason::QueueShrank));
    }

    #[test]
    fn scale_down_goes_to_the_highest_recent_recommendation() {
        let s = spec(0, 10, 1, 100);
        let mut h = ScaleHistory::default();
        decide(&s, q(8, 0), None, &mut h, t(0));
        decide(&s, q(5, 0), Some(8), &mut h, t(50));
        let d = decide(&s, q(2, 0), Some(8), &mut h, t(120));
        assert_eq!(d.replicas, 5, "8 left the window, 5 is still in it");
    }

    #[test]
    fn scales_to_zero_when_idle_and_back_to_one_at_once() {
        let s = spec(0, 10, 4, 30);
        let mut h = ScaleHistory::seeded(t(0), 1);
        let d = decide(&s, q(0, 0), Some(1), &mut h, t(10));
        assert_eq!(d.replicas, 1, "idle, but inside the window");
        let d = decide(&s, q(0, 0), Some(1), &mut h, t(31));
        assert_eq!(d.replicas, 0);
        let d = decide(&s, q(1, 0), Some(0), &mut h, t(32));
        assert_eq!((d.replicas, d.reason), (1, ScaleReason::QueueGrew));
    }

    #[test]
    fn zero_window_scales_down_immediately() {
        let s = spec(0, 10, 4, 0);
        let mut h = ScaleHistory::seeded(t(0), 5);
        assert_eq!(decide(&s, q(0, 0), Some(5), &mut h, t(1)).replicas, 0);
    }

    #[test]
    fn paused_keeps_the_count_or_uses_paused_replicas() {
        let mut s = spec(0, 10, 4, 0);
        s.paused = true;
        let mut h = ScaleHistory::default();
        let d = decide(&s, q(100, 0), Some(3), &mut h, t(0));
        assert_eq!((d.replicas, d.reason), (3, ScaleReason::Paused));
        s.paused_replicas = Some(0);
        assert_eq!(decide(&s, q(100, 0), Some(3), &mut h, t(1)).replicas, 0);
    }

    #[test]
    fn store_down_keeps_the_last_good_count() {
        let s = spec(0, 10, 4, 0);
        let mut h = ScaleHistory::default();
        let d = decide(&s, None, Some(7), &mut h, t(0));
        assert_eq!((d.replicas, d.reason), (7, ScaleReason::StoreUnavailable));
        assert!(!d.changes(Some(7)));
        let d = decide(&s, None, None, &mut h, t(0));
        assert_eq!(d.replicas, 0, "nothing known: the minimum");
    }

    #[test]
    fn a_lowered_max_applies_at_once() {
        let s = spec(0, 3, 1, 300);
        let mut h = ScaleHistory::seeded(t(0), 10);
        let d = decide(&s, q(50, 0), Some(10), &mut h, t(1));
        assert_eq!(d.replicas, 3);
    }
}
