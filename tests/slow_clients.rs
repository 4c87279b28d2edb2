//! Slow clients hold no pod's connection for small messages: a request body of known
//! length up to `request_buffer` is read whole before an upstream is chosen, and a
//! response of known length up to `response_buffer` is read whole and its upstream
//! connection returned before the client is written to. A reader that takes nothing
//! for `send_timeout` is cut off.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use support::transport::{Front, Transport};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A pod that answers `GET /big` with 32 KiB and anything else with its echo.
async fn pod() -> Arc<TestBackend> {
    TestBackend::with_handler("pod-a", |req| async move {
        if req.uri().path() == "/big" {
            return http::Response::builder()
                .header("content-length", "32768")
                .body(full(vec![b'b'; 32768]))
                .unwrap();
        }
        echo("pod-a", req).await
    })
    .await
}

/// A plaintext connection to `addr` whose receive buffer holds about 4 KiB, so a
/// response it does not read stays in the proxy's socket.
async fn small_reader(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(addr).await.unwrap()
}

const UPLOAD: usize = 32 * 1024;

/// 200 uploads of 32 KiB stalled halfway and 200 readers of 32 KiB responses that
/// read nothing, over HTTP/1.1, then every upload finished one by one: the pod saw a
/// handful of connections, not one per slow client. (On loopback the kernel's socket
/// buffers take a whole 32 KiB response, so over HTTP/1 the readers' half would pass
/// even unbuffered; the h2c test below, where flow control stops the writer, is the
/// one that shows `response_buffer`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_uploads_and_slow_readers_hold_a_handful_of_upstream_connections_over_http1(
) {
    let pod = pod().await;
    let front = Front::start(Transport::H1, &config(&[&pod], &[], "")).await;
    let addr = front.proxy.proxy_addr;
    let head = format!("POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: {UPLOAD}\r\n\r\n");
    let mut uploads = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[b'u'; UPLOAD / 2]).await.unwrap();
        uploads.push(s);
    }
    let mut readers = Vec::new();
    for n in 1..=200u64 {
        let mut s = small_reader(addr).await;
        s.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        // The response has begun: with the body buffered, its upstream connection is
        // back in the pool before this first byte was written.
        let mut b = [0u8; 1];
        s.peek(&mut b).await.unwrap();
        assert_eq!(pod.hits.load(Ordering::SeqCst), n);
        readers.push(s);
    }
    for mut s in uploads {
        s.write_all(&[b'u'; UPLOAD / 2]).await.unwrap();
        let out = read_response(&mut s).await;
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        assert!(out.contains(&format!("\"body\":\"{}\"", "u".repeat(UPLOAD))));
    }
    let held = pod.connections.load(Ordering::SeqCst);
    assert!(
        held <= 6,
        "{held} upstream connections for 400 slow clients"
    );
    // The readers still get every byte when they read.
    for mut s in readers.into_iter().take(3) {
        let out = read_response(&mut s).await;
        assert!(out.ends_with(&"b".repeat(32768)), "{}", out.len());
    }
    front.proxy.shutdown().await;
}

type Frames = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> + Send>,
>;

/// The same over HTTP/2 (h2c): each upload sends half its DATA and waits; each reader
/// opens a stream with a 4 KiB window and reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_uploads_and_slow_readers_hold_a_handful_of_upstream_connections_over_h2c()
{
    let pod = pod().await;
    let front = Front::start(Transport::H2c, &config(&[&pod], &[], "")).await;
    let mut uploads = Vec::new();
    for _ in 0..200 {
        let rest = Arc::new(tokio::sync::Notify::new());
        let go = rest.clone();
        let frames = futures::stream::unfold(0, move |step| {
            let rest = rest.clone();
            async move {
                match step {
                    0 => Some((
                        Ok(http_body::Frame::data(Bytes::from(vec![b'u'; UPLOAD / 2]))),
                        1,
                    )),
                    1 => {
                        rest.notified().await;
                        Some((
                            Ok(http_body::Frame::data(Bytes::from(vec![b'u'; UPLOAD / 2]))),
                            2,
                        ))
                    }
                    _ => None,
                }
            }
        });
        let mut s = front.h2::<StreamBody<Frames>>().await;
        let req = http::Request::post("http://localhost/up")
            .header("content-length", UPLOAD.to_string())
            .body(StreamBody::new(Box::pin(frames) as Frames))
            .unwrap();
        s.ready().await.unwrap();
        uploads.push((go, tokio::spawn(s.send_request(req))));
    }
    let mut readers = Vec::new();
    for n in 1..=200u64 {
        let stream = TcpStream::connect(front.proxy.proxy_addr).await.unwrap();
        let (mut s, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(4096)
                .initial_connection_window_size(65535)
                .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("http://localhost/big")
            .body(Full::default())
            .unwrap();
        // The head has come: with the body buffered, the upstream connection is back.
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(pod.hits.load(Ordering::SeqCst), n);
        readers.push((s, resp));
    }
    // One by one: each finished upload is forwarded alone.
    for (go, u) in uploads {
        go.notify_one();
        let resp = u.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(&"u".repeat(UPLOAD)));
    }
    let held = pod.connections.load(Ordering::SeqCst);
    assert!(
        held <= 6,
        "{held} upstream connections for 400 slow clients"
    );
    let (_, resp) = readers.pop().unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 32768);
    front.proxy.shutdown().await;
}

/// A reader that takes nothing of a large, streamed response is cut off after
/// `send_timeout` and counted; the pod's connection is freed with it.
#[tokio::test(start_paused = true)]
async fn a_reader_that_takes_nothing_is_cut_off_after_the_send_timeout() {
    let pod = TestBackend::with_handler("pod-a", |_req| async move {
        http::Response::builder()
            .header("content-length", (4 << 20).to_string())
            .body(full(vec![b'b'; 4 << 20]))
            .unwrap()
    })
    .await;
    let cfg =
        config(&[&pod], &[], "").replacen("[server]\n", "[server]\nsend_timeout = \"30s\"\n", 1);
    let front = Front::start(Transport::H1, &cfg).await;
    let mut s = small_reader(front.proxy.proxy_addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut b = [0u8; 1];
    s.peek(&mut b).await.unwrap();
    let c = TestClient::new();
    let ended = || async {
        metric(
            &c,
            front.proxy.admin_addr,
            "tether_send_timeouts_total",
            &[],
        )
        .await
    };
    assert_eq!(ended().await, 0.0);
    tokio::time::sleep(Duration::from_secs(31)).await;
    wait_for_async("the send timeout", || async { ended().await == 1.0 }).await;
    // The connection is closed: reading drains what was sent, then ends. Draining is
    // real I/O (the kernel moves the rest as the window opens), so on real time: a
    // paused clock would jump past the bound whenever a read briefly found nothing.
    tokio::time::resume();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the proxy closed the connection");
    assert!(got.len() < 4 << 20, "{} bytes", got.len());
    front.proxy.shutdown().await;
}

/// The same over HTTP/2, per stream: a client that reads its connection (it answers
/// PINGs, its socket never fills) but opens no flow-control window for one stream has
/// that stream reset after `send_timeout` and counted; the pod's connection is freed
/// with it, and the connection's other streams go on.
#[tokio::test(start_paused = true)]
async fn an_http2_stream_given_no_window_is_reset_after_the_send_timeout() {
    let pod = TestBackend::with_handler("pod-a", |req| async move {
        if req.uri().path() == "/small" {
            return echo("pod-a", req).await;
        }
        http::Response::builder()
            .header("content-length", (4 << 20).to_string())
            .body(full(vec![b'b'; 4 << 20]))
            .unwrap()
    })
    .await;
    let cfg =
        config(&[&pod], &[], "").replacen("[server]\n", "[server]\nsend_timeout = \"30s\"\n", 1);
    let front = Front::start(Transport::H2c, &cfg).await;
    let stream = TcpStream::connect(front.proxy.proxy_addr).await.unwrap();
    let (mut s, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .initial_stream_window_size(4096)
            .initial_connection_window_size(1 << 20)
            .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://localhost/big")
        .body(Full::default())
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let c = TestClient::new();
    let ended = || async {
        metric(
            &c,
            front.proxy.admin_addr,
            "tether_send_timeouts_total",
            &[],
        )
        .await
    };
    assert_eq!(ended().await, 0.0);
    tokio::time::sleep(Duration::from_secs(31)).await;
    wait_for_async("the send timeout", || async { ended().await == 1.0 }).await;
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "the stalled stream was reset");
    // The connection itself is fine: another stream on it is answered.
    let req = http::Request::get("http://localhost/small")
        .body(Full::default())
        .unwrap();
    s.ready().await.unwrap();
    let small = s.send_request(req).await.unwrap();
    assert_eq!(small.status(), 200);
    front.proxy.shutdown().await;
}
