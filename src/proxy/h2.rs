//! tether's HTTP/2 server: the `h2` crate's connection (framing, HPACK, stream states
//! and flow control, RFC 9113), driven by one task per client connection that also
//! polls every stream's exchange, with no task, channel or `hyper` service per stream.
//! Each stream is a request to [`Proxy::handle`], whose answer is written back here; the
//! policy (routing, affinity, retries, blame, metrics, the access log) is the exchange's,
//! shared with the HTTP/1 codec ([`super::native`]).
//!
//! Why not hyper's HTTP/2 server, as before: it spawns a task per stream and wraps each
//! request and answer in its own body and service types, and on a machine whose cores
//! clients, proxy and pods share, that CPU is what sets throughput (benches/load/ and
//! the README's figures). The protocol stays the `h2` crate's, which hyper used too.
//!
//! Lifecycle of a connection: the preface and SETTINGS (RFC 9113 §3.4) within the
//! header timeout; then streams accepted up to `MAX_CONCURRENT_STREAMS`, each answered
//! as its exchange ends, its body sent as the client's flow-control window allows
//! (§5.2); a PING every [`KEEPALIVE`] with no PING answer by the next one closes the
//! connection (a peer that vanished without a FIN); a connection with no stream for
//! `idle_timeout` is closed with a GOAWAY (§6.8), as the HTTP/1 codec closes an idle
//! keep-alive connection, so an idle client that answers PINGs does not hold its
//! connection slot for ever; at shutdown a GOAWAY, and the streams in flight finish
//! within the grace period. A stream the client resets (§6.4)
//! drops its exchange, which counts the request as the client's abort and touches no
//! endpoint.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use h2::server::SendResponse;
use h2::SendStream;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::native::{LazyTimer, StopWait};
use super::{Connection, Proxy};
use crate::http::wire;
use crate::upstream::body::{ClientBody, ProxyBody};
use crate::upstream::h1::Interims;

/// How often an HTTP/2 connection is checked for a live peer with a PING.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// The connection's settings, as tether announces them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The preface must arrive within this time.
    pub header_timeout: Duration,
    /// A connection with no stream open for this long is closed (GOAWAY, NO_ERROR).
    pub idle_timeout: Duration,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE` (RFC 9113 §6.5.2): a larger header block is
    /// refused.
    pub max_header_bytes: usize,
    /// A stream whose client gives it no flow-control window for this long is reset
    /// (`send_timeout`: the stalled reader's bound, per stream as the socket's is per
    /// connection).
    pub send_timeout: Duration,
}

/// Flow-control windows, per stream and per connection (RFC 9113 §6.9.2): room for a
/// megabyte in flight, as hyper's server gave.
const WINDOW: u32 = 1024 * 1024;
/// Streams a client may have open at once (RFC 9113 §5.1.2).
const MAX_STREAMS: u32 = 1024;
/// Most bytes of an answer buffered per stream before waiting on the client.
const SEND_BUFFER: usize = 400 * 1024;
/// Streams the server may reset for the client's protocol errors before the
/// connection is ended, as hyper sets it. (The guard against streams the client resets
/// at once, "rapid reset", is h2's default, as it was under hyper.)
const MAX_ERROR_RESETS: usize = 1024;

impl Proxy {
    /// Serves one HTTP/2 connection until the client closes it, it fails, or shutdown
    /// (`shutdown` turning true) has let its streams finish.
    pub async fn serve_h2<S>(
        &self,
        io: S,
        conn: &Connection,
        limits: Limits,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), h2::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .max_concurrent_streams(MAX_STREAMS)
            .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
            .max_send_buffer_size(SEND_BUFFER)
            .max_local_error_reset_streams(Some(MAX_ERROR_RESETS));
        let mut h2 = match tokio::time::timeout(limits.header_timeout, builder.handshake(io)).await
        {
            Ok(handshaken) => handshaken?,
            Err(_) => return Ok(()),
        };
        let mut pings = h2.ping_pong();
        let mut keepalive = LazyTimer::new();
        let mut next_ping = Instant::now() + KEEPALIVE;
        let mut awaiting_pong = false;
        // Since when no stream has been open (`None` while some are, or once closing).
        let mut idle_since = Some(Instant::now());
        // One wait for the whole connection (see the HTTP/1 codec's `StopWait`).
        let stopping = shutdown.clone();
        let mut stop = pin!(shutdown.changed());
        let mut stop_armed = false;
        let mut closing = false;
        let mut streams = FuturesUnordered::new();
        loop {
            let event = poll_fn(|cx| {
                // New streams join the set and are polled at once, in the same wake.
                loop {
                    while let Poll::Ready(Some(ended)) = streams.poll_next_unpin(cx) {
                        let ended: Result<(), _> = ended;
                        if ended.is_err() {
                            tracing::error!(peer = %conn.peer, "an HTTP/2 stream's exchange panicked");
                        }
                    }
                    match h2.poll_accept(cx) {
                        Poll::Ready(Some(Ok((req, respond)))) => {
                            idle_since = None;
                            // Boxed once here (the set's own node would copy the
                            // future three times on the way in); a panic in one
                            // exchange resets its stream, not the connection's others.
                            let stream = self.stream(req, respond, conn, limits);
                            streams.push(Box::pin(AssertUnwindSafe(stream).catch_unwind()));
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Event::Closed(Err(e))),
                        // The connection is done: every stream ended and GOAWAY was
                        // exchanged, or the client closed it.
                        Poll::Ready(None) => return Poll::Ready(Event::Closed(Ok(()))),
                        Poll::Pending => break,
                    }
                }
                if streams.is_empty() && idle_since.is_none() && !closing {
                    idle_since = Some(Instant::now());
                }
                if let Some(pings) = &mut pings {
                    if awaiting_pong && pings.poll_pong(cx).is_ready() {
                        awaiting_pong = false;
                    }
                }
                let deadline = match idle_since {
                    Some(since) => next_ping.min(since + limits.idle_timeout),
                    None => next_ping,
                };
                if keepalive.poll_until(cx, deadline).is_ready() {
                    return Poll::Ready(Event::Tick);
                }
                if !closing {
                    let stopped = StopWait {
                        wait: stop.as_mut(),
                        armed: &mut stop_armed,
                        stopping: &stopping,
                    };
                    if pin!(stopped).poll(cx).is_ready() {
                        return Poll::Ready(Event::Shutdown);
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Closed(ended) => return ended,
                Event::Tick
                    if idle_since.is_some_and(|t| t + limits.idle_timeout <= Instant::now()) =>
                {
                    tracing::debug!(peer = %conn.peer, "idle HTTP/2 connection: closing");
                    h2.graceful_shutdown();
                    closing = true;
                    idle_since = None;
                }
                Event::Tick => {
                    // No answer to the last PING in a whole interval: the peer is gone.
                    // It is told with a GOAWAY, if it is there to read one.
                    if awaiting_pong {
                        tracing::debug!(peer = %conn.peer, "no PING answer: closing");
                        h2.abrupt_shutdown(h2::Reason::NO_ERROR);
                        let closed = poll_fn(|cx| h2.poll_closed(cx));
                        let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
                        return Ok(());
                    }
                    if let Some(p) = &mut pings {
                        awaiting_pong = p.send_ping(h2::Ping::opaque()).is_ok();
                    }
                    next_ping = Instant::now() + KEEPALIVE;
                }
                // Shutdown: a GOAWAY, then the streams in flight finish (the server's
                // grace period bounds how long).
                Event::Shutdown => {
                    h2.graceful_shutdown();
                    closing = true;
                    idle_since = None;
                }
            }
        }
    }

    /// One stream: its request through the exchange, and the answer back, preceded by
    /// the pod's interim responses as they come ([`send_interims`]). A reset from the
    /// client ends it where it is (its exchange dropped).
    async fn stream(
        &self,
        req: Request<h2::RecvStream>,
        mut respond: SendResponse<Bytes>,
        conn: &Connection,
        limits: Limits,
    ) {
        let length = content_length(req.headers());
        let req = req.map(|recv| ClientBody::new(recv, length));
        let head = req.method() == http::Method::HEAD;
        let interims = Interims::default();
        let answer = {
            // In the stream's own state, which the connection boxes once.
            let mut handled = pin!(self.handle(req, conn, &interims));
            let answered = poll_fn(|cx| {
                let polled = handled.as_mut().poll(cx);
                // What this poll of the exchange read before its answer, or before it
                // waited again, goes first; nothing woke for it.
                if interims.arrived() && !send_interims(&interims, &mut respond, cx) {
                    return Poll::Ready(None);
                }
                if let Poll::Ready(resp) = polled {
                    return Poll::Ready(Some(resp));
                }
                match respond.poll_reset(cx) {
                    Poll::Ready(_) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            });
            answered.await
        };
        let Some(resp) = answer else { return };
        let (mut parts, body) = resp.into_parts();
        shape_head(&mut parts.headers, parts.status, &body, head);
        let end = head || body.is_end_stream();
        let sent = respond.send_response(Response::from_parts(parts, ()), end);
        match sent {
            Ok(tx) if !end => {
                if send_body(body, tx, limits.send_timeout).await == Sent::Stalled {
                    self.send_timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "answer not sent");
                respond.send_reset(h2::Reason::INTERNAL_ERROR);
            }
        }
    }
}

/// Sends the interim (1xx) responses a pod sent ahead of its answer, as a proxy must
/// (RFC 9110 §15.2): each a HEADERS frame without END_STREAM before the answer's (RFC
/// 9113 §8.1), filtered as the HTTP/1 codec filters them (`wire::Interim`: no
/// connection-specific field, RFC 9113 §8.2.2). `false` if the client reset the
/// stream, which then gets none. Those of a try that failed before another answered
/// were sent already, as on HTTP/1.
fn send_interims(
    interims: &Interims,
    respond: &mut SendResponse<Bytes>,
    cx: &mut Context<'_>,
) -> bool {
    let heads = interims.take();
    if respond.poll_reset(cx).is_ready() {
        return false;
    }
    for head in heads {
        if let Err(e) = respond.send_informational(head) {
            tracing::debug!(error = %e, "interim response not sent");
        }
    }
    true
}

/// What the connection's task woke for.
enum Event {
    /// The connection ended, or failed.
    Closed(Result<(), h2::Error>),
    /// Time for the keep-alive PING.
    Tick,
    /// Shutdown began.
    Shutdown,
}

/// The request's `content-length`, which h2 has checked is one number (RFC 9113
/// §8.1.1) and holds the DATA frames to.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Completes an answer's head (whose connection-specific fields are already gone: RFC
/// 9113 §8.2.2): a `date` when the answer had none (RFC 9110 §6.6.1), and a
/// `content-length` when the body's length is known and nothing said it (RFC 9110
/// §8.6).
fn shape_head(fields: &mut http::HeaderMap, status: StatusCode, body: &ProxyBody, head: bool) {
    if !fields.contains_key(header::DATE) {
        if let Ok(v) = HeaderValue::from_bytes(&wire::http_date()) {
            fields.insert(header::DATE, v);
        }
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !head && !bodiless && !fields.contains_key(header::CONTENT_LENGTH) {
        if let Some(n) = body.size_hint().exact() {
            fields.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
}

/// How sending a body ended.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// Whole, cut by the upstream, or reset by the client.
    Ended,
    /// Reset by tether: the client gave the stream no window within `send_timeout`.
    Stalled,
}

/// Sends a body on its stream as the client's window allows (RFC 9113 §6.9), then its
/// trailers or the end of the stream. A reset from the client ends it (and so drops the
/// upstream's body, whose connection is then not reused); a broken upstream body resets
/// the stream, so the client can tell the cut from an end; a client that opens no
/// window for `send_timeout` gets the stream reset (CANCEL), which frees the upstream.
async fn send_body(mut body: ProxyBody, mut tx: SendStream<Bytes>, send_timeout: Duration) -> Sent {
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(frame) = std::pin::Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Some(frame));
            }
            match tx.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let frame = match frame {
            // The client reset the stream.
            None => return Sent::Ended,
            Some(None) => {
                let _ = tx.send_data(Bytes::new(), true);
                return Sent::Ended;
            }
            Some(Some(Ok(frame))) => frame,
            Some(Some(Err(e))) => {
                tracing::debug!(error = %e, "upstream body cut: resetting the stream");
                tx.send_reset(h2::Reason::INTERNAL_ERROR);
                return Sent::Ended;
            }
        };
        match frame.into_data() {
            Ok(mut data) => {
                let end = body.is_end_stream();
                if data.is_empty() && end {
                    let _ = tx.send_data(data, true);
                    return Sent::Ended;
                }
                while !data.is_empty() {
                    tx.reserve_capacity(data.len());
                    let room = poll_fn(|cx| tx.poll_capacity(cx));
                    let room = match tokio::time::timeout(send_timeout, room).await {
                        Ok(Some(Ok(n))) if n > 0 => n,
                        Ok(Some(Ok(_))) => continue,
                        // The stream was reset or the connection ended.
                        Ok(Some(Err(_)) | None) => return Sent::Ended,
                        // The client opened no window for the stream in all that time.
                        Err(_) => {
                            tracing::debug!(
                                "no flow-control window within send_timeout: resetting the stream"
                            );
                            tx.send_reset(h2::Reason::CANCEL);
                            return Sent::Stalled;
                        }
                    };
                    let chunk = data.split_to(room.min(data.len()));
                    if tx.send_data(chunk, end && data.is_empty()).is_err() {
                        return Sent::Ended;
                    }
                }
                if end {
                    return Sent::Ended;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = tx.send_trailers(trailers);
                } else {
                    let _ = tx.send_data(Bytes::new(), true);
                }
                return Sent::Ended;
            }
        }
    }
}
