//! The retry budget: retries may add at most a fraction of extra requests per backend,
//! so a failing backend is not hit by a retry storm.
//!
//! A lock-free token bucket in milli-tokens: every request deposits `ratio` tokens (up to
//! a cap), every retry spends one. The bucket starts full, so a quiet backend can still
//! retry a failure.

use std::sync::atomic::{AtomicU64, Ordering};

/// Most retries banked at once.
const CAP_MILLI: u64 = 100 * 1000;

/// A per-backend retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    milli: AtomicU64,
    deposit: u64,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per request (0.2 = at most 20% extra).
    pub fn new(ratio: f64) -> Self {
        RetryBudget {
            milli: AtomicU64::new(if ratio > 0.0 { CAP_MILLI } else { 0 }),
            deposit: (ratio.clamp(0.0, 1.0) * 1000.0) as u64,
        }
    }

    /// Counts one request.
    #[inline]
    pub fn deposit(&self) {
        if self.deposit == 0 || self.milli.load(Ordering::Relaxed) >= CAP_MILLI {
            return;
        }
        let _ = self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some((m + self.deposit).min(CAP_MILLI))
            });
    }

    /// Takes one retry if the budget allows it.
    pub fn try_spend(&self) -> bool {
        self.milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                m.checked_sub(1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_limited_to_the_ratio_once_the_bank_is_spent() {
        let b = RetryBudget::new(0.2);
        let banked = (0..1000).take_while(|_| b.try_spend()).count();
        assert_eq!(banked, 100);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.try_spend() {
                retries += 1;
            }
        }
        assert_eq!(retries, 200);
        assert!(!RetryBudget::new(0.0).try_spend());
    }
}
