//! Prometheus metrics (`GET /metrics` on the admin listener, text exposition through
//! the prometheus-client crate, names prefixed `tether_`).
//!
//! The request path only bumps relaxed atomics that live next to what they count
//! ([`EndpointStats`] per endpoint, [`BackendStats`] per backend): no label maps, no
//! locks, no allocation. A scrape walks the current snapshots and renders them, so
//! endpoint labels exist exactly for the endpoints that exist now (bounded cardinality);
//! a departed endpoint's series simply end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::backend::EndpointState;
use crate::proxy::{ClientFault, Proxy};

/// Status classes counted per endpoint: 1xx..5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request duration buckets (seconds), as upper bounds.
const BUCKETS: [f64; 12] = [
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
    const ALL: [AffinityEvent; 12] = [
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
    requests: [AtomicU64; 5],
    /// Failed connection attempts.
    connect_errors: AtomicU64,
    /// The last failure seen: a [`LastError`] code (0 = none).
    last_error: std::sync::atomic::AtomicU8,
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
    affinity: [AtomicU64; 12],
    retries: AtomicU64,
    /// Responses tether wrote itself (no endpoint answered), by class.
    local: [AtomicU64; 5],
    /// Requests that failed by the client's fault, by [`ClientFault`].
    client_errors: [AtomicU64; ClientFault::ALL.len()],
    duration_buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_sum_us: AtomicU64,
    discovery_events: AtomicU64,
    last_sync_unix: AtomicU64,
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

    /// Counts a request that failed with `e`, answered by tether itself: by status
    /// class, and as a client error when it was the client's fault.
    #[inline]
    pub fn failed(&self, e: &crate::proxy::Error) {
        self.local_response(e.status());
        if let Some(f) = e.client_fault() {
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

    /// Counts a discovery update published at `unix`.
    pub fn discovery_event(&self, unix: u64) {
        self.discovery_events.fetch_add(1, Ordering::Relaxed);
        self.last_sync_unix.store(unix, Ordering::Relaxed);
    }
}

/// A histogram rendered from atomics at scrape time.
#[derive(Debug)]
struct HistogramSnapshot {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: String,
    endpoint: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    backend: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AffinityLabels {
    backend: String,
    outcome: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    backend: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendReasonLabels {
    backend: String,
    reason: String,
}

/// Renders every metric in the Prometheus text format.
pub fn render(proxy: &Proxy) -> String {
    let mut registry = Registry::with_prefix("tether");
    let requests = Family::<RequestLabels, Counter>::default();
    let connect_errors = Family::<EndpointLabels, Counter>::default();
    let retries = Family::<BackendLabels, Counter>::default();
    let affinity = Family::<AffinityLabels, Counter>::default();
    let live = Family::<EndpointLabels, Gauge>::default();
    let endpoints = Family::<StateLabels, Gauge>::default();
    let discovery = Family::<BackendLabels, Counter>::default();
    let last_sync = Family::<BackendLabels, Gauge>::default();
    let reloads = Family::<ResultLabels, Counter>::default();
    let client_errors = Family::<BackendReasonLabels, Counter>::default();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

    for b in proxy.state().backends.iter() {
        let name = b.name().to_string();
        let s = b.snapshot();
        let now = b.clock().now();
        let stats = &b.stats;
        for e in s.endpoints.iter() {
            let id = e.identity.to_string();
            for (c, class) in CLASSES.iter().enumerate() {
                requests
                    .get_or_create(&RequestLabels {
                        backend: name.clone(),
                        endpoint: id.clone(),
                        class: class.to_string(),
                    })
                    .inc_by(load(&e.stats.requests[c]));
            }
            let el = EndpointLabels {
                backend: name.clone(),
                endpoint: id,
            };
            connect_errors
                .get_or_create(&el)
                .inc_by(load(&e.stats.connect_errors));
            live.get_or_create(&el)
                .set(e.sessions.live(now.unix) as i64);
        }
        for (c, class) in CLASSES.iter().enumerate() {
            requests
                .get_or_create(&RequestLabels {
                    backend: name.clone(),
                    endpoint: "none".into(),
                    class: class.to_string(),
                })
                .inc_by(load(&stats.local[c]));
        }
        let bl = BackendLabels {
            backend: name.clone(),
        };
        retries.get_or_create(&bl).inc_by(load(&stats.retries));
        for f in ClientFault::ALL {
            client_errors
                .get_or_create(&BackendReasonLabels {
                    backend: name.clone(),
                    reason: f.as_str().into(),
                })
                .inc_by(load(&stats.client_errors[f as usize]));
        }
        discovery
            .get_or_create(&bl)
            .inc_by(load(&stats.discovery_events));
        last_sync
            .get_or_create(&bl)
            .set(load(&stats.last_sync_unix) as i64);
        for ev in AffinityEvent::ALL {
            let (outcome, reason) = ev.labels();
            affinity
                .get_or_create(&AffinityLabels {
                    backend: name.clone(),
                    outcome: outcome.into(),
                    reason: reason.into(),
                })
                .inc_by(load(&stats.affinity[ev as usize]));
        }
        let (mut ready, mut draining, mut down) = (0, 0, 0);
        for e in s.endpoints.iter() {
            if e.health.is_down(now.instant) {
                down += 1;
            } else if e.state == EndpointState::Draining {
                draining += 1;
            } else {
                ready += 1;
            }
        }
        for (state, n) in [("ready", ready), ("draining", draining), ("down", down)] {
            endpoints
                .get_or_create(&StateLabels {
                    backend: name.clone(),
                    state: state.into(),
                })
                .set(n);
        }
        let counts: Vec<u64> = stats.duration_buckets.iter().map(load).collect();
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .zip(counts.iter().copied())
            .collect();
        buckets.push((f64::INFINITY, counts[BUCKETS.len()]));
        registry
            .sub_registry_with_label(("backend".into(), name.into()))
            .register(
                "request_duration_seconds",
                "Time to the response head, per backend",
                HistogramSnapshot {
                    sum: load(&stats.duration_sum_us) as f64 / 1e6,
                    count: counts.iter().sum(),
                    buckets,
                },
            );
    }
    for (result, n) in [
        ("success", proxy.reloads(true)),
        ("failure", proxy.reloads(false)),
    ] {
        reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc_by(n);
    }

    registry.register(
        "requests",
        "Responses by backend, endpoint (none = written by tether) and status class",
        requests,
    );
    registry.register(
        "upstream_connect_errors",
        "Failed upstream connection attempts",
        connect_errors,
    );
    registry.register("retries", "Requests retried on another endpoint", retries);
    registry.register(
        "client_errors",
        "Requests that failed by the client's fault (never counted against an endpoint), by reason",
        client_errors,
    );
    registry.register(
        "affinity",
        "Affinity outcomes by backend, outcome and reason",
        affinity,
    );
    registry.register(
        "live_sessions",
        "Live sessions per endpoint as seen by this replica",
        live,
    );
    registry.register("endpoints", "Endpoints per backend by state", endpoints);
    registry.register(
        "discovery_events",
        "Endpoint updates applied per backend",
        discovery,
    );
    registry.register(
        "discovery_last_sync_timestamp_seconds",
        "Unix time of the last endpoint update",
        last_sync,
    );
    registry.register("config_reloads", "Config reloads by result", reloads);
    let send_timeouts = Counter::<u64>::default();
    send_timeouts.inc_by(proxy.send_timeouts().load(Ordering::Relaxed));
    registry.register(
        "send_timeouts",
        "Client connections ended because they took no bytes for send_timeout",
        send_timeouts,
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}
