//! Blame: a client's fault (a malformed body, an upload abandoned halfway, a body too
//! slow to arrive) is answered and counted as the client's, and never counts against
//! the pod it was sent to, on every listener and protocol. Only upstream faults do.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use support::transport::{self, parse_reply, Front, Transport};
use support::*;
use tokio::io::AsyncWriteExt;

/// Client errors counted with any of `reasons`, as /metrics says.
async fn client_errors(p: &Running, reasons: &[&str]) -> f64 {
    let c = TestClient::new();
    let mut n = 0.0;
    for reason in reasons {
        let labels = [("backend", "app"), ("reason", *reason)];
        n += metric(&c, p.admin_addr, "tether_client_errors_total", &labels).await;
    }
    n
}

/// Waits until /metrics counts `n` client errors with any of `reasons`.
async fn wait_for_client_errors(p: &Running, reasons: &[&str], n: f64) {
    wait_for_async(&format!("{n} client errors {reasons:?}"), || async {
        client_errors(p, reasons).await >= n
    })
    .await;
}

/// A new session on `front`: (cookie, pod).
async fn new_session(front: &Front) -> (String, String) {
    let r = get(front, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    (r.cookie("tether").expect("a cookie"), r.pod())
}

/// A GET over `front`'s transport, with an optional affinity cookie.
async fn get(front: &Front, cookie: Option<&str>) -> Reply {
    let mut b = http::Request::get("http://localhost/").header("host", "localhost");
    if let Some(c) = cookie {
        b = b.header("cookie", format!("tether={c}"));
    }
    if front.transport.is_h2() {
        let mut s = front.h2::<Full<Bytes>>().await;
        let req = b
            .version(http::Version::HTTP_2)
            .body(Full::default())
            .unwrap();
        s.ready().await.unwrap();
        let resp = s.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    } else {
        let mut s = front.h1().await;
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: tether={c}\r\n"));
        s.write_all(format!("GET / HTTP/1.1\r\nHost: localhost\r\n{cookie}\r\n").as_bytes())
            .await
            .unwrap();
        parse_reply(&read_response(&mut s).await)
    }
}

type Frames = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> + Send>,
>;

/// A request body that sends `first`, waits until `pod` has the request (so the
/// upstream exchange is under way), then ends cleanly (`fail` false) or with an error
/// that makes the client reset the stream.
fn body_then(first: Bytes, pod: &TestBackend, fail: bool) -> StreamBody<Frames> {
    let hits = pod.hits.clone();
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    let frames = futures::stream::unfold(0, move |step| {
        let (first, hits) = (first.clone(), hits.clone());
        async move {
            match step {
                0 => Some((Ok(http_body::Frame::data(first)), 1)),
                1 => {
                    while hits.load(std::sync::atomic::Ordering::SeqCst) == before {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    fail.then(|| (Err(std::io::Error::other("the user gave up")), 2))
                }
                _ => None,
            }
        }
    });
    StreamBody::new(Box::pin(frames) as Frames)
}

/// Waits until `pod` has received a request after `before` of them.
async fn reached(pod: &TestBackend, before: u64) {
    wait_for("the request to reach the pod", || {
        pod.hits.load(std::sync::atomic::Ordering::SeqCst) > before
    })
    .await;
}

/// A request carrying `cookie` whose body turns out malformed once `pod` is already
/// reading it: a chunked body with bytes where a chunk's CRLF belongs (HTTP/1), or
/// DATA that ends short of its content-length (HTTP/2, RFC 9113 §8.1.1). Both are
/// larger than `request_buffer` (or of unknown length), so they stream. Returns the
/// status, if one came back.
async fn malformed_body(front: &Front, pod: &TestBackend, cookie: &str) -> Option<u16> {
    if front.transport.is_h2() {
        let mut s = front.h2::<StreamBody<Frames>>().await;
        let req = http::Request::post("http://localhost/")
            .version(http::Version::HTTP_2)
            .header("cookie", format!("tether={cookie}"))
            .header("content-length", "100000")
            .body(body_then(Bytes::from_static(b"hello"), pod, false))
            .unwrap();
        s.ready().await.unwrap();
        s.send_request(req).await.ok().map(|r| r.status().as_u16())
    } else {
        let before = pod.hits.load(std::sync::atomic::Ordering::SeqCst);
        let mut s = front.h1().await;
        // A first chunk past `request_buffer`, so the body streams to the pod.
        s.write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: localhost\r\nCookie: tether={cookie}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{}",
                PAST_BUFFER,
                "x".repeat(PAST_BUFFER)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        reached(pod, before).await;
        s.write_all(b"XX0\r\n\r\n").await.unwrap();
        s.flush().await.unwrap();
        let out = read_response(&mut s).await;
        parse_reply(&out).status.as_u16().into()
    }
}

/// Sends a 100,000-byte upload carrying `cookie` over HTTP/2 with `body`; returns the
/// status, if one came back.
async fn h2_upload(front: &Front, cookie: &str, body: StreamBody<Frames>) -> Option<u16> {
    let mut s = front.h2::<StreamBody<Frames>>().await;
    let req = http::Request::post("http://localhost/")
        .version(http::Version::HTTP_2)
        .header("cookie", format!("tether={cookie}"))
        .header("content-length", "100000")
        .body(body)
        .unwrap();
    s.ready().await.unwrap();
    s.send_request(req).await.ok().map(|r| r.status().as_u16())
}

/// Starts a 100,000-byte upload carrying `cookie` over HTTP/1 and sends `part` of it;
/// returns the stream.
async fn h1_upload(front: &Front, cookie: &str, part: &[u8]) -> Box<dyn transport::Stream> {
    let mut s = front.h1().await;
    s.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nCookie: tether={cookie}\r\n\
             Content-Length: 100000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(part).await.unwrap();
    s.flush().await.unwrap();
    s
}

/// More than `request_buffer` (64 KiB): a body this long streams to the pod.
const PAST_BUFFER: usize = 70_000;

/// An upload of 100,000 bytes carrying `cookie`, abandoned after 70 KB once `pod` is
/// reading it: the connection closed (HTTP/1) or the stream reset (HTTP/2).
async fn abandoned_upload(front: &Front, pod: &TestBackend, cookie: &str) {
    let part = Bytes::from(vec![b'x'; PAST_BUFFER]);
    if front.transport.is_h2() {
        h2_upload(front, cookie, body_then(part, pod, true)).await;
    } else {
        let before = pod.hits.load(std::sync::atomic::Ordering::SeqCst);
        let s = h1_upload(front, cookie, &part).await;
        reached(pod, before).await;
        drop(s);
    }
}

/// Over HTTP/2 a malformed body and a reset stream look alike (see below).
const BOTH: &[&str] = &["malformed_body", "aborted"];

/// Finding 1 of #16, twenty times: malformed bodies and abandoned uploads carrying a
/// pod's cookie leave that pod ready and its sessions sticky.
async fn client_faults_never_eject_the_pod_they_were_sent_to(transport: Transport) {
    let pods = three_pods().await;
    let front = Front::start(transport, &config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let (cookie, pod) = new_session(&front).await;
    let pinned = pods.iter().find(|p| p.name == pod).unwrap();
    for round in 1..=10 {
        let status = malformed_body(&front, pinned, &cookie).await;
        if transport.is_h2() {
            // h2 resets the stream itself (PROTOCOL_ERROR) and hyper drops the request
            // with it, or the body reports it: either way the client's error.
            assert!(
                matches!(status, None | Some(400)),
                "{transport:?}: the stream is reset or refused: {status:?}"
            );
            wait_for_client_errors(&front.proxy, BOTH, (2 * round - 1) as f64).await;
        } else {
            assert_eq!(
                status,
                Some(400),
                "{transport:?}: a malformed body is the client's error (RFC 9112 §7.1)"
            );
            wait_for_client_errors(&front.proxy, &["malformed_body"], round as f64).await;
        }
        abandoned_upload(&front, pinned, &cookie).await;
        if transport.is_h2() {
            wait_for_client_errors(&front.proxy, BOTH, (2 * round) as f64).await;
        } else {
            wait_for_client_errors(&front.proxy, &["aborted"], round as f64).await;
        }
    }
    let debug = TestClient::new()
        .get(front.proxy.admin_addr, "/debug/backends", None)
        .await
        .json();
    for e in debug["backends"][0]["endpoints"].as_array().unwrap() {
        assert_eq!(e["down"], false, "{transport:?}: {e}");
        assert!(e["last_error"].is_null(), "{transport:?}: {e}");
    }
    for _ in 0..5 {
        let r = get(&front, Some(&cookie)).await;
        assert_eq!(r.status, 200, "{transport:?}");
        assert_eq!(r.pod(), pod, "{transport:?}: the session stays on its pod");
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
    }
    front.proxy.shutdown().await;
}

#[tokio::test]
async fn client_faults_never_eject_the_pod_they_were_sent_to_over_http1() {
    client_faults_never_eject_the_pod_they_were_sent_to(Transport::H1).await;
}

#[tokio::test]
async fn client_faults_never_eject_the_pod_they_were_sent_to_over_http1_tls() {
    client_faults_never_eject_the_pod_they_were_sent_to(Transport::H1Tls).await;
}

#[tokio::test]
async fn client_faults_never_eject_the_pod_they_were_sent_to_over_h2c() {
    client_faults_never_eject_the_pod_they_were_sent_to(Transport::H2c).await;
}

#[tokio::test]
async fn client_faults_never_eject_the_pod_they_were_sent_to_over_http2_tls() {
    client_faults_never_eject_the_pod_they_were_sent_to(Transport::H2Tls).await;
}

/// A large upload that stops arriving: once `response_timeout` runs out with the body
/// still awaited from the client, the client gets 408 (not the upstream's 504), it is
/// counted as the client's, and the pod that was reading it keeps its health.
async fn a_stalled_upload_is_the_clients_timeout_not_the_pods(transport: Transport) {
    let pods = three_pods().await;
    let cfg = config(
        &refs(&pods),
        &[("k1", KEY_1)],
        "response_timeout = \"5s\"\n",
    );
    let front = Front::start(transport, &cfg).await;
    let (cookie, pod) = new_session(&front).await;
    let pinned = pods.iter().find(|p| p.name == pod).unwrap();
    let before = pinned.hits.load(std::sync::atomic::Ordering::SeqCst);
    let part = Bytes::from(vec![b'x'; PAST_BUFFER]);
    let status = if transport.is_h2() {
        // A body that sends its first part, then nothing more.
        let frames = futures::stream::iter([Ok(http_body::Frame::data(part))])
            .chain(futures::stream::pending());
        h2_upload(&front, &cookie, StreamBody::new(Box::pin(frames) as Frames))
            .await
            .unwrap()
    } else {
        let mut s = h1_upload(&front, &cookie, &part).await;
        parse_reply(&read_response(&mut s).await).status.as_u16()
    };
    assert_eq!(status, 408, "{transport:?}");
    assert!(pinned.hits.load(std::sync::atomic::Ordering::SeqCst) > before);
    assert_eq!(client_errors(&front.proxy, &["body_timeout"]).await, 1.0);
    let debug = TestClient::new()
        .get(front.proxy.admin_addr, "/debug/backends", None)
        .await
        .json();
    for e in debug["backends"][0]["endpoints"].as_array().unwrap() {
        assert!(e["last_error"].is_null(), "{transport:?}: {e}");
    }
    let r = get(&front, Some(&cookie)).await;
    assert_eq!((r.status.as_u16(), r.pod()), (200, pod));
    front.proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_upload_is_the_clients_timeout_not_the_pods_over_http1() {
    a_stalled_upload_is_the_clients_timeout_not_the_pods(Transport::H1).await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_upload_is_the_clients_timeout_not_the_pods_over_http1_tls() {
    a_stalled_upload_is_the_clients_timeout_not_the_pods(Transport::H1Tls).await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_upload_is_the_clients_timeout_not_the_pods_over_h2c() {
    a_stalled_upload_is_the_clients_timeout_not_the_pods(Transport::H2c).await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_upload_is_the_clients_timeout_not_the_pods_over_http2_tls() {
    a_stalled_upload_is_the_clients_timeout_not_the_pods(Transport::H2Tls).await;
}

#[tokio::test]
async fn a_pod_refusing_a_large_upload_before_reading_it_is_relayed_and_not_blamed() {
    // An app may answer before it has read a body (a 413, a 401) and stop reading it
    // (RFC 9112 §9.6): its answer is the answer, on every transport, and the pod did
    // nothing wrong. More of them than `outlier_failures` would eject a blamed pod.
    let pod = TestBackend::with_handler("pod-a", |_req| async {
        let mut r = http::Response::new(full("too large\n"));
        *r.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
        r
    })
    .await;
    let body = vec![b'x'; 1024 * 1024];
    for t in Transport::ALL {
        let front = Front::start(t, &config(&[&pod], &[("k1", KEY_1)], "")).await;
        for i in 0..6 {
            let req = transport::post_to_localhost(t, "/up", &[], &body, false);
            let r = front.send(req).await;
            assert_eq!(r.status, 413, "{t:?} #{i}: {}", r.text());
        }
        let debug = TestClient::new()
            .get(front.proxy.admin_addr, "/debug/backends", None)
            .await
            .json();
        let endpoint = &debug["backends"][0]["endpoints"][0];
        assert!(endpoint["last_error"].is_null(), "{t:?}: {endpoint}");
        assert_eq!(endpoint["state"], "ready", "{t:?}: {endpoint}");
        front.proxy.shutdown().await;
    }
}
