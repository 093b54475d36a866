//! Arrival stamps for readings without a timestamp of their own.
//!
//! A store keys a point by (series, time) and a second point at the same key replaces
//! the first, so two readings of one series must never get the same stamp. The clock
//! alone cannot promise that: readings arrive faster than it ticks (a JSON array, the
//! lines of one line-protocol payload, a burst of messages drained at once), and on
//! some systems it ticks in microseconds. So every stamp is the clock's nanoseconds,
//! raised to one more than the previous stamp when the clock has not moved past it.
//!
//! One counter serves every series: stamps unique across all series are unique within
//! each, in arrival order, and the counter never runs ahead of the clock by more than
//! one nanosecond per reading that arrived within the same tick (it would take a
//! billion readings a second to drift). It lives in the uplink's single task, which
//! handles messages in arrival order, so it needs no lock.

use dtaas_schemas::time::now_ns;

/// Hands out unique, increasing nanosecond stamps close to the clock.
#[derive(Debug)]
pub struct Stamper {
    /// The last stamp given out; the next one is above it.
    last: i64,
    /// The clock, in nanoseconds since the epoch (a frozen one in tests).
    clock: fn() -> i64,
}

impl Default for Stamper {
    fn default() -> Self {
        Self::with_clock(now_ns)
    }
}

impl Stamper {
    /// A stamper reading `clock`.
    pub fn with_clock(clock: fn() -> i64) -> Self {
        Self {
            last: i64::MIN,
            clock,
        }
    }

    /// The arrival stamp of the next reading: the clock, or one above the last stamp.
    pub fn next_stamp(&mut self) -> i64 {
        self.last = (self.clock)().max(self.last.saturating_add(1));
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

    #[test]
    fn readings_faster_than_the_clock_get_unique_increasing_stamps() {
        static CLOCK: AtomicI64 = AtomicI64::new(1_000);
        let mut stamper = Stamper::with_clock(|| CLOCK.load(Relaxed));
        // 10,000 readings within one tick: one nanosecond apart, in arrival order.
        let stamps: Vec<i64> = (0..10_000).map(|_| stamper.next_stamp()).collect();
        assert_eq!(stamps, (1_000..11_000).collect::<Vec<_>>());
        // The clock moves, but not past the stamps given: they keep climbing by one.
        CLOCK.store(5_000, Relaxed);
        assert_eq!(stamper.next_stamp(), 11_000);
        // The clock passes them: stamps follow the clock again.
        CLOCK.store(20_000, Relaxed);
        assert_eq!(stamper.next_stamp(), 20_000);
        // A clock stepped back (NTP) never makes a stamp repeat or go back.
        CLOCK.store(0, Relaxed);
        assert_eq!(stamper.next_stamp(), 20_001);
    }

    #[test]
    fn the_real_clock_never_repeats_a_stamp() {
        let mut stamper = Stamper::default();
        let before = now_ns();
        let stamps: Vec<i64> = (0..100_000).map(|_| stamper.next_stamp()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
        assert!(stamps[0] >= before);
    }
}
