//! The admin listener: liveness, readiness, operator drains, a JSON view of every
//! backend, and extension routes (the demo's pod controls).
//!
//! - `GET /` (dashboard), `GET /healthz`, `GET /readyz`
//! - `POST /admin/backends/{backend}/endpoints/{endpoint}/drain` and `.../undrain`
//!   (`{endpoint}` is the identity, e.g. `shop/cart-0`, `/` included, or percent-encoded)
//! - `GET /debug/backends`, `GET /debug/history` (the last 15 minutes, see
//!   [`crate::history`])
//! - `GET /metrics` (Prometheus / OpenMetrics text)

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::backend::EndpointState;
use crate::history::History;
use crate::proxy::Proxy;

/// The dashboard: one self-contained page (no external assets, works offline in a
/// cluster) that redraws its tables from `/debug/backends` and its charts from
/// `/debug/history`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The answer of an [`AdminHook`]: produced asynchronously, so a hook can wait for what
/// it started (the demo's "stop" returns once the pod is really down).
pub type HookResponse =
    std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>>;

/// Extra admin routes supplied by the embedding program.
pub trait AdminHook: Send + Sync + 'static {
    /// Answers `method path`, or `None` to fall through to 404.
    fn handle(&self, method: &Method, path: &str) -> Option<HookResponse>;
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Handles one admin request; `history` is what the sampler recorded of `proxy`.
pub async fn handle<B>(
    req: &Request<B>,
    proxy: &Proxy,
    history: &History,
    hook: Option<&Arc<dyn AdminHook>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/") => {
            let mut r = Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/readyz") => {
            if proxy.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/debug/backends") => json(StatusCode::OK, &debug_backends(proxy)),
        (&Method::GET, "/debug/history") => json(StatusCode::OK, &history.to_json()),
        (&Method::GET, "/metrics") => {
            let counts = crate::metrics::ProxyCounts {
                route_answers: proxy.route_answers(),
                reloads_ok: proxy.reloads(true),
                reloads_failed: proxy.reloads(false),
                send_timeouts: proxy
                    .send_timeouts()
                    .load(std::sync::atomic::Ordering::Relaxed),
            };
            let text_body = crate::metrics::render(&proxy.state().backends, counts);
            let mut r = text(StatusCode::OK, text_body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (method, p) if p.starts_with("/admin/backends/") => drain(method, p, proxy),
        _ => match hook.and_then(|h| h.handle(req.method(), path)) {
            Some(answer) => answer.await,
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// `POST /admin/backends/{backend}/endpoints/{endpoint}/drain|undrain`.
fn drain(method: &Method, path: &str, proxy: &Proxy) -> Response<Full<Bytes>> {
    let parsed = path.strip_prefix("/admin/backends/").and_then(|rest| {
        let (backend, rest) = rest.split_once("/endpoints/")?;
        let (endpoint, action) = rest.rsplit_once('/')?;
        Some((backend, percent_decode(endpoint), action))
    });
    let Some((backend, endpoint, action)) = parsed else {
        return text(
            StatusCode::NOT_FOUND,
            "use /admin/backends/{backend}/endpoints/{endpoint}/drain or /undrain\n",
        );
    };
    let drained = match action {
        "drain" => true,
        "undrain" => false,
        _ => return text(StatusCode::NOT_FOUND, "actions: drain, undrain\n"),
    };
    if method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
    }
    let Some(b) = proxy.backend(backend) else {
        return text(StatusCode::NOT_FOUND, format!("no backend {backend:?}\n"));
    };
    if !b.set_drained(&endpoint, drained) {
        return text(
            StatusCode::NOT_FOUND,
            format!("backend {backend:?} has no endpoint {endpoint:?}\n"),
        );
    }
    tracing::info!(backend, endpoint = %endpoint, drained, "operator drain changed");
    text(StatusCode::OK, format!("{endpoint} {action}ed\n"))
}

/// Per backend and endpoint: identity, address, state, weight, live sessions, ring share,
/// request and error counts, the last error.
pub fn debug_backends(proxy: &Proxy) -> serde_json::Value {
    let state = proxy.state();
    let backends: Vec<_> = state
        .backends
        .iter()
        .map(|b| {
            let s = b.snapshot();
            let now = b.clock().now();
            let slots = s.ring.slots();
            let total = s.ring.len().max(1) as f64;
            let endpoints: Vec<_> = s
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let share = slots.get(&(i as u32)).copied().unwrap_or(0) as f64 / total;
                    serde_json::json!({
                        "identity": &*e.identity,
                        "address": e.address.to_string(),
                        "state": match e.state {
                            EndpointState::Ready => "ready",
                            EndpointState::Draining => "draining",
                        },
                        "admin_drained": e.admin_drained,
                        "draining_since": e.draining_since,
                        "down": e.health.is_down(now.instant),
                        "weight": e.weight,
                        "live_sessions": e.sessions.live(now.unix),
                        "ring_share": (share * 10_000.0).round() / 10_000.0,
                        "idle_connections": e.pool.idle(),
                        "requests": e.stats.total(),
                        "connect_errors": e.stats.connect_errors(),
                        "last_error": e.stats.last_error(),
                    })
                })
                .collect();
            serde_json::json!({
                "name": b.name(),
                "generation": s.generation,
                "synced": s.is_synced(),
                "live_sessions": s.sessions.live(now.unix),
                "affinity": b.stats.affinity_counts().into_iter().map(|(k, v)| (k, v.into())).collect::<serde_json::Map<String, serde_json::Value>>(),
                "endpoints": endpoints,
            })
        })
        .collect();
    serde_json::json!({ "backends": backends })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || std::str::from_utf8(b.get(i + 1..i + 3)?).ok();
        match (b[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
