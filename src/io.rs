//! Client connection I/O shared by every listener and protocol: the send timeout.
//!
//! A client that stops reading makes every write to it wait. [`SendTimeout`] wraps the
//! accepted socket (beneath TLS and beneath both HTTP/1 paths and HTTP/2), so whichever
//! protocol is writing, a write that makes no progress for `send_timeout` fails with
//! `TimedOut` and the connection ends. Small responses were already read whole and
//! their upstream connection returned (`response_buffer`), so what a stalled reader
//! holds until then is only its own connection and, for a large response, the one
//! upstream connection streaming it. HTTP/2 flow control can stall a stream without
//! any write waiting; that is bounded by the response buffer, not by this.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose writes fail once they have made no progress for a while.
pub struct SendTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write first waits; dropped at the next progress. Allocated only
    /// while a write is stalled.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Connections ended this way, for `tether_send_timeouts_total`.
    ended: Arc<AtomicU64>,
}

impl<S> SendTimeout<S> {
    /// `inner`, whose writes may wait at most `timeout` without progress; each
    /// connection ended so is counted in `ended`.
    pub fn new(inner: S, timeout: Duration, ended: Arc<AtomicU64>) -> Self {
        SendTimeout {
            inner,
            timeout,
            stalled: None,
            ended,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Called when a write is waiting: arms the timer, or fails once it has run out.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                self.ended.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?timeout, "client took no bytes within the send timeout");
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "send timed out"))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Passes a write's outcome on, keeping the timer only while it waits.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_timeout_and_progress_resets_it() {
        // A pipe whose reader reads nothing: the writer fills its buffer, then waits.
        let (a, mut b) = tokio::io::duplex(1024);
        let ended = Arc::new(AtomicU64::new(0));
        let mut w = SendTimeout::new(a, Duration::from_secs(60), ended.clone());
        w.write_all(&[0; 1024]).await.unwrap();
        // Reading makes room: progress, so the timer starts over.
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            tokio::time::sleep(Duration::from_secs(50)).await;
            let mut buf = [0; 512];
            b.read_exact(&mut buf).await.unwrap();
            b
        });
        let started = tokio::time::Instant::now();
        let e = w.write_all(&[0; 2048]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(110));
        assert_eq!(ended.load(Ordering::Relaxed), 1);
        drop(reader);
    }
}
