//! h2c upstreams: a gRPC-style unary call with trailers passes through unchanged.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

/// A gRPC-like h2c server: answers `/echo.Echo/Say` with the request message reversed,
/// trailers `grpc-status: 0`, `grpc-message`, and what it saw as headers.
async fn grpc_pod(name: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let version = format!("{:?}", req.version());
                        let te = req.headers().get("te").cloned();
                        let ct = req.headers().get("content-type").cloned();
                        let collected = req.into_body().collect().await.unwrap();
                        let seen: Vec<String> = collected
                            .trailers()
                            .map(|t| t.keys().map(|k| k.to_string()).collect())
                            .unwrap_or_default();
                        let mut msg = collected.to_bytes().to_vec();
                        msg[5..].reverse();
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        trailers.insert("grpc-message", HeaderValue::from_static("all%20good"));
                        trailers.insert("x-pod", HeaderValue::from_static(name));
                        trailers.insert("x-seen-version", HeaderValue::from_str(&version).unwrap());
                        if let Some(te) = te {
                            trailers.insert("x-seen-te", te);
                        }
                        if let Some(ct) = ct {
                            trailers.insert("x-seen-content-type", ct);
                        }
                        if !seen.is_empty() {
                            let seen = HeaderValue::from_str(&seen.join(",")).unwrap();
                            trailers.insert("x-seen-trailers", seen);
                        }
                        let frames = vec![
                            Ok::<_, Infallible>(Frame::data(Bytes::from(msg))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let body = StreamBody::new(futures::stream::iter(frames));
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_grpc_unary_call_with_trailers_passes_through_h2c_unchanged() {
    let a = grpc_pod("grpc-a").await;
    let b = grpc_pod("grpc-b").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
         [[backend]]\nname = \"grpc\"\nprotocol = \"h2c\"\nendpoints = [{{ name = \"grpc-a\", address = \"{a}\" }}, {{ name = \"grpc-b\", address = \"{b}\" }}]\n"
    );
    let p = proxy(&cfg).await;
    let stream = tokio::net::TcpStream::connect(p.proxy_addr).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);

    let mut cookie: Option<String> = None;
    let mut pods = std::collections::HashSet::new();
    for i in 0..20 {
        let text = format!("hello {i}");
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(text.len() as u32).to_be_bytes());
        framed.extend_from_slice(text.as_bytes());
        let mut req = http::Request::post(format!("http://{}/echo.Echo/Say", p.proxy_addr))
            .version(http::Version::HTTP_2)
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(c) = &cookie {
            req = req.header("cookie", c.as_str());
        }
        client.ready().await.unwrap();
        let resp = client
            .send_request(req.body(Full::new(Bytes::from(framed.clone()))).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        if let Some(set) = resp.headers().get("set-cookie") {
            cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_string());
        }
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers arrive");
        let body = collected.to_bytes();
        let mut expected = framed.clone();
        expected[5..].reverse();
        assert_eq!(body.as_ref(), &expected[..], "the message is unchanged");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "all%20good");
        assert_eq!(trailers["x-seen-version"], "HTTP/2.0", "upstream spoke h2c");
        assert_eq!(trailers["x-seen-te"], "trailers");
        assert_eq!(trailers["x-seen-content-type"], "application/grpc");
        pods.insert(trailers["x-pod"].to_str().unwrap().to_string());
    }
    assert_eq!(pods.len(), 1, "the call is sticky: {pods:?}");
    p.shutdown().await;
}

/// An HTTP/2 client's request trailers reach an h2c pod without the fields a trailer
/// section may not carry (RFC 9110 §6.5.1), those speaking for tether in any spelling
/// among them: the pod can trust what tether says in trailers as in headers.
#[tokio::test]
async fn request_trailers_to_an_h2c_pod_cannot_speak_for_tether() {
    let a = grpc_pod("grpc-a").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
         [[backend]]\nname = \"grpc\"\nprotocol = \"h2c\"\nendpoints = [{{ name = \"grpc-a\", address = \"{a}\" }}]\n"
    );
    let p = proxy(&cfg).await;
    let stream = tokio::net::TcpStream::connect(p.proxy_addr).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-note", HeaderValue::from_static("1"));
    trailers.insert("x-tether-session", HeaderValue::from_static("spoof"));
    trailers.insert("x_tether_affinity", HeaderValue::from_static("sticky"));
    trailers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = http::Request::post(format!("http://{}/echo.Echo/Say", p.proxy_addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .unwrap();
    client.ready().await.unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let seen = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(seen["x-seen-trailers"], "x-client-note");
    p.shutdown().await;
}

/// Sends `raw` on a new HTTP/1 connection and reads until the proxy closes it.
async fn h1_to_close(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn an_http_1_client_reaches_an_h2c_backend_with_its_body_and_gets_the_trailers() {
    // The HTTP/1 codec hands the request to the HTTP/2 upstream client and writes the
    // answer back as HTTP/1.1: chunked, with the trailer section (RFC 9112 §7.1.2).
    let a = grpc_pod("grpc-a").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
         [[backend]]\nname = \"grpc\"\nprotocol = \"h2c\"\nendpoints = [{{ name = \"grpc-a\", address = \"{a}\" }}]\n"
    );
    let p = proxy(&cfg).await;
    let small = b"\0\0\0\0\x05hello".to_vec();
    // Past request_buffer, chunked: streamed as it comes, decoded into DATA.
    let mut large = b"\0\0\x01\x11\x70".to_vec();
    large.extend(std::iter::repeat_n(b'a', 70_000 - 1));
    large.push(b'z');
    for (body, chunked) in [(small, false), (large, true)] {
        let mut raw = b"POST /echo.Echo/Say HTTP/1.1\r\nHost: localhost\r\nTE: trailers\r\n\
                        Content-Type: application/grpc\r\nConnection: close\r\n"
            .to_vec();
        if chunked {
            raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for part in body.chunks(30_000) {
                raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                raw.extend_from_slice(part);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
        } else {
            raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            raw.extend_from_slice(&body);
        }
        let out = h1_to_close(p.proxy_addr, &raw).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect(&text);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("content-type: application/grpc"), "{head}");
        assert!(head.contains("set-cookie: tether="), "{head}");
        // Decode the chunked body and read its trailers.
        let mut rest = rest.as_bytes();
        let mut data = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            data.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        let mut want = body.clone();
        want[5..].reverse();
        assert_eq!(data, want, "the message, reversed by the pod");
        let trailers = String::from_utf8_lossy(rest);
        assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers}");
        assert!(
            trailers.contains("x-seen-version: HTTP/2.0\r\n"),
            "{trailers}"
        );
        assert!(trailers.contains("x-seen-te: trailers\r\n"), "{trailers}");
        assert!(trailers.ends_with("\r\n\r\n"), "{trailers}");
    }
    // An HTTP/1.0 client cannot take chunked: the body ends with the close.
    let out = h1_to_close(
        p.proxy_addr,
        b"POST /echo.Echo/Say HTTP/1.0\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n\0\0\0\0\x05hello",
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body.as_bytes(), b"\0\0\0\0\x05olleh");
    p.shutdown().await;
}
