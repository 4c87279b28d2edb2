//! Request routing: the one place a request's route is decided, for HTTP/1 and HTTP/2
//! alike. A route matches a host (optional: exact, or a wildcard `*.example.com` matching
//! every host under `example.com`, as Gateway API's hostnames do), a path (a prefix matched by whole
//! segments, or the exact path), and optionally a method, header values and query
//! parameters ([`RouteMatches`]); of several routes that match, the one Gateway API's
//! precedence puts first wins ([`RouteTable::new`]). Both codecs hand the router a view
//! of the request ([`Asked`]) rather than values it picked out, so they cannot differ
//! on what a route reads.
//!
//! A route either takes a request to a backend or answers it itself ([`Hit::Answer`]:
//! a redirect, or a status such as 500 for an HTTPRoute rule without a valid backend);
//! [`Local::new`] builds that answer, once for both codecs, which write it the way they
//! write tether's own statuses.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, StatusCode};

use crate::config::{Answer, Redirect, RouteFilters, RouteMatches, RouteSettings, RouteTo};
use crate::http::headers::Fields;
use crate::http::wire::RequestHead;

/// What the router reads of a request. The HTTP/1 codec's [`RequestHead`] and hyper's
/// `http::Request` implement it.
pub trait Asked {
    /// The request's header fields.
    type Fields: Fields + ?Sized;
    /// The host the request is for (the authority, else `Host`), with any port.
    fn host(&self) -> Option<&[u8]>;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// The method.
    fn method(&self) -> &str;
    /// The query (after `?`), if any. Asked only by routes with query matches.
    fn query(&self) -> Option<&str>;
    /// The header fields.
    fn fields(&self) -> &Self::Fields;
    /// The protocol version, for the access log.
    fn version(&self) -> http::Version;
}

impl<'h> Asked for RequestHead<'h> {
    type Fields = RequestHead<'h>;
    fn host(&self) -> Option<&[u8]> {
        Some(self.host)
    }
    fn path(&self) -> &str {
        RequestHead::path(self)
    }
    fn method(&self) -> &str {
        self.method
    }
    fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
    fn fields(&self) -> &RequestHead<'h> {
        self
    }
    fn version(&self) -> http::Version {
        match self.http10 {
            true => http::Version::HTTP_10,
            false => http::Version::HTTP_11,
        }
    }
}

impl<B> Asked for http::Request<B> {
    type Fields = http::HeaderMap;
    fn host(&self) -> Option<&[u8]> {
        self.headers()
            .get(http::header::HOST)
            .map(http::HeaderValue::as_bytes)
    }
    fn path(&self) -> &str {
        self.uri().path()
    }
    fn method(&self) -> &str {
        self.method().as_str()
    }
    fn query(&self) -> Option<&str> {
        self.uri().query()
    }
    fn fields(&self) -> &http::HeaderMap {
        self.headers()
    }
    fn version(&self) -> http::Version {
        self.version()
    }
}

/// One compiled route.
#[derive(Debug, Clone)]
struct Route {
    /// The exact host, or for a wildcard route the suffix it matches (`.example.com`
    /// for `*.example.com`).
    host: Option<Box<str>>,
    /// `host` is a wildcard's suffix.
    wildcard: bool,
    prefix: Box<str>,
    /// `prefix` is the whole path.
    exact: bool,
    /// Conditions beyond host and path; `None` for most routes, which then cost what a
    /// host and prefix comparison costs.
    more: Option<Box<More>>,
    /// Its backend's index, or the answer it gives itself.
    to: Action,
    /// What the route changes; `None` when nothing.
    filters: Option<Arc<RouteFilters>>,
}

/// What a compiled route does: [`RouteTo`] with the answer behind a pointer, so a
/// route stays a few words and the table's scan touches few cache lines.
#[derive(Debug, Clone)]
enum Action {
    Backend(usize),
    Answer(Arc<Answer>),
}

/// The route a request takes.
#[derive(Debug, Clone, Copy)]
pub enum Hit<'t> {
    /// To a backend.
    Backend {
        /// Index of its backend.
        backend: usize,
        /// What it changes on the way, if anything.
        filters: Option<&'t Arc<RouteFilters>>,
    },
    /// Nowhere: the route answers itself ([`Local::new`]).
    Answer(&'t Answer),
}

/// A route's method, header and query conditions.
#[derive(Debug, Clone)]
struct More {
    method: Option<Method>,
    headers: Box<[(HeaderName, Box<[u8]>)]>,
    query: Box<[(Box<str>, Box<str>)]>,
}

impl More {
    fn new(m: &RouteMatches) -> Option<Box<More>> {
        (!m.is_path_only()).then(|| {
            Box::new(More {
                method: m.method.clone(),
                headers: m
                    .headers
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_bytes().into()))
                    .collect(),
                query: m
                    .query
                    .iter()
                    .map(|(n, v)| (n.as_str().into(), v.as_str().into()))
                    .collect(),
            })
        })
    }

    /// Whether the request has the method, header values and query parameters.
    fn admits<R: Asked + ?Sized>(&self, req: &R) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.as_str() == req.method())
            && self
                .headers
                .iter()
                .all(|(n, v)| req.fields().first(n) == Some(&**v))
            && (self.query.is_empty() || {
                let q = req.query().unwrap_or("");
                self.query
                    .iter()
                    .all(|(n, v)| query_param(q, n) == Some(&**v))
            })
    }

    /// The counts Gateway API precedence compares after the path: method, headers,
    /// query parameters.
    fn weight(more: &Option<Box<More>>) -> (bool, usize, usize) {
        more.as_ref().map_or((false, 0, 0), |m| {
            (m.method.is_some(), m.headers.len(), m.query.len())
        })
    }
}

/// The first value of query parameter `name` in `query` (`a=1&b=2`), as written (not
/// percent-decoded); a parameter without `=` has the empty value.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Routes ordered so the first match is the best one.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Box<[Route]>,
}

impl RouteTable {
    /// Compiles routes in the order of Gateway API's precedence: first the host (the
    /// HTTPRoute `hostnames` doc: an exact host, the longer first, before a wildcard one,
    /// the longer first, before a host-less one), so a route without a host can never
    /// take paths of a host another route names; then the matches (the HTTPRouteRule
    /// `matches` doc): an exact path; the longest path prefix; a method match; the most header matches; the most
    /// query parameter matches. Ties keep the order given, which is the file's, and for
    /// Kubernetes objects the oldest first, then by namespace/name, then rule and match
    /// order (the controllers list them so).
    pub fn new(routes: &[RouteSettings]) -> Self {
        let mut compiled: Vec<Route> = routes
            .iter()
            .map(|r| Route {
                host: r
                    .host
                    .as_deref()
                    .map(|h| h.strip_prefix('*').unwrap_or(h).into()),
                wildcard: r.host.as_deref().is_some_and(|h| h.starts_with("*.")),
                prefix: r.path_prefix.as_str().into(),
                exact: r.matches.exact,
                more: More::new(&r.matches),
                to: match &r.to {
                    RouteTo::Backend(b) => Action::Backend(*b),
                    RouteTo::Answer(a) => Action::Answer(Arc::new(a.clone())),
                },
                filters: (!r.filters.is_empty()).then(|| Arc::new(r.filters.clone())),
            })
            .collect();
        // A stable sort: ties keep the given order.
        compiled.sort_by(|a, b| {
            host_rank(b)
                .cmp(&host_rank(a))
                .then(b.exact.cmp(&a.exact))
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(More::weight(&b.more).cmp(&More::weight(&a.more)))
        });
        RouteTable {
            routes: compiled.into_boxed_slice(),
        }
    }

    /// The backend index for a request with no method, header or query to match: routes
    /// with such conditions never match. `host` may carry a port; it is compared
    /// case-insensitively without it. Prefixes match whole path segments: `/api`
    /// matches `/api` and `/api/x`, not `/apix`. `None` too when the route that matches
    /// answers itself.
    pub fn find(&self, host: Option<&[u8]>, path: &str) -> Option<usize> {
        self.pick(host, path, |_| false).and_then(|r| match r.to {
            Action::Backend(b) => Some(b),
            Action::Answer(_) => None,
        })
    }

    /// The backend index for a request, by everything its routes match (`None` too when
    /// the route answers itself).
    pub fn find_for<R: Asked + ?Sized>(&self, req: &R) -> Option<usize> {
        match self.hit(req)? {
            Hit::Backend { backend, .. } => Some(backend),
            Hit::Answer(_) => None,
        }
    }

    /// The route a request takes, by everything its routes match.
    pub fn hit<R: Asked + ?Sized>(&self, req: &R) -> Option<Hit<'_>> {
        self.pick(req.host(), req.path(), |m| m.admits(req))
            .map(|r| match &r.to {
                Action::Backend(b) => Hit::Backend {
                    backend: *b,
                    filters: r.filters.as_ref(),
                },
                Action::Answer(a) => Hit::Answer(a),
            })
    }

    /// The first route whose host and path match and whose other conditions `admits`.
    #[inline]
    fn pick(
        &self,
        host: Option<&[u8]>,
        path: &str,
        admits: impl Fn(&More) -> bool,
    ) -> Option<&Route> {
        // On bytes: the HTTP/1 codec's Host value is checked as text but never made a
        // `str` (a second validation on every request).
        let host = host.map(strip_port);
        self.routes.iter().find(|r| {
            r.host.as_deref().is_none_or(|h| {
                host.is_some_and(|x| match r.wildcard {
                    false => x.eq_ignore_ascii_case(h.as_bytes()),
                    // At least one label before the suffix: `*.example.com` is not
                    // `example.com` (the suffix starts with its dot).
                    true => {
                        x.len() > h.len()
                            && x[x.len() - h.len()..].eq_ignore_ascii_case(h.as_bytes())
                    }
                })
            }) && if r.exact {
                *r.prefix == *path
            } else {
                prefix_matches(&r.prefix, path)
            } && r.more.as_deref().is_none_or(&admits)
        })
    }
}

// === impl Local ===

/// The answer a route gives itself, built from its [`Answer`] and the request: what
/// both codecs write, with a short text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The status.
    pub status: StatusCode,
    /// A redirect's `Location`.
    pub location: Option<HeaderValue>,
}

impl Local {
    /// The answer `answer` gives `req`, which came over TLS when `secure`.
    pub fn new<R: Asked + ?Sized>(answer: &Answer, req: &R, secure: bool) -> Local {
        match answer {
            Answer::Status(s) => Local {
                status: StatusCode::from_u16(*s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                location: None,
            },
            Answer::Redirect(r) => {
                let location = location(r, req, secure);
                Local {
                    status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND),
                    // Every part is a validated host, a port or a request target's
                    // path and query, all valid field bytes (RFC 9110 §5.5).
                    location: Some(
                        HeaderValue::from_str(&location)
                            .unwrap_or_else(|_| HeaderValue::from_static("/")),
                    ),
                }
            }
        }
    }

    /// The short text of its body.
    pub fn text(&self) -> &'static str {
        match self.status {
            s if s.is_redirection() => "redirected",
            StatusCode::INTERNAL_SERVER_ERROR => "no valid backend",
            s => s.canonical_reason().unwrap_or("answered by the route"),
        }
    }
}

/// A redirect's `Location` for `req` (Gateway API's `HTTPRequestRedirectFilter`): the
/// request's scheme, host, port and path, each unless the redirect sets it, and its
/// query. When the redirect changes the scheme and sets no port, the port is that
/// scheme's well-known one; a scheme's well-known port is never written (80 for
/// `http`, 443 for `https`). Without a host from either, the `Location` is relative
/// (RFC 9110 §10.2.2 allows it).
pub fn location<R: Asked + ?Sized>(r: &Redirect, req: &R, secure: bool) -> String {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if secure { "https" } else { "http" });
    let (host, port) = split_host(req.host().unwrap_or(b""));
    // The Host field is validated text (RFC 9112 §3.2) before any route is looked up.
    let host = r
        .hostname
        .as_deref()
        .unwrap_or_else(|| std::str::from_utf8(host).unwrap_or(""));
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => port,
    };
    let default = if scheme == "https" { 443 } else { 80 };
    let path = req.path();
    let path = r
        .path
        .as_ref()
        .map_or(std::borrow::Cow::Borrowed(path), |p| p.apply(path).into());
    let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
    if !host.is_empty() {
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        if let Some(p) = port.filter(|p| *p != default) {
            out.push(':');
            out.push_str(&p.to_string());
        }
    }
    if host.is_empty() && path.starts_with("//") {
        // Relative, a path opening with `//` would name another host (a scheme-relative
        // reference, RFC 3986 §4.2): one slash says the same path here.
        out.push('/');
        out.push_str(path.trim_start_matches('/'));
    } else {
        out.push_str(&path);
    }
    if let Some(q) = req.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A `Host` value's host (an IPv6 literal keeps its brackets) and port, if it has a
/// valid one.
fn split_host(host: &[u8]) -> (&[u8], Option<u16>) {
    let name = strip_port(host);
    let port = host
        .get(name.len() + 1..)
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse().ok());
    (name, port)
}

/// How specific a route's host is: exact before wildcard before none, the longer first.
fn host_rank(r: &Route) -> (u8, usize) {
    match (&r.host, r.wildcard) {
        (None, _) => (0, 0),
        (Some(h), true) => (1, h.len()),
        (Some(h), false) => (2, h.len()),
    }
}

fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        // [v6]:port
        return memchr::memchr(b']', host).map_or(host, |i| &host[..=i]);
    }
    memchr::memrchr(b':', host).map_or(host, |i| &host[..i])
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let p = prefix.trim_end_matches('/');
    path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let r = |host: Option<&str>, p: &str, b| RouteSettings {
            host: host.map(Into::into),
            path_prefix: p.into(),
            to: RouteTo::Backend(b),
            matches: RouteMatches::default(),
            filters: Default::default(),
        };
        RouteTable::new(&[
            r(None, "/", 0),
            r(None, "/api", 1),
            r(Some("app.example.com"), "/api", 2),
            r(Some("app.example.com"), "/", 3),
        ])
    }

    #[test]
    fn a_wildcard_host_matches_every_host_under_it_after_exact_hosts() {
        let r = |host: Option<&str>, b| RouteSettings {
            host: host.map(Into::into),
            path_prefix: "/".into(),
            to: RouteTo::Backend(b),
            matches: RouteMatches::default(),
            filters: Default::default(),
        };
        let t = RouteTable::new(&[
            r(None, 0),
            r(Some("*.example.com"), 1),
            r(Some("*.a.example.com"), 2),
            r(Some("x.a.example.com"), 3),
        ]);
        let find = |h: &str| t.find(Some(h.as_bytes()), "/");
        assert_eq!(find("b.example.com"), Some(1));
        assert_eq!(find("B.Example.COM:8443"), Some(1));
        assert_eq!(find("deep.b.example.com"), Some(1));
        assert_eq!(
            find("y.a.example.com"),
            Some(2),
            "the longer wildcard first"
        );
        assert_eq!(find("x.a.example.com"), Some(3), "an exact host first");
        assert_eq!(find("example.com"), Some(0), "not the bare suffix");
        assert_eq!(find("badexample.com"), Some(0), "whole labels only");
        assert_eq!(t.find(None, "/"), Some(0));
    }

    #[test]
    fn a_route_without_host_never_takes_a_path_of_a_host_another_route_names() {
        let r = |host: Option<&str>, p: &str, b| RouteSettings {
            host: host.map(Into::into),
            path_prefix: p.into(),
            to: RouteTo::Backend(b),
            matches: RouteMatches::default(),
            filters: Default::default(),
        };
        let t = RouteTable::new(&[
            r(Some("shop.example.com"), "/api", 0),
            r(None, "/api/v1", 1),
            r(Some("*.example.com"), "/api/v1/admin", 2),
        ]);
        let find = |h: &str, p: &str| t.find(Some(h.as_bytes()), p);
        assert_eq!(find("shop.example.com", "/api/v1/admin"), Some(0));
        assert_eq!(find("blog.example.com", "/api/v1/admin"), Some(2));
        assert_eq!(find("blog.example.com", "/api/v1/x"), Some(1));
        assert_eq!(find("other.test", "/api/v1/x"), Some(1));
    }

    #[test]
    fn longest_prefix_and_exact_host_win() {
        let t = table();
        assert_eq!(t.find(None, "/api/users"), Some(1));
        assert_eq!(
            t.find(Some("App.Example.com:8080".as_bytes()), "/api/users"),
            Some(2)
        );
        assert_eq!(
            t.find(Some("app.example.com".as_bytes()), "/other"),
            Some(3)
        );
        assert_eq!(t.find(Some("other".as_bytes()), "/apix"), Some(0));
        assert_eq!(t.find(None, "/api"), Some(1));
    }

    #[test]
    fn hosts_match_without_their_port_including_ipv6_literals() {
        let t = RouteTable::new(&[
            RouteSettings {
                host: Some("[::1]".into()),
                path_prefix: "/".into(),
                to: RouteTo::Backend(0),
                matches: RouteMatches::default(),
                filters: Default::default(),
            },
            RouteSettings {
                host: Some("a".into()),
                path_prefix: "/".into(),
                to: RouteTo::Backend(1),
                matches: RouteMatches::default(),
                filters: Default::default(),
            },
        ]);
        assert_eq!(t.find(Some(b"[::1]:8080".as_slice()), "/"), Some(0));
        assert_eq!(t.find(Some(b"[::1]".as_slice()), "/"), Some(0));
        assert_eq!(t.find(Some(b"A:80".as_slice()), "/"), Some(1));
        assert_eq!(t.find(Some(b"a".as_slice()), "/"), Some(1));
        assert_eq!(t.find(Some(b"[::1".as_slice()), "/"), None);
        assert_eq!(t.find(Some(b"b:80".as_slice()), "/"), None);
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let t = RouteTable::new(&[RouteSettings {
            host: Some("a".into()),
            path_prefix: "/x/".into(),
            to: RouteTo::Backend(0),
            matches: RouteMatches::default(),
            filters: Default::default(),
        }]);
        assert_eq!(t.find(Some("a".as_bytes()), "/x/1"), Some(0));
        assert_eq!(t.find(Some("a".as_bytes()), "/x"), Some(0));
        assert_eq!(t.find(Some("b".as_bytes()), "/x/1"), None);
        assert_eq!(t.find(None, "/y"), None);
    }

    fn matching(path: &str, b: usize, m: RouteMatches) -> RouteSettings {
        RouteSettings {
            host: None,
            path_prefix: path.into(),
            to: RouteTo::Backend(b),
            matches: m,
            filters: Default::default(),
        }
    }

    fn get(method: &str, target: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut r = http::Request::builder().method(method).uri(target);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    fn header(n: &str, v: &str) -> (HeaderName, String) {
        (HeaderName::from_bytes(n.as_bytes()).unwrap(), v.into())
    }

    fn query(n: &str, v: &str) -> (String, String) {
        (n.into(), v.into())
    }

    #[test]
    fn precedence_is_exact_path_then_longest_prefix_then_method_headers_and_query() {
        let exact = RouteMatches {
            exact: true,
            ..Default::default()
        };
        let method = RouteMatches {
            method: Some(Method::POST),
            ..Default::default()
        };
        let one_header = RouteMatches {
            headers: vec![header("x-env", "canary")],
            ..Default::default()
        };
        let two_headers = RouteMatches {
            headers: vec![header("x-env", "canary"), header("x-team", "a")],
            ..Default::default()
        };
        let one_query = RouteMatches {
            query: vec![query("v", "2")],
            ..Default::default()
        };
        // Listed worst first: the table orders them, not the list.
        let t = RouteTable::new(&[
            matching("/api", 0, RouteMatches::default()),
            matching("/api", 1, one_query.clone()),
            matching("/api", 2, one_header.clone()),
            matching("/api", 3, two_headers),
            matching("/api", 4, method),
            matching("/api/v1", 5, RouteMatches::default()),
            matching("/api/v1", 6, exact),
        ]);
        let find = |m: &str, target: &str, h: &[(&str, &str)]| t.find_for(&get(m, target, h));
        let all = [("x-env", "canary"), ("x-team", "a")];
        // An exact path beats every prefix, however many other conditions they have.
        assert_eq!(find("POST", "/api/v1?v=2", &all), Some(6));
        // The longest prefix beats a method match.
        assert_eq!(find("POST", "/api/v1/x?v=2", &all), Some(5));
        // A method match beats header matches.
        assert_eq!(find("POST", "/api/x?v=2", &all), Some(4));
        // More header matches beat fewer, and a header match beats a query match.
        assert_eq!(find("GET", "/api/x?v=2", &all), Some(3));
        assert_eq!(find("GET", "/api/x?v=2", &all[..1]), Some(2));
        assert_eq!(find("GET", "/api/x?v=2", &[]), Some(1));
        assert_eq!(find("GET", "/api/x?v=3", &[]), Some(0));
        // Equal routes: the first listed (the older HTTPRoute, the earlier rule) wins.
        let t = RouteTable::new(&[
            matching("/", 7, one_header.clone()),
            matching("/", 8, one_header),
        ]);
        assert_eq!(t.find_for(&get("GET", "/", &all)), Some(7));
    }

    #[test]
    fn headers_match_by_name_in_any_case_and_by_exact_value() {
        let t = RouteTable::new(&[
            matching("/", 0, RouteMatches::default()),
            matching(
                "/",
                1,
                RouteMatches {
                    headers: vec![header("x-env", "canary")],
                    ..Default::default()
                },
            ),
        ]);
        assert_eq!(
            t.find_for(&get("GET", "/", &[("X-Env", "canary")])),
            Some(1)
        );
        assert_eq!(
            t.find_for(&get("GET", "/", &[("x-env", "Canary")])),
            Some(0)
        );
        assert_eq!(t.find_for(&get("GET", "/", &[])), Some(0));
        // A path-only lookup never takes a route with other conditions.
        assert_eq!(t.find(None, "/"), Some(0));
    }

    #[test]
    fn query_params_match_by_exact_name_and_first_value() {
        let t = RouteTable::new(&[matching(
            "/",
            0,
            RouteMatches {
                query: vec![query("v", "2"), query("flag", "")],
                ..Default::default()
            },
        )]);
        let find = |target: &str| t.find_for(&get("GET", target, &[]));
        assert_eq!(find("/?flag&v=2"), Some(0));
        assert_eq!(find("/?v=2&flag="), Some(0));
        assert_eq!(find("/?v=1&v=2&flag"), None, "the first value counts");
        assert_eq!(find("/?V=2&flag"), None, "names are case-sensitive");
        assert_eq!(find("/"), None);
    }

    #[test]
    fn an_exact_path_matches_only_itself() {
        let t = RouteTable::new(&[matching(
            "/api",
            0,
            RouteMatches {
                exact: true,
                ..Default::default()
            },
        )]);
        assert_eq!(t.find(None, "/api"), Some(0));
        assert_eq!(t.find(None, "/api/"), None);
        assert_eq!(t.find(None, "/api/x"), None);
    }

    fn redirect(scheme: Option<&str>, hostname: Option<&str>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme: scheme.map(Into::into),
            hostname: hostname.map(Into::into),
            port,
            path: None,
            status: 302,
        }
    }

    #[test]
    fn a_redirect_location_keeps_what_it_does_not_set_and_the_query() {
        let req = |host: &str, target: &str| {
            http::Request::builder()
                .uri(target)
                .header("host", host)
                .body(())
                .unwrap()
        };
        let at = |r: &Redirect, host: &str, target: &str, secure: bool| {
            location(r, &req(host, target), secure)
        };
        let same = redirect(None, None, None);
        assert_eq!(at(&same, "a.test", "/x?q=1", false), "http://a.test/x?q=1");
        assert_eq!(
            at(&same, "a.test:8080", "/x", false),
            "http://a.test:8080/x"
        );
        assert_eq!(at(&same, "a.test:443", "/x", true), "https://a.test/x");
        // A new scheme without a port: its well-known port, which is never written.
        let https = redirect(Some("https"), None, None);
        assert_eq!(
            at(&https, "a.test:8080", "/x?q", false),
            "https://a.test/x?q"
        );
        assert_eq!(at(&https, "[::1]:8080", "/", false), "https://[::1]/");
        let port = redirect(Some("https"), Some("b.test"), Some(8443));
        assert_eq!(at(&port, "a.test", "/x", false), "https://b.test:8443/x");
        let http80 = redirect(Some("http"), None, Some(80));
        assert_eq!(at(&http80, "a.test:8080", "/", true), "http://a.test/");
        let full = Redirect {
            path: Some(crate::config::PathRewrite::Full("/new".into())),
            ..redirect(None, Some("b.test"), None)
        };
        assert_eq!(
            at(&full, "a.test:81", "/old/x?y=2", false),
            "http://b.test:81/new?y=2"
        );
        let prefix = Redirect {
            path: Some(crate::config::PathRewrite::Prefix {
                from: "/old".into(),
                to: "/new".into(),
            }),
            ..redirect(None, None, None)
        };
        assert_eq!(
            at(&prefix, "a.test", "/old/x/y", false),
            "http://a.test/new/x/y"
        );
        // No host anywhere: a relative Location.
        let r = http::Request::builder().uri("/x?q").body(()).unwrap();
        assert_eq!(location(&same, &r, false), "/x?q");
        // ...and never one that names another host.
        let r = http::Request::builder()
            .uri("//evil.example/x")
            .body(())
            .unwrap();
        assert_eq!(location(&same, &r, false), "/evil.example/x");
    }

    #[test]
    fn a_route_that_answers_itself_hits_with_its_answer_and_no_backend() {
        let mut r = matching("/old", 0, RouteMatches::default());
        r.to = RouteTo::Answer(Answer::Redirect(redirect(Some("https"), None, None)));
        let t = RouteTable::new(&[matching("/", 1, RouteMatches::default()), r]);
        let req = get("GET", "http://a.test/old/x?q=1", &[("host", "a.test")]);
        let Some(Hit::Answer(a)) = t.hit(&req) else {
            panic!("the redirect route answers");
        };
        let local = Local::new(a, &req, false);
        assert_eq!(local.status, StatusCode::FOUND);
        assert_eq!(local.location.unwrap(), "https://a.test/old/x?q=1");
        assert_eq!(t.find_for(&req), None);
        assert_eq!(t.find(None, "/other"), Some(1));
        let fail = Local::new(&Answer::Status(500), &req, false);
        assert_eq!(
            (fail.status, fail.location.is_none(), fail.text()),
            (StatusCode::INTERNAL_SERVER_ERROR, true, "no valid backend")
        );
    }

    #[test]
    fn both_codecs_views_route_alike() {
        let t = RouteTable::new(&[
            matching("/", 0, RouteMatches::default()),
            matching(
                "/",
                1,
                RouteMatches {
                    method: Some(Method::DELETE),
                    headers: vec![header("x-env", "canary")],
                    query: vec![query("v", "2")],
                    ..Default::default()
                },
            ),
        ]);
        let raw = b"DELETE /a?v=2 HTTP/1.1\r\nHost: x\r\nX-ENV: canary\r\n\r\n";
        let mut fields = crate::http::wire::no_fields();
        let crate::http::wire::Parsed::Fast(head) =
            crate::http::wire::parse_request(raw, &mut fields, 1024)
        else {
            panic!("parses");
        };
        assert_eq!(t.find_for(&head), Some(1));
        assert_eq!(
            t.find_for(&get("DELETE", "http://x/a?v=2", &[("x-env", "canary")])),
            Some(1)
        );
    }
}
