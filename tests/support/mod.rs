//! Shared test harness: real hyper backends, a real proxy, and an HTTP client, all on
//! 127.0.0.1:0.
#![allow(dead_code)]

pub mod fake_apiserver;
pub mod sim;
pub mod transport;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use tether::server::Running;

/// A test signing key (base64 of 32 bytes).
pub const KEY_1: &str = "a2V5LW9uZS1rZXktb25lLWtleS1vbmUta2V5LW9uZSE=";
/// Another one.
pub const KEY_2: &str = "a2V5LXR3by1rZXktdHdvLWtleS10d28ta2V5LXR3byE=";

// === backends ===

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>
        + Send
        + Sync,
>;

/// Response body type test backends produce.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// How the proxy speaks to a pod: the two upstream protocols a `[[backend]]` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// HTTP/1.1 (the default).
    H1,
    /// h2c: HTTP/2 by prior knowledge (`protocol = "h2c"`).
    H2c,
}

impl Upstream {
    /// Both protocols.
    pub const ALL: [Upstream; 2] = [Upstream::H1, Upstream::H2c];

    /// The `[[backend]]` line that selects this protocol, for [`config`]'s extra lines
    /// (put it first: it must come before any `[backend.*]` table).
    pub fn protocol(self) -> &'static str {
        match self {
            Upstream::H1 => "",
            Upstream::H2c => "protocol = \"h2c\"\n",
        }
    }
}

/// A real hyper server standing in for a pod: HTTP/1.1, or h2c (see [`Upstream`]).
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    /// TCP connections accepted: how well the proxy reuses upstream connections.
    pub connections: Arc<AtomicU64>,
    pub protocol: Upstream,
    stop: Mutex<Option<watch::Sender<bool>>>,
    /// The accept loop and every connection task, so a stop can wait for all of them.
    tasks: Mutex<Option<tokio_util::task::TaskTracker>>,
    handler: Handler,
}

impl TestBackend {
    /// A backend that answers every request with [`echo`].
    pub async fn echo(name: &str) -> Arc<TestBackend> {
        Self::echo_over(name, Upstream::H1).await
    }

    /// A backend that answers every request with [`echo`], speaking `protocol`.
    pub async fn echo_over(name: &str, protocol: Upstream) -> Arc<TestBackend> {
        let n = name.to_string();
        Self::with_handler_over(name, protocol, move |req| {
            let n = n.clone();
            async move { echo(&n, req).await }
        })
        .await
    }

    /// An echo backend bound to `addr` (e.g. `127.0.0.12:PORT`, to share a port number
    /// across pods the way an EndpointSlice does).
    pub async fn echo_at(name: &str, addr: SocketAddr) -> std::io::Result<Arc<TestBackend>> {
        let n = name.to_string();
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::from_listener(
            name,
            listener,
            Upstream::H1,
            move |req| {
                let n = n.clone();
                async move { echo(&n, req).await }
            },
        ))
    }

    /// A backend with a custom handler.
    pub async fn with_handler<F, Fut>(name: &str, f: F) -> Arc<TestBackend>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        Self::with_handler_over(name, Upstream::H1, f).await
    }

    /// A backend with a custom handler, speaking `protocol`.
    pub async fn with_handler_over<F, Fut>(name: &str, protocol: Upstream, f: F) -> Arc<TestBackend>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::from_listener(name, listener, protocol, f)
    }

    fn from_listener<F, Fut>(
        name: &str,
        listener: TcpListener,
        protocol: Upstream,
        f: F,
    ) -> Arc<TestBackend>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let b = Arc::new(TestBackend {
            name: name.to_string(),
            addr: listener.local_addr().unwrap(),
            hits: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
            protocol,
            stop: Mutex::new(None),
            tasks: Mutex::new(None),
            handler: Arc::new(move |req| Box::pin(f(req))),
        });
        b.serve(listener);
        b
    }

    fn serve(&self, listener: TcpListener) {
        let (tx, mut rx) = watch::channel(false);
        *self.stop.lock().unwrap() = Some(tx);
        let handler = self.handler.clone();
        let hits = self.hits.clone();
        let accepted = self.connections.clone();
        let protocol = self.protocol;
        let tasks = tokio_util::task::TaskTracker::new();
        *self.tasks.lock().unwrap() = Some(tasks.clone());
        let connections = tasks.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    Ok((stream, _)) = listener.accept() => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let handler = handler.clone();
                        let hits = hits.clone();
                        let mut stop = rx.clone();
                        connections.spawn(async move {
                            let svc = service_fn(move |req| {
                                hits.fetch_add(1, Ordering::Relaxed);
                                let f = handler(req);
                                async move { Ok::<_, Infallible>(f.await) }
                            });
                            let io = TokioIo::new(stream);
                            let conn: Pin<Box<dyn Future<Output = _> + Send>> = match protocol {
                                Upstream::H1 => Box::pin(http1::Builder::new().serve_connection(io, svc)),
                                Upstream::H2c => Box::pin(
                                    http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc),
                                ),
                            };
                            tokio::select! { _ = conn => {}, _ = stop.changed() => {} }
                        });
                    }
                    _ = rx.changed() => break,
                }
            }
        });
    }

    /// Stops, and returns once the listener and every connection are closed (the
    /// address is free, and no pooled connection can still reach this pod).
    pub async fn stop_and_wait(&self) {
        self.stop();
        let tasks = self.tasks.lock().unwrap().take();
        if let Some(t) = tasks {
            t.close();
            t.wait().await;
        }
    }

    /// Stops listening and drops every open connection, like a killed pod.
    pub fn stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap().take() {
            let _ = tx.send(true);
        }
    }

    /// A `{ name, address }` endpoint entry for a config.
    pub fn entry(&self) -> String {
        format!(
            "{{ name = \"{}\", address = \"{}\" }}",
            self.name, self.addr
        )
    }
}

/// Answers with JSON describing the request: the backend name, method, path, every
/// header (lowercase names; repeated headers joined with ", ") and the body length.
pub async fn echo(name: &str, req: Request<Incoming>) -> Response<BoxBody> {
    let (parts, body) = req.into_parts();
    let mut headers = BTreeMap::new();
    for (k, v) in parts.headers.iter() {
        let v = v.to_str().unwrap_or("<binary>").to_string();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(&v)
            })
            .or_insert(v);
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v = json!({
        "pod": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-pod", name)
        .body(full(v.to_string()))
        .unwrap()
}

/// A boxed full body.
pub fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// Echo pods with these names, each on its own port.
pub async fn pods(names: &[&str]) -> Vec<Arc<TestBackend>> {
    pods_over(names, Upstream::H1).await
}

/// Echo pods with these names speaking `protocol`, each on its own port.
pub async fn pods_over(names: &[&str], protocol: Upstream) -> Vec<Arc<TestBackend>> {
    let mut v = Vec::with_capacity(names.len());
    for n in names {
        v.push(TestBackend::echo_over(n, protocol).await);
    }
    v
}

/// pod-a, pod-b and pod-c.
pub async fn three_pods() -> Vec<Arc<TestBackend>> {
    pods(&["pod-a", "pod-b", "pod-c"]).await
}

/// Borrows backends for [`config`].
pub fn refs(b: &[Arc<TestBackend>]) -> Vec<&TestBackend> {
    b.iter().map(|b| &**b).collect()
}

/// Echo pods on distinct loopback addresses (127.0.0.10, .11, ...) sharing one port,
/// like the endpoints of one EndpointSlice. Returns the pods and the port.
pub async fn pods_on_one_port(names: &[&str]) -> (Vec<Arc<TestBackend>>, u16) {
    'retry: for _ in 0..20 {
        let first = TestBackend::echo_at(names[0], "127.0.0.10:0".parse().unwrap())
            .await
            .unwrap();
        let port = first.addr.port();
        let mut pods = vec![first];
        for (i, n) in names.iter().enumerate().skip(1) {
            let addr = SocketAddr::from(([127, 0, 0, 10 + i as u8], port));
            match TestBackend::echo_at(n, addr).await {
                Ok(p) => pods.push(p),
                Err(_) => continue 'retry,
            }
        }
        return (pods, port);
    }
    panic!("no common free port");
}

/// Polls `cond` until it holds (a change propagating through sockets and tasks), or
/// panics after 20 s. Not a timing assertion: only a bound on waiting.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// [`wait_for`] for a condition that must itself await (a /metrics scrape, say).
pub async fn wait_for_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

// === proxy ===

/// Config text for one backend `app` over `backends`, with the given `[[keys]]` secrets
/// (ids k1, k2, ... in order) and extra lines appended to `[[backend]]`.
pub fn config(backends: &[&TestBackend], keys: &[(&str, &str)], backend_extra: &str) -> String {
    let mut t = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\n",
    );
    for (id, secret) in keys {
        t.push_str(&format!(
            "[[keys]]\nid = \"{id}\"\nsecret = \"{secret}\"\n\n"
        ));
    }
    let eps: Vec<_> = backends.iter().map(|b| b.entry()).collect();
    t.push_str(&format!(
        "[[backend]]\nname = \"app\"\nendpoints = [{}]\nconnect_timeout = \"500ms\"\n{backend_extra}\n",
        eps.join(", ")
    ));
    t
}

/// Starts a proxy from config text.
pub async fn proxy(config: &str) -> Running {
    proxy_with(config, Default::default()).await
}

/// Routes tether's logs to the test output when RUST_LOG is set.
/// A program the test needs from the system (`chromium`, `prometheus`, `kubectl`), found
/// on `PATH`. Without it the test skips with a message on a developer's machine, and
/// fails under `.ci/run`, which installs each one and sets `TETHER_REQUIRE_TOOLS` so a
/// missing tool cannot pass unseen.
pub fn system_tool(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("TETHER_REQUIRE_TOOLS").is_none(),
            "no {name}: apt-get install {package}"
        );
        eprintln!("SKIPPED: no {name} installed (apt-get install {package})");
    }
    found
}

pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
}

/// Starts a proxy from config text with options (e.g. a pod name for prefer_local).
pub async fn proxy_with(config: &str, options: tether::server::Options) -> Running {
    init_logs();
    let c = tether::config::Config::parse(config, "<test>", Path::new(".")).unwrap();
    tether::server::start(&c, options).await.unwrap()
}

// === client ===

/// A response with its body parsed as JSON when possible.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// Which backend answered (from the echo body).
    pub fn pod(&self) -> String {
        self.json()["pod"].as_str().unwrap_or("").to_string()
    }
    /// A header the backend received.
    pub fn seen(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
    /// Asserts what tether told the app about the session: its affinity outcome and
    /// its id (`what` names the case).
    #[track_caller]
    pub fn assert_told(&self, outcome: &str, session: &str, what: &str) {
        let affinity = self.seen("x-tether-affinity");
        assert_eq!(affinity.as_deref(), Some(outcome), "{what}");
        let id = self.seen("x-tether-session");
        assert_eq!(id.as_deref(), Some(session), "{what}");
    }
    /// Every Set-Cookie header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
    /// The value of the affinity cookie set by this response, if any.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|s| {
            let c = cookie::Cookie::parse(s.clone()).ok()?;
            (c.name() == name).then(|| c.value().to_string())
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pooled HTTP/1.1 client.
#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    pub fn new() -> Self {
        TestClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// GET `path` on `addr`, with an optional `tether` cookie.
    pub async fn get(&self, addr: SocketAddr, path: &str, cookie: Option<&str>) -> Reply {
        let mut b = Request::get(format!("http://{addr}{path}"));
        if let Some(c) = cookie {
            b = b.header("cookie", format!("tether={c}"));
        }
        self.send(b.body(Full::default()).unwrap()).await
    }

    /// Sends any request.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = self.client.request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A response body fed chunk by chunk through a channel; ends when the sender drops.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        ChannelBody { rx }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Scrapes /metrics and parses it with a real Prometheus text parser; returns the value
/// of `name` with these labels (0 when absent).
pub async fn metric(
    c: &TestClient,
    admin: std::net::SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let r = c.get(admin, "/metrics", None).await;
    assert_eq!(r.status, 200);
    let lines = r
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid exposition");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or(0.0)
}

/// `/debug/history` from the admin listener at `admin` once it holds a sample newer
/// than `after` (unix seconds; `None`: any sample).
pub async fn history_after(c: &TestClient, admin: SocketAddr, after: Option<u64>) -> Value {
    for _ in 0..1000 {
        let h = c.get(admin, "/debug/history", None).await.json();
        let newest = newest(&h);
        if newest.is_some() && newest != after {
            return h;
        }
        // The sampler's tick may be due at this very instant (a paused clock): let it run.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the sampler took no sample after {after:?}");
}

/// The time of the newest sample in a `/debug/history` answer.
pub fn newest(history: &Value) -> Option<u64> {
    history["times"].as_array()?.last()?.as_u64()
}

/// Reads one whole response with a `Content-Length` body from `s`.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A pod that answers its first request with `head` and part of a body, and once `cut`
/// fires resets the connection (zero linger) instead of ending it: an upstream that
/// breaks mid-response. The part sent is `partial-body`.
pub async fn pod_that_breaks_mid_body(
    head: &'static [u8],
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cut_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(&[head, b"partial-body"].concat()).await;
        let _ = cut_rx.await;
        let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
    });
    (addr, cut)
}

/// Sends a GET to a proxy in front of [`pod_that_breaks_mid_body`] on `s`, reads until
/// the part the pod sent arrives, has the pod break, and returns how reading to the
/// end went (on success, how much more arrived).
pub async fn read_a_response_cut_mid_body<S>(
    s: &mut S,
    cut: tokio::sync::oneshot::Sender<()>,
) -> std::io::Result<usize>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"partial-body") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    cut.send(()).unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the proxy ended the connection")
}

/// A pod that answers every request with the same raw bytes, `answer`, whatever it is
/// (an HTTP/1.0 status line, a 101 nobody asked for, a huge head): for what the proxy
/// makes of upstream responses a hyper server would never send. Request bodies (by
/// length or chunked) are read and ignored; the connection stays open unless the
/// answer is HTTP/1.0. Returns the address and the number of requests answered.
pub async fn fixed_pod(answer: Vec<u8>) -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (count, answer) = (count.clone(), answer.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let end = loop {
                        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    got.drain(..end);
                    if head.contains("transfer-encoding: chunked") {
                        while !got.windows(5).any(|w| w == b"0\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let i = got.windows(5).position(|w| w == b"0\r\n\r\n").unwrap();
                        got.drain(..i + 5);
                    } else if let Some(len) = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                    {
                        while got.len() < len {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        got.drain(..len);
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(&answer).await.is_err() || answer.starts_with(b"HTTP/1.0") {
                        return;
                    }
                }
            });
        }
    });
    (addr, answered)
}

/// Config text for one backend `app` over the single endpoint `addr`.
pub fn config_for(addr: SocketAddr, backend_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\n\
         [[backend]]\nname = \"app\"\nendpoints = [\"{addr}\"]\nconnect_timeout = \"500ms\"\n{backend_extra}\n"
    )
}

/// An h2c pod that answers each connection's first request with a head only (`200`,
/// `content-length: 10`) and then resets the connection (zero linger) without a byte
/// of the body: a pod killed between its head and its body. It speaks raw frames (RFC
/// 9113 §4.1), so the head is out before the reset: the reset follows tether's
/// acknowledgement of the SETTINGS frame written just before the head (§6.5.3), sent
/// once tether has read both. Returns the address and how many heads it sent.
pub async fn h2c_pod_that_dies_after_its_head() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicU64::new(0));
    let count = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if s.read_exact(&mut preface).await.is_err() {
                    return;
                }
                // The client's SETTINGS and WINDOW_UPDATE, then its request's HEADERS.
                let stream = loop {
                    match read_frame(&mut s).await {
                        Some((0x1, _, id)) => break id,
                        Some(_) => {}
                        None => return,
                    }
                };
                let mut out = Vec::new();
                put_frame(&mut out, 0x4, 0, 0, &[]);
                // `:status: 200` (static index 8) and `content-length: 10` (a literal
                // with the name of static index 28), RFC 7541 §6.1 and §6.2.2;
                // END_HEADERS, no END_STREAM: a body is to follow.
                let block = [0x88, 0x0f, 0x0d, 0x02, b'1', b'0'];
                put_frame(&mut out, 0x1, 0x4, stream, &block);
                if s.write_all(&out).await.is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                loop {
                    match read_frame(&mut s).await {
                        Some((0x4, flags, _)) if flags & 0x1 == 0x1 => break,
                        Some(_) => {}
                        None => return,
                    }
                }
                let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
            });
        }
    });
    (addr, heads)
}

/// Reads one HTTP/2 frame: its type, flags and stream (RFC 9113 §4.1).
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(u8, u8, u32)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream))
}

/// Appends an HTTP/2 frame to `out` (RFC 9113 §4.1).
fn put_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}
