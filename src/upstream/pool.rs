//! Upstream connections, pooled per endpoint: HTTP/1.1 connections one request at a
//! time from a lock-free idle queue, or one multiplexed h2c connection shared by all
//! requests (for gRPC and other HTTP/2 upstreams).
//!
//! Why not hyper-util's pooled `Client`: tether must retry a request on the next endpoint
//! when the connection could not be made, for any method, and for that it must still own
//! the request. hyper's connection-level API gives it back (`try_send_request` returns
//! an unsent request inside the error), and splitting connect from send tells a connect
//! failure (retry elsewhere, mark the endpoint down) from a failure after bytes were sent
//! (502, never retried here). Idle connections sit in a lock-free bounded queue, so
//! checkout and return take no lock on the request path.
//!
//! With thread per core (`workers > 1`), each worker thread has its own idle queue per
//! endpoint: a connection's task runs on the runtime of the thread that opened it, so a
//! connection used from another thread would cost a cross-thread wake-up (an eventfd
//! write and a context switch) on every request, a cost `benches/load/compare.sh` shows
//! with 2 workers.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http2;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use super::body::RequestBody as UpstreamBody;

/// How many worker threads keep their own idle queues (only grows; pools made before it
/// grew map extra threads onto their queues by modulo).
static WORKER_SLOTS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's idle queue index; 0 for every thread not bound by the server.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Declares that `n` worker threads serve requests; call before discovery builds pools.
pub fn set_worker_threads(n: usize) {
    WORKER_SLOTS.fetch_max(n.max(1), Ordering::Relaxed);
}

/// Binds the calling thread to worker slot `slot`: its requests use and return the idle
/// connections of that slot.
pub fn bind_worker_thread(slot: usize) {
    SLOT.with(|s| s.set(slot));
}

/// A handle on an h2c endpoint's shared HTTP/2 connection.
pub struct Sender(http2::SendRequest<UpstreamBody>);

impl Sender {
    /// Sends a request; an unsent request comes back inside the error.
    ///
    /// Not an `async fn`: hyper has taken the request by the time this returns, and an
    /// async wrapper would carry room for it (and its own state) inside every
    /// forwarding future.
    pub fn try_send_request(
        &mut self,
        req: http::Request<UpstreamBody>,
    ) -> impl std::future::Future<
        Output = Result<
            http::Response<hyper::body::Incoming>,
            hyper::client::conn::TrySendError<http::Request<UpstreamBody>>,
        >,
    > {
        self.0.try_send_request(req)
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect did not finish within the connect timeout.
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    /// TCP connect failed (refused, unreachable, ...).
    #[error("connect to {addr} failed: {source}")]
    Io {
        /// The endpoint address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The HTTP/1 handshake failed.
    #[error("http handshake with {addr} failed: {source}")]
    Handshake {
        /// The endpoint address.
        addr: SocketAddr,
        /// The hyper error.
        source: hyper::Error,
    },
}

/// One idle queue per worker slot, or none when pooling is off or the endpoint speaks
/// h2c.
fn queues<T>(max_idle: usize, h2c: bool) -> Box<[ArrayQueue<T>]> {
    if max_idle > 0 && !h2c {
        (0..WORKER_SLOTS.load(Ordering::Relaxed))
            .map(|_| ArrayQueue::new(max_idle))
            .collect()
    } else {
        Box::default()
    }
}

/// The calling thread's queue among `queues`.
fn local<T>(queues: &[ArrayQueue<T>]) -> Option<&ArrayQueue<T>> {
    match queues.len() {
        0 => None,
        1 => queues.first(),
        n => queues.get(SLOT.with(Cell::get) % n),
    }
}

/// Whether an idle connection is still open and quiet: a non-blocking read finds
/// nothing to read yet (EOF or stray bytes mean it cannot carry a request).
fn is_open(s: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Takes the connection `mine` out of `shared`, unless another has replaced it there.
/// (`mine` is weak, so that the ended connection's handle is not kept alive by its own
/// task, and its allocation cannot be reused for another while it is compared.)
fn unpool<T>(shared: &ArcSwapOption<T>, mine: &Weak<T>) {
    shared.rcu(|current| match current {
        Some(c) if std::ptr::eq(Arc::as_ptr(c), mine.as_ptr()) => None,
        other => other.clone(),
    });
}

/// Connections to one endpoint address.
pub struct Pool {
    address: SocketAddr,
    /// Speak h2c (prior knowledge) to this endpoint.
    h2c: bool,
    /// Idle HTTP/1.1 connections, one queue per worker thread (they carry no task:
    /// the request's own task reads and writes them); empty when pooling is disabled
    /// (`max_idle_per_endpoint = 0`) or the endpoint speaks h2c.
    raw: Box<[ArrayQueue<TcpStream>]>,
    /// The shared HTTP/2 connection of an h2c endpoint, while its connection task runs
    /// (the task takes it out as it ends: see [`Pool::connect_h2`]).
    shared: Arc<ArcSwapOption<http2::SendRequest<UpstreamBody>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("address", &self.address)
            .field("h2c", &self.h2c)
            .field("idle", &self.idle())
            .finish()
    }
}

/// A checked-out connection.
pub struct Checkout {
    /// The connection.
    pub sender: Sender,
    /// Whether it was reused from the pool (a reused connection may have been closed by
    /// the upstream a moment ago; an unsent request on it is worth one more try).
    pub reused: bool,
}

impl Pool {
    /// An empty pool keeping up to `max_idle` idle HTTP/1.1 connections, or one shared
    /// connection when `h2c`.
    pub fn new(address: SocketAddr, max_idle: usize, h2c: bool) -> Self {
        Pool {
            address,
            h2c,
            raw: queues(max_idle, h2c),
            shared: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// The endpoint address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Number of idle connections (approximate under concurrency).
    pub fn idle(&self) -> usize {
        self.raw.iter().map(ArrayQueue::len).sum()
    }

    /// An idle HTTP/1.1 connection (unless `fresh`), else a new
    /// one; the flag says whether it was reused (and so may have been closed by the
    /// upstream a moment ago).
    ///
    /// A raw connection has no task watching it while idle, so each idle connection is
    /// checked first: bytes that arrived while it sat in the pool (an upstream that
    /// sent more than its response said) or its FIN make it unusable, and it is
    /// dropped. The check reads only when the runtime saw the socket become readable,
    /// so a quiet connection costs no syscall.
    pub async fn checkout_raw(
        &self,
        connect_timeout: Duration,
        fresh: bool,
    ) -> Result<(TcpStream, bool), ConnectError> {
        if let Some(idle) = local(&self.raw).filter(|_| !fresh) {
            while let Some(s) = idle.pop() {
                if is_open(&s) {
                    return Ok((s, true));
                }
            }
        }
        Box::pin(self.tcp(connect_timeout))
            .await
            .map(|s| (s, false))
    }

    /// Returns a raw connection whose last response ended cleanly.
    pub fn checkin_raw(&self, stream: TcpStream) {
        if let Some(idle) = local(&self.raw) {
            let _ = idle.push(stream);
        }
    }

    /// The h2c endpoint's shared HTTP/2 connection, opened if there is none.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<Checkout, ConnectError> {
        if let Some(s) = self.shared.load_full() {
            if !s.is_closed() {
                return Ok(Checkout {
                    sender: Sender((*s).clone()),
                    reused: true,
                });
            }
        }
        // Boxed: the connect path is the largest state of this future and rarely
        // taken, so keeping it inline would make every forwarding future (boxed per
        // request) larger.
        let s = Box::pin(self.connect_h2(connect_timeout)).await?;
        Ok(Checkout {
            sender: Sender(s),
            reused: false,
        })
    }

    async fn tcp(&self, connect_timeout: Duration) -> Result<TcpStream, ConnectError> {
        let addr = self.address;
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::Timeout(addr)),
            Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Opens the endpoint's shared HTTP/2 connection and makes it the pool's.
    ///
    /// Its task takes it out of the pool when the connection ends (the peer closed or
    /// reset it, or it failed), rather than leaving a dead handle there for the next
    /// checkout to find closed. That also lets the connection's request channel go:
    /// a request queued on it as it died, which its dispatch task never took, is handed
    /// back unsent (hyper's `TrySendError` with the message) only when the channel is
    /// dropped, which is when the last handle goes. Kept by the pool, that request
    /// would wait for an answer that cannot come until the response timeout (a 504 for
    /// what is a retryable "nothing was sent").
    async fn connect_h2(
        &self,
        connect_timeout: Duration,
    ) -> Result<http2::SendRequest<UpstreamBody>, ConnectError> {
        let addr = self.address;
        let stream = self.tcp(connect_timeout).await?;
        let handshake = http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(stream));
        let (sender, conn) = match tokio::time::timeout(connect_timeout, handshake).await {
            Err(_) => return Err(ConnectError::Timeout(addr)),
            Ok(Err(source)) => return Err(ConnectError::Handshake { addr, source }),
            Ok(Ok(pair)) => pair,
        };
        let pooled = Arc::new(sender.clone());
        let mine = Arc::downgrade(&pooled);
        self.shared.store(Some(pooled));
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream h2 connection ended with an error");
            }
            unpool(&shared, &mine);
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A pod that ends the connection it is given, having read what tether wrote first
    /// (the HTTP/2 preface, RFC 9113 §3.4): the connection ends under the pool's handle.
    #[tokio::test]
    async fn an_h2c_connection_leaves_the_pool_when_it_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(listener.local_addr().unwrap(), 0, true);
        let pod = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.read(&mut [0u8; 64]).await;
        });
        let first = pool.checkout(Duration::from_secs(5)).await.unwrap();
        assert!(!first.reused);
        drop(first);
        assert!(pool.shared.load().is_some(), "the connection is pooled");
        pod.await.unwrap();
        // Until hyper has seen it end (the handle reports closed once the connection's
        // task dropped its side, on this one thread after the task has run to its end).
        let closed = async {
            while pool.shared.load().as_ref().is_some_and(|s| !s.is_closed()) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the connection ended");
        assert!(
            pool.shared.load().is_none(),
            "an ended connection's handle stays in the pool, keeping its queued requests"
        );
    }
}
