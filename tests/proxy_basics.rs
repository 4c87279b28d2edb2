//! Proxy basics: routing, error statuses, header hygiene, streaming, readiness, shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::transport::{
    arrivals, post_to_localhost, request, target, with_cookie, Front, Transport,
};
use support::*;
use tokio::sync::{mpsc, Notify};

#[tokio::test]
async fn routes_by_exact_host_and_longest_prefix_and_404s_the_rest() {
    let web = TestBackend::echo("web").await;
    let api = TestBackend::echo("api").await;
    let admin = TestBackend::echo("admin").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         [[backend]]\nname = \"web\"\nendpoints = [\"{}\"]\n\
         [[backend]]\nname = \"api\"\nendpoints = [\"{}\"]\n\
         [[backend]]\nname = \"admin\"\nendpoints = [\"{}\"]\n\
         [[route]]\nhost = \"app.example.com\"\npath_prefix = \"/\"\nbackend = \"web\"\n\
         [[route]]\nhost = \"app.example.com\"\npath_prefix = \"/api\"\nbackend = \"api\"\n\
         [[route]]\npath_prefix = \"/admin\"\nbackend = \"admin\"\n",
        web.addr, api.addr, admin.addr
    );
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let what = format!("{transport:?}, chunked {chunked}");
            // HTTP/1: the host in `Host`; HTTP/2: in the target's authority.
            let get = |host: &str, path: &str| {
                let fields: &[(&str, &str)] = match transport.is_h2() {
                    true => &[],
                    false => &[("host", host)],
                };
                front.send(request(&target(transport, host, path), fields, chunked))
            };
            assert_eq!(get("app.example.com", "/").await.pod(), "web", "{what}");
            assert_eq!(
                get("APP.example.com:8080", "/api/v1/x").await.pod(),
                "api",
                "{what}"
            );
            assert_eq!(get("app.example.com", "/apix").await.pod(), "web", "{what}");
            assert_eq!(
                get("other.example.com", "/admin/users").await.pod(),
                "admin",
                "{what}"
            );
            let miss = get("other.example.com", "/").await;
            assert_eq!(miss.status, 404, "{what}");
            assert_eq!(miss.text(), "no route\n", "{what}");
        }
        front.proxy.shutdown().await;
    }
}

/// The 503 over every arrival: `tests/matrix.rs`; readiness is the admin listener's.
#[tokio::test]
async fn no_endpoint_is_503_and_readiness_follows() {
    let pod = TestBackend::echo("pod-a").await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    let c = TestClient::new();
    assert_eq!(c.get(p.admin_addr, "/readyz", None).await.status, 200);
    assert_eq!(c.get(p.admin_addr, "/healthz", None).await.status, 200);
    p.proxy.backend("app").unwrap().publish(vec![]);
    let r = c.get(p.proxy_addr, "/", None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "no endpoint available\n");
    assert_eq!(c.get(p.admin_addr, "/readyz", None).await.status, 503);
    assert_eq!(c.get(p.admin_addr, "/healthz", None).await.status, 200);
    p.shutdown().await;
}

/// Over every arrival, with the statuses tether writes itself: `tests/matrix.rs`.
#[tokio::test]
async fn every_endpoint_refusing_is_502() {
    let pod = TestBackend::echo("pod-a").await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    pod.stop_and_wait().await;
    let r = TestClient::new().get(p.proxy_addr, "/", None).await;
    assert_eq!(r.status, 502);
    assert!(r.set_cookies().is_empty());
    p.shutdown().await;
}

#[tokio::test]
async fn upstream_dying_after_the_request_was_sent_is_502_and_not_retried() {
    use tokio::io::AsyncReadExt;
    // A raw TCP "pod" that reads the request, then closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    let other = TestBackend::echo("healthy").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         [[backend]]\nname = \"app\"\nendpoints = [{{ name = \"dying\", address = \"{addr}\" }}, {}]\n",
        other.entry()
    );
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let what = format!("{transport:?}, chunked {chunked}");
            // Find a session the table places on the dying pod; it must get a 502, not
            // a retry.
            let mut saw_502 = false;
            for _ in 0..64 {
                let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
                let healthy_before = other.hits.load(std::sync::atomic::Ordering::SeqCst);
                let req = post_to_localhost(transport, "/pay", &[], b"once", chunked);
                let r = front.send(req).await;
                if accepted.load(std::sync::atomic::Ordering::SeqCst) > before {
                    assert_eq!(r.status, 502, "{what}");
                    assert_eq!(r.text(), "upstream error\n", "{what}");
                    let healthy_after = other.hits.load(std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(
                        healthy_after, healthy_before,
                        "{what}: a sent POST was retried elsewhere"
                    );
                    saw_502 = true;
                    break;
                }
                assert_eq!(r.status, 200, "{what}");
            }
            assert!(saw_502, "{what}: no session was placed on the dying pod");
        }
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn upstream_slower_than_the_response_timeout_is_504_and_held_against_it() {
    for upstream in Upstream::ALL {
        let slow = TestBackend::with_handler_over("slow", upstream, |_req| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            http::Response::new(full("late"))
        })
        .await;
        let extra = format!("{}response_timeout = \"200ms\"\n", upstream.protocol());
        let cfg = config(&[&slow], &[], &extra);
        for t in Transport::ALL {
            let what = format!("{t:?}, {upstream:?} upstream");
            let front = Front::start(t, &cfg).await;
            let r = front.send(with_cookie(t, "/", None, false)).await;
            assert_eq!(r.status, 504, "{what}");
            assert_eq!(r.text(), "upstream timeout\n", "{what}");
            // The whole request was sent: the pod's fault, held against it.
            let debug = TestClient::new()
                .get(front.proxy.admin_addr, "/debug/backends", None)
                .await
                .json();
            assert_eq!(
                debug["backends"][0]["endpoints"][0]["last_error"], "response timed out",
                "{what}"
            );
            front.proxy.shutdown().await;
        }
    }
}

/// The header hygiene a client sees (over every transport: `tests/hygiene.rs`).
#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarded_headers_set() {
    let pod = TestBackend::with_handler("pod-a", |req| async move {
        let mut r = echo("pod-a", req).await;
        r.headers_mut()
            .insert("connection", "x-internal".parse().unwrap());
        r.headers_mut()
            .insert("x-internal", "secret".parse().unwrap());
        r.headers_mut()
            .insert("keep-alive", "timeout=5".parse().unwrap());
        r
    })
    .await;
    let cfg = config(&[&pod], &[], "");
    let p = proxy(&cfg).await;
    let req = http::Request::get(format!("http://{}/x?q=1", p.proxy_addr))
        .header("host", "shop.example.com")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("proxy-authorization", "Basic eA==")
        .header("te", "deflate, trailers")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-kept", "yes")
        .header("x-tether-session", "spoofed")
        .body(Default::default())
        .unwrap();
    let r = TestClient::new().send(req).await;
    assert_eq!(r.status, 200);
    let seen = |h: &str| r.seen(h);
    assert_eq!(seen("x-hop"), None);
    assert_eq!(seen("proxy-authorization"), None);
    assert_eq!(
        seen("te").as_deref(),
        Some("trailers"),
        "only TE: trailers survives"
    );
    assert_eq!(seen("x-kept").as_deref(), Some("yes"));
    assert_eq!(seen("host").as_deref(), Some("shop.example.com"));
    assert_eq!(
        seen("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen("x-forwarded-host").as_deref(),
        Some("shop.example.com")
    );
    assert_eq!(r.json()["path"], "/x");
    assert_ne!(seen("x-tether-session").as_deref(), Some("spoofed"));
    assert!(r.headers.get("x-internal").is_none());
    assert!(r.headers.get("keep-alive").is_none());
    p.shutdown().await;
}

#[tokio::test]
async fn response_bodies_stream_through_without_buffering() {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let pod = TestBackend::with_handler("stream", move |_req| {
        let rx = rx.lock().unwrap().take().expect("one request");
        async move { http::Response::new(ChannelBody::new(rx).boxed()) }
    })
    .await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let resp = client.get(format!("http://{}/", p.proxy_addr).parse().unwrap());
    tx.send(Bytes::from_static(b"first ")).await.unwrap();
    // The upstream has not finished its body: a buffering proxy would hang here.
    let mut body = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("response head arrives before the body is complete")
        .unwrap()
        .into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first chunk arrives while the upstream is still sending")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first ");
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    p.shutdown().await;
}

#[tokio::test]
async fn shutdown_turns_readiness_off_and_lets_in_flight_requests_finish() {
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    let (r2, a2) = (release.clone(), arrived.clone());
    let pod = TestBackend::with_handler("slow", move |req| {
        let (release, arrived) = (r2.clone(), a2.clone());
        async move {
            arrived.notify_one();
            release.notified().await;
            echo("slow", req).await
        }
    })
    .await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    let (proxy_addr, admin_addr) = (p.proxy_addr, p.admin_addr);
    let c = TestClient::new();
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { c.get(proxy_addr, "/", None).await }
    });
    arrived.notified().await;
    let proxy = p.proxy.clone();
    let stopping = tokio::spawn(p.shutdown());
    while proxy.is_ready() {
        tokio::task::yield_now().await;
    }
    release.notify_one();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completed");
    stopping.await.unwrap();
    // The listeners are closed.
    assert!(tokio::net::TcpStream::connect(proxy_addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(admin_addr).await.is_err());
}

/// Over HTTP/2, shutdown ends each connection with a GOAWAY once its streams are done:
/// a stream in flight is answered, then the connection closes (h2c and TLS).
#[tokio::test]
async fn shutdown_lets_an_http2_stream_finish_then_closes_its_connection() {
    for transport in [Transport::H2c, Transport::H2Tls] {
        let release = Arc::new(Notify::new());
        let arrived = Arc::new(Notify::new());
        let (r2, a2) = (release.clone(), arrived.clone());
        let pod = TestBackend::with_handler("slow", move |req| {
            let (release, arrived) = (r2.clone(), a2.clone());
            async move {
                arrived.notify_one();
                release.notified().await;
                echo("slow", req).await
            }
        })
        .await;
        let front = Front::start(transport, &config(&[&pod], &[], "")).await;
        let mut s = front.h2::<http_body_util::Full<Bytes>>().await;
        let req = http::Request::get("http://localhost/")
            .body(http_body_util::Full::default())
            .unwrap();
        s.ready().await.unwrap();
        let in_flight = tokio::spawn(s.send_request(req));
        arrived.notified().await;
        let proxy = front.proxy.proxy.clone();
        let stopping = tokio::spawn(front.proxy.shutdown());
        while proxy.is_ready() {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        let resp = in_flight.await.unwrap().unwrap();
        assert_eq!(
            resp.status(),
            200,
            "{transport:?}: the stream in flight was answered"
        );
        wait_for("the HTTP/2 connection to close", || s.is_closed()).await;
        stopping.await.unwrap();
    }
}

/// An HTTP/2 client that keeps its connection but opens no stream is let go after
/// `header_timeout`, as an idle HTTP/1 keep-alive connection is: otherwise a client that
/// answers PINGs holds a connection slot (`max_connections`) for ever. A stream slower
/// than that is not idleness: its connection stays until it is answered.
#[tokio::test(start_paused = true)]
async fn an_http2_connection_with_no_stream_is_closed_after_the_header_timeout() {
    let pod = TestBackend::with_handler("pod-a", |req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(45)).await;
        }
        echo("pod-a", req).await
    })
    .await;
    let cfg =
        config(&[&pod], &[], "").replacen("[server]\n", "[server]\nheader_timeout = \"30s\"\n", 1);
    for transport in [Transport::H2c, Transport::H2Tls] {
        let front = Front::start(transport, &cfg).await;
        let mut s = front.h2::<http_body_util::Full<Bytes>>().await;
        let get = |path: &str| {
            http::Request::get(format!("http://localhost{path}"))
                .body(http_body_util::Full::default())
                .unwrap()
        };
        let slow = s.send_request(get("/slow")).await.unwrap();
        assert_eq!(slow.status(), 200, "{transport:?}: a 45 s answer");
        slow.into_body().collect().await.unwrap();
        assert!(
            !s.is_closed(),
            "{transport:?}: closed while a stream was open"
        );
        let idle = tokio::time::Instant::now();
        while !s.is_closed() {
            assert!(
                idle.elapsed() < Duration::from_secs(60),
                "{transport:?}: the idle connection was never closed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let waited = idle.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{transport:?}: closed after {waited:?} idle"
        );
        front.proxy.shutdown().await;
    }
}

/// A raw HTTP/1.1 upstream whose every connection answers its first request, then
/// closes without answering the second: the keep-alive race a proxy meets when a pod
/// closes an idle connection just as a request is written to it.
async fn closes_after_first_response() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>)
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read the first request head (and its body, if any, up to what arrived).
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-pod: raw\r\n\r\nok")
                    .await;
                // The next request arrives: close without a word.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, answered)
}

/// A proxy whose one backend is the raw pod at `addr`.
fn raw_pod_config(addr: std::net::SocketAddr) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         [[backend]]\nname = \"app\"\nendpoints = [\"{addr}\"]\n"
    )
}

#[tokio::test]
async fn a_get_on_a_keep_alive_connection_closed_under_it_is_replayed_on_a_fresh_one() {
    for t in Transport::ALL {
        let (addr, answered) = closes_after_first_response().await;
        let front = Front::start(t, &raw_pod_config(addr)).await;
        for i in 1..=3 {
            let what = format!("{t:?}, request {i}");
            let r = front.send(with_cookie(t, "/", None, false)).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            assert_eq!(r.text(), "ok", "{what}");
        }
        assert_eq!(
            answered.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "{t:?}"
        );
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_post_on_a_keep_alive_connection_closed_under_it_is_not_replayed() {
    for (t, chunked) in arrivals() {
        let what = format!("{t:?}, chunked {chunked}");
        let (addr, answered) = closes_after_first_response().await;
        // The GET leaves its connection in the pool the POST (a small body, read whole)
        // then uses.
        let front = Front::start(t, &raw_pod_config(addr)).await;
        let r = front.send(with_cookie(t, "/", None, false)).await;
        assert_eq!(r.status, 200, "{what}");
        let r = front
            .send(post_to_localhost(t, "/pay", &[], b"once", chunked))
            .await;
        assert_eq!(r.status, 502, "{what}: a written POST is never sent twice");
        assert_eq!(
            answered.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{what}"
        );
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_bodyless_post_on_a_pooled_connection_closed_under_it_is_not_replayed() {
    for t in Transport::ALL {
        let (addr, answered) = closes_after_first_response().await;
        let front = Front::start(t, &raw_pod_config(addr)).await;
        let r = front.send(with_cookie(t, "/", None, false)).await;
        assert_eq!(r.status, 200, "{t:?}");
        let post = post_to_localhost(t, "/pay", &[("content-length", "0")], b"", false);
        let r = front.send(post).await;
        assert_eq!(r.status, 502, "{t:?}: a written POST is never sent twice");
        assert_eq!(
            answered.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{t:?}"
        );
        // A GET on the same kind of stale connection is replayed.
        let r = front.send(with_cookie(t, "/", None, false)).await;
        assert_eq!(r.status, 200, "{t:?}: {}", r.text());
        front.proxy.shutdown().await;
    }
}

/// An upload several times the stream's flow-control window (1 MiB) arrives whole on
/// every transport: over HTTP/2 the window is given back as the exchange forwards the
/// bytes, so the client is never left waiting for room that never comes.
#[tokio::test]
async fn an_upload_larger_than_the_flow_control_window_arrives_whole() {
    let pod = TestBackend::echo("pod-a").await;
    let body = vec![b'u'; 3 << 20];
    for t in Transport::ALL {
        let front = Front::start(t, &config(&[&pod], &[], "")).await;
        let req = post_to_localhost(t, "/", &[], &body, false);
        let reply = tokio::time::timeout(Duration::from_secs(30), front.send(req))
            .await
            .unwrap_or_else(|_| panic!("{t:?}: the upload stalled"));
        assert_eq!(reply.status, 200, "{t:?}");
        let echoed = reply.json()["body"].as_str().map(str::len);
        assert_eq!(
            echoed,
            Some(body.len()),
            "{t:?}: the pod got the whole body"
        );
        front.proxy.shutdown().await;
    }
}
