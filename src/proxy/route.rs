//! Request routing: exact host (optional) and longest path prefix.

use crate::config::RouteSettings;

/// One compiled route.
#[derive(Debug, Clone)]
struct Route {
    host: Option<Box<str>>,
    prefix: Box<str>,
    backend: usize,
}

/// Routes ordered so the first match is the best one.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Box<[Route]>,
}

impl RouteTable {
    /// Compiles routes: longest prefix first; at equal length a host-specific route
    /// before a host-less one; otherwise file order.
    pub fn new(routes: &[RouteSettings]) -> Self {
        let mut compiled: Vec<Route> = routes
            .iter()
            .map(|r| Route {
                host: r.host.as_deref().map(Into::into),
                prefix: r.path_prefix.as_str().into(),
                backend: r.backend,
            })
            .collect();
        compiled.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        RouteTable {
            routes: compiled.into_boxed_slice(),
        }
    }

    /// The backend index for a request. `host` may carry a port; it is compared
    /// case-insensitively without it. Prefixes match whole path segments: `/api` matches
    /// `/api` and `/api/x`, not `/apix`.
    pub fn find(&self, host: Option<&[u8]>, path: &str) -> Option<usize> {
        // On bytes: the HTTP/1 codec's Host value is checked as text but never made a
        // `str` (that validation was ~130 instructions per request).
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|h| host.is_some_and(|x| x.eq_ignore_ascii_case(h.as_bytes())))
                    && prefix_matches(&r.prefix, path)
            })
            .map(|r| r.backend)
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
        };
        RouteTable::new(&[
            r(None, "/", 0),
            r(None, "/api", 1),
            r(Some("app.example.com"), "/api", 2),
            r(Some("app.example.com"), "/", 3),
        ])
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
            },
            RouteSettings {
                host: Some("a".into()),
                path_prefix: "/".into(),
                backend: 1,
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
        }]);
        assert_eq!(t.find(Some("a".as_bytes()), "/x/1"), Some(0));
        assert_eq!(t.find(Some("a".as_bytes()), "/x"), Some(0));
        assert_eq!(t.find(Some("b".as_bytes()), "/x/1"), None);
        assert_eq!(t.find(None, "/y"), None);
    }
}
