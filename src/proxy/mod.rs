//! The proxy service: route, decide the session, forward, answer.
//!
//! Per request: one `ArcSwap` load for the routing state, one for the backend snapshot,
//! a cookie verify, a table lookup, then the upstream exchange. Connect failures (nothing
//! sent yet) are retried on the next distinct endpoint in the session's ring order and
//! mark the endpoint down; failures after the request was sent are answered with 502,
//! timeouts with 504, and the cookie always names the endpoint that actually answered.

pub mod hygiene;
pub mod native;
pub mod route;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::affinity::{self, Decision, KeyRing, Outcome, SessionId};
use crate::backend::{Backend, Endpoint, EndpointState, Snapshot};
use crate::clock::Now;
use crate::config::{AffinityKey, BackendSettings, Config};
use crate::http::headers::{self, Fields, X_TETHER_AFFINITY, X_TETHER_PREVIOUS, X_TETHER_SESSION};
use crate::http::wire;
use crate::stats::{AffinityEvent, BackendStats};
use crate::upstream::body::{self, BodyFault, PooledBody, ProxyBody, RequestBody};
use crate::upstream::{h1 as upstream_h1, pool};
use http::Method;
use http_body::Body as _;
use ipnet::IpNet;
use route::RouteTable;
use tokio_util::task::TaskTracker;

pub use crate::http::wire::MAX_RESPONSE_HEAD;

/// Why a request could not be proxied; each maps to one status deliberately, and each
/// is blamed on one party: [`Error::client_fault`] says which are the client's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No route matches host and path.
    #[error("no route")]
    NoRoute,
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

    fn response(&self) -> Response<ProxyBody> {
        let mut r = Response::new(ProxyBody::text(format!("{self}\n")));
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.closes() {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The body limits a request is handled under (from `[server]`).
#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    /// `max_body_bytes`.
    max_body: Option<u64>,
    /// `request_buffer`.
    request_buffer: u64,
    /// `response_buffer`.
    response_buffer: u64,
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

/// What the access log says about an answered request (like HAProxy's cookie flags).
#[derive(Debug, Clone)]
struct AccessInfo {
    endpoint: Arc<str>,
    outcome: &'static str,
    session: affinity::cookie::HexId,
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
    shared_session: OnceLock<SessionId>,
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
            shared_session: OnceLock::new(),
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

    /// Handles one request. Never fails: errors become 404/413/502/503/504.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        conn: &Connection,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        if req.method() == Method::CONNECT {
            return Error::ConnectMethod.response();
        }
        if let Err(e) = settle_host(&mut req) {
            return e.response();
        }
        let (backend, keys, limits, sample) = {
            let state = self.state.load();
            let host = req.headers().get(header::HOST).map(HeaderValue::as_bytes);
            match state.routes.find(host, req.uri().path()) {
                Some(i) => (
                    state.backends[i].clone(),
                    state.keys.clone(),
                    BodyLimits {
                        max_body: state.max_body_bytes,
                        request_buffer: state.request_buffer as u64,
                        response_buffer: state.response_buffer as u64,
                    },
                    state.access_log_sample,
                ),
                None => return Error::NoRoute.response(),
            }
        };
        let logged = sample > 0.0 && (sample >= 1.0 || rand::random::<f64>() < sample);
        let line = logged.then(|| {
            (
                req.method().clone(),
                req.uri().path().to_owned(),
                req.version(),
            )
        });
        // Boxed: hyper keeps room for the request future in every connection, idle or
        // not, and forwarding is ~3 KB of it. Boxing brings an idle keep-alive
        // connection from ~22 KB to ~19 KB (benches/load/idle-memory.sh) for one
        // allocation per request (no change in callgrind's instructions per request).
        let mut abandoned = Abandoned {
            stats: &backend.stats,
            armed: true,
        };
        let too_large = limits
            .max_body
            .is_some_and(|max| req.body().size_hint().lower() > max);
        let req = req.map(|b| RequestBody::client(b, limits.max_body));
        let forwarded = async {
            if too_large {
                return Err(Error::BodyTooLarge);
            }
            self.forward(req, conn, &backend, keys, limits, logged)
                .await
        };
        let resp = match Box::pin(forwarded).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                let r = e.response();
                e.count(&backend.stats);
                r
            }
        };
        abandoned.armed = false;
        let elapsed = started.elapsed();
        backend.stats.observe(elapsed);
        if let Some((method, path, version)) = line {
            let info = resp.extensions().get::<AccessInfo>();
            tracing::info!(
                target: "tether::access",
                client = %conn.peer.ip(),
                %method,
                path,
                version = ?version,
                backend = %backend.name(),
                endpoint = info.map_or("-", |i| &*i.endpoint),
                status = resp.status().as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                affinity = info.map_or("-", |i| i.outcome),
                session = info.map_or("-", |i| i.session.as_str()),
            );
        }
        resp
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

    /// Forwards a request that arrives as an `http::Request` (from an HTTP/2 client, or
    /// from the HTTP/1 codec for an h2c backend): to an HTTP/1 backend over the codec's
    /// raw connections ([`upstream_h1`]), to an h2c one with hyper's HTTP/2 client.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        mut req: Request<RequestBody>,
        conn: &Connection,
        backend: &Arc<Backend>,
        keys: Arc<KeyRing>,
        limits: BodyLimits,
        logged: bool,
    ) -> Result<Response<ProxyBody>> {
        let progress = req.body().progress();
        // A small body of known length is read whole before an upstream is chosen, so
        // a slow uploader never holds a pod's connection (`request_buffer`); it must
        // arrive within the response timeout, the bound an upload has anyway.
        let length = req.body().size_hint().exact();
        if length.is_some_and(|n| n > 0 && n <= limits.request_buffer) {
            let by = Instant::now() + backend.settings.response_timeout;
            req.body_mut().read_whole(by).await?;
        }

        let snapshot = backend.snapshot();
        let settings = &backend.settings;
        let now = backend.clock().now();
        let h2 = req.version() == Version::HTTP_2;
        let decision = self.decide(
            req.headers(),
            h2,
            conn,
            backend,
            &keys,
            None,
            &snapshot,
            now,
        );
        let mut attempts = decision.attempts(&snapshot);
        if attempts.get(0).is_none() {
            return Err(Error::NoEndpoint);
        }

        prepare_request(&mut req, conn);
        let session = decision.session.to_hex();
        req.headers_mut().insert(
            &X_TETHER_SESSION,
            HeaderValue::from_str(session.as_str()).map_err(|_| Error::NoEndpoint)?,
        );

        backend.retry_budget.deposit();
        let mut tried_pinned = false;
        let mut next = 0;
        while let Some(i) = attempts.get(next) {
            let n = next;
            next += 1;
            let endpoint = &snapshot.endpoints[i as usize];
            let placement = decision.placement(i, &snapshot);
            {
                let h = req.headers_mut();
                h.insert(
                    &X_TETHER_AFFINITY,
                    HeaderValue::from_static(placement.outcome.as_str()),
                );
                match placement
                    .previous
                    .and_then(|p| HeaderValue::from_str(p).ok())
                {
                    Some(p) => h.insert(&X_TETHER_PREVIOUS, p),
                    None => h.remove(&X_TETHER_PREVIOUS),
                };
            }
            // A reused keep-alive connection can be closed by the upstream just as the
            // request goes out. Once per endpoint, such a request is tried again on a
            // fresh connection: always when it was not written, and when it was, only if
            // it is idempotent and bodyless, so replaying it is safe.
            let mut tries = 0;
            let attempt = loop {
                tries += 1;
                fit_request(&mut req, settings.h2c);
                // Only an idempotent, bodyless request can be sent twice. hyper's h2c
                // client takes the request, so it needs a copy; tether's HTTP/1 client
                // only borrows it, and gives the request itself back to replay.
                let again = is_replayable(&req);
                let sent = if settings.h2c {
                    let copy = again.then(|| replay_copy(&req));
                    let mut c = match endpoint.pool.checkout(settings.connect_timeout).await {
                        Ok(c) => c,
                        Err(e) => {
                            self.connect_failed(endpoint, settings, &e);
                            tried_pinned |= Some(i) == decision.pinned();
                            break Err(req);
                        }
                    };
                    endpoint.health.mark_up();
                    let exchange = c.sender.try_send_request(req);
                    match tokio::time::timeout(settings.response_timeout, exchange).await {
                        Err(_) => Sent::TimedOut,
                        Ok(Ok(resp)) => Sent::Answer(
                            resp.map(|b| ProxyBody::Upstream(PooledBody::new(b))),
                            copy,
                        ),
                        Ok(Err(mut e)) => match e.take_message() {
                            Some(unsent) => Sent::Unsent(unsent, c.reused),
                            None => Sent::Failed {
                                error: Error::Upstream(e.into_error().into()),
                                stale: c.reused,
                                again: copy,
                            },
                        },
                    }
                } else {
                    // A replay goes on a new connection; anything else on a pooled
                    // one checked open first (the codec's rule).
                    let fresh = tries > 1;
                    let checkout = endpoint.pool.checkout_raw(settings.connect_timeout, fresh);
                    let (stream, reused) = match checkout.await {
                        Ok(c) => c,
                        Err(e) => {
                            self.connect_failed(endpoint, settings, &e);
                            tried_pinned |= Some(i) == decision.pinned();
                            break Err(req);
                        }
                    };
                    endpoint.health.mark_up();
                    let pool = endpoint.pool.clone();
                    let exchange = upstream_h1::send(stream, &mut req, pool);
                    match tokio::time::timeout(settings.response_timeout, exchange).await {
                        Err(_) => Sent::TimedOut,
                        Ok(Ok(resp)) => {
                            Sent::Answer(resp.map(ProxyBody::Raw), again.then_some(req))
                        }
                        Ok(Err(upstream_h1::SendError::Unsent)) => Sent::Unsent(req, reused),
                        Ok(Err(upstream_h1::SendError::Failed {
                            error,
                            nothing_back,
                        })) => Sent::Failed {
                            error: Error::Wire(error),
                            stale: reused && nothing_back,
                            again: again.then_some(req),
                        },
                    }
                };
                match sent {
                    // Still waiting for the client's body: the client is the slow one.
                    Sent::TimedOut if progress.waiting_on_client() => {
                        return Err(ClientFault::BodyTimeout.into())
                    }
                    Sent::TimedOut => return Err(self.timed_out(&snapshot, endpoint, settings)),
                    Sent::Answer(resp, replay) => {
                        let status = resp.status();
                        let retry_status =
                            self.response_seen(&snapshot, endpoint, settings, status);
                        let tried = Tried::Answered { retry_status };
                        let more = attempts.after(n);
                        let next = self.next_try(
                            tried,
                            replay.is_some(),
                            tries,
                            more,
                            &snapshot,
                            endpoint,
                            backend,
                        );
                        match (next, replay) {
                            (Next::Elsewhere, Some(again)) => {
                                tracing::debug!(endpoint = %endpoint.identity, %status, "retrying on the next endpoint");
                                tried_pinned |= Some(i) == decision.pinned();
                                break Err(again);
                            }
                            _ => break Ok(resp),
                        }
                    }
                    Sent::Unsent(unsent, reused) if reused && tries < 2 => req = unsent,
                    Sent::Unsent(unsent, _) => break Err(unsent),
                    Sent::Failed {
                        error,
                        stale,
                        again: replay,
                    } => {
                        // The client's body broke the exchange, which the upstream
                        // client reports as its own failure: the client's fault
                        // alone, and the endpoint's health is untouched.
                        if let Some(fault) = progress.fault() {
                            return Err(fault.into());
                        }
                        let next = self.next_try(
                            Tried::Failed { stale },
                            replay.is_some(),
                            tries,
                            attempts.after(n),
                            &snapshot,
                            endpoint,
                            backend,
                        );
                        match (next, replay) {
                            (Next::Replay, Some(again)) => {
                                tracing::debug!(error = %error, "stale upstream connection; replaying an idempotent request");
                                req = again;
                            }
                            (Next::Elsewhere, Some(again)) => {
                                tried_pinned |= Some(i) == decision.pinned();
                                tracing::debug!(endpoint = %endpoint.identity, error = %error, "retrying an idempotent request on the next endpoint");
                                break Err(again);
                            }
                            _ => return Err(error),
                        }
                    }
                }
            };
            let mut resp = match attempt {
                Ok(done) => done,
                Err(unsent) => {
                    req = unsent;
                    continue;
                }
            };
            // A 101 switches to nothing an HTTP/2 client knows (RFC 9110 §15.2.2; HTTP/2
            // has no Upgrade), and a head past the codec's limit is one it could not
            // relay: invalid responses, the upstream's fault.
            let invalid = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                Some(wire::Error::Status(101))
            } else if head_size(resp.headers()) > MAX_RESPONSE_HEAD {
                Some(wire::Error::HeadTooLarge)
            } else {
                None
            };
            if let Some(e) = invalid {
                self.upstream_fault(
                    &snapshot,
                    endpoint,
                    settings,
                    crate::stats::LastError::Reset,
                );
                return Err(Error::Wire(e));
            }
            // A small response of known length from an HTTP/1 upstream is read whole
            // and its connection goes back to the pool before the client is written
            // to, so a slow reader never holds a pod's connection (`response_buffer`).
            // (An h2c upstream multiplexes: a slow reader holds one stream, not it.)
            let length = resp.body().size_hint().exact();
            if matches!(resp.body(), ProxyBody::Raw(_))
                && length.is_some_and(|n| n > 0 && n <= limits.response_buffer)
            {
                let by = Instant::now() + settings.response_timeout;
                let read = http_body_util::BodyExt::collect(resp.body_mut());
                match tokio::time::timeout_at(by, read).await {
                    Err(_) => return Err(self.timed_out(&snapshot, endpoint, settings)),
                    Ok(Err(e)) => {
                        self.upstream_fault(
                            &snapshot,
                            endpoint,
                            settings,
                            crate::stats::LastError::Reset,
                        );
                        return Err(Error::Upstream(e));
                    }
                    Ok(Ok(body)) => *resp.body_mut() = ProxyBody::Full(Some(body.to_bytes())),
                }
            }

            session_placed(backend, &decision, &placement, i, &snapshot, tried_pinned);
            let (mut parts, body) = resp.into_parts();
            // The status line is tether's own: HTTP/1.1 whatever the upstream spoke
            // (RFC 9110 §2.5).
            parts.version = Version::HTTP_11;
            headers::strip_hop_by_hop(&mut parts.headers);
            if placement.set_cookie {
                let mut cookie = Vec::with_capacity(256);
                set_cookie_line(backend, &keys, &decision, i, &snapshot, &mut cookie);
                if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(cookie)) {
                    parts.headers.append(header::SET_COOKIE, v);
                }
            }
            if logged {
                parts.extensions.insert(AccessInfo {
                    endpoint: endpoint.identity.clone(),
                    outcome: placement.outcome.as_str(),
                    session,
                });
            }
            return Ok(Response::from_parts(parts, body));
        }
        Err(Error::Connect)
    }

    /// The one retry rule, for both request loops (the HTTP/1 codec's and
    /// [`Proxy::forward`]). After a try on `endpoint` that `tried` (failed with no
    /// usable response, or answered), given whether the request may be sent twice
    /// (`replayable`: idempotent, no body), how many tries this endpoint had and
    /// whether another endpoint is left (`more`), says what to do next, and counts
    /// what it decides:
    /// - a failure on a reused connection that sent nothing back (`stale`): the
    ///   upstream likely closed it while idle; a replayable request goes once more on a
    ///   fresh connection to the same endpoint, blaming nobody;
    /// - any other failure is the endpoint's ([`Proxy::upstream_fault`]); a replayable
    ///   request moves to the next endpoint within the retry budget;
    /// - an answer with a status the backend retries (`retry_on`) moves a replayable
    ///   request to the next endpoint within the budget (`response_seen` counted it).
    ///
    /// Connect failures (nothing sent) always move on, any method, and are counted by
    /// [`Proxy::connect_failed`]; a client's fault never comes here.
    #[allow(clippy::too_many_arguments)]
    fn next_try(
        &self,
        tried: Tried,
        replayable: bool,
        tries: u32,
        more: bool,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
        backend: &Backend,
    ) -> Next {
        let settings = &backend.settings;
        let retry = match tried {
            Tried::Failed { stale: true } if replayable && tries < 2 => return Next::Replay,
            Tried::Failed { .. } => {
                self.upstream_fault(snapshot, endpoint, settings, crate::stats::LastError::Reset);
                true
            }
            Tried::Answered { retry_status } => retry_status,
        };
        if retry && replayable && more && backend.retry_budget.try_spend() {
            backend.stats.retry();
            return Next::Elsewhere;
        }
        Next::Stop
    }

    /// Counts a failed connect and cools the endpoint off.
    fn connect_failed(
        &self,
        endpoint: &Endpoint,
        settings: &BackendSettings,
        e: &pool::ConnectError,
    ) {
        endpoint.stats.connect_error();
        let n = endpoint
            .health
            .mark_down(Instant::now(), settings.down_cooloff);
        tracing::warn!(
            backend = %settings.name,
            endpoint = %endpoint.identity,
            error = %e,
            consecutive = n,
            "upstream connect failed; endpoint cooling off"
        );
    }

    /// Counts a response timeout against the endpoint (an upstream fault: the request
    /// was all sent) and returns the error to answer with.
    fn timed_out(
        &self,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
        settings: &BackendSettings,
    ) -> Error {
        self.upstream_fault(
            snapshot,
            endpoint,
            settings,
            crate::stats::LastError::Timeout,
        );
        Error::Timeout
    }

    /// Counts an upstream response head and feeds passive health; returns whether its
    /// status is one the backend retries on another endpoint (`retry_on`).
    fn response_seen(
        &self,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
        settings: &BackendSettings,
        status: StatusCode,
    ) -> bool {
        endpoint.stats.response(status);
        if status.is_server_error() {
            self.upstream_fault(
                snapshot,
                endpoint,
                settings,
                crate::stats::LastError::ServerError,
            );
        } else {
            endpoint.health.exchange_succeeded();
        }
        (status == StatusCode::BAD_GATEWAY && settings.retry_on.bad_gateway)
            || (status == StatusCode::SERVICE_UNAVAILABLE && settings.retry_on.unavailable)
    }

    /// Holds an upstream fault (`what`: a 5xx, a reset or invalid response, a response
    /// timeout) against the endpoint: the one place blame reaches passive health. Only
    /// upstream faults come here; a client's never do. Ejects the endpoint after
    /// `outlier_failures` in a row, unless half of the backend is ejected already.
    fn upstream_fault(
        &self,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
        settings: &BackendSettings,
        what: crate::stats::LastError,
    ) {
        endpoint.stats.error(what);
        let n = endpoint.health.exchange_failed();
        if n < settings.outlier_failures {
            return;
        }
        let now = Instant::now();
        let ejected = snapshot
            .endpoints
            .iter()
            .filter(|e| e.health.is_down(now))
            .count();
        if (ejected + 1) * 2 > snapshot.endpoints.len() {
            return;
        }
        let d = endpoint.health.eject(now, settings.outlier_base);
        tracing::warn!(backend = %settings.name, endpoint = %endpoint.identity, consecutive = n, ejected_for = ?d, "endpoint ejected as an outlier");
    }

    /// The affinity decision for a request, by the backend's affinity key; `h2` says
    /// whether the request came over HTTP/2 (its cookieless requests share a session).
    #[allow(clippy::too_many_arguments)]
    fn decide<H: Fields + ?Sized>(
        &self,
        headers: &H,
        h2: bool,
        conn: &Connection,
        backend: &Backend,
        keys: &Arc<KeyRing>,
        memo: Option<&mut affinity::cookie::Memo>,
        snapshot: &Snapshot,
        now: Now,
    ) -> Decision {
        let affinity = &backend.settings.affinity;
        match &affinity.key {
            AffinityKey::Header(name) => {
                if let Some(v) = headers.first(name).filter(|v| !v.is_empty()) {
                    return affinity::keyed(snapshot, v, now);
                }
            }
            AffinityKey::ClientIp => {
                let ip = client_ip(headers, conn.peer.ip(), &affinity.trusted_proxies);
                let bytes = match ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                return affinity::keyed(snapshot, &bytes, now);
            }
            AffinityKey::Cookie => {}
        }
        let values = affinity::cookie_values(headers, &affinity.cookie.name);
        let mut d = match memo {
            Some(memo) => affinity::decide_memo(keys, memo, snapshot, values, affinity, now),
            // An HTTP/2 connection's streams share one memo.
            None if h2 => {
                affinity::decide_shared(keys, &conn.memo, snapshot, values, affinity, now)
            }
            None => affinity::decide(keys, snapshot, values, affinity, now),
        };
        if d.is_fresh() && h2 {
            let mut first = false;
            let shared = *conn.shared_session.get_or_init(|| {
                first = true;
                d.session
            });
            d.join(snapshot, shared, first);
        }
        d
    }
}

/// How a try on an endpoint ended, for [`Proxy::next_try`].
#[derive(Debug, Clone, Copy)]
enum Tried {
    /// No usable response; `stale`: on a reused connection that sent nothing back.
    Failed { stale: bool },
    /// A response head; `retry_status`: one the backend retries elsewhere.
    Answered { retry_status: bool },
}

/// What [`Proxy::next_try`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Send it again on a fresh connection to the same endpoint.
    Replay,
    /// Send it to the next endpoint.
    Elsewhere,
    /// No more tries: answer with what this one came to.
    Stop,
}

/// What one try on an endpoint came to. Unboxed though large: it lives on the stack
/// for one match, and boxing would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Sent {
    /// A response head, and the request again if it may be replayed.
    Answer(Response<ProxyBody>, Option<Request<RequestBody>>),
    /// Nothing was written (the request is given back); the flag says whether the
    /// connection was a reused one.
    Unsent(Request<RequestBody>, bool),
    /// The exchange failed after the request (or part of it) went out; `stale`: on a
    /// reused connection with nothing back, so the upstream may have closed it idle;
    /// `again`: the request, if it may be replayed.
    Failed {
        error: Error,
        stale: bool,
        again: Option<Request<RequestBody>>,
    },
    /// No response head within the response timeout.
    TimedOut,
}

/// About how many bytes a head with these fields takes on the wire (each field's
/// name, value, `: ` and CRLF).
fn head_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// Counts a request whose handling was dropped before it finished: the HTTP/2 stream
/// was reset, by the client or by the h2 library for a protocol error such as DATA
/// short of content-length, and hyper drops the request's future with it. Either way
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

/// Records where a session was served: commits the placement (session counts), counts
/// the outcome, and logs any placement that was not sticky.
fn session_placed(
    backend: &Backend,
    decision: &Decision,
    placement: &affinity::Placement<'_>,
    i: u32,
    snapshot: &Snapshot,
    tried_pinned: bool,
) {
    decision.commit(i, snapshot);
    count_affinity(&backend.stats, decision, placement, snapshot, tried_pinned);
    if placement.outcome != Outcome::Sticky {
        tracing::debug!(
            backend = %backend.settings.name,
            endpoint = %snapshot.endpoints[i as usize].identity,
            outcome = placement.outcome.as_str(),
            previous = placement.previous,
            "session placed"
        );
    }
}

/// Counts the affinity outcome of a served request, with its reason.
fn count_affinity(
    stats: &BackendStats,
    d: &Decision,
    placement: &affinity::Placement<'_>,
    snapshot: &Snapshot,
    tried_pinned: bool,
) {
    use affinity::{Invalid, Prior};
    let event = match (placement.outcome, &d.prior) {
        (Outcome::New, Prior::Fresh { invalid, .. }) => {
            if let Some(r) = invalid {
                stats.affinity(match r {
                    Invalid::Malformed => AffinityEvent::InvalidMalformed,
                    Invalid::UnknownKey => AffinityEvent::InvalidUnknownKey,
                    Invalid::BadSignature => AffinityEvent::InvalidBadSignature,
                    Invalid::Expired => AffinityEvent::InvalidExpired,
                });
            }
            AffinityEvent::New
        }
        (Outcome::New, _) => AffinityEvent::New,
        (Outcome::Sticky, Prior::Pinned { key_index, .. }) if *key_index != 0 => {
            stats.affinity(AffinityEvent::KeyRotated);
            AffinityEvent::Sticky
        }
        (Outcome::Sticky, _) => AffinityEvent::Sticky,
        (Outcome::Rebalanced, _) => AffinityEvent::Rebalanced,
        (Outcome::Failover, Prior::Departed { .. }) => AffinityEvent::FailoverEndpointGone,
        (Outcome::Failover, _) if tried_pinned => AffinityEvent::FailoverConnectFailed,
        (Outcome::Failover, Prior::Pinned { endpoint, .. })
            if snapshot.endpoints[*endpoint as usize].state == EndpointState::Draining =>
        {
            AffinityEvent::FailoverDrained
        }
        (Outcome::Failover, _) => AffinityEvent::FailoverEndpointDown,
    };
    stats.affinity(event);
}

/// Appends the `Set-Cookie` value that pins `decision`'s session to endpoint `actual`
/// (name, signed value, the backend's attributes): the same on both paths.
fn set_cookie_line(
    backend: &Backend,
    keys: &KeyRing,
    decision: &Decision,
    actual: u32,
    snapshot: &Snapshot,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(backend.settings.affinity.cookie.name.as_bytes());
    out.push(b'=');
    decision.write_cookie_value(keys, actual, snapshot, out);
    out.extend_from_slice(backend.cookie_attributes().as_bytes());
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

/// Whether a request is safe to send twice: an idempotent method and no body.
fn is_replayable(req: &Request<RequestBody>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) && req.body().is_end_stream()
}

/// A copy of a replayable request (its body is empty), for a client that takes the
/// original.
fn replay_copy(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Shapes the request for the connection it goes out on: HTTP/1.1 with an origin-form
/// target, or HTTP/2 with the authority in the URI (hyper's h2 client sends `:authority`
/// and `:scheme` from it; a `Host` header has no place in HTTP/2).
fn fit_request(req: &mut Request<RequestBody>, h2: bool) {
    if h2 && req.version() != Version::HTTP_2 {
        let host = req.headers_mut().remove(header::HOST);
        let authority = host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost");
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = format!("http://{authority}{pq}").parse::<Uri>() {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_2;
    } else if !h2 && req.version() != Version::HTTP_11 {
        if !req.headers().contains_key(header::HOST) {
            if let Some(v) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_11;
    }
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

/// Rewrites a client request into an upstream HTTP/1.1 request in place. Its `Host` was
/// settled by [`settle_host`]; a request without one (HTTP/1.0, HTTP/2 without
/// `:authority`) goes upstream with an empty one, as RFC 9110 §7.2 asks of a target
/// with no authority.
fn prepare_request(req: &mut Request<RequestBody>, conn: &Connection) {
    // Origin-form for the upstream; absolute-form is for proxies, not origins.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = Version::HTTP_11;
    let host = req.headers().get(header::HOST).cloned();
    // `TE: trailers` is the one TE value worth keeping: gRPC requires it end to end.
    let trailers = req
        .headers()
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let h = req.headers_mut();
    headers::strip_hop_by_hop(h);
    if trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // Even when `Connection` named it: an HTTP/1.1 request always carries its Host.
    if !h.contains_key(header::HOST) {
        h.insert(
            header::HOST,
            host.clone().unwrap_or(HeaderValue::from_static("")),
        );
    }
    headers::strip_tether_headers(h);
    headers::set_forwarded(h, &conn.peer_value, conn.secure, host.as_ref());
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
