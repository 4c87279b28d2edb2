//! TLS termination: HTTP/2 over TLS by ALPN, HTTP/1.1 over TLS on the fast path,
//! stickiness, and certificate reload.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::transport::{cert, tls_connect, with_tls, Cert};
use support::*;

/// Connects over TLS with ALPN h2 trusting `root`; returns the sender and the
/// certificate the server presented.
async fn h2_tls(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    CertificateDer<'static>,
) {
    let tls = tls_connect(addr, root, &[b"h2"]).await;
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "ALPN chose h2");
    let presented = session.peer_certificates().unwrap()[0].clone().into_owned();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    (sender, presented)
}

async fn get(
    s: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    cookie: Option<&str>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut b = http::Request::get("https://localhost/").version(http::Version::HTTP_2);
    if let Some(c) = cookie {
        b = b.header("cookie", format!("tether={c}"));
    }
    s.ready().await.unwrap();
    let r = s
        .send_request(b.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = r.status().as_u16();
    let set = r.headers().get("set-cookie").map(|v| {
        v.to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("tether=")
            .to_string()
    });
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, set, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn http2_over_tls_is_sticky_and_certificates_reload_when_the_files_change() {
    let pods = [
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let first = cert();
    std::fs::write(dir.path().join("tls.crt"), &first.pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &first.key).unwrap();
    let refs: Vec<&TestBackend> = pods.iter().map(|p| &**p).collect();
    let cfg = config(&refs, &[("k1", KEY_1)], "").replacen(
        "shutdown_grace = \"5s\"\n",
        &format!(
            "shutdown_grace = \"5s\"\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.path().join("tls.crt").display(),
            dir.path().join("tls.key").display()
        ),
        1,
    );
    let p = proxy(&cfg).await;

    let (mut s, presented) = h2_tls(p.proxy_addr, &first.der).await;
    assert_eq!(presented, first.der);
    let (status, cookie, body) = get(&mut s, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    let cookie = cookie.expect("a cookie over TLS");
    let pod = body["pod"].as_str().unwrap().to_string();
    for _ in 0..10 {
        let (mut s2, _) = h2_tls(p.proxy_addr, &first.der).await;
        let (status, set, body) = get(&mut s2, Some(&cookie)).await;
        assert_eq!(status, 200);
        assert!(set.is_none());
        assert_eq!(body["pod"], pod.as_str());
    }

    // Renewal: new files; new handshakes present the new certificate, the open
    // connection keeps working.
    let second = cert();
    tokio::time::sleep(Duration::from_millis(1100)).await; // a distinct mtime
    std::fs::write(dir.path().join("tls.key"), &second.key).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &second.pem).unwrap();
    let mut reloaded = false;
    for _ in 0..100 {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(second.der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(p.proxy_addr).await.unwrap();
        if tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .is_ok()
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the renewed certificate was never served");
    let (status, _, _) = get(&mut s, Some(&cookie)).await;
    assert_eq!(
        status, 200,
        "the connection opened before the reload still works"
    );
    p.shutdown().await;
}

/// A proxy config over `pods` with TLS from a fresh certificate (kept in `dir`).
fn tls_config(pods: &[&TestBackend], dir: &std::path::Path) -> (String, Cert) {
    with_tls(&config(pods, &[("k1", KEY_1)], ""), dir)
}

#[tokio::test]
async fn http1_over_tls_is_served_on_the_fast_path_and_ends_with_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pods = three_pods().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, c) = tls_config(&refs(&pods), dir.path());
    let p = proxy(&cfg).await;

    let mut s = tls_connect(p.proxy_addr, &c.der, &[b"http/1.1"]).await;
    s.write_all(b"POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let echoed: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echoed["body"], "hello");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    let pod = echoed["pod"].as_str().unwrap().to_string();
    let cookie = out
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: tether="))
        .and_then(|v| v.split(';').next())
        .expect("a new session's cookie")
        .to_string();
    for _ in 0..5 {
        s.write_all(
            format!("GET /again HTTP/1.1\r\nHost: localhost\r\nCookie: tether={cookie}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let out = read_response(&mut s).await;
        assert!(
            out.contains(&format!("\"pod\":\"{pod}\"")),
            "pinned to {pod}: {out}"
        );
        assert!(!out.contains("set-cookie"), "{out}");
    }
    // A body past `request_buffer` streams on the same codec, with or without ALPN.
    let big = "x".repeat(tether::config::DEFAULT_BUFFER + 1);
    let large = format!(
        "POST /big HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    s.write_all(large.as_bytes()).await.unwrap();
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let mut s = tls_connect(p.proxy_addr, &c.der, &[]).await;
    s.write_all(large.as_bytes()).await.unwrap();
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");

    // A connection the fast path closes ends with close_notify: without it the client's
    // TLS read reports an unexpected EOF instead of the end of the stream.
    let mut s = tls_connect(p.proxy_addr, &c.der, &[b"http/1.1"]).await;
    s.write_all(b"GET /last HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .expect("a clean TLS close after the response");
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("\"path\":\"/last\""), "{out}");
    p.shutdown().await;
}

#[tokio::test]
async fn a_response_cut_off_mid_body_over_tls_ends_without_close_notify() {
    // A close-delimited body is relayed as it is: a close_notify would make a cut one
    // look complete, so the proxy leaves it out, as hyper does after a body error.
    let (pod, cut) =
        pod_that_breaks_mid_body(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, c) = tls_config(&[], dir.path());
    let cfg = cfg.replace("endpoints = []", &format!("endpoints = [\"{pod}\"]"));
    let p = proxy(&cfg).await;
    let mut s = tls_connect(p.proxy_addr, &c.der, &[b"http/1.1"]).await;
    let end = read_a_response_cut_mid_body(&mut s, cut).await;
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::UnexpectedEof),
        "the client must see that the body was cut"
    );
    p.shutdown().await;
}

#[test]
fn a_missing_or_mismatched_certificate_fails_the_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (cert(), cert());
    std::fs::write(dir.path().join("a.crt"), &a.pem).unwrap();
    std::fs::write(dir.path().join("b.key"), &b.key).unwrap();
    let text = "[server.tls]\ncert_file = \"a.crt\"\nkey_file = \"b.key\"\n[[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n";
    let e = tether::config::Config::parse(text, "t.toml", dir.path()).unwrap_err();
    assert_eq!(e.field, "server.tls");
    let text = text.replace("a.crt", "missing.crt");
    let e = tether::config::Config::parse(&text, "t.toml", dir.path()).unwrap_err();
    assert!(e.reason.contains("missing.crt"), "{e}");
}
