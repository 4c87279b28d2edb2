//! Configuration: the TOML file format, its defaults, and validation.
//!
//! Parsing happens in two steps. serde reads the file into `Raw*` structs that mirror the
//! TOML exactly (unknown fields are rejected), then [`Config::validate`] turns them into
//! typed settings and names the offending field on the first problem it finds, so a bad
//! config fails at start with "file: field: reason" rather than somewhere at runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::election::LeaseSettings;

/// A config problem, located by file and field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct ConfigError {
    /// The file the problem is in (or `<inline>` for configs built in memory).
    pub file: String,
    /// The field, as a TOML path such as `backend[0].endpoints[1].address`.
    pub field: String,
    /// Why the value is not acceptable.
    pub reason: String,
}

/// Shorthand for results of this module.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Minimum length of a signing secret: HMAC-SHA256 keys shorter than the hash output
/// weaken the MAC, and 32 bytes is what `tether keygen` produces.
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest duration any setting accepts. Durations are added to clock readings and
/// multiplied (an outlier's ejection grows to 10× `outlier_base`), and `Instant +
/// Duration` panics on overflow: bounding every duration here means no accepted value
/// can make that arithmetic fail later, on the request path.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default `request_buffer` and `response_buffer`: a form post, a JSON call, a page.
pub const DEFAULT_BUFFER: usize = 64 * 1024;

/// Largest `request_buffer` and `response_buffer`: what one request may make tether
/// hold in memory on its behalf.
pub const MAX_BUFFER: usize = 16 * 1024 * 1024;

/// Longest key id; the id travels in every cookie, so it must stay short.
pub const MAX_KEY_ID_BYTES: usize = 16;

// === validated settings ===

/// A validated configuration: everything the proxy needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and process settings.
    pub server: ServerSettings,
    /// Cookie signing keys; the first signs, every one verifies. Empty means "generate an
    /// ephemeral key at start".
    pub keys: Vec<KeyMaterial>,
    /// Backends in file order.
    pub backends: Vec<BackendSettings>,
    /// Routes in file order (an implicit catch-all route when the file has none).
    pub routes: Vec<RouteSettings>,
    /// How to reach the Kubernetes API, for backends discovered from EndpointSlices.
    pub kubernetes: KubernetesSettings,
    /// What the file says that is accepted but likely not meant (`file: field: reason`):
    /// printed by `tether check` and logged at start and reload.
    pub warnings: Vec<String>,
}

/// `[kubernetes]`: the API client for EndpointSlice discovery.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// A kubeconfig file to use instead of the standard inference (in-cluster service
    /// account, else `$KUBECONFIG`, else `~/.kube/config`). Relative to the config file.
    pub kubeconfig: Option<PathBuf>,
    /// First retry delay after an API error.
    pub backoff_min: Duration,
    /// Longest retry delay after repeated API errors.
    pub backoff_max: Duration,
    /// `[kubernetes.ingress]`: Ingress mode, when set.
    pub ingress: Option<IngressSettings>,
    /// `[kubernetes.gateway]`: Gateway API mode, when set.
    pub gateway: Option<GatewaySettings>,
}

/// The GatewayClass `controllerName` tether answers for when none is configured.
pub const DEFAULT_GATEWAY_CONTROLLER: &str = "tether.io/gateway-controller";

/// `[kubernetes.gateway]`: route the HTTPRoutes attached to Gateways of tether's
/// GatewayClasses (see the README, "Gateway API").
///
/// Their backends and routes are added to the file's own the way Ingress mode's are:
/// backend names are `httproute:namespace:route:service:port`, and where a file route and an
/// HTTPRoute have the same host and path prefix, the file's wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// The GatewayClass `spec.controllerName` value that selects tether.
    pub controller_name: String,
    /// How long a burst of Gateway API changes is collected before one reload applies it.
    pub debounce: Duration,
    /// The address written to a Gateway's `status.addresses` (an IP or a hostname) by
    /// the replica holding the Lease; `None` writes no addresses.
    pub address: Option<String>,
    /// The Lease whose holder writes GatewayClass, Gateway and HTTPRoute status.
    pub lease: crate::election::LeaseSettings,
}

/// The Lease tether elects its Gateway API status writer with when none is configured.
pub const DEFAULT_GATEWAY_LEASE_NAME: &str = "tether-gateway";

/// The controller name tether answers for when none is configured.
pub const DEFAULT_INGRESS_CONTROLLER: &str = "tether.io/ingress-controller";

/// `[kubernetes.ingress]`: route the Ingresses of tether's IngressClasses.
///
/// Their backends and routes are added to the file's own (see the README, "Ingress
/// mode"): backend names are `namespace.ingress.service.port`, and where a file route
/// and an Ingress route have the same host and path prefix, the file's wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// The IngressClass `spec.controller` value that selects tether.
    pub controller: String,
    /// The address written to `status.loadBalancer.ingress` (an IP or a hostname) by
    /// the replica holding the Lease; `None` leaves status alone.
    pub address: Option<String>,
    /// How long a burst of Ingress changes is collected before one reload applies it.
    pub debounce: Duration,
    /// The `coordination.k8s.io` Lease whose holder writes Ingress status and Events.
    pub lease_name: String,
    /// The Lease's namespace; `None`: the client's (the pod's own in a cluster).
    pub lease_namespace: Option<String>,
    /// How long the Lease holds after its last renewal (whole seconds); the holder
    /// renews a third of it before it runs out, and another replica takes over after it.
    pub lease_duration: Duration,
}

/// The Lease name tether elects its status writer with when none is configured.
pub const DEFAULT_LEASE_NAME: &str = "tether-ingress";

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address of the proxy listener.
    pub listen: SocketAddr,
    /// Address of the admin listener (health, readiness, later metrics and debug).
    pub admin: SocketAddr,
    /// Tokio worker threads; `None` means one per CPU.
    pub workers: Option<usize>,
    /// How long in-flight requests may run after SIGTERM before the process exits anyway.
    pub shutdown_grace: Duration,
    /// How long the listeners keep accepting after SIGTERM (readiness is already 503),
    /// so Kubernetes can take the pod out of its Service first.
    pub shutdown_delay: Duration,
    /// Slowloris guard: a client must finish its request head within this time.
    pub header_timeout: Duration,
    /// Largest request head accepted; larger heads get 431.
    pub max_header_bytes: usize,
    /// Concurrent client connections; `None` = unlimited.
    pub max_connections: Option<usize>,
    /// Largest request body accepted (413 beyond); `None` = unlimited.
    pub max_body_bytes: Option<u64>,
    /// TLS termination on the proxy listener; `None` = cleartext.
    pub tls: Option<TlsSettings>,
    /// Fraction of requests written to the access log (0 = off, 1 = every request).
    pub access_log_sample: f64,
    /// Log lines as JSON objects instead of text.
    pub log_json: bool,
    /// A request body of known length up to this many bytes is read whole before an
    /// upstream is chosen, so a slow uploader never holds a pod's connection.
    pub request_buffer: usize,
    /// A response body of known length up to this many bytes is read whole and its
    /// upstream connection returned to the pool before the client is written to, so a
    /// slow reader never holds a pod's connection (from an h2c pod, an idempotent
    /// request's, so a pod dying mid-answer is retried elsewhere).
    pub response_buffer: usize,
    /// A client that takes no bytes for this long while tether is writing to it is cut
    /// off (a stalled reader).
    pub send_timeout: Duration,
}

/// `[server.tls]`.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain (relative to the config file).
    pub cert_file: PathBuf,
    /// PEM private key (relative to the config file).
    pub key_file: PathBuf,
}

/// One `[[keys]]` entry with its secret decoded.
#[derive(Clone)]
pub struct KeyMaterial {
    /// Key id written into each cookie so verification can pick the right key.
    pub id: String,
    /// The raw secret bytes (at least [`MIN_SECRET_BYTES`]).
    pub secret: Vec<u8>,
    /// The file the secret came from (`secret_file`), watched for changes.
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs, even at debug level.
        f.debug_struct("KeyMaterial")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One `[[backend]]`.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Name routes refer to; also a label in logs and headers.
    pub name: String,
    /// Where the endpoints come from.
    pub source: Source,
    /// Cookie and stickiness settings.
    pub affinity: AffinitySettings,
    /// Upper bound on establishing a TCP connection to an endpoint; past it the attempt
    /// counts as a connect failure and the next endpoint is tried.
    pub connect_timeout: Duration,
    /// Upper bound on waiting for the response head once the request was sent (504).
    pub response_timeout: Duration,
    /// How long an endpoint that refused a connection is skipped (passive health).
    pub down_cooloff: Duration,
    /// Idle keep-alive connections kept per endpoint (per worker thread with `workers`
    /// > 1, so a thread reuses only connections whose task runs on its own runtime).
    pub max_idle_per_endpoint: usize,
    /// How to speak to the endpoints: HTTP/1.1, or h2c (HTTP/2 by prior knowledge).
    pub h2c: bool,
    /// Which upstream answers make an idempotent request worth one retry on the next
    /// endpoint (connect failures and resets always are).
    pub retry_on: RetryOn,
    /// Retries may add at most this fraction of extra requests (the retry budget).
    pub retry_budget: f64,
    /// Consecutive failed exchanges (5xx, resets) that eject an endpoint.
    pub outlier_failures: u64,
    /// First ejection time; each repeat ejection lasts one more multiple (up to 10×).
    pub outlier_base: Duration,
}

/// `retry_on`: upstream statuses that are retried (idempotent requests only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Retry on 502 Bad Gateway.
    pub bad_gateway: bool,
    /// Retry on 503 Service Unavailable.
    pub unavailable: bool,
}

/// Where a backend's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Listed in the config file.
    Static(Vec<StaticEndpoint>),
    /// The EndpointSlices of a Kubernetes Service.
    Kubernetes(KubernetesSource),
    /// The EndpointSlices of several Services, new sessions split by weight
    /// (`kubernetes = [{ namespace, service, port, weight }, ...]`, or an HTTPRoute rule
    /// with several `backendRefs`). One backend, so one cookie and one session table:
    /// a weight change moves no session, since the cookie names the pod.
    Weighted(Vec<WeightedService>),
}

/// One Service of a [`Source::Weighted`] backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedService {
    /// Which Service and port.
    pub source: KubernetesSource,
    /// Its share of new sessions against the other Services' (Gateway API's
    /// `backendRef.weight`). 0: no new sessions; its pods keep the sessions they have.
    pub weight: u32,
}

/// The largest Service weight (Gateway API's bound on `backendRef.weight`).
pub const MAX_SERVICE_WEIGHT: u32 = 1_000_000;

/// `kubernetes = { namespace, service, port }` on a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSource {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name (EndpointSlices are selected by `kubernetes.io/service-name`).
    pub service: String,
    /// Which port of the endpoints to use.
    pub port: PortRef,
}

/// A port of a Service's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A Service port name; resolved per slice, since one name can map to different
    /// numbers in different slices.
    Name(String),
    /// A port number on the endpoints (the target port), used as is.
    Number(u16),
    /// Not configured: the slice's only port (slices with several are skipped).
    Only,
}

/// A static endpoint from the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEndpoint {
    /// Optional stable name; used as the endpoint identity when present.
    pub name: Option<String>,
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative share of new sessions.
    pub weight: u32,
}

/// `[backend.affinity]`.
#[derive(Debug, Clone)]
pub struct AffinitySettings {
    /// How the affinity cookie looks to browsers.
    pub cookie: CookieSettings,
    /// Place new sessions on the pod this tether runs in (sidecar mode, `POD_NAME` from
    /// the downward API) while that pod is within the load bound.
    pub prefer_local: bool,
    /// ε of the load bound: an endpoint is "within the bound" while its load is at most
    /// (1 + ε) × the mean.
    pub load_factor: f64,
    /// How long a session counts as live (towards its endpoint's load) after its last
    /// request.
    pub session_idle: Duration,
    /// What happens to live sessions when endpoints are added.
    pub rebalance: Rebalance,
    /// `gradual`: a session moves only after being idle this long.
    pub rebalance_idle: Duration,
    /// `gradual`: at most this many sessions per second move to one endpoint.
    pub rebalance_rate: f64,
    /// A session idle longer than this is over: its next request starts a new one.
    pub idle_timeout: Option<Duration>,
    /// A session older than this is over, however active.
    pub absolute_timeout: Option<Duration>,
    /// How long a draining endpoint keeps its sessions before they fail over.
    pub drain_timeout: Duration,
    /// What places a session: the cookie, a request header, or the client address.
    pub key: AffinityKey,
    /// Peers whose `X-Forwarded-For` / `Forwarded` are believed (`key = "client-ip"`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `[backend.affinity] key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinityKey {
    /// The signed affinity cookie (default).
    Cookie,
    /// Consistent hashing on this header's value; the cookie when it is absent.
    Header(http::HeaderName),
    /// Consistent hashing on the client address (from trusted proxies' headers).
    ClientIp,
}

impl AffinitySettings {
    /// How often an active session's cookie is refreshed with a new `seen` time: often
    /// enough to know idleness within a quarter of `rebalance_idle`, at most once a minute.
    pub fn refresh_interval(&self) -> Duration {
        (self.rebalance_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// `[backend.affinity] rebalance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebalance {
    /// A live session never moves while its endpoint is eligible; the load bound fills
    /// new endpoints with new sessions.
    Persistent,
    /// Sessions whose ring owner is a newly added endpoint move there at their next request.
    Balanced,
    /// Like balanced, but only sessions idle for `rebalance_idle`, at `rebalance_rate`.
    Gradual,
}

/// The attributes of the affinity cookie.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    /// Cookie name.
    pub name: String,
    /// `Path` attribute.
    pub path: String,
    /// `Domain` attribute, if any.
    pub domain: Option<String>,
    /// `Secure` attribute.
    pub secure: bool,
    /// `HttpOnly` attribute: scripts have no business reading the affinity token.
    pub http_only: bool,
    /// `SameSite` attribute.
    pub same_site: SameSite,
    /// `Max-Age`; `None` makes a session cookie (no Expires/Max-Age), as GEP-1619 expects.
    pub max_age: Option<Duration>,
}

impl CookieSettings {
    /// Renders the cookie attributes once per backend: everything after `name=value`.
    pub fn attributes(&self) -> Box<str> {
        let s = self;
        let mut c = ::cookie::Cookie::build((s.name.clone(), "v"))
            .path(s.path.clone())
            .secure(s.secure)
            .http_only(s.http_only)
            .same_site(match s.same_site {
                SameSite::Lax => ::cookie::SameSite::Lax,
                SameSite::Strict => ::cookie::SameSite::Strict,
                SameSite::None => ::cookie::SameSite::None,
            });
        if let Some(d) = &s.domain {
            c = c.domain(d.clone());
        }
        if let Some(age) = s.max_age {
            c = c.max_age(::cookie::time::Duration::seconds(
                i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
            ));
        }
        let rendered = c.build().to_string();
        let prefix_len = s.name.len() + 2; // "name=v"
        rendered[prefix_len..].into()
    }
}

/// The `SameSite` cookie attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Lax`, the browser default and ours.
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None`; browsers require `Secure` with it.
    None,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Exact host to match (lowercase, no port); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, matched segment-wise.
    pub path_prefix: String,
    /// Where its requests go: a backend (an index into [`Config::backends`]), or an
    /// answer the route gives itself.
    pub to: RouteTo,
    /// What else a request must have to take the route, and how its path compares
    /// (Gateway API's HTTPRouteMatch); none by default.
    pub matches: RouteMatches,
    /// What is changed on the requests it routes and their answers (Gateway API's
    /// HTTPRoute filters); nothing by default.
    pub filters: RouteFilters,
}

impl RouteSettings {
    /// The index of its backend, unless the route answers itself.
    pub fn backend(&self) -> Option<usize> {
        match self.to {
            RouteTo::Backend(i) => Some(i),
            RouteTo::Answer(_) => None,
        }
    }
}

/// What a route does with the requests it takes: `B` names the backend (an index into
/// [`Config::backends`], or a backend's name in the fragments the Kubernetes
/// controllers build before they are merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTo<B = usize> {
    /// Proxies them to this backend (`backend`).
    Backend(B),
    /// Answers them itself, no backend involved (`redirect`, `answer`).
    Answer(Answer),
}

/// An answer a route gives itself, decided by the route alone: the proxy writes it the
/// way it writes its own statuses, whichever codec the request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A redirect (`redirect`, Gateway API's `RequestRedirect` filter).
    Redirect(Redirect),
    /// This status (4xx or 5xx) with a short text (`answer`): 500 for an HTTPRoute rule
    /// whose backendRefs are all invalid, as Gateway API requires.
    Status(u16),
}

/// A redirect's `Location` (Gateway API's `HTTPRequestRedirectFilter`): each part the
/// request's own unless set here; the query is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`; `None`: the scheme the request came with.
    pub scheme: Option<String>,
    /// The host; `None`: the request's (without its port).
    pub hostname: Option<String>,
    /// The port; `None`: the scheme's well-known one when `scheme` is set, else the
    /// request's. A scheme's well-known port is never written.
    pub port: Option<u16>,
    /// How the path changes; `None`: the request's path.
    pub path: Option<PathRewrite>,
    /// 301, 302 (the default), 303, 307 or 308.
    pub status: u16,
}

/// As `tether check` shows it: `redirect 301 (scheme https, prefix /new)`, `answer 500`.
impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = match self {
            Answer::Status(s) => return write!(f, "answer {s}"),
            Answer::Redirect(r) => r,
        };
        let mut parts = Vec::new();
        if let Some(s) = &r.scheme {
            parts.push(format!("scheme {s}"));
        }
        if let Some(h) = &r.hostname {
            parts.push(format!("hostname {h}"));
        }
        if let Some(p) = r.port {
            parts.push(format!("port {p}"));
        }
        match &r.path {
            Some(PathRewrite::Full(p)) => parts.push(format!("path {p}")),
            Some(PathRewrite::Prefix { to, .. }) => parts.push(format!("prefix {to:?}")),
            None => {}
        }
        write!(f, "redirect {}", r.status)?;
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// The statuses a redirect may answer with (the Gateway API CRD's enum).
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// What a route changes on the way through: `request_headers` and `response_headers`
/// in a `[[route]]`, an HTTPRoute rule's `RequestHeaderModifier` and
/// `ResponseHeaderModifier` filters. Applied by the exchange, the same for every codec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFilters {
    /// Applied to the request before tether adds its own fields, so it can neither
    /// replace nor remove them (nor name them: see [`HeaderEdit`]).
    pub request_headers: HeaderEdit,
    /// Applied to the pod's response head before tether adds its own fields.
    pub response_headers: HeaderEdit,
    /// The host and path the pod is asked for instead (`rewrite`, Gateway API's
    /// `URLRewrite`).
    pub rewrite: Option<Rewrite>,
}

impl RouteFilters {
    /// Whether the route changes nothing.
    pub fn is_empty(&self) -> bool {
        self.request_headers.is_empty()
            && self.response_headers.is_empty()
            && self.rewrite.is_none()
    }
}

/// A request's host and path as sent to the pod. `X-Forwarded-Host` keeps the host the
/// client asked for; the query is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// The `Host` the pod gets.
    pub hostname: Option<String>,
    /// How the path changes.
    pub path: Option<PathRewrite>,
}

/// A path rewrite (Gateway API's `HTTPPathModifier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// The whole path becomes this.
    Full(String),
    /// The route's path prefix (`from`) is replaced by `to`, by whole segments.
    Prefix {
        /// The route's `path_prefix`.
        from: String,
        /// What replaces it.
        to: String,
    },
}

impl PathRewrite {
    /// The path `path` (which the route matched) becomes. A trailing `/` of either
    /// prefix is ignored, as Gateway API's table for `ReplacePrefixMatch` says:
    /// `/foo/bar` with prefix `/foo` and replacement `/xyz` or `/xyz/` is `/xyz/bar`,
    /// `/foo/` with replacement `` is `/`.
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathRewrite::Full(p) => p.clone(),
            PathRewrite::Prefix { from, to } => {
                let from = from.trim_end_matches('/');
                let rest = path.get(from.len()..).unwrap_or("");
                let out = format!("{}{rest}", to.trim_end_matches('/'));
                if out.is_empty() {
                    "/".into()
                } else {
                    out
                }
            }
        }
    }
}

/// Header fields to set (replacing every field of the name), add (another field line,
/// RFC 9110 §5.3) and remove, in that order: remove, set, add. Names never include what
/// tether owns (`x-tether-*`, `x-forwarded-*`, hop-by-hop and framing fields, `Host`;
/// `Set-Cookie` on responses): validation refuses them, so an edit cannot spoof what
/// tether tells the app nor put back what it removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdit {
    /// Fields whose value becomes this one.
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Fields added next to any the message has.
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Fields removed.
    pub remove: Vec<http::HeaderName>,
}

impl HeaderEdit {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Whether a field named `name` (any case) is replaced or removed, so the message's
    /// own lines of it are not relayed.
    ///
    /// `_` in `name` is read as `-`: CGI, WSGI, PHP and Rack servers hand `X_Auth_User`
    /// and `X-Auth-User` to the app as one variable, so a client's underscore spelling
    /// of a field the route removes or replaces must not reach the pod either.
    pub fn drops(&self, name: &str) -> bool {
        let same = |n: &http::HeaderName| {
            let (n, name) = (n.as_str().as_bytes(), name.as_bytes());
            n.len() == name.len()
                && n.iter().zip(name).all(|(&w, &c)| {
                    let c = c.to_ascii_lowercase();
                    c == w || (c == b'_' && w == b'-')
                })
        };
        self.remove.iter().any(same) || self.set.iter().any(|(n, _)| same(n))
    }

    /// Its own fields, set then added, as `(name, value)`.
    pub fn fields(&self) -> impl Iterator<Item = (&http::HeaderName, &http::HeaderValue)> {
        self.set.iter().chain(&self.add).map(|(n, v)| (n, v))
    }

    /// Applies the edit to a header map.
    pub fn apply(&self, h: &mut http::HeaderMap) {
        // Underscore spellings of the names it removes or replaces go too ([`Self::drops`]).
        let lookalikes: Vec<http::HeaderName> = h
            .keys()
            .filter(|k| k.as_str().contains('_') && self.drops(k.as_str()))
            .cloned()
            .collect();
        for n in lookalikes.iter().chain(&self.remove) {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n, v.clone());
        }
        for (n, v) in &self.add {
            h.append(n, v.clone());
        }
    }
}

/// Whether a header edit may name `name` (lowercase): not a field tether owns on the
/// way upstream or back, one it strips (hop-by-hop, RFC 9110 §7.6.1), nor one that
/// frames or routes the message (RFC 9112 §6, §3.2); on a response, not `Set-Cookie`
/// (the session cookie is tether's).
pub fn editable_header(name: &str, response: bool) -> bool {
    const OWNED: [&str; 13] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "expect",
        "x-forwarded-port",
    ];
    // Every name `http::headers::speaks_for_tether` takes, read with `_` as `-` as CGI
    // servers do, and more (that module sits above this one, so not called).
    let dashed = name.replace('_', "-");
    !(dashed.starts_with("x-tether-")
        || dashed.starts_with("x-forwarded-")
        || OWNED.contains(&name)
        || (response && name == "set-cookie"))
}

/// The conditions of a route beyond its host and path prefix: `path` (exact),
/// `method`, `headers` and `query` in a `[[route]]`, an HTTPRoute match's `Exact` path,
/// `method`, `headers` and `queryParams`, an Ingress `Exact` path. All must hold.
/// Which of several matching routes wins is the proxy's route table's decision
/// (Gateway API precedence).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatches {
    /// The route's path is the whole path, not a prefix of it.
    pub exact: bool,
    /// The request method, when the route names one.
    pub method: Option<http::Method>,
    /// Header fields whose value must equal these (names are case-insensitive, values
    /// exact; with a repeated field, the first line counts, as Gateway API says).
    pub headers: Vec<(http::HeaderName, String)>,
    /// Query parameters whose value must equal these (names and values exact, as
    /// written; the first occurrence counts).
    pub query: Vec<(String, String)>,
}

impl RouteMatches {
    /// Whether only the host and the path decide (the common case, kept cheap).
    pub fn is_path_only(&self) -> bool {
        self.method.is_none() && self.headers.is_empty() && self.query.is_empty()
    }
}

/// Whether `h` is a host name a `rewrite` or `redirect` may name: letters, digits, `-`
/// and `.`, at most 253 bytes.
fn host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
}

/// One `[[route]]` table as tether.toml text, for the code that writes configs
/// (`tether migrate`, the Ingress and Gateway API controllers), so a route is spelled
/// and quoted one way whoever writes it.
pub fn route_toml(host: Option<&str>, path_prefix: &str, backend: &str) -> String {
    let q = |s: &str| toml::Value::String(s.into()).to_string();
    let mut out = String::from("[[route]]\n");
    if let Some(h) = host {
        out.push_str(&format!("host = {}\n", q(h)));
    }
    out.push_str(&format!(
        "path_prefix = {}\nbackend = {}\n",
        q(path_prefix),
        q(backend)
    ));
    out
}

/// One `[[route]]` table as tether.toml text with its matches (see [`route_toml`]):
/// an exact path is written as `path`, the other conditions as inline tables.
/// A route that answers itself is written with its `redirect` or `answer` instead of a
/// `backend`.
pub fn route_toml_matching(
    host: Option<&str>,
    path: &str,
    to: RouteTo<&str>,
    matches: &RouteMatches,
) -> String {
    let q = |s: &str| toml::Value::String(s.into()).to_string();
    let mut out = String::from("[[route]]\n");
    if let Some(h) = host {
        out.push_str(&format!("host = {}\n", q(h)));
    }
    let key = if matches.exact { "path" } else { "path_prefix" };
    out.push_str(&format!("{key} = {}\n", q(path)));
    match to {
        RouteTo::Backend(b) => out.push_str(&format!("backend = {}\n", q(b))),
        RouteTo::Answer(Answer::Status(s)) => out.push_str(&format!("answer = {s}\n")),
        RouteTo::Answer(Answer::Redirect(r)) => {
            let mut parts = Vec::new();
            if let Some(s) = &r.scheme {
                parts.push(format!("scheme = {}", q(s)));
            }
            if let Some(h) = &r.hostname {
                parts.push(format!("hostname = {}", q(h)));
            }
            if let Some(p) = r.port {
                parts.push(format!("port = {p}"));
            }
            match &r.path {
                Some(PathRewrite::Full(p)) => parts.push(format!("path = {}", q(p))),
                Some(PathRewrite::Prefix { to, .. }) => parts.push(format!("prefix = {}", q(to))),
                None => {}
            }
            parts.push(format!("status = {}", r.status));
            out.push_str(&format!("redirect = {{ {} }}\n", parts.join(", ")));
        }
    }
    if let Some(m) = &matches.method {
        out.push_str(&format!("method = {}\n", q(m.as_str())));
    }
    let table = |pairs: &mut dyn Iterator<Item = (&str, &str)>| {
        let items: Vec<String> = pairs.map(|(k, v)| format!("{} = {}", q(k), q(v))).collect();
        format!("{{ {} }}", items.join(", "))
    };
    if !matches.headers.is_empty() {
        let mut pairs = matches
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        out.push_str(&format!("headers = {}\n", table(&mut pairs)));
    }
    if !matches.query.is_empty() {
        let mut pairs = matches.query.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        out.push_str(&format!("query = {}\n", table(&mut pairs)));
    }
    out
}

/// The lines a `[[route]]` table written by [`route_toml_matching`] needs for these
/// filters (empty when there are none); append them to it.
pub fn route_filters_toml(filters: &RouteFilters) -> String {
    let q = |s: &str| toml::Value::String(s.into()).to_string();
    let edit = |e: &HeaderEdit| {
        let pairs = |p: &[(http::HeaderName, http::HeaderValue)]| {
            p.iter()
                .map(|(k, v)| format!("{} = {}", q(k.as_str()), q(v.to_str().unwrap_or(""))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let remove: Vec<String> = e.remove.iter().map(|n| q(n.as_str())).collect();
        format!(
            "{{ set = {{ {} }}, add = {{ {} }}, remove = [{}] }}",
            pairs(&e.set),
            pairs(&e.add),
            remove.join(", ")
        )
    };
    let mut out = String::new();
    if !filters.request_headers.is_empty() {
        out.push_str(&format!(
            "request_headers = {}\n",
            edit(&filters.request_headers)
        ));
    }
    if !filters.response_headers.is_empty() {
        out.push_str(&format!(
            "response_headers = {}\n",
            edit(&filters.response_headers)
        ));
    }
    if let Some(r) = &filters.rewrite {
        let mut parts = Vec::new();
        if let Some(h) = &r.hostname {
            parts.push(format!("hostname = {}", q(h)));
        }
        match &r.path {
            Some(PathRewrite::Full(p)) => parts.push(format!("path = {}", q(p))),
            Some(PathRewrite::Prefix { to, .. }) => parts.push(format!("prefix = {}", q(to))),
            None => {}
        }
        out.push_str(&format!("rewrite = {{ {} }}\n", parts.join(", ")));
    }
    out
}

// === raw TOML shapes ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default, rename = "backend")]
    backends: Vec<RawBackend>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
    #[serde(default)]
    kubernetes: RawKubernetes,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    kubeconfig: Option<PathBuf>,
    backoff_min: Option<String>,
    backoff_max: Option<String>,
    ingress: Option<RawIngress>,
    gateway: Option<RawGateway>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    controller_name: Option<String>,
    debounce: Option<String>,
    address: Option<String>,
    lease: Option<String>,
    lease_namespace: Option<String>,
    lease_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    controller: Option<String>,
    address: Option<String>,
    debounce: Option<String>,
    lease: Option<String>,
    lease_namespace: Option<String>,
    lease_duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubeSource {
    namespace: Option<String>,
    service: String,
    port: Option<RawPort>,
    /// Only in the list form (`kubernetes = [{ ..., weight }, ...]`).
    weight: Option<i64>,
}

/// `kubernetes = { .. }` (one Service) or `kubernetes = [{ .. }, ..]` (weighted
/// Services). Not `#[serde(untagged)]`: that would replace a table's own error (the
/// unknown or mistyped field) with "did not match any variant".
#[derive(Debug)]
enum RawKube {
    One(RawKubeSource),
    Many(Vec<RawKubeSource>),
}

impl<'de> Deserialize<'de> for RawKube {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawKube;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table { namespace, service, port } or an array of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<RawKube, A::Error> {
                RawKubeSource::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawKube::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> std::result::Result<RawKube, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawKube::Many)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Name(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin: Option<String>,
    workers: Option<i64>,
    shutdown_grace: Option<String>,
    shutdown_delay: Option<String>,
    header_timeout: Option<String>,
    max_header_bytes: Option<i64>,
    max_connections: Option<i64>,
    max_body_bytes: Option<i64>,
    tls: Option<RawTls>,
    access_log_sample: Option<f64>,
    log_format: Option<String>,
    /// Obsolete (there is one HTTP/1 codec): accepted and ignored with a warning.
    http1_fast_path: Option<bool>,
    request_buffer: Option<i64>,
    response_buffer: Option<i64>,
    send_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: String,
    endpoints: Option<Vec<RawEndpoint>>,
    kubernetes: Option<RawKube>,
    #[serde(default)]
    affinity: RawAffinity,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    down_cooloff: Option<String>,
    max_idle_per_endpoint: Option<i64>,
    protocol: Option<String>,
    retry_on: Option<Vec<String>>,
    retry_budget: Option<f64>,
    outlier_failures: Option<i64>,
    outlier_base: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawEndpoint {
    Address(String),
    Full(RawEndpointTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpointTable {
    name: Option<String>,
    address: String,
    weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAffinity {
    cookie: Option<String>,
    path: Option<String>,
    domain: Option<String>,
    secure: Option<bool>,
    http_only: Option<bool>,
    same_site: Option<String>,
    max_age: Option<String>,
    prefer_local: Option<bool>,
    load_factor: Option<f64>,
    session_idle: Option<String>,
    rebalance: Option<String>,
    rebalance_idle: Option<String>,
    rebalance_rate: Option<f64>,
    idle_timeout: Option<String>,
    absolute_timeout: Option<String>,
    drain_timeout: Option<String>,
    key: Option<String>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path_prefix: Option<String>,
    /// An exact path, instead of `path_prefix`.
    path: Option<String>,
    method: Option<String>,
    headers: Option<std::collections::BTreeMap<String, String>>,
    query: Option<std::collections::BTreeMap<String, String>>,
    request_headers: Option<RawHeaderEdit>,
    response_headers: Option<RawHeaderEdit>,
    rewrite: Option<RawRewrite>,
    redirect: Option<RawRedirect>,
    /// A status the route answers itself with, instead of a backend.
    answer: Option<u16>,
    backend: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    scheme: Option<String>,
    hostname: Option<String>,
    port: Option<i64>,
    path: Option<String>,
    prefix: Option<String>,
    status: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    hostname: Option<String>,
    path: Option<String>,
    prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderEdit {
    #[serde(default)]
    set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    add: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

// === impl Config ===

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &file, base)
    }

    /// Parses and validates config text. `file` names it in errors; relative
    /// `secret_file` paths are resolved against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            ConfigError {
                file: file.to_string(),
                field: match line {
                    Some(l) => format!("line {l}"),
                    None => "(syntax)".into(),
                },
                // toml leaves the message empty for some lexical errors (e.g. a
                // control character in a comment): never answer with nothing.
                reason: match e.message().trim() {
                    "" => "invalid TOML syntax (a control character or stray byte?)".to_string(),
                    m => m.to_string(),
                },
            }
        })?;
        let v = Validator {
            file,
            base,
            tls: raw.server.tls.is_some(),
            warnings: Default::default(),
        };
        let mut config = v.config(raw)?;
        config.warnings = v.warnings.into_inner();
        Ok(config)
    }
}

struct Validator<'a> {
    file: &'a str,
    base: &'a Path,
    /// The listener terminates TLS (`[server.tls]`).
    tls: bool,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Validator<'_> {
    fn warn(&self, field: &str, reason: &str) {
        let w = format!("{}: {field}: {reason}", self.file);
        self.warnings.borrow_mut().push(w);
    }

    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config> {
        let server = self.server(raw.server)?;
        let keys = self.keys(raw.keys)?;
        let mut backends = Vec::with_capacity(raw.backends.len());
        for (i, b) in raw.backends.into_iter().enumerate() {
            let backend = self.backend(i, b)?;
            if backends
                .iter()
                .any(|o: &BackendSettings| o.name == backend.name)
            {
                return Err(self.err(
                    format!("backend[{i}].name"),
                    format!("duplicate backend name {:?}", backend.name),
                ));
            }
            backends.push(backend);
        }
        let ingress = match raw.kubernetes.ingress {
            Some(i) => Some(self.ingress(i)?),
            None => None,
        };
        let gateway = match raw.kubernetes.gateway {
            Some(g) => Some(self.gateway(g)?),
            None => None,
        };
        // Routes that answer themselves need no backend (an HTTPRoute of redirects
        // compiles to such a file).
        let answers_only = !raw.routes.is_empty() && raw.routes.iter().all(|r| r.backend.is_none());
        if backends.is_empty() && !answers_only && ingress.is_none() && gateway.is_none() {
            return Err(self.err(
                "backend",
                "at least one [[backend]] is required (or [kubernetes.ingress] or \
                 [kubernetes.gateway], whose resources bring their own, or only routes \
                 that answer themselves)",
            ));
        }
        let routes = self.routes(raw.routes, &backends)?;
        let kubernetes = KubernetesSettings {
            ingress,
            gateway,
            kubeconfig: raw.kubernetes.kubeconfig.map(|p| self.base.join(p)),
            backoff_min: self.duration(
                "kubernetes.backoff_min",
                raw.kubernetes.backoff_min.as_deref(),
                "800ms",
            )?,
            backoff_max: self.duration(
                "kubernetes.backoff_max",
                raw.kubernetes.backoff_max.as_deref(),
                "30s",
            )?,
        };
        if kubernetes.backoff_min.is_zero() || kubernetes.backoff_min > kubernetes.backoff_max {
            return Err(self.err(
                "kubernetes.backoff_min",
                "must be non-zero and at most kubernetes.backoff_max",
            ));
        }
        Ok(Config {
            server,
            keys,
            backends,
            routes,
            kubernetes,
            warnings: Vec::new(),
        })
    }

    fn server(&self, raw: RawServer) -> Result<ServerSettings> {
        let listen = self.socket_addr("server.listen", raw.listen.as_deref(), "0.0.0.0:8080")?;
        let admin = self.socket_addr("server.admin", raw.admin.as_deref(), "0.0.0.0:9901")?;
        let workers = match raw.workers {
            None => None,
            Some(n) if (1..=1024).contains(&n) => Some(n as usize),
            Some(n) => return Err(self.err("server.workers", format!("must be 1..=1024, got {n}"))),
        };
        let shutdown_grace = self.duration(
            "server.shutdown_grace",
            raw.shutdown_grace.as_deref(),
            "30s",
        )?;
        let shutdown_delay =
            self.duration("server.shutdown_delay", raw.shutdown_delay.as_deref(), "0s")?;
        let header_timeout = self.duration(
            "server.header_timeout",
            raw.header_timeout.as_deref(),
            "10s",
        )?;
        if header_timeout.is_zero() {
            return Err(self.err("server.header_timeout", "must be non-zero"));
        }
        let max_header_bytes = match raw.max_header_bytes {
            None => 64 * 1024,
            Some(n) if (8192..=16 * 1024 * 1024).contains(&n) => n as usize,
            Some(n) => {
                return Err(self.err(
                    "server.max_header_bytes",
                    format!("must be 8192..=16777216, got {n}"),
                ))
            }
        };
        let max_connections = match raw.max_connections {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => {
                return Err(self.err(
                    "server.max_connections",
                    format!("must be at least 1, got {n}"),
                ))
            }
        };
        let max_body_bytes = match raw.max_body_bytes {
            None => None,
            Some(n) if n >= 0 => Some(n as u64),
            Some(n) => {
                return Err(self.err(
                    "server.max_body_bytes",
                    format!("must not be negative, got {n}"),
                ))
            }
        };
        let access_log_sample = match raw.access_log_sample {
            None => 0.0,
            Some(f) if (0.0..=1.0).contains(&f) => f,
            Some(f) => {
                return Err(self.err(
                    "server.access_log_sample",
                    format!("must be 0..=1 (0 = off), got {f}"),
                ))
            }
        };
        let log_json = match raw.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(self.err(
                    "server.log_format",
                    format!("must be \"text\" or \"json\", got {other:?}"),
                ))
            }
        };
        let buffer = |field: &str, v: Option<i64>| match v {
            None => Ok(DEFAULT_BUFFER),
            Some(n) if (0..=MAX_BUFFER as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(self.err(field, format!("must be 0..={MAX_BUFFER} bytes, got {n}"))),
        };
        let request_buffer = buffer("server.request_buffer", raw.request_buffer)?;
        let response_buffer = buffer("server.response_buffer", raw.response_buffer)?;
        let send_timeout =
            self.duration("server.send_timeout", raw.send_timeout.as_deref(), "60s")?;
        if send_timeout.is_zero() {
            return Err(self.err("server.send_timeout", "must be non-zero"));
        }
        if raw.http1_fast_path.is_some() {
            // Configs written for earlier versions keep loading.
            self.warn(
                "server.http1_fast_path",
                "ignored: every HTTP/1 request is served by tether's one HTTP/1 codec",
            );
        }
        Ok(ServerSettings {
            access_log_sample,
            log_json,
            request_buffer,
            response_buffer,
            send_timeout,
            listen,
            admin,
            workers,
            shutdown_grace,
            shutdown_delay,
            header_timeout,
            max_header_bytes,
            max_connections,
            max_body_bytes,
            tls: match raw.tls {
                None => None,
                Some(t) => {
                    let tls = TlsSettings {
                        cert_file: self.base.join(t.cert_file),
                        key_file: self.base.join(t.key_file),
                    };
                    if let Err(e) = crate::tls::Tls::load(&tls.cert_file, &tls.key_file) {
                        return Err(self.err("server.tls", e.to_string()));
                    }
                    Some(tls)
                }
            },
        })
    }

    fn keys(&self, raw: Vec<RawKey>) -> Result<Vec<KeyMaterial>> {
        let mut keys: Vec<KeyMaterial> = Vec::with_capacity(raw.len());
        for (i, k) in raw.into_iter().enumerate() {
            let field = |f: &str| format!("keys[{i}].{f}");
            if k.id.is_empty()
                || k.id.len() > MAX_KEY_ID_BYTES
                || !k
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(self.err(
                    field("id"),
                    format!(
                        "must be 1..={MAX_KEY_ID_BYTES} characters of A-Z a-z 0-9 . _ -, got {:?}",
                        k.id
                    ),
                ));
            }
            if keys.iter().any(|o| o.id == k.id) {
                return Err(self.err(field("id"), format!("duplicate key id {:?}", k.id)));
            }
            let mut file = None;
            let (encoded, which) = match (k.secret, k.secret_file) {
                (Some(s), None) => (s, field("secret")),
                (None, Some(path)) => {
                    let path = self.base.join(path);
                    file = Some(path.clone());
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        self.err(
                            field("secret_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    (text, field("secret_file"))
                }
                (Some(_), Some(_)) => {
                    return Err(self.err(field("secret"), "set secret or secret_file, not both"))
                }
                (None, None) => {
                    return Err(
                        self.err(field("secret"), "one of secret or secret_file is required")
                    )
                }
            };
            let secret = decode_secret(encoded.trim()).ok_or_else(|| {
                self.err(which.clone(), "is not valid base64 (use `tether keygen`)")
            })?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(self.err(
                    which,
                    format!(
                        "decodes to {} bytes; at least {MIN_SECRET_BYTES} are required (use `tether keygen`)",
                        secret.len()
                    ),
                ));
            }
            keys.push(KeyMaterial {
                id: k.id,
                secret,
                file,
            });
        }
        Ok(keys)
    }

    fn backend(&self, i: usize, raw: RawBackend) -> Result<BackendSettings> {
        let f = |s: &str| format!("backend[{i}].{s}");
        if raw.name.is_empty() || raw.name.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(self.err(
                f("name"),
                format!(
                    "must be non-empty without spaces or '/', got {:?}",
                    raw.name
                ),
            ));
        }
        let source = match (raw.endpoints, raw.kubernetes) {
            (Some(_), Some(_)) => {
                return Err(self.err(f("kubernetes"), "set endpoints or kubernetes, not both"))
            }
            (None, None) => {
                return Err(self.err(
                    f("endpoints"),
                    "one of endpoints (a static list) or kubernetes (a Service) is required",
                ))
            }
            (None, Some(RawKube::One(k))) => {
                if k.weight.is_some() {
                    return Err(self.err(
                        f("kubernetes.weight"),
                        "weights split sessions between several Services: use the list form \
                         kubernetes = [{ service, port, weight }, ...]",
                    ));
                }
                Source::Kubernetes(self.kube_source(i, k)?)
            }
            (None, Some(RawKube::Many(list))) => Source::Weighted(self.weighted_services(i, list)?),
            (Some(list), None) => Source::Static(self.static_endpoints(i, list)?),
        };
        let affinity = self.affinity(i, raw.affinity)?;
        let max_idle = match raw.max_idle_per_endpoint {
            None => 256,
            Some(n) if (0..=100_000).contains(&n) => n as usize,
            Some(n) => {
                return Err(self.err(
                    f("max_idle_per_endpoint"),
                    format!("must be 0..=100000, got {n}"),
                ))
            }
        };
        Ok(BackendSettings {
            connect_timeout: self.duration(
                &f("connect_timeout"),
                raw.connect_timeout.as_deref(),
                "1s",
            )?,
            response_timeout: self.duration(
                &f("response_timeout"),
                raw.response_timeout.as_deref(),
                "60s",
            )?,
            down_cooloff: self.duration(&f("down_cooloff"), raw.down_cooloff.as_deref(), "10s")?,
            max_idle_per_endpoint: max_idle,
            h2c: match raw.protocol.as_deref() {
                None | Some("http1") => false,
                Some("h2c") => true,
                Some(other) => {
                    return Err(self.err(
                        f("protocol"),
                        format!("must be \"http1\" or \"h2c\", got {other:?}"),
                    ))
                }
            },
            retry_on: {
                let mut r = RetryOn::default();
                for (j, v) in raw.retry_on.unwrap_or_default().iter().enumerate() {
                    match v.as_str() {
                        "502" => r.bad_gateway = true,
                        "503" => r.unavailable = true,
                        "reset" | "connect-failure" => {}
                        other => {
                            return Err(self.err(
                                f(&format!("retry_on[{j}]")),
                                format!("must be \"502\", \"503\", \"reset\" or \"connect-failure\", got {other:?}"),
                            ))
                        }
                    }
                }
                r
            },
            retry_budget: match raw.retry_budget {
                None => 0.2,
                Some(b) if (0.0..=1.0).contains(&b) => b,
                Some(b) => {
                    return Err(self.err(f("retry_budget"), format!("must be 0..=1, got {b}")))
                }
            },
            outlier_failures: match raw.outlier_failures {
                None => 5,
                Some(n) if n >= 1 => n as u64,
                Some(n) => {
                    return Err(self.err(
                        f("outlier_failures"),
                        format!("must be at least 1, got {n}"),
                    ))
                }
            },
            outlier_base: self.duration(&f("outlier_base"), raw.outlier_base.as_deref(), "30s")?,
            name: raw.name,
            source,
            affinity,
        })
    }

    /// `kubernetes = [{ namespace, service, port, weight }, ...]`: each entry validated
    /// as the one-Service form, weights 0..=[`MAX_SERVICE_WEIGHT`] (default 1), at least
    /// one nonzero, no Service port listed twice.
    fn weighted_services(&self, i: usize, raw: Vec<RawKubeSource>) -> Result<Vec<WeightedService>> {
        let f = |s: &str| format!("backend[{i}].kubernetes{s}");
        if raw.is_empty() {
            return Err(self.err(f(""), "at least one Service is required"));
        }
        let mut out: Vec<WeightedService> = Vec::with_capacity(raw.len());
        for (j, k) in raw.into_iter().enumerate() {
            let weight = match k.weight {
                None => 1,
                Some(w) if (0..=i64::from(MAX_SERVICE_WEIGHT)).contains(&w) => w as u32,
                Some(w) => {
                    return Err(self.err(
                        f(&format!("[{j}].weight")),
                        format!("must be 0..={MAX_SERVICE_WEIGHT}, got {w}"),
                    ))
                }
            };
            let source = self.kube_source_at(&f(&format!("[{j}]")), k)?;
            if out.iter().any(|o| o.source == source) {
                return Err(self.err(
                    f(&format!("[{j}].service")),
                    format!(
                        "{}/{} is listed twice with the same port",
                        source.namespace, source.service
                    ),
                ));
            }
            out.push(WeightedService { source, weight });
        }
        if out.iter().all(|s| s.weight == 0) {
            return Err(self.err(
                f("[0].weight"),
                "at least one Service needs a nonzero weight, or no session has anywhere to go",
            ));
        }
        Ok(out)
    }

    fn kube_source(&self, i: usize, raw: RawKubeSource) -> Result<KubernetesSource> {
        self.kube_source_at(&format!("backend[{i}].kubernetes"), raw)
    }

    /// One Service and port, its fields named under `at` (`backend[0].kubernetes`).
    fn kube_source_at(&self, at: &str, raw: RawKubeSource) -> Result<KubernetesSource> {
        let f = |s: &str| format!("{at}.{s}");
        let dns_label = |v: &str| {
            !v.is_empty()
                && v.len() <= 253
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        let namespace = raw.namespace.unwrap_or_else(|| "default".into());
        if !dns_label(&namespace) {
            return Err(self.err(
                f("namespace"),
                format!("{namespace:?} is not a Kubernetes namespace name"),
            ));
        }
        if !dns_label(&raw.service) {
            return Err(self.err(
                f("service"),
                format!("{:?} is not a Kubernetes Service name", raw.service),
            ));
        }
        let port = match raw.port {
            None => PortRef::Only,
            Some(RawPort::Number(n)) => match u16::try_from(n) {
                Ok(p) if p > 0 => PortRef::Number(p),
                _ => return Err(self.err(f("port"), format!("must be 1..=65535, got {n}"))),
            },
            Some(RawPort::Name(n)) if n.parse::<u16>().is_ok() => {
                PortRef::Number(n.parse().unwrap_or_default())
            }
            Some(RawPort::Name(n)) if !n.is_empty() && n.len() <= 63 => PortRef::Name(n),
            Some(RawPort::Name(n)) => {
                return Err(self.err(f("port"), format!("{n:?} is not a port name or number")))
            }
        };
        Ok(KubernetesSource {
            namespace,
            service: raw.service,
            port,
        })
    }

    fn static_endpoints(&self, i: usize, raw: Vec<RawEndpoint>) -> Result<Vec<StaticEndpoint>> {
        let f = |s: &str| format!("backend[{i}].{s}");
        if raw.is_empty() {
            return Err(self.err(f("endpoints"), "at least one endpoint is required"));
        }
        let mut endpoints: Vec<StaticEndpoint> = Vec::with_capacity(raw.len());
        for (j, e) in raw.into_iter().enumerate() {
            let (name, address, weight, at) = match e {
                RawEndpoint::Address(a) => (None, a, None, f(&format!("endpoints[{j}]"))),
                RawEndpoint::Full(t) => (
                    t.name,
                    t.address,
                    t.weight,
                    f(&format!("endpoints[{j}].address")),
                ),
            };
            let address: SocketAddr = address.parse().map_err(|_| {
                self.err(
                    at.clone(),
                    format!("{address:?} is not an ip:port socket address"),
                )
            })?;
            let weight = match weight {
                None => 1,
                Some(w) if (1..=1000).contains(&w) => w as u32,
                Some(w) => {
                    return Err(self.err(
                        f(&format!("endpoints[{j}].weight")),
                        format!("must be 1..=1000, got {w}"),
                    ))
                }
            };
            if let Some(n) = &name {
                if n.is_empty() || n.len() > 253 || n.chars().any(|c| c.is_control() || c == ' ') {
                    return Err(self.err(
                        f(&format!("endpoints[{j}].name")),
                        format!("must be 1..=253 printable characters without spaces, got {n:?}"),
                    ));
                }
            }
            let identity =
                |e: &StaticEndpoint| e.name.clone().unwrap_or_else(|| e.address.to_string());
            let candidate = StaticEndpoint {
                name,
                address,
                weight,
            };
            if let Some(dup) = endpoints
                .iter()
                .find(|o| o.address == address || identity(o) == identity(&candidate))
            {
                return Err(self.err(at, format!("duplicates endpoint {:?}", identity(dup))));
            }
            endpoints.push(candidate);
        }
        Ok(endpoints)
    }

    fn affinity(&self, i: usize, raw: RawAffinity) -> Result<AffinitySettings> {
        let f = |s: &str| format!("backend[{i}].affinity.{s}");
        let name = raw.cookie.unwrap_or_else(|| "tether".into());
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(self.err(
                f("cookie"),
                format!("{name:?} is not a valid cookie name (RFC 6265 token)"),
            ));
        }
        let path = raw.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
            return Err(self.err(
                f("path"),
                format!("must start with '/' and contain no ';', got {path:?}"),
            ));
        }
        if let Some(d) = &raw.domain {
            if d.is_empty()
                || d.bytes()
                    .any(|b| b == b';' || b == b' ' || b.is_ascii_control())
            {
                return Err(self.err(f("domain"), format!("{d:?} is not a valid cookie domain")));
            }
        }
        let same_site = match raw
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("lax") => SameSite::Lax,
            Some("strict") => SameSite::Strict,
            Some("none") => SameSite::None,
            Some(other) => {
                return Err(self.err(
                    f("same_site"),
                    format!("must be \"lax\", \"strict\" or \"none\", got {other:?}"),
                ))
            }
        };
        // Sessions served over TLS get a cookie only TLS carries, unless told otherwise.
        let secure = raw.secure.unwrap_or(self.tls);
        if self.tls && raw.secure == Some(false) {
            self.warn(
                &f("secure"),
                "false on a TLS listener: the session cookie may also be sent in clear text",
            );
        }
        if same_site == SameSite::None && !secure {
            return Err(self.err(
                f("same_site"),
                "\"none\" requires secure = true (browsers drop SameSite=None cookies without Secure)",
            ));
        }
        let max_age = match raw.max_age.as_deref() {
            None => None,
            Some(s) => {
                let d = self.duration(&f("max_age"), Some(s), "0s")?;
                if d.as_secs() == 0 {
                    return Err(self.err(
                        f("max_age"),
                        "must be at least 1s; omit it for a session cookie",
                    ));
                }
                Some(d)
            }
        };
        let load_factor = raw.load_factor.unwrap_or(0.25);
        if !(0.0..=100.0).contains(&load_factor) || load_factor.is_nan() {
            return Err(self.err(
                f("load_factor"),
                format!("must be 0..=100, got {load_factor}"),
            ));
        }
        let session_idle = self.duration(&f("session_idle"), raw.session_idle.as_deref(), "30m")?;
        if session_idle.as_secs() < 1 {
            return Err(self.err(f("session_idle"), "must be at least 1s"));
        }
        let rebalance = match raw.rebalance.as_deref() {
            None | Some("gradual") => Rebalance::Gradual,
            Some("balanced") => Rebalance::Balanced,
            Some("persistent") => Rebalance::Persistent,
            Some(other) => {
                return Err(self.err(
                    f("rebalance"),
                    format!("must be \"gradual\", \"balanced\" or \"persistent\", got {other:?}"),
                ))
            }
        };
        let rebalance_idle =
            self.duration(&f("rebalance_idle"), raw.rebalance_idle.as_deref(), "60s")?;
        let rebalance_rate = raw.rebalance_rate.unwrap_or(5.0);
        if !(rebalance_rate > 0.0 && rebalance_rate <= 1e6) {
            return Err(self.err(
                f("rebalance_rate"),
                format!("must be > 0 sessions per second, got {rebalance_rate}"),
            ));
        }
        let optional = |name: &str, v: Option<String>| -> Result<Option<Duration>> {
            v.map(|v| self.duration(&f(name), Some(&v), "0s"))
                .transpose()
                .and_then(|d| match d {
                    Some(d) if d.as_secs() == 0 => {
                        Err(self.err(f(name), "must be at least 1s; omit it for no limit"))
                    }
                    d => Ok(d),
                })
        };
        let idle_timeout = optional("idle_timeout", raw.idle_timeout)?;
        let absolute_timeout = optional("absolute_timeout", raw.absolute_timeout)?;
        let drain_timeout =
            self.duration(&f("drain_timeout"), raw.drain_timeout.as_deref(), "5m")?;
        let key = match raw.key.as_deref() {
            None | Some("cookie") => AffinityKey::Cookie,
            Some("client-ip") => AffinityKey::ClientIp,
            Some(k) => match k
                .strip_prefix("header:")
                .map(|h| http::HeaderName::from_bytes(h.trim().as_bytes()))
            {
                Some(Ok(h)) => AffinityKey::Header(h),
                _ => {
                    return Err(self.err(
                        f("key"),
                        format!("must be \"cookie\", \"client-ip\" or \"header:NAME\", got {k:?}"),
                    ))
                }
            },
        };
        let mut trusted_proxies = Vec::new();
        for (j, cidr) in raw.trusted_proxies.unwrap_or_default().iter().enumerate() {
            let net = cidr
                .parse::<ipnet::IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    self.err(
                        f(&format!("trusted_proxies[{j}]")),
                        format!("{cidr:?} is not a CIDR like 10.0.0.0/8 or an IP"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        Ok(AffinitySettings {
            key,
            trusted_proxies,
            rebalance,
            rebalance_idle,
            rebalance_rate,
            idle_timeout,
            absolute_timeout,
            drain_timeout,
            prefer_local: raw.prefer_local.unwrap_or(false),
            load_factor,
            session_idle,
            cookie: CookieSettings {
                name,
                path,
                domain: raw.domain,
                secure,
                http_only: raw.http_only.unwrap_or(true),
                same_site,
                max_age,
            },
        })
    }

    fn routes(
        &self,
        raw: Vec<RawRoute>,
        backends: &[BackendSettings],
    ) -> Result<Vec<RouteSettings>> {
        if raw.is_empty() {
            if backends.is_empty() {
                return Ok(Vec::new()); // Ingress mode with no backend of the file's own
            }
            if backends.len() == 1 {
                return Ok(vec![RouteSettings {
                    host: None,
                    path_prefix: "/".into(),
                    to: RouteTo::Backend(0),
                    matches: RouteMatches::default(),
                    filters: RouteFilters::default(),
                }]);
            }
            return Err(self.err(
                "route",
                "at least one [[route]] is required when more than one backend is configured",
            ));
        }
        let mut routes = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let f = |s: &str| format!("route[{i}].{s}");
            let backend = match &r.backend {
                None => None,
                Some(name) => Some(backends.iter().position(|b| b.name == *name).ok_or_else(
                    || {
                        self.err(
                            f("backend"),
                            format!("unknown backend {name:?} (no [[backend]] has that name)"),
                        )
                    },
                )?),
            };
            let exact = r.path.is_some();
            if exact && r.path_prefix.is_some() {
                return Err(self.err(f("path"), "set path (exact) or path_prefix, not both"));
            }
            let (path_field, path_prefix) = match r.path {
                Some(p) => ("path", p),
                None => ("path_prefix", r.path_prefix.unwrap_or_else(|| "/".into())),
            };
            if !path_prefix.starts_with('/') {
                return Err(self.err(
                    f(path_field),
                    format!("must start with '/', got {path_prefix:?}"),
                ));
            }
            let matches = self.route_matches(
                &f,
                exact,
                r.method,
                r.headers.unwrap_or_default(),
                r.query.unwrap_or_default(),
            )?;
            let filters = RouteFilters {
                request_headers: self.header_edit(
                    &f("request_headers"),
                    r.request_headers,
                    false,
                )?,
                response_headers: self.header_edit(
                    &f("response_headers"),
                    r.response_headers,
                    true,
                )?,
                rewrite: match r.rewrite {
                    None => None,
                    Some(w) => {
                        let prefix = (!exact).then_some(path_prefix.as_str());
                        Some(self.rewrite(&f, w, prefix)?)
                    }
                },
            };
            let prefix = (!exact).then_some(path_prefix.as_str());
            let to = match (backend, r.redirect, r.answer) {
                (Some(b), None, None) => RouteTo::Backend(b),
                (None, Some(w), None) => {
                    RouteTo::Answer(Answer::Redirect(self.redirect(&f, w, prefix)?))
                }
                (None, None, Some(status)) => {
                    if !(400..=599).contains(&status) {
                        return Err(self.err(
                            f("answer"),
                            format!("{status} is not an error status (400 to 599; redirects are `redirect`)"),
                        ));
                    }
                    RouteTo::Answer(Answer::Status(status))
                }
                (None, None, None) => {
                    return Err(self.err(
                        f("backend"),
                        "required (or `redirect`, or `answer`, for a route that answers itself)",
                    ))
                }
                (Some(_), _, _) => {
                    let other = if r.answer.is_some() {
                        "answer"
                    } else {
                        "redirect"
                    };
                    return Err(self.err(
                        f(other),
                        "a route that answers itself has no backend: set backend or this, not both",
                    ));
                }
                (None, Some(_), Some(_)) => {
                    return Err(self.err(f("answer"), "set redirect or answer, not both"))
                }
            };
            if matches!(to, RouteTo::Answer(_)) {
                // Nothing goes to a pod, and tether's own answers are its own.
                let edits = [
                    ("request_headers", !filters.request_headers.is_empty()),
                    ("response_headers", !filters.response_headers.is_empty()),
                    ("rewrite", filters.rewrite.is_some()),
                ];
                if let Some((field, _)) = edits.iter().find(|(_, set)| *set) {
                    return Err(self.err(
                        f(field),
                        "a route that answers itself (redirect, answer) sends nothing to a pod \
                         and changes nothing of its answer",
                    ));
                }
            }
            let host = match r.host {
                None => None,
                Some(h) => {
                    if h.is_empty()
                        || h.contains(':')
                        || !h
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._*".contains(&b))
                    {
                        return Err(self.err(
                            f("host"),
                            format!("{h:?} is not a host name (no port, no scheme)"),
                        ));
                    }
                    // A wildcard is the whole first label, before at least one more
                    // (Gateway API's hostnames): `*.example.com`.
                    let rest = h.strip_prefix("*.").unwrap_or(&h);
                    if rest.contains('*') || rest.is_empty() || rest.starts_with('.') {
                        return Err(self.err(
                            f("host"),
                            format!(
                                "{h:?}: a wildcard must be the whole first label, as in \
                                 \"*.example.com\""
                            ),
                        ));
                    }
                    Some(h.to_ascii_lowercase())
                }
            };
            routes.push(RouteSettings {
                host,
                path_prefix,
                to,
                matches,
                filters,
            });
        }
        Ok(routes)
    }

    /// A `[[route]]`'s `rewrite`, validated; `prefix` is the route's path prefix (`None`
    /// for an exact `path`, which has no prefix to replace).
    fn rewrite(
        &self,
        f: &dyn Fn(&str) -> String,
        raw: RawRewrite,
        prefix: Option<&str>,
    ) -> Result<Rewrite> {
        if let Some(h) = &raw.hostname {
            if !host_name(h) {
                return Err(self.err(
                    f("rewrite.hostname"),
                    format!("{h:?} is not a host name (letters, digits, '-', '.')"),
                ));
            }
        }
        let path = self.path_change(
            &|s| f(&format!("rewrite.{s}")),
            raw.path,
            raw.prefix,
            prefix,
        )?;
        Ok(Rewrite {
            hostname: raw.hostname.map(|h| h.to_ascii_lowercase()),
            path,
        })
    }

    /// A `rewrite`'s or `redirect`'s `path` or `prefix` (at `f("path")`,
    /// `f("prefix")`), validated; `prefix` is the route's path prefix (`None` for an
    /// exact `path`, which has no prefix to replace).
    fn path_change(
        &self,
        f: &dyn Fn(&str) -> String,
        path: Option<String>,
        to: Option<String>,
        prefix: Option<&str>,
    ) -> Result<Option<PathRewrite>> {
        // A request target's path: visible ASCII (RFC 9112 §3.2), no query or fragment.
        let path_ok = |p: &str| {
            p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) && !p.contains(['?', '#'])
        };
        Ok(match (path, to) {
            (Some(_), Some(_)) => return Err(self.err(f("path"), "set path or prefix, not both")),
            (Some(p), None) => {
                if !path_ok(&p) {
                    return Err(self.err(
                        f("path"),
                        format!("{p:?} is not a path ('/' first, visible ASCII, no '?' or '#')"),
                    ));
                }
                Some(PathRewrite::Full(p))
            }
            (None, Some(p)) => {
                if !(p.is_empty() || path_ok(&p)) {
                    return Err(self.err(
                        f("prefix"),
                        format!("{p:?} is not a path ('/' first, visible ASCII, no '?' or '#')"),
                    ));
                }
                let Some(from) = prefix else {
                    return Err(self.err(
                        f("prefix"),
                        format!(
                            "an exact path has no prefix to replace (use {})",
                            f("path")
                                .split_once("].")
                                .map_or("path".into(), |(_, p)| p.to_string())
                        ),
                    ));
                };
                Some(PathRewrite::Prefix {
                    from: from.into(),
                    to: p,
                })
            }
            (None, None) => None,
        })
    }

    /// A `[[route]]`'s `redirect`, validated; `prefix` as for [`Self::path_change`].
    fn redirect(
        &self,
        f: &dyn Fn(&str) -> String,
        raw: RawRedirect,
        prefix: Option<&str>,
    ) -> Result<Redirect> {
        let at = |s: &str| f(&format!("redirect.{s}"));
        let scheme = match raw.scheme {
            None => None,
            Some(s) => match s.to_ascii_lowercase().as_str() {
                x @ ("http" | "https") => Some(x.to_string()),
                _ => return Err(self.err(at("scheme"), format!("{s:?}: http or https"))),
            },
        };
        if let Some(h) = &raw.hostname {
            if !host_name(h) {
                return Err(self.err(
                    at("hostname"),
                    format!("{h:?} is not a host name (letters, digits, '-', '.')"),
                ));
            }
        }
        let port = match raw.port {
            None => None,
            Some(p) => Some(
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| self.err(at("port"), format!("{p}: 1 to 65535")))?,
            ),
        };
        let status = match raw.status {
            None => 302,
            Some(s) => u16::try_from(s)
                .ok()
                .filter(|s| REDIRECT_STATUSES.contains(s))
                .ok_or_else(|| {
                    self.err(at("status"), format!("{s}: one of 301, 302, 303, 307, 308"))
                })?,
        };
        let path = self.path_change(&at, raw.path, raw.prefix, prefix)?;
        Ok(Redirect {
            scheme,
            hostname: raw.hostname.map(|h| h.to_ascii_lowercase()),
            port,
            path,
            status,
        })
    }

    /// A `[[route]]`'s `request_headers` or `response_headers` (at `field`), validated.
    fn header_edit(
        &self,
        field: &str,
        raw: Option<RawHeaderEdit>,
        response: bool,
    ) -> Result<HeaderEdit> {
        let Some(raw) = raw else {
            return Ok(HeaderEdit::default());
        };
        let name = |part: &str, n: &str| -> Result<http::HeaderName> {
            let at = format!("{field}.{part}.{n}");
            let parsed = http::HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| self.err(&at, "not a header field name"))?;
            if !editable_header(parsed.as_str(), response) {
                return Err(self.err(
                    at,
                    "tether owns this field (x-tether-*, x-forwarded-*, hop-by-hop, framing, \
                     Host, or Set-Cookie on a response); a route cannot change it",
                ));
            }
            Ok(parsed)
        };
        let value = |part: &str, n: &str, v: &str| -> Result<http::HeaderValue> {
            http::HeaderValue::from_str(v).map_err(|_| {
                self.err(
                    format!("{field}.{part}.{n}"),
                    format!("{v:?} is not a header value (visible ASCII)"),
                )
            })
        };
        let mut edit = HeaderEdit::default();
        for (n, v) in &raw.set {
            let h = name("set", n)?;
            if edit.set.iter().any(|(k, _)| *k == h) {
                return Err(self.err(
                    format!("{field}.set.{n}"),
                    "the same header is set twice (names ignore case)",
                ));
            }
            edit.set.push((h, value("set", n, v)?));
        }
        for (n, v) in &raw.add {
            edit.add.push((name("add", n)?, value("add", n, v)?));
        }
        for n in &raw.remove {
            edit.remove.push(name("remove", n)?);
        }
        Ok(edit)
    }

    /// A `[[route]]`'s `method`, `headers` and `query`, validated (`f` makes the field
    /// path of the route's fields).
    fn route_matches(
        &self,
        f: &dyn Fn(&str) -> String,
        exact: bool,
        method: Option<String>,
        headers: std::collections::BTreeMap<String, String>,
        query: std::collections::BTreeMap<String, String>,
    ) -> Result<RouteMatches> {
        // Gateway API's HTTPMethod values; tether refuses CONNECT, so a route for it
        // could never match.
        const METHODS: [&str; 8] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
        ];
        let method = match method {
            None => None,
            Some(m) if METHODS.contains(&m.as_str()) => http::Method::from_bytes(m.as_bytes()).ok(),
            Some(m) => {
                return Err(self.err(
                    f("method"),
                    format!("{m:?} is not one of {}", METHODS.join(", ")),
                ))
            }
        };
        let mut names: Vec<(http::HeaderName, String)> = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let field = f(&format!("headers.{name}"));
            let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
                return Err(self.err(field, "not a header field name"));
            };
            if names.iter().any(|(k, _)| *k == n) {
                return Err(self.err(field, "the same header is listed twice (names ignore case)"));
            }
            if http::HeaderValue::from_str(&value).is_err() || value.trim() != value {
                return Err(self.err(
                    field,
                    format!("{value:?} is not a header value (visible ASCII, no edge spaces)"),
                ));
            }
            names.push((n, value));
        }
        let mut params = Vec::with_capacity(query.len());
        for (name, value) in query {
            let bad = |s: &str| {
                s.bytes()
                    .any(|b| b.is_ascii_control() || b"&#= ".contains(&b))
            };
            if name.is_empty()
                || bad(&name)
                || value
                    .bytes()
                    .any(|b| b.is_ascii_control() || b"&# ".contains(&b))
            {
                return Err(self.err(
                    f(&format!("query.{name}")),
                    "a query parameter needs a name, and neither may hold '&', '#', spaces or \
                     controls (and the name no '=')",
                ));
            }
            params.push((name, value));
        }
        Ok(RouteMatches {
            exact,
            method,
            headers: names,
            query: params,
        })
    }

    fn socket_addr(&self, field: &str, value: Option<&str>, default: &str) -> Result<SocketAddr> {
        let v = value.unwrap_or(default);
        v.parse()
            .map_err(|_| self.err(field, format!("{v:?} is not an ip:port socket address")))
    }

    fn gateway(&self, raw: RawGateway) -> Result<GatewaySettings> {
        let controller_name = raw
            .controller_name
            .unwrap_or_else(|| DEFAULT_GATEWAY_CONTROLLER.into());
        // The CRD's pattern for controllerName: a domain-prefixed path, at most 253
        // characters.
        if !(controller_name.len() <= 253 && domain_prefixed_path(&controller_name)) {
            return Err(self.err(
                "kubernetes.gateway.controller_name",
                format!(
                    "{controller_name:?} is not a domain-prefixed path like \"{DEFAULT_GATEWAY_CONTROLLER}\""
                ),
            ));
        }
        let debounce = self.duration(
            "kubernetes.gateway.debounce",
            raw.debounce.as_deref(),
            "200ms",
        )?;
        if debounce > Duration::from_secs(60) {
            return Err(self.err(
                "kubernetes.gateway.debounce",
                "must be at most 60s (changes wait this long before they route)",
            ));
        }
        let address = self.address("kubernetes.gateway.address", raw.address)?;
        let lease = self.lease(
            "kubernetes.gateway",
            raw.lease,
            raw.lease_namespace,
            raw.lease_duration,
            DEFAULT_GATEWAY_LEASE_NAME,
        )?;
        Ok(GatewaySettings {
            controller_name,
            debounce,
            address,
            lease,
        })
    }

    /// `address`: where clients reach tether, written into status: an IP address or a
    /// DNS name (lowercased).
    fn address(&self, field: &str, raw: Option<String>) -> Result<Option<String>> {
        let address = match raw {
            None => None,
            Some(a) if a.parse::<std::net::IpAddr>().is_ok() => Some(a),
            Some(a)
                if !a.is_empty()
                    && a.len() <= 253
                    && a.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && !l.starts_with('-')
                            && !l.ends_with('-')
                            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    }) =>
            {
                Some(a.to_ascii_lowercase())
            }
            Some(a) => {
                return Err(self.err(
                    field,
                    format!("{a:?} is neither an IP address nor a DNS name"),
                ))
            }
        };
        Ok(address)
    }

    /// A mode's leader-election Lease (`lease`, `lease_namespace`, `lease_duration` of
    /// `section`).
    fn lease(
        &self,
        section: &str,
        name: Option<String>,
        namespace: Option<String>,
        duration: Option<String>,
        default: &str,
    ) -> Result<LeaseSettings> {
        let (raw_name, raw_ns, raw_duration) = (name, namespace, duration);
        // Object names: a DNS subdomain (the Lease), a DNS label (its namespace).
        let dns = |n: &str, max: usize, dots: bool| {
            !n.is_empty()
                && n.len() <= max
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
                && (dots || !n.contains('.'))
        };
        let lease_name = raw_name.unwrap_or_else(|| default.into());
        if !dns(&lease_name, 253, true) {
            return Err(self.err(
                format!("{section}.lease"),
                format!("{lease_name:?} is not a Kubernetes object name (lowercase DNS subdomain)"),
            ));
        }
        let lease_namespace = raw_ns;
        if let Some(ns) = lease_namespace.as_deref().filter(|ns| !dns(ns, 63, false)) {
            return Err(self.err(
                format!("{section}.lease_namespace"),
                format!("{ns:?} is not a namespace name (lowercase DNS label)"),
            ));
        }
        let lease_duration = self.duration(
            &format!("{section}.lease_duration"),
            raw_duration.as_deref(),
            "15s",
        )?;
        if lease_duration.subsec_nanos() != 0
            || lease_duration < Duration::from_secs(2)
            || lease_duration > Duration::from_secs(300)
        {
            return Err(self.err(
                format!("{section}.lease_duration"),
                "must be whole seconds from 2s to 300s (a Lease counts in seconds; another \
                 replica takes over status this long after the holder stops)",
            ));
        }
        Ok(LeaseSettings {
            name: lease_name,
            namespace: lease_namespace,
            duration: lease_duration,
        })
    }

    fn ingress(&self, raw: RawIngress) -> Result<IngressSettings> {
        let controller = raw
            .controller
            .unwrap_or_else(|| DEFAULT_INGRESS_CONTROLLER.into());
        // An IngressClass's spec.controller is a domain-prefixed path (at most 250
        // characters, per the API's validation).
        let valid = |c: &str| c.len() <= 250 && domain_prefixed_path(c);
        if !valid(&controller) {
            return Err(self.err(
                "kubernetes.ingress.controller",
                format!("{controller:?} is not a domain-prefixed path like \"{DEFAULT_INGRESS_CONTROLLER}\""),
            ));
        }
        let address = self.address("kubernetes.ingress.address", raw.address)?;
        let debounce = self.duration(
            "kubernetes.ingress.debounce",
            raw.debounce.as_deref(),
            "200ms",
        )?;
        if debounce > Duration::from_secs(60) {
            return Err(self.err(
                "kubernetes.ingress.debounce",
                "must be at most 60s (changes wait this long before they route)",
            ));
        }
        let lease = self.lease(
            "kubernetes.ingress",
            raw.lease,
            raw.lease_namespace,
            raw.lease_duration,
            DEFAULT_LEASE_NAME,
        )?;
        let (lease_name, lease_namespace, lease_duration) =
            (lease.name, lease.namespace, lease.duration);
        Ok(IngressSettings {
            controller,
            address,
            debounce,
            lease_name,
            lease_namespace,
            lease_duration,
        })
    }

    fn duration(&self, field: &str, value: Option<&str>, default: &str) -> Result<Duration> {
        let v = value.unwrap_or(default);
        let d = humantime::parse_duration(v).map_err(|e| {
            self.err(
                field,
                format!("{v:?} is not a duration like \"500ms\" or \"3s\": {e}"),
            )
        })?;
        if d > MAX_DURATION {
            return Err(self.err(field, format!("{v:?} is longer than the 365 days allowed")));
        }
        Ok(d)
    }
}

/// `domain/path`: a lowercase DNS-ish domain, a slash, a non-empty path, no spaces or
/// control characters (IngressClass `spec.controller`, GatewayClass `controllerName`).
fn domain_prefixed_path(c: &str) -> bool {
    c.split_once('/').is_some_and(|(d, p)| {
        !d.is_empty()
            && !p.is_empty()
            && d.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ".-".contains(ch))
    }) && !c.chars().any(|ch| ch.is_whitespace() || ch.is_control())
}

/// Decodes a base64 secret, standard or URL-safe alphabet, padded or not.
pub fn decode_secret(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "t.toml", Path::new("."))
    }

    #[test]
    fn a_header_edit_drops_underscore_spellings_of_what_it_removes_or_sets() {
        let edit = HeaderEdit {
            set: vec![(
                http::HeaderName::from_static("x-auth-user"),
                http::HeaderValue::from_static("anonymous"),
            )],
            add: Vec::new(),
            remove: vec![http::HeaderName::from_static("x-debug")],
        };
        for n in [
            "X-Auth-User",
            "x_auth_user",
            "X_Auth-User",
            "X_DEBUG",
            "x-debug",
        ] {
            assert!(edit.drops(n), "{n}");
        }
        assert!(!edit.drops("x-auth-users") && !edit.drops("x-authuser"));
        let mut h = http::HeaderMap::new();
        for n in ["x_auth_user", "x_debug", "x-debug", "x_other"] {
            h.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_static("admin"),
            );
        }
        edit.apply(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["x-auth-user", "x_other"]);
        assert_eq!(h["x-auth-user"], "anonymous");
    }

    #[test]
    fn single_backend_without_routes_gets_a_catch_all_route() {
        let c = parse("[[backend]]\nname='app'\nendpoints=['127.0.0.1:1']\n").unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].path_prefix, "/");
        assert!(c.backends[0].affinity.cookie.max_age.is_none());
        assert!(c.keys.is_empty());
    }

    #[test]
    fn a_config_written_for_the_old_http1_fast_path_switch_still_loads() {
        for v in ["true", "false"] {
            let text = format!(
                "[server]\nhttp1_fast_path = {v}\n[[backend]]\nname='app'\nendpoints=['127.0.0.1:1']\n"
            );
            assert!(parse(&text).is_ok(), "http1_fast_path = {v}");
        }
    }

    #[test]
    fn mixed_endpoint_shapes_and_weights_parse() {
        let c = parse(&format!(
            "[[keys]]\nid='k1'\nsecret='{KEY}'\n[[backend]]\nname='app'\nendpoints=['127.0.0.1:1', {{ name='pod-b', address='127.0.0.1:2', weight=3 }}]\n[backend.affinity]\ncookie='sid'\nmax_age='1h'\n"
        ))
        .unwrap();
        let Source::Static(e) = &c.backends[0].source else {
            panic!("static")
        };
        assert_eq!(e[0].name, None);
        assert_eq!(e[1].name.as_deref(), Some("pod-b"));
        assert_eq!(e[1].weight, 3);
        assert_eq!(
            c.backends[0].affinity.cookie.max_age,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(c.keys[0].secret.len(), 32);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[[backend]]\nname='a'\nendpoints=['nope']\n", "backend[0].endpoints[0]"),
            (
                "[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n[[route]]\nbackend='b'\n",
                "route[0].backend",
            ),
            (
                "[[keys]]\nid='k'\nsecret='c2hvcnQ='\n[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n",
                "keys[0].secret",
            ),
            (
                "[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n[backend.affinity]\nsame_site='none'\n",
                "backend[0].affinity.same_site",
            ),
            ("[server]\nlisten='x'\n[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n", "server.listen"),
            ("[[backend]]\nname='a'\nendpoints=['127.0.0.1:1', '127.0.0.1:1']\n", "backend[0].endpoints[1]"),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().starts_with("t.toml: "), "{e}");
        }
    }

    #[test]
    fn route_matches_load_and_round_trip_through_route_toml_matching() {
        let c = parse(
            "[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n\
             [[route]]\npath='/exact'\nmethod='POST'\nheaders={ 'X-Env' = 'canary' }\n\
             query={ v = '2' }\nbackend='a'\n",
        )
        .unwrap();
        let m = &c.routes[0].matches;
        assert!(m.exact);
        assert_eq!(c.routes[0].path_prefix, "/exact");
        assert_eq!(m.method, Some(http::Method::POST));
        assert_eq!(
            m.headers,
            vec![(http::HeaderName::from_static("x-env"), "canary".to_string())]
        );
        assert_eq!(m.query, vec![("v".to_string(), "2".to_string())]);
        let text = format!(
            "[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n{}",
            route_toml_matching(None, "/exact", RouteTo::Backend("a"), m)
        );
        assert_eq!(parse(&text).unwrap().routes[0].matches, *m);
    }

    #[test]
    fn no_header_edit_may_name_a_field_that_speaks_for_tether() {
        for name in [
            "x-tether-session",
            "x_tether_session",
            "x-tether-affinity",
            "x-tether-previous-endpoint",
            "x-forwarded-for",
            "x_forwarded_for",
            "x-forwarded-host",
            "x-forwarded-proto",
        ] {
            assert!(crate::http::headers::speaks_for_tether(name.as_bytes()));
            assert!(!editable_header(name, false), "{name}");
        }
        assert!(editable_header("x-env", false) && editable_header("set-cookie", false));
        assert!(!editable_header("set-cookie", true));
    }

    #[test]
    fn a_prefix_rewrite_follows_the_gateway_api_table() {
        let cases = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/x", "/", "/app", "/app/x"),
        ];
        for (path, from, to, want) in cases {
            let r = PathRewrite::Prefix {
                from: from.into(),
                to: to.into(),
            };
            assert_eq!(r.apply(path), want, "{path} {from} {to}");
        }
        assert_eq!(PathRewrite::Full("/n".into()).apply("/any/thing"), "/n");
    }

    #[test]
    fn bad_rewrites_name_their_field() {
        let route = |extra: &str| {
            format!("[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n[[route]]\nbackend='a'\n{extra}\n")
        };
        let cases = [
            (
                "rewrite = { hostname = 'a:80' }",
                "route[0].rewrite.hostname",
            ),
            ("rewrite = { path = 'x' }", "route[0].rewrite.path"),
            ("rewrite = { path = '/a?b' }", "route[0].rewrite.path"),
            (
                "rewrite = { path = '/a', prefix = '/b' }",
                "route[0].rewrite.path",
            ),
            (
                "path = '/e'\nrewrite = { prefix = '/b' }",
                "route[0].rewrite.prefix",
            ),
        ];
        for (extra, field) in cases {
            let e = parse(&route(extra)).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
    }

    #[test]
    fn a_redirect_or_answer_route_loads_without_a_backend_and_round_trips() {
        let c = parse(
            "[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n\
             [[route]]\npath_prefix='/old'\nredirect={ scheme='HTTPS', hostname='New.test', port=8443, prefix='/new', status=301 }\n\
             [[route]]\npath='/gone'\nanswer=500\n\
             [[route]]\npath_prefix='/tmp'\nredirect={ path='/x' }\n",
        )
        .unwrap();
        let want = Redirect {
            scheme: Some("https".into()),
            hostname: Some("new.test".into()),
            port: Some(8443),
            path: Some(PathRewrite::Prefix {
                from: "/old".into(),
                to: "/new".into(),
            }),
            status: 301,
        };
        assert_eq!(c.routes[0].to, RouteTo::Answer(Answer::Redirect(want)));
        assert_eq!(c.routes[0].backend(), None);
        assert_eq!(c.routes[1].to, RouteTo::Answer(Answer::Status(500)));
        let RouteTo::Answer(Answer::Redirect(r)) = &c.routes[2].to else {
            panic!("a redirect");
        };
        assert_eq!(
            (r.status, r.scheme.as_deref()),
            (302, None),
            "302 by default"
        );
        for route in &c.routes {
            let RouteTo::Answer(a) = &route.to else {
                panic!("answers itself");
            };
            let text = route_toml_matching(
                None,
                &route.path_prefix,
                RouteTo::Answer(a.clone()),
                &route.matches,
            );
            // No [[backend]]: a file of routes that answer themselves needs none.
            assert_eq!(parse(&text).unwrap().routes[0].to, route.to, "{text}");
        }
    }

    #[test]
    fn bad_redirects_and_answers_name_their_field() {
        let route = |extra: &str| {
            format!("[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n[[route]]\n{extra}\n")
        };
        let cases = [
            ("redirect = { scheme = 'ftp' }", "route[0].redirect.scheme"),
            ("redirect = { status = 200 }", "route[0].redirect.status"),
            ("redirect = { port = 0 }", "route[0].redirect.port"),
            (
                "redirect = { hostname = 'a b' }",
                "route[0].redirect.hostname",
            ),
            ("redirect = { path = 'x' }", "route[0].redirect.path"),
            (
                "path = '/e'\nredirect = { prefix = '/b' }",
                "route[0].redirect.prefix",
            ),
            ("backend = 'a'\nredirect = {}", "route[0].redirect"),
            ("backend = 'a'\nanswer = 500", "route[0].answer"),
            ("answer = 500\nredirect = {}", "route[0].answer"),
            ("answer = 302", "route[0].answer"),
            ("path_prefix = '/'", "route[0].backend"),
            (
                "redirect = {}\nrequest_headers = { set = { x-a = '1' } }",
                "route[0].request_headers",
            ),
        ];
        for (extra, field) in cases {
            let e = parse(&route(extra)).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
    }

    #[test]
    fn a_wildcard_route_host_is_its_whole_first_label() {
        let c = parse(
            "[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n[[route]]\nbackend='a'\nhost='*.Example.com'\n",
        )
        .unwrap();
        assert_eq!(c.routes[0].host.as_deref(), Some("*.example.com"));
    }

    #[test]
    fn bad_route_matches_name_their_field() {
        let route = |extra: &str| {
            format!("[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n[[route]]\nbackend='a'\n{extra}\n")
        };
        let cases = [
            ("path='/a'\npath_prefix='/a'", "route[0].path"),
            ("host='a.*.example.com'", "route[0].host"),
            ("host='*example.com'", "route[0].host"),
            ("host='*.'", "route[0].host"),
            ("host='*.*.example.com'", "route[0].host"),
            ("path='a'", "route[0].path"),
            ("method='FETCH'", "route[0].method"),
            ("method='CONNECT'", "route[0].method"),
            ("headers={ 'bad name' = 'x' }", "route[0].headers.bad name"),
            ("headers={ x-a = ' padded' }", "route[0].headers.x-a"),
            ("headers={ x-a = '1', X-A = '2' }", "route[0].headers.x-a"),
            ("query={ 'a&b' = '1' }", "route[0].query.a&b"),
            ("query={ a = '1#2' }", "route[0].query.a"),
        ];
        for (extra, field) in cases {
            let e = parse(&route(extra)).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
    }

    #[test]
    fn ingress_mode_allows_a_file_without_backends_and_names_bad_fields() {
        let c = parse("[kubernetes.ingress]\naddress = '203.0.113.7'\n").unwrap();
        assert!(c.backends.is_empty() && c.routes.is_empty());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let i = c.kubernetes.ingress.unwrap();
        assert_eq!(i.controller, DEFAULT_INGRESS_CONTROLLER);
        assert_eq!(i.address.as_deref(), Some("203.0.113.7"));
        assert_eq!(i.debounce, Duration::from_millis(200));
        assert_eq!(i.lease_name, DEFAULT_LEASE_NAME);
        assert_eq!(i.lease_namespace, None);
        assert_eq!(i.lease_duration, Duration::from_secs(15));
        assert!(
            parse("[kubernetes]\n").is_err(),
            "no backends without ingress mode"
        );
        for (text, field) in [
            ("controller = 'nope'", "kubernetes.ingress.controller"),
            ("address = 'not an address!'", "kubernetes.ingress.address"),
            ("debounce = '2m'", "kubernetes.ingress.debounce"),
            ("lease = 'Not_A_Name'", "kubernetes.ingress.lease"),
            (
                "lease_namespace = 'a.b'",
                "kubernetes.ingress.lease_namespace",
            ),
            ("lease_duration = '1s'", "kubernetes.ingress.lease_duration"),
            (
                "lease_duration = '1500ms'",
                "kubernetes.ingress.lease_duration",
            ),
            (
                "lease_duration = '10m'",
                "kubernetes.ingress.lease_duration",
            ),
            ("typo = 1", "line 2"),
        ] {
            let e = parse(&format!("[kubernetes.ingress]\n{text}\n")).unwrap_err();
            assert_eq!(e.field, field, "{text}");
        }
    }

    #[test]
    fn gateway_mode_allows_a_file_without_backends_and_names_bad_fields() {
        let c = parse("[kubernetes.gateway]\n").unwrap();
        assert!(c.backends.is_empty() && c.routes.is_empty());
        let g = c.kubernetes.gateway.unwrap();
        assert_eq!(g.controller_name, DEFAULT_GATEWAY_CONTROLLER);
        assert_eq!(g.debounce, Duration::from_millis(200));
        let c = parse("[kubernetes.gateway]\ncontroller_name = 'example.com/gw'\n").unwrap();
        assert_eq!(
            c.kubernetes.gateway.unwrap().controller_name,
            "example.com/gw"
        );
        for (text, field) in [
            (
                "controller_name = 'nope'",
                "kubernetes.gateway.controller_name",
            ),
            (
                "controller_name = 'Ex.com/a b'",
                "kubernetes.gateway.controller_name",
            ),
            ("debounce = '2m'", "kubernetes.gateway.debounce"),
            ("controller = 'a.b/c'", "line 2"),
        ] {
            let e = parse(&format!("[kubernetes.gateway]\n{text}\n")).unwrap_err();
            assert!(e.to_string().contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn gateway_mode_has_its_own_status_lease_and_address() {
        let g = parse("[kubernetes.gateway]\n")
            .unwrap()
            .kubernetes
            .gateway
            .unwrap();
        assert_eq!(g.address, None);
        assert_eq!(g.lease.name, DEFAULT_GATEWAY_LEASE_NAME);
        assert_ne!(
            g.lease.name, DEFAULT_LEASE_NAME,
            "Ingress mode's is another"
        );
        assert_eq!(g.lease.duration, Duration::from_secs(15));
        let g = parse(
            "[kubernetes.gateway]\naddress = 'LB.example.com'\nlease = 'gw'\n\
             lease_namespace = 'infra'\nlease_duration = '5s'\n",
        )
        .unwrap()
        .kubernetes
        .gateway
        .unwrap();
        assert_eq!(g.address.as_deref(), Some("lb.example.com"));
        assert_eq!(
            g.lease,
            LeaseSettings {
                name: "gw".into(),
                namespace: Some("infra".into()),
                duration: Duration::from_secs(5),
            }
        );
        for (text, field) in [
            ("address = 'a b'", "kubernetes.gateway.address"),
            ("lease = 'Not_A_Name'", "kubernetes.gateway.lease"),
            (
                "lease_namespace = 'a.b'",
                "kubernetes.gateway.lease_namespace",
            ),
            ("lease_duration = '1s'", "kubernetes.gateway.lease_duration"),
        ] {
            let e = parse(&format!("[kubernetes.gateway]\n{text}\n")).unwrap_err();
            assert!(e.to_string().contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn weighted_services_parse_with_default_weight_one() {
        let c = parse("[[backend]]\nname='a'\nkubernetes=[{ namespace='shop', service='web', port=8080, weight=3 }, { namespace='shop', service='canary', port='http' }, { service='old', port=80, weight=0 }]\n[[route]]\nbackend='a'\n").unwrap();
        let Source::Weighted(s) = &c.backends[0].source else {
            panic!("{:?}", c.backends[0].source)
        };
        let got: Vec<_> = s
            .iter()
            .map(|s| {
                (
                    s.source.service.as_str(),
                    s.source.namespace.as_str(),
                    s.weight,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("web", "shop", 3),
                ("canary", "shop", 1),
                ("old", "default", 0)
            ]
        );
        assert_eq!(s[1].source.port, PortRef::Name("http".into()));
    }

    #[test]
    fn bad_service_weights_fail_naming_the_field() {
        for (kube, field) in [
            (
                "[{ service='a', weight=-1 }]",
                "backend[0].kubernetes[0].weight",
            ),
            (
                "[{ service='a' }, { service='b', weight=1000001 }]",
                "backend[0].kubernetes[1].weight",
            ),
            (
                "[{ service='a', weight=0 }, { service='b', weight=0 }]",
                "backend[0].kubernetes[0].weight",
            ),
            ("[]", "backend[0].kubernetes"),
            (
                "[{ service='a', port=80 }, { service='a', port=80 }]",
                "backend[0].kubernetes[1].service",
            ),
            (
                "[{ service='Bad_Name' }]",
                "backend[0].kubernetes[0].service",
            ),
            ("{ service='a', weight=2 }", "backend[0].kubernetes.weight"),
        ] {
            let e = parse(&format!("[[backend]]\nname='a'\nkubernetes={kube}\n")).unwrap_err();
            assert_eq!(e.field, field, "{kube}: {e}");
        }
        // A table's own error survives (no "did not match any variant").
        let e =
            parse("[[backend]]\nname='a'\nkubernetes=[{ service='a', wieght=2 }]\n").unwrap_err();
        assert!(e.to_string().contains("wieght"), "{e}");
    }

    #[test]
    fn kubernetes_backends_parse_named_and_numbered_ports() {
        let c = parse("[[backend]]\nname='a'\nkubernetes={ namespace='shop', service='cart', port='http' }\n[[backend]]\nname='b'\nkubernetes={ service='cart', port=8080 }\n[[route]]\nbackend='a'\n").unwrap();
        assert_eq!(
            c.backends[0].source,
            Source::Kubernetes(KubernetesSource {
                namespace: "shop".into(),
                service: "cart".into(),
                port: PortRef::Name("http".into())
            })
        );
        let Source::Kubernetes(k) = &c.backends[1].source else {
            panic!()
        };
        assert_eq!(
            (k.namespace.as_str(), &k.port),
            ("default", &PortRef::Number(8080))
        );
        let e =
            parse("[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\nkubernetes={ service='x' }\n")
                .unwrap_err();
        assert_eq!(e.field, "backend[0].kubernetes");
        let e = parse("[[backend]]\nname='a'\nkubernetes={ service='Bad_Name' }\n").unwrap_err();
        assert_eq!(e.field, "backend[0].kubernetes.service");
    }

    #[test]
    fn every_duration_over_a_year_is_refused_naming_its_field() {
        // `down_cooloff = "300000000000y"` used to pass, then overflow `Instant +
        // Duration` at the first connect failure.
        let base = "[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n";
        let cases = [
            ("[server]\nheader_timeout='{}'\n", "server.header_timeout"),
            ("[server]\nshutdown_grace='{}'\n", "server.shutdown_grace"),
            ("[server]\nshutdown_delay='{}'\n", "server.shutdown_delay"),
            ("[kubernetes]\nbackoff_max='{}'\n", "kubernetes.backoff_max"),
            (
                "[kubernetes]\nbackoff_max='365days'\nbackoff_min='{}'\n",
                "kubernetes.backoff_min",
            ),
            ("connect_timeout='{}'\n", "backend[0].connect_timeout"),
            ("response_timeout='{}'\n", "backend[0].response_timeout"),
            ("down_cooloff='{}'\n", "backend[0].down_cooloff"),
            ("outlier_base='{}'\n", "backend[0].outlier_base"),
            (
                "[backend.affinity]\nsession_idle='{}'\n",
                "backend[0].affinity.session_idle",
            ),
            (
                "[backend.affinity]\nrebalance_idle='{}'\n",
                "backend[0].affinity.rebalance_idle",
            ),
            (
                "[backend.affinity]\nidle_timeout='{}'\n",
                "backend[0].affinity.idle_timeout",
            ),
            (
                "[backend.affinity]\nabsolute_timeout='{}'\n",
                "backend[0].affinity.absolute_timeout",
            ),
            (
                "[backend.affinity]\ndrain_timeout='{}'\n",
                "backend[0].affinity.drain_timeout",
            ),
            (
                "[backend.affinity]\nmax_age='{}'\n",
                "backend[0].affinity.max_age",
            ),
        ];
        for (line, field) in cases {
            let text = |v: &str| {
                let line = line.replace("{}", v);
                if line.starts_with("[server]") || line.starts_with("[kubernetes]") {
                    format!("{line}{base}")
                } else {
                    format!("{base}{line}")
                }
            };
            for v in ["300000000000y", "366days"] {
                let e = parse(&text(v)).unwrap_err();
                assert_eq!(e.field, field, "{e}");
                assert!(e.reason.contains("365 days"), "{e}");
            }
            parse(&text("365days")).unwrap_or_else(|e| panic!("{field}: {e}"));
        }
    }

    #[test]
    fn a_control_character_in_a_comment_gets_a_reason() {
        // Found by the config_parse fuzz target.
        let e =
            parse("[server]\n# a \u{1}comment\n[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\n")
                .unwrap_err();
        assert_eq!(e.field, "line 2");
        assert!(!e.reason.is_empty());
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_line() {
        let e =
            parse("[[backend]]\nname='a'\nendpoints=['127.0.0.1:1']\ncookie='x'\n").unwrap_err();
        assert!(e.reason.contains("unknown field `cookie`"), "{e}");
        assert_eq!(e.field, "line 4");
    }
}
