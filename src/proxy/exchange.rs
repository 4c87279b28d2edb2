//! The one exchange: what happens to a request between its route and its answer,
//! written once for every codec and protocol. It owns the affinity decision, the
//! candidate endpoints and their tries, the one retry and replay rule
//! ([`Proxy::next_try`]), health feedback with blame, placement and its commit, the
//! `Set-Cookie` value, the duration and failure metrics, and what the access log says.
//!
//! A codec drives it through [`Upstream`], the narrow view of one request on its way
//! to a pod: the fields the affinity decision reads, how to stamp the session and the
//! placement on the request, a connection to an endpoint, and one try on it that
//! reports what came of it ([`Try`]) and whose fault it was. Two implement it: the
//! HTTP/1 codec's byte relay (`native::Relay`, an HTTP/1 client to an HTTP/1 pod), and
//! [`Forwarded`] (an `http::Request`: from an HTTP/2 client to any pod, or from an
//! HTTP/1 client to an h2c pod); the test simulator is a third. What an [`Upstream`]
//! does is I/O; what to do about its outcome is decided here. The codecs write what
//! the exchange decided: the answer, or the status of its [`Error`], and the access
//! log line ([`LogLine::write`]) from the [`LogInfo`] it hands back.
//!
//! [`Forwarded`]: super::request::Forwarded

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::route::{Asked, Hit, Local};
use super::{client_ip, Connection, Error, Proxy};
use crate::affinity::{self, cookie::HexId, cookie::Memo, Decision, KeyRing, Outcome, SessionId};
use crate::backend::{Backend, Endpoint, EndpointState, Snapshot};
use crate::clock::Now;
use crate::config::{AffinityKey, BackendSettings, HeaderEdit, RouteFilters};
use crate::http::headers::Fields;
use crate::stats::{AffinityEvent, BackendStats, LastError};
use crate::upstream::pool::ConnectError;

/// One request on its way to a pod, as a codec carries it: the exchange's only view of
/// the request and of the connection it goes out on.
// `async fn`: every implementation's futures are `Send` where they are spawned, and
// the exchange is only ever instantiated with concrete ones.
#[allow(async_fn_in_trait)]
pub trait Upstream {
    /// The request's header fields, as the affinity decision reads them.
    type Fields: Fields + ?Sized;
    /// A response head from a pod, with what it takes to relay its body.
    type Answer;
    /// A connection a try goes out on.
    type Connection;

    /// The request's fields.
    fn fields(&self) -> &Self::Fields;

    /// Whether the request may be sent twice: an idempotent method and no body.
    fn replayable(&self) -> bool;

    /// Stamps what every try carries: what the route changes (`changes`, applied
    /// first, so what tether adds after it wins), the forwarding fields and the
    /// session id (hex).
    fn begin(&mut self, conn: &Connection, session: &HexId, changes: Changes<'_>);

    /// Stamps what a try on one candidate carries: the affinity outcome and the
    /// endpoint a session came from.
    fn place(&mut self, outcome: Outcome, previous: Option<&str>);

    /// A connection to `endpoint` for one try, within the connect timeout: from the
    /// pool, checked open, or with `fresh` a new one (an h2c endpoint's one shared
    /// connection is always the pool's).
    async fn connect(
        &mut self,
        endpoint: &Endpoint,
        settings: &BackendSettings,
        fresh: bool,
    ) -> Result<Self::Connection, ConnectError>;

    /// One try on a connection: the request, and the response head, within the
    /// response timeout.
    async fn send(
        &mut self,
        connection: Self::Connection,
        settings: &BackendSettings,
    ) -> Try<Self::Answer>;

    /// Reads a small response body whole (`response_buffer`) so its connection goes
    /// back to the pool before the client is written to; a no-op for others.
    async fn settle(
        &mut self,
        answer: &mut Self::Answer,
        settings: &BackendSettings,
    ) -> Result<(), Cut>;
}

/// What one try on a connection came to, with whose fault a failure was.
#[derive(Debug)]
pub enum Try<A> {
    /// Nothing was written on the connection; `reused`: it came from the pool.
    Unsent {
        /// The connection was a pooled one.
        reused: bool,
    },
    /// A response head, valid for the client that asked.
    Answer {
        /// Its status.
        status: StatusCode,
        /// The head and what relays its body.
        answer: A,
    },
    /// The exchange broke after the request (or part of it) went out, or the answer
    /// was invalid (the upstream's fault); `stale`: on a reused connection with
    /// nothing back, so the upstream may have closed it while idle.
    Failed {
        /// What to answer with if nothing else is tried.
        error: Error,
        /// The connection was likely closed while idle.
        stale: bool,
    },
    /// No response head within the response timeout, the request all sent.
    TimedOut,
    /// The client's fault (its body malformed, cut, too slow or too large): answered
    /// with this, and no endpoint is blamed.
    Client(Error),
}

/// Why a response body could not be read whole by [`Upstream::settle`]: the upstream's
/// fault either way.
#[derive(Debug)]
pub enum Cut {
    /// Not within the response timeout.
    TimedOut,
    /// The connection broke, or the body was malformed.
    Failed(Error),
}

/// How the request arrived, for the affinity decision.
pub enum Arrival<'m> {
    /// On an HTTP/1 connection, with its memo of the last verified cookie.
    Http1(&'m mut Memo),
    /// On an HTTP/2 connection, whose cookieless streams share one session.
    Http2,
}

/// Where a request goes, as the routing state said when it arrived.
pub struct Route {
    /// The backend.
    pub backend: Arc<Backend>,
    /// The cookie keys.
    pub keys: Arc<KeyRing>,
    /// Whether this request is written to the access log (`access_log_sample`).
    pub logged: bool,
    /// `max_body_bytes`.
    pub max_body: Option<u64>,
    /// `request_buffer`.
    pub request_buffer: usize,
    /// `response_buffer`.
    pub response_buffer: usize,
    /// What the route changes on the request and its answer, if anything.
    pub filters: Option<Arc<RouteFilters>>,
    /// The request target the pod gets instead of the client's (path and query), when
    /// the route rewrites the path.
    pub target: Option<Box<str>>,
}

/// What a route changes on a request, as the exchange hands it to a codec's
/// [`Upstream::begin`]: applied before tether's own fields, which therefore win.
#[derive(Debug, Clone, Copy, Default)]
pub struct Changes<'r> {
    /// The header edit.
    pub edit: Option<&'r HeaderEdit>,
    /// The `Host` the pod gets (`X-Forwarded-Host` keeps the client's).
    pub host: Option<&'r str>,
    /// The request target the pod gets (origin form).
    pub target: Option<&'r str>,
}

impl Changes<'_> {
    /// Whether nothing changes.
    pub fn is_none(&self) -> bool {
        self.edit.is_none() && self.host.is_none() && self.target.is_none()
    }
}

/// A request an endpoint answered, committed: its session placed and counted.
#[derive(Debug)]
pub struct Served<A> {
    /// The response head and what relays its body.
    pub answer: A,
    /// Its status.
    pub status: StatusCode,
    /// The response carries a `Set-Cookie`, whose value is in the exchange's buffer.
    pub set_cookie: bool,
    /// Time until the answer was ready to relay: its head, and its body when read whole
    /// (`response_buffer`); what the duration histogram and the access log report.
    pub elapsed: Duration,
    /// What the access log says about it, if it is logged.
    pub log: Option<LogInfo>,
}

/// What the access log says about an answered request (like HAProxy's cookie flags).
#[derive(Debug, Clone)]
pub struct LogInfo {
    endpoint: Arc<str>,
    outcome: &'static str,
    session: HexId,
}

/// The request line of a logged request, kept from its head until the answer.
pub struct LogLine {
    method: Box<str>,
    path: Box<str>,
    version: http::Version,
}

impl LogLine {
    /// The line for a request with this method, path and version.
    pub fn new(method: &str, path: &str, version: http::Version) -> Self {
        LogLine {
            method: method.into(),
            path: path.into(),
            version,
        }
    }

    /// Writes the access log line of a request tether answered with `status` after
    /// `elapsed` (`log`: about the endpoint that answered, if one did).
    pub fn write(
        &self,
        conn: &Connection,
        backend: &Backend,
        status: u16,
        elapsed: Duration,
        log: Option<&LogInfo>,
    ) {
        self.emit(conn, backend.name(), status, elapsed, log);
    }

    /// Writes the access log line of a request its route answered itself with
    /// `status`: no backend, no endpoint, no session.
    pub fn write_answered(&self, conn: &Connection, status: u16) {
        self.emit(conn, "-", status, Duration::ZERO, None);
    }

    /// The one access log line format.
    fn emit(
        &self,
        conn: &Connection,
        backend: &str,
        status: u16,
        elapsed: Duration,
        log: Option<&LogInfo>,
    ) {
        tracing::info!(
            target: "tether::access",
            client = %conn.peer.ip(),
            method = &*self.method,
            path = &*self.path,
            version = ?self.version,
            backend,
            endpoint = log.map_or("-", |l| &*l.endpoint),
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            affinity = log.map_or("-", |l| l.outcome),
            session = log.map_or("-", |l| l.session.as_str()),
        );
    }
}

/// Whether a request is written to the access log, one of `sample` (0 to 1) of them.
pub fn sampled(sample: f64) -> bool {
    sample > 0.0 && (sample >= 1.0 || rand::random::<f64>() < sample)
}

impl Route {
    /// What the route changes on the request: the exchange hands it to
    /// [`Upstream::begin`].
    pub fn changes(&self) -> Changes<'_> {
        let Some(f) = self.filters.as_deref() else {
            return Changes::default();
        };
        Changes {
            edit: (!f.request_headers.is_empty()).then_some(&f.request_headers),
            host: f.rewrite.as_ref().and_then(|r| r.hostname.as_deref()),
            target: self.target.as_deref(),
        }
    }

    /// The route's edit of the pod's response head, if it has one: every codec applies
    /// it to the head it relays, before tether's own fields (`Set-Cookie`).
    pub fn response_edit(&self) -> Option<&HeaderEdit> {
        let f = self.filters.as_deref()?;
        (!f.response_headers.is_empty()).then_some(&f.response_headers)
    }
}

impl Proxy {
    /// The route for a request, read from the current routing state: the one place a
    /// request's route is decided, whichever codec carried it. `Err` is what tether
    /// answers instead: [`Error::NoRoute`], or the answer the route gives itself
    /// ([`Error::Answered`], built here for both codecs; `secure`: the request came over
    /// TLS, the scheme a redirect keeps). The codec counts and logs it with
    /// [`Proxy::answered_locally`] when it writes it.
    pub fn route<R: Asked + ?Sized>(&self, req: &R, secure: bool) -> Result<Route, Error> {
        let state = self.state.load();
        let (i, filters) = match state.routes.hit(req) {
            None => return Err(Error::NoRoute),
            Some(Hit::Answer(a)) => {
                return Err(Error::Answered(Box::new(Local::new(a, req, secure))))
            }
            Some(Hit::Backend { backend, filters }) => (backend, filters),
        };
        Ok(Route {
            backend: state.backends[i].clone(),
            keys: state.keys.clone(),
            logged: sampled(state.access_log_sample),
            max_body: state.max_body_bytes,
            request_buffer: state.request_buffer,
            response_buffer: state.response_buffer,
            target: filters.and_then(|f| rewritten_target(f, req)),
            filters: filters.cloned(),
        })
    }

    /// Takes a request from its route to a committed answer: decides the session, tries
    /// the candidates in order under the one retry rule, feeds health with each try's
    /// blame, places the session and writes its `Set-Cookie` value into `cookie`.
    /// Counts the outcome either way (the duration; a failure by status and whose
    /// fault); the caller answers a failure with [`Error::status`].
    pub async fn exchange<U: Upstream>(
        &self,
        up: &mut U,
        conn: &Connection,
        route: &Route,
        arrival: Arrival<'_>,
        started: Instant,
        cookie: &mut Vec<u8>,
    ) -> Result<Served<U::Answer>, Error> {
        route
            .backend
            .stats
            .arrived(matches!(arrival, Arrival::Http2));
        // One block, not a nested async fn: each level of future is polled on every wake.
        let served = 'tries: {
            let backend = &route.backend;
            let snapshot = backend.snapshot();
            let settings = &backend.settings;
            let now = backend.clock().now();
            let (decision, shared) = self.decide(
                up.fields(),
                arrival,
                conn,
                backend,
                &route.keys,
                &snapshot,
                now,
            );
            let mut attempts = decision.attempts(&snapshot);
            if attempts.get(0).is_none() {
                break 'tries Err(Error::NoEndpoint);
            }
            let session = decision.session.to_hex();
            up.begin(conn, &session, route.changes());
            let replayable = up.replayable();
            backend.retry_budget.deposit();
            let mut tried_pinned = false;
            let mut next = 0;
            'candidates: while let Some(i) = attempts.get(next) {
                let n = next;
                next += 1;
                let endpoint = &snapshot.endpoints[i as usize];
                let placement = decision.placement(i, &snapshot);
                up.place(placement.outcome, placement.previous);
                let mut tries = 0;
                let (status, mut answer) = loop {
                    tries += 1;
                    // A replay goes on a new connection: the next idle one may have been
                    // closed by the same keep-alive timeout.
                    let connection = match up.connect(endpoint, settings, tries > 1).await {
                        Ok(c) => c,
                        Err(e) => {
                            self.connect_failed(endpoint, settings, &e);
                            tried_pinned |= Some(i) == decision.pinned();
                            continue 'candidates;
                        }
                    };
                    // Reached: whatever comes of the request, the endpoint is there.
                    endpoint.health.mark_up();
                    match up.send(connection, settings).await {
                        // Nothing went out on a pooled connection that had closed: once
                        // more on a fresh one; otherwise the next endpoint, blaming none.
                        Try::Unsent { reused: true } if tries < 2 => {}
                        Try::Unsent { .. } => {
                            tried_pinned |= Some(i) == decision.pinned();
                            continue 'candidates;
                        }
                        Try::Client(e) => break 'tries Err(e),
                        Try::TimedOut => {
                            break 'tries Err(self.timed_out(&snapshot, endpoint, settings))
                        }
                        Try::Failed { error, stale } => {
                            let tried = Tried::Failed { stale };
                            let more = || attempts.after(n);
                            match self.next_try(
                                tried, replayable, tries, more, &snapshot, endpoint, backend,
                            ) {
                                Next::Replay => {
                                    tracing::debug!(error = %error, "stale upstream connection; replaying an idempotent request");
                                }
                                Next::Elsewhere => {
                                    tried_pinned |= Some(i) == decision.pinned();
                                    tracing::debug!(endpoint = %endpoint.identity, error = %error, "retrying an idempotent request on the next endpoint");
                                    continue 'candidates;
                                }
                                Next::Stop => break 'tries Err(error),
                            }
                        }
                        Try::Answer { status, answer } => {
                            let retry_status =
                                self.response_seen(&snapshot, endpoint, settings, status);
                            let tried = Tried::Answered { retry_status };
                            let more = || attempts.after(n);
                            if self.next_try(
                                tried, replayable, tries, more, &snapshot, endpoint, backend,
                            ) == Next::Elsewhere
                            {
                                tracing::debug!(endpoint = %endpoint.identity, %status, "retrying on the next endpoint");
                                tried_pinned |= Some(i) == decision.pinned();
                                continue 'candidates;
                            }
                            break (status, answer);
                        }
                    }
                };
                match up.settle(&mut answer, settings).await {
                    Ok(()) => {}
                    Err(Cut::TimedOut) => {
                        break 'tries Err(self.timed_out(&snapshot, endpoint, settings))
                    }
                    // Nothing of the answer reached the client yet: like any failure
                    // after the request went out, the endpoint's, and a replayable
                    // request moves to the next endpoint within the retry budget.
                    Err(Cut::Failed(e)) => {
                        let tried = Tried::Failed { stale: false };
                        let more = || attempts.after(n);
                        match self
                            .next_try(tried, replayable, tries, more, &snapshot, endpoint, backend)
                        {
                            Next::Elsewhere => {
                                tried_pinned |= Some(i) == decision.pinned();
                                tracing::debug!(endpoint = %endpoint.identity, error = %e, "answer cut before it was relayed; retrying on the next endpoint");
                                continue 'candidates;
                            }
                            Next::Replay | Next::Stop => break 'tries Err(e),
                        }
                    }
                }
                if let Some(s) = shared {
                    s.serve(backend, &endpoint.identity);
                }
                session_placed(backend, &decision, &placement, i, &snapshot, tried_pinned);
                let set_cookie = placement.set_cookie;
                if set_cookie {
                    cookie.clear();
                    set_cookie_line(backend, &route.keys, &decision, i, &snapshot, cookie);
                }
                let log = route.logged.then(|| LogInfo {
                    endpoint: endpoint.identity.clone(),
                    outcome: placement.outcome.as_str(),
                    session,
                });
                break 'tries Ok((answer, status, set_cookie, log));
            }
            Err(Error::Connect)
        };
        let stats = &route.backend.stats;
        let elapsed = started.elapsed();
        stats.observe(elapsed);
        match served {
            Ok((answer, status, set_cookie, log)) => Ok(Served {
                answer,
                status,
                set_cookie,
                elapsed,
                log,
            }),
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                e.count(stats);
                Err(e)
            }
        }
    }

    /// The one retry rule. After a try on `endpoint` that `tried` (failed with no
    /// usable response, or answered), given whether the request may be sent twice
    /// (`replayable`: idempotent, no body), how many tries this endpoint had and
    /// whether another endpoint is left (`more`, asked only when it matters: working
    /// out the rest of the candidates walks the ring), says what to do next, and counts
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
        more: impl FnOnce() -> bool,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
        backend: &Backend,
    ) -> Next {
        let settings = &backend.settings;
        let retry = match tried {
            Tried::Failed { stale: true } if replayable && tries < 2 => return Next::Replay,
            Tried::Failed { .. } => {
                self.upstream_fault(snapshot, endpoint, settings, LastError::Reset);
                true
            }
            Tried::Answered { retry_status } => retry_status,
        };
        if retry && replayable && more() && backend.retry_budget.try_spend() {
            backend.stats.retry();
            return Next::Elsewhere;
        }
        Next::Stop
    }

    /// Counts a failed connect and cools the endpoint off.
    fn connect_failed(&self, endpoint: &Endpoint, settings: &BackendSettings, e: &ConnectError) {
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
        self.upstream_fault(snapshot, endpoint, settings, LastError::Timeout);
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
            self.upstream_fault(snapshot, endpoint, settings, LastError::ServerError);
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
        what: LastError,
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

    /// The affinity decision for a request, by the backend's affinity key: the one
    /// sticky decision point. With it, the session the request shares with others on
    /// its HTTP/2 connection, if it does.
    #[allow(clippy::too_many_arguments)]
    fn decide<'c, H: Fields + ?Sized>(
        &self,
        headers: &H,
        arrival: Arrival<'_>,
        conn: &'c Connection,
        backend: &Backend,
        keys: &Arc<KeyRing>,
        snapshot: &Snapshot,
        now: Now,
    ) -> (Decision, Option<&'c Shared>) {
        let affinity = &backend.settings.affinity;
        match &affinity.key {
            AffinityKey::Header(name) => {
                if let Some(v) = headers.first(name).filter(|v| !v.is_empty()) {
                    return (affinity::keyed(snapshot, v, now), None);
                }
            }
            AffinityKey::ClientIp => {
                let ip = client_ip(headers, conn.peer.ip(), &affinity.trusted_proxies);
                let bytes = match ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                return (affinity::keyed(snapshot, &bytes, now), None);
            }
            AffinityKey::Cookie => {}
        }
        let values = affinity::cookie_values(headers, &affinity.cookie.name);
        match arrival {
            Arrival::Http1(memo) => {
                let d = affinity::decide_memo(keys, memo, snapshot, values, affinity, now);
                (d, None)
            }
            Arrival::Http2 => {
                let mut d =
                    affinity::decide_shared(keys, &conn.memo, snapshot, values, affinity, now);
                // A trusted proxy's connection carries many clients: none share.
                let trusted = affinity.trusted_proxies.iter();
                if !d.is_fresh() || trusted.clone().any(|n| n.contains(&conn.peer.ip())) {
                    return (d, None);
                }
                let mut first = false;
                let shared = conn.shared.get_or_init(|| {
                    first = true;
                    Shared {
                        session: d.session,
                        placed: OnceLock::new(),
                    }
                });
                if !first {
                    d.join(snapshot, shared.session);
                    // Once a request of the session was served, the others go where
                    // it went: placed again, the load bound the session itself now
                    // counts towards could send them elsewhere.
                    // Not to a draining endpoint (it takes no new sessions), nor to one
                    // of another backend's that happens to share its identity.
                    let placed = shared.placed.get().and_then(|(name, id)| {
                        if **name != *backend.settings.name {
                            return None;
                        }
                        let found = snapshot
                            .endpoints
                            .binary_search_by(|e| (*e.identity).cmp(&**id));
                        found
                            .ok()
                            .filter(|&i| snapshot.endpoints[i].state == EndpointState::Ready)
                    });
                    if let Some(i) = placed {
                        d.target = Some(i as u32);
                        d.bounded = false;
                    }
                }
                (d, Some(shared))
            }
        }
    }
}

/// The session an HTTP/2 connection's cookieless requests share (README, Protocols),
/// so that concurrent first requests land on one endpoint: opened by the first, and
/// once one of them was served, pinned where it went.
#[derive(Debug)]
pub struct Shared {
    session: SessionId,
    /// The backend and endpoint that served the session's first answered request.
    placed: OnceLock<(Box<str>, Arc<str>)>,
}

impl Shared {
    /// Records where the session was served, if nothing was yet.
    fn serve(&self, backend: &Backend, identity: &Arc<str>) {
        if self.placed.get().is_none() {
            let _ = self
                .placed
                .set((backend.settings.name.as_str().into(), identity.clone()));
        }
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

/// The request target a route's path rewrite gives `req` (its query kept), if the
/// route rewrites the path.
fn rewritten_target<R: Asked + ?Sized>(f: &RouteFilters, req: &R) -> Option<Box<str>> {
    let path = f.rewrite.as_ref()?.path.as_ref()?.apply(req.path());
    Some(match req.query() {
        Some(q) => format!("{path}?{q}").into(),
        None => path.into(),
    })
}
