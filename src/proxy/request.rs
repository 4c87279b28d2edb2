//! An `http::Request` on its way to a pod: the exchange's [`Upstream`] for requests
//! from HTTP/2 clients, and from HTTP/1 clients to h2c pods. To an HTTP/1 pod it goes
//! through tether's own HTTP/1 client ([`upstream_h1`]) on the pooled connections the
//! codec relays over, to an h2c pod through hyper's HTTP/2 client. It shapes the request
//! for the pod (origin-form, hop-by-hop fields gone, forwarding fields and the session
//! set, RFC 9110 §7.6) and the answer for the client (tether's own status line, no
//! hop-by-hop fields, the `Set-Cookie`). An HTTP/1 pod's interim (1xx) responses are
//! held for an HTTP/2 client's stream ([`Interims`]); hyper's HTTP/2 client, to an h2c
//! pod, does not surface them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::time::Instant;

use super::exchange::{Arrival, Changes, Cut, LogInfo, Route, Try, Upstream};
use super::{ClientFault, Connection, Error, Proxy, MAX_RESPONSE_HEAD};
use crate::affinity::{cookie::HexId, Outcome};
use crate::backend::Endpoint;
use crate::config::BackendSettings;
use crate::http::headers::{self, X_TETHER_AFFINITY, X_TETHER_PREVIOUS, X_TETHER_SESSION};
use crate::http::wire;
use crate::upstream::body::{BodyProgress, PooledBody, ProxyBody, RequestBody};
use crate::upstream::h1::{self as upstream_h1, Interims};
use crate::upstream::pool::{self, ConnectError, Pool};
use tokio::net::TcpStream;

/// A request as an `http::Request`, with what its tries need to know of it.
pub struct Forwarded<'i> {
    req: Request<RequestBody>,
    /// What tether adds to it.
    stamps: Stamps,
    /// Idempotent and bodyless: it may be sent twice.
    replayable: bool,
    /// How far the client got with its body, to tell its faults from the pod's.
    progress: BodyProgress,
    /// `response_buffer`.
    response_buffer: u64,
    /// Where a pod's interim responses go, for a client that can be sent them (an
    /// HTTP/2 client's stream); every try's go there, as on the HTTP/1 codec.
    interims: Option<&'i Interims>,
}

impl<'i> Forwarded<'i> {
    /// `req` to be forwarded, reading response bodies up to `response_buffer` whole,
    /// its pod's interim responses held in `interims` if given.
    pub fn new(
        req: Request<RequestBody>,
        response_buffer: u64,
        interims: Option<&'i Interims>,
    ) -> Self {
        Forwarded {
            // Room for every stamp at once: the forwarding fields, the session and the
            // placement, so none is a reallocation.
            stamps: Stamps {
                fields: Vec::with_capacity(8),
                begun: 0,
            },
            replayable: is_replayable(&req),
            progress: req.body().progress(),
            req,
            response_buffer,
            interims,
        }
    }

    /// To an h2c pod: hyper's HTTP/2 client takes the request, so a replayable one is
    /// copied first (its body is empty), and one it did not send comes back.
    async fn send_h2c(
        &mut self,
        mut c: pool::Checkout,
        settings: &BackendSettings,
    ) -> Try<Response<ProxyBody>> {
        let copy = match self.replayable {
            true => replay_copy(&self.req),
            false => Request::new(RequestBody::Empty),
        };
        let mut req = std::mem::replace(&mut self.req, copy);
        self.stamps.apply(req.headers_mut());
        let exchange = c.sender.try_send_request(req);
        // The handle goes before the wait: were the connection to die with the request
        // still queued, the request comes back unsent once the pool's and every try's
        // handles are gone (see `Pool::connect_h2`), so this one must not be kept.
        let reused = c.reused;
        drop(c);
        match tokio::time::timeout(settings.response_timeout, exchange).await {
            Err(_) => Try::TimedOut,
            Ok(Ok(resp)) => Try::Answer {
                status: resp.status(),
                answer: resp.map(|b| ProxyBody::Upstream(PooledBody::new(b))),
            },
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) => {
                    self.req = unsent;
                    Try::Unsent { reused }
                }
                None => Try::Failed {
                    error: Error::Upstream(e.into_error().into()),
                    stale: reused,
                },
            },
        }
    }

    /// To an HTTP/1 pod, through tether's HTTP/1 client, which borrows the request.
    async fn send_h1(
        &mut self,
        (stream, reused): (TcpStream, bool),
        pool: Arc<Pool>,
        settings: &BackendSettings,
    ) -> Try<Response<ProxyBody>> {
        let exchange = upstream_h1::send(
            stream,
            &mut self.req,
            &self.stamps.fields,
            pool,
            self.interims,
        );
        match tokio::time::timeout(settings.response_timeout, exchange).await {
            Err(_) => Try::TimedOut,
            Ok(Ok(resp)) => Try::Answer {
                status: resp.status(),
                answer: resp.map(ProxyBody::Raw),
            },
            Ok(Err(upstream_h1::SendError::Unsent)) => Try::Unsent { reused },
            Ok(Err(upstream_h1::SendError::Failed {
                error,
                nothing_back,
            })) => Try::Failed {
                error: Error::Wire(error),
                stale: reused && nothing_back,
            },
        }
    }
}

/// The fields tether adds to a request: the forwarding fields and the session (from
/// [`Upstream::begin`]), then the placement (from [`Upstream::place`], replaced on each
/// candidate). Kept beside the request rather than in its map, so a try costs no map
/// inserts: tether's HTTP/1 client writes them after the request's own fields, which
/// hygiene has cleared of every spelling of them; an h2c pod's request gets them put
/// into its map ([`Stamps::apply`]).
#[derive(Debug, Default)]
pub struct Stamps {
    fields: Vec<(http::HeaderName, HeaderValue)>,
    /// How many of `fields` came from `begin`.
    begun: usize,
}

impl Stamps {
    /// Puts the stamps into `fields`, replacing any of the same name, and removes a
    /// previous endpoint that this placement does not name (a request an h2c pod did
    /// not take comes back with the last try's).
    fn apply(&self, fields: &mut http::HeaderMap) {
        for (name, value) in &self.fields {
            fields.insert(name, value.clone());
        }
        if !self.fields.iter().any(|(n, _)| *n == X_TETHER_PREVIOUS) {
            fields.remove(&X_TETHER_PREVIOUS);
        }
    }
}

/// A connection a [`Forwarded`] request goes out on.
pub enum Connected {
    /// An h2c endpoint's shared connection.
    H2c(pool::Checkout),
    /// A raw HTTP/1 connection (and whether it came from the pool), with its pool.
    H1((TcpStream, bool), Arc<Pool>),
}

impl Upstream for Forwarded<'_> {
    type Fields = http::HeaderMap;
    type Answer = Response<ProxyBody>;
    type Connection = Connected;

    fn fields(&self) -> &http::HeaderMap {
        self.req.headers()
    }

    fn replayable(&self) -> bool {
        self.replayable
    }

    fn begin(&mut self, conn: &Connection, session: &HexId, changes: Changes<'_>) {
        // Hygiene first (hop-by-hop fields, including those the client's `Connection`
        // names, go), then the route's edit, so a client cannot remove a field the route
        // sets; the edit cannot name tether's own fields (validation refuses them), which
        // are the stamps, written after the request's own fields, and so win.
        self.stamps.fields.clear();
        prepare_request(&mut self.req, conn, &mut self.stamps.fields);
        if let Some(e) = changes.edit {
            e.apply(self.req.headers_mut());
        }
        // After `prepare_request`, so `X-Forwarded-Host` keeps the client's host.
        if let Some(h) = changes.host.and_then(|h| HeaderValue::from_str(h).ok()) {
            self.req.headers_mut().insert(header::HOST, h);
        }
        if let Some(t) = changes.target.and_then(|t| t.parse::<Uri>().ok()) {
            *self.req.uri_mut() = t;
        }
        if let Ok(v) = HeaderValue::from_bytes(session.as_bytes()) {
            self.stamps.fields.push((X_TETHER_SESSION.clone(), v));
        }
        self.stamps.begun = self.stamps.fields.len();
    }

    fn place(&mut self, outcome: Outcome, previous: Option<&str>) {
        let stamps = &mut self.stamps;
        stamps.fields.truncate(stamps.begun);
        let outcome = HeaderValue::from_static(outcome.as_str());
        stamps.fields.push((X_TETHER_AFFINITY.clone(), outcome));
        if let Some(p) = previous.and_then(|p| HeaderValue::from_str(p).ok()) {
            stamps.fields.push((X_TETHER_PREVIOUS.clone(), p));
        }
    }

    async fn connect(
        &mut self,
        endpoint: &Endpoint,
        settings: &BackendSettings,
        fresh: bool,
    ) -> Result<Connected, ConnectError> {
        let pool = &endpoint.pool;
        Ok(if settings.h2c {
            Connected::H2c(pool.checkout(settings.connect_timeout).await?)
        } else {
            let raw = pool.checkout_raw(settings.connect_timeout, fresh).await?;
            Connected::H1(raw, pool.clone())
        })
    }

    async fn send(
        &mut self,
        connection: Connected,
        settings: &BackendSettings,
    ) -> Try<Response<ProxyBody>> {
        fit_request(&mut self.req, settings.h2c);
        let tried = match connection {
            Connected::H2c(c) => self.send_h2c(c, settings).await,
            Connected::H1(raw, pool) => self.send_h1(raw, pool, settings).await,
        };
        match tried {
            // Still waiting for the client's body: the client is the slow one.
            Try::TimedOut if self.progress.waiting_on_client() => {
                Try::Client(ClientFault::BodyTimeout.into())
            }
            // The client's body broke the exchange, which the upstream client reports
            // as its own failure: the client's fault alone.
            Try::Failed { error, stale } => match self.progress.fault() {
                Some(fault) => Try::Client(fault.into()),
                None => Try::Failed { error, stale },
            },
            // A 101 switches to nothing an HTTP/2 client knows (RFC 9110 §15.2.2; HTTP/2
            // has no Upgrade), and a head past the codec's limit is one it could not
            // relay: invalid responses, the upstream's fault.
            Try::Answer { status, .. } if status == StatusCode::SWITCHING_PROTOCOLS => {
                Try::Failed {
                    error: Error::Wire(wire::Error::Status(101)),
                    stale: false,
                }
            }
            Try::Answer { answer, .. } if head_size(answer.headers()) > MAX_RESPONSE_HEAD => {
                Try::Failed {
                    error: Error::Wire(wire::Error::HeadTooLarge),
                    stale: false,
                }
            }
            tried => tried,
        }
    }

    /// A small response of known length is read whole before its head is relayed: from
    /// an HTTP/1 pod, so its connection goes back to the pool before the client is
    /// written to and a slow reader never holds a pod's connection (`response_buffer`);
    /// from an h2c pod (which multiplexes: a slow reader would hold one stream, not its
    /// connection), so that a pod dying between its head and its body is a failure the
    /// exchange sees before it commits to the answer, and retries if it may, rather
    /// than a head the client gets followed by a reset stream (for a request that may
    /// be sent again: to any other, a cut body is a failure either way).
    async fn settle(
        &mut self,
        resp: &mut Response<ProxyBody>,
        settings: &BackendSettings,
    ) -> Result<(), Cut> {
        // A chunked body already broken in the bytes that came with its head: an
        // invalid answer, refused before its head goes to the client (as the codec does).
        if let ProxyBody::Raw(b) = resp.body() {
            if b.broken_from_the_start() {
                return Err(Cut::Failed(Error::Wire(wire::Error::Chunked)));
            }
        }
        let length = resp.body().size_hint().exact();
        let whole = match resp.body() {
            ProxyBody::Raw(_) => true,
            // Only what a retry could save, and only a body that is there: not the
            // answer to a HEAD, nor a 204 or 304, whose length describes another
            // (RFC 9110 §8.6).
            ProxyBody::Upstream(_) => {
                let status = resp.status();
                self.replayable
                    && self.req.method() != Method::HEAD
                    && status != StatusCode::NO_CONTENT
                    && status != StatusCode::NOT_MODIFIED
            }
            ProxyBody::Full(_) | ProxyBody::Buffered(..) => false,
        };
        if !whole || !length.is_some_and(|n| n > 0 && n <= self.response_buffer) {
            return Ok(());
        }
        let by = Instant::now() + settings.response_timeout;
        let read = http_body_util::BodyExt::collect(resp.body_mut());
        match tokio::time::timeout_at(by, read).await {
            Err(_) => Err(Cut::TimedOut),
            Ok(Err(e)) => Err(Cut::Failed(Error::Upstream(e))),
            Ok(Ok(body)) => {
                // An h2c body may end with trailers (RFC 9113 §8.1), which go on.
                let trailers = body.trailers().cloned();
                *resp.body_mut() = match trailers {
                    None => ProxyBody::Full(Some(body.to_bytes())),
                    Some(t) => ProxyBody::Buffered(Some(body.to_bytes()), Some(t)),
                };
                Ok(())
            }
        }
    }
}

impl Proxy {
    /// Forwards `req` along `route` (the exchange, with [`Forwarded`]) and shapes the
    /// answer for the client: HTTP/1.1 on tether's status line whatever the pod spoke
    /// (RFC 9110 §2.5), no hop-by-hop fields, the session's `Set-Cookie`. With it, the
    /// time to its head and what the access log says. The pod's interim responses go
    /// to `interims`, for a client that can be sent them.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward(
        &self,
        req: Request<RequestBody>,
        conn: &Connection,
        route: &Route,
        arrival: Arrival<'_>,
        started: Instant,
        response_buffer: u64,
        interims: Option<&Interims>,
    ) -> Result<(Response<ProxyBody>, Duration, Option<LogInfo>), Error> {
        let mut up = Forwarded::new(req, response_buffer, interims);
        let mut cookie = Vec::new();
        let served = self
            .exchange(&mut up, conn, route, arrival, started, &mut cookie)
            .await?;
        let (mut parts, body) = served.answer.into_parts();
        parts.version = Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers);
        // The route's edit before tether's `Set-Cookie` (which it cannot name).
        if let Some(e) = route.response_edit() {
            e.apply(&mut parts.headers);
        }
        if served.set_cookie {
            if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(cookie)) {
                parts.headers.append(header::SET_COOKIE, v);
            }
        }
        let resp = Response::from_parts(parts, body);
        Ok((resp, served.elapsed, served.log))
    }
}

/// About how many bytes a head with these fields takes on the wire (each field's
/// name, value, `: ` and CRLF).
fn head_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
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
        origin_form(req);
        *req.version_mut() = Version::HTTP_11;
    }
}

/// Makes the target origin-form (RFC 9112 §3.2.1): its path and query only.
fn origin_form<B>(req: &mut Request<B>) {
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if let Ok(uri) = pq.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// Rewrites a client request into an upstream HTTP/1.1 request in place, and pushes
/// onto `stamps` the forwarding fields it is to carry (see [`Stamps`]). Its `Host` was
/// settled by `settle_host`; a request without one (HTTP/1.0, HTTP/2 without
/// `:authority`) goes upstream with an empty one, as RFC 9110 §7.2 asks of a target
/// with no authority. The target stays as it came: tether's HTTP/1 client writes its
/// origin form (RFC 9112 §3.2.1), and the h2c client its authority and path.
pub(super) fn prepare_request(
    req: &mut Request<RequestBody>,
    conn: &Connection,
    stamps: &mut Vec<(http::HeaderName, HeaderValue)>,
) {
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
    headers::forwarded(h, &conn.peer_value, conn.secure, host.as_ref(), stamps);
}
