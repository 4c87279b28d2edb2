//! Body types: the response body (the upstream's, streamed through and returning its
//! connection to the pool when it ends, or a short body tether writes itself), and the
//! request body sent upstream, which records how it ended so a failure can be blamed.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::fault::ClientFault;

/// A response body.
pub enum ProxyBody {
    /// Streamed from an h2c upstream.
    Upstream(PooledBody),
    /// Streamed from an HTTP/1 upstream's raw connection.
    Raw(super::h1::RawBody),
    /// Written by tether (errors, admin answers); `None` once sent.
    Full(Option<Bytes>),
    /// An h2c upstream's small body, read whole before its head was relayed (see
    /// `Upstream::settle`), with its trailer section if it had one; each `None` once
    /// sent.
    Buffered(Option<Bytes>, Option<http::HeaderMap>),
}

impl ProxyBody {
    /// A body holding `text`.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(text.into()))
    }
}

/// Drops the trailer fields RFC 9110 §6.5.1 does not let a trailer section carry (the
/// rule the HTTP/1 codec applies to a chunked trailer section), those speaking for
/// tether among them.
fn filter_trailers(trailers: &mut http::HeaderMap) {
    if trailers
        .keys()
        .all(|n| crate::http::headers::allowed_in_trailers(n.as_str().as_bytes()))
    {
        return;
    }
    let forbidden: Vec<_> = trailers
        .keys()
        .filter(|n| !crate::http::headers::allowed_in_trailers(n.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in forbidden {
        trailers.remove(name);
    }
}

/// A response body from an h2c upstream (one stream of its shared connection), its
/// trailers filtered.
pub struct PooledBody {
    body: Incoming,
}

impl PooledBody {
    /// Wraps `body`.
    pub fn new(body: Incoming) -> Self {
        PooledBody { body }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut polled {
            if let Some(trailers) = frame.trailers_mut() {
                filter_trailers(trailers);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Raw(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Buffered(data, trailers) => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Raw(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Buffered(data, trailers) => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Raw(b) => b.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
            ProxyBody::Buffered(b, _) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// A request body sent upstream: the client's, streamed (optionally with a size limit),
/// or nothing (a bodyless request replayed after a stale keep-alive connection failed
/// under it).
pub enum RequestBody {
    /// The client's body, of which at most `remaining` more bytes are accepted
    /// (`max_body_bytes`; `u64::MAX` when unlimited).
    Client {
        /// The body as the client sends it.
        body: ClientBody,
        /// Bytes still accepted.
        remaining: u64,
        /// Where the body stands, for whoever must blame a failed exchange.
        progress: BodyProgress,
        /// What [`RequestBody::read_whole`] read ahead, sent before the rest.
        read: Option<Bytes>,
        /// The trailers read ahead with it, if the body had any.
        trailers: Option<Box<http::HeaderMap>>,
    },
    /// A body tether's HTTP/1 codec read from the client (for an h2c backend): what it
    /// read ahead, then data it decodes as it arrives, fed through a channel; a fault
    /// the codec saw ends the body with it.
    Fed {
        /// Read ahead, sent first.
        read: Option<Bytes>,
        /// The rest, as the codec decodes it (`None`: all of it was read ahead).
        rest: Option<tokio::sync::mpsc::Receiver<Result<Bytes, BodyFault>>>,
        /// The length the client declared, if it did.
        length: Option<u64>,
        /// Where the body stands.
        progress: BodyProgress,
    },
    /// No body.
    Empty,
}

impl RequestBody {
    /// A body fed by tether's HTTP/1 codec: `read` now, then what `rest` brings.
    pub fn fed(
        read: Bytes,
        rest: Option<tokio::sync::mpsc::Receiver<Result<Bytes, BodyFault>>>,
        length: Option<u64>,
    ) -> Self {
        if read.is_empty() && rest.is_none() {
            return RequestBody::Empty;
        }
        RequestBody::Fed {
            read: Some(read).filter(|r| !r.is_empty()),
            rest,
            length,
            progress: BodyProgress(Some(Arc::new(AtomicU8::new(SENDING)))),
        }
    }

    /// The client's `body`, with at most `limit` bytes accepted.
    pub fn client(body: ClientBody, limit: Option<u64>) -> Self {
        let progress = BodyProgress::for_body(&body);
        RequestBody::Client {
            body,
            remaining: limit.unwrap_or(u64::MAX),
            progress,
            read: None,
            trailers: None,
        }
    }

    /// Reads the client's body to its end now, before an upstream is chosen, so a slow
    /// uploader never holds a pod's connection (`request_buffer`). Called only for a
    /// body of known, small length; the client must deliver it by `deadline`.
    pub async fn read_whole(&mut self, deadline: tokio::time::Instant) -> Result<(), BodyFault> {
        use http_body_util::BodyExt;
        let RequestBody::Client {
            body,
            remaining,
            progress,
            read,
            trailers,
        } = self
        else {
            return Ok(());
        };
        let mut data = bytes::BytesMut::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(BodyFault::Client(ClientFault::BodyTimeout)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    progress.set(classify(&e));
                    return Err(progress
                        .fault()
                        .unwrap_or(BodyFault::Client(ClientFault::Aborted)));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(d) if d.len() as u64 > *remaining => {
                    progress.set(TOO_LARGE);
                    return Err(BodyFault::TooLarge);
                }
                Ok(d) => {
                    *remaining -= d.len() as u64;
                    data.extend_from_slice(&d);
                }
                Err(other) => *trailers = other.into_trailers().ok().map(Box::new),
            }
        }
        *read = Some(data.freeze());
        progress.set(DONE);
        Ok(())
    }

    /// The whole body, when it is all in hand with no trailers (none, or read whole
    /// ahead), without taking it.
    pub fn whole(&self) -> Option<&[u8]> {
        match self {
            RequestBody::Client {
                body,
                read,
                trailers: None,
                ..
            } if body.is_end_stream() => Some(read.as_deref().unwrap_or_default()),
            RequestBody::Fed {
                read, rest: None, ..
            } => Some(read.as_deref().unwrap_or_default()),
            RequestBody::Empty => Some(&[]),
            _ => None,
        }
    }

    /// The body's progress, to judge a failure after it was handed to the upstream
    /// client (which consumes it).
    pub fn progress(&self) -> BodyProgress {
        match self {
            RequestBody::Client { progress, .. } | RequestBody::Fed { progress, .. } => {
                progress.clone()
            }
            RequestBody::Empty => BodyProgress(None),
        }
    }
}

/// An HTTP/2 client's request body: one stream's DATA frames and trailers, fed in by
/// tether's HTTP/2 server (`proxy::h2`) as they arrive. The bytes taken are counted for
/// the server, which returns them to the client's flow-control windows (RFC 9113
/// §5.2), so the client sends on at the pace the body is forwarded. Its length is the
/// one `content-length` declared, which the server holds the DATA frames to (RFC 9113
/// §8.1.1: a stream error otherwise). Its trailers carry only the fields RFC 9110
/// §6.5.1 allows there.
pub struct ClientBody {
    source: Source,
    /// Bytes still to come, when `content-length` declared them.
    length: Option<u64>,
    /// The body ended (its last DATA frame or its trailers were taken).
    data_done: bool,
}

/// Where an HTTP/2 request body comes from.
enum Source {
    /// Nothing: the request's HEADERS ended its stream.
    Empty,
    /// The server, which feeds the stream's frames in as they arrive and is told how
    /// many bytes were taken, to reopen the client's window.
    Fed(Feed),
}

/// What tether's HTTP/2 server hands a request body.
#[derive(Debug)]
pub enum Fed {
    /// A DATA frame's bytes.
    Data(Bytes),
    /// The trailer section, which ends the body.
    Trailers(http::HeaderMap),
    /// The stream broke (the client reset it, or broke the protocol on it).
    Broken(h2::Reason),
}

/// The receiving end of a request body fed by tether's HTTP/2 server.
pub struct Feed {
    /// The stream's frames; the sender dropped is the end of the body.
    pub rx: futures::channel::mpsc::UnboundedReceiver<Fed>,
    /// Bytes taken from the body, which the server returns to the client's windows.
    pub taken: Arc<std::sync::atomic::AtomicUsize>,
}

impl ClientBody {
    /// No body: the request ended with its head.
    pub fn empty() -> Self {
        ClientBody {
            source: Source::Empty,
            length: Some(0),
            data_done: true,
        }
    }

    /// A body fed by tether's HTTP/2 server, of `length` bytes if `content-length` said.
    pub fn fed(feed: Feed, length: Option<u64>) -> Self {
        ClientBody {
            source: Source::Fed(feed),
            length,
            data_done: false,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        let feed = match &mut this.source {
            Source::Empty => return Poll::Ready(None),
            Source::Fed(feed) => feed,
        };
        use futures::StreamExt;
        match feed.rx.poll_next_unpin(cx) {
            Poll::Ready(Some(Fed::Data(data))) => {
                feed.taken.fetch_add(data.len(), Ordering::Relaxed);
                if let Some(n) = &mut this.length {
                    *n = n.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Fed::Trailers(mut t))) => {
                this.data_done = true;
                filter_trailers(&mut t);
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Poll::Ready(Some(Fed::Broken(reason))) => {
                Poll::Ready(Some(Err(h2::Error::from(reason))))
            }
            Poll::Ready(None) => {
                this.data_done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::Fed(_) => self.data_done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::new(),
        }
    }
}

/// The request body went past `max_body_bytes` while streaming (the client gets 413).
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body_bytes")]
pub struct BodyTooLarge;

/// Errors a request body can end with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Where a client's request body stands while hyper's client streams it upstream.
///
/// The exchange hands the body to the upstream client and gets back only that client's
/// error, which says the exchange failed but not whose fault it was: a client that
/// sent a malformed chunk or went away breaks the upstream exchange just as a pod that
/// resets does. The body records here what it saw, so the exchange can blame the right
/// party (only upstream faults count against an endpoint). Shared only for bodies that
/// are not empty: a bodyless request allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct BodyProgress(Option<Arc<AtomicU8>>);

/// The last poll gave a frame (or none was made yet): the body waits on the upstream.
const SENDING: u8 = 0;
/// The last poll found nothing from the client yet: the body waits on the client.
const WAITING: u8 = 1;
/// The body ended.
const DONE: u8 = 2;
/// The client broke the body's framing.
const MALFORMED: u8 = 3;
/// The client went away before the body ended.
const ABORTED: u8 = 4;
/// The body went past `max_body_bytes`.
const TOO_LARGE: u8 = 5;

/// What a client did wrong with its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    /// A client fault: malformed, aborted, or too slow.
    #[error(transparent)]
    Client(ClientFault),
    /// Larger than `max_body_bytes`.
    #[error("request body larger than max_body_bytes")]
    TooLarge,
}

impl BodyProgress {
    fn for_body(body: &ClientBody) -> Self {
        BodyProgress((!body.is_end_stream()).then(|| Arc::new(AtomicU8::new(SENDING))))
    }

    fn set(&self, state: u8) {
        if let Some(s) = &self.0 {
            s.store(state, Ordering::Relaxed);
        }
    }

    fn get(&self) -> u8 {
        self.0.as_ref().map_or(DONE, |s| s.load(Ordering::Relaxed))
    }

    /// The fault the body ended with, if it ended with one.
    pub fn fault(&self) -> Option<BodyFault> {
        match self.get() {
            MALFORMED => Some(BodyFault::Client(ClientFault::MalformedBody)),
            ABORTED => Some(BodyFault::Client(ClientFault::Aborted)),
            TOO_LARGE => Some(BodyFault::TooLarge),
            _ => None,
        }
    }

    /// Whether the body was waiting for the client's next bytes: a response timeout
    /// then is the client's slowness, not the upstream's.
    pub fn waiting_on_client(&self) -> bool {
        self.get() == WAITING
    }
}

/// Who broke a client body that failed to arrive: bytes that break the message's
/// framing (hyper's HTTP/1 decoder reports them as invalid input, RFC 9112 §7.1; h2 as
/// a stream PROTOCOL_ERROR, e.g. DATA that does not add up to content-length, RFC 9113
/// §8.1.1) are malformed; anything else (end of file, reset, cancelled stream) means
/// the client went away.
fn classify(e: &(dyn std::error::Error + 'static)) -> u8 {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            ) {
                return MALFORMED;
            }
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
                return MALFORMED;
            }
        }
        source = s.source();
    }
    ABORTED
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Client {
                read: read @ Some(_),
                ..
            } => Poll::Ready(read.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Client {
                trailers: trailers @ Some(_),
                ..
            } => Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t)))),
            RequestBody::Client {
                body,
                remaining,
                progress,
                ..
            } => match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if n > *remaining {
                        progress.set(TOO_LARGE);
                        return Poll::Ready(Some(Err(BodyTooLarge.into())));
                    }
                    *remaining -= n;
                    progress.set(if body.is_end_stream() { DONE } else { SENDING });
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    progress.set(classify(&e));
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => {
                    progress.set(DONE);
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    progress.set(WAITING);
                    Poll::Pending
                }
            },
            RequestBody::Fed {
                read: read @ Some(_),
                ..
            } => Poll::Ready(read.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Fed {
                rest: Some(rx),
                progress,
                ..
            } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(d))) => {
                    progress.set(SENDING);
                    Poll::Ready(Some(Ok(Frame::data(d))))
                }
                Poll::Ready(Some(Err(fault))) => {
                    progress.set(match fault {
                        BodyFault::Client(ClientFault::MalformedBody) => MALFORMED,
                        BodyFault::TooLarge => TOO_LARGE,
                        BodyFault::Client(_) => ABORTED,
                    });
                    Poll::Ready(Some(Err(Box::new(fault))))
                }
                Poll::Ready(None) => {
                    progress.set(DONE);
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    progress.set(WAITING);
                    Poll::Pending
                }
            },
            RequestBody::Fed { progress, .. } => {
                progress.set(DONE);
                Poll::Ready(None)
            }
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Fed { read, rest, .. } => read.is_none() && rest.is_none(),
            RequestBody::Client {
                body,
                read,
                trailers,
                ..
            } => read.is_none() && trailers.is_none() && body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client {
                body,
                read: Some(data),
                ..
            } => {
                let n = data.len() as u64;
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + n);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + n);
                }
                hint
            }
            RequestBody::Client { body, .. } => body.size_hint(),
            RequestBody::Fed {
                length: Some(n), ..
            } => SizeHint::with_exact(*n),
            RequestBody::Fed { read, .. } => {
                let mut hint = SizeHint::new();
                hint.set_lower(read.as_ref().map_or(0, |r| r.len() as u64));
                hint
            }
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
