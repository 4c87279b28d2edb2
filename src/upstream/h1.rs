//! HTTP/1.1 to an upstream for requests that arrive as `http::Request` (from HTTP/2
//! clients), on the same raw pooled connections and with the same wire rules as the
//! HTTP/1 codec ([`super::wire`]): the request head written from the fields the proxy
//! prepared, its body framed by length or chunked, the response head parsed by
//! httparse (the interim 1xx heads before it held for the client's stream,
//! [`Interims`]), and the body decoded as it is read ([`RawBody`]), the connection
//! going back to the pool when the body ends cleanly.
//!
//! Why not hyper's HTTP/1 client: the HTTP/2 path's CPU per request sat largely in it
//! (profiled; see the README's load figures), and tether already has an HTTP/1 client
//! in its codec. One HTTP/1 implementation serves both directions and both client
//! protocols.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::body::{BodyError, RequestBody};
use super::pool::Pool;
use crate::http::wire::{self, Framing, ResponseParsed, MAX_RESPONSE_HEAD};

/// How much is read from an upstream at a time.
const READ: usize = 16 * 1024;

/// Why an exchange on a raw connection failed.
#[derive(Debug)]
pub enum SendError {
    /// Nothing was written: the request (still intact) can go elsewhere.
    Unsent,
    /// The request, or part of it, went out and no usable response came back.
    Failed {
        /// What went wrong.
        error: wire::Error,
        /// No byte of a response arrived (the connection may just have been stale).
        nothing_back: bool,
    },
}

/// The interim (1xx) responses a pod sent ahead of its answer, waiting for the HTTP/2
/// server to send them on the request's stream (a proxy forwards them, RFC 9110
/// §15.2). Owned by the stream and lent to the exchange, which runs in the same task:
/// [`read_response`] fills it, and the stream empties it after each poll of the
/// exchange, so nothing is woken. Until a 1xx arrives it costs nothing per request but
/// a flag's load: no allocation, no lock (a `Mutex` rather than a `RefCell` only so
/// the stream's future stays `Send`).
#[derive(Debug, Default)]
pub struct Interims {
    /// Set while `heads` holds any.
    arrived: AtomicBool,
    heads: Mutex<Vec<Response<()>>>,
}

impl Interims {
    /// Holds the interim head `raw` (filtered by [`wire::Interim`]) for the client.
    fn push(&self, raw: &[u8]) {
        let Some(head) = wire::informational_response(raw) else {
            return;
        };
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        heads.push(head);
        self.arrived.store(true, Ordering::Relaxed);
    }

    /// Whether any are waiting: a load, cheap enough for every poll.
    pub fn arrived(&self) -> bool {
        self.arrived.load(Ordering::Relaxed)
    }

    /// The ones waiting, in the order they came; none are left behind.
    pub fn take(&self) -> Vec<Response<()>> {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        self.arrived.store(false, Ordering::Relaxed);
        std::mem::take(&mut *heads)
    }
}

/// Sends `req` on `stream` and reads the response head; the body follows in the
/// returned [`RawBody`], which owns the connection from then on. Interim responses go
/// to `interims`, if the client can be sent them.
pub async fn send(
    mut stream: TcpStream,
    req: &mut Request<RequestBody>,
    stamps: &[(http::HeaderName, http::HeaderValue)],
    pool: Arc<Pool>,
    interims: Option<&Interims>,
) -> Result<Response<RawBody>, SendError> {
    let mut out = Vec::with_capacity(1024);
    let head_request = req.method() == http::Method::HEAD;
    let length = match req.body().whole() {
        Some(whole) => Some(whole.len() as u64),
        None => req.body().size_hint().exact(),
    };
    write_head(&mut out, req, stamps, length);
    let chunked = length.is_none();
    // A body in hand (none, or read whole ahead) goes out in the same write as the
    // head, and stays in the request: if the write fails, the request goes elsewhere
    // whole.
    if let Some(whole) = req.body().whole() {
        out.extend_from_slice(whole);
        if stream.write_all(&out).await.is_err() {
            return Err(SendError::Unsent);
        }
        return read_response(stream, BytesMut::new(), head_request, pool, true, interims).await;
    }
    if stream.write_all(&out).await.is_err() {
        return Err(SendError::Unsent);
    }
    // A pod may answer before it has the whole body (a 413, a 401) and stop reading it
    // or close: the answer is watched for while the body goes out (RFC 9112 §9.6), and
    // a write that fails is no failure if an answer came. Either way the connection
    // carried a body cut short and is not reused.
    let mut early = BytesMut::new();
    let sent = {
        let (mut rd, mut wr) = stream.split();
        let body = stream_body(req, &mut wr, &mut out, chunked);
        tokio::select! {
            biased;
            sent = body => sent,
            _ = tokio::io::AsyncReadExt::read_buf(&mut rd, &mut early) => Ok(false),
        }
    };
    match sent {
        Ok(whole) => read_response(stream, early, head_request, pool, whole, interims).await,
        // The client's body broke: nothing to wait for.
        Err(Some(e)) => Err(e),
        Err(None) => read_response(stream, early, head_request, pool, false, interims).await,
    }
}

/// Writes a streamed request body (RFC 9112 §7.1: of unknown length, chunked, with the
/// trailers RFC 9110 §6.5.1 allows after the last chunk). Ok(true) once it all went
/// out; Err(None) if the upstream stopped taking it; Err(Some) if the client's body
/// failed.
async fn stream_body<W: tokio::io::AsyncWrite + Unpin>(
    req: &mut Request<RequestBody>,
    wr: &mut W,
    out: &mut Vec<u8>,
    chunked: bool,
) -> Result<bool, Option<SendError>> {
    while let Some(frame) = req.body_mut().frame().await {
        let frame = frame.map_err(|_| {
            Some(SendError::Failed {
                error: wire::Error::Io(io::ErrorKind::Interrupted),
                nothing_back: true,
            })
        })?;
        out.clear();
        let last = wire::write_frame(out, frame, chunked);
        wr.write_all(out).await.map_err(|_| None)?;
        if last {
            return Ok(true);
        }
    }
    if chunked {
        wr.write_all(b"0\r\n\r\n").await.map_err(|_| None)?;
    }
    Ok(true)
}

/// Writes the request line and fields of `req` (prepared by the proxy: hop-by-hop
/// fields gone, tether's own set) and its framing.
fn write_head(
    out: &mut Vec<u8>,
    req: &Request<RequestBody>,
    stamps: &[(http::HeaderName, http::HeaderValue)],
    length: Option<u64>,
) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        // The framing is restated below; an expectation is not passed on (the pod is
        // never waited for: RFC 9110 §10.1.1 lets a proxy answer it or drop it).
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::EXPECT
        {
            continue;
        }
        wire::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // What tether adds, after the client's fields (which carry none of them).
    for (name, value) in stamps {
        wire::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // RFC 9110 §8.6: a length for every body, and for an empty one where the method
    // gives a body a meaning.
    match length {
        Some(0)
            if !matches!(
                *req.method(),
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            ) => {}
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads the response head and returns the response with its body to read; the 1xx
/// before it (101 is refused: nothing asked to switch) go to `interims`, or are
/// skipped without one. `buf`: what was read already; `whole`: the request went out
/// whole (else the connection is not reused).
async fn read_response(
    mut stream: TcpStream,
    mut buf: BytesMut,
    head_request: bool,
    pool: Arc<Pool>,
    whole: bool,
    interims: Option<&Interims>,
) -> Result<Response<RawBody>, SendError> {
    let mut first = buf.is_empty();
    let mut read = !first;
    loop {
        buf.reserve(READ);
        if read {
            // Bytes in hand first.
            read = false;
        } else {
            match tokio::io::AsyncReadExt::read_buf(&mut stream, &mut buf).await {
                Ok(0) => {
                    return Err(SendError::Failed {
                        error: wire::Error::Io(io::ErrorKind::UnexpectedEof),
                        nothing_back: first,
                    })
                }
                Err(e) => {
                    return Err(SendError::Failed {
                        error: wire::Error::Io(e.kind()),
                        nothing_back: first,
                    })
                }
                Ok(_) => first = false,
            }
        }
        loop {
            let mut fields = wire::no_fields();
            let bad = |error| SendError::Failed {
                error,
                nothing_back: false,
            };
            match wire::parse_response(&buf, &mut fields, head_request).map_err(bad)? {
                ResponseParsed::Informational(len) => {
                    if let Some(i) = interims {
                        i.push(&buf[..len]);
                    }
                    let _ = buf.split_to(len);
                }
                ResponseParsed::Partial if buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(bad(wire::Error::HeadTooLarge))
                }
                ResponseParsed::Partial => break,
                ResponseParsed::Head(h) if h.status < 100 => {
                    return Err(bad(wire::Error::Status(h.status)))
                }
                ResponseParsed::Head(h) => {
                    let status = http::StatusCode::from_u16(h.status)
                        .map_err(|_| bad(wire::Error::Status(h.status)))?;
                    let mut parts = Response::new(()).into_parts().0;
                    parts.status = status;
                    let raw = bytes::Bytes::copy_from_slice(&buf[..h.len]);
                    parts.headers = wire::response_fields(&h, &buf, &raw);
                    let (len, framing, reusable) = (h.len, h.framing, h.reusable);
                    let _ = buf.split_to(len);
                    let body = RawBody::new(stream, buf, framing, reusable && whole, pool);
                    return Ok(Response::from_parts(parts, body));
                }
            }
        }
    }
}

/// A response body read from a raw upstream connection and decoded as it comes; the
/// connection goes back to the pool when the body ended cleanly with nothing after it.
pub struct RawBody {
    stream: Option<TcpStream>,
    /// Read and not decoded yet.
    buf: BytesMut,
    decoder: Decoder,
    reusable: bool,
    pool: Arc<Pool>,
}

enum Decoder {
    /// Bytes left.
    Length(u64),
    /// The chunked decoder, and the trailer section once it began.
    Chunked(wire::Chunked, Option<Vec<u8>>),
    /// Until the upstream closes.
    Close,
    /// Ended.
    Done,
}

impl RawBody {
    /// Whether a chunked body is already broken in the bytes that came with its head
    /// (RFC 9112 §7.1), before any of it was decoded: the answer is then invalid.
    pub fn broken_from_the_start(&self) -> bool {
        match &self.decoder {
            Decoder::Chunked(..) => wire::Chunked::default().scan(&self.buf).is_err(),
            _ => false,
        }
    }

    fn new(
        stream: TcpStream,
        buf: BytesMut,
        framing: Framing,
        reusable: bool,
        pool: Arc<Pool>,
    ) -> Self {
        let decoder = match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(wire::Chunked::default(), None),
            Framing::Close => Decoder::Close,
        };
        let mut body = RawBody {
            stream: Some(stream),
            buf,
            decoder,
            reusable: reusable && framing != Framing::Close,
            pool,
        };
        if matches!(body.decoder, Decoder::Done) {
            body.release();
        }
        body
    }

    /// The body ended: the connection goes back to the pool if nothing followed it.
    fn release(&mut self) {
        self.decoder = Decoder::Done;
        if let Some(s) = self.stream.take() {
            if self.reusable && self.buf.is_empty() {
                self.pool.checkin_raw(s);
            }
        }
    }

    /// Decodes what is buffered: a frame, if one is ready.
    fn decode(&mut self) -> Result<Option<Frame<Bytes>>, BodyError> {
        match &mut self.decoder {
            Decoder::Done => Ok(None),
            Decoder::Close => {
                let data = self.buf.split().freeze();
                Ok((!data.is_empty()).then(|| Frame::data(data)))
            }
            Decoder::Length(left) => {
                let n = self
                    .buf
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                let data = self.buf.split_to(n).freeze();
                if *left == 0 {
                    self.release();
                }
                Ok((!data.is_empty()).then(|| Frame::data(data)))
            }
            Decoder::Chunked(c, held) => {
                let mut data = Vec::new();
                let (used, done) = c.decode(&self.buf, &mut data)?;
                match (held.as_mut(), c.trailer_start()) {
                    (Some(h), _) => h.extend_from_slice(&self.buf[..used]),
                    (None, Some(at)) => *held = Some(self.buf[at..used].to_vec()),
                    (None, None) => {}
                }
                let _ = self.buf.split_to(used);
                if !data.is_empty() {
                    return Ok(Some(Frame::data(data.into())));
                }
                if !done {
                    return Ok(None);
                }
                let trailers = held.take().map(|h| trailer_fields(&h));
                self.release();
                Ok(trailers.filter(|t| !t.is_empty()).map(Frame::trailers))
            }
        }
    }
}

/// The fields of a raw trailer section, with only those RFC 9110 §6.5.1 allows there.
fn trailer_fields(section: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in wire::trailer_fields(section) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value.trim_ascii()),
        ) {
            map.append(name, value);
        }
    }
    map
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if !this.buf.is_empty() || matches!(this.decoder, Decoder::Chunked(..)) {
                match this.decode() {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) if matches!(this.decoder, Decoder::Done) => return Poll::Ready(None),
                    Ok(None) => {}
                    Err(e) => {
                        this.stream = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if matches!(this.decoder, Decoder::Done) {
                return Poll::Ready(None);
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(None);
            };
            this.buf.reserve(READ);
            match tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(n)) => {
                    if n == 0 {
                        this.stream = None;
                        if matches!(this.decoder, Decoder::Close) {
                            this.decoder = Decoder::Done;
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Err(io::Error::from(
                            io::ErrorKind::UnexpectedEof,
                        )
                        .into())));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
