//! The client side of the test matrix: how a test reaches the proxy. Behavioural tests
//! take a [`Transport`] and run once per listener and protocol a user can arrive with:
//! HTTP/1.1 in plaintext and over TLS, HTTP/2 with prior knowledge (h2c) and over TLS.

use std::sync::Arc;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{read_response, Reply, Running};

/// A self-signed certificate for `localhost`.
pub struct Cert {
    pub pem: String,
    pub key: String,
    pub der: CertificateDer<'static>,
}

/// A fresh self-signed certificate for `localhost`.
pub fn cert() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Cert {
        pem: c.cert.pem(),
        key: c.signing_key.serialize_pem(),
        der: c.cert.der().clone(),
    }
}

/// A TLS connection offering the protocols in `alpn` (none: no ALPN), trusting `root`.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// `config` (from [`super::config`]) with a `[server.tls]` section serving a fresh
/// certificate, whose files are written to `dir`.
pub fn with_tls(config: &str, dir: &std::path::Path) -> (String, Cert) {
    let c = cert();
    std::fs::write(dir.join("tls.crt"), &c.pem).unwrap();
    std::fs::write(dir.join("tls.key"), &c.key).unwrap();
    let cfg = config.replacen(
        "shutdown_grace = \"5s\"\n",
        &format!(
            "shutdown_grace = \"5s\"\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.join("tls.crt").display(),
            dir.join("tls.key").display()
        ),
        1,
    );
    (cfg, c)
}

/// How a test client reaches the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 over TCP.
    H1,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    H1Tls,
    /// HTTP/2 over TCP with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2Tls,
}

impl Transport {
    /// Every transport.
    pub const ALL: [Transport; 4] = [
        Transport::H1,
        Transport::H1Tls,
        Transport::H2c,
        Transport::H2Tls,
    ];

    /// Whether this transport speaks HTTP/2.
    pub fn is_h2(self) -> bool {
        matches!(self, Transport::H2c | Transport::H2Tls)
    }

    fn is_tls(self) -> bool {
        matches!(self, Transport::H1Tls | Transport::H2Tls)
    }
}

/// A byte stream to the proxy: TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A running proxy and the way its test client reaches it.
pub struct Front {
    pub proxy: Running,
    pub transport: Transport,
    cert: Option<Cert>,
    _dir: Option<tempfile::TempDir>,
}

impl Front {
    /// Starts a proxy from `config` (from [`super::config`]), listening with TLS when the
    /// transport uses it.
    pub async fn start(transport: Transport, config: &str) -> Front {
        if transport.is_tls() {
            let dir = tempfile::tempdir().unwrap();
            let (cfg, cert) = with_tls(config, dir.path());
            Front {
                proxy: super::proxy(&cfg).await,
                transport,
                cert: Some(cert),
                _dir: Some(dir),
            }
        } else {
            Front {
                proxy: super::proxy(config).await,
                transport,
                cert: None,
                _dir: None,
            }
        }
    }

    /// A new HTTP/1.1 byte stream (panics on an HTTP/2 transport).
    pub async fn h1(&self) -> Box<dyn Stream> {
        match (self.transport, &self.cert) {
            (Transport::H1, _) => {
                Box::new(TcpStream::connect(self.proxy.proxy_addr).await.unwrap())
            }
            (Transport::H1Tls, Some(c)) => {
                Box::new(tls_connect(self.proxy.proxy_addr, &c.der, &[b"http/1.1"]).await)
            }
            (t, _) => panic!("{t:?} is not an HTTP/1 transport"),
        }
    }

    /// A new HTTP/2 connection (panics on an HTTP/1 transport).
    pub async fn h2<B>(&self) -> hyper::client::conn::http2::SendRequest<B>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io: Box<dyn Stream> = match (self.transport, &self.cert) {
            (Transport::H2c, _) => {
                Box::new(TcpStream::connect(self.proxy.proxy_addr).await.unwrap())
            }
            (Transport::H2Tls, Some(c)) => {
                let s = tls_connect(self.proxy.proxy_addr, &c.der, &[b"h2"]).await;
                assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                Box::new(s)
            }
            (t, _) => panic!("{t:?} is not an HTTP/2 transport"),
        };
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender
    }
}

impl Front {
    /// Sends `req` the way this transport carries it and reads the whole answer:
    /// HTTP/1.1 written out byte for byte on a new connection (the target as given,
    /// absolute-form included; only the header fields given, no `Host` added; a body
    /// with its length unless the request says `transfer-encoding`), HTTP/2 through
    /// hyper's client on a new connection (the URI's authority as `:authority`).
    pub async fn send(&self, req: http::Request<Bytes>) -> Reply {
        use http_body_util::{BodyExt, Full};
        if self.transport.is_h2() {
            let mut s = self.h2::<Full<Bytes>>().await;
            let (mut parts, body) = req.into_parts();
            parts.version = http::Version::HTTP_2;
            let req = http::Request::from_parts(parts, Full::new(body));
            s.ready().await.unwrap();
            return match s.send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    Reply {
                        status: parts.status,
                        headers: parts.headers,
                        body: body.collect().await.unwrap().to_bytes(),
                    }
                }
                // A stream the proxy refused (RST_STREAM).
                Err(_) => Reply {
                    status: no_response(),
                    headers: Default::default(),
                    body: Bytes::new(),
                },
            };
        }
        parse_reply(&self.send_raw(req).await)
    }

    /// Writes `req` byte for byte on a new HTTP/1.1 connection as [`Front::send`]
    /// does, and returns the whole raw response (read by its `Content-Length`).
    pub async fn send_raw(&self, req: http::Request<Bytes>) -> String {
        use tokio::io::AsyncWriteExt;
        let mut raw = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri()).into_bytes();
        for (name, value) in req.headers() {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(value.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        if !req.body().is_empty() && !req.headers().contains_key("transfer-encoding") {
            raw.extend_from_slice(format!("content-length: {}\r\n", req.body().len()).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(req.body());
        let mut s = self.h1().await;
        s.write_all(&raw).await.unwrap();
        s.flush().await.unwrap();
        read_response(&mut s).await
    }
}

/// The ways a request arrives: each transport, and HTTP/1 also with a small chunked
/// body (`true`), which goes upstream chunked: both must give the
/// same answer.
pub fn arrivals() -> Vec<(Transport, bool)> {
    vec![
        (Transport::H1, false),
        (Transport::H1, true),
        (Transport::H1Tls, false),
        (Transport::H1Tls, true),
        (Transport::H2c, false),
        (Transport::H2Tls, false),
    ]
}

/// A GET to `target` with these header fields; with `chunked`, a POST with a small
/// chunked body instead.
pub fn request(target: &str, fields: &[(&str, &str)], chunked: bool) -> http::Request<Bytes> {
    let mut b = http::Request::builder()
        .method(if chunked { "POST" } else { "GET" })
        .uri(target);
    for (k, v) in fields {
        b = b.header(*k, *v);
    }
    if chunked {
        b = b.header("transfer-encoding", "chunked");
    }
    let body = if chunked {
        Bytes::from_static(b"2\r\nhi\r\n0\r\n\r\n")
    } else {
        Bytes::new()
    };
    b.body(body).unwrap()
}

/// A request for `localhost` and `path` as transport `t` sends one (HTTP/1: `Host:
/// localhost` first among `fields`; HTTP/2: the authority in the URI), see [`request`].
pub fn to_localhost(
    t: Transport,
    path: &str,
    fields: &[(&str, &str)],
    chunked: bool,
) -> http::Request<Bytes> {
    let mut all = Vec::with_capacity(fields.len() + 1);
    if !t.is_h2() {
        all.push(("host", "localhost"));
    }
    all.extend_from_slice(fields);
    request(&target(t, "localhost", path), &all, chunked)
}

/// A target for `host` as a transport sends one: origin-form (with `Host` among the
/// fields) for HTTP/1, a URI with the authority for HTTP/2.
pub fn target(t: Transport, host: &str, path: &str) -> String {
    if t.is_h2() {
        format!("http://{host}{path}")
    } else {
        path.to_string()
    }
}

/// The status a [`Reply`] has when no response came back (599, which no server sends
/// here).
pub fn no_response() -> http::StatusCode {
    http::StatusCode::from_u16(599).unwrap()
}

/// A raw HTTP/1 response as a [`Reply`] ([`no_response`] when nothing parsable came).
pub fn parse_reply(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut headers = http::HeaderMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                v.trim().parse(),
            ) {
                headers.append(k, v);
            }
        }
    }
    Reply {
        status: http::StatusCode::from_u16(status).unwrap_or(no_response()),
        headers,
        body: Bytes::from(body.to_string()),
    }
}
