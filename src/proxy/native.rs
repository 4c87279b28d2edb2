//! tether's HTTP/1 codec: one task per client connection reads request heads, decides
//! the session, and relays each exchange over a raw pooled upstream connection, with no
//! `HeaderMap`, no channel and no second task in between. It serves every HTTP/1
//! request, plaintext or TLS (when ALPN did not choose h2), for the whole life of the
//! connection; HTTP/2 is the HTTP/2 server's ([`super::h2`]: ALPN h2, or prior
//! knowledge, a plaintext connection that opens with the preface and is handed to it
//! before any request).
//!
//! Why its own codec: hyper's HTTP/1 server and client in their minimal form cost about
//! as much CPU per request as HAProxy does, and on a machine whose cores are shared by
//! clients, proxy and pods that CPU is what sets throughput (see `benches/load/` and
//! the README). Heads are parsed by `httparse` ([`wire`]).
//!
//! What it covers (RFC 9112 unless noted): bodies by `Content-Length` or chunked, read
//! whole up to `request_buffer` before an upstream is chosen and streamed beyond it;
//! `Expect: 100-continue` answered by tether (RFC 9110 §10.1.1); HTTP/1.0 clients and
//! their keep-alive (§9.3); absolute-form targets (§3.2.2); Upgrade, spliced after a
//! 101 (RFC 9110 §7.8); CONNECT refused (501); 1xx responses forwarded (RFC 9110
//! §15.2); trailer sections relayed without the fields RFC 9110 §6.5.1 rules out; and
//! malformed heads answered 400/431 here. Requests to an h2c backend go through hyper's
//! HTTP/2 client ([`super::request`]), their bodies fed as they arrive and the answer
//! written back by the same rules. Routing, affinity, health, retries, metrics and the
//! access log are the exchange's ([`super::exchange`]), shared with the HTTP/2 path:
//! the codec only moves bytes, as [`Relay`] (its [`Upstream`]) and around it.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::exchange::{self, Arrival, Changes, Cut, LogInfo, LogLine, Route, Served, Try};
use super::{ClientFault, Connection, Error, Proxy, MAX_RESPONSE_HEAD};
use crate::affinity::cookie::{HexId, Memo};
use crate::affinity::Outcome;
use crate::backend::Endpoint;
use crate::config::{BackendSettings, HeaderEdit};
use crate::http::wire::{self, Framing, Parsed, Refusal, RequestHead, ResponseParsed, Streamed};
use crate::upstream::body::BodyFault;
use crate::upstream::pool::{ConnectError, Pool};

/// Per-listener limits the codec enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client must send each request head within this time; an idle keep-alive
    /// connection is closed after it.
    pub header_timeout: Duration,
    /// Largest request head read (431 beyond).
    pub max_header_bytes: usize,
}

/// How a connection left the codec.
pub enum Handoff<S> {
    /// Done: the client left, timed out, asked to close, or shutdown began. The stream
    /// is handed back so a TLS connection can end with its close_notify.
    Closed(S),
    /// A response was cut off midway (the upstream broke, or the client did). A TLS
    /// connection ends without close_notify (the client's sign of a cut). With
    /// `unframed` (a close-delimited body, whose end a plain close would fake), a TCP
    /// connection ends with a reset; otherwise its length or chunking already shows the
    /// cut, and a reset would only discard bytes still queued for the client.
    Aborted {
        /// The client connection.
        stream: S,
        /// The cut body was close-delimited.
        unframed: bool,
    },
    /// The connection opened with the HTTP/2 preface (prior knowledge): it is the
    /// HTTP/2 server's, starting from the bytes read.
    Http2(Prefixed<S>),
}

/// How [`Proxy::serve_h1`] ended.
enum Flow {
    Closed,
    Aborted {
        unframed: bool,
    },
    /// An HTTP/2 connection, with these bytes read.
    Http2(Vec<u8>),
}

/// The buffers of one exchange: kept per thread between exchanges, so an idle
/// keep-alive connection holds only its read buffer.
#[derive(Default)]
struct Buffers {
    /// The upstream request.
    out: Vec<u8>,
    /// The client response head and first body bytes.
    resp: Vec<u8>,
    /// Bytes read from the upstream.
    up: Vec<u8>,
    /// The `Set-Cookie` value of a response that carries one.
    cookie: Vec<u8>,
}

thread_local! {
    static SPARE: RefCell<Vec<Buffers>> = const { RefCell::new(Vec::new()) };
}

impl Buffers {
    fn take() -> Self {
        SPARE
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| Buffers {
                out: Vec::with_capacity(1024),
                resp: Vec::with_capacity(1024),
                up: Vec::with_capacity(UPSTREAM_READ),
                cookie: Vec::new(),
            })
    }

    fn give_back(mut self) {
        self.out.clear();
        self.resp.clear();
        self.up.clear();
        self.cookie.clear();
        // Buffers grown by a huge head go back to the allocator.
        if self.out.capacity() > 64 * 1024
            || self.resp.capacity() > 64 * 1024
            || self.up.capacity() > 4 * UPSTREAM_READ
            || self.cookie.capacity() > 64 * 1024
        {
            return;
        }
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 256 {
                s.push(self);
            }
        });
    }
}

/// How much is read from an upstream at a time.
const UPSTREAM_READ: usize = 16 * 1024;
/// How much room a client read gets.
const CLIENT_READ: usize = 4096;

/// Whether `buf` holds a complete head (an empty line ends it).
///
/// One SIMD search for CRLF CRLF with a searcher built once (cheaper than a byte loop
/// or a `memchr` per line). A
/// head with bare LF line ends (httparse accepts them) is found by the exact search,
/// which runs only when no CRLF CRLF is there. Where the head ends is httparse's to say:
/// a bare-LF head can end before a CRLF CRLF found later.
fn has_head(buf: &[u8]) -> bool {
    static END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    END.find(buf).is_some()
        || memchr::memchr_iter(b'\n', buf)
            .any(|i| matches!(buf.get(i + 1..), Some([b'\n', ..] | [b'\r', b'\n', ..])))
}

/// A timer for deadlines that only move forward, like a connection's successive
/// header and response deadlines: it stays registered with the runtime and is re-armed
/// only when it fires before the deadline now wanted, instead of being inserted into
/// and removed from the timer wheel for every request.
pub(super) struct LazyTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The sleep was last polled Pending and not reset since, so the runtime holds this
    /// task's waker for it: until it elapses a wait need not poll it again (a Sleep poll
    /// registers the waker each time). A connection's futures all run in its one task,
    /// so the waker held is the one to wake.
    armed: bool,
}

impl LazyTimer {
    pub(super) fn new() -> Self {
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: false,
        }
    }

    /// Completes at `deadline`, never earlier.
    fn until(&mut self, deadline: Instant) -> Until<'_> {
        Until {
            timer: self,
            deadline,
        }
    }

    pub(super) fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
            self.armed = false;
        }
        loop {
            if self.armed && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
            // Outside the task's cooperative budget: a poll the budget turns away is
            // Pending without registering the waker, and `armed` would then wait for a
            // wake-up that never comes.
            let mut sleep = tokio::task::unconstrained(self.sleep.as_mut());
            match std::future::Future::poll(Pin::new(&mut sleep), cx) {
                Poll::Pending => {
                    self.armed = true;
                    return Poll::Pending;
                }
                Poll::Ready(()) => {
                    self.armed = false;
                    if Instant::now() >= deadline {
                        return Poll::Ready(());
                    }
                    self.sleep.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// A wait on a [`LazyTimer`].
struct Until<'a> {
    timer: &'a mut LazyTimer,
    deadline: Instant,
}

impl std::future::Future for Until<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        self.timer.poll_until(cx, deadline)
    }
}

/// A wait on the connection's shutdown `changed()`, polled only until the channel holds
/// the task's waker: afterwards a wait reads the channel's version and polls again
/// only when it moved, as [`LazyTimer`]
/// does for its sleep.
pub(super) struct StopWait<'a, F> {
    pub(super) wait: Pin<&'a mut F>,
    /// The wait was polled Pending, so the channel holds this task's waker.
    pub(super) armed: &'a mut bool,
    pub(super) stopping: &'a watch::Receiver<bool>,
}

impl<F: std::future::Future> std::future::Future for StopWait<'_, F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if *self.armed && !self.stopping.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        // Outside the cooperative budget, for the reason `LazyTimer` gives.
        let mut wait = tokio::task::unconstrained(self.wait.as_mut());
        match std::future::Future::poll(Pin::new(&mut wait), cx) {
            Poll::Pending => {
                *self.armed = true;
                Poll::Pending
            }
            Poll::Ready(_) => Poll::Ready(()),
        }
    }
}

/// What one exchange ended with, for the connection loop.
enum Exchanged {
    /// The response went out; `close` says the connection must end after it.
    Answered {
        status: u16,
        close: bool,
        /// Time to the response head (what the duration histogram and the access log
        /// report on both paths).
        elapsed: Duration,
        log: Option<LogInfo>,
    },
    /// Nothing went out: answer with this error.
    Failed(Error),
    /// The upstream switched protocols (101 went out): splice the two connections.
    Switched {
        upstream: TcpStream,
        elapsed: Duration,
        log: Option<LogInfo>,
    },
    /// The client connection broke, or a response was cut off midway: close it.
    /// `unframed`: the response's body ends where the connection does (no length, not
    /// chunked), so only an error at the close can tell the client it was cut.
    Broken { unframed: bool },
}

impl Proxy {
    /// Serves an HTTP/1 connection (plaintext, or TLS that did not choose h2) on the fast
    /// path until it closes or hands over.
    pub async fn serve_native<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut client: S,
        conn: &Connection,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
    ) -> Handoff<S> {
        match self.serve_h1(&mut client, conn, limits, shutdown).await {
            Flow::Closed => Handoff::Closed(client),
            Flow::Aborted { unframed } => Handoff::Aborted {
                stream: client,
                unframed,
            },
            Flow::Http2(read) => Handoff::Http2(Prefixed::new(read, client)),
        }
    }

    async fn serve_h1<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        conn: &Connection,
        limits: Limits,
        mut shutdown: watch::Receiver<bool>,
    ) -> Flow {
        let mut read: Vec<u8> = Vec::new();
        let mut memo = Memo::default();
        // Read once per connection: a reload's buffer sizes apply to new connections.
        let (request_buffer, response_buffer) = {
            let state = self.state.load();
            (state.request_buffer, state.response_buffer)
        };
        let mut timers = [LazyTimer::new(), LazyTimer::new()];
        let [header_timer, response_timer] = &mut timers;
        // One wait for the whole connection: a new `changed()` per request would join
        // and leave the channel's waiter list every time.
        let stopping = shutdown.clone();
        let stop = shutdown.changed();
        tokio::pin!(stop);
        let mut stop_armed = false;
        // Whether a request was answered on this connection yet.
        let mut served = false;
        loop {
            // Wait for a complete head.
            let mut waiting_since = None;
            loop {
                // Usually one read holds exactly one head: its last bytes say so at
                // once, without a search.
                // An empty buffer (the usual state between requests) skips the search,
                // whose set-up alone is not free.
                if !read.is_empty() && (read.ends_with(b"\r\n\r\n") || has_head(&read)) {
                    break;
                }
                if read.len() >= limits.max_header_bytes {
                    let _ = write_error(client, &Error::Refused(Refusal::HeadTooLarge), true).await;
                    return Flow::Closed;
                }
                if read.is_empty() && stopping.has_changed().unwrap_or(true) {
                    return Flow::Closed;
                }
                if read.capacity() - read.len() < 1024 {
                    read.reserve(CLIENT_READ);
                }
                let by = *waiting_since.get_or_insert_with(|| deadline(limits.header_timeout));
                // `read_buf`, not `try_read`: a short read clears the socket's readiness,
                // which saves the read that would only say EAGAIN (strace: 2.26 reads
                // per request with `try_read`, 2.0 with this).
                tokio::select! {
                    biased;
                    r = client.read_buf(&mut read) => match r {
                        Ok(0) | Err(_) => return Flow::Closed,
                        Ok(_) => {}
                    },
                    _ = header_timer.until(by) => {
                        tracing::debug!(peer = %conn.peer, "request head timed out");
                        return Flow::Closed;
                    }
                    _ = StopWait {
                        wait: stop.as_mut(),
                        armed: &mut stop_armed,
                        stopping: &stopping,
                    }, if read.is_empty() => return Flow::Closed,
                }
            }
            // httparse finds where the first head ends (pipelined requests may follow).
            let mut fields = wire::no_fields();
            let head = match wire::parse_request(&read, &mut fields, request_buffer) {
                Parsed::Fast(h) => h,
                // RFC 9113 §3.4: prior knowledge opens the connection with the preface;
                // after an HTTP/1 request it is just a malformed one.
                Parsed::Http2Preface if !served => return Flow::Http2(read),
                Parsed::Http2Preface => {
                    return refuse(client, Error::Refused(Refusal::Malformed)).await
                }
                Parsed::Refuse(r) => return refuse(client, Error::Refused(r)).await,
                Parsed::Connect => return refuse(client, Error::ConnectMethod).await,
                Parsed::InvalidHost => return refuse(client, Error::InvalidHost).await,
                // A bare-LF head `has_head` saw end where httparse did not.
                Parsed::Partial => return refuse(client, Error::Refused(Refusal::Malformed)).await,
            };
            served = true;
            let len = head.total_len();
            // `Err`: no route, or the route's own answer (a redirect, a 500).
            let route = self.route(&head, conn.secure);
            if let Ok(route) = &route {
                let declared = match head.streamed {
                    Streamed::Length(n) => n,
                    _ => head.body_len as u64,
                };
                if route.max_body.is_some_and(|max| declared > max) {
                    Error::BodyTooLarge.count(&route.backend.stats);
                    return refuse(client, Error::BodyTooLarge).await;
                }
            }
            let waiting = !head.body_complete() || head.streamed != Streamed::No;
            // RFC 9110 §10.1.1: the client waits for a 100 before its body. With no
            // backend there is nothing to send it to: the 404 (or the route's own
            // answer) goes out and the connection closes instead of reading a body
            // nobody wants; so it does for a body of unknown length.
            let route = match route {
                Err(e) if (head.expects_continue && waiting) || head.streamed != Streamed::No => {
                    self.answered_locally(&e, &head, conn);
                    return refuse(client, e).await;
                }
                r => r,
            };
            if head.expects_continue
                && waiting
                && send_all(client, b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
            {
                return Flow::Closed;
            }
            if !head.body_complete() {
                // The rest of the body, then the head is parsed again. Routed: within
                // the response timeout that bounds an upload.
                // Unrouted: within the header timeout, so the 404 goes out on a
                // connection that can go on (closing with body bytes unread would
                // reset it, and could take the 404 with it).
                let (timeout, stats) = match &route {
                    Ok(r) => (r.backend.settings.response_timeout, Some(&r.backend.stats)),
                    Err(_) => (limits.header_timeout, None),
                };
                if read.capacity() < len {
                    read.reserve(len - read.len());
                }
                let by = deadline(timeout);
                while read.len() < len {
                    tokio::select! {
                        biased;
                        r = client.read_buf(&mut read) => match r {
                            Ok(0) | Err(_) => {
                                if let Some(stats) = stats {
                                    stats.client_error(ClientFault::Aborted);
                                }
                                return Flow::Closed;
                            }
                            Ok(_) => {}
                        },
                        _ = header_timer.until(by) => {
                            tracing::debug!(peer = %conn.peer, "request body timed out");
                            let e = Error::Client(ClientFault::BodyTimeout);
                            if let Some(stats) = stats {
                                e.count(stats);
                            }
                            let _ = write_error(client, &e, true).await;
                            return Flow::Closed;
                        }
                    }
                }
                continue;
            }
            let route = match route {
                Ok(r) => r,
                Err(e) => {
                    self.answered_locally(&e, &head, conn);
                    let close = head.close;
                    if write_answer(client, &e, close, head.is_head())
                        .await
                        .is_err()
                        || close
                        || !consume(&mut read, len)
                    {
                        return Flow::Closed;
                    }
                    continue;
                }
            };
            let started = Instant::now();
            let close = head.close || stopping.has_changed().unwrap_or(true);
            let backend = &route.backend;
            let line = route.logged.then(|| {
                let version = if head.http10 {
                    http::Version::HTTP_10
                } else {
                    http::Version::HTTP_11
                };
                LogLine::new(head.method, head.path(), version)
            });
            // A body too large to read whole first, or of unknown length: what came with
            // the head and up to `request_buffer` more is read before an upstream is
            // chosen, and the rest streams through.
            let mut upload = match head.streamed {
                Streamed::No => None,
                framing => {
                    let decode = backend.settings.h2c;
                    let mut u = Upload::new(framing, read[head.len..].to_vec(), decode);
                    let timeout = backend.settings.response_timeout;
                    if let Err(e) = u
                        .fill(client, request_buffer, timeout, route.max_body)
                        .await
                    {
                        e.count(&backend.stats);
                        let _ = write_error(client, &e, true).await;
                        return Flow::Closed;
                    }
                    Some(u)
                }
            };
            let mut bufs = Buffers::take();
            let exchanged = if backend.settings.h2c {
                let h2c = self.exchange_h2c(
                    &head,
                    conn,
                    &route,
                    &mut memo,
                    started,
                    close,
                    response_buffer,
                    client,
                    upload.as_mut(),
                    &mut bufs.out,
                );
                Box::pin(h2c).await
            } else {
                self.relay(
                    &head,
                    conn,
                    &route,
                    &mut memo,
                    client,
                    &mut bufs,
                    response_timer,
                    started,
                    close,
                    response_buffer,
                    upload.as_mut(),
                )
                .await
            };
            bufs.give_back();
            let (status, close, elapsed, log) = match exchanged {
                Exchanged::Answered {
                    status,
                    close,
                    elapsed,
                    log,
                } => (status, close, elapsed, log),
                // Counted by the exchange.
                Exchanged::Failed(e) => {
                    let elapsed = started.elapsed();
                    let broken = write_error(client, &e, close).await.is_err();
                    (
                        e.status().as_u16(),
                        close || broken || e.closes(),
                        elapsed,
                        None,
                    )
                }
                Exchanged::Broken { unframed } => return Flow::Aborted { unframed },
                Exchanged::Switched {
                    mut upstream,
                    elapsed,
                    log,
                } => {
                    if let Some(line) = line {
                        line.write(conn, backend, 101, elapsed, log.as_ref());
                    }
                    // Held by the tunnel tracker, so shutdown waits for it as for
                    // every upgraded connection. What the client sent after its
                    // request is already the new protocol.
                    let _tunnel = self.tunnels.token();
                    if upstream.write_all(&read[len..]).await.is_ok() {
                        if let Err(e) = tokio::io::copy_bidirectional(client, &mut upstream).await {
                            tracing::debug!(error = %e, "upgraded connection ended with an error");
                        }
                    }
                    return Flow::Closed;
                }
            };
            if let Some(line) = line {
                line.write(conn, backend, status, elapsed, log.as_ref());
            }
            if close {
                return Flow::Closed;
            }
            match upload {
                // What the client sent after the body: the next request, if any.
                Some(u) if u.done => read = u.pending,
                // A body not read to its end: its rest cannot be told from a request.
                Some(_) => return Flow::Closed,
                None if !consume(&mut read, len) => return Flow::Closed,
                None => {}
            }
            // A body grew the buffer: an idle connection goes back to holding little.
            if read.capacity() > 2 * CLIENT_READ {
                read.shrink_to(CLIENT_READ);
            }
        }
    }

    /// One request to an HTTP/1 backend: the exchange with [`Relay`], then the answer
    /// relayed to the client as it comes (or read whole first, `response_buffer`), or,
    /// after a 101, the two connections spliced.
    #[allow(clippy::too_many_arguments)]
    async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        head: &RequestHead<'_>,
        conn: &Connection,
        route: &Route,
        memo: &mut Memo,
        client: &mut S,
        bufs: &mut Buffers,
        timer: &mut LazyTimer,
        started: Instant,
        close: bool,
        response_buffer: usize,
        upload: Option<&mut Upload>,
    ) -> Exchanged {
        let Buffers {
            out,
            up,
            resp,
            cookie,
        } = bufs;
        let mut relay = Relay {
            head,
            client,
            out,
            up,
            resp,
            timer,
            upload,
            max_body: route.max_body,
            response_buffer,
            prefix: 0,
            response_edit: route.response_edit(),
        };
        let arrival = Arrival::Http1(memo);
        let served = self
            .exchange(&mut relay, conn, route, arrival, started, cookie)
            .await;
        let Served {
            answer,
            status,
            set_cookie,
            elapsed,
            log,
        } = match served {
            Ok(s) => s,
            Err(e) => return Exchanged::Failed(e),
        };
        let Relay {
            client,
            resp: out,
            up,
            upload,
            ..
        } = relay;
        let Answer {
            mut upstream,
            pool,
            framing,
            mut reusable,
            head_len,
            buffered,
        } = answer;
        // A body the upstream answered before taking all of it: the rest of it is
        // still coming from the client, so the connection ends after this answer.
        let close = close || upload.as_ref().is_some_and(|u| !u.done);
        let status = status.as_u16();
        let connection = wire::response_connection(status, framing, close, head.http10);
        let close = connection == Some(b"close");
        wire::end_response_head(out, set_cookie.then_some(&cookie[..]), connection);
        if status == 101 {
            // The upstream switched (RFC 9110 §15.2.2): the head and whatever of the
            // new protocol came with it go to the client, then the connection is the
            // two sockets spliced.
            out.extend_from_slice(&up[head_len..]);
            if send_all(client, out).await.is_err() {
                return Exchanged::Broken { unframed: false };
            }
            return Exchanged::Switched {
                upstream,
                elapsed,
                log,
            };
        }
        let answered = Exchanged::Answered {
            status,
            close,
            elapsed,
            log,
        };

        // The body: what came with the head goes out in the same write.
        let mut body = Body::new(framing, head.http10);
        // `settle` refused a chunked body broken in these bytes; an HTTP/1.0 client's
        // decoding reads them the same way.
        let Ok(Taken { used, relay, done }) = body.take(&up[head_len..]) else {
            return Exchanged::Broken { unframed: false };
        };
        out.extend_from_slice(&up[head_len..head_len + relay]);
        body.emit(out, done);
        reusable &= head_len + used == up.len();
        if buffered {
            if reusable {
                pool.checkin_raw(upstream);
            }
            if send_all(client, out).await.is_err() {
                return Exchanged::Broken { unframed: false };
            }
            return answered;
        }
        if send_all(client, out).await.is_err() {
            return Exchanged::Broken { unframed: false };
        }
        let mut done = done;
        while !done {
            up.clear();
            up.reserve(UPSTREAM_READ);
            match upstream.read_buf(up).await {
                Ok(0) if framing == Framing::Close => break,
                Ok(0) | Err(_) => {
                    tracing::debug!(backend = %route.backend.name(), "upstream response cut off");
                    return Exchanged::Broken {
                        unframed: body.unframed(),
                    };
                }
                Ok(_) => {}
            }
            let Taken {
                used,
                relay,
                done: end,
            } = match body.take(up) {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(backend = %route.backend.name(), error = %e, "upstream response body malformed");
                    return Exchanged::Broken {
                        unframed: body.unframed(),
                    };
                }
            };
            reusable &= used == up.len();
            up.truncate(relay);
            body.emit(up, end);
            if send_all(client, up).await.is_err() {
                return Exchanged::Broken { unframed: false };
            }
            done = end;
        }
        if reusable && framing != Framing::Close {
            pool.checkin_raw(upstream);
        }
        answered
    }
}

/// An HTTP/1 request on its way to an HTTP/1 pod as bytes: the exchange's
/// [`Upstream`] for the codec. The upstream request is the client's head rewritten
/// once ([`wire::write_request`]), the placement fields restamped per endpoint; a try
/// writes it (and streams the body, [`Upload`]), forwards any 1xx to the client and
/// reads the response head, whose client head it writes at once
/// ([`wire::write_response_fields`]) so no borrow of the read bytes outlives the try.
struct Relay<'a, 'h, S> {
    head: &'a RequestHead<'h>,
    client: &'a mut S,
    /// The upstream request.
    out: &'a mut Vec<u8>,
    /// Bytes read from the upstream.
    up: &'a mut Vec<u8>,
    /// The client response head, then its first body bytes.
    resp: &'a mut Vec<u8>,
    timer: &'a mut LazyTimer,
    upload: Option<&'a mut Upload>,
    max_body: Option<u64>,
    response_buffer: usize,
    /// Where the per-endpoint fields begin in `out`.
    prefix: usize,
    /// The route's edit of the response head, if it has one.
    response_edit: Option<&'a HeaderEdit>,
}

/// A connection to an HTTP/1 pod for one try.
struct Upstream {
    stream: TcpStream,
    /// It came from the pool.
    reused: bool,
    /// The pool it goes back to.
    pool: Arc<Pool>,
}

/// A response head an HTTP/1 pod sent (its client head written already).
struct Answer {
    upstream: TcpStream,
    /// The pool the connection goes back to.
    pool: Arc<Pool>,
    framing: Framing,
    /// The upstream connection can take another request after this response.
    reusable: bool,
    /// Bytes of `up` the head took.
    head_len: usize,
    /// The whole body is in `up` already (`response_buffer`).
    buffered: bool,
}

impl<'h, S: AsyncRead + AsyncWrite + Unpin> exchange::Upstream for Relay<'_, 'h, S> {
    type Fields = RequestHead<'h>;
    type Answer = Answer;
    type Connection = Upstream;

    fn fields(&self) -> &RequestHead<'h> {
        self.head
    }

    fn replayable(&self) -> bool {
        self.head.replayable()
    }

    fn begin(&mut self, conn: &Connection, session: &HexId, changes: Changes<'_>) {
        let peer = conn.peer_value.as_bytes();
        let secure = conn.secure;
        if changes.is_none() {
            wire::write_request(self.out, self.head, peer, secure, session.as_bytes());
        } else {
            let edited = Edited(changes);
            let session = session.as_bytes();
            wire::write_request_edited(self.out, self.head, peer, secure, session, &edited);
        }
        self.prefix = self.out.len();
    }

    fn place(&mut self, outcome: Outcome, previous: Option<&str>) {
        self.out.truncate(self.prefix);
        wire::write_attempt(self.out, outcome.as_str(), previous);
        self.out.extend_from_slice(self.head.body);
    }

    /// An upgrade takes its connection for good: a new one. Anything else, a streamed
    /// body too, takes a pooled connection checked open first (`checkout_raw`): a
    /// connect per upload costs more than the rare close that races the request.
    async fn connect(
        &mut self,
        endpoint: &Endpoint,
        settings: &BackendSettings,
        fresh: bool,
    ) -> Result<Upstream, ConnectError> {
        let fresh = fresh || self.head.upgrade.is_some();
        let (stream, reused) = endpoint
            .pool
            .checkout_raw(settings.connect_timeout, fresh)
            .await?;
        Ok(Upstream {
            stream,
            reused,
            pool: endpoint.pool.clone(),
        })
    }

    async fn send(&mut self, connection: Upstream, settings: &BackendSettings) -> Try<Answer> {
        let Upstream {
            stream: mut upstream,
            reused,
            pool,
        } = connection;
        let up = &mut *self.up;
        up.clear();
        let timeout = settings.response_timeout;
        let mut by = deadline(timeout);
        let mut sent = match self.upload.as_deref_mut() {
            None => tokio::select! {
                biased;
                sent = send(&mut upstream, self.out, up) => sent,
                _ = self.timer.until(by) => return Try::TimedOut,
            },
            Some(u) => {
                match u
                    .send(&mut upstream, self.out, self.client, timeout, self.max_body)
                    .await
                {
                    Err(PumpError::Client(e)) => return Try::Client(e),
                    Err(PumpError::UpstreamTimeout) => return Try::TimedOut,
                    // The response timeout runs from the end of the upload; an upstream
                    // that stopped taking it may have answered first.
                    Ok(()) | Err(PumpError::Upstream) => {
                        by = deadline(timeout);
                        tokio::select! {
                            biased;
                            r = read_more(&mut upstream, up, true) => r,
                            _ = self.timer.until(by) => return Try::TimedOut,
                        }
                    }
                }
            }
        };
        // Parsed as bytes arrive: httparse says whether the head is complete, so there
        // is no separate search for its end.
        loop {
            if let Err(e) = sent {
                return Try::Failed {
                    error: Error::Wire(e.error),
                    stale: reused && e.nothing_back,
                };
            }
            let mut fields = wire::no_fields();
            let upgrade = self.head.upgrade.is_some();
            match wire::parse_response_to(up, &mut fields, self.head.is_head(), upgrade) {
                Ok(ResponseParsed::Head(h)) => {
                    // httparse takes any three digits; hyper refuses codes under 100,
                    // and so does this path, like any code `StatusCode` refuses.
                    let status = StatusCode::from_u16(h.status).ok();
                    let Some(status) = status.filter(|s| s.as_u16() >= 100) else {
                        return Try::Failed {
                            error: Error::Wire(wire::Error::Status(h.status)),
                            stale: false,
                        };
                    };
                    self.resp.clear();
                    match self.response_edit {
                        None => wire::write_response_fields(self.resp, &h, self.head.http10),
                        Some(e) => wire::write_response_fields_edited(
                            self.resp,
                            &h,
                            self.head.http10,
                            &Edited(Changes {
                                edit: Some(e),
                                ..Changes::default()
                            }),
                        ),
                    }
                    let answer = Answer {
                        pool,
                        framing: h.framing,
                        reusable: h.reusable,
                        head_len: h.len,
                        buffered: false,
                        upstream,
                    };
                    return Try::Answer { status, answer };
                }
                // 1xx (101 is refused by the parser): forwarded, as a proxy must (RFC
                // 9110 §15.2); the final response follows. Not to an HTTP/1.0 client,
                // which does not know them.
                Ok(ResponseParsed::Informational(len)) => {
                    if !self.head.http10 {
                        let mut interim = Vec::new();
                        wire::write_informational(&mut interim, &up[..len]);
                        if send_all(self.client, &interim).await.is_err() {
                            return Try::Client(ClientFault::Aborted.into());
                        }
                    }
                    up.drain(..len);
                    if !up.is_empty() {
                        continue;
                    }
                }
                Ok(ResponseParsed::Partial) if up.len() >= MAX_RESPONSE_HEAD => {
                    sent = Err(SendError {
                        error: wire::Error::HeadTooLarge,
                        nothing_back: false,
                    });
                    continue;
                }
                Ok(ResponseParsed::Partial) => {}
                // Not HTTP/1 (a TLS-only port, say): a failed exchange like a reset,
                // retried on the next endpoint when that is safe.
                Err(error) => {
                    return Try::Failed {
                        error: Error::Wire(error),
                        stale: false,
                    }
                }
            }
            sent = tokio::select! {
                biased;
                r = read_more(&mut upstream, up, false) => r,
                _ = self.timer.until(by) => return Try::TimedOut,
            };
        }
    }

    /// `response_buffer`: a small body of known length is read whole and the upstream
    /// connection goes back to the pool before the client is written to, so a slow
    /// reader never holds a pod's connection. The rest of it must come within the
    /// response timeout.
    async fn settle(&mut self, answer: &mut Answer, settings: &BackendSettings) -> Result<(), Cut> {
        // A chunked body already broken in the bytes that came with its head (RFC 9112
        // §7.1): an invalid answer, before anything went to the client.
        if answer.framing == Framing::Chunked {
            let mut probe = wire::Chunked::default();
            if probe.scan(&self.up[answer.head_len..]).is_err() {
                return Err(Cut::Failed(Error::Wire(wire::Error::Chunked)));
            }
        }
        let Framing::Length(n) = answer.framing else {
            return Ok(());
        };
        if n == 0 || n > self.response_buffer as u64 {
            return Ok(());
        }
        let want = answer.head_len.saturating_add(n as usize);
        let by = deadline(settings.response_timeout);
        while self.up.len() < want {
            let read = tokio::select! {
                biased;
                r = read_more(&mut answer.upstream, self.up, false) => r,
                _ = self.timer.until(by) => return Err(Cut::TimedOut),
            };
            if let Err(e) = read {
                return Err(Cut::Failed(Error::Wire(e.error)));
            }
        }
        answer.buffered = true;
        Ok(())
    }
}

/// Where the end of a response body is, as its bytes go by.
enum Body {
    /// Bytes left.
    Length(u64),
    /// The chunked scanner, and the trailer section once it began (held back until it
    /// ends, then relayed filtered by [`wire::write_trailers`]).
    Chunked(wire::Chunked, Option<Vec<u8>>),
    /// Until the upstream closes.
    Close,
    /// Chunked from the upstream, decoded for an HTTP/1.0 client (its data, held until
    /// [`Body::emit`]); trailers have nowhere to go and are dropped.
    Dechunk(wire::Chunked, Vec<u8>),
}

/// What [`Body::take`] found in a read.
struct Taken {
    /// Bytes of the read that belong to the body.
    used: usize,
    /// How many of them go to the client as they are (a trailer section is held back).
    relay: usize,
    /// The body ended.
    done: bool,
}

impl Body {
    /// How a body framed so is relayed; `http10`: to an HTTP/1.0 client.
    fn new(framing: Framing, http10: bool) -> Self {
        match framing {
            Framing::Empty => Body::Length(0),
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked if http10 => Body::Dechunk(wire::Chunked::default(), Vec::new()),
            Framing::Chunked => Body::Chunked(wire::Chunked::default(), None),
            Framing::Close => Body::Close,
        }
    }

    /// How many of `bytes` belong to the body, how many of those are relayed as they
    /// are, and whether it ended.
    fn take(&mut self, bytes: &[u8]) -> Result<Taken, wire::Error> {
        match self {
            Body::Length(left) => {
                let n = bytes
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                Ok(Taken {
                    used: n,
                    relay: n,
                    done: *left == 0,
                })
            }
            Body::Chunked(c, trailers) => {
                let (used, done) = c.scan(bytes)?;
                let relay = match (trailers.as_mut(), c.trailer_start()) {
                    (Some(held), _) => {
                        held.extend_from_slice(&bytes[..used]);
                        0
                    }
                    // Nearly every chunked body ends with no trailer fields, all in one
                    // read: relayed as it is.
                    (None, Some(at)) if done && &bytes[at..used] == b"\r\n" => used,
                    (None, Some(at)) => {
                        *trailers = Some(bytes[at..used].to_vec());
                        at
                    }
                    (None, None) => used,
                };
                Ok(Taken { used, relay, done })
            }
            Body::Close => Ok(Taken {
                used: bytes.len(),
                relay: bytes.len(),
                done: false,
            }),
            Body::Dechunk(c, data) => {
                let (used, done) = c.decode(bytes, data)?;
                Ok(Taken {
                    used,
                    relay: 0,
                    done,
                })
            }
        }
    }

    /// Appends what goes to the client after the bytes [`Body::take`] let through as
    /// they are: decoded data, and once the body ended (`done`) its trailer section,
    /// with the fields RFC 9110 §6.5.1 rules out there dropped.
    fn emit(&mut self, out: &mut Vec<u8>, done: bool) {
        match self {
            Body::Chunked(_, Some(held)) if done => wire::write_trailers(out, held),
            Body::Dechunk(_, data) => {
                out.extend_from_slice(data);
                data.clear();
            }
            _ => {}
        }
    }

    /// Whether the client finds the end of this body only by the close.
    fn unframed(&self) -> bool {
        matches!(self, Body::Close | Body::Dechunk(..))
    }
}

/// A request body streamed upstream after its head (RFC 9112 §6.3): by its length or
/// chunked, its chunked framing checked as it passes and its trailer section relayed
/// with only the fields RFC 9110 §6.5.1 allows there.
struct Upload {
    /// Finds the end of the body in what is sent upstream.
    body: Body,
    /// Bytes read from the client and not sent upstream yet; after the body ended,
    /// whatever the client sent after it.
    pending: Vec<u8>,
    /// The whole body went upstream.
    done: bool,
}

/// Why streaming a request body upstream stopped.
enum PumpError {
    /// The client's doing (or a body over `max_body_bytes`): answered with this, and
    /// no endpoint is blamed.
    Client(Error),
    /// The upstream took no bytes within the response timeout.
    UpstreamTimeout,
    /// The upstream connection failed; it may have answered before it did.
    Upstream,
}

impl Upload {
    /// `decode`: the body goes upstream as data (to an h2c backend), not as HTTP/1.
    fn new(framing: Streamed, pending: Vec<u8>, decode: bool) -> Self {
        let body = match framing {
            Streamed::Length(n) => Body::Length(n),
            Streamed::No | Streamed::Chunked => Body::new(Framing::Chunked, decode),
        };
        Upload {
            body,
            pending,
            done: false,
        }
    }

    /// Reads the body before an upstream is chosen, until it is all here or `limit`
    /// bytes are: a client slower than that holds no pod's connection
    /// (`request_buffer`). A malformed chunked body is refused here, before any
    /// upstream sees it.
    async fn fill<S: AsyncRead + Unpin>(
        &mut self,
        client: &mut S,
        limit: usize,
        timeout: Duration,
        max_body: Option<u64>,
    ) -> Result<(), Error> {
        let mut probe = match self.body {
            Body::Chunked(..) => Some(wire::Chunked::default()),
            _ => None,
        };
        let mut scanned = 0;
        loop {
            let whole = match (&mut probe, &self.body) {
                (Some(c), _) => {
                    let (_, done) = c
                        .scan(&self.pending[scanned..])
                        .map_err(|_| ClientFault::MalformedBody)?;
                    scanned = self.pending.len();
                    if max_body.is_some_and(|max| c.data_len() > max) {
                        return Err(Error::BodyTooLarge);
                    }
                    done
                }
                (None, Body::Length(n)) => self.pending.len() as u64 >= *n,
                (None, _) => true,
            };
            if whole || self.pending.len() >= limit {
                return Ok(());
            }
            read_client(client, &mut self.pending, timeout).await?;
        }
    }

    /// Writes `head` upstream, then the body: what is pending, then what the client
    /// sends, each write and each client read within `timeout` of progress.
    async fn send<S: AsyncRead + Unpin>(
        &mut self,
        upstream: &mut TcpStream,
        head: &[u8],
        client: &mut S,
        timeout: Duration,
        max_body: Option<u64>,
    ) -> Result<(), PumpError> {
        upstream_write(upstream, head, timeout).await?;
        let mut tail = Vec::new();
        loop {
            if !self.pending.is_empty() {
                let Taken { used, relay, done } = self
                    .body
                    .take(&self.pending)
                    .map_err(|_| PumpError::Client(ClientFault::MalformedBody.into()))?;
                if let (Some(max), Body::Chunked(c, _)) = (max_body, &self.body) {
                    if c.data_len() > max {
                        return Err(PumpError::Client(Error::BodyTooLarge));
                    }
                }
                upstream_write(upstream, &self.pending[..relay], timeout).await?;
                if done {
                    self.body.emit(&mut tail, true);
                    upstream_write(upstream, &tail, timeout).await?;
                }
                self.pending.drain(..used);
                if done {
                    self.done = true;
                    return Ok(());
                }
            }
            read_client(client, &mut self.pending, timeout)
                .await
                .map_err(PumpError::Client)?;
        }
    }
}

impl Upload {
    /// Feeds the body to hyper's upstream client as data: what is pending, then what
    /// the client sends, decoded. A fault ends the body with it (the client's, which
    /// the exchange then blames on the client).
    async fn feed<S: AsyncRead + Unpin>(
        &mut self,
        client: &mut S,
        tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, BodyFault>>,
        timeout: Duration,
        max_body: Option<u64>,
    ) {
        let mut sent = 0u64;
        let fault = loop {
            if !self.pending.is_empty() {
                let Ok(Taken { used, relay, done }) = self.body.take(&self.pending) else {
                    break BodyFault::Client(ClientFault::MalformedBody);
                };
                let mut data = self.pending[..relay].to_vec();
                self.body.emit(&mut data, done);
                self.pending.drain(..used);
                sent += data.len() as u64;
                if max_body.is_some_and(|max| sent > max) {
                    break BodyFault::TooLarge;
                }
                if !data.is_empty() && tx.send(Ok(data.into())).await.is_err() {
                    return;
                }
                if done {
                    self.done = true;
                    return;
                }
            }
            match read_client(client, &mut self.pending, timeout).await {
                Ok(()) => {}
                Err(Error::Client(f)) => break BodyFault::Client(f),
                Err(_) => break BodyFault::Client(ClientFault::Aborted),
            }
        };
        let _ = tx.send(Err(fault)).await;
    }
}

impl Proxy {
    /// One request to an h2c backend: the head becomes an `http::Request` and goes
    /// through the exchange with [`Forwarded`](super::request::Forwarded) (hyper's
    /// HTTP/2 client is the only upstream client that speaks HTTP/2), its body fed as
    /// the client sends it; the response is written back as HTTP/1.1 (or 1.0), by the
    /// same framing rules as a relayed one.
    #[allow(clippy::too_many_arguments)]
    async fn exchange_h2c<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        head: &RequestHead<'_>,
        conn: &Connection,
        route: &Route,
        memo: &mut Memo,
        started: Instant,
        close: bool,
        response_buffer: usize,
        client: &mut S,
        upload: Option<&mut Upload>,
        out: &mut Vec<u8>,
    ) -> Exchanged {
        let Some(req) = h2c_request(head) else {
            let e = Error::Refused(Refusal::Malformed);
            e.count(&route.backend.stats);
            return Exchanged::Failed(e);
        };
        let timeout = route.backend.settings.response_timeout;
        let (tx, rx) = match &upload {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let length = match head.streamed {
            Streamed::Length(n) => Some(n),
            Streamed::Chunked => None,
            Streamed::No => Some(head.body_len as u64),
        };
        let read = bytes::Bytes::copy_from_slice(head.body);
        let req = req.map(|()| crate::upstream::body::RequestBody::fed(read, rx, length));
        let arrival = Arrival::Http1(memo);
        let buffer = response_buffer as u64;
        let forward = self.forward(req, conn, route, arrival, started, buffer, None);
        tokio::pin!(forward);
        let (answer, body_done) = match (upload, tx) {
            (Some(u), Some(tx)) => {
                let answer = {
                    let feed = u.feed(client, tx, timeout, route.max_body);
                    tokio::pin!(feed);
                    let mut fed = false;
                    loop {
                        tokio::select! {
                            r = &mut forward => break r,
                            () = &mut feed, if !fed => fed = true,
                        }
                    }
                };
                (answer, u.done)
            }
            _ => (forward.await, true),
        };
        let (resp, elapsed, log) = match answer {
            Ok(r) => r,
            Err(e) => return Exchanged::Failed(e),
        };
        let (parts, mut body) = resp.into_parts();
        let status = parts.status.as_u16();
        let bodyless = head.is_head() || status == 204 || status == 304;
        let length = http_body::Body::size_hint(&body).exact();
        // The upstream answered before the client finished its body: the rest of it
        // cannot be told from a request, so the connection ends after this answer.
        let close = close || !body_done;
        let chunked = !bodyless && length.is_none() && !head.http10;
        let close = close || (!bodyless && length.is_none() && head.http10);
        out.clear();
        wire::write_head(
            out,
            status,
            &parts.headers,
            length.filter(|_| !bodyless),
            chunked,
        );
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if head.http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let answered = Exchanged::Answered {
            status,
            close,
            elapsed,
            log,
        };
        if bodyless {
            return match send_all(client, out).await {
                Ok(()) => answered,
                Err(_) => Exchanged::Broken { unframed: false },
            };
        }
        loop {
            let frame = match http_body_util::BodyExt::frame(&mut body).await {
                None => break,
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "upstream response cut off");
                    let _ = send_all(client, out).await;
                    return Exchanged::Broken {
                        unframed: !chunked && length.is_none(),
                    };
                }
            };
            if wire::write_frame(out, frame, chunked) {
                return match send_all(client, out).await {
                    Ok(()) => answered,
                    Err(_) => Exchanged::Broken { unframed: false },
                };
            }
            if send_all(client, out).await.is_err() {
                return Exchanged::Broken { unframed: false };
            }
            out.clear();
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        match send_all(client, out).await {
            Ok(()) => answered,
            Err(_) => Exchanged::Broken { unframed: false },
        }
    }
}

/// The `http::Request` for an HTTP/1 request head (its body is fed separately): the
/// host as [`wire::parse_request`] settled it, `Expect` answered already.
fn h2c_request(head: &RequestHead<'_>) -> Option<http::Request<()>> {
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(head.method.as_bytes()).ok()?)
        .uri(head.target)
        .version(if head.http10 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        });
    let headers = b.headers_mut()?;
    for f in head.fields {
        let name = http::HeaderName::from_bytes(f.name.as_bytes()).ok()?;
        if name == http::header::HOST
            || (name == http::header::EXPECT && head.expects_continue)
            || name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
        {
            continue;
        }
        headers.append(name, http::HeaderValue::from_bytes(f.value).ok()?);
    }
    if !head.host.is_empty() {
        headers.insert(
            http::header::HOST,
            http::HeaderValue::from_bytes(head.host).ok()?,
        );
    }
    b.body(()).ok()
}

/// One write of a streamed request upstream, within `timeout`.
async fn upstream_write(
    upstream: &mut TcpStream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), PumpError> {
    if bytes.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(timeout, upstream.write_all(bytes)).await {
        Err(_) => Err(PumpError::UpstreamTimeout),
        Ok(Err(_)) => Err(PumpError::Upstream),
        Ok(Ok(())) => Ok(()),
    }
}

/// Reads more of a request body from the client into `buf`: its silence for `timeout`
/// is its timeout (408), its close before the end its abort; neither is an upstream's.
async fn read_client<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), Error> {
    buf.reserve(UPSTREAM_READ);
    match tokio::time::timeout(timeout, client.read_buf(buf)).await {
        Err(_) => Err(ClientFault::BodyTimeout.into()),
        Ok(Ok(0) | Err(_)) => Err(ClientFault::Aborted.into()),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Why an upstream exchange failed before a response head arrived.
struct SendError {
    error: wire::Error,
    /// No byte of a response arrived (the connection may just have been stale).
    nothing_back: bool,
}

/// Writes the request head and reads the first bytes of the answer.
async fn send(upstream: &mut TcpStream, out: &[u8], up: &mut Vec<u8>) -> Result<(), SendError> {
    upstream.write_all(out).await.map_err(|e| SendError {
        error: wire::Error::Io(e.kind()),
        nothing_back: true,
    })?;
    read_more(upstream, up, true).await
}

/// Reads more of the answer into `up`; `first`: nothing of it has arrived yet.
async fn read_more(
    upstream: &mut TcpStream,
    up: &mut Vec<u8>,
    first: bool,
) -> Result<(), SendError> {
    up.reserve(UPSTREAM_READ);
    match upstream.read_buf(up).await {
        Ok(0) => Err(SendError {
            error: wire::Error::Io(io::ErrorKind::UnexpectedEof),
            nothing_back: first,
        }),
        Ok(_) => Ok(()),
        Err(e) => Err(SendError {
            error: wire::Error::Io(e.kind()),
            nothing_back: first,
        }),
    }
}

/// Takes the request just served (`len` bytes, head and body) off the front of `read`,
/// leaving what was pipelined after it. False if `read` is shorter, which the body wait
/// rules out: the connection then closes rather than read body bytes as a head.
fn consume(read: &mut Vec<u8>, len: usize) -> bool {
    if read.len() == len {
        read.clear();
    } else if read.len() > len {
        read.drain(..len);
    } else {
        return false;
    }
    true
}

/// `timeout` from now, or a day short of forever for a timeout too large to add (a
/// config may say "300000000000y"; adding it would overflow).
fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Answers a request the codec or the proxy refuses before any upstream sees it, and
/// ends the connection: what follows such a head cannot be trusted to start a request.
async fn refuse<S: AsyncWrite + Unpin>(client: &mut S, e: Error) -> Flow {
    let _ = write_error(client, &e, true).await;
    Flow::Closed
}

/// Writes tether's own answer for `e`.
async fn write_error<S: AsyncWrite + Unpin>(
    client: &mut S,
    e: &Error,
    close: bool,
) -> io::Result<()> {
    write_answer(client, e, close, false).await
}

/// Writes tether's own answer for `e`; `head_only`: to a HEAD request, whose answer
/// has no content after its head (RFC 9110 §9.3.2).
async fn write_answer<S: AsyncWrite + Unpin>(
    client: &mut S,
    e: &Error,
    close: bool,
    head_only: bool,
) -> io::Result<()> {
    let status = e.status();
    let body = format!("{e}\n");
    let close = close || e.closes();
    // With a Date, as every response tether writes (RFC 9110 §6.6.1).
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ndate: {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes();
    if let Some(l) = e.location() {
        head.extend_from_slice(b"location: ");
        head.extend_from_slice(l.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    if !head_only {
        head.extend_from_slice(body.as_bytes());
    }
    send_all(client, &head).await
}

/// Writes `bytes` to the client and flushes: a no-op for TCP, but TLS may hold written
/// bytes in its buffer when the socket is full, and a response, or a streamed event,
/// must not wait for the next write to leave.
async fn send_all<S: AsyncWrite + Unpin>(client: &mut S, bytes: &[u8]) -> io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

/// A stream whose first reads return bytes already read from it: how a connection
/// opening with the HTTP/2 preface goes to hyper's HTTP/2 server without losing what
/// the client sent.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `prefix` read first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> Prefixed<S> {
    /// Whether the client opened with the HTTP/2 connection preface (RFC 9113 §3.4),
    /// reading (within `timeout`) only until its first bytes tell: on a TLS connection
    /// whose ALPN did not choose h2, such a client is refused rather than served
    /// HTTP/2 (RFC 9113 §3.3). What was read is replayed to whoever serves the rest.
    pub async fn opens_with_h2_preface(&mut self, timeout: Duration) -> bool {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let by = deadline(timeout);
        loop {
            let seen = &self.prefix[self.pos..];
            let n = seen.len().min(PREFACE.len());
            if seen[..n] != PREFACE[..n] {
                return false;
            }
            if n == PREFACE.len() {
                return true;
            }
            let read = tokio::time::timeout_at(by, self.inner.read_buf(&mut self.prefix));
            match read.await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
                Ok(Ok(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What a route changes on a head, as the HTTP/1 writer reads it.
struct Edited<'e>(Changes<'e>);

impl wire::Edit for Edited<'_> {
    fn drops(&self, name: &str) -> bool {
        self.0.edit.is_some_and(|e| e.drops(name))
            || (self.0.host.is_some() && name.eq_ignore_ascii_case("host"))
    }
    fn fields(&self, field: &mut dyn FnMut(&[u8], &[u8])) {
        if let Some(h) = self.0.host {
            field(b"host", h.as_bytes());
        }
        for (n, v) in self.0.edit.into_iter().flat_map(HeaderEdit::fields) {
            field(n.as_str().as_bytes(), v.as_bytes());
        }
    }
    fn target(&self) -> Option<&str> {
        self.0.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_complete_at_an_empty_line_with_either_line_ending() {
        assert!(has_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"));
        assert!(has_head(b"GET / HTTP/1.1\nHost: a\n\nrest"));
        assert!(has_head(b"GET / HTTP/1.1\nHost: a\n\r\n"));
        assert!(!has_head(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!has_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r"));
        assert!(!has_head(b""));
    }

    #[tokio::test(start_paused = true)]
    async fn lazy_timer_never_fires_before_the_deadline_it_is_asked_for() {
        let start = Instant::now();
        let mut t = LazyTimer::new();
        // A wait that ends early (the request head arrived after 4 s)...
        let first = tokio::time::timeout(
            Duration::from_secs(4),
            t.until(start + Duration::from_secs(10)),
        );
        assert!(first.await.is_err());
        // ...then the next wait, 10 s from now: the timer still registered for the old
        // deadline fires at 10 s, and the wait goes on to 14 s.
        t.until(Instant::now() + Duration::from_secs(10)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(14));
        // A deadline earlier than the one registered is honoured too.
        let abandoned = tokio::time::timeout(
            Duration::from_secs(1),
            t.until(Instant::now() + Duration::from_secs(100)),
        );
        assert!(abandoned.await.is_err());
        let asked = Instant::now();
        t.until(asked + Duration::from_secs(2)).await;
        assert_eq!(asked.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn prefixed_stream_replays_the_buffered_bytes_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(b"hello".to_vec(), b);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
