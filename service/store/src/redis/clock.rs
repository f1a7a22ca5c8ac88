//! The Redis server's clock as this process sees it.
//!
//! Budget periods, rate-limit windows, outcome minutes, event timestamps and worker liveness
//! are all read from one clock, the server's, so pods whose clocks disagree still agree on
//! which period a cost belongs to and which workers are alive. Scripts read `TIME` themselves;
//! what the caller must name before a call (the period's spend key, the minute's counter, the
//! rate window) comes from this clock: the offset between the server and this process, measured
//! with `TIME` at connect and every [`REFRESH`] after (half the round trip is the error bound),
//! added to the local clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use flashcard_core::job::now_ms as local_now_ms;

/// How often the offset is measured again (a local clock stepped by NTP is caught this soon).
pub(super) const REFRESH: Duration = Duration::from_secs(15);

/// The server clock: the local clock plus a measured offset. Clones share it.
#[derive(Debug, Clone, Default)]
pub(super) struct ServerClock {
    offset_ms: Arc<AtomicI64>,
}

impl ServerClock {
    /// Now on the server's clock, in ms since the epoch.
    pub(super) fn now_ms(&self) -> u64 {
        (local_now_ms() as i64)
            .saturating_add(self.offset_ms.load(Ordering::Relaxed))
            .max(0) as u64
    }

    pub(super) fn now_timestamp(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.now_ms() as i64)
            .unwrap_or_else(|_| jiff::Timestamp::now())
    }

    /// The server's offset from this process, in ms (positive: the server is ahead).
    pub(super) fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Records a `TIME` reply (`seconds`, `microseconds`) asked at local time `sent_ms` and
    /// answered after `round_trip`: the server read its clock about half way through.
    pub(super) fn observe(&self, seconds: u64, micros: u64, sent_ms: u64, round_trip: Duration) {
        let server_ms = seconds.saturating_mul(1000) + micros / 1000;
        let local_at_read = sent_ms + round_trip.as_millis() as u64 / 2;
        self.offset_ms
            .store(server_ms as i64 - local_at_read as i64, Ordering::Relaxed);
    }
}

/// Times a `TIME` call: returns what [`ServerClock::observe`] needs.
pub(super) struct Probe {
    pub sent_ms: u64,
    started: Instant,
}

impl Probe {
    pub(super) fn start() -> Self {
        Self {
            sent_ms: local_now_ms(),
            started: Instant::now(),
        }
    }

    pub(super) fn round_trip(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_server_reading_minus_the_local_midpoint() {
        let clock = ServerClock::default();
        // Local 1_000_000 ms, 10 ms round trip, server read 1_060_005 ms: 60 s ahead.
        clock.observe(1_060, 5_000, 1_000_000, Duration::from_millis(10));
        assert_eq!(clock.offset_ms(), 60_000);
        let ahead = clock.now_ms() as i64 - local_now_ms() as i64;
        assert!((59_990..=60_010).contains(&ahead), "{ahead}");
        clock.observe(0, 0, 120_000, Duration::ZERO);
        assert_eq!(clock.offset_ms(), -120_000);
    }
}
