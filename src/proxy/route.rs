//! Request routing: the one place a request's route is decided, for HTTP/1 and HTTP/2
//! alike. A route matches a host (optional: exact, or a wildcard `*.example.com` matching
//! every host under `example.com`, as Gateway API's hostnames do), a path (a prefix matched by whole
//! segments, or the exact path), and optionally a method, header values and query
//! parameters ([`RouteMatches`]); of several routes that match, the one Gateway API's
//! precedence puts first wins ([`RouteTable::new`]). Both codecs hand the router a view
//! of the request ([`Asked`]) rather than values it picked out, so they cannot differ
//! on what a route reads.

use std::sync::Arc;

use http::{HeaderName, Method};

use crate::config::{RouteFilters, RouteMatches, RouteSettings};
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
    backend: usize,
    /// What the route changes; `None` when nothing.
    filters: Option<Arc<RouteFilters>>,
}

/// The route a request takes.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'t> {
    /// Index of its backend.
    pub backend: usize,
    /// What it changes on the way, if anything.
    pub filters: Option<&'t Arc<RouteFilters>>,
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
                backend: r.backend,
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
    /// matches `/api` and `/api/x`, not `/apix`.
    pub fn find(&self, host: Option<&[u8]>, path: &str) -> Option<usize> {
        self.pick(host, path, |_| false).map(|r| r.backend)
    }

    /// The backend index for a request, by everything its routes match.
    pub fn find_for<R: Asked + ?Sized>(&self, req: &R) -> Option<usize> {
        self.hit(req).map(|h| h.backend)
    }

    /// The route a request takes, by everything its routes match.
    pub fn hit<R: Asked + ?Sized>(&self, req: &R) -> Option<Hit<'_>> {
        self.pick(req.host(), req.path(), |m| m.admits(req))
            .map(|r| Hit {
                backend: r.backend,
                filters: r.filters.as_ref(),
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
        // `str` (that validation was ~130 instructions per request).
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
            backend: b,
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
            backend: b,
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
            backend: b,
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
                backend: 0,
                matches: RouteMatches::default(),
                filters: Default::default(),
            },
            RouteSettings {
                host: Some("a".into()),
                path_prefix: "/".into(),
                backend: 1,
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
            backend: 0,
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
            backend: b,
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
