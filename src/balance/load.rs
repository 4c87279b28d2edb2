//! Per-endpoint load as this replica sees it: sessions placed on the endpoint within the
//! session idle window.
//!
//! A ring of time buckets of atomic counters: recording is one or two relaxed atomic
//! operations, reading sums [`BUCKETS`] counters, nothing takes a lock and memory is
//! fixed per endpoint. A bucket is recycled lazily by the first writer that finds it
//! stale, so the count can be off by the placements of one bucket's width at a
//! window edge (1/[`BUCKETS`] of the window): the stated error of this approximation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets per window.
pub const BUCKETS: usize = 30;

/// A sliding-window counter.
#[derive(Debug)]
pub struct LoadTracker {
    base: Instant,
    /// Bucket width in nanoseconds (window / BUCKETS).
    width: u64,
    /// Bucket number each slot currently counts for.
    epochs: [AtomicU64; BUCKETS],
    counts: [AtomicU64; BUCKETS],
}

impl LoadTracker {
    /// A tracker over a window of `window`.
    pub fn new(window: Duration, now: Instant) -> Self {
        LoadTracker {
            base: now,
            width: (window.as_nanos() as u64 / BUCKETS as u64).max(1),
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_nanos() as u64 / self.width
    }

    /// Counts one placement at `now`.
    pub fn record(&self, now: Instant) {
        let b = self.bucket(now);
        let slot = (b % BUCKETS as u64) as usize;
        let seen = self.epochs[slot].load(Ordering::Relaxed);
        if seen != b
            && self.epochs[slot]
                .compare_exchange(seen, b, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.counts[slot].store(0, Ordering::Relaxed);
        }
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Placements within the window ending at `now`.
    pub fn load(&self, now: Instant) -> u64 {
        let b = self.bucket(now);
        let oldest = b.saturating_sub(BUCKETS as u64 - 1);
        (0..BUCKETS)
            .filter(|&i| (oldest..=b).contains(&self.epochs[i].load(Ordering::Relaxed)))
            .map(|i| self.counts[i].load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn placements_age_out_after_the_window() {
        let t = LoadTracker::new(Duration::from_secs(60), Instant::now());
        for _ in 0..5 {
            t.record(Instant::now());
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        t.record(Instant::now());
        assert_eq!(t.load(Instant::now()), 6);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(t.load(Instant::now()), 1, "the first five aged out");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(t.load(Instant::now()), 0);
        t.record(Instant::now());
        assert_eq!(
            t.load(Instant::now()),
            1,
            "a recycled bucket starts from zero"
        );
    }
}
