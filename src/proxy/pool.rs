//! Upstream HTTP/1.1 connections, pooled per endpoint.
//!
//! Why not hyper-util's pooled `Client`: tether must retry a request on the next endpoint
//! when the connection could not be made, for any method, and for that it must still own
//! the request. hyper's connection-level API gives it back (`try_send_request` returns
//! an unsent request inside the error), and splitting connect from send tells a connect
//! failure (retry elsewhere, mark the endpoint down) from a failure after bytes were sent
//! (502, never retried here). Idle connections sit in a lock-free bounded queue, so
//! checkout and return take no lock on the request path.

use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use super::body::RequestBody as UpstreamBody;

/// A connection ready to take one request.
pub type Sender = http1::SendRequest<UpstreamBody>;

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

/// Idle connections to one endpoint address.
#[derive(Debug)]
pub struct Pool {
    address: SocketAddr,
    /// `None` when pooling is disabled (`max_idle_per_endpoint = 0`).
    idle: Option<ArrayQueue<Sender>>,
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
    /// An empty pool keeping up to `max_idle` idle connections.
    pub fn new(address: SocketAddr, max_idle: usize) -> Self {
        Pool {
            address,
            idle: (max_idle > 0).then(|| ArrayQueue::new(max_idle)),
        }
    }

    /// The endpoint address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Number of idle connections (approximate under concurrency).
    pub fn idle(&self) -> usize {
        self.idle.as_ref().map_or(0, ArrayQueue::len)
    }

    /// An idle connection if one is usable, else a new one.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<Checkout, ConnectError> {
        if let Some(idle) = &self.idle {
            while let Some(mut sender) = idle.pop() {
                if sender.is_closed() {
                    continue;
                }
                // A connection is returned when its response body ended; its task may
                // need a moment to become ready for the next request.
                if sender.is_ready()
                    || matches!(
                        tokio::time::timeout(connect_timeout, sender.ready()).await,
                        Ok(Ok(()))
                    )
                {
                    return Ok(Checkout {
                        sender,
                        reused: true,
                    });
                }
            }
        }
        self.connect(connect_timeout).await.map(|sender| Checkout {
            sender,
            reused: false,
        })
    }

    /// Opens a new connection.
    pub async fn connect(&self, connect_timeout: Duration) -> Result<Sender, ConnectError> {
        let addr = self.address;
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::Timeout(addr)),
            Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            // With upgrades, a 101 hands the socket to the tunnel instead of closing it.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Returns a connection whose last response completed.
    pub fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Some(idle) = &self.idle {
            // A full pool drops the connection, which closes it.
            let _ = idle.push(sender);
        }
    }
}
