//! The floor of an HTTP/1 proxy on tokio, for `benches/load/compare.sh`: how fast a
//! proxy on the same runtime, the same cores and the same thread-per-core layout as
//! tether can go when it does the least HTTP work there is. It is a measuring stick,
//! not a proxy to deploy: no stickiness, no pooling, no timeouts, no header hygiene.
//!
//! Each client connection gets one task and one upstream connection of its own
//! (round-robin over the upstreams). Per request it parses the request head with
//! httparse, appends `X-Forwarded-For`, writes the head upstream, parses the response
//! head, reads its `Content-Length` body and writes the response back as received.
//! A request body or a chunked message closes the connection; a response without
//! `Content-Length` is taken as bodiless; pipelined requests are not handled (wrk does
//! not pipeline).
//!
//! Comparing tether with this floor and with the L4 relay row tells how much of the gap
//! to the peers is tokio and the kernel (none: the floor reaches the relay) and how
//! much is tether's own HTTP machinery (hyper's server and client, header maps, the
//! channels between tasks).
//!
//!   cargo run --release --example h1_floor -- 127.0.0.1:18094 2 127.0.0.1:18081 127.0.0.1:18082

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Request and response heads larger than this close the connection.
const BUF: usize = 16 * 1024;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: h1_floor LISTEN WORKERS UPSTREAM...";
    let listen: SocketAddr = args.next().context(usage)?.parse()?;
    let workers: usize = args.next().context(usage)?.parse()?;
    let upstreams = args
        .map(|a| a.parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    if upstreams.is_empty() || workers == 0 {
        bail!(usage);
    }
    let upstreams: Arc<[SocketAddr]> = upstreams.into();
    let next = Arc::new(AtomicUsize::new(0));
    // Thread per core, like tether with `workers`: each thread a current-thread runtime
    // accepting on its own SO_REUSEPORT listener.
    let threads = (1..workers)
        .map(|_| {
            let (upstreams, next) = (upstreams.clone(), next.clone());
            std::thread::spawn(move || serve(listen, upstreams, next))
        })
        .collect::<Vec<_>>();
    serve(listen, upstreams, next)?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn serve(
    listen: SocketAddr,
    upstreams: Arc<[SocketAddr]>,
    next: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let listener: TcpListener = socket.listen(1024)?;
        loop {
            let (client, peer) = listener.accept().await?;
            let upstream = upstreams[next.fetch_add(1, Ordering::Relaxed) % upstreams.len()];
            tokio::spawn(async move {
                if let Err(e) = relay(client, peer, upstream).await {
                    eprintln!("h1_floor: {peer}: {e}");
                }
            });
        }
    })
}

/// Serves one client connection until either side closes or sends something this floor
/// does not handle.
async fn relay(
    mut client: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let forwarded = format!("x-forwarded-for: {}\r\n\r\n", peer.ip());
    let (mut req, mut resp, mut head) = (vec![0; BUF], vec![0; BUF], Vec::with_capacity(BUF));
    loop {
        let Some((len, _)) = read_head(&mut client, &mut req, |buf| {
            let mut h = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut h);
            let httparse::Status::Complete(len) = r.parse(buf)? else {
                return Ok(None);
            };
            if content_length(r.headers)? != 0 {
                bail!("request bodies are not handled");
            }
            Ok(Some(len))
        })
        .await?
        else {
            return Ok(());
        };
        // The head without its final CRLF, then our header and the CRLF.
        head.clear();
        head.extend_from_slice(&req[..len - 2]);
        head.extend_from_slice(forwarded.as_bytes());
        up.write_all(&head).await?;

        let mut body_len = 0;
        let Some((len, mut have)) = read_head(&mut up, &mut resp, |buf| {
            let mut h = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut h);
            let httparse::Status::Complete(len) = r.parse(buf)? else {
                return Ok(None);
            };
            body_len = content_length(r.headers)?;
            Ok(Some(len))
        })
        .await?
        else {
            bail!("upstream closed");
        };
        let total = len + body_len;
        if total > resp.len() {
            bail!("response larger than {BUF} bytes");
        }
        while have < total {
            let n = up.read(&mut resp[have..total]).await?;
            if n == 0 {
                bail!("upstream closed mid-body");
            }
            have += n;
        }
        client.write_all(&resp[..total]).await?;
    }
}

/// Reads into `buf` until `parse` finds a complete head: (head length, bytes read), or
/// `None` when the peer closed before sending anything.
async fn read_head(
    io: &mut TcpStream,
    buf: &mut [u8],
    mut parse: impl FnMut(&[u8]) -> anyhow::Result<Option<usize>>,
) -> anyhow::Result<Option<(usize, usize)>> {
    let mut have = 0;
    loop {
        if have == buf.len() {
            bail!("head larger than {BUF} bytes");
        }
        let n = io.read(&mut buf[have..]).await?;
        if n == 0 {
            return if have == 0 {
                Ok(None)
            } else {
                bail!("peer closed mid-head")
            };
        }
        have += n;
        if let Some(len) = parse(&buf[..have])? {
            return Ok(Some((len, have)));
        }
    }
}

/// The body length a head declares; none declared is taken as no body (the floor never
/// meets close-delimited responses from the benchmark pods).
fn content_length(headers: &[httparse::Header<'_>]) -> anyhow::Result<usize> {
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked messages are not handled");
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            return Ok(std::str::from_utf8(h.value)?.trim().parse()?);
        }
    }
    Ok(0)
}
