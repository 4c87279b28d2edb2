//! Prometheus metrics (`GET /metrics` on the admin listener, text exposition through
//! the prometheus-client crate, names prefixed `tether_`), rendered from the counters
//! in [`crate::stats`] at scrape time. A scrape walks the current snapshots, so
//! endpoint labels exist exactly for the endpoints that exist now (bounded
//! cardinality); a departed endpoint's series simply end.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::backend::{Backend, EndpointState};
use crate::fault::ClientFault;
use crate::stats::{AffinityEvent, BUCKETS, CLASSES};

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
struct ProtocolLabels {
    backend: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    backend: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
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

/// What the proxy as a whole counts, beside its backends' own counters.
#[derive(Debug, Clone, Default)]
pub struct ProxyCounts {
    /// Requests routes answered themselves (redirects; 500 for an HTTPRoute rule without
    /// a valid backend), by status: they have no backend to be counted under.
    pub route_answers: Vec<(u16, u64)>,
    /// Config reloads that succeeded.
    pub reloads_ok: u64,
    /// Config reloads that failed.
    pub reloads_failed: u64,
    /// Client connections ended by `send_timeout`.
    pub send_timeouts: u64,
}

/// Renders every metric in the Prometheus text format.
pub fn render(backends: &[std::sync::Arc<Backend>], counts: ProxyCounts) -> String {
    let mut registry = Registry::with_prefix("tether");
    let requests = Family::<RequestLabels, Counter>::default();
    let connect_errors = Family::<EndpointLabels, Counter>::default();
    let retries = Family::<BackendLabels, Counter>::default();
    let affinity = Family::<AffinityLabels, Counter>::default();
    let live = Family::<EndpointLabels, Gauge>::default();
    let endpoints = Family::<StateLabels, Gauge>::default();
    let discovery = Family::<BackendLabels, Counter>::default();
    let last_sync = Family::<BackendLabels, Gauge>::default();
    let discovery_errors = Family::<BackendLabels, Counter>::default();
    let by_protocol = Family::<ProtocolLabels, Counter>::default();
    let reloads = Family::<ResultLabels, Counter>::default();
    let client_errors = Family::<BackendReasonLabels, Counter>::default();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

    for b in backends {
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
        discovery_errors
            .get_or_create(&bl)
            .inc_by(load(&stats.discovery_errors));
        for (i, protocol) in ["http1", "http2"].into_iter().enumerate() {
            by_protocol
                .get_or_create(&ProtocolLabels {
                    backend: bl.backend.clone(),
                    protocol: protocol.into(),
                })
                .inc_by(load(&stats.by_protocol[i]));
        }
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
        ("success", counts.reloads_ok),
        ("failure", counts.reloads_failed),
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
        "requests_by_protocol",
        "Requests per backend by the protocol they arrived on (http1, http2)",
        by_protocol,
    );
    registry.register(
        "discovery_errors",
        "Failed discovery calls (API errors, lost watches) per backend",
        discovery_errors,
    );
    registry.register(
        "discovery_last_sync_timestamp_seconds",
        "Unix time of the last endpoint update",
        last_sync,
    );
    registry.register("config_reloads", "Config reloads by result", reloads);
    let send_timeouts = Counter::<u64>::default();
    send_timeouts.inc_by(counts.send_timeouts);
    registry.register(
        "send_timeouts",
        "Client connections ended because they took no bytes for send_timeout",
        send_timeouts,
    );
    let route_answers = Family::<StatusLabels, Counter>::default();
    for (status, n) in &counts.route_answers {
        route_answers
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .inc_by(*n);
    }
    registry.register(
        "route_answers",
        "Requests a route answered itself, without a backend (redirects, 500 for a rule \
         without a valid backend), by status",
        route_answers,
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}
