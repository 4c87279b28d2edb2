//! tether's HTTP/2 server (RFC 9113): one task per client connection reads frames
//! ([`crate::http::h2::frame`]), decodes each request's header block straight into its
//! request ([`crate::http::h2::hpack`]), polls every stream's exchange
//! ([`Proxy::handle`], whose policy — routing, affinity, retries, blame, metrics, the
//! access log — is shared with the HTTP/1 codec, [`super::native`]), and writes the
//! answers: heads encoded without Huffman coding or the dynamic table, bodies framed
//! as the client's windows allow (§5.2, §6.9). No task, channel or service per stream.
//!
//! Why tether's own rather than the `h2` crate's server, which it drove before: see
//! [`crate::http::h2`]; the behavioural suite that held the crate's server holds this
//! one, on every transport.
//!
//! Lifecycle of a connection: the preface and SETTINGS (§3.4) within the header
//! timeout; then streams accepted up to [`MAX_STREAMS`] (more are refused,
//! REFUSED_STREAM), each answered as its exchange ends, its body sent as windows allow;
//! a request body's window reopens as the exchange takes its bytes, so a slow pod
//! slows its client rather than filling tether's memory; a PING every [`KEEPALIVE`]
//! with no answer by the next one closes the connection (a peer that vanished without a
//! FIN); a connection with no stream for `idle_timeout` is closed as an idle HTTP/1
//! keep-alive connection is; closing is a GOAWAY without a limit and a PING, then the
//! GOAWAY naming the last stream once the PING is answered (§6.8), and the streams in
//! flight finish within the grace period. A stream the client resets (§6.4) drops its
//! exchange, which counts the request as the client's abort and touches no endpoint.
//! Malformed requests (§8.1.1, §8.2, §8.3) are reset with PROTOCOL_ERROR; violations of
//! the connection's rules end it with GOAWAY. Guards: a header block at most twice
//! `max_header_bytes` across its CONTINUATIONs, rapid resets (CVE-2023-44487) and empty
//! DATA frames (CVE-2019-9518) end the connection with ENHANCE_YOUR_CALM, and a socket
//! the client does not read stops the reading of its frames (PING and SETTINGS
//! floods). Priorities are ignored, as RFC 9113 §5.3.2 allows.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::future::{AbortHandle, Abortable};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::native::{LazyTimer, StopWait};
use super::{Connection, Proxy};
use crate::http::h2::frame::{self, Frame, Reason};
use crate::http::h2::hpack;
use crate::http::{headers, wire};
use crate::upstream::body::{ClientBody, Fed, Feed, ProxyBody};

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

/// Our windows, per stream and per connection: room for a megabyte in flight.
const WINDOW: u32 = 1024 * 1024;
/// Streams a client may have open at once (RFC 9113 §5.1.2).
const MAX_STREAMS: u32 = 1024;
/// Bytes gathered for the socket before the connection stops pumping bodies.
const WRITE_HIGH: usize = 64 * 1024;
/// The largest frame we accept (our SETTINGS_MAX_FRAME_SIZE: the default).
const MAX_FRAME: u32 = frame::DEFAULT_MAX_FRAME_SIZE;
/// Streams the client may reset before their answer without question; past it, a
/// client that resets most of the streams it opens is ended (the "rapid reset" guard,
/// CVE-2023-44487): such streams cost an exchange each and give the client nothing.
const FREE_RESETS: u32 = 100;
/// Empty DATA frames (no bytes, no END_STREAM) a connection may send.
const MAX_EMPTY_FRAMES: u32 = 1024;

type Handled<'a> = Pin<Box<dyn Future<Output = (u32, Option<Response<ProxyBody>>)> + Send + 'a>>;

/// The interim (1xx) responses pods sent, waiting to go out on their streams ahead of
/// the answers (RFC 9110 §15.2): each stream's exchange fills its own `Interims` slot,
/// which the stream's future moves here after each poll; the connection sends them
/// before it handles the answers that poll completed.
#[derive(Default)]
struct Interim1xx {
    any: std::sync::atomic::AtomicBool,
    heads: std::sync::Mutex<Vec<(u32, Response<()>)>>,
}

impl Interim1xx {
    fn push(&self, id: u32, heads: Vec<Response<()>>) {
        let mut all = self
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.extend(heads.into_iter().map(|h| (id, h)));
        self.any.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> Vec<(u32, Response<()>)> {
        if !self.any.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut all = self
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.any.store(false, Ordering::Relaxed);
        std::mem::take(&mut *all)
    }
}

/// Writes the header blocks tether sends: an answer's head, an interim head, a trailer
/// section, each a HEADERS frame (and CONTINUATIONs past the peer's frame size, RFC
/// 9113 §6.10) encoded by the connection's one HPACK encoder.
struct Heads {
    encoder: hpack::Encoder,
    /// The block being encoded, reused.
    block: Vec<u8>,
    /// The peer's SETTINGS_MAX_FRAME_SIZE.
    max_frame: u32,
}

impl Heads {
    /// `:status` first when given (none in trailers), then the fields, less any that
    /// is hop-by-hop: connection-specific fields never go out on HTTP/2 (RFC 9113
    /// §8.2.2).
    fn write(
        &mut self,
        out: &mut Vec<u8>,
        stream: u32,
        status: Option<u16>,
        fields: &HeaderMap,
        end_stream: bool,
    ) {
        self.block.clear();
        self.encoder.begin(&mut self.block);
        if let Some(code) = status {
            self.encoder.status(&mut self.block, code);
        }
        for (name, value) in fields {
            if headers::is_hop_by_hop(name) {
                continue;
            }
            self.encoder
                .field(&mut self.block, name.as_str().as_bytes(), value.as_bytes());
        }
        frame::write_headers(out, stream, &self.block, end_stream, self.max_frame);
    }
}

/// Our side of closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoAway {
    /// Open.
    None,
    /// GOAWAY sent without a limit, with a PING whose answer ends the wait.
    Draining,
    /// GOAWAY sent naming the last stream served.
    Final,
}

/// The PING payload sent with a draining GOAWAY.
const DRAIN_PING: [u8; 8] = *b"draining";

/// One stream's state on the server.
struct Stream {
    /// The client may still send DATA (no END_STREAM yet).
    recv_open: bool,
    /// The client's room to send on this stream.
    recv_window: i64,
    /// Bytes of the request body the exchange has taken (a running count).
    taken: Option<Arc<AtomicUsize>>,
    taken_seen: usize,
    /// Bytes the client sent on the stream that are done with (taken, padding, or
    /// nobody's to read) and not yet returned to it with a WINDOW_UPDATE.
    unreturned: i64,
    /// Where the request body's frames go.
    feed: Option<futures::channel::mpsc::UnboundedSender<Fed>>,
    /// Bytes `content-length` still expects (RFC 9113 §8.1.1).
    expect: Option<u64>,
    /// Our room to send on this stream.
    send_window: i64,
    /// Drops the exchange when the client resets the stream.
    abort: Option<AbortHandle>,
    /// The answer's body being sent, and bytes of it not yet framed.
    body: Option<ProxyBody>,
    pending: Option<Bytes>,
    /// `pending` is the body's last data.
    pending_end: bool,
    /// Since when the stream has waited on the client's window with data to send.
    blocked_since: Option<Instant>,
    /// A HEAD request: its answer has no body.
    head: bool,
}

/// A connection's state.
struct Conn<'a, S> {
    io: S,
    interims: &'a Interim1xx,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    decoder: hpack::Decoder,
    /// Writes the heads tether sends.
    heads: Heads,
    block: Vec<u8>,
    /// A header block in progress: its stream and whether its HEADERS ended the stream.
    continuing: Option<(u32, bool)>,
    streams: HashMap<u32, Stream, ahash::RandomState>,
    /// Streams with an answer body to send.
    sending: VecDeque<u32>,
    handled: FuturesUnordered<Abortable<Handled<'a>>>,
    last_stream: u32,
    peer_window: i64,
    send_window: i64,
    recv_window: i64,
    recv_consumed: i64,
    preface_seen: usize,
    settings_seen: bool,
    /// Where our GOAWAY stands (RFC 9113 §6.8).
    goaway: GoAway,
    peer_goaway: bool,
    resets: u32,
    /// Streams the client opened.
    opened: u32,
    /// DATA frames with no bytes and no END_STREAM.
    empty_frames: u32,
    read_closed: bool,
    max_header_bytes: usize,
}

/// Why the connection stops.
enum Ended {
    /// Cleanly (all done, or the client left).
    Done,
    /// With a connection error we told the client about.
    Error(Reason, &'static str),
    /// The socket failed.
    Io(std::io::Error),
}

impl Proxy {
    /// Serves one HTTP/2 connection until the client closes it, it fails, or shutdown
    /// (`shutdown` turning true) has let its streams finish.
    pub async fn serve_h2<S>(
        &self,
        io: S,
        conn: &Connection,
        limits: Limits,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), std::io::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let interims = Interim1xx::default();
        let mut c = Conn {
            io,
            interims: &interims,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: Vec::with_capacity(16 * 1024),
            decoder: hpack::Decoder::new(4096),
            heads: Heads {
                encoder: hpack::Encoder::new(),
                block: Vec::new(),
                max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            },
            block: Vec::new(),
            continuing: None,
            streams: HashMap::default(),
            sending: VecDeque::new(),
            handled: FuturesUnordered::new(),
            last_stream: 0,
            peer_window: 65_535,
            send_window: 65_535,
            recv_window: i64::from(WINDOW),
            recv_consumed: 0,
            preface_seen: 0,
            settings_seen: false,
            goaway: GoAway::None,
            peer_goaway: false,
            resets: 0,
            opened: 0,
            empty_frames: 0,
            read_closed: false,
            max_header_bytes: limits.max_header_bytes,
        };
        // Our SETTINGS, and the connection window opened to ours (RFC 9113 §6.9.2).
        frame::write_settings(
            &mut c.wbuf,
            &frame::Settings {
                max_concurrent_streams: Some(MAX_STREAMS),
                initial_window_size: Some(WINDOW),
                max_header_list_size: Some(limits.max_header_bytes.min(u32::MAX as usize) as u32),
                ..Default::default()
            },
        );
        frame::write_window_update(&mut c.wbuf, 0, WINDOW - 65_535);

        let mut timer = LazyTimer::new();
        let started = Instant::now();
        let mut next_ping = started + KEEPALIVE;
        let mut awaiting_pong = false;
        let mut idle_since = Some(started);
        let stopping = shutdown.clone();
        let mut stop = pin!(shutdown.changed());
        let mut stop_armed = false;
        loop {
            let event = poll_fn(|cx| {
                if let Err(ended) = c.drive(self, conn, cx, limits, &mut awaiting_pong) {
                    return Poll::Ready(Some(ended));
                }
                if c.done() {
                    return Poll::Ready(Some(Ended::Done));
                }
                if !c.settings_seen && Instant::now() >= started + limits.header_timeout {
                    return Poll::Ready(Some(Ended::Done));
                }
                if c.streams.is_empty() && c.handled.is_empty() {
                    if idle_since.is_none() {
                        idle_since = Some(Instant::now());
                    }
                } else {
                    idle_since = None;
                }
                let mut deadline = next_ping;
                if let Some(t) = idle_since {
                    deadline = deadline.min(t + limits.idle_timeout);
                }
                if !c.settings_seen {
                    deadline = deadline.min(started + limits.header_timeout);
                }
                if let Some(t) = c.oldest_blocked() {
                    deadline = deadline.min(t + limits.send_timeout);
                }
                if timer.poll_until(cx, deadline).is_ready() {
                    return Poll::Ready(None);
                }
                if c.goaway == GoAway::None {
                    let stopped = StopWait {
                        wait: stop.as_mut(),
                        armed: &mut stop_armed,
                        stopping: &stopping,
                    };
                    if pin!(stopped).poll(cx).is_ready() {
                        c.go_away(Reason::NO_ERROR);
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                Some(Ended::Done) => return c.finish().await,
                Some(Ended::Error(reason, why)) => {
                    tracing::debug!(peer = %conn.peer, ?reason, why, "HTTP/2 connection error");
                    c.go_away(reason);
                    return c.finish().await;
                }
                Some(Ended::Io(e)) => return Err(e),
                None => {
                    let now = Instant::now();
                    if idle_since.is_some_and(|t| t + limits.idle_timeout <= now)
                        || (!c.settings_seen && started + limits.header_timeout <= now)
                    {
                        c.go_away(Reason::NO_ERROR);
                        idle_since = None;
                    }
                    let stalled = c.reset_stalled(now, limits.send_timeout);
                    if stalled > 0 {
                        self.send_timeouts
                            .fetch_add(stalled as u64, Ordering::Relaxed);
                    }
                    if now >= next_ping {
                        if awaiting_pong {
                            tracing::debug!(peer = %conn.peer, "no PING answer: closing");
                            c.go_away(Reason::NO_ERROR);
                            let _ = c.finish().await;
                            return Ok(());
                        }
                        frame::write_ping(&mut c.wbuf, *b"tether\0\0");
                        awaiting_pong = true;
                        next_ping = now + KEEPALIVE;
                    }
                }
            }
        }
    }
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Conn<'a, S> {
    /// Reads and handles frames, polls the exchanges, sends what can be sent.
    fn drive(
        &mut self,
        proxy: &'a Proxy,
        conn: &'a Connection,
        cx: &mut Context<'_>,
        limits: Limits,
        awaiting_pong: &mut bool,
    ) -> Result<(), Ended> {
        loop {
            let mut progress = false;
            // Frames in.
            while !self.read_closed && self.wbuf.len() < WRITE_HIGH {
                match self.next_frame()? {
                    Some((head, payload)) => {
                        self.on_frame(head, payload, proxy, conn, limits, awaiting_pong)?;
                        progress = true;
                    }
                    None => {
                        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                            self.rbuf.reserve(16 * 1024);
                        }
                        let n = match tokio_util::io::poll_read_buf(
                            Pin::new(&mut self.io),
                            cx,
                            &mut self.rbuf,
                        ) {
                            Poll::Ready(Ok(n)) => n,
                            Poll::Ready(Err(e)) => return Err(Ended::Io(e)),
                            Poll::Pending => break,
                        };
                        if n == 0 {
                            self.read_closed = true;
                            for s in self.streams.values_mut() {
                                if let Some(a) = s.abort.take() {
                                    a.abort();
                                }
                            }
                            break;
                        }
                    }
                }
            }
            // Exchanges.
            while let Poll::Ready(Some(done)) = self.handled.poll_next_unpin(cx) {
                progress = true;
                self.send_interims();
                let Ok((id, answer)) = done else { continue };
                self.answer(id, answer);
            }
            self.send_interims();
            // Request bodies taken: their windows reopen.
            self.return_windows();
            // Bodies out.
            if self.pump(cx) {
                progress = true;
            }
            // Bytes out.
            self.flush(cx)?;
            if !progress {
                return Ok(());
            }
        }
    }

    /// The next whole frame in the read buffer, after the preface.
    fn next_frame(&mut self) -> Result<Option<(frame::Head, Bytes)>, Ended> {
        if self.preface_seen < frame::PREFACE.len() {
            let want = frame::PREFACE.len() - self.preface_seen;
            let have = self.rbuf.len().min(want);
            if self.rbuf[..have] != frame::PREFACE[self.preface_seen..self.preface_seen + have] {
                return Err(Ended::Error(Reason::PROTOCOL_ERROR, "bad preface"));
            }
            self.rbuf.advance(have);
            self.preface_seen += have;
            if self.preface_seen < frame::PREFACE.len() {
                return Ok(None);
            }
        }
        let Some(head) = self.rbuf.get(..frame::HEAD_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; frame::HEAD_LEN];
        h.copy_from_slice(head);
        let head = frame::head(&h);
        if head.len > MAX_FRAME {
            return Err(Ended::Error(Reason::FRAME_SIZE_ERROR, "frame too large"));
        }
        let total = frame::HEAD_LEN + head.len as usize;
        if self.rbuf.len() < total {
            self.rbuf.reserve(total - self.rbuf.len());
            return Ok(None);
        }
        let mut whole = self.rbuf.split_to(total);
        whole.advance(frame::HEAD_LEN);
        Ok(Some((head, whole.freeze())))
    }

    fn on_frame(
        &mut self,
        head: frame::Head,
        payload: Bytes,
        proxy: &'a Proxy,
        conn: &'a Connection,
        limits: Limits,
        awaiting_pong: &mut bool,
    ) -> Result<(), Ended> {
        // A header block in progress admits only its CONTINUATION (RFC 9113 §6.10).
        if let Some((id, _)) = self.continuing {
            if head.kind != frame::kind::CONTINUATION || head.stream != id {
                return Err(Ended::Error(
                    Reason::PROTOCOL_ERROR,
                    "header block interrupted",
                ));
            }
        }
        let parsed = match frame::parse(&head, payload, MAX_FRAME) {
            Ok(f) => f,
            Err(frame::Error::Connection(reason, why)) => return Err(Ended::Error(reason, why)),
            Err(frame::Error::Stream(id, reason, _)) => {
                self.reset(id, reason);
                return Ok(());
            }
        };
        // The client's preface ends with SETTINGS (RFC 9113 §3.4).
        if !self.settings_seen && !matches!(parsed, Frame::Settings { ack: false, .. }) {
            return Err(Ended::Error(
                Reason::PROTOCOL_ERROR,
                "preface without settings",
            ));
        }
        match parsed {
            Frame::Settings { ack: true, .. } => {}
            Frame::Settings { settings, .. } => {
                self.settings_seen = true;
                if let Some(n) = settings.max_frame_size {
                    self.heads.max_frame = n;
                }
                if let Some(w) = settings.initial_window_size {
                    // Every stream's window moves by the change (RFC 9113 §6.9.2).
                    let delta = i64::from(w) - self.peer_window;
                    self.peer_window = i64::from(w);
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > i64::from(i32::MAX) {
                            return Err(Ended::Error(
                                Reason::FLOW_CONTROL_ERROR,
                                "window overflow",
                            ));
                        }
                    }
                }
                frame::write_settings_ack(&mut self.wbuf);
            }
            // The answer to the PING sent with the first GOAWAY: every stream the
            // client opened before it saw that GOAWAY has arrived, so the last one can
            // be named (RFC 9113 §6.8).
            Frame::Ping { ack: true, payload } if payload == DRAIN_PING => {
                if self.goaway == GoAway::Draining {
                    frame::write_goaway(&mut self.wbuf, self.last_stream, Reason::NO_ERROR, b"");
                    self.goaway = GoAway::Final;
                }
            }
            Frame::Ping { ack: true, .. } => *awaiting_pong = false,
            Frame::Ping { payload, .. } => frame::write_ping_ack(&mut self.wbuf, payload),
            Frame::GoAway { .. } => {
                self.peer_goaway = true;
            }
            Frame::WindowUpdate {
                stream: 0,
                increment,
            } => {
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(i32::MAX) {
                    return Err(Ended::Error(Reason::FLOW_CONTROL_ERROR, "window overflow"));
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.send_window += i64::from(increment);
                    if s.send_window > i64::from(i32::MAX) {
                        self.reset(stream, Reason::FLOW_CONTROL_ERROR);
                    }
                } else if stream > self.last_stream {
                    return Err(Ended::Error(
                        Reason::PROTOCOL_ERROR,
                        "window update on idle stream",
                    ));
                }
            }
            Frame::RstStream { stream, .. } => {
                if stream > self.last_stream {
                    return Err(Ended::Error(
                        Reason::PROTOCOL_ERROR,
                        "reset of an idle stream",
                    ));
                }
                if let Some(mut s) = self.streams.remove(&stream) {
                    if let Some(a) = s.abort.take() {
                        a.abort();
                        self.resets += 1;
                        if self.resets > FREE_RESETS && self.resets * 4 > self.opened * 3 {
                            return Err(Ended::Error(Reason::ENHANCE_YOUR_CALM, "too many resets"));
                        }
                    }
                    if let Some(feed) = s.feed.take() {
                        let _ = feed.unbounded_send(Fed::Broken(h2::Reason::CANCEL));
                    }
                }
            }
            Frame::Priority { .. } | Frame::Unknown => {}
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                block,
            } => {
                self.block.clear();
                self.block.extend_from_slice(&block);
                if end_headers {
                    self.on_header_block(stream, end_stream, proxy, conn, limits)?;
                } else {
                    self.continuing = Some((stream, end_stream));
                }
            }
            Frame::Continuation {
                stream,
                end_headers,
                block,
            } => {
                let Some((_, end_stream)) = self.continuing else {
                    return Err(Ended::Error(
                        Reason::PROTOCOL_ERROR,
                        "continuation without headers",
                    ));
                };
                if self.block.len() + block.len() > self.max_header_bytes.saturating_mul(2) + 16_384
                {
                    return Err(Ended::Error(
                        Reason::ENHANCE_YOUR_CALM,
                        "header block too large",
                    ));
                }
                self.block.extend_from_slice(&block);
                if end_headers {
                    self.continuing = None;
                    self.on_header_block(stream, end_stream, proxy, conn, limits)?;
                }
            }
            Frame::Data {
                stream,
                end_stream,
                data,
                flow_len,
            } => {
                // Frames that carry nothing and end nothing cost work and give none
                // (CVE-2019-9518): a client sending many is ended.
                if flow_len == 0 && !end_stream {
                    self.empty_frames += 1;
                    if self.empty_frames > MAX_EMPTY_FRAMES {
                        return Err(Ended::Error(Reason::ENHANCE_YOUR_CALM, "empty data frames"));
                    }
                }
                let flow = i64::from(flow_len);
                self.recv_window -= flow;
                if self.recv_window < 0 {
                    return Err(Ended::Error(
                        Reason::FLOW_CONTROL_ERROR,
                        "connection window exceeded",
                    ));
                }
                // Padding and bytes of streams no one reads go back at once.
                let mut returned = flow - data.len() as i64;
                match self.streams.get_mut(&stream) {
                    Some(s) if s.recv_open => {
                        s.recv_window -= flow;
                        if s.recv_window < 0 {
                            self.recv_consumed += flow;
                            self.reset(stream, Reason::FLOW_CONTROL_ERROR);
                            return Ok(());
                        }
                        let n = data.len() as u64;
                        let over = match &mut s.expect {
                            Some(left) if *left < n => true,
                            Some(left) => {
                                *left -= n;
                                end_stream && *left > 0
                            }
                            None => false,
                        };
                        if over {
                            self.recv_consumed += flow;
                            self.reset(stream, Reason::PROTOCOL_ERROR);
                            return Ok(());
                        }
                        match &s.feed {
                            Some(feed) if !data.is_empty() => {
                                if feed.unbounded_send(Fed::Data(data)).is_err() {
                                    returned = flow;
                                }
                            }
                            _ => returned = flow,
                        }
                        s.unreturned += returned;
                        if end_stream {
                            s.recv_open = false;
                            s.feed = None;
                            self.recv_consumed += returned;
                            self.close_recv(stream);
                            return Ok(());
                        }
                    }
                    Some(_) => {
                        self.recv_consumed += flow;
                        self.reset(stream, Reason::STREAM_CLOSED);
                        return Ok(());
                    }
                    None if stream > self.last_stream => {
                        return Err(Ended::Error(
                            Reason::PROTOCOL_ERROR,
                            "data on an idle stream",
                        ));
                    }
                    None => {
                        self.recv_consumed += flow;
                        frame::write_rst_stream(&mut self.wbuf, stream, Reason::STREAM_CLOSED);
                        return Ok(());
                    }
                }
                self.recv_consumed += returned;
            }
        }
        Ok(())
    }

    /// A whole header block: a new request, or a request's trailers.
    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        proxy: &'a Proxy,
        conn: &'a Connection,
        limits: Limits,
    ) -> Result<(), Ended> {
        let block = std::mem::take(&mut self.block);
        let result = if self.streams.contains_key(&id) {
            // Trailers: they end the stream and carry no pseudo-fields (RFC 9113 §8.1).
            let mut trailers = HeaderMap::new();
            let mut bad = !end_stream;
            let decoded = self.decoder.decode(&block, self.max_header_bytes, |n, v| {
                if n.first() == Some(&b':') {
                    bad = true;
                } else if let (Ok(n), Ok(v)) =
                    (HeaderName::from_bytes(n), HeaderValue::from_bytes(v))
                {
                    trailers.append(n, v);
                } else {
                    bad = true;
                }
                Ok::<(), ()>(())
            });
            if decoded.is_err() {
                self.block = block;
                return Err(Ended::Error(Reason::COMPRESSION_ERROR, "bad header block"));
            }
            let ok = match self.streams.get_mut(&id) {
                Some(s) if !bad && s.recv_open && s.expect.is_none_or(|left| left == 0) => {
                    s.recv_open = false;
                    if let Some(feed) = s.feed.take() {
                        let _ = feed.unbounded_send(Fed::Trailers(trailers));
                    }
                    true
                }
                _ => false,
            };
            if ok {
                self.close_recv(id);
            } else {
                self.reset(id, Reason::PROTOCOL_ERROR);
            }
            Ok(())
        } else if id <= self.last_stream || id % 2 == 0 {
            // A closed stream's or a server stream's id (RFC 9113 §5.1.1).
            Err(Ended::Error(
                Reason::PROTOCOL_ERROR,
                "headers on a used stream id",
            ))
        } else {
            self.last_stream = id;
            self.opened = self.opened.saturating_add(1);
            let mut req = RequestParts::default();
            let decoded = self.decoder.decode(&block, self.max_header_bytes, |n, v| {
                req.field(n, v);
                Ok::<(), ()>(())
            });
            match decoded {
                Err(hpack::DecodeError::Hpack(e)) if e.is_compression_error() => {
                    self.block = block;
                    return Err(Ended::Error(Reason::COMPRESSION_ERROR, "bad header block"));
                }
                // Too large a head: answered 431, the connection goes on (RFC 9113
                // §10.5.1, as the HTTP/1 codec answers it).
                Err(_) => req.too_large = true,
                Ok(()) => {}
            }
            if self.goaway == GoAway::Final || self.peer_goaway {
                // Past our GOAWAY: not processed (RFC 9113 §6.8).
                frame::write_rst_stream(&mut self.wbuf, id, Reason::REFUSED_STREAM);
            } else if self.streams.len() >= MAX_STREAMS as usize {
                frame::write_rst_stream(&mut self.wbuf, id, Reason::REFUSED_STREAM);
            } else if req.too_large {
                self.heads
                    .write(&mut self.wbuf, id, Some(431), &HeaderMap::new(), true);
                if !end_stream {
                    frame::write_rst_stream(&mut self.wbuf, id, Reason::NO_ERROR);
                }
            } else {
                self.start(id, req, end_stream, proxy, conn, limits);
            }
            Ok(())
        };
        self.block = block;
        result
    }

    /// Starts a stream's exchange.
    fn start(
        &mut self,
        id: u32,
        req: RequestParts,
        end_stream: bool,
        proxy: &'a Proxy,
        conn: &'a Connection,
        _limits: Limits,
    ) {
        let expect = req.length;
        let Some(request) = req.build() else {
            frame::write_rst_stream(&mut self.wbuf, id, Reason::PROTOCOL_ERROR);
            return;
        };
        if end_stream && expect.is_some_and(|n| n > 0) {
            frame::write_rst_stream(&mut self.wbuf, id, Reason::PROTOCOL_ERROR);
            return;
        }
        let (feed, taken, body) = if end_stream {
            (None, None, ClientBody::empty())
        } else {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            let taken = Arc::new(AtomicUsize::new(0));
            let body = ClientBody::fed(
                Feed {
                    rx,
                    taken: taken.clone(),
                },
                expect,
            );
            (Some(tx), Some(taken), body)
        };
        let head = request.method() == Method::HEAD;
        let request = request.map(|()| body);
        let (abort, registration) = AbortHandle::new_pair();
        let out = self.interims;
        let fut: Handled<'a> = Box::pin(async move {
            let interims = crate::upstream::h1::Interims::default();
            let mut handled =
                pin!(AssertUnwindSafe(proxy.handle(request, conn, &interims)).catch_unwind());
            let answer = poll_fn(|cx| {
                let polled = handled.as_mut().poll(cx);
                if interims.arrived() {
                    out.push(id, interims.take());
                }
                polled
            })
            .await
            .ok();
            (id, answer)
        });
        self.handled.push(Abortable::new(fut, registration));
        self.streams.insert(
            id,
            Stream {
                recv_open: !end_stream,
                recv_window: i64::from(WINDOW),
                taken,
                taken_seen: 0,
                unreturned: 0,
                feed,
                expect,
                send_window: self.peer_window,
                abort: Some(abort),
                body: None,
                pending: None,
                pending_end: false,
                blocked_since: None,
                head,
            },
        );
    }

    /// Sends the interim responses that arrived, each a HEADERS frame without
    /// END_STREAM ahead of its stream's answer (RFC 9113 §8.1), to streams still waiting
    /// for that answer.
    fn send_interims(&mut self) {
        for (id, head) in self.interims.take() {
            if self.streams.get(&id).is_none_or(|s| s.abort.is_none()) {
                continue;
            }
            let status = Some(head.status().as_u16());
            self.heads
                .write(&mut self.wbuf, id, status, head.headers(), false);
        }
    }

    /// Writes an exchange's answer head, and queues its body.
    fn answer(&mut self, id: u32, answer: Option<Response<ProxyBody>>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.abort = None;
        let head = s.head;
        let Some(resp) = answer else {
            tracing::error!("an HTTP/2 stream's exchange panicked");
            self.reset(id, Reason::INTERNAL_ERROR);
            return;
        };
        let (mut parts, body) = resp.into_parts();
        shape_head(&mut parts.headers, parts.status, &body, head);
        let end = head || body.is_end_stream();
        let status = Some(parts.status.as_u16());
        self.heads
            .write(&mut self.wbuf, id, status, &parts.headers, end);
        if end {
            self.close_send(id);
        } else if let Some(s) = self.streams.get_mut(&id) {
            s.body = Some(body);
            self.sending.push_back(id);
        }
    }

    /// Frames answer bodies as windows allow; whether anything was written.
    fn pump(&mut self, cx: &mut Context<'_>) -> bool {
        let mut wrote = false;
        let mut rounds = self.sending.len();
        while rounds > 0 && self.wbuf.len() < WRITE_HIGH {
            rounds -= 1;
            let Some(id) = self.sending.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            let mut finished = false;
            let mut broken = false;
            let mut requeue = false;
            loop {
                if let Some(data) = &mut s.pending {
                    let room = s.send_window.min(self.send_window);
                    if room <= 0 {
                        if s.blocked_since.is_none() {
                            s.blocked_since = Some(Instant::now());
                        }
                        requeue = self.send_window > 0;
                        break;
                    }
                    s.blocked_since = None;
                    let n = (room as usize)
                        .min(self.heads.max_frame as usize)
                        .min(data.len());
                    let chunk = data.split_to(n);
                    let last = data.is_empty() && s.pending_end;
                    frame::write_data_head(&mut self.wbuf, id, n, last);
                    self.wbuf.extend_from_slice(&chunk);
                    s.send_window -= n as i64;
                    self.send_window -= n as i64;
                    wrote = true;
                    if data.is_empty() {
                        s.pending = None;
                        if last {
                            finished = true;
                            break;
                        }
                    }
                    if self.wbuf.len() >= WRITE_HIGH {
                        requeue = true;
                        break;
                    }
                    continue;
                }
                let Some(body) = &mut s.body else {
                    finished = true;
                    break;
                };
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => {
                        frame::write_data_head(&mut self.wbuf, id, 0, true);
                        wrote = true;
                        finished = true;
                        break;
                    }
                    Poll::Ready(Some(Err(_))) => {
                        broken = true;
                        break;
                    }
                    Poll::Ready(Some(Ok(f))) => match f.into_data() {
                        Ok(data) => {
                            s.pending_end = body.is_end_stream();
                            if data.is_empty() && s.pending_end {
                                frame::write_data_head(&mut self.wbuf, id, 0, true);
                                wrote = true;
                                finished = true;
                                break;
                            }
                            if !data.is_empty() {
                                s.pending = Some(data);
                            }
                        }
                        Err(f) => {
                            match f.into_trailers() {
                                Ok(trailers) => {
                                    self.heads.write(&mut self.wbuf, id, None, &trailers, true)
                                }
                                Err(_) => frame::write_data_head(&mut self.wbuf, id, 0, true),
                            }
                            wrote = true;
                            finished = true;
                            break;
                        }
                    },
                }
            }
            if broken {
                self.reset(id, Reason::INTERNAL_ERROR);
            } else if finished {
                self.close_send(id);
            } else if requeue {
                self.sending.push_back(id);
            } else {
                // Waiting on its body (woken through it) or on a window (a
                // WINDOW_UPDATE brings it back).
                self.sending.push_back(id);
            }
        }
        wrote
    }

    /// Our half of a stream is done: it is gone once the client's half is too.
    /// A client still sending is told to stop (RST_STREAM NO_ERROR: the answer is
    /// complete without the rest, RFC 9113 §8.1).
    fn close_send(&mut self, id: u32) {
        if let Some(s) = self.streams.remove(&id) {
            if s.recv_open {
                frame::write_rst_stream(&mut self.wbuf, id, Reason::NO_ERROR);
            }
        }
    }

    /// The client's half ended: the stream is gone if its answer went out already.
    fn close_recv(&mut self, id: u32) {
        if self
            .streams
            .get(&id)
            .is_some_and(|s| s.abort.is_none() && s.body.is_none() && !s.recv_open)
        {
            self.streams.remove(&id);
        }
    }

    /// Ends a stream with RST_STREAM (RFC 9113 §6.4).
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::write_rst_stream(&mut self.wbuf, id, reason);
        if let Some(mut s) = self.streams.remove(&id) {
            if let Some(a) = s.abort.take() {
                a.abort();
            }
            if let Some(feed) = s.feed.take() {
                let _ = feed.unbounded_send(Fed::Broken(h2::Reason::from(reason.0)));
            }
        }
    }

    /// Returns the bytes the exchanges took as window (RFC 9113 §6.9).
    fn return_windows(&mut self) {
        for (&id, s) in self.streams.iter_mut() {
            if let Some(taken) = &s.taken {
                let now = taken.load(Ordering::Relaxed);
                let fresh = now.saturating_sub(s.taken_seen) as i64;
                s.taken_seen = now;
                self.recv_consumed += fresh;
                s.unreturned += fresh;
            }
            // In halves, not per frame: one WINDOW_UPDATE per half window taken.
            if s.recv_open && s.unreturned >= i64::from(WINDOW / 2) {
                frame::write_window_update(&mut self.wbuf, id, s.unreturned as u32);
                s.recv_window += s.unreturned;
                s.unreturned = 0;
            }
        }
        if self.recv_consumed >= i64::from(WINDOW / 2) {
            frame::write_window_update(&mut self.wbuf, 0, self.recv_consumed as u32);
            self.recv_window += self.recv_consumed;
            self.recv_consumed = 0;
        }
    }

    /// Writes what is gathered.
    fn flush(&mut self, cx: &mut Context<'_>) -> Result<(), Ended> {
        let mut at = 0;
        while at < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[at..]) {
                Poll::Ready(Ok(0)) => {
                    return Err(Ended::Io(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => at += n,
                Poll::Ready(Err(e)) => return Err(Ended::Io(e)),
                Poll::Pending => break,
            }
        }
        self.wbuf.drain(..at);
        if self.wbuf.is_empty() {
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(Ended::Io(e));
            }
        }
        Ok(())
    }

    /// Begins closing: for NO_ERROR, a GOAWAY naming no limit and a PING, the final
    /// GOAWAY naming the last stream once the PING's answer shows the client has seen
    /// the first (so a stream it opened meanwhile is served, not refused: RFC 9113
    /// §6.8); for an error, the final GOAWAY at once.
    fn go_away(&mut self, reason: Reason) {
        match (self.goaway, reason) {
            (GoAway::Final, _) => {}
            (GoAway::None, Reason::NO_ERROR) => {
                frame::write_goaway(&mut self.wbuf, frame::MAX_WINDOW_SIZE, reason, b"");
                frame::write_ping(&mut self.wbuf, DRAIN_PING);
                self.goaway = GoAway::Draining;
            }
            (GoAway::Draining, Reason::NO_ERROR) => {}
            _ => {
                frame::write_goaway(&mut self.wbuf, self.last_stream, reason, b"");
                self.goaway = GoAway::Final;
            }
        }
    }

    /// Nothing more will happen: the client left, or every stream ended after GOAWAY.
    fn done(&self) -> bool {
        (self.read_closed && self.handled.is_empty())
            || ((self.goaway == GoAway::Final || self.peer_goaway)
                && self.streams.is_empty()
                && self.handled.is_empty())
    }

    fn oldest_blocked(&self) -> Option<Instant> {
        self.streams.values().filter_map(|s| s.blocked_since).min()
    }

    /// Resets the streams the client has given no window for `send_timeout`.
    fn reset_stalled(&mut self, now: Instant, send_timeout: Duration) -> usize {
        let stalled: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.blocked_since.is_some_and(|t| t + send_timeout <= now))
            .map(|(&id, _)| id)
            .collect();
        for &id in &stalled {
            self.reset(id, Reason::CANCEL);
        }
        stalled.len()
    }

    /// Writes what is left and closes the write side.
    async fn finish(&mut self) -> Result<(), std::io::Error> {
        use tokio::io::AsyncWriteExt;
        let out = std::mem::take(&mut self.wbuf);
        let write = async {
            self.io.write_all(&out).await?;
            self.io.shutdown().await
        };
        match tokio::time::timeout(Duration::from_secs(1), write).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

/// A request head as its fields arrive (RFC 9113 §8.3.1).
#[derive(Default)]
struct RequestParts {
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    fields: HeaderMap,
    length: Option<u64>,
    regular: bool,
    malformed: bool,
    /// Past SETTINGS_MAX_HEADER_LIST_SIZE.
    too_large: bool,
}

impl RequestParts {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        if let Some(pseudo) = name.strip_prefix(b":") {
            // Pseudo-fields come first, once each, and only these (RFC 9113 §8.3).
            if self.regular {
                self.malformed = true;
                return;
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        self.malformed = true;
                    }
                    match Method::from_bytes(value) {
                        Ok(m) => self.method = Some(m),
                        Err(_) => self.malformed = true,
                    }
                    return;
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                _ => {
                    self.malformed = true;
                    return;
                }
            };
            if slot.is_some() {
                self.malformed = true;
            }
            *slot = Some(Bytes::copy_from_slice(value));
            return;
        }
        self.regular = true;
        // Field names are lowercase on HTTP/2, and connection-specific fields are
        // malformed there (RFC 9113 §8.2.1, §8.2.2).
        if name.iter().any(u8::is_ascii_uppercase) {
            self.malformed = true;
            return;
        }
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            self.malformed = true;
            return;
        };
        match n {
            header::CONNECTION | header::TRANSFER_ENCODING | header::UPGRADE => {
                self.malformed = true;
                return;
            }
            header::TE if value != b"trailers" => {
                self.malformed = true;
                return;
            }
            header::CONTENT_LENGTH => {
                let parsed = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                match (parsed, self.length) {
                    (Some(n), None) => self.length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => {
                        self.malformed = true;
                        return;
                    }
                }
            }
            _ => {}
        }
        if n == "keep-alive" || n == "proxy-connection" {
            self.malformed = true;
            return;
        }
        // Leading or trailing whitespace makes a value malformed (RFC 9113 §8.2.1).
        if value.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            || value.last().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            self.malformed = true;
            return;
        }
        self.fields.append(n, v);
    }

    fn build(self) -> Option<Request<()>> {
        let method = self.method?;
        if self.malformed {
            return None;
        }
        let mut req = Request::new(());
        *req.version_mut() = http::Version::HTTP_2;
        *req.headers_mut() = self.fields;
        if method == Method::CONNECT {
            // `:authority` only (RFC 9113 §8.5); the exchange answers it (501).
            if self.scheme.is_some() || self.path.is_some() {
                return None;
            }
            *req.uri_mut() = Uri::builder()
                .authority(self.authority?.as_ref())
                .build()
                .ok()?;
            *req.method_mut() = method;
            return Some(req);
        }
        let path = self.path.filter(|p| !p.is_empty())?;
        let scheme = self.scheme?;
        let mut uri = Uri::builder().scheme(scheme.as_ref());
        if let Some(a) = &self.authority {
            uri = uri.authority(a.as_ref());
        }
        *req.uri_mut() = uri.path_and_query(path.as_ref()).build().ok()?;
        *req.method_mut() = method;
        Some(req)
    }
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
