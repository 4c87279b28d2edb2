//! Time for session logic: wall-clock seconds (cookie timestamps) and a monotonic
//! instant (cool-offs, rate limits), both read from tokio's clock.
//!
//! Wall time is derived as `start_unix + (tokio::time::Instant::now() - start)`, so the
//! session timestamps advance with tokio's clock: a test with a paused clock moves them
//! with `tokio::time::advance` and stays deterministic, and the request path reads the
//! system clock once per process instead of once per request.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// One reading of the clock, taken once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Unix seconds, for cookie timestamps and session accounting.
    pub unix: u64,
    /// Monotonic time, for cool-offs and rate limits.
    pub instant: Instant,
}

/// The clock a backend reads.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start_unix: u64,
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock anchored at the system time now.
    pub fn new() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::at(unix)
    }

    /// A clock whose current reading is `unix` (tests, benches).
    pub fn at(unix: u64) -> Self {
        Clock {
            start_unix: unix,
            start: Instant::now(),
        }
    }

    /// Reads the clock.
    #[inline]
    pub fn now(&self) -> Now {
        let instant = Instant::now();
        Now {
            unix: self.start_unix + instant.saturating_duration_since(self.start).as_secs(),
            instant,
        }
    }
}
