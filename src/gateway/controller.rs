//! Gateway API mode: the live controller for GatewayClasses, Gateways and HTTPRoutes.
//!
//! watchers → reflector stores → debounce → compile → publish, as Ingress mode does.
//! Three kube-runtime watchers (GatewayClasses, Gateways, HTTPRoutes, cluster-wide) feed
//! reflector stores ([`crate::discovery::objects`], shared with Ingress mode). Once all three have listed, every burst of changes (collected for
//! `debounce`) compiles the HTTPRoutes attached to Gateways of tether's classes into
//! [`Compiled`] backends and routes, published on a `watch` channel only when they
//! differ. The server merges them with the config file's (and Ingress mode's) and
//! applies the result through its reload path, so the routing snapshot is built the way
//! a file's is, and a backend that keeps its name keeps its endpoints and sessions.
//!
//! What attaches: a GatewayClass is tether's when its `controllerName` is
//! `[kubernetes.gateway] controller_name`; a Gateway is when its class is. An HTTPRoute
//! attaches to the `HTTP` listeners of such a Gateway that its `parentRefs` name (all of
//! them, or the one `sectionName` / `port` picks) and whose `allowedRoutes.namespaces`
//! admit it (`Same`, the default, or `All`; `Selector` is not supported yet). Its hosts
//! are the listener's hostname intersected with the route's `hostnames`.
//!
//! Backend names: `namespace.route.service.port`, independent of rule order and
//! matches, so a route edit that keeps a rule's Service keeps its sessions. A second
//! rule of the same route to the same Service port with other `sessionPersistence`
//! gets its own backend, `namespace.route.rule.service.port` (`rule` is the rule's
//! `name`, else `rule-N`).
//!
//! Errors only log: watch errors are retried with backoff, and a route that does not
//! compile is left out (with a warning) while the others route.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::api::{
    Gateway, GatewayClass, HTTPBackendRef, HTTPHeaderFilter, HTTPPathMatch, HTTPRoute,
    HTTPRouteFilter, HTTPRouteMatch, HTTPRouteRule, HTTPURLRewriteFilter, LifetimeType, Listener,
    PathMatchType, SessionPersistence, SessionPersistenceType, GROUP,
};
use super::session;
use crate::config::{
    BackendSettings, Config, GatewaySettings, HeaderEdit, PathRewrite, Rewrite, RouteFilters,
    RouteMatches,
};
use crate::discovery::objects::{self, Bursts};

/// Why an HTTPRoute could not be routed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the route compiles to does not validate as tether settings.
    #[error("httproute {route}: {source}")]
    Compile {
        /// `namespace/name`.
        route: String,
        /// What config validation said.
        source: crate::config::ConfigError,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One route compiled from an HTTPRoute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRoute {
    /// Exact host, or any host.
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: String,
    /// The backend's name (an entry of [`Compiled::backends`]).
    pub backend: String,
    /// The match's other conditions: an `Exact` path, method, headers, query.
    pub matches: RouteMatches,
    /// What the rule's filters change on the way.
    pub filters: RouteFilters,
    /// `namespace/name` of the HTTPRoute it came from.
    pub route: String,
}

/// What the HTTPRoutes attached to tether's Gateways route, ready to merge with a
/// config file.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// Backends, named `namespace.route.service.port`.
    pub backends: Vec<BackendSettings>,
    /// Routes, oldest HTTPRoute first.
    pub routes: Vec<GatewayRoute>,
    /// `namespace/name` of every HTTPRoute attached to one of tether's Gateways.
    pub attached: Vec<String>,
}

impl Compiled {
    /// A fingerprint of what routes, to publish only real changes.
    fn fingerprint(&self) -> String {
        format!("{:?}|{:?}", self.backends, self.routes)
    }

    /// Compiles the HTTPRoutes attached to Gateways whose class has `controllerName`
    /// `controller`. Returns what routes, the routes that do not compile (left out),
    /// and notes on what is not honoured as written (`namespace/name: what: how`).
    pub fn build(
        classes: &[Arc<GatewayClass>],
        gateways: &[Arc<Gateway>],
        routes: &[Arc<HTTPRoute>],
        controller: &str,
    ) -> (Compiled, Vec<Error>, Vec<String>) {
        let ours: BTreeSet<String> = classes
            .iter()
            .filter(|c| c.spec.controller_name == controller)
            .map(|c| c.name_any())
            .collect();
        let gateways: BTreeMap<(String, String), &Gateway> = gateways
            .iter()
            .filter(|g| ours.contains(&g.spec.gateway_class_name))
            .map(|g| ((namespace(g.as_ref()), g.name_any()), g.as_ref()))
            .collect();
        // Gateway API precedence between routes: the oldest first, then by name.
        let mut routes: Vec<&Arc<HTTPRoute>> = routes.iter().collect();
        routes.sort_by_key(|r| (r.metadata.creation_timestamp.clone(), id(r.as_ref())));
        let mut out = Compiled::default();
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        // Host, path and the other conditions (as text: they have no order of their own).
        let mut taken: BTreeSet<(Option<String>, String, String)> = BTreeSet::new();
        for route in routes {
            let name = id(route.as_ref());
            let mut b = RouteBuilder {
                id: name.clone(),
                notes: Vec::new(),
            };
            let hosts = b.attach(route, &gateways);
            let Some(hosts) = hosts else {
                notes.append(&mut b.notes);
                continue;
            };
            out.attached.push(name.clone());
            let (backends, route_list) = b.rules(route, &hosts);
            notes.append(&mut b.notes);
            if route_list.is_empty() {
                continue; // (a file with backends and no routes would get a catch-all)
            }
            let config = match Config::parse(
                &toml(&backends, &route_list),
                &format!("HTTPRoute {name}"),
                std::path::Path::new("."),
            ) {
                Ok(c) => c,
                Err(source) => {
                    errors.push(Error::Compile {
                        route: name,
                        source,
                    });
                    continue;
                }
            };
            let mut used = BTreeSet::new();
            for r in &config.routes {
                // The older route keeps a host and path both claim (Gateway API's rule).
                let key = (
                    r.host.clone(),
                    r.path_prefix.clone(),
                    format!("{:?}", r.matches),
                );
                if !taken.insert(key) {
                    notes.push(format!(
                        "{name}: {}{}: an earlier rule or an older HTTPRoute routes it; it wins",
                        r.host.as_deref().unwrap_or("*"),
                        r.path_prefix
                    ));
                    continue;
                }
                used.insert(r.backend);
                out.routes.push(GatewayRoute {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    backend: config.backends[r.backend].name.clone(),
                    matches: r.matches.clone(),
                    filters: r.filters.clone(),
                    route: name.clone(),
                });
            }
            for (i, backend) in config.backends.into_iter().enumerate() {
                if used.contains(&i) {
                    out.backends.push(backend);
                }
            }
        }
        (out, errors, notes)
    }
}

/// One backend of a route, before it is written as TOML.
struct Backend {
    name: String,
    namespace: String,
    service: String,
    port: u16,
    persistence: Option<SessionPersistence>,
    /// The cookie paths GEP-1619 gives the matches that reach it.
    cookie_paths: BTreeSet<String>,
}

/// One `[[route]]` of a route, before it is written as TOML.
struct Route {
    host: Option<String>,
    path_prefix: String,
    backend: String,
    matches: RouteMatches,
    filters: RouteFilters,
}

/// Compiles one HTTPRoute, collecting notes.
struct RouteBuilder {
    id: String,
    notes: Vec<String>,
}

impl RouteBuilder {
    fn note(&mut self, what: &str, how: &str) {
        self.notes.push(format!("{}: {what}: {how}", self.id));
    }

    /// The hosts the route answers on the listeners it attaches to (`None`: any host),
    /// or `None` when it attaches to no listener of tether's Gateways.
    fn attach(
        &mut self,
        route: &HTTPRoute,
        gateways: &BTreeMap<(String, String), &Gateway>,
    ) -> Option<BTreeSet<Option<String>>> {
        let route_ns = namespace(route);
        let mut listeners: Vec<&Listener> = Vec::new();
        for p in &route.spec.parent_refs {
            if p.group.as_deref().unwrap_or(GROUP) != GROUP
                || p.kind.as_deref().unwrap_or("Gateway") != "Gateway"
            {
                continue;
            }
            let ns = p.namespace.clone().unwrap_or_else(|| route_ns.clone());
            let Some(gateway) = gateways.get(&(ns.clone(), p.name.clone())) else {
                continue; // not one of tether's Gateways
            };
            for l in &gateway.spec.listeners {
                if p.section_name.as_ref().is_some_and(|s| *s != l.name)
                    || p.port.is_some_and(|port| port != l.port)
                {
                    continue;
                }
                if l.protocol != "HTTP" {
                    self.note(
                        &format!("listener {ns}/{}/{}", p.name, l.name),
                        &format!(
                            "protocol {} is not supported yet (HTTP only); not attached there",
                            l.protocol
                        ),
                    );
                    continue;
                }
                let from = l
                    .allowed_routes
                    .as_ref()
                    .and_then(|a| a.namespaces.as_ref())
                    .and_then(|n| n.from.as_deref())
                    .unwrap_or("Same");
                let allowed = match from {
                    "Same" => ns == route_ns,
                    "All" => true,
                    other => {
                        self.note(
                            &format!("listener {ns}/{}/{}", p.name, l.name),
                            &format!(
                                "allowedRoutes.namespaces.from {other} is not supported yet; \
                                 not attached there"
                            ),
                        );
                        false
                    }
                };
                if allowed {
                    listeners.push(l);
                }
            }
        }
        if listeners.is_empty() {
            return None;
        }
        let mut hosts = BTreeSet::new();
        for l in listeners {
            for h in intersect(l.hostname.as_deref(), &route.spec.hostnames) {
                match h {
                    Some(h) if h.starts_with('*') => self.note(
                        &format!("hostname {h}"),
                        "wildcard hosts are not supported yet (tether routes match exact \
                         hosts); left out",
                    ),
                    h => {
                        hosts.insert(h.map(|h| h.to_ascii_lowercase()));
                    }
                }
            }
        }
        Some(hosts)
    }

    /// The route's backends and `[[route]]`s for `hosts`.
    fn rules(
        &mut self,
        route: &HTTPRoute,
        hosts: &BTreeSet<Option<String>>,
    ) -> (Vec<Backend>, Vec<Route>) {
        let ns = namespace(route);
        let route_name = route.name_any();
        let mut backends: Vec<Backend> = Vec::new();
        let mut routes = Vec::new();
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let Some(filters) = self.filters(&at, rule) else {
                continue;
            };
            let Some((service, port)) = self.backend_ref(&at, &ns, rule) else {
                continue;
            };
            let persistence = self.persistence(&at, rule);
            let base = format!("{ns}.{route_name}.{service}.{port}");
            let same = |b: &Backend| b.service == service && b.port == port;
            let index = match backends
                .iter()
                .position(|b| same(b) && b.persistence == persistence)
            {
                Some(x) => x,
                None => {
                    let name = if backends.iter().any(|b| b.name == base) {
                        let rule_name = rule.name.clone().unwrap_or_else(|| format!("rule-{i}"));
                        format!("{ns}.{route_name}.{rule_name}.{service}.{port}")
                    } else {
                        base
                    };
                    backends.push(Backend {
                        name,
                        namespace: ns.clone(),
                        service: service.clone(),
                        port,
                        persistence,
                        cookie_paths: BTreeSet::new(),
                    });
                    backends.len() - 1
                }
            };
            let default_match = [HTTPRouteMatch {
                path: Some(HTTPPathMatch {
                    kind: Some(PathMatchType::PathPrefix),
                    value: Some("/".into()),
                }),
                ..Default::default()
            }];
            let matches = if rule.matches.is_empty() {
                &default_match[..]
            } else {
                &rule.matches[..]
            };
            for (j, m) in matches.iter().enumerate() {
                let at = format!("{at}.matches[{j}]");
                let Some(mut conditions) = self.conditions(&at, m) else {
                    continue;
                };
                let path = m.path.clone().unwrap_or_default();
                let value = path.value.clone().unwrap_or_else(|| "/".into());
                match path.kind.unwrap_or(PathMatchType::PathPrefix) {
                    PathMatchType::PathPrefix => {}
                    PathMatchType::Exact => {
                        let prefix_rewrite = filters.rewrite.as_ref().and_then(|r| r.path.as_ref());
                        if matches!(prefix_rewrite, Some(PathRewrite::Prefix { .. })) {
                            self.note(
                                &format!("{at}.path Exact {value}"),
                                "URLRewrite ReplacePrefixMatch needs a PathPrefix match; the \
                                 match is left out",
                            );
                            continue;
                        }
                        conditions.exact = true
                    }
                    PathMatchType::RegularExpression => {
                        self.note(
                            &format!("{at}.path RegularExpression {value}"),
                            "not supported; the match is left out",
                        );
                        continue;
                    }
                }
                backends[index]
                    .cookie_paths
                    .insert(session::cookie_path(Some(m)));
                for host in hosts {
                    routes.push(Route {
                        host: host.clone(),
                        path_prefix: value.clone(),
                        backend: backends[index].name.clone(),
                        matches: conditions.clone(),
                        filters: filters.clone(),
                    });
                }
            }
        }
        for b in &backends {
            if b.cookie_paths.len() > 1 && cookie_kind(&b.persistence) {
                self.notes.push(format!(
                    "{}: backend {}: one cookie Path per backend: matches with several paths \
                     share Path=/",
                    self.id, b.name
                ));
            }
        }
        (backends, routes)
    }

    /// A rule's filters as tether's [`RouteFilters`], or `None` (with a note) when the
    /// rule has a filter tether does not implement: the rule is left out rather than
    /// routed without what it asks for. A header modifier's entry naming a field tether
    /// owns (`x-tether-*`, `x-forwarded-*`, hop-by-hop, framing, `Host`, a response's
    /// `Set-Cookie`) is dropped with a note: tether's own value stands.
    fn filters(&mut self, at: &str, rule: &HTTPRouteRule) -> Option<RouteFilters> {
        let mut out = RouteFilters::default();
        for (k, f) in rule.filters.iter().enumerate() {
            let at = format!("{at}.filters[{k}]");
            let (edit, response) = match (f.kind.as_str(), f) {
                (
                    "RequestHeaderModifier",
                    HTTPRouteFilter {
                        request_header_modifier: Some(m),
                        ..
                    },
                ) => (m, false),
                (
                    "ResponseHeaderModifier",
                    HTTPRouteFilter {
                        response_header_modifier: Some(m),
                        ..
                    },
                ) => (m, true),
                (
                    "URLRewrite",
                    HTTPRouteFilter {
                        url_rewrite: Some(w),
                        ..
                    },
                ) => {
                    out.rewrite = Some(self.rewrite(&at, w)?);
                    continue;
                }
                (kind, _) => {
                    self.note(
                        &format!("{at} {kind}"),
                        "filter not supported; the rule is left out",
                    );
                    return None;
                }
            };
            let compiled = self.header_edit(&at, edit, response)?;
            let target = if response {
                &mut out.response_headers
            } else {
                &mut out.request_headers
            };
            target.set.extend(compiled.set);
            target.add.extend(compiled.add);
            target.remove.extend(compiled.remove);
        }
        Some(out)
    }

    /// A `URLRewrite`, or `None` (with a note) for a path modifier type tether does not
    /// know. A `ReplacePrefixMatch`'s prefix is the route's own, filled in when the
    /// route's TOML is read.
    fn rewrite(&mut self, at: &str, w: &HTTPURLRewriteFilter) -> Option<Rewrite> {
        let path = match &w.path {
            None => None,
            Some(p) => match (
                p.kind.as_str(),
                &p.replace_full_path,
                &p.replace_prefix_match,
            ) {
                ("ReplaceFullPath", Some(full), _) => Some(PathRewrite::Full(full.clone())),
                ("ReplacePrefixMatch", _, Some(to)) => Some(PathRewrite::Prefix {
                    from: String::new(),
                    to: to.clone(),
                }),
                (kind, _, _) => {
                    self.note(
                        &format!("{at} URLRewrite path {kind}"),
                        "not supported (or its value is missing); the rule is left out",
                    );
                    return None;
                }
            },
        };
        Some(Rewrite {
            hostname: w.hostname.clone(),
            path,
        })
    }

    /// One header modifier, or `None` (with a note) when a name or value is not HTTP.
    fn header_edit(
        &mut self,
        at: &str,
        f: &HTTPHeaderFilter,
        response: bool,
    ) -> Option<HeaderEdit> {
        let mut out = HeaderEdit::default();
        let name = |this: &mut Self, n: &str| -> Option<Option<http::HeaderName>> {
            let Ok(h) = http::HeaderName::from_bytes(n.as_bytes()) else {
                this.note(
                    &format!("{at} {n}"),
                    "not a header name; the rule is left out",
                );
                return None;
            };
            if !crate::config::editable_header(h.as_str(), response) {
                this.note(
                    &format!("{at} {n}"),
                    "tether owns this header; the filter leaves it as tether sets it",
                );
                return Some(None);
            }
            Some(Some(h))
        };
        for (list, into) in [(&f.set, &mut out.set), (&f.add, &mut out.add)] {
            for h in list {
                let Some(n) = name(self, &h.name)? else {
                    continue;
                };
                let Ok(v) = http::HeaderValue::from_str(&h.value) else {
                    self.note(
                        &format!("{at} {}", h.name),
                        "not a header value; the rule is left out",
                    );
                    return None;
                };
                into.push((n, v));
            }
        }
        for r in &f.remove {
            if let Some(n) = name(self, r)? {
                out.remove.push(n);
            }
        }
        Some(out)
    }

    /// A match's method, headers and query parameters as tether's [`RouteMatches`], or
    /// `None` (with a note) when it asks for what tether does not match on, so the
    /// match is left out rather than routed wider than written. Of several conditions
    /// on one name only the first counts, as the CRD says.
    fn conditions(&mut self, at: &str, m: &HTTPRouteMatch) -> Option<RouteMatches> {
        let mut out = RouteMatches::default();
        if let Some(method) = &m.method {
            match http::Method::from_bytes(method.as_bytes()) {
                Ok(x) if x != http::Method::CONNECT => out.method = Some(x),
                _ => {
                    self.note(
                        &format!("{at}.method {method}"),
                        "not supported (tether refuses CONNECT); the match is left out",
                    );
                    return None;
                }
            }
        }
        for (k, h) in m.headers.iter().enumerate() {
            if h.kind.as_deref().unwrap_or("Exact") != "Exact" {
                self.note(
                    &format!("{at}.headers[{k}] {}", h.name),
                    "only Exact header matches are supported; the match is left out",
                );
                return None;
            }
            let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
                self.note(
                    &format!("{at}.headers[{k}]"),
                    "not a header name; the match is left out",
                );
                return None;
            };
            if !out.headers.iter().any(|(n, _)| *n == name) {
                out.headers.push((name, h.value.clone()));
            }
        }
        for (k, q) in m.query_params.iter().enumerate() {
            if q.kind.as_deref().unwrap_or("Exact") != "Exact" {
                self.note(
                    &format!("{at}.queryParams[{k}] {}", q.name),
                    "only Exact query param matches are supported; the match is left out",
                );
                return None;
            }
            if !out.query.iter().any(|(n, _)| *n == q.name) {
                out.query.push((q.name.clone(), q.value.clone()));
            }
        }
        Some(out)
    }

    /// The Service and port of a rule's one backend: tether sends a rule to one Service.
    fn backend_ref(&mut self, at: &str, ns: &str, rule: &HTTPRouteRule) -> Option<(String, u16)> {
        let mut usable: Vec<&HTTPBackendRef> = Vec::new();
        for (j, r) in rule.backend_refs.iter().enumerate() {
            let what = format!("{at}.backendRefs[{j}] {}", r.name);
            if !r.group.as_deref().unwrap_or("").is_empty()
                || r.kind.as_deref().unwrap_or("Service") != "Service"
            {
                self.note(&what, "only Services are supported; left out");
                continue;
            }
            if r.namespace.as_deref().is_some_and(|n| n != ns) {
                self.note(
                    &what,
                    "Services of other namespaces (ReferenceGrant) are not supported yet; left out",
                );
                continue;
            }
            if r.port.and_then(|p| u16::try_from(p).ok()).is_none() {
                self.note(&what, "a Service port is required; left out");
                continue;
            }
            if r.weight == Some(0) {
                continue;
            }
            usable.push(r);
        }
        // The heaviest; the first of equals.
        let best = usable
            .iter()
            .enumerate()
            .max_by_key(|(k, r)| (r.weight.unwrap_or(1), std::cmp::Reverse(*k)))
            .map(|(_, r)| *r)?;
        if usable.len() > 1 {
            self.note(
                &format!("{at}.backendRefs"),
                &format!(
                    "splitting traffic between Services is not supported yet; every session \
                     goes to {} (the heaviest)",
                    best.name
                ),
            );
        }
        let port = best.port.and_then(|p| u16::try_from(p).ok())?;
        Some((best.name.clone(), port))
    }

    /// The rule's `sessionPersistence`, as tether can honour it.
    fn persistence(&mut self, at: &str, rule: &HTTPRouteRule) -> Option<SessionPersistence> {
        let mut p = rule.session_persistence.clone()?;
        if p.kind == Some(SessionPersistenceType::Header) && p.session_name.is_none() {
            self.note(
                &format!("{at}.sessionPersistence"),
                "type Header without sessionName: tether's cookie affinity instead",
            );
            p.kind = Some(SessionPersistenceType::Cookie);
        }
        if let Some(t) = &p.absolute_timeout {
            if session::parse_duration(t).is_none() {
                self.note(
                    &format!("{at}.sessionPersistence.absoluteTimeout {t}"),
                    "not a Gateway API duration; ignored",
                );
                p.absolute_timeout = None;
            }
        }
        Some(p)
    }
}

/// Whether sessions of this persistence travel in a cookie.
fn cookie_kind(p: &Option<SessionPersistence>) -> bool {
    p.as_ref()
        .is_none_or(|p| p.kind != Some(SessionPersistenceType::Header))
}

/// The hosts a listener with `listener` hostname accepts of a route's `hostnames`
/// (Gateway API's intersection; `None`: any host).
fn intersect(listener: Option<&str>, route: &[String]) -> Vec<Option<String>> {
    match (listener, route) {
        (None, []) => vec![None],
        (Some(l), []) => vec![Some(l.into())],
        (None, r) => r.iter().cloned().map(Some).collect(),
        (Some(l), r) => r
            .iter()
            .filter_map(|h| {
                if h.eq_ignore_ascii_case(l) || wildcard_covers(l, h) {
                    Some(h.clone())
                } else if wildcard_covers(h, l) {
                    Some(l.into())
                } else {
                    None
                }
            })
            .map(Some)
            .collect(),
    }
}

/// Whether `pattern` (`*.example.com`) covers `host` (`a.example.com`, `*.a.example.com`).
fn wildcard_covers(pattern: &str, host: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let suffix = suffix.to_ascii_lowercase();
    host.len() > suffix.len() && host.ends_with(&suffix) && host != pattern.to_ascii_lowercase()
}

/// The tether.toml one route compiles to; parsed with the config file's validation, so
/// defaults and limits are the file's.
fn toml(backends: &[Backend], routes: &[Route]) -> String {
    let q = |s: &str| toml::Value::String(s.into()).to_string();
    let mut out = String::new();
    for b in backends {
        let _ = writeln!(
            out,
            "[[backend]]\nname = {}\nkubernetes = {{ namespace = {}, service = {}, port = {} }}",
            q(&b.name),
            q(&b.namespace),
            q(&b.service),
            b.port
        );
        let Some(p) = &b.persistence else {
            continue; // tether's default cookie affinity
        };
        let _ = writeln!(out, "[backend.affinity]");
        let timeout = p
            .absolute_timeout
            .as_deref()
            .and_then(session::parse_duration)
            .map(|d| {
                // tether's timeouts are whole seconds, at least one.
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                Duration::from_secs(secs.clamp(1, crate::config::MAX_DURATION.as_secs()))
            });
        if let Some(t) = timeout {
            let _ = writeln!(out, "absolute_timeout = \"{}s\"", t.as_secs());
        }
        if p.kind == Some(SessionPersistenceType::Header) {
            if let Some(h) = &p.session_name {
                let _ = writeln!(out, "key = {}", q(&format!("header:{h}")));
            }
            continue;
        }
        if let Some(n) = &p.session_name {
            let _ = writeln!(out, "cookie = {}", q(n));
        }
        let path = match b.cookie_paths.iter().collect::<Vec<_>>().as_slice() {
            [only] => (*only).clone(),
            _ => "/".into(),
        };
        let _ = writeln!(out, "path = {}", q(&path));
        let permanent =
            p.cookie_config.as_ref().and_then(|c| c.lifetime_type) == Some(LifetimeType::Permanent);
        if let (true, Some(t)) = (permanent, timeout) {
            let _ = writeln!(out, "max_age = \"{}s\"", t.as_secs());
        }
    }
    for r in routes {
        out.push_str(&crate::config::route_toml_matching(
            r.host.as_deref(),
            &r.path_prefix,
            &r.backend,
            &r.matches,
        ));
        out.push_str(&crate::config::route_filters_toml(&r.filters));
    }
    out
}

/// An object's namespace (`default` when unset).
fn namespace<K: ResourceExt>(o: &K) -> String {
    o.namespace().unwrap_or_else(|| "default".into())
}

/// `namespace/name` of an object.
fn id<K: ResourceExt>(o: &K) -> String {
    format!("{}/{}", namespace(o), o.name_any())
}

/// Watches GatewayClasses, Gateways and HTTPRoutes and publishes what tether's route.
pub struct Controller {
    /// The API client.
    pub client: Client,
    /// `[kubernetes.gateway]`.
    pub settings: GatewaySettings,
}

impl Controller {
    /// Runs until dropped, publishing every change of what routes on `tx`.
    pub async fn run(self, tx: watch::Sender<Arc<Compiled>>) {
        let (classes, class_changes) = objects::reflect::<GatewayClass>(&self.client);
        let (gateways, gateway_changes) = objects::reflect::<Gateway>(&self.client);
        let (routes, route_changes) = objects::reflect::<HTTPRoute>(&self.client);
        let mut bursts = Bursts::new(
            vec![class_changes, gateway_changes, route_changes],
            self.settings.debounce,
            "gateway api",
        );
        let mut published = tx.borrow().fingerprint();
        let mut reported: BTreeSet<String> = BTreeSet::new();
        while bursts.next().await.is_some() {
            let (compiled, errors, notes) = Compiled::build(
                &classes.state(),
                &gateways.state(),
                &routes.state(),
                &self.settings.controller_name,
            );
            for e in &errors {
                tracing::warn!(error = %e, "httproute left out: it does not compile");
            }
            // Each note once while it holds.
            let current: BTreeSet<String> = notes.into_iter().collect();
            for n in current.difference(&reported) {
                tracing::warn!("gateway api: not honoured as written: {n}");
            }
            reported = current;
            let fingerprint = compiled.fingerprint();
            if fingerprint != published {
                published = fingerprint;
                tracing::info!(
                    httproutes = compiled.attached.len(),
                    backends = compiled.backends.len(),
                    routes = compiled.routes.len(),
                    "gateway api routes changed"
                );
                let _ = tx.send(Arc::new(compiled));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AffinityKey;
    use serde_json::json;

    const OURS: &str = "tether.io/gateway-controller";

    fn class(name: &str, controller: &str) -> Arc<GatewayClass> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": name}, "spec": {"controllerName": controller}}))
            .unwrap(),
        )
    }

    fn gateway(ns: &str, name: &str, class: &str, listeners: serde_json::Value) -> Arc<Gateway> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"gatewayClassName": class, "listeners": listeners}}))
            .unwrap(),
        )
    }

    fn route(ns: &str, name: &str, spec: serde_json::Value) -> Arc<HTTPRoute> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap(),
        )
    }

    fn world() -> (Vec<Arc<GatewayClass>>, Vec<Arc<Gateway>>) {
        let listeners = json!([
            {"name": "web", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"},
            {"name": "any", "port": 8080, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "sel", "port": 8081, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "Selector"}}},
            {"name": "tls", "port": 443, "protocol": "HTTPS"},
        ]);
        (
            vec![class("tether", OURS), class("other", "example.com/other")],
            vec![
                gateway("infra", "gw", "tether", listeners.clone()),
                gateway("infra", "theirs", "other", listeners),
            ],
        )
    }

    fn hosts(c: &Compiled) -> Vec<(Option<&str>, &str)> {
        c.routes
            .iter()
            .map(|r| (r.host.as_deref(), r.path_prefix.as_str()))
            .collect()
    }

    #[test]
    fn routes_attach_to_listeners_that_admit_their_namespace() {
        let (classes, gateways) = world();
        let spec = |section: &str| {
            json!({
                "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": section}],
                "hostnames": ["shop.example.com"],
                "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}],
            })
        };
        let routes = vec![
            // `web` admits only the Gateway's namespace: not shop's.
            route("shop", "a", spec("web")),
            // `any` admits every namespace.
            route("shop", "b", spec("any")),
            // `sel` (Selector) and `tls` (HTTPS) are not supported yet.
            route("shop", "c", spec("sel")),
            route("shop", "d", spec("tls")),
            // Same namespace as the Gateway: attaches to `web`.
            route("infra", "e", spec("web")),
        ];
        let (c, errors, notes) = Compiled::build(&classes, &gateways, &routes, OURS);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.attached, vec!["infra/e", "shop/b"]);
        let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
        // Both claim shop.example.com/: the older (here: by name) wins.
        assert_eq!(names, vec!["infra.e.web.8080"]);
        assert!(notes.iter().any(|n| n.contains("Selector")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("HTTPS")), "{notes:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("shop/b") && n.contains("older")),
            "{notes:?}"
        );
    }

    #[test]
    fn a_route_to_a_gateway_of_another_class_does_not_attach() {
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "x",
            json!({"parentRefs": [{"name": "theirs"}],
                   "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
        );
        let (c, _, _) = Compiled::build(&classes, &gateways, &[r], OURS);
        assert!(c.attached.is_empty() && c.routes.is_empty() && c.backends.is_empty());
    }

    #[test]
    fn hosts_are_the_listener_hostname_intersected_with_the_routes() {
        assert_eq!(intersect(None, &[]), vec![None]);
        assert_eq!(
            intersect(Some("*.example.com"), &[]),
            vec![Some("*.example.com".to_string())]
        );
        assert_eq!(
            intersect(
                Some("*.example.com"),
                &[
                    "a.example.com".into(),
                    "b.other.org".into(),
                    "*.example.com".into()
                ]
            ),
            vec![
                Some("a.example.com".to_string()),
                Some("*.example.com".to_string())
            ]
        );
        assert_eq!(
            intersect(Some("a.example.com"), &["*.example.com".into()]),
            vec![Some("a.example.com".to_string())]
        );
        // A wildcard host is left out with a note: tether routes match exact hosts.
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "w",
            json!({"parentRefs": [{"name": "gw", "sectionName": "web"}],
                   "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
        );
        let (c, _, notes) = Compiled::build(&classes, &gateways, &[r], OURS);
        assert!(c.routes.is_empty());
        assert!(notes.iter().any(|n| n.contains("wildcard")), "{notes:?}");
    }

    #[test]
    fn session_persistence_becomes_tethers_affinity_per_gep_1619() {
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "shop",
            json!({
                "parentRefs": [{"name": "gw", "sectionName": "web"}],
                "hostnames": ["shop.example.com"],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/cart/"}}],
                     "backendRefs": [{"name": "web", "port": 80}],
                     "sessionPersistence": {"sessionName": "SHOP", "absoluteTimeout": "1h30m",
                        "cookieConfig": {"lifetimeType": "Permanent"}}},
                    {"matches": [{"path": {"type": "Exact", "value": "/api"}}],
                     "backendRefs": [{"name": "web", "port": 80}],
                     "sessionPersistence": {"type": "Header", "sessionName": "X-Session"}},
                    {"name": "split",
                     "matches": [{"path": {"value": "/split"}}],
                     "backendRefs": [{"name": "a", "port": 80, "weight": 1},
                                     {"name": "b", "port": 80, "weight": 3}]},
                ],
            }),
        );
        let (c, errors, notes) = Compiled::build(&classes, &gateways, &[r], OURS);
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "infra.shop.web.80",
                "infra.shop.rule-1.web.80",
                "infra.shop.b.80"
            ]
        );
        let cookie = &c.backends[0].affinity;
        assert_eq!(cookie.cookie.name, "SHOP");
        assert_eq!(cookie.cookie.path, "/cart");
        assert_eq!(cookie.cookie.max_age, Some(Duration::from_secs(5400)));
        assert_eq!(cookie.absolute_timeout, Some(Duration::from_secs(5400)));
        assert_eq!(
            c.backends[1].affinity.key,
            AffinityKey::Header(http::HeaderName::from_static("x-session"))
        );
        assert_eq!(
            hosts(&c),
            vec![
                (Some("shop.example.com"), "/cart/"),
                (Some("shop.example.com"), "/api"),
                (Some("shop.example.com"), "/split"),
            ]
        );
        assert!(c.routes[1].matches.exact, "Exact matches the whole path");
        assert!(
            !notes.iter().any(|n| n.contains("Exact")),
            "Exact is no longer approximated: {notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("splitting")), "{notes:?}");
    }

    #[test]
    fn a_session_lifetime_cookie_has_no_max_age_but_keeps_the_timeout() {
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "s",
            json!({
                "parentRefs": [{"name": "gw", "port": 80}],
                "hostnames": ["s.example.com"],
                "rules": [{"backendRefs": [{"name": "web", "port": 80}],
                           "sessionPersistence": {"absoluteTimeout": "500ms"}}],
            }),
        );
        let (c, _, _) = Compiled::build(&classes, &gateways, &[r], OURS);
        let a = &c.backends[0].affinity;
        assert_eq!(a.cookie.max_age, None);
        assert_eq!(a.cookie.path, "/");
        assert_eq!(a.absolute_timeout, Some(Duration::from_secs(1)));
    }

    #[test]
    fn header_method_and_query_matches_compile_and_regular_expressions_are_left_out() {
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "m",
            json!({
                "parentRefs": [{"name": "gw", "sectionName": "web"}],
                "hostnames": ["m.example.com"],
                "rules": [
                    {"matches": [
                        {"path": {"value": "/a"}, "method": "POST",
                         "headers": [{"name": "X-Env", "value": "canary"},
                                     {"name": "x-env", "value": "ignored: the first counts"}],
                         "queryParams": [{"name": "v", "value": "2"}]},
                        {"path": {"value": "/a"}},
                        {"path": {"value": "/re"},
                         "headers": [{"type": "RegularExpression", "name": "x", "value": ".*"}]},
                        {"path": {"value": "/q"},
                         "queryParams": [{"type": "RegularExpression", "name": "x", "value": ".*"}]},
                    ],
                     "backendRefs": [{"name": "web", "port": 80}]},
                ],
            }),
        );
        let (c, errors, notes) = Compiled::build(&classes, &gateways, &[r], OURS);
        assert!(errors.is_empty(), "{errors:?}");
        // Both /a matches route: they differ in their conditions, so neither takes the
        // other's place.
        assert_eq!(hosts(&c), vec![(Some("m.example.com"), "/a"); 2]);
        let m = &c.routes[0].matches;
        assert_eq!(m.method, Some(http::Method::POST));
        assert_eq!(
            m.headers,
            vec![(http::HeaderName::from_static("x-env"), "canary".to_string())]
        );
        assert_eq!(m.query, vec![("v".to_string(), "2".to_string())]);
        assert!(c.routes[1].matches.is_path_only());
        assert!(
            notes.iter().any(|n| n.contains("matches[2].headers[0]")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("matches[3].queryParams[0]")),
            "{notes:?}"
        );
    }

    #[test]
    fn header_modifiers_compile_and_other_filters_leave_their_rule_out() {
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "f",
            json!({
                "parentRefs": [{"name": "gw", "sectionName": "web"}],
                "hostnames": ["f.example.com"],
                "rules": [
                    {"matches": [{"path": {"value": "/edit"}}],
                     "filters": [
                        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                            "set": [{"name": "X-Env", "value": "a"},
                                    {"name": "x-tether-session", "value": "spoofed"}],
                            "remove": ["X-Forwarded-Proto"]}},
                        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                            "add": [{"name": "Cache-Control", "value": "no-store"}]}}],
                     "backendRefs": [{"name": "web", "port": 80}]},
                    {"matches": [{"path": {"value": "/mirror"}}],
                     "filters": [{"type": "RequestMirror",
                                  "requestMirror": {"backendRef": {"name": "x", "port": 80}}}],
                     "backendRefs": [{"name": "web", "port": 80}]},
                ],
            }),
        );
        let (c, errors, notes) = Compiled::build(&classes, &gateways, &[r], OURS);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(hosts(&c), vec![(Some("f.example.com"), "/edit")]);
        let f = &c.routes[0].filters;
        assert_eq!(
            f.request_headers.set,
            vec![(
                http::HeaderName::from_static("x-env"),
                http::HeaderValue::from_static("a")
            )],
            "tether's own fields are not the filter's to set or remove"
        );
        assert!(f.request_headers.remove.is_empty());
        assert_eq!(f.response_headers.add.len(), 1);
        for what in [
            "x-tether-session",
            "X-Forwarded-Proto",
            "rules[1].filters[0] RequestMirror",
        ] {
            assert!(notes.iter().any(|n| n.contains(what)), "{what}: {notes:?}");
        }
    }
}
