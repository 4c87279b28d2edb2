//! The counters the request path bumps: relaxed atomics that live next to what they
//! count ([`EndpointStats`] per endpoint, [`BackendStats`] per backend): no label maps,
//! no locks, no allocation. `metrics` renders them for Prometheus at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::fault::ClientFault;

/// Status classes counted per endpoint: 1xx..5xx.
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request duration buckets (seconds), as upper bounds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Affinity outcomes, with their reasons, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum AffinityEvent {
    /// A new session.
    New,
    /// Served by its pinned endpoint.
    Sticky,
    /// Failover: the pinned endpoint left the table.
    FailoverEndpointGone,
    /// Failover: the pinned endpoint is cooling off or ejected.
    FailoverEndpointDown,
    /// Failover: connecting to the pinned endpoint failed just now.
    FailoverConnectFailed,
    /// Failover: the pinned endpoint's drain deadline passed.
    FailoverDrained,
    /// Moved to a newly added endpoint.
    Rebalanced,
    /// A cookie that failed verification.
    InvalidBadSignature,
    /// A cookie signed with a key not in the ring.
    InvalidUnknownKey,
    /// A genuine cookie past its idle or absolute timeout.
    InvalidExpired,
    /// A cookie that is not one of ours at all.
    InvalidMalformed,
    /// A cookie signed with an older key, re-issued under the current one.
    KeyRotated,
}

impl AffinityEvent {
    pub(crate) const ALL: [AffinityEvent; 12] = [
        AffinityEvent::New,
        AffinityEvent::Sticky,
        AffinityEvent::FailoverEndpointGone,
        AffinityEvent::FailoverEndpointDown,
        AffinityEvent::FailoverConnectFailed,
        AffinityEvent::FailoverDrained,
        AffinityEvent::Rebalanced,
        AffinityEvent::InvalidBadSignature,
        AffinityEvent::InvalidUnknownKey,
        AffinityEvent::InvalidExpired,
        AffinityEvent::InvalidMalformed,
        AffinityEvent::KeyRotated,
    ];

    /// (outcome, reason) labels.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            AffinityEvent::New => ("new", "none"),
            AffinityEvent::Sticky => ("sticky", "none"),
            AffinityEvent::FailoverEndpointGone => ("failover", "endpoint_gone"),
            AffinityEvent::FailoverEndpointDown => ("failover", "endpoint_down"),
            AffinityEvent::FailoverConnectFailed => ("failover", "connect_failed"),
            AffinityEvent::FailoverDrained => ("failover", "drained"),
            AffinityEvent::Rebalanced => ("rebalanced", "none"),
            AffinityEvent::InvalidBadSignature => ("invalid_cookie", "bad_signature"),
            AffinityEvent::InvalidUnknownKey => ("invalid_cookie", "unknown_key"),
            AffinityEvent::InvalidExpired => ("invalid_cookie", "expired"),
            AffinityEvent::InvalidMalformed => ("invalid_cookie", "malformed"),
            AffinityEvent::KeyRotated => ("key_rotated", "none"),
        }
    }
}

/// Counters of one endpoint, carried across snapshots.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Responses by status class.
    pub(crate) requests: [AtomicU64; 5],
    /// Failed connection attempts.
    pub(crate) connect_errors: AtomicU64,
    /// The last failure seen: a [`LastError`] code (0 = none).
    pub(crate) last_error: std::sync::atomic::AtomicU8,
}

/// The kinds of failure `/debug/backends` reports as an endpoint's last error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LastError {
    /// A connection could not be made.
    Connect = 1,
    /// The endpoint answered with a 5xx.
    ServerError = 2,
    /// The exchange failed after the request was sent (reset, closed).
    Reset = 3,
    /// The endpoint did not answer within the response timeout.
    Timeout = 4,
}

impl EndpointStats {
    /// Counts a response from this endpoint.
    #[inline]
    pub fn response(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses counted so far (all classes).
    pub fn total(&self) -> u64 {
        self.requests
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Connection attempts that failed so far.
    pub fn connect_errors(&self) -> u64 {
        self.connect_errors.load(Ordering::Relaxed)
    }

    /// Counts a failed connection attempt.
    #[inline]
    pub fn connect_error(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
        self.error(LastError::Connect);
    }

    /// Remembers the latest failure.
    #[inline]
    pub fn error(&self, e: LastError) {
        self.last_error.store(e as u8, Ordering::Relaxed);
    }

    /// The latest failure, for `/debug/backends`.
    pub fn last_error(&self) -> Option<&'static str> {
        match self.last_error.load(Ordering::Relaxed) {
            1 => Some("connect failed"),
            2 => Some("5xx response"),
            3 => Some("reset after send"),
            4 => Some("response timed out"),
            _ => None,
        }
    }
}

/// Counters of one backend.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub(crate) affinity: [AtomicU64; 12],
    pub(crate) retries: AtomicU64,
    /// Responses tether wrote itself (no endpoint answered), by class.
    pub(crate) local: [AtomicU64; 5],
    /// Requests that failed by the client's fault, by [`ClientFault`].
    pub(crate) client_errors: [AtomicU64; ClientFault::ALL.len()],
    pub(crate) duration_buckets: [AtomicU64; BUCKETS.len() + 1],
    pub(crate) duration_sum_us: AtomicU64,
    pub(crate) discovery_events: AtomicU64,
    pub(crate) last_sync_unix: AtomicU64,
    /// Failed discovery calls (an API error, a lost watch).
    pub(crate) discovery_errors: AtomicU64,
    /// Requests by the protocol they arrived on: [HTTP/1, HTTP/2].
    pub(crate) by_protocol: [AtomicU64; 2],
}

impl BackendStats {
    /// Counts an affinity event.
    #[inline]
    pub fn affinity(&self, e: AffinityEvent) {
        self.affinity[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every affinity counter as ("outcome/reason", count).
    pub fn affinity_counts(&self) -> Vec<(String, u64)> {
        AffinityEvent::ALL
            .iter()
            .map(|e| {
                let (o, r) = e.labels();
                let key = if r == "none" {
                    o.to_string()
                } else {
                    format!("{o}/{r}")
                };
                (key, self.affinity[*e as usize].load(Ordering::Relaxed))
            })
            .collect()
    }

    /// How many times `e` happened so far.
    pub fn affinity_count(&self, e: AffinityEvent) -> u64 {
        self.affinity[e as usize].load(Ordering::Relaxed)
    }

    /// Requests finished so far (answered by an endpoint or by tether): the count of
    /// the duration histogram, so a rate of it is `tether_request_duration_seconds_count`'s.
    pub fn requests(&self) -> u64 {
        self.duration_buckets
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a retry.
    #[inline]
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response tether wrote itself.
    #[inline]
    pub fn local_response(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.local[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that failed, answered by tether itself with `status`: by status
    /// class, and as a client error when it was the client's `fault`.
    #[inline]
    pub fn failed(&self, status: http::StatusCode, fault: Option<ClientFault>) {
        self.local_response(status);
        if let Some(f) = fault {
            self.client_error(f);
        }
    }

    /// Counts a request that failed by the client's fault.
    #[inline]
    pub fn client_error(&self, f: ClientFault) {
        self.client_errors[f as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a request took to its response head.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts a request that arrived over HTTP/2 (`true`) or HTTP/1.
    #[inline]
    pub fn arrived(&self, http2: bool) {
        self.by_protocol[usize::from(http2)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed discovery call.
    pub fn discovery_error(&self) {
        self.discovery_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a discovery update published at `unix`.
    pub fn discovery_event(&self, unix: u64) {
        self.discovery_events.fetch_add(1, Ordering::Relaxed);
        self.last_sync_unix.store(unix, Ordering::Relaxed);
    }
}
