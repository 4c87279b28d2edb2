//! The proxy service: route, decide the session, forward, answer.
//!
//! Per request: one `ArcSwap` load for the routing state, one for the backend snapshot,
//! a cookie verify, a table lookup, then the upstream exchange. Connect failures (nothing
//! sent yet) are retried on the next distinct endpoint in the session's ring order and
//! mark the endpoint down; failures after the request was sent are answered with 502,
//! timeouts with 504, and the cookie always names the endpoint that actually answered.

pub mod body;
pub mod headers;
pub mod pool;
pub mod route;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::affinity::{self, KeyRing, Outcome};
use crate::backend::Backend;
use crate::config::Config;
use body::{PooledBody, ProxyBody, RequestBody};
use headers::{X_TETHER_AFFINITY, X_TETHER_PREVIOUS, X_TETHER_SESSION};
use http::Method;
use http_body::Body as _;
use route::RouteTable;

/// Why a request could not be proxied; each maps to one status deliberately.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No route matches host and path.
    #[error("no route")]
    NoRoute,
    /// The backend has no endpoint that can take the request.
    #[error("no endpoint available")]
    NoEndpoint,
    /// Every connection attempt failed before the request was sent.
    #[error("upstream connect failed")]
    Connect,
    /// The upstream failed after the request was sent.
    #[error("upstream error")]
    Upstream(#[source] hyper::Error),
    /// The upstream did not answer within the response timeout.
    #[error("upstream timeout")]
    Timeout,
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoRoute => StatusCode::NOT_FOUND,
            Error::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Error::Connect | Error::Upstream(_) => StatusCode::BAD_GATEWAY,
            Error::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn response(&self) -> Response<ProxyBody> {
        let mut r = Response::new(ProxyBody::text(format!("{self}\n")));
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
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
        }
    }
}

/// The proxy: shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    state: ArcSwap<State>,
    /// Set when shutdown begins, so readiness turns false at once.
    shutting_down: AtomicBool,
}

impl Proxy {
    /// A proxy over `state`.
    pub fn new(state: State) -> Self {
        Proxy {
            state: ArcSwap::from_pointee(state),
            shutting_down: AtomicBool::new(false),
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

    /// Whether the proxy can take traffic: not shutting down, and every backend has its
    /// first complete endpoint list and an endpoint for new sessions.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed)
            && self.state.load().backends.iter().all(|b| {
                let s = b.snapshot();
                s.is_synced() && s.has_eligible()
            })
    }

    /// Handles one request from `peer`. Never fails: errors become 404/502/503/504.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        match self.forward(req, peer).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                e.response()
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>> {
        let mut req = req.map(RequestBody::Client);
        let (backend, keys) = {
            let state = self.state.load();
            let host = req.uri().host().or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            });
            let i = state
                .routes
                .find(host, req.uri().path())
                .ok_or(Error::NoRoute)?;
            (state.backends[i].clone(), state.keys.clone())
        };
        let snapshot = backend.snapshot();
        let settings = &backend.settings;
        let now = backend.clock().now();
        let decision = affinity::decide(
            &keys,
            &snapshot,
            affinity::cookie_values(req.headers(), &settings.affinity.cookie.name),
            &settings.affinity,
            now,
        );
        let candidates = decision.candidates(&snapshot);
        if candidates.is_empty() {
            return Err(Error::NoEndpoint);
        }

        prepare_request(&mut req, peer);
        let session = decision.session.to_hex();
        req.headers_mut().insert(
            &X_TETHER_SESSION,
            HeaderValue::from_str(session.as_str()).map_err(|_| Error::NoEndpoint)?,
        );

        for &i in candidates.as_slice() {
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
                let mut conn = match endpoint.pool.checkout(settings.connect_timeout).await {
                    Ok(c) => c,
                    Err(e) => {
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
                        break Err(req);
                    }
                };
                endpoint.health.mark_up();
                let replay = (conn.reused && tries < 2)
                    .then(|| replayable(&req))
                    .flatten();
                let exchange = conn.sender.try_send_request(req);
                match tokio::time::timeout(settings.response_timeout, exchange).await {
                    Err(_) => return Err(Error::Timeout),
                    Ok(Ok(resp)) => break Ok((resp, conn.sender)),
                    Ok(Err(mut e)) => match e.take_message() {
                        Some(unsent) if conn.reused && tries < 2 => req = unsent,
                        Some(unsent) => break Err(unsent),
                        None => match replay {
                            Some(again) => {
                                tracing::debug!(error = %e.error(), "stale upstream connection; replaying an idempotent request");
                                req = again;
                            }
                            None => return Err(Error::Upstream(e.into_error())),
                        },
                    },
                }
            };
            let (resp, sender) = match attempt {
                Ok(done) => done,
                Err(unsent) => {
                    req = unsent;
                    continue;
                }
            };

            decision.commit(i, &snapshot);
            if placement.outcome != Outcome::Sticky {
                tracing::debug!(
                    backend = %settings.name,
                    endpoint = %endpoint.identity,
                    outcome = placement.outcome.as_str(),
                    previous = placement.previous,
                    "session placed"
                );
            }
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            if placement.set_cookie {
                let value = decision.cookie_value(&keys, i, &snapshot);
                let cookie = format!(
                    "{}={}{}",
                    settings.affinity.cookie.name,
                    value,
                    backend.cookie_attributes()
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    parts.headers.append(header::SET_COOKIE, v);
                }
            }
            let body = PooledBody::new(body, sender, endpoint.pool.clone());
            return Ok(Response::from_parts(parts, ProxyBody::Upstream(body)));
        }
        Err(Error::Connect)
    }
}

/// A copy of a request that is safe to send twice: idempotent method, no body.
fn replayable(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    if !idempotent || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Rewrites a client request into an upstream HTTP/1.1 request in place.
fn prepare_request(req: &mut Request<RequestBody>, peer: SocketAddr) {
    if !req.headers().contains_key(header::HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, v);
        }
    }
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
    let h = req.headers_mut();
    headers::strip_hop_by_hop(h);
    headers::strip_tether_headers(h);
    headers::set_forwarded(h, peer.ip(), host.as_ref());
}
