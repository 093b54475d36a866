//! Capped exponential backoff: the one retry delay of every loop in dtaas (NATS
//! connects, stores that are down, MQTT reconnects, consumers that are recreated).
//!
//! A retry loop holds a [`Backoff`], calls [`Backoff::wait`] after each failure and
//! [`Backoff::reset`] after a success; `wait` returns early (with `false`) when the
//! worker shuts down, so no loop sleeps through a shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// First delay.
const INITIAL: Duration = Duration::from_millis(100);
/// Longest delay: a store or broker that comes back is noticed within this.
const MAX: Duration = Duration::from_secs(5);

/// The delay before retry `attempt` (0-based): 100 ms doubling up to 5 s.
pub fn delay(attempt: usize) -> Duration {
    delay_between(INITIAL, MAX, attempt)
}

fn delay_between(initial: Duration, max: Duration, attempt: usize) -> Duration {
    let exponent = attempt.min(16) as u32;
    initial
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(max)
}

/// The state of one retry loop: how many failures in a row so far.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Failures since the last success.
    attempt: usize,
    /// The first delay.
    initial: Duration,
    /// The longest delay.
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::between(INITIAL, MAX)
    }
}

impl Backoff {
    /// 100 ms doubling up to 5 s: every retry loop's unless a contract says otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// `initial` doubling up to `max`, for a delay that is part of a contract (a DT
    /// process's restart policy, `restart_backoff_max`).
    pub fn between(initial: Duration, max: Duration) -> Self {
        Self {
            attempt: 0,
            initial,
            max: max.max(initial),
        }
    }

    /// Failures since the last success (0 before the first failure).
    pub fn attempt(&self) -> usize {
        self.attempt
    }

    /// The delay after the failure just seen; counts it.
    pub fn next_delay(&mut self) -> Duration {
        let delay = delay_between(self.initial, self.max, self.attempt);
        self.attempt += 1;
        delay
    }

    /// After a success: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Sleeps the next delay. Returns `false` (at once) when `shutdown` is cancelled
    /// first, so the caller stops retrying.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Sleeps the next delay, whatever happens meanwhile.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        assert_eq!(delay(0), Duration::from_millis(100));
        assert_eq!(delay(3), Duration::from_millis(800));
        assert_eq!(delay(100), Duration::from_secs(5));
        let mut backoff = Backoff::new();
        let first: Vec<_> = (0..3).map(|_| backoff.next_delay()).collect();
        assert_eq!(first, [100, 200, 400].map(Duration::from_millis));
        assert_eq!(backoff.attempt(), 3);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        let mut restarts = Backoff::between(Duration::from_millis(500), Duration::from_secs(1));
        let delays: Vec<_> = (0..3).map(|_| restarts.next_delay()).collect();
        assert_eq!(delays, [500, 1000, 1000].map(Duration::from_millis));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_ends_at_shutdown() {
        let shutdown = CancellationToken::new();
        let mut backoff = Backoff::new();
        assert!(backoff.wait(&shutdown).await);
        shutdown.cancel();
        assert!(!backoff.wait(&shutdown).await);
    }
}
