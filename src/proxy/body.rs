//! The response body type: either the upstream's body, streamed through and returning its
//! connection to the pool when it ends, or a short body tether writes itself.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::{Pool, Sender};

/// A response body.
pub enum ProxyBody {
    /// Streamed from an upstream.
    Upstream(PooledBody),
    /// Written by tether (errors, admin answers); `None` once sent.
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// A body holding `text`.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(text.into()))
    }
}

/// An upstream body that gives its connection back to the pool once fully read. A body
/// dropped before its end drops the connection instead: it cannot be reused mid-message.
pub struct PooledBody {
    body: Incoming,
    ret: Option<(Sender, Arc<Pool>)>,
}

impl PooledBody {
    /// Wraps `body`; `sender` goes back to `pool` at the end of the body.
    pub fn new(body: Incoming, sender: Sender, pool: Arc<Pool>) -> Self {
        let mut b = PooledBody {
            body,
            ret: Some((sender, pool)),
        };
        if b.body.is_end_stream() {
            b.release();
        }
        b
    }

    fn release(&mut self) {
        if let Some((sender, pool)) = self.ret.take() {
            pool.checkin(sender);
        }
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
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.ret = None,
            _ => {}
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// A request body sent upstream: the client's, streamed (optionally with a size limit),
/// or nothing (a bodyless request replayed after a stale keep-alive connection failed
/// under it).
pub enum RequestBody {
    /// The client's body.
    Client(Incoming),
    /// The client's body, of which at most this many more bytes are accepted.
    Limited(Incoming, u64),
    /// No body.
    Empty,
}

/// The request body went past `max_body_bytes` while streaming (the client gets 413).
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body_bytes")]
pub struct BodyTooLarge;

/// Errors a request body can end with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Client(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Limited(b, remaining) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if n > *remaining {
                        return Poll::Ready(Some(Err(BodyTooLarge.into())));
                    }
                    *remaining -= n;
                    Poll::Ready(Some(Ok(frame)))
                }
                other => other.map_err(Into::into),
            },
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(b) | RequestBody::Limited(b, _) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(b) | RequestBody::Limited(b, _) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
