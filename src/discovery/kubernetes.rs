//! Endpoints from a Kubernetes Service's EndpointSlices.
//!
//! watcher → slice set → snapshot: kube-runtime's `watcher` lists and watches the
//! `discovery.k8s.io/v1` EndpointSlices labelled `kubernetes.io/service-name=<service>`
//! (re-listing after 410 Gone or a dropped connection, with backoff); [`SliceSet`] is
//! the reflector: it buffers a re-list between `Init` and `InitDone` and swaps it in
//! whole, so slices that were not re-listed are gone. Every change that completes a
//! view is merged into one endpoint list and published at once, in the event's task,
//! never on a timer. Errors only log: the last published table stays in place, so an
//! API outage never empties the routing table.
//!
//! A weighted backend (several Services, [`WeightedDiscovery`]) runs one such watcher
//! per Service and publishes their merged list, each Service's weight spread over its
//! pods as endpoint weights ([`weighted_endpoints`]), which the placement table and the
//! load bound already honour.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::Discovery;
use crate::backend::{Backend, EndpointSpec, EndpointState};
use crate::config::{KubernetesSettings, KubernetesSource, PortRef, WeightedService};

/// Why a Kubernetes client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or understood.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Neither in-cluster config nor a kubeconfig could be found or used.
    #[error("no kubernetes client configuration (in-cluster, $KUBECONFIG, ~/.kube/config): {0}")]
    Infer(String),
}

/// Builds the API client: the configured kubeconfig file, else the standard inference
/// (`$KUBECONFIG` / `~/.kube/config`, then the in-cluster service account). Plain
/// `http://` servers work, which is what local runs and the tests use.
pub async fn client(settings: &KubernetesSettings) -> Result<Client, Error> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let err = |message: String| Error::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| err(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Infer(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| Error::Infer(e.to_string()))
}

/// Watches one Service's EndpointSlices and publishes its endpoints.
pub struct KubernetesDiscovery {
    /// The API client.
    pub client: Client,
    /// Which Service and port.
    pub source: KubernetesSource,
    /// Whether the backend speaks h2c to every endpoint (a port's appProtocol
    /// `kubernetes.io/h2c` also selects it).
    pub h2c: bool,
    /// Retry delays after API errors.
    pub backoff: (Duration, Duration),
}

impl Discovery for KubernetesDiscovery {
    async fn run(self, backend: Arc<Backend>) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client, &self.source.namespace);
        let selector = format!("kubernetes.io/service-name={}", self.source.service);
        let stream = watcher::watcher(api, watcher::Config::default().labels(&selector))
            .backoff(ExpBackoff::new(self.backoff.0, self.backoff.1));
        let mut stream = std::pin::pin!(stream);
        let mut slices = SliceSet::new(self.source.clone(), self.h2c);
        let mut failing = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if failing {
                        tracing::info!(backend = %backend.name(), "endpointslice watch recovered");
                        failing = false;
                    }
                    if slices.apply(event) {
                        backend.publish(slices.endpoints());
                    }
                }
                Err(e) => {
                    // The watcher retries by itself after the backoff; keep routing on
                    // the last published endpoints meanwhile, if there ever were any.
                    let what = if backend.snapshot().is_synced() {
                        "endpointslice watch failed; keeping the last known endpoints"
                    } else {
                        "endpointslice watch failed before any endpoints were loaded: \
                         none are loaded yet, so the backend answers 503 until the watch \
                         succeeds"
                    };
                    // Counted before it is logged: whoever reads the warning finds the
                    // error in the metrics too.
                    backend.stats.discovery_error();
                    tracing::warn!(
                        backend = %backend.name(),
                        namespace = %self.source.namespace,
                        service = %self.source.service,
                        error = %e,
                        "{what}"
                    );
                    failing = true;
                }
            }
        }
    }
}

/// Watches the EndpointSlices of several Services (a weighted backend) and publishes
/// their endpoints as one list, each Service's weight spread over its pods
/// ([`weighted_endpoints`]).
///
/// One watcher per Service, each with its own [`SliceSet`], merged into one stream so
/// the list is rebuilt in the event's task as for one Service. Nothing is published
/// until every Service has listed once: a first list missing a Service would give the
/// others all new sessions and mark its pods as added later (a scale-out to rebalancing).
pub struct WeightedDiscovery {
    /// The API client.
    pub client: Client,
    /// Which Services and ports, with their weights.
    pub services: Vec<WeightedService>,
    /// Whether the backend speaks h2c to every endpoint.
    pub h2c: bool,
    /// Retry delays after API errors.
    pub backoff: (Duration, Duration),
}

impl Discovery for WeightedDiscovery {
    async fn run(self, backend: Arc<Backend>) {
        let streams = self.services.iter().enumerate().map(|(i, s)| {
            let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &s.source.namespace);
            let selector = format!("kubernetes.io/service-name={}", s.source.service);
            watcher::watcher(api, watcher::Config::default().labels(&selector))
                .backoff(ExpBackoff::new(self.backoff.0, self.backoff.1))
                .map(move |item| (i, item))
                .boxed()
        });
        let mut stream = futures::stream::select_all(streams);
        let mut sets: Vec<SliceSet> = self
            .services
            .iter()
            .map(|s| SliceSet::new(s.source.clone(), self.h2c))
            .collect();
        let mut listed = vec![false; sets.len()];
        let mut failing = vec![false; sets.len()];
        while let Some((i, item)) = stream.next().await {
            let source = &self.services[i].source;
            match item {
                Ok(event) => {
                    if std::mem::take(&mut failing[i]) {
                        tracing::info!(backend = %backend.name(), service = %source.service, "endpointslice watch recovered");
                    }
                    listed[i] |= matches!(event, Event::InitDone);
                    if sets[i].apply(event) && listed.iter().all(|l| *l) {
                        let parts: Vec<(u32, Vec<EndpointSpec>)> = self
                            .services
                            .iter()
                            .zip(&sets)
                            .map(|(s, set)| (s.weight, set.endpoints()))
                            .collect();
                        backend.publish(weighted_endpoints(&parts));
                    }
                }
                Err(e) => {
                    // As for one Service: the watcher retries after its backoff, and the
                    // last published endpoints keep routing meanwhile.
                    backend.stats.discovery_error();
                    tracing::warn!(
                        backend = %backend.name(),
                        namespace = %source.namespace,
                        service = %source.service,
                        error = %e,
                        "endpointslice watch failed; keeping the last known endpoints"
                    );
                    failing[i] = true;
                }
            }
        }
    }
}

/// Slots of the placement table each endpoint gets on average, at least: fine enough
/// that a Service's share is exact to within 1/8 of one pod's, small enough that the
/// table of a thousand pods stays a few hundred thousand slots.
const WEIGHT_RESOLUTION: u64 = 8;

/// The endpoint list of a weighted backend: each Service's endpoints (`parts`: weight,
/// endpoints) with endpoint weights such that new sessions split between the Services in
/// proportion to their weights, whatever their pod counts, and evenly between the pods
/// of one Service.
///
/// A Service's weight is spread over its ready endpoints (over its draining ones when
/// none is ready: those take new sessions only when nothing is ready anywhere) by
/// largest remainder, in identity order, so the Service's total is exact and every
/// replica computes the same; the weights are then divided by their greatest common
/// divisor to keep the table small. Services without endpoints do not count: their
/// share goes to the others. A weight-0 Service's endpoints get weight 0: no new
/// sessions, but they stay in the list so their sessions stay. An endpoint listed by
/// two Services gets both weights and its best state.
pub fn weighted_endpoints(parts: &[(u32, Vec<EndpointSpec>)]) -> Vec<EndpointSpec> {
    let counted = |eps: &[EndpointSpec]| {
        let ready = eps
            .iter()
            .filter(|e| e.state == EndpointState::Ready)
            .count();
        if ready > 0 {
            (ready, Some(EndpointState::Ready))
        } else {
            (eps.len(), None)
        }
    };
    let endpoints: u64 = parts
        .iter()
        .filter(|(w, _)| *w > 0)
        .map(|(_, eps)| eps.len() as u64)
        .sum();
    let total_weight: u64 = parts
        .iter()
        .filter(|(_, eps)| !eps.is_empty())
        .map(|(w, _)| u64::from(*w))
        .sum();
    let units = (WEIGHT_RESOLUTION * endpoints).max(1024);
    let mut merged: BTreeMap<Arc<str>, EndpointSpec> = BTreeMap::new();
    for (weight, eps) in parts {
        let (n, state) = counted(eps);
        // This Service's units, shared by its `n` counted endpoints.
        let share = if total_weight == 0 || n == 0 {
            0
        } else {
            units * u64::from(*weight) / total_weight
        };
        let (base, mut extra) = (share / n.max(1) as u64, share % n.max(1) as u64);
        let mut sorted: Vec<&EndpointSpec> = eps.iter().collect();
        sorted.sort_by(|a, b| a.identity.cmp(&b.identity));
        for e in sorted {
            let mut w = 0;
            if *weight > 0 && state.is_none_or(|s| s == e.state) {
                w = base + u64::from(extra > 0);
                extra = extra.saturating_sub(1);
                // A tiny share still takes sessions: weight > 0 means some.
                w = w.max(1);
            }
            let w = u32::try_from(w).unwrap_or(u32::MAX);
            match merged.get_mut(&e.identity) {
                Some(existing) => {
                    existing.weight = existing.weight.saturating_add(w);
                    if e.state == EndpointState::Ready {
                        existing.state = EndpointState::Ready;
                    }
                }
                None => {
                    merged.insert(
                        e.identity.clone(),
                        EndpointSpec {
                            weight: w,
                            ..e.clone()
                        },
                    );
                }
            }
        }
    }
    let gcd = merged
        .values()
        .map(|e| e.weight)
        .filter(|w| *w > 0)
        .fold(0, gcd);
    merged
        .into_values()
        .map(|mut e| {
            if gcd > 1 {
                e.weight /= gcd;
            }
            e
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Exponential backoff with full jitter, reset by the first successful event.
struct ExpBackoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl ExpBackoff {
    fn new(min: Duration, max: Duration) -> Self {
        ExpBackoff {
            min,
            max,
            next: min,
        }
    }
}

impl Iterator for ExpBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        // Jitter in [current/2, current] so replicas do not reconnect in lockstep.
        let half = current / 2;
        Some(half + half.mul_f64(rand::random::<f64>()))
    }
}

impl Backoff for ExpBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The slices of one Service, as the watcher reported them.
#[derive(Debug)]
pub struct SliceSet {
    source: KubernetesSource,
    h2c: bool,
    /// Resolved endpoints per slice name.
    current: BTreeMap<String, Vec<EndpointSpec>>,
    /// A re-list in progress (between `Init` and `InitDone`).
    pending: Option<BTreeMap<String, Vec<EndpointSpec>>>,
}

impl SliceSet {
    /// An empty set for `source`.
    pub fn new(source: KubernetesSource, h2c: bool) -> Self {
        SliceSet {
            source,
            h2c,
            current: BTreeMap::new(),
            pending: None,
        }
    }

    /// Applies a watcher event; true when the view is complete and changed, i.e. it
    /// must be published.
    pub fn apply(&mut self, event: Event<EndpointSlice>) -> bool {
        match event {
            Event::Init => {
                self.pending = Some(BTreeMap::new());
                false
            }
            Event::InitApply(slice) => {
                let (name, eps) = self.resolve(&slice);
                self.pending
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, eps);
                false
            }
            Event::InitDone => {
                self.current = self.pending.take().unwrap_or_default();
                true
            }
            Event::Apply(slice) => {
                let (name, eps) = self.resolve(&slice);
                let changed = self.current.get(&name) != Some(&eps);
                self.current.insert(name, eps);
                changed
            }
            Event::Delete(slice) => {
                let name = slice.metadata.name.unwrap_or_default();
                self.current.remove(&name).is_some()
            }
        }
    }

    fn resolve(&self, slice: &EndpointSlice) -> (String, Vec<EndpointSpec>) {
        (
            slice.metadata.name.clone().unwrap_or_default(),
            slice_endpoints(slice, &self.source, self.h2c),
        )
    }

    /// Every endpoint of every slice, deduplicated by identity. An endpoint listed in
    /// several slices (during slice churn) keeps its best state: ready over draining.
    pub fn endpoints(&self) -> Vec<EndpointSpec> {
        let mut merged: BTreeMap<Arc<str>, EndpointSpec> = BTreeMap::new();
        for e in self.current.values().flatten() {
            match merged.get_mut(&e.identity) {
                Some(existing) => {
                    if existing.state == EndpointState::Draining && e.state == EndpointState::Ready
                    {
                        *existing = e.clone();
                    }
                }
                None => {
                    merged.insert(e.identity.clone(), e.clone());
                }
            }
        }
        merged.into_values().collect()
    }
}

/// The endpoints of one slice, with the port resolved for this slice and the conditions
/// mapped to states: ready → [`EndpointState::Ready`], serving and terminating →
/// [`EndpointState::Draining`], anything else → left out (its sessions fail over).
pub fn slice_endpoints(
    slice: &EndpointSlice,
    source: &KubernetesSource,
    h2c: bool,
) -> Vec<EndpointSpec> {
    let name = slice.metadata.name.as_deref().unwrap_or("");
    match slice.address_type.as_str() {
        "IPv4" | "IPv6" => {}
        other => {
            tracing::warn!(
                slice = name,
                address_type = other,
                "ignoring EndpointSlice: only IPv4 and IPv6 are supported"
            );
            return Vec::new();
        }
    }
    let ports = slice.ports.as_deref().unwrap_or(&[]);
    let chosen = match &source.port {
        PortRef::Number(n) => ports.iter().find(|p| p.port == Some(i32::from(*n))),
        PortRef::Name(want) => ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == want),
        PortRef::Only => ports.first().filter(|_| ports.len() == 1),
    };
    let h2c = h2c || chosen.and_then(|p| p.app_protocol.as_deref()) == Some("kubernetes.io/h2c");
    let port = match &source.port {
        PortRef::Number(n) => Some(*n),
        PortRef::Name(want) => ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == want)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok()),
        PortRef::Only => match ports {
            [only] => only.port.and_then(|p| u16::try_from(p).ok()),
            _ => {
                tracing::warn!(slice = name, "EndpointSlice has several ports and the backend names none; set kubernetes.port");
                None
            }
        },
    };
    let Some(port) = port else {
        tracing::debug!(slice = name, port = ?source.port, "EndpointSlice has no matching port");
        return Vec::new();
    };
    let mut out = Vec::new();
    for ep in slice.endpoints.as_deref().unwrap_or(&[]) {
        let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        let c = ep.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(true);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        let state = if ready && !terminating {
            EndpointState::Ready
        } else if serving && terminating {
            EndpointState::Draining
        } else {
            continue;
        };
        let address = SocketAddr::new(ip, port);
        // Identity is the pod, so a pod that comes back under its name gets its sessions
        // back and a new pod on a recycled IP does not inherit someone else's.
        let identity: Arc<str> = match ep.target_ref.as_ref().and_then(|r| r.name.as_deref()) {
            Some(pod) => {
                let ns = ep
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.namespace.as_deref())
                    .unwrap_or(&source.namespace);
                format!("{ns}/{pod}").into()
            }
            None => address.to_string().into(),
        };
        out.push(EndpointSpec {
            identity,
            address,
            weight: 1,
            state,
            h2c,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(port: PortRef) -> KubernetesSource {
        KubernetesSource {
            namespace: "shop".into(),
            service: "cart".into(),
            port,
        }
    }

    fn eps(s: &EndpointSlice, src: &KubernetesSource) -> Vec<EndpointSpec> {
        slice_endpoints(s, src, false)
    }

    fn pods(prefix: &str, n: u8, state: EndpointState) -> Vec<EndpointSpec> {
        (0..n)
            .map(|i| EndpointSpec {
                identity: format!("shop/{prefix}-{i}").into(),
                address: SocketAddr::from(([10, 0, prefix.len() as u8, i], 80)),
                weight: 1,
                state,
                h2c: false,
            })
            .collect()
    }

    /// Sum of the weights of the endpoints whose identity starts with `prefix`.
    fn share(eps: &[EndpointSpec], prefix: &str) -> u64 {
        eps.iter()
            .filter(|e| e.identity.starts_with(&format!("shop/{prefix}-")))
            .map(|e| u64::from(e.weight))
            .sum()
    }

    #[test]
    fn service_weights_split_in_proportion_whatever_the_pod_counts() {
        let ready = EndpointState::Ready;
        // 3:1 with 3 pods against 1: the Services, not the pods, split 3:1.
        let eps = weighted_endpoints(&[(3, pods("web", 3, ready)), (1, pods("canary", 1, ready))]);
        assert_eq!(eps.len(), 4);
        assert_eq!(share(&eps, "web"), 3 * share(&eps, "canary"));
        let web: Vec<u32> = eps.iter().take(3).map(|e| e.weight).collect();
        assert!(
            web.iter().max().unwrap() - web.iter().min().unwrap() <= 1,
            "{web:?}"
        );
        // Equal weights reduce to 1 each: the table stays as small as without weights.
        let eps = weighted_endpoints(&[(5, pods("a", 2, ready)), (5, pods("bb", 2, ready))]);
        assert!(eps.iter().all(|e| e.weight == 1), "{eps:?}");
        // 7 pods sharing 1 against 1 pod: exact to within one unit of the resolution.
        let eps = weighted_endpoints(&[(1, pods("a", 7, ready)), (1, pods("bb", 1, ready))]);
        let (a, b) = (share(&eps, "a") as f64, share(&eps, "bb") as f64);
        assert!((a / b - 1.0).abs() < 0.01, "{a} {b}");
    }

    #[test]
    fn a_weight_zero_service_keeps_its_endpoints_with_weight_zero() {
        let ready = EndpointState::Ready;
        let eps = weighted_endpoints(&[(1, pods("web", 2, ready)), (0, pods("old", 2, ready))]);
        assert_eq!(
            eps.len(),
            4,
            "weight-0 pods stay listed: their sessions stay"
        );
        assert_eq!(share(&eps, "old"), 0);
        assert!(share(&eps, "web") > 0);
        // A Service without endpoints gives its share to the others.
        let eps = weighted_endpoints(&[(9, Vec::new()), (1, pods("web", 2, ready))]);
        assert!(eps.iter().all(|e| e.weight == 1), "{eps:?}");
    }

    #[test]
    fn a_services_draining_pods_get_its_share_only_when_none_of_its_pods_is_ready() {
        let mut web = pods("web", 2, EndpointState::Ready);
        web.extend(pods("webd", 1, EndpointState::Draining));
        let eps = weighted_endpoints(&[(1, web), (1, pods("old", 2, EndpointState::Draining))]);
        assert_eq!(share(&eps, "webd"), 0);
        assert_eq!(share(&eps, "web"), share(&eps, "old"));
    }

    #[test]
    fn app_protocol_h2c_selects_h2c() {
        let s = slice(json!({
            "metadata": {"name": "grpc-1"},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": 9000, "appProtocol": "kubernetes.io/h2c"}, {"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.1"]}]
        }));
        assert!(eps(&s, &source(PortRef::Name("grpc".into())))[0].h2c);
        assert!(!eps(&s, &source(PortRef::Name("http".into())))[0].h2c);
        assert!(slice_endpoints(&s, &source(PortRef::Name("http".into())), true)[0].h2c);
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn conditions_map_to_states_and_identity_is_the_pod() {
        let s = slice(json!({
            "metadata": {"name": "cart-1"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "cart-a"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true},
                 "targetRef": {"kind": "Pod", "namespace": "shop", "name": "cart-b"}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.5"]}
            ]
        }));
        let eps = eps(&s, &source(PortRef::Name("http".into())));
        let got: Vec<_> = eps
            .iter()
            .map(|e| (e.identity.to_string(), e.address.to_string(), e.state))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "shop/cart-a".into(),
                    "10.0.0.1:8080".into(),
                    EndpointState::Ready
                ),
                (
                    "shop/cart-b".into(),
                    "10.0.0.2:8080".into(),
                    EndpointState::Draining
                ),
                (
                    "10.0.0.5:8080".into(),
                    "10.0.0.5:8080".into(),
                    EndpointState::Ready
                ),
            ]
        );
    }

    #[test]
    fn ports_resolve_per_slice_and_fqdn_slices_are_ignored() {
        let mk = |name: &str, port: i32, ty: &str| {
            slice(json!({
                "metadata": {"name": name},
                "addressType": ty,
                "ports": [{"name": "http", "port": port}],
                "endpoints": [{"addresses": [if ty == "IPv6" { "fd00::1" } else { "10.0.0.1" }]}]
            }))
        };
        let named = source(PortRef::Name("http".into()));
        assert_eq!(eps(&mk("a", 8080, "IPv4"), &named)[0].address.port(), 8080);
        assert_eq!(eps(&mk("b", 9000, "IPv4"), &named)[0].address.port(), 9000);
        assert_eq!(
            eps(&mk("c", 8080, "IPv6"), &named)[0].address.to_string(),
            "[fd00::1]:8080"
        );
        assert!(eps(&mk("d", 8080, "FQDN"), &named).is_empty());
        assert!(eps(
            &mk("e", 8080, "IPv4"),
            &source(PortRef::Name("grpc".into()))
        )
        .is_empty());
        assert_eq!(
            eps(&mk("f", 8080, "IPv4"), &source(PortRef::Only))[0]
                .address
                .port(),
            8080
        );
        assert_eq!(
            eps(&mk("g", 8080, "IPv4"), &source(PortRef::Number(7000)))[0]
                .address
                .port(),
            7000
        );
        // endpoints: null is legal.
        let empty =
            slice(json!({"metadata": {"name": "h"}, "addressType": "IPv4", "endpoints": null}));
        assert!(eps(&empty, &named).is_empty());
    }
}
