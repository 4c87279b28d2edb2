//! What clients legitimately send: HTTP/2, WebSockets, header and client-IP affinity;
//! and what they must not be able to do: slowloris, oversized heads and bodies,
//! request smuggling shapes.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// An HTTP/2 (prior knowledge) connection to `addr`.
async fn h2(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: std::net::SocketAddr,
    cookie: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut b = http::Request::get(format!("http://{addr}/")).version(http::Version::HTTP_2);
    if let Some(c) = cookie {
        b = b.header("cookie", format!("tether={c}"));
    }
    sender.ready().await.unwrap();
    let resp = sender
        .send_request(b.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let set = resp.headers().get("set-cookie").map(|v| {
        v.to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("tether=")
            .to_string()
    });
    let pod = resp
        .headers()
        .get("x-pod")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let _ = resp.into_body().collect().await.unwrap();
    (status, set, pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_http2_requests_over_four_connections_all_reach_the_pinned_pod() {
    let pods = three_pods().await;
    // 400 concurrent streams open up to 400 upstream connections at once on a debug
    // build: give connects a production-like timeout, not the harness's 500 ms.
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "")
        .replace("connect_timeout = \"500ms\"", "connect_timeout = \"5s\"");
    let p = proxy(&cfg).await;
    let addr = p.proxy_addr;
    let mut first = h2(addr).await;
    let (status, cookie, pinned) = h2_get(&mut first, addr, None).await;
    assert_eq!(status, 200);
    let cookie = cookie.expect("the first HTTP/2 response sets the cookie");

    let mut tasks = Vec::new();
    for _ in 0..4 {
        let sender = h2(addr).await;
        for _ in 0..100 {
            let mut s = sender.clone();
            let cookie = cookie.clone();
            tasks.push(tokio::spawn(async move {
                let mut pods = Vec::new();
                for _ in 0..5 {
                    let (status, set, pod) = h2_get(&mut s, addr, Some(&cookie)).await;
                    assert_eq!(status, 200);
                    assert!(
                        set.is_none(),
                        "sticky HTTP/2 response set {set:?} (sent {cookie})"
                    );
                    pods.push(pod);
                }
                pods
            }));
        }
    }
    let mut n = 0;
    for t in tasks {
        for pod in t.await.unwrap() {
            assert_eq!(pod, pinned);
            n += 1;
        }
    }
    assert_eq!(n, 2000);
    p.shutdown().await;
}

#[tokio::test]
async fn concurrent_first_requests_on_one_http2_connection_land_on_one_pod() {
    let pods = three_pods().await;
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let addr = p.proxy_addr;
    for _ in 0..5 {
        let sender = h2(addr).await;
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let mut s = sender.clone();
            tasks.push(tokio::spawn(
                async move { h2_get(&mut s, addr, None).await },
            ));
        }
        let mut seen = HashMap::new();
        let mut cookies = std::collections::HashSet::new();
        for t in tasks {
            let (status, set, pod) = t.await.unwrap();
            assert_eq!(status, 200);
            *seen.entry(pod).or_insert(0) += 1;
            cookies.insert(set.expect("each gets the session's cookie"));
        }
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(cookies.len(), 1, "one session, one cookie");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn a_trusted_proxys_http2_connection_gives_each_cookieless_request_its_own_session() {
    // A proxy in front of tether carries many users' first requests on one connection:
    // they must not become one session the app would see as one user.
    let pods = three_pods().await;
    let extra = "[backend.affinity]\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], extra)).await;
    let addr = p.proxy_addr;
    let mut sender = h2(addr).await;
    let mut cookies = std::collections::HashSet::new();
    for _ in 0..10 {
        let (status, set, _) = h2_get(&mut sender, addr, None).await;
        assert_eq!(status, 200);
        cookies.insert(set.expect("a new session's cookie"));
    }
    assert_eq!(cookies.len(), 10, "ten users, ten sessions");
    p.shutdown().await;
}

/// A WebSocket echo pod that first sends its own name.
async fn ws_pod(name: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                let _ = ws.send(Message::text(name)).await;
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websockets_are_sticky_and_echo_a_thousand_messages() {
    let a = ws_pod("ws-a").await;
    let b = ws_pod("ws-b").await;
    let c = ws_pod("ws-c").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
         [[backend]]\nname = \"ws\"\nendpoints = [{{ name = \"ws-a\", address = \"{a}\" }}, {{ name = \"ws-b\", address = \"{b}\" }}, {{ name = \"ws-c\", address = \"{c}\" }}]\n"
    );
    let p = proxy(&cfg).await;
    let url = format!("ws://{}/chat", p.proxy_addr);

    let (mut ws, resp) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(resp.status(), 101);
    let set = resp
        .headers()
        .get("set-cookie")
        .expect("the 101 carries the new session's cookie");
    let cookie = set.to_str().unwrap().split(';').next().unwrap().to_string();
    let pod = ws
        .next()
        .await
        .unwrap()
        .unwrap()
        .into_text()
        .unwrap()
        .to_string();
    for i in 0..1000 {
        ws.send(Message::text(format!("msg {i}"))).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("msg {i}"));
    }
    ws.close(None).await.unwrap();
    drop(ws);

    for _ in 0..5 {
        let req = http::Request::get(&url)
            .header("cookie", &cookie)
            .header("host", p.proxy_addr.to_string())
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .unwrap();
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "sticky: no new cookie"
        );
        let again = ws
            .next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .to_string();
        assert_eq!(again, pod);
        ws.close(None).await.unwrap();
        drop(ws);
    }
    p.shutdown().await;
}

#[tokio::test]
async fn header_affinity_pins_a_header_value_without_cookies() {
    let pods = three_pods().await;
    let p = proxy(&config(
        &refs(&pods),
        &[("k1", KEY_1)],
        "[backend.affinity]\nkey = \"header:X-Session-Id\"\n",
    ))
    .await;
    let c = TestClient::new();
    let get = |v: String| {
        let c = c.clone();
        let addr = p.proxy_addr;
        async move {
            c.send(
                http::Request::get(format!("http://{addr}/"))
                    .header("x-session-id", v)
                    .body(Default::default())
                    .unwrap(),
            )
            .await
        }
    };
    let first = get("client-42".into()).await;
    assert!(
        first.set_cookies().is_empty(),
        "header affinity needs no cookie"
    );
    for _ in 0..30 {
        let r = get("client-42".into()).await;
        assert_eq!(r.pod(), first.pod());
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
        assert_eq!(r.seen("x-tether-session"), first.seen("x-tether-session"));
    }
    let mut spread = HashMap::new();
    for i in 0..90 {
        *spread
            .entry(get(format!("client-{i}")).await.pod())
            .or_insert(0) += 1;
    }
    assert_eq!(spread.len(), 3, "{spread:?}");
    // Without the header, the cookie decides.
    let r = c.get(p.proxy_addr, "/", None).await;
    assert!(r.cookie("tether").is_some());
    p.shutdown().await;
}

#[tokio::test]
async fn client_ip_affinity_believes_forwarded_for_only_from_trusted_proxies() {
    let pods = three_pods().await;
    let c = TestClient::new();
    let with_xff = |addr: std::net::SocketAddr, ip: String| {
        let c = c.clone();
        async move {
            c.send(
                http::Request::get(format!("http://{addr}/"))
                    .header("x-forwarded-for", ip)
                    .body(Default::default())
                    .unwrap(),
            )
            .await
            .pod()
        }
    };
    // Untrusted peer: the forwarded address is ignored, every request is 127.0.0.1's.
    let untrusted = proxy(&config(
        &refs(&pods),
        &[],
        "[backend.affinity]\nkey = \"client-ip\"\n",
    ))
    .await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..60 {
        seen.insert(with_xff(untrusted.proxy_addr, format!("203.0.113.{i}")).await);
    }
    assert_eq!(
        seen.len(),
        1,
        "spoofed X-Forwarded-For moved the client: {seen:?}"
    );

    // Trusted peer: the forwarded address decides.
    let trusted = proxy(&config(
        &refs(&pods),
        &[],
        "[backend.affinity]\nkey = \"client-ip\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    ))
    .await;
    let mut seen = HashMap::new();
    for i in 0..60 {
        let ip = format!("203.0.113.{i}");
        let pod = with_xff(trusted.proxy_addr, ip.clone()).await;
        assert_eq!(
            with_xff(trusted.proxy_addr, ip).await,
            pod,
            "the same client IP sticks"
        );
        *seen.entry(pod).or_insert(0) += 1;
    }
    assert!(seen.len() >= 2, "{seen:?}");
    untrusted.shutdown().await;
    trusted.shutdown().await;
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_and_others_are_served() {
    let pods = three_pods().await;
    let mut cfg = config(&refs(&pods), &[], "");
    cfg = cfg.replace("[server]\n", "[server]\nheader_timeout = \"300ms\"\n");
    let p = proxy(&cfg).await;
    let addr = p.proxy_addr;
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for b in head.iter() {
            if s.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
            {
                // Closed (0) or an error status: cut off before finishing the head.
                return n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408");
            }
        }
        false
    });
    let c = TestClient::new();
    for _ in 0..20 {
        assert_eq!(c.get(addr, "/", None).await.status, 200);
    }
    assert!(
        slow.await.unwrap(),
        "the slowloris connection was never cut off"
    );
    p.shutdown().await;
}

async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_heads_and_smuggling_shapes_are_rejected() {
    let pods = three_pods().await;
    let p = proxy(&config(&refs(&pods), &[], "")).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let r = raw(p.proxy_addr, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r:.80}");

    // Content-Length with Transfer-Encoding: RFC 9112 §6.3 lets a server refuse it, and
    // tether does (400, then close), so the request hidden behind the chunked body is
    // never read, let alone forwarded.
    let smuggle = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let r = raw(p.proxy_addr, smuggle).await;
    assert_eq!(
        r.matches("HTTP/1.1 ").count(),
        1,
        "the smuggled request was served: {r}"
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r:.80}");
    assert!(r.contains("connection: close"), "{r}");
    let served: u64 = pods
        .iter()
        .map(|p| p.hits.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    assert_eq!(served, 0, "neither request reached a pod");
    // A non-chunked Transfer-Encoding cannot be framed at all: 400.
    let r = raw(
        p.proxy_addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r:.80}");
    let hits: u64 = pods
        .iter()
        .map(|b| b.hits.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    assert_eq!(hits, 0, "no ambiguously framed request reached a backend");
    p.shutdown().await;
}

#[tokio::test]
async fn bodies_over_max_body_bytes_get_413() {
    let pods = three_pods().await;
    let mut cfg = config(&refs(&pods), &[], "");
    cfg = cfg.replace("[server]\n", "[server]\nmax_body_bytes = 1024\n");
    let p = proxy(&cfg).await;
    let c = TestClient::new();
    let post = |body: Vec<u8>| {
        http::Request::post(format!("http://{}/upload", p.proxy_addr))
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    assert_eq!(c.send(post(vec![b'x'; 1024])).await.status, 200);
    assert_eq!(c.send(post(vec![b'x'; 1025])).await.status, 413);
    // Chunked, with no length announced: cut off when it crosses the limit.
    let r = raw(
        p.proxy_addr,
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n", "y".repeat(2048)).as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r:.80}");
    p.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let pods = three_pods().await;
    let cfg =
        config(&refs(&pods), &[], "").replace("[server]\n", "[server]\nmax_connections = 1\n");
    let p = proxy(&cfg).await;
    let hog = TcpStream::connect(p.proxy_addr).await.unwrap();
    // Wait until the proxy has taken the hog's slot (it answers nothing yet).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = TestClient::new();
    let waiting = tokio::spawn({
        let c = c.clone();
        let addr = p.proxy_addr;
        async move { c.get(addr, "/", None).await.status }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a second connection was served while the only slot was taken"
    );
    drop(hog);
    let status = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("served once the slot freed")
        .unwrap();
    assert_eq!(status, 200);
    p.shutdown().await;
}
