//! tether's HTTP/1 codec (the fast path), seen from a raw client socket: pipelining,
//! small bodies read whole and large ones streamed on one connection, and every way an
//! upstream frames a response.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Writes `request` on a new connection and reads until the proxy closes it.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection after `Connection: close`")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw upstream that answers the n-th request head it reads (over all connections)
/// with `answers[n]` and closes the connection after an answer ending in `None`.
async fn scripted_pod(answers: Vec<(&'static [u8], bool)>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let answers = Arc::new(answers);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (count, answers) = (count.clone(), answers.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    got.drain(..end);
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let Some(&(answer, close)) = answers.get(n) else {
                        return;
                    };
                    if s.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, served)
}

fn one_endpoint(addr: SocketAddr, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{server_extra}\n\
         [[backend]]\nname = \"app\"\nendpoints = [\"{addr}\"]\n"
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let pod = TestBackend::echo("pod-a").await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    let out = raw(
        p.proxy_addr,
        // The second head ends its lines with bare LF, which httparse (and hyper) accept.
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\nHost: a\n\n\
          GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    let (one, two, three) = (
        out.find("\"path\":\"/1\"").unwrap(),
        out.find("\"path\":\"/2\"").unwrap(),
        out.find("\"path\":\"/3\"").unwrap(),
    );
    assert!(one < two && two < three, "{out}");
    assert!(out.contains("connection: close"), "{out}");
    p.shutdown().await;
}

#[tokio::test]
async fn small_bodies_are_read_whole_and_a_large_one_streams_on_the_same_connection() {
    let pod = TestBackend::echo("pod-a").await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    // Pipelined in one write: the bytes after each body are the next request.
    s.write_all(
        b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          PUT /second HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\
          GET /third HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    for (path, body) in [("/first", "hello"), ("/second", "hi"), ("/third", "")] {
        let out = read_response(&mut s).await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains(&format!("\"path\":\"{path}\"")), "{out}");
        assert!(out.contains(&format!("\"body\":\"{body}\"")), "{out}");
    }

    // A body over `request_buffer`: streamed through, and the connection goes on
    // with the request after it.
    let big = "x".repeat(tether::config::DEFAULT_BUFFER + 1);
    let request = format!(
        "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{big}\
         GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        big.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(
        out.contains(&format!("\"body\":\"{big}\"")),
        "the large body arrived whole"
    );
    assert!(out.find("\"path\":\"/big\"").unwrap() < out.find("\"path\":\"/after\"").unwrap());
    p.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_body_that_arrives_after_its_head_in_pieces_is_relayed_whole() {
    let pod = TestBackend::echo("pod-a").await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    s.write_all(b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
        .await
        .unwrap();
    for piece in [&b"hello"[..], b" ", b"world"] {
        // The proxy reads what came so far before the next piece is sent.
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(piece).await.unwrap();
    }
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\"body\":\"hello world\""), "{out}");
    // The connection goes on with the next request.
    s.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let out = read_response(&mut s).await;
    assert!(out.contains("\"path\":\"/next\""), "{out}");
    assert_eq!(pod.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    p.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_gets_a_408_at_the_response_timeout_and_never_reaches_a_pod() {
    let pod = TestBackend::echo("pod-a").await;
    let p = proxy(&config(&[&pod], &[], "response_timeout = \"5s\"")).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let sent = tokio::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("the proxy gave up on the body and closed")
        .unwrap();
    let waited = sent.elapsed();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
    assert!(out.contains("connection: close"), "{out}");
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "answered after {waited:?}"
    );
    // The pod was never held by the slow client.
    assert_eq!(pod.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    p.shutdown().await;
}

#[tokio::test]
async fn a_body_over_max_body_bytes_gets_a_413_and_never_reaches_a_pod() {
    let pod = TestBackend::echo("pod-a").await;
    let mut cfg = config(&[&pod], &[], "");
    cfg = cfg.replace("[server]\n", "[server]\nmax_body_bytes = 4\n");
    let p = proxy(&cfg).await;
    let out = raw(
        p.proxy_addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    // A chunked body is counted as it streams: past the limit, 413 and a close.
    let out = raw(
        p.proxy_addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    assert!(out.contains("connection: close"), "{out}");
    assert_eq!(pod.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    p.shutdown().await;
}

#[tokio::test]
async fn chunked_and_close_delimited_bodies_reach_the_client_whole() {
    let (addr, served) = scripted_pod(vec![
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Pod: raw\r\n\r\n\
              5;note=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nX-Pod: raw\r\n\r\nuntil the end", true),
    ])
    .await;
    let p = proxy(&one_endpoint(addr, "")).await;
    let out = raw(
        p.proxy_addr,
        b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /close HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    // The chunked body is relayed as it came, trailer included; the close-delimited one
    // ends the client connection too (the proxy closes it: `raw` returned).
    assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
    assert!(
        out.contains("5;note=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
        "{out}"
    );
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nuntil the end"), "{out}");
    assert_eq!(served.load(Ordering::SeqCst), 2);
    p.shutdown().await;
}

#[tokio::test]
async fn head_304_and_informational_responses_carry_no_body_and_the_connection_goes_on() {
    let (addr, served) = scripted_pod(vec![
        // HEAD: the length describes the GET body, which is not sent.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", false),
        (b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", false),
        // An Early Hints response first: forwarded (RFC 9110 §15.2).
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
    ])
    .await;
    let p = proxy(&one_endpoint(addr, "")).await;
    let out = raw(
        p.proxy_addr,
        b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n\
          GET /e HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let heads: Vec<&str> = out.lines().filter(|l| l.starts_with("HTTP/1.1")).collect();
    assert_eq!(
        heads,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 304 Not Modified",
            "HTTP/1.1 103 Early Hints",
            "HTTP/1.1 200 OK"
        ],
        "{out}"
    );
    assert!(out.contains("content-length: 100\r\n") || out.contains("Content-Length: 100\r\n"));
    assert!(out.ends_with("\r\n\r\nok"), "{out}");
    assert_eq!(
        served.load(Ordering::SeqCst),
        3,
        "one upstream exchange each"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn an_upstream_response_that_cannot_be_relayed_is_a_502() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        // httparse takes any three digits; hyper answers 502 under 100, and so must this.
        b"HTTP/1.1 042 Odd\r\nContent-Length: 5\r\n\r\nhello",
    ] {
        let (addr, _) = scripted_pod(vec![(answer, false)]).await;
        let p = proxy(&one_endpoint(addr, "")).await;
        let out = raw(
            p.proxy_addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{out}");
        assert!(out.contains("\r\ndate: "), "{out}");
        assert!(out.ends_with("upstream error\n"), "{out}");
        assert!(!out.contains("hello"), "{out}");
        p.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let pod = TestBackend::echo("pod-a").await;
    let mut cfg = config(&[&pod], &[], "");
    cfg = cfg.replace("[server]\n", "[server]\nheader_timeout = \"30s\"\n");
    let p = proxy(&cfg).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    }
    // Now idle: the proxy closes the connection (a read sees EOF) 30 s later on the
    // paused clock, not before.
    let idle = tokio::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
        .await
        .expect("the idle connection was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "closed after {waited:?}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_bodyless_post_never_goes_out_on_a_connection_the_upstream_closed_while_idle() {
    // The pod closes each connection right after its answer, as an upstream whose
    // keep-alive timeout expired would.
    let (addr, served) = scripted_pod(vec![
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget", true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npost", true),
    ])
    .await;
    let p = proxy(&one_endpoint(addr, "")).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].ends_with(b"get"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A POST is not idempotent: it could not be replayed after a stale connection, so
    // the pooled one must be found closed before anything is written to it.
    s.write_all(b"POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let out = String::from_utf8_lossy(&buf[..n]);
    assert!(
        out.starts_with("HTTP/1.1 200 OK") && out.ends_with("post"),
        "{out}"
    );
    assert_eq!(served.load(Ordering::SeqCst), 2);
    p.shutdown().await;
}

/// A raw upstream: `handle` gets each accepted connection.
async fn raw_pod<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// Reads one request head from `s`; false when the connection ended first.
async fn read_request(s: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => got.push(byte[0]),
            _ => return false,
        }
    }
    true
}

#[tokio::test(start_paused = true)]
async fn bytes_an_upstream_sends_after_its_response_never_answer_another_request() {
    // The first answer says 59 bytes of body for a HEAD (so none are read), and the
    // body follows later: a complete response of its own, sitting in the pooled socket.
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let addr = raw_pod(move |mut s| {
        let count = count.clone();
        async move {
            while read_request(&mut s).await {
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    let hidden =
                        b"HTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 4\r\n\r\nEVIL";
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        hidden.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = s.write_all(hidden).await;
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
                        .await;
                }
            }
        }
    })
    .await;
    let p = proxy(&one_endpoint(addr, "")).await;
    let head = raw(
        p.proxy_addr,
        b"HEAD /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = raw(
        p.proxy_addr,
        b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !other.contains("EVIL") && !other.contains("X-Injected"),
        "{other}"
    );
    assert!(other.ends_with("good"), "{other}");
    p.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_get_is_served_after_the_upstream_closed_every_idle_connection() {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    // The upstream closes a connection idle for 100 ms, and answers slowly enough that
    // two concurrent requests leave two connections in the pool.
    let addr = raw_pod(move |mut s| {
        let count = count.clone();
        async move {
            while let Ok(true) =
                tokio::time::timeout(Duration::from_millis(100), read_request(&mut s)).await
            {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await;
    let p = proxy(&one_endpoint(addr, "")).await;
    let get = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (a, b) = tokio::join!(raw(p.proxy_addr, get), raw(p.proxy_addr, get));
    assert!(a.ends_with("ok") && b.ends_with("ok"), "{a}\n{b}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = raw(p.proxy_addr, get).await;
    assert!(c.starts_with("HTTP/1.1 200 OK") && c.ends_with("ok"), "{c}");
    assert_eq!(served.load(Ordering::SeqCst), 3);
    p.shutdown().await;
}

#[tokio::test]
async fn an_empty_line_before_the_status_line_is_skipped_as_hyper_does() {
    // The body is itself a response: it must reach the client as body, not as the head.
    let addr = raw_pod(|mut s| async move {
        while read_request(&mut s).await {
            let body = b"HTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 4\r\n\r\nEVIL";
            let mut answer = format!(
                "\r\nHTTP/1.1 200 OK\r\nX-Real: 1\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            answer.extend_from_slice(body);
            let _ = s.write_all(&answer).await;
        }
    })
    .await;
    let p = proxy(&one_endpoint(addr, "")).await;
    let out = raw(
        p.proxy_addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let real = out
        .find("X-Real: 1")
        .expect("the real head reaches the client");
    assert!(real < out.find("X-Injected").unwrap(), "{out}");
    assert!(out.ends_with("EVIL"), "{out}");
    p.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_response_head_that_arrives_in_pieces_is_relayed_whole_and_one_cut_short_is_a_502() {
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let addr = raw_pod(move |mut s| {
        let count = count.clone();
        async move {
            while read_request(&mut s).await {
                let pieces: &[&[u8]] = if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    &[
                        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
                        b"HTTP/1.1 200 OK\r\nContent-",
                        b"Length: 2\r\nX-Pod: p\r\n",
                        b"\r\nok",
                    ]
                } else {
                    &[b"HTTP/1.1 200 OK\r\nContent-Le"]
                };
                for piece in pieces {
                    let _ = s.write_all(piece).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if pieces.len() == 1 {
                    return;
                }
            }
        }
    })
    .await;
    let p = proxy(&one_endpoint(addr, "")).await;
    let whole = raw(
        p.proxy_addr,
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        whole.starts_with("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{whole}"
    );
    assert!(whole.contains("X-Pod: p\r\n"), "{whole}");
    assert!(whole.ends_with("\r\n\r\nok"), "{whole}");
    let cut = raw(
        p.proxy_addr,
        b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(cut.starts_with("HTTP/1.1 502"), "{cut}");
    p.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_an_idle_keep_alive_connection_at_once() {
    let pod = TestBackend::echo("pod-a").await;
    let mut cfg = config(&[&pod], &[], "");
    cfg = cfg.replace("[server]\n", "[server]\nheader_timeout = \"30s\"\n");
    let p = proxy(&cfg).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    let mut buf = vec![0u8; 65536];
    // Two requests, so the connection has waited for a head (and armed its shutdown
    // wait) before it goes idle.
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let began = tokio::time::Instant::now();
    p.shutdown().await;
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was closed");
    // On the paused clock a connection left to its header timeout would have moved
    // the clock 29 s on.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_get_answered_with_something_that_is_not_http_is_retried_on_the_next_pod_and_a_post_is_not(
) {
    // A pod whose port speaks something else (a TLS alert here) fails the exchange like
    // a reset: a GET may move on, a POST may not be sent twice.
    replayable_retried_and_others_sent_once_when_one_pod_answers(
        b"\x15\x03\x01\x00\x02\x02\x46",
        "",
        "502",
    )
    .await;
}

#[tokio::test]
async fn a_status_under_100_is_a_failed_exchange_retried_like_on_the_hyper_path() {
    replayable_retried_and_others_sent_once_when_one_pod_answers(
        b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
        "",
        "502",
    )
    .await;
}

#[tokio::test]
async fn a_503_is_retried_for_a_get_when_retry_on_allows_and_relayed_for_a_post_or_a_body() {
    replayable_retried_and_others_sent_once_when_one_pod_answers(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        "retry_on = [\"503\"]\n",
        "503",
    )
    .await;
}

/// Two pods, one answering every request with `answer`: GETs all get pod-a's 200, and
/// exactly the POSTs and bodies placed on the bad pod get `once` (their status line's
/// code), each sent once.
async fn replayable_retried_and_others_sent_once_when_one_pod_answers(
    answer: &'static [u8],
    backend_extra: &str,
    once: &str,
) {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let bad_pod = raw_pod(move |mut s| {
        let count = count.clone();
        async move {
            if read_request(&mut s).await {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(answer).await;
            }
        }
    })
    .await;
    let ok = TestBackend::echo("pod-a").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
         [[backend]]\nname = \"app\"\noutlier_failures = 1000\n{backend_extra}\
         endpoints = [\"{bad_pod}\", {}]\n",
        ok.entry()
    );
    let p = proxy(&cfg).await;
    for _ in 0..40 {
        let out = raw(
            p.proxy_addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("pod-a"), "{out}");
    }
    let tried = hits.load(Ordering::SeqCst);
    assert!(
        tried > 0,
        "some new sessions were placed on the bad pod first"
    );
    // Neither a POST nor a request with a body (even a PUT, whose method is
    // idempotent) is ever sent twice: the same rule on both paths.
    for request in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    ] {
        let before = hits.load(Ordering::SeqCst);
        let mut bad_gateway = 0;
        for _ in 0..40 {
            let out = raw(p.proxy_addr, request).await;
            if out.starts_with(&format!("HTTP/1.1 {once} ")) {
                bad_gateway += 1;
            } else {
                assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
                if request.ends_with(b"hello") {
                    assert!(out.contains("\"body\":\"hello\""), "{out}");
                }
            }
        }
        assert_eq!(
            bad_gateway,
            hits.load(Ordering::SeqCst) - before,
            "every request placed on the bad pod got its {once} and was not sent again"
        );
        assert!(bad_gateway > 0);
    }
    p.shutdown().await;
}

#[tokio::test]
async fn a_connection_header_naming_content_length_cannot_turn_a_body_into_a_second_request() {
    let pod = TestBackend::echo("pod-a").await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    // Dropping the length as `Connection` asks, and then sending the body, would have
    // the pod read the body as a request of its own, past routing and header hygiene.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: internal\r\nX-Tether-Session: forged\r\n\r\n";
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: a\r\nConnection: content-length, close\r\n\
         Content-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let out = raw(p.proxy_addr, request.as_bytes()).await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 1, "{out}");
    assert!(out.contains("\"path\":\"/a\""), "{out}");
    assert!(
        out.contains("GET /smuggled"),
        "the body arrived as a body: {out}"
    );
    assert_eq!(pod.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    p.shutdown().await;
}

#[tokio::test]
async fn a_get_is_replayed_when_a_reused_upstream_connection_dies_under_it_and_a_body_is_not() {
    // The pod answers the first request on each connection, then reads the next one
    // and closes without a word: what an upstream closing a keep-alive connection just
    // as a request arrives looks like.
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let pod = raw_pod(move |mut s| {
        let count = count.clone();
        async move {
            if !read_request(&mut s).await {
                return;
            }
            count.fetch_add(1, Ordering::SeqCst);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
                .await
                .is_err()
            {
                return;
            }
            if read_request(&mut s).await {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let p = proxy(&one_endpoint(pod, "")).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.ends_with("first"));
    // Reuses the connection, which dies: sent again on a fresh one.
    s.write_all(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let out = read_response(&mut s).await;
    assert!(
        out.starts_with("HTTP/1.1 200 OK") && out.ends_with("first"),
        "{out}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    // A PUT is idempotent, but its body is never sent twice: the client gets a 502.
    s.write_all(b"PUT /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 502 "), "{out}");
    assert_eq!(requests.load(Ordering::SeqCst), 4);
    p.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_body_for_no_route_is_read_to_its_end_and_gets_a_404_on_a_connection_that_goes_on() {
    let pod = TestBackend::echo("pod-a").await;
    let cfg = format!(
        "{}[[route]]\nhost = \"app.example\"\npath_prefix = \"/\"\nbackend = \"app\"\n",
        config(&[&pod], &[], "")
    );
    let p = proxy(&cfg).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    // Three of ten body bytes first; closing now, with the rest unread, would reset
    // the connection and could take the 404 with it.
    s.write_all(b"POST / HTTP/1.1\r\nHost: other.example\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    // The proxy reads what came so far before the rest is sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"defghijGET /next HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await
        .unwrap();
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
    assert!(!out.contains("connection: close"), "{out}");
    // The body's bytes were not taken for a request: the next one is served.
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\"path\":\"/next\""), "{out}");
    assert_eq!(pod.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    p.shutdown().await;
}

#[tokio::test]
async fn a_close_delimited_response_cut_off_mid_body_ends_in_a_reset_the_client_can_tell_from_its_end(
) {
    // A close-delimited body is relayed as it is, so a plain close (FIN) would look
    // like its end: the proxy resets the connection instead.
    let (pod, cut) =
        pod_that_breaks_mid_body(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await;
    let p = proxy(&one_endpoint(pod, "")).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    let end = read_a_response_cut_mid_body(&mut s, cut).await;
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_response_with_a_length_cut_off_mid_body_ends_in_a_plain_close() {
    // Its length already tells the client the body was cut; a reset would only throw
    // away bytes still on their way to it (a whole pipelined response, say). Larger
    // than `response_buffer`, so it streams (a small one is read whole first, and a
    // cut there is a 502 before anything is sent).
    let (pod, cut) =
        pod_that_breaks_mid_body(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n").await;
    let p = proxy(&one_endpoint(pod, "")).await;
    let mut s = TcpStream::connect(p.proxy_addr).await.unwrap();
    let end = read_a_response_cut_mid_body(&mut s, cut).await;
    assert_eq!(
        end.map_err(|e| e.kind()),
        Ok(0),
        "a FIN after the part sent"
    );
    p.shutdown().await;
}
