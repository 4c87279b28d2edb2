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
use crate::config::{KubernetesSettings, KubernetesSource, PortRef};

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
