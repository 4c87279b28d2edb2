//! The client side of the test matrix: how a test reaches the proxy. Behavioural tests
//! take a [`Transport`] and run once per listener and protocol a user can arrive with:
//! HTTP/1.1 in plaintext and over TLS, HTTP/2 with prior knowledge (h2c) and over TLS.

use std::sync::Arc;

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
    (tls_section(config, dir), c)
}

/// `config` with a `[server.tls]` section serving the certificate [`with_tls`] wrote
/// to `dir`.
fn tls_section(config: &str, dir: &std::path::Path) -> String {
    config.replacen(
        "shutdown_grace = \"5s\"\n",
        &format!(
            "shutdown_grace = \"5s\"\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.join("tls.crt").display(),
            dir.join("tls.key").display()
        ),
        1,
    )
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
    /// The config file, for a proxy started with [`Front::start_from_file`].
    file: Option<PathBuf>,
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
                file: None,
                _dir: Some(dir),
            }
        } else {
            Front {
                proxy: super::proxy(config).await,
                transport,
                cert: None,
                file: None,
                _dir: None,
            }
        }
    }

    /// Starts a proxy from a config file holding `config` (with TLS when the transport
    /// uses it), which [`Front::rewrite`] changes and `proxy.reload()` re-reads.
    pub async fn start_from_file(transport: Transport, config: &str) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tether.toml");
        let (text, cert) = if transport.is_tls() {
            let (text, cert) = with_tls(config, dir.path());
            (text, Some(cert))
        } else {
            (config.to_string(), None)
        };
        std::fs::write(&file, text).unwrap();
        let c = tether::config::Config::from_file(&file).unwrap();
        let options = tether::server::Options {
            config_path: Some(file.clone()),
            ..Default::default()
        };
        super::init_logs();
        Front {
            proxy: tether::server::start(&c, options).await.unwrap(),
            transport,
            cert,
            file: Some(file),
            _dir: Some(dir),
        }
    }

    /// Writes `config` over the file of a proxy from [`Front::start_from_file`], with the
    /// same TLS section, for the next reload.
    pub fn rewrite(&self, config: &str) {
        let file = self.file.as_ref().expect("started from a file");
        let text = match self.transport.is_tls() {
            true => tls_section(config, file.parent().unwrap()),
            false => config.to_string(),
        };
        std::fs::write(file, text).unwrap();
    }

    /// Writes `text` over the config file as it is: no TLS section added (a broken
    /// config, say).
    pub fn rewrite_raw(&self, text: &str) {
        std::fs::write(self.file.as_ref().expect("started from a file"), text).unwrap();
    }

    /// A new HTTP/1.1 byte stream (panics on an HTTP/2 transport).
    pub async fn h1(&self) -> Box<dyn Stream> {
        h1_connect(self.transport, self.proxy.proxy_addr, self.root()).await
    }

    /// A new HTTP/2 connection (panics on an HTTP/1 transport).
    pub async fn h2<B>(&self) -> hyper::client::conn::http2::SendRequest<B>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        h2_connect(self.transport, self.proxy.proxy_addr, self.root()).await
    }

    /// A client connection kept open across requests (see [`Conn`]); it connects on
    /// its first request.
    pub fn conn(&self) -> Conn {
        Conn {
            transport: self.transport,
            addr: self.proxy.proxy_addr,
            root: self.root().cloned(),
            h1: None,
            h2: None,
        }
    }

    fn root(&self) -> Option<&CertificateDer<'static>> {
        self.cert.as_ref().map(|c| &c.der)
    }
}

/// A new HTTP/1.1 byte stream to `addr` (panics on an HTTP/2 transport).
async fn h1_connect(
    transport: Transport,
    addr: std::net::SocketAddr,
    root: Option<&CertificateDer<'static>>,
) -> Box<dyn Stream> {
    match (transport, root) {
        (Transport::H1, _) => Box::new(TcpStream::connect(addr).await.unwrap()),
        (Transport::H1Tls, Some(root)) => Box::new(tls_connect(addr, root, &[b"http/1.1"]).await),
        (t, _) => panic!("{t:?} is not an HTTP/1 transport"),
    }
}

/// A new HTTP/2 connection to `addr` (panics on an HTTP/1 transport).
async fn h2_connect<B>(
    transport: Transport,
    addr: std::net::SocketAddr,
    root: Option<&CertificateDer<'static>>,
) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = h2_io(transport, addr, root).await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A new byte stream to `addr` for HTTP/2 (panics on an HTTP/1 transport).
async fn h2_io(
    transport: Transport,
    addr: std::net::SocketAddr,
    root: Option<&CertificateDer<'static>>,
) -> Box<dyn Stream> {
    match (transport, root) {
        (Transport::H2c, _) => Box::new(TcpStream::connect(addr).await.unwrap()),
        (Transport::H2Tls, Some(root)) => {
            let s = tls_connect(addr, root, &[b"h2"]).await;
            assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            Box::new(s)
        }
        (t, _) => panic!("{t:?} is not an HTTP/2 transport"),
    }
}

/// Sends `req` on the HTTP/2 connection `s` and reads the whole answer ([`no_response`]
/// for a stream the proxy refused or reset).
async fn h2_send(
    s: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Bytes>,
) -> Reply {
    let (mut parts, body) = req.into_parts();
    parts.version = http::Version::HTTP_2;
    let req = http::Request::from_parts(parts, Full::new(body));
    let refused = || Reply {
        status: no_response(),
        headers: Default::default(),
        body: Bytes::new(),
    };
    if s.ready().await.is_err() {
        return refused();
    }
    let Ok(resp) = s.send_request(req).await else {
        return refused();
    };
    let (parts, body) = resp.into_parts();
    match body.collect().await {
        Ok(body) => Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.to_bytes(),
        },
        Err(_) => refused(),
    }
}

/// One client connection to the proxy, used for request after request the way a
/// browser uses one: HTTP/1.1 keep-alive (connecting again only once the proxy has
/// closed it), or one HTTP/2 connection carrying each request as a stream. Requests
/// are written as [`Front::send`] writes them.
pub struct Conn {
    transport: Transport,
    addr: std::net::SocketAddr,
    root: Option<CertificateDer<'static>>,
    h1: Option<Box<dyn Stream>>,
    h2: Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// Sends `req` on this connection and reads the whole answer.
    pub async fn send(&mut self, req: http::Request<Bytes>) -> Reply {
        use tokio::io::AsyncWriteExt;
        if self.transport.is_h2() {
            if self.h2.is_none() {
                self.h2 = Some(h2_connect(self.transport, self.addr, self.root.as_ref()).await);
            }
            return h2_send(self.h2.as_mut().unwrap(), req).await;
        }
        let mut s = match self.h1.take() {
            Some(s) => s,
            None => h1_connect(self.transport, self.addr, self.root.as_ref()).await,
        };
        let written = s.write_all(&raw_request(&req)).await.is_ok() && s.flush().await.is_ok();
        let reply = match written {
            true => parse_reply(&read_response(&mut s).await),
            false => parse_reply(""),
        };
        let closed = reply.status == no_response()
            || reply
                .headers
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closed {
            self.h1 = Some(s);
        }
        reply
    }
}

impl Front {
    /// Sends `req` the way this transport carries it and reads the whole answer:
    /// HTTP/1.1 written out byte for byte on a new connection (the target as given,
    /// absolute-form included; only the header fields given, no `Host` added; a body
    /// with its length unless the request says `transfer-encoding`), HTTP/2 through
    /// hyper's client on a new connection (the URI's authority as `:authority`).
    pub async fn send(&self, req: http::Request<Bytes>) -> Reply {
        if self.transport.is_h2() {
            return h2_send(&mut self.h2::<Full<Bytes>>().await, req).await;
        }
        parse_reply(&self.send_raw(req).await)
    }

    /// Sends `req` on a new HTTP/2 connection (panics on an HTTP/1 transport) through
    /// the `h2` crate's client, which hands over interim responses where hyper's drops
    /// them: the interim (1xx) heads that came before the answer, in order, and the
    /// whole answer (its body sent with END_STREAM and no `content-length`, so it is
    /// streamed upstream).
    pub async fn send_h2_with_interims(
        &self,
        req: http::Request<Bytes>,
    ) -> (Vec<http::Response<()>>, Reply) {
        let io = h2_io(self.transport, self.proxy.proxy_addr, self.root()).await;
        let (client, conn) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let (mut parts, body) = req.into_parts();
        parts.version = http::Version::HTTP_2;
        let mut client = client.ready().await.unwrap();
        let head = http::Request::from_parts(parts, ());
        let (mut resp, mut send) = client.send_request(head, body.is_empty()).unwrap();
        if !body.is_empty() {
            send.send_data(body, true).unwrap();
        }
        let mut interims = Vec::new();
        while let Some(interim) = std::future::poll_fn(|cx| resp.poll_informational(cx)).await {
            interims.push(interim.unwrap());
        }
        let (parts, mut body) = resp.await.unwrap().into_parts();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(got),
        };
        (interims, reply)
    }

    /// Writes `req` byte for byte on a new HTTP/1.1 connection as [`Front::send`]
    /// does, and returns the whole raw response (read by its `Content-Length`).
    pub async fn send_raw(&self, req: http::Request<Bytes>) -> String {
        use tokio::io::AsyncWriteExt;
        let mut s = self.h1().await;
        s.write_all(&raw_request(&req)).await.unwrap();
        s.flush().await.unwrap();
        read_response(&mut s).await
    }
}

/// Sends `req` on a new plaintext connection to the proxy at `addr` the way `t` (`H1`
/// or `H2c`) carries it, as [`Front::send`] does: for a proxy started without a
/// [`Front`] (the Kubernetes mode clusters).
pub async fn send_plain(
    t: Transport,
    addr: std::net::SocketAddr,
    req: http::Request<Bytes>,
) -> Reply {
    use tokio::io::AsyncWriteExt;
    if t.is_h2() {
        return h2_send(&mut h2_connect(t, addr, None).await, req).await;
    }
    let mut s = h1_connect(t, addr, None).await;
    s.write_all(&raw_request(&req)).await.unwrap();
    s.flush().await.unwrap();
    parse_reply(&read_response(&mut s).await)
}

/// `req` as HTTP/1.1 bytes: the target as given, only the header fields given, and a
/// body with its length unless the request says `transfer-encoding`.
fn raw_request(req: &http::Request<Bytes>) -> Vec<u8> {
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
    raw
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

/// A GET for `localhost` and `path` as transport `t` sends one, carrying the affinity
/// cookie `tether=cookie` when given; with `chunked`, see [`request`].
pub fn with_cookie(
    t: Transport,
    path: &str,
    cookie: Option<&str>,
    chunked: bool,
) -> http::Request<Bytes> {
    match cookie.map(|c| format!("tether={c}")) {
        Some(c) => to_localhost(t, path, &[("cookie", &c)], chunked),
        None => to_localhost(t, path, &[], chunked),
    }
}

/// A POST of `body` for `localhost` and `path` with these fields, as transport `t`
/// sends one: with its length, or with `chunked` (HTTP/1 only) as one chunk.
pub fn post_to_localhost(
    t: Transport,
    path: &str,
    fields: &[(&str, &str)],
    body: &[u8],
    chunked: bool,
) -> http::Request<Bytes> {
    assert!(!(chunked && t.is_h2()), "HTTP/2 has no chunked encoding");
    let mut req = to_localhost(t, path, fields, false);
    *req.method_mut() = http::Method::POST;
    *req.body_mut() = if chunked {
        req.headers_mut().insert(
            "transfer-encoding",
            http::HeaderValue::from_static("chunked"),
        );
        let mut b = format!("{:x}\r\n", body.len()).into_bytes();
        b.extend_from_slice(body);
        b.extend_from_slice(b"\r\n0\r\n\r\n");
        Bytes::from(b)
    } else {
        Bytes::copy_from_slice(body)
    };
    req
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

/// A test certificate authority: issues certificates for hosts, which a client trusting
/// [`TestCa::root`] verifies, as a browser would a real site's.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tether test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// The CA's certificate, for a client's roots.
    pub fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A fresh key and a certificate for `hosts` (wildcards allowed) signed by the CA.
    pub fn issue(&self, hosts: &[&str]) -> Cert {
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let c = params.signed_by(&key, &self.issuer).unwrap();
        Cert {
            pem: c.pem(),
            key: key.serialize_pem(),
            der: c.der().clone(),
        }
    }
}

/// A TLS connection offering ALPN `http/1.1` with SNI `host`, verifying the server's
/// certificate for `host` against `root`; the error when the handshake fails.
pub async fn tls_connect_sni(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    host: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
}

/// The certificate a handshake with SNI `host` is given, if it verifies for `host`
/// against `root`.
pub async fn presented(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    host: &str,
) -> Option<CertificateDer<'static>> {
    let tls = tls_connect_sni(addr, root, host).await.ok()?;
    let (_, session) = tls.get_ref();
    Some(session.peer_certificates()?[0].clone().into_owned())
}

/// GET `path` over HTTP/1.1 over TLS, with SNI and `Host` both `host`, verified against
/// `root`; `headers` added.
pub async fn https_get(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let tls = tls_connect_sni(addr, root, host).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = http::Request::get(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = sender
        .send_request(b.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}
