//! The proxy: routes, one exchange per request, answers. The exchange
//! ([`exchange`]) holds the policy every request gets whatever it arrived on; the
//! HTTP/1 codec ([`native`]) and the HTTP/2 server ([`h2`], each stream through
//! [`Proxy::handle`] and [`request`]) only carry requests to it and answers back. This module holds what
//! they share besides: the errors and the status each is answered with, the
//! connection's view, `Host` (RFC 9112 §3.2) and the client address.

pub mod exchange;
pub mod h2;
pub mod hygiene;
pub mod native;
pub mod request;
pub mod route;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use tokio::time::Instant;

use crate::affinity::{self, KeyRing};
use crate::backend::Backend;
use crate::config::Config;
use crate::http::headers::{self, Fields};
use crate::http::wire;
use crate::stats::BackendStats;
use crate::upstream::body::{self, BodyFault, ClientBody, ProxyBody, RequestBody};
use crate::upstream::h1::Interims;
use http::Method;
use http_body::Body as _;
use ipnet::IpNet;
use route::{Asked, RouteTable};
use tokio_util::task::TaskTracker;

pub use crate::http::wire::MAX_RESPONSE_HEAD;

/// Why a request could not be proxied; each maps to one status deliberately, and each
/// is blamed on one party: [`Error::client_fault`] says which are the client's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No route matches host and path.
    #[error("no route")]
    NoRoute,
    /// The route answers the request itself (a redirect, or 500 for an HTTPRoute rule
    /// whose backendRefs are all invalid): no failure, but written, counted and logged
    /// as tether's own statuses are.
    #[error("{}", .0.text())]
    Answered(Box<route::Local>),
    /// The request's host is missing, repeated or invalid (RFC 9112 §3.2).
    #[error("invalid host")]
    InvalidHost,
    /// A CONNECT request: tether is a gateway to its backends, not a tunnel to
    /// anywhere (RFC 9110 §9.3.6 is for forward proxies).
    #[error("CONNECT is not supported")]
    ConnectMethod,
    /// A request head the HTTP/1 codec refuses (400, 431 or 501, RFC 9112).
    #[error(transparent)]
    Refused(#[from] wire::Refusal),
    /// The request body is larger than `max_body_bytes`.
    #[error("request body too large")]
    BodyTooLarge,
    /// The backend has no endpoint that can take the request.
    #[error("no endpoint available")]
    NoEndpoint,
    /// Every connection attempt failed before the request was sent.
    #[error("upstream connect failed")]
    Connect,
    /// The upstream failed after the request was sent.
    #[error("upstream error")]
    Upstream(#[source] body::BodyError),
    /// The upstream did not answer within the response timeout.
    #[error("upstream timeout")]
    Timeout,
    /// The client's fault: answered and counted as the client's, never held against
    /// the endpoint the request was sent to.
    #[error(transparent)]
    Client(#[from] ClientFault),
    /// The upstream's answer could not be read or relayed by the HTTP/1 codec.
    #[error("upstream error")]
    Wire(#[source] wire::Error),
}

pub use crate::fault::ClientFault;

impl From<BodyFault> for Error {
    fn from(f: BodyFault) -> Self {
        match f {
            BodyFault::Client(f) => Error::Client(f),
            BodyFault::TooLarge => Error::BodyTooLarge,
        }
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status the client sees. An aborted client will not read it; it is still
    /// 400 (the request was incomplete), which the access log records.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoRoute => StatusCode::NOT_FOUND,
            Error::Answered(a) => a.status,
            Error::InvalidHost => StatusCode::BAD_REQUEST,
            Error::Refused(r) => r.status(),
            Error::ConnectMethod => StatusCode::NOT_IMPLEMENTED,
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Error::Connect | Error::Upstream(_) | Error::Wire(_) => StatusCode::BAD_GATEWAY,
            Error::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Error::Client(ClientFault::MalformedBody | ClientFault::Aborted) => {
                StatusCode::BAD_REQUEST
            }
            Error::Client(ClientFault::BodyTimeout) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Whether the connection must close after this answer: the request's body was
    /// not read to its end, so the next bytes are not a request head.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Error::BodyTooLarge
                | Error::InvalidHost
                | Error::ConnectMethod
                | Error::Refused(_)
                | Error::Client(_)
        )
    }

    /// Counts this failure, answered by tether itself, in `stats`.
    pub fn count(&self, stats: &BackendStats) {
        stats.failed(self.status(), self.client_fault());
    }

    /// The client's fault, when this error is one.
    pub fn client_fault(&self) -> Option<ClientFault> {
        match self {
            Error::Client(f) => Some(*f),
            _ => None,
        }
    }

    /// A redirect's `Location`, for the answer tether writes.
    pub fn location(&self) -> Option<&HeaderValue> {
        match self {
            Error::Answered(a) => a.location.as_ref(),
            _ => None,
        }
    }

    /// The answer an HTTP/2 client gets: the status and the error's text (the stream
    /// ends with it; the connection and its other streams go on).
    fn response(&self) -> Response<ProxyBody> {
        let mut r = Response::new(ProxyBody::text(format!("{self}\n")));
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(l) = self.location() {
            r.headers_mut().insert(header::LOCATION, l.clone());
        }
        r
    }
}

/// The routing state a request reads: replaced whole (later, on reload), never edited.
#[derive(Debug)]
pub struct State {
    /// Compiled routes.
    pub routes: RouteTable,
    /// Backends, indexed by the routes.
    pub backends: Vec<Arc<Backend>>,
    /// Cookie keys.
    pub keys: Arc<KeyRing>,
    /// Largest request body accepted.
    pub max_body_bytes: Option<u64>,
    /// Request bodies of known length up to this are read whole first.
    pub request_buffer: usize,
    /// Response bodies of known length up to this are read whole first.
    pub response_buffer: usize,
    /// Fraction of requests written to the access log.
    pub access_log_sample: f64,
}

impl State {
    /// Builds the state for a config; backends start with no endpoints until discovery
    /// publishes them.
    pub fn new(config: &Config, keys: Arc<KeyRing>, pod_name: Option<&str>) -> Self {
        State {
            routes: RouteTable::new(&config.routes),
            backends: config
                .backends
                .iter()
                .map(|b| Arc::new(Backend::new(b.clone(), keys.clone(), pod_name)))
                .collect(),
            keys,
            max_body_bytes: config.server.max_body_bytes,
            request_buffer: config.server.request_buffer,
            response_buffer: config.server.response_buffer,
            access_log_sample: config.server.access_log_sample,
        }
    }
}

/// One client connection, as the proxy sees it.
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the client connected over TLS (sets `X-Forwarded-Proto`).
    pub secure: bool,
    /// The peer's address as an `X-Forwarded-For` value, rendered once.
    peer_value: HeaderValue,
    /// The session an HTTP/2 connection's cookieless requests share, so concurrent first
    /// requests land on one endpoint (set by the first of them).
    shared: OnceLock<exchange::Shared>,
    /// The last cookie that verified on this (HTTP/2) connection.
    memo: affinity::cookie::SharedMemo,
}

impl Connection {
    /// A new connection from `peer`.
    pub fn new(peer: SocketAddr, secure: bool) -> Self {
        Connection {
            peer,
            secure,
            peer_value: headers::peer_value(peer.ip()),
            shared: OnceLock::new(),
            memo: Default::default(),
        }
    }
}

/// The proxy: shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    state: ArcSwap<State>,
    /// Set when shutdown begins, so readiness turns false at once.
    shutting_down: AtomicBool,
    /// Upgraded connections (WebSockets) being spliced, so shutdown can wait for them.
    tunnels: TaskTracker,
    /// Config reloads: [succeeded, failed].
    reloads: [AtomicU64; 2],
    /// Client connections ended by `send_timeout` (shared with their sockets).
    send_timeouts: Arc<AtomicU64>,
    /// Requests routes answered themselves, indexed by status (below 600): a redirect
    /// or a 500 has no backend to be counted under.
    route_answers: Box<[AtomicU64]>,
}

impl Proxy {
    /// A proxy over `state`.
    pub fn new(state: State) -> Self {
        Proxy {
            state: ArcSwap::from_pointee(state),
            shutting_down: AtomicBool::new(false),
            tunnels: TaskTracker::new(),
            reloads: Default::default(),
            send_timeouts: Default::default(),
            route_answers: (0..600).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The current routing state.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// A backend by name.
    pub fn backend(&self, name: &str) -> Option<Arc<Backend>> {
        self.state
            .load()
            .backends
            .iter()
            .find(|b| b.name() == name)
            .cloned()
    }

    /// Marks the proxy as shutting down (readiness turns false).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Waits until every upgraded connection has closed, or `deadline`.
    pub async fn close_tunnels(&self, deadline: Instant) {
        self.tunnels.close();
        if tokio::time::timeout_at(deadline, self.tunnels.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tunnels.len(),
                "grace period over with upgraded connections open"
            );
        }
    }

    /// Whether the proxy can take traffic: not shutting down, and every backend has its
    /// first complete endpoint list and an endpoint for new sessions.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed)
            && self.state.load().backends.iter().all(|b| {
                let s = b.snapshot();
                s.is_synced() && s.has_eligible()
            })
    }

    /// Handles one request from an HTTP/2 client. Never fails: errors become the
    /// statuses tether writes itself (README, "Statuses"). The pod's interim responses
    /// go to `interims` as they come, for the stream to send ahead of the answer.
    pub async fn handle(
        &self,
        mut req: Request<ClientBody>,
        conn: &Connection,
        interims: &Interims,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        if req.method() == Method::CONNECT {
            return Error::ConnectMethod.response();
        }
        if let Err(e) = settle_host(&mut req) {
            return e.response();
        }
        let route = match self.route(&req, conn.secure) {
            Ok(r) => r,
            Err(e) => return self.unrouted(e, &req, conn),
        };
        let line = route.logged.then(|| {
            exchange::LogLine::new(req.method().as_str(), req.uri().path(), req.version())
        });
        let stats = &route.backend.stats;
        let mut abandoned = Abandoned { stats, armed: true };
        let too_large = route
            .max_body
            .is_some_and(|max| req.body().size_hint().lower() > max);
        let mut req = req.map(|b| RequestBody::client(b, route.max_body));
        let forwarded = async {
            let request_buffer = route.request_buffer as u64;
            let response_buffer = route.response_buffer as u64;
            // A small body of known length is read whole before an upstream is chosen,
            // so a slow uploader never holds a pod's connection (`request_buffer`); it
            // must arrive within the response timeout, the bound an upload has anyway.
            let length = req.body().size_hint().exact();
            let read = match length {
                _ if too_large => Err(Error::BodyTooLarge),
                Some(n) if n > 0 && n <= request_buffer => {
                    let by = Instant::now() + route.backend.settings.response_timeout;
                    req.body_mut().read_whole(by).await.map_err(Error::from)
                }
                _ => Ok(()),
            };
            if let Err(e) = read {
                e.count(stats);
                stats.observe(started.elapsed());
                return Err(e);
            }
            let arrival = exchange::Arrival::Http2;
            let interims = Some(interims);
            self.forward(
                req,
                conn,
                &route,
                arrival,
                started,
                response_buffer,
                interims,
            )
            .await
        };
        let (resp, elapsed, log) = match forwarded.await {
            Ok(r) => r,
            Err(e) => (e.response(), started.elapsed(), None),
        };
        abandoned.armed = false;
        if let Some(line) = line {
            let status = resp.status().as_u16();
            line.write(conn, &route.backend, status, elapsed, log.as_ref());
        }
        resp
    }

    /// Tether's answer to a request no backend takes (from [`Proxy::route`]: no route,
    /// or the route's own answer), counted and logged ([`Proxy::answered_locally`]).
    pub fn unrouted<R: Asked + ?Sized>(
        &self,
        e: Error,
        req: &R,
        conn: &Connection,
    ) -> Response<ProxyBody> {
        self.answered_locally(&e, req, conn);
        let mut r = e.response();
        // RFC 9110 §9.3.2: no content after a HEAD answer's head.
        if req.method() == Method::HEAD.as_str() {
            *r.body_mut() = ProxyBody::text(bytes::Bytes::new());
        }
        r
    }

    /// Counts and logs a request its route answered itself, as every codec must before
    /// it writes the answer: `tether_route_answers_total{status}` (there is no backend
    /// to count it under), and an access log line (sampled, backend `-`). `NoRoute` is
    /// not counted nor logged, as before.
    pub fn answered_locally<R: Asked + ?Sized>(&self, e: &Error, req: &R, conn: &Connection) {
        let Error::Answered(a) = e else {
            return;
        };
        let status = a.status.as_u16();
        if let Some(n) = self.route_answers.get(usize::from(status)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if exchange::sampled(self.state.load().access_log_sample) {
            exchange::LogLine::new(req.method(), req.path(), req.version())
                .write_answered(conn, status);
        }
    }

    /// How many requests routes answered themselves, by status (only those counted).
    pub fn route_answers(&self) -> Vec<(u16, u64)> {
        self.route_answers
            .iter()
            .enumerate()
            .filter_map(|(s, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((s as u16, n))
            })
            .collect()
    }

    /// Swaps in a new routing state (a reload); in-flight requests keep the old one.
    pub fn replace_state(&self, state: State) {
        self.state.store(Arc::new(state));
    }

    /// Counts a config reload attempt.
    pub fn count_reload(&self, success: bool) {
        self.reloads[usize::from(!success)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of client connections ended by `send_timeout`, for their sockets.
    pub fn send_timeouts(&self) -> Arc<AtomicU64> {
        self.send_timeouts.clone()
    }

    /// Counts how many config reloads succeeded (`true`) or failed.
    pub fn reloads(&self, success: bool) -> u64 {
        self.reloads[usize::from(!success)].load(Ordering::Relaxed)
    }
}

/// Counts a request whose handling was dropped before it finished: the HTTP/2 stream
/// was reset, by the client or by the h2 library for a protocol error such as DATA
/// short of content-length, and the HTTP/2 server ([`h2`]) drops the request's future
/// with it. Either way
/// the client is gone, its own fault, and no endpoint is touched (dropping the future
/// drops the upstream connection, which counts nothing against it).
struct Abandoned<'a> {
    stats: &'a BackendStats,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.stats.client_error(ClientFault::Aborted);
        }
    }
}

/// The client address for `key = "client-ip"`: the peer, unless the peer is a trusted
/// proxy, in which case the rightmost address in `X-Forwarded-For` (or `Forwarded:
/// for=`) that is not itself a trusted proxy.
pub fn client_ip<H: Fields + ?Sized>(headers: &H, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = headers
        .values(&headers::X_FORWARDED_FOR)
        .filter_map(headers::text)
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    if hops.is_empty() {
        hops = headers
            .values(&header::FORWARDED)
            .filter_map(headers::text)
            .flat_map(|v| v.split([',', ';']))
            .filter_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                if !k.eq_ignore_ascii_case("for") {
                    return None;
                }
                let v = v.trim_matches('"');
                let v = v
                    .strip_prefix('[')
                    .map_or(v, |x| x.split(']').next().unwrap_or(x));
                v.parse()
                    .ok()
                    .or_else(|| v.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
            })
            .collect();
    }
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// Makes the request's one `Host` field say the host it is for, or answers why it
/// cannot (RFC 9112 §3.2: an HTTP/1.1 request without exactly one valid `Host`, or any
/// request with two, gets 400). The target's authority, from an absolute-form target
/// (RFC 9112 §3.2.2) or HTTP/2's `:authority` (RFC 9113 §8.3.1), replaces whatever
/// `Host` said: routing, the upstream's `Host` and `X-Forwarded-Host` all follow it.
fn settle_host<B>(req: &mut Request<B>) -> Result<()> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some()
        || host.is_some_and(|h| !headers::valid_host(h.as_bytes()))
        || (host.is_none() && req.version() == Version::HTTP_11)
    {
        return Err(Error::InvalidHost);
    }
    if let Some(authority) = req.uri().authority() {
        if !headers::valid_host(authority.as_str().as_bytes()) {
            return Err(Error::InvalidHost);
        }
        let v = HeaderValue::from_str(authority.as_str()).map_err(|_| Error::InvalidHost)?;
        req.headers_mut().insert(header::HOST, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_believes_only_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.1.2.3"),
        );
        let lb: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.50".parse().unwrap();
        assert_eq!(
            client_ip(&h, lb, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&h, stranger, &trusted), stranger);
        let mut f = http::HeaderMap::new();
        f.insert(
            "forwarded",
            HeaderValue::from_static("for=\"[2001:db8::1]:4711\";proto=https"),
        );
        assert_eq!(
            client_ip(&f, lb, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&http::HeaderMap::new(), lb, &trusted), lb);
    }
}
