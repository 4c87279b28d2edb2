//! What a client gets back is tether's message, framed by tether's rules, however the
//! upstream framed it and however the request arrived: a `Date`, tether's own status
//! line, 502 for a response the request did not ask for or cannot be relayed, 501 for
//! CONNECT, and only the protocol ALPN chose on a TLS connection.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::transport::{
    arrivals, parse_reply, post_to_localhost, tls_connect, to_localhost, with_tls, Front, Transport,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every arrival's answer to `GET /` for localhost, through a proxy started from `cfg`.
async fn answers(cfg: &str) -> Vec<(String, Reply, Option<String>)> {
    let mut out = Vec::new();
    for t in Transport::ALL {
        let front = Front::start(t, cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let req = to_localhost(transport, "/", &[], chunked);
            let what = format!("{transport:?}, chunked {chunked}");
            if transport.is_h2() {
                out.push((what, front.send(req).await, None));
            } else {
                let raw = front.send_raw(req).await;
                out.push((what, parse_reply(&raw), Some(raw)));
            }
        }
        front.proxy.shutdown().await;
    }
    out
}

#[tokio::test]
async fn an_http_1_0_upstream_without_date_is_answered_in_http_1_1_with_a_date() {
    // RFC 9110 §2.5 (the status line is the sender's version) and §6.6.1 (a recipient
    // with a clock adds Date to a response that has none).
    let (pod, _) = fixed_pod(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec()).await;
    for (what, reply, raw) in answers(&config_for(pod, "")).await {
        assert_eq!(reply.status, 200, "{what}");
        assert_eq!(reply.text(), "hi", "{what}");
        let date = reply.headers.get("date").expect(&what).to_str().unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{what}: {date}");
        if let Some(raw) = raw {
            assert!(raw.starts_with("HTTP/1.1 200 "), "{what}: {raw}");
        }
    }
}

#[tokio::test]
async fn an_unsolicited_101_is_a_502_held_against_the_pod() {
    // RFC 9110 §15.2.2: a 101 switches to what the request asked for; this one asked
    // for nothing.
    let (pod, _) = fixed_pod(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n".to_vec(),
    )
    .await;
    let cfg = config_for(pod, "");
    for (what, reply, _) in answers(&cfg).await {
        assert_eq!(reply.status, 502, "{what}: {}", reply.text());
    }
}

#[tokio::test]
async fn a_response_head_over_64_kib_is_a_502_and_a_smaller_one_passes_on_every_path() {
    let head = |n: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
            "b".repeat(n)
        )
        .into_bytes()
    };
    let (big, _) = fixed_pod(head(70 * 1024)).await;
    for (what, reply, _) in answers(&config_for(big, "")).await {
        assert_eq!(reply.status, 502, "{what}");
    }
    // Within what an HTTP/2 client accepts by default (16 KiB of header list).
    let (fits, _) = fixed_pod(head(10 * 1024)).await;
    for (what, reply, _) in answers(&config_for(fits, "")).await {
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (200, "ok".into()),
            "{what}"
        );
    }
}

#[tokio::test]
async fn connect_is_refused_with_501_and_never_reaches_a_pod() {
    let (pod, answered) = fixed_pod(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    let cfg = config_for(pod, "");
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        let req = http::Request::builder()
            .method("CONNECT")
            .uri("a.test:443")
            .header("host", "a.test:443")
            .body(bytes::Bytes::new())
            .unwrap();
        let r = front.send(req).await;
        assert_eq!(r.status, 501, "{t:?}: {}", r.text());
        front.proxy.shutdown().await;
    }
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_connection_naming_content_length_cannot_unframe_a_response() {
    let (pod, _) = fixed_pod(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello".to_vec(),
    )
    .await;
    let cfg = config_for(pod, "");
    for t in [Transport::H1, Transport::H1Tls] {
        let front = Front::start(t, &cfg).await;
        let mut s = front.h1().await;
        for _ in 0..2 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let out = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
                .await
                .expect("a framed response");
            assert!(out.starts_with("HTTP/1.1 200 "), "{t:?}: {out}");
            assert!(
                out.to_ascii_lowercase().contains("content-length: 5"),
                "{out}"
            );
            assert!(out.ends_with("\r\n\r\nhello"), "{t:?}: {out}");
        }
        front.proxy.shutdown().await;
    }
}

/// Everything the proxy sends on a TLS connection offering `alpn` that opens with
/// `bytes`, until it closes (or 5 s pass).
async fn answer_to(front_cfg: &str, alpn: &[&[u8]], bytes: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, cert) = with_tls(front_cfg, dir.path());
    let p = proxy(&cfg).await;
    let mut s = tls_connect(p.proxy_addr, &cert.der, alpn).await;
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    p.shutdown().await;
    out
}

#[tokio::test]
async fn only_the_protocol_alpn_chose_is_served_on_a_tls_connection() {
    // RFC 9113 §3.2-3.4: h2 over TLS is what ALPN "h2" selects, and only then.
    let pods = pods(&["pod-a"]).await;
    let cfg = config(&refs(&pods), &[], "");
    let h1 = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    // The HTTP/2 preface and an empty SETTINGS frame.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);

    let out = answer_to(&cfg, &[b"h2"], h1).await;
    assert!(
        !out.starts_with(b"HTTP/1.1"),
        "HTTP/1.1 served after ALPN chose h2"
    );
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let out = answer_to(&cfg, alpn, &h2).await;
        // A server's HTTP/2 answer opens with its SETTINGS frame (type 4).
        assert!(
            out.len() < 9 || out[3] != 4 || out.starts_with(b"HTTP/1.1"),
            "HTTP/2 served after ALPN {alpn:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
        let out = answer_to(&cfg, alpn, h1).await;
        assert!(out.starts_with(b"HTTP/1.1 200 "), "{alpn:?}");
    }
}

/// The last upstream fault held against the front's one pod (/debug/backends).
async fn last_error(front: &Front) -> serde_json::Value {
    let debug = TestClient::new()
        .get(front.proxy.admin_addr, "/debug/backends", None)
        .await
        .json();
    debug["backends"][0]["endpoints"][0]["last_error"].clone()
}

#[tokio::test]
async fn a_small_response_cut_mid_body_is_a_502_before_anything_is_sent() {
    // Within `response_buffer`, the body is read whole before the client gets a byte:
    // a pod that breaks inside it is answered 502, held against it, on every path.
    for t in Transport::ALL {
        let (pod, cut) =
            pod_that_breaks_mid_body(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n").await;
        let front = Front::start(t, &config_for(pod, "")).await;
        // The pod sends the head and part of the body, then resets at once.
        cut.send(()).unwrap();
        let r = front.send(to_localhost(t, "/", &[], false)).await;
        assert_eq!(r.status, 502, "{t:?}: {}", r.text());
        assert_eq!(last_error(&front).await, "reset after send", "{t:?}");
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_chunked_answer_broken_before_a_byte_went_out_is_a_502_held_against_the_pod() {
    // The pod's first chunk size is not hex (RFC 9112 §7.1), in the bytes that came
    // with its head: an invalid answer, refused before anything goes to the client, on
    // every path (README, Statuses), and the pod's fault.
    let (pod, _) = fixed_pod(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n".to_vec(),
    )
    .await;
    for (what, reply, _) in answers(&config_for(pod, "")).await {
        assert_eq!(reply.status, 502, "{what}: {}", reply.text());
    }
    // Held against the pod: its last error says so.
    for t in Transport::ALL {
        let front = Front::start(t, &config_for(pod, "")).await;
        front.send(to_localhost(t, "/", &[], false)).await;
        assert_eq!(last_error(&front).await, "reset after send", "{t:?}");
        front.proxy.shutdown().await;
    }
}

/// Sends `raw` on a new HTTP/1 connection of `front` and reads until the proxy closes.
async fn exchange_to_close(front: &Front, raw: &[u8]) -> String {
    let mut s = front.h1().await;
    s.write_all(raw).await.unwrap();
    s.flush().await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// An HTTP/1.1 request for localhost that asks to close after the answer; with
/// `chunked`, a POST with a chunked body.
fn closing_request(chunked: bool) -> &'static [u8] {
    if chunked {
        b"POST / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    }
}

#[tokio::test]
async fn trailers_are_relayed_without_the_fields_rfc_9110_forbids_there() {
    // RFC 9110 §6.5.1: framing, routing, authentication, response control and content
    // format cannot be sent in trailers; nor can anything that speaks for tether.
    let (pod, _) = fixed_pod(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
          2\r\nok\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\nSet-Cookie: s=1\r\n\
          X_Tether_Session: forged\r\nTransfer-Encoding: gzip\r\nX-Timing: 12\r\n\r\n"
            .to_vec(),
    )
    .await;
    let cfg = config_for(pod, "");
    for t in [Transport::H1, Transport::H1Tls] {
        let front = Front::start(t, &cfg).await;
        for chunked in [false, true] {
            let raw = exchange_to_close(&front, closing_request(chunked)).await;
            let what = format!("{t:?}, chunked {chunked}: {raw}");
            assert!(raw.starts_with("HTTP/1.1 200 "), "{what}");
            let (_, body) = raw.split_once("\r\n\r\n").expect(&what);
            assert_eq!(
                body, "2\r\nok\r\n0\r\nX-Checksum: abc\r\nX-Timing: 12\r\n\r\n",
                "{what}"
            );
        }
        front.proxy.shutdown().await;
    }
    // HTTP/2 clients get the same fields as a trailers frame.
    for t in [Transport::H2c, Transport::H2Tls] {
        use http_body_util::BodyExt;
        let front = Front::start(t, &cfg).await;
        let mut s = front.h2::<http_body_util::Full<bytes::Bytes>>().await;
        let req = to_localhost(t, "/", &[], false).map(http_body_util::Full::new);
        s.ready().await.unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{t:?}");
        let body = resp.into_body().collect().await.unwrap();
        let trailers = body.trailers().cloned().expect("trailers");
        assert_eq!(&body.to_bytes()[..], b"ok", "{t:?}");
        let mut names: Vec<_> = trailers.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["x-checksum", "x-timing"], "{t:?}");
        front.proxy.shutdown().await;
    }
}

/// The interim heads an HTTP/2 client got, as (status, fields) in order.
fn interim_heads(interims: &[http::Response<()>]) -> Vec<(u16, Vec<(String, String)>)> {
    interims
        .iter()
        .map(|r| {
            let fields = r
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            (r.status().as_u16(), fields)
        })
        .collect()
}

#[tokio::test]
async fn early_hints_and_other_interim_responses_reach_the_client_first_on_every_transport() {
    // RFC 9110 §15.2: a proxy forwards the 1xx responses it did not ask for; hop-by-hop
    // fields stay behind (RFC 9110 §7.6.1), which are the connection-specific fields
    // HTTP/2 forbids (RFC 9113 §8.2.2).
    let (pod, _) = fixed_pod(
        b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\nConnection: x-hop\r\n\
          X-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            .to_vec(),
    )
    .await;
    let cfg = config_for(pod, "");
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for chunked in [false, true] {
            if t.is_h2() {
                // A body streamed upstream, or none.
                let req = match chunked {
                    true => post_to_localhost(t, "/", &[], b"hi", false),
                    false => to_localhost(t, "/", &[], false),
                };
                let (interims, reply) = front.send_h2_with_interims(req).await;
                let what = format!("{t:?}, body {chunked}");
                let link = ("link".to_owned(), "</app.css>; rel=preload".to_owned());
                assert_eq!(
                    interim_heads(&interims),
                    [(103, vec![link]), (100, vec![])],
                    "{what}"
                );
                assert_eq!(reply.status, 200, "{what}");
                assert_eq!(reply.text(), "ok", "{what}");
                continue;
            }
            let raw = exchange_to_close(&front, closing_request(chunked)).await;
            let what = format!("{t:?}, chunked {chunked}: {raw}");
            assert!(
                raw.starts_with(
                    "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n\
                     HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                ),
                "{what}"
            );
            assert!(raw.ends_with("\r\n\r\nok"), "{what}");
        }
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn the_interim_response_of_a_try_that_broke_stays_sent_and_the_retry_adds_its_own() {
    // A GET may go twice: the pod that sent a 103 and then closed is left for the next
    // endpoint. Its 103 went to the client already (RFC 9110 §15.2) and is not sent
    // again; the second pod's follows, then its answer.
    let tries = Arc::new(AtomicU64::new(0));
    let mut pods = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        pods.push(listener.local_addr().unwrap().to_string());
        let tries = tries.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tries = tries.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer: &[u8] = match tries.fetch_add(1, Ordering::SeqCst) {
                        0 => b"HTTP/1.1 103 Early Hints\r\nLink: </first>\r\n\r\n",
                        _ => {
                            b"HTTP/1.1 103 Early Hints\r\nLink: </second>\r\n\r\n\
                               HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        }
                    };
                    let _ = s.write_all(answer).await;
                });
            }
        });
    }
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\n\
         [[backend]]\nname = \"app\"\nendpoints = [\"{}\", \"{}\"]\nconnect_timeout = \"500ms\"\n",
        pods[0], pods[1]
    );
    for t in Transport::ALL {
        tries.store(0, Ordering::SeqCst);
        let front = Front::start(t, &cfg).await;
        if t.is_h2() {
            let req = to_localhost(t, "/", &[], false);
            let (interims, reply) = front.send_h2_with_interims(req).await;
            let links: Vec<_> = interims
                .iter()
                .map(|r| (r.status().as_u16(), r.headers()["link"].to_str().unwrap()))
                .collect();
            assert_eq!(links, [(103, "</first>"), (103, "</second>")], "{t:?}");
            assert_eq!(reply.status, 200, "{t:?}");
            assert_eq!(reply.text(), "ok", "{t:?}");
        } else {
            let raw = exchange_to_close(&front, closing_request(false)).await;
            assert!(
                raw.starts_with(
                    "HTTP/1.1 103 Early Hints\r\nLink: </first>\r\n\r\n\
                     HTTP/1.1 103 Early Hints\r\nLink: </second>\r\n\r\nHTTP/1.1 200 OK\r\n"
                ),
                "{t:?}: {raw}"
            );
            assert!(raw.ends_with("\r\n\r\nok"), "{t:?}: {raw}");
        }
        assert_eq!(tries.load(Ordering::SeqCst), 2, "{t:?}");
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_http_1_0_client_gets_no_chunking_and_keeps_its_connection_only_when_asked() {
    // RFC 9112 §6.3 and §9.3: an HTTP/1.0 client cannot read chunked, so the body goes
    // decoded and ends with the close; it keeps a connection only with keep-alive.
    let (chunked, _) = fixed_pod(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
            .to_vec(),
    )
    .await;
    let (sized, _) = fixed_pod(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await;
    for t in [Transport::H1, Transport::H1Tls] {
        let front = Front::start(t, &config_for(chunked, "")).await;
        let raw = exchange_to_close(&front, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").await;
        let (head, body) = raw.split_once("\r\n\r\n").expect(&raw);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{t:?}: {raw}");
        assert!(!head.contains("transfer-encoding"), "{t:?}: {raw}");
        assert!(head.contains("connection: close"), "{t:?}: {raw}");
        assert_eq!(body, "hello world", "{t:?}");
        front.proxy.shutdown().await;

        // Keep-alive asked for and a sized body: the connection goes on, and says so.
        let front = Front::start(t, &config_for(sized, "")).await;
        let mut s = front.h1().await;
        for _ in 0..2 {
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
                .await
                .unwrap();
            let out = read_response(&mut s).await;
            assert!(out.contains("connection: keep-alive\r\n"), "{t:?}: {out}");
            assert!(out.ends_with("\r\n\r\nok"), "{t:?}: {out}");
        }
        // Without it, the connection ends after the answer.
        let raw = exchange_to_close(&front, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").await;
        assert!(raw.ends_with("\r\n\r\nok"), "{t:?}: {raw}");
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_tether_before_the_body_and_not_passed_on() {
    // RFC 9110 §10.1.1: the client waits for the 100 before sending its body.
    let pod = TestBackend::echo("pod-a").await;
    let cfg = config(&[&pod], &[], "");
    for t in [Transport::H1, Transport::H1Tls] {
        let front = Front::start(t, &cfg).await;
        for (len, what) in [(5, "a small body"), (70_000, "a streamed body")] {
            let mut s = front.h1().await;
            s.write_all(
                format!(
                    "POST /up HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n\
                     Content-Length: {len}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut interim = [0u8; 25];
            s.read_exact(&mut interim).await.unwrap();
            assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n", "{t:?}, {what}");
            s.write_all("x".repeat(len).as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            let reply = parse_reply(&String::from_utf8_lossy(&out));
            assert_eq!(reply.status, 200, "{t:?}, {what}");
            let echo = reply.json();
            assert_eq!(
                echo["body"].as_str().map(str::len),
                Some(len),
                "{t:?}, {what}"
            );
            assert!(
                echo["headers"].get("expect").is_none(),
                "{t:?}, {what}: {echo}"
            );
        }
        front.proxy.shutdown().await;
    }
}
