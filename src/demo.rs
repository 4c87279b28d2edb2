//! `tether demo`: three in-process "pods" behind the proxy, no cluster and no config file.
//!
//! Each pod is a small hyper server that answers with JSON naming itself and echoing what
//! tether told it (`x-tether-session`, `x-tether-affinity`, `x-tether-previous-endpoint`),
//! plus an `x-pod` response header so load scripts can check stickiness. The admin
//! listener gains `GET /demo/pods` and `POST /demo/pods/{name}/stop|start`, so a user can
//! kill the pod their session is pinned to and watch it fail over.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminHook, HookResponse};
use crate::config::{Config, ConfigError};
use crate::server::{self, Running};
use tokio_util::task::TaskTracker;

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A demo pod could not bind its port.
    #[error("demo pod cannot listen: {0}")]
    Pod(#[from] std::io::Error),
    /// The generated config was rejected (a bug, or bad --listen/--admin values).
    #[error("demo config: {0}")]
    Config(#[from] ConfigError),
    /// The proxy could not start.
    #[error(transparent)]
    Server(#[from] server::Error),
}

/// One demo pod.
#[derive(Debug)]
pub struct DemoPod {
    /// Pod name; also the endpoint name in the proxy config.
    pub name: String,
    /// Fixed address, so a restarted pod comes back where the proxy expects it.
    pub addr: SocketAddr,
    /// Stops serving when sent, and tracks the pod's tasks so a stop can wait for them;
    /// `None` while stopped. Only the demo control path takes this lock.
    running: Mutex<Option<(watch::Sender<bool>, TaskTracker)>>,
    /// Requests answered, shown in responses and `/demo/pods`.
    served: AtomicU64,
}

impl DemoPod {
    /// Binds `addr` (port 0 picks one) and starts serving.
    pub async fn spawn(name: &str, addr: SocketAddr) -> std::io::Result<Arc<DemoPod>> {
        let listener = TcpListener::bind(addr).await?;
        let pod = Arc::new(DemoPod {
            name: name.to_string(),
            addr: listener.local_addr()?,
            running: Mutex::new(None),
            served: AtomicU64::new(0),
        });
        pod.serve(listener);
        Ok(pod)
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) {
        let (tx, mut rx) = watch::channel(false);
        let tasks = TaskTracker::new();
        if let Ok(mut slot) = self.running.lock() {
            *slot = Some((tx, tasks.clone()));
        }
        let pod = self.clone();
        let connections = tasks.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let pod = pod.clone();
                        let mut stop = rx.clone();
                        connections.spawn(async move {
                            let svc = service_fn(move |req| {
                                let pod = pod.clone();
                                async move { Ok::<_, Infallible>(pod.answer(req)) }
                            });
                            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                            // Stopping a pod drops its connections too, like a killed process.
                            tokio::select! {
                                _ = conn => {}
                                _ = stop.changed() => {}
                            }
                        });
                    }
                    _ = rx.changed() => break,
                }
            }
        });
    }

    /// Whether the pod is serving.
    pub fn is_running(&self) -> bool {
        self.running.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Stops serving: closes the listener and every open connection, and returns once
    /// they are closed, like a killed process whose sockets are gone.
    pub async fn stop(&self) -> bool {
        let taken = self.running.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some((tx, tasks)) => {
                let _ = tx.send(true);
                tasks.close();
                tasks.wait().await;
                true
            }
            _ => false,
        }
    }

    /// Starts serving again on the same address.
    pub fn start(self: &Arc<Self>) -> std::io::Result<bool> {
        if self.is_running() {
            return Ok(false);
        }
        let std = std::net::TcpListener::bind(self.addr)?;
        std.set_nonblocking(true)?;
        self.serve(TcpListener::from_std(std)?);
        Ok(true)
    }

    fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let h = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let body = json!({
            "pod": self.name,
            "session": h("x-tether-session"),
            "affinity": h("x-tether-affinity"),
            "previous": h("x-tether-previous-endpoint"),
            "path": req.uri().path(),
            "served": n,
        });
        let mut r = admin::json(StatusCode::OK, &body);
        if let Ok(v) = HeaderValue::from_str(&self.name) {
            r.headers_mut().insert("x-pod", v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// The demo pods, also serving the admin controls.
#[derive(Debug)]
pub struct DemoPods {
    /// The pods.
    pub pods: Vec<Arc<DemoPod>>,
}

impl AdminHook for DemoPods {
    fn handle(&self, method: &Method, path: &str) -> Option<HookResponse> {
        let ready =
            |r: Response<Full<Bytes>>| -> Option<HookResponse> { Some(Box::pin(async move { r })) };
        if method == Method::GET && path == "/demo/pods" {
            let pods: Vec<_> = self
                .pods
                .iter()
                .map(|p| json!({"pod": p.name, "address": p.addr.to_string(), "running": p.is_running(), "served": p.served.load(Ordering::Relaxed)}))
                .collect();
            return ready(admin::json(StatusCode::OK, &json!({ "pods": pods })));
        }
        let rest = path.strip_prefix("/demo/pods/")?;
        let (name, action) = rest.split_once('/')?;
        let pod = self.pods.iter().find(|p| p.name == name)?.clone();
        if method != Method::POST {
            return ready(admin::text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"));
        }
        let name = name.to_string();
        ready(match action {
            "stop" => {
                return Some(Box::pin(async move {
                    pod.stop().await;
                    admin::text(StatusCode::OK, format!("{name} stopped\n"))
                }))
            }
            "start" => match pod.start() {
                Ok(_) => admin::text(StatusCode::OK, format!("{name} started\n")),
                Err(e) => admin::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{name} cannot start: {e}\n"),
                ),
            },
            _ => admin::text(StatusCode::NOT_FOUND, "actions: stop, start\n"),
        })
    }
}

/// Starts three pods and the proxy in front of them.
pub async fn start(
    listen: SocketAddr,
    admin: SocketAddr,
) -> Result<(Running, Arc<DemoPods>), Error> {
    let mut pods = Vec::new();
    for name in ["pod-a", "pod-b", "pod-c"] {
        pods.push(DemoPod::spawn(name, SocketAddr::from(([127, 0, 0, 1], 0))).await?);
    }
    let endpoints: Vec<String> = pods
        .iter()
        .map(|p| format!("{{ name = \"{}\", address = \"{}\" }}", p.name, p.addr))
        .collect();
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nadmin = \"{admin}\"\nshutdown_grace = \"5s\"\n\n\
         [[backend]]\nname = \"demo\"\nendpoints = [{}]\ndown_cooloff = \"5s\"\n\n\
         [backend.affinity]\ncookie = \"tether\"\n",
        endpoints.join(", ")
    );
    let config = Config::parse(&text, "<demo>", Path::new("."))?;
    let pods = Arc::new(DemoPods { pods });
    let running = server::start(
        &config,
        server::Options {
            admin_hook: Some(pods.clone() as Arc<dyn AdminHook>),
            pod_name: None,
            config_path: None,
            accept_threads: 0,
        },
    )
    .await?;
    Ok((running, pods))
}

/// The how-to printed when the demo starts.
pub fn instructions(proxy: SocketAddr, admin: SocketAddr, pods: &DemoPods) -> String {
    let names: Vec<_> = pods.pods.iter().map(|p| p.name.as_str()).collect();
    format!(
        "tether demo: proxy http://{proxy}  admin http://{admin}  pods: {}\n\n\
         1. First request: a new session, the response sets the cookie\n\
         \x20  curl -si -c /tmp/tether.jar http://{proxy}/hello\n\
         2. Repeat with the cookie: the same pod every time (affinity: sticky)\n\
         \x20  curl -s -b /tmp/tether.jar http://{proxy}/hello\n\
         3. Stop the pod named in the answer, e.g. pod-a\n\
         \x20  curl -s -X POST http://{admin}/demo/pods/pod-a/stop\n\
         4. Same cookie again: another pod, same session id, affinity: failover,\n\
         \x20  previous: pod-a, and a new cookie that sticks from then on\n\
         \x20  curl -s -b /tmp/tether.jar -c /tmp/tether.jar http://{proxy}/hello\n\
         5. Bring it back: curl -s -X POST http://{admin}/demo/pods/pod-a/start\n\
         \x20  Pods: curl -s http://{admin}/demo/pods   Ready: curl -s http://{admin}/readyz\n\n\
         Ctrl-C stops the demo.",
        names.join(", ")
    )
}
