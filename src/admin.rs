//! The admin listener: liveness, readiness, and extension routes (the demo's pod
//! controls; later metrics and debug pages).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::proxy::Proxy;

/// Extra admin routes supplied by the embedding program.
pub trait AdminHook: Send + Sync + 'static {
    /// Answers `method path`, or `None` to fall through to 404.
    fn handle(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>>;
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

/// Handles one admin request.
pub fn handle<B>(
    req: &Request<B>,
    proxy: &Proxy,
    hook: Option<&Arc<dyn AdminHook>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if proxy.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => hook
            .and_then(|h| h.handle(req.method(), path))
            .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n")),
    }
}
