//! Passive health: endpoints that just refused or timed out a connection are skipped for
//! a cool-off period, and endpoints that keep failing (consecutive 5xx or resets) are
//! ejected for a base time that grows with every repeat (outlier detection).
//!
//! State is one atomic per endpoint, shared across snapshot rebuilds, so marking an
//! endpoint down never rebuilds anything and reading it on the request path takes no
//! lock. Time is `tokio::time::Instant`, so tests drive it with a paused clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Passive health of one endpoint.
#[derive(Debug)]
pub struct PassiveHealth {
    /// Reference point for `down_until`, so it fits an atomic integer.
    base: Instant,
    /// Nanoseconds after `base` until which the endpoint is down; 0 = up.
    down_until: AtomicU64,
    /// Consecutive connect failures, for logs.
    failures: AtomicU64,
    /// Consecutive failed exchanges (5xx, resets), for outlier detection.
    consecutive_errors: AtomicU64,
    /// How often this endpoint was ejected; each ejection lasts longer.
    ejections: AtomicU64,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl PassiveHealth {
    /// A healthy endpoint.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            down_until: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_errors: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    fn offset(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// Records a connect failure: the endpoint is down until `now + cooloff`.
    /// Returns the number of consecutive failures.
    pub fn mark_down(&self, now: Instant, cooloff: Duration) -> u64 {
        self.down_until
            .store(self.offset(now + cooloff).max(1), Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a successful connection.
    pub fn mark_up(&self) {
        if self.down_until.load(Ordering::Relaxed) != 0 {
            self.down_until.store(0, Ordering::Relaxed);
        }
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failed exchange (5xx or reset); returns the consecutive count.
    pub fn exchange_failed(&self) -> u64 {
        self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a successful exchange.
    pub fn exchange_succeeded(&self) {
        if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
            self.consecutive_errors.store(0, Ordering::Relaxed);
        }
    }

    /// Ejects the endpoint for `base` × the number of its ejections so far (at most 10×);
    /// returns how long.
    pub fn eject(&self, now: Instant, base: Duration) -> Duration {
        let n = (self.ejections.fetch_add(1, Ordering::Relaxed) + 1).min(10);
        let d = base * n as u32;
        self.down_until
            .store(self.offset(now + d).max(1), Ordering::Relaxed);
        self.consecutive_errors.store(0, Ordering::Relaxed);
        d
    }

    /// Whether the endpoint is in its cool-off at `now`.
    #[inline]
    pub fn is_down(&self, now: Instant) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until != 0 && self.offset(now) < until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn endpoint_comes_back_after_its_cooloff() {
        let h = PassiveHealth::new();
        assert!(!h.is_down(Instant::now()));
        assert_eq!(h.mark_down(Instant::now(), Duration::from_secs(10)), 1);
        assert!(h.is_down(Instant::now()));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(h.is_down(Instant::now()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!h.is_down(Instant::now()));
        h.mark_up();
        assert!(!h.is_down(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_ejections_last_longer() {
        let h = PassiveHealth::new();
        assert_eq!(h.exchange_failed(), 1);
        assert_eq!(h.exchange_failed(), 2);
        assert_eq!(
            h.eject(Instant::now(), Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!h.is_down(Instant::now()), "it comes back by itself");
        assert_eq!(h.exchange_failed(), 1, "ejection reset the count");
        assert_eq!(
            h.eject(Instant::now(), Duration::from_secs(30)),
            Duration::from_secs(60)
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(h.is_down(Instant::now()));
    }
}
