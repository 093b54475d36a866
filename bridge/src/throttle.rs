//! Warnings that would repeat once per message during an outage are logged at most
//! every 5 s, each warning on its own clock (`warn_throttled!`), so one kind of trouble
//! never hides another.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use dtaas_schemas::time::now_ns;

/// Least time between two lines of one throttled warning.
const EVERY_NS: i64 = 5_000_000_000;

/// The clock of one throttled warning.
pub struct Throttle {
    /// When it was last logged (ns since the epoch); 0 never.
    last: AtomicI64,
}

impl Throttle {
    pub const fn new() -> Self {
        Self {
            last: AtomicI64::new(0),
        }
    }

    /// True when the warning may be logged now (and then not again for 5 s).
    pub fn ready(&self) -> bool {
        let now = now_ns();
        let last = self.last.load(Relaxed);
        now - last > EVERY_NS
            && self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!` at most every 5 s for this call site.
#[macro_export]
macro_rules! warn_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::throttle::Throttle = $crate::throttle::Throttle::new();
        if THROTTLE.ready() {
            tracing::warn!($($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_warning_waits_for_its_own_clock() {
        let (a, b) = (super::Throttle::new(), super::Throttle::new());
        assert!(a.ready());
        assert!(!a.ready());
        assert!(b.ready(), "another warning is not held back by the first");
    }
}
