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
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|h| host.is_some_and(|x| x.eq_ignore_ascii_case(h)))
                    && prefix_matches(&r.prefix, path)
            })
            .map(|r| r.backend)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
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
        assert_eq!(t.find(Some("App.Example.com:8080"), "/api/users"), Some(2));
        assert_eq!(t.find(Some("app.example.com"), "/other"), Some(3));
        assert_eq!(t.find(Some("other"), "/apix"), Some(0));
        assert_eq!(t.find(None, "/api"), Some(1));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let t = RouteTable::new(&[RouteSettings {
            host: Some("a".into()),
            path_prefix: "/x/".into(),
            backend: 0,
        }]);
        assert_eq!(t.find(Some("a"), "/x/1"), Some(0));
        assert_eq!(t.find(Some("a"), "/x"), Some(0));
        assert_eq!(t.find(Some("b"), "/x/1"), None);
        assert_eq!(t.find(None, "/y"), None);
    }
}
