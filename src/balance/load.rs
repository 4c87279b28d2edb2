//! Load as this replica sees it: live sessions per endpoint, counted without any
//! per-session state, and a lock-free rate limiter for session moves.
//!
//! Every session's cookie carries a signed `seen` time, refreshed at most once per
//! refresh interval. A [`SessionCounter`] keeps a ring of time buckets; a session is
//! counted in the bucket of its current `seen`: placing it adds one there, refreshing its
//! cookie moves it (remove at the old `seen`, add at the new), moving it to another
//! endpoint removes it from the old counter. A session is live while its bucket is
//! within the idle window; one that never comes back falls out of the window by itself.
//!
//! Cost: two or four relaxed atomic operations per placement or refresh, nothing per
//! sticky request between refreshes; memory is [`BUCKETS`] × 16 bytes per endpoint and
//! zero bytes per session. Error: a session is counted at the resolution of one bucket,
//! so it stays live up to one bucket width past the idle window; a client replaying an
//! older cookie after a refresh is counted once more until that bucket ages out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets per counter.
pub const BUCKETS: usize = 64;

/// Live sessions of one endpoint (or of a whole backend), by the bucket of their `seen`.
#[derive(Debug)]
pub struct SessionCounter {
    /// Bucket width in seconds.
    width: u64,
    /// Buckets that make up the idle window.
    window: u64,
    /// Absolute bucket number each slot currently counts for.
    epochs: [AtomicU64; BUCKETS],
    counts: [AtomicU64; BUCKETS],
}

impl SessionCounter {
    /// A counter for sessions idle at most `idle`, refreshed every `refresh` at most.
    pub fn new(idle: Duration, refresh: Duration) -> Self {
        let idle = idle.as_secs().max(1);
        // Fine enough for the refresh interval, coarse enough for the window to fit.
        let width = refresh
            .as_secs()
            .max(1)
            .max(idle.div_ceil(BUCKETS as u64 - 1));
        SessionCounter {
            width,
            window: idle.div_ceil(width),
            epochs: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn slot(&self, unix: u64) -> (usize, u64) {
        let b = unix / self.width;
        ((b % BUCKETS as u64) as usize, b)
    }

    /// Counts a session whose `seen` is `unix`.
    pub fn add(&self, unix: u64) {
        let (slot, b) = self.slot(unix);
        let epoch = self.epochs[slot].load(Ordering::Relaxed);
        if epoch != b {
            if epoch != u64::MAX && epoch > b {
                // The slot already counts a newer bucket: this session is too old to be live.
                return;
            }
            if self.epochs[slot]
                .compare_exchange(epoch, b, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.counts[slot].store(0, Ordering::Relaxed);
            }
        }
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a session whose `seen` was `unix` (it was refreshed or moved).
    pub fn remove(&self, unix: u64) {
        let (slot, b) = self.slot(unix);
        if self.epochs[slot].load(Ordering::Relaxed) == b {
            let _ = self.counts[slot]
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        }
    }

    /// Takes over `other`'s counts (a backend replaced by a config reload), when both
    /// count in buckets of the same width; false (and nothing copied) otherwise. Only
    /// for a counter nothing counts into yet: slots are copied one by one.
    pub fn copy_from(&self, other: &SessionCounter) -> bool {
        if self.width != other.width {
            return false;
        }
        for i in 0..BUCKETS {
            self.epochs[i].store(other.epochs[i].load(Ordering::Relaxed), Ordering::Relaxed);
            self.counts[i].store(other.counts[i].load(Ordering::Relaxed), Ordering::Relaxed);
        }
        true
    }

    /// Sessions live at `unix`: counted in a bucket within the idle window.
    pub fn live(&self, unix: u64) -> u64 {
        let b = unix / self.width;
        let oldest = b.saturating_sub(self.window);
        let span = b - oldest;
        // One comparison per bucket: this runs for the backend and each endpoint the
        // bounded walk checks on every new session. An unused slot's epoch (u64::MAX)
        // wraps far outside the span.
        let mut sum = 0;
        for (epoch, count) in self.epochs.iter().zip(&self.counts) {
            if epoch.load(Ordering::Relaxed).wrapping_sub(oldest) <= span {
                sum += count.load(Ordering::Relaxed);
            }
        }
        sum
    }
}

/// A GCRA rate limiter: at most `rate` events per second, with a burst of one second's
/// worth. One atomic compare-and-swap per allowed event.
#[derive(Debug)]
pub struct RateLimiter {
    base: Instant,
    /// Nanoseconds between events.
    interval: u64,
    /// Theoretical arrival time of the next event, in nanoseconds after `base`.
    tat: AtomicU64,
}

impl RateLimiter {
    /// A limiter for `rate` events per second (`rate` > 0).
    pub fn new(rate: f64, now: Instant) -> Self {
        RateLimiter {
            base: now,
            interval: (1e9 / rate.max(1e-6)) as u64,
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one event if the rate allows it now.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let t = now.saturating_duration_since(self.base).as_nanos() as u64;
        let burst = self.interval.max(1_000_000_000);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(t) + self.interval;
            if next - t > burst {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_live_until_the_idle_window_passes_and_moves_do_not_double_count() {
        let c = SessionCounter::new(Duration::from_secs(1800), Duration::from_secs(15));
        let t0 = 1_790_000_000;
        for _ in 0..100 {
            c.add(t0);
        }
        assert_eq!(c.live(t0), 100);
        // 40 sessions come back a minute later and refresh their cookies.
        for _ in 0..40 {
            c.remove(t0);
            c.add(t0 + 60);
        }
        assert_eq!(c.live(t0 + 60), 100);
        // The 60 that never came back age out after the window; the 40 a minute later.
        assert_eq!(c.live(t0 + 1800 + 60), 40);
        assert_eq!(c.live(t0 + 1800 + 120), 0);
        // A recycled bucket starts from zero.
        c.add(t0 + 64 * 60);
        assert_eq!(c.live(t0 + 64 * 60), 1);
    }

    #[test]
    fn removals_never_underflow_and_stale_adds_are_ignored() {
        let c = SessionCounter::new(Duration::from_secs(600), Duration::from_secs(15));
        c.remove(1000);
        c.add(100_000);
        c.add(100_000 - 15 * 64);
        assert_eq!(c.live(100_000), 1);
    }

    #[test]
    fn a_copy_counts_the_same_sessions_only_at_the_same_bucket_width() {
        let c = SessionCounter::new(Duration::from_secs(1800), Duration::from_secs(15));
        for t in [1_000_000, 1_000_100, 1_000_100] {
            c.add(t);
        }
        let d = SessionCounter::new(Duration::from_secs(1800), Duration::from_secs(15));
        assert!(d.copy_from(&c));
        assert_eq!(d.live(1_000_100), 3);
        d.remove(1_000_100);
        assert_eq!((c.live(1_000_100), d.live(1_000_100)), (3, 2));
        let other = SessionCounter::new(Duration::from_secs(7200), Duration::from_secs(300));
        assert!(!other.copy_from(&c));
        assert_eq!(other.live(1_000_100), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_allows_the_rate_and_a_second_of_burst() {
        let r = RateLimiter::new(5.0, Instant::now());
        let taken = (0..20).filter(|_| r.try_acquire(Instant::now())).count();
        assert_eq!(taken, 5);
        tokio::time::advance(Duration::from_secs(2)).await;
        let taken = (0..20).filter(|_| r.try_acquire(Instant::now())).count();
        assert!((5..=6).contains(&taken), "{taken}");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(r.try_acquire(Instant::now()));
        assert!(!r.try_acquire(Instant::now()));
    }
}
