//! Gateway API mode: the live controller for GatewayClasses, Gateways and HTTPRoutes.
//!
//! watchers → reflector stores → debounce → compile → publish, as Ingress mode does.
//! Three kube-runtime watchers (GatewayClasses, Gateways, HTTPRoutes, cluster-wide) feed
//! reflector stores ([`crate::discovery::objects`], shared with Ingress mode), and so do
//! watchers of what routes and status consult: ReferenceGrants (at v1beta1), Namespaces
//! (labels) and Services (metadata only). Once all have listed, every burst of changes (collected for
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
//! admit it: `allowedRoutes.kinds` must include HTTPRoute (or be empty), and
//! `namespaces.from` is `Same` (the default), `All`, or `Selector` (the route's
//! Namespace labels match the selector). Its hosts are the listener's hostname
//! intersected with the route's `hostnames`. A backendRef to a Service of another
//! namespace is used only when a ReferenceGrant there allows it.
//!
//! Status: every burst also computes, with the pure [`status`], the status writes that
//! bring tether's GatewayClasses, Gateways and the routes attached to them up to date
//! (conditions with the Gateway API's reasons, `attachedRoutes`), and hands them to
//! [`super::status::Writer`], which writes only on the replica holding the Lease.
//!
//! `HTTPS` listeners (`tls.mode: Terminate`, a `certificateRef` to a Secret of the
//! Gateway's namespace) admit routes alike when tether has a TLS listener; their
//! hostnames and Secrets go to [`crate::sni`] as [`Binding`]s ([`certificates`]), which
//! serves each hostname its Secret's certificate by SNI. What that watcher finds of
//! the Secrets (missing, not `kubernetes.io/tls`, not a usable pair) comes back as
//! [`crate::sni::Verdicts`], one more input of the bursts, and the listener's status
//! says so: `ResolvedRefs` False `InvalidCertificateRef`, `Programmed` False.
//!
//! Backend names: `httproute:namespace:route:service:port` ([`backend_name`]: unique
//! across HTTPRoutes, Ingresses and dotted names), independent of rule order and
//! matches, so a route edit that keeps a rule's Service keeps its sessions. A rule with
//! several Service backendRefs is one weighted backend (new sessions split by `weight`,
//! every session stays on its pod) named after its FIRST listed Service, never after
//! the weights: a live weight change, or a canary ref appended after the first, keeps
//! the name and so the sessions. A weight-0 ref takes no new sessions; its pods keep
//! the ones they have (they still serve), as a draining pod does without the timeout.
//! A second rule of the same route to the same Service port with other
//! `sessionPersistence` gets its own backend, `httproute:namespace:route:rule:service:port`
//! (`rule` is the rule's `name`, else `rule-N`).
//!
//! Session persistence: a rule's own `sessionPersistence`, else that of the
//! XBackendTrafficPolicy (`gateway.networking.x-k8s.io/v1alpha1`, a fourth watcher)
//! targeting its (first) Service, else tether's default cookie. The policy kind is
//! optional: in a cluster without its CRD it counts as an empty list.
//!
//! Errors only log: watch errors are retried with backoff, and a route that does not
//! compile is left out (with a warning) while the others route.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::api::{
    Gateway, GatewayClass, GatewayClassStatus, GatewayStatus, GatewayStatusAddress, HTTPBackendRef,
    HTTPHeaderFilter, HTTPPathMatch, HTTPPathModifier, HTTPRequestRedirectFilter, HTTPRoute,
    HTTPRouteFilter, HTTPRouteMatch, HTTPRouteRule, HTTPRouteStatus, HTTPURLRewriteFilter,
    LifetimeType, Listener, ListenerStatus, ParentReference, PathMatchType, ReferenceGrantV1beta1,
    RouteGroupKind, RouteParentStatus, SessionPersistence, SessionPersistenceType,
    XBackendTrafficPolicy, GROUP,
};
use super::session;
use crate::config::{
    Answer, BackendSettings, Config, GatewaySettings, HeaderEdit, PathRewrite, Redirect, Rewrite,
    RouteFilters, RouteMatches, RouteTo,
};
use crate::discovery::objects::{self, Bursts};
use crate::sni::Binding;

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
    /// The backend's name (an entry of [`Compiled::backends`]), or the answer the rule
    /// gives itself: its `RequestRedirect`, or 500 when its backendRefs are all invalid.
    pub to: RouteTo<String>,
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
    /// Backends, named `httproute:namespace:route:service:port` ([`backend_name`]).
    pub backends: Vec<BackendSettings>,
    /// Routes, oldest HTTPRoute first.
    pub routes: Vec<GatewayRoute>,
    /// `namespace/name` of every HTTPRoute attached to one of tether's Gateways.
    pub attached: Vec<String>,
    /// Attached HTTPRoutes with rules tether leaves out for what it does not implement
    /// (status: `Accepted` False or `PartiallyInvalid`, reason `UnsupportedValue`).
    pub invalid: BTreeMap<String, Invalid>,
}

/// An HTTPRoute whose rules ask for what tether does not implement (a filter, a match
/// type): those rules (or matches) are left out, and its status says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// No rule is honoured: `Accepted` False; else `PartiallyInvalid` True.
    pub all: bool,
    /// What the first such rule asks for.
    pub message: String,
}

impl Compiled {
    /// A fingerprint of what routes, to publish only real changes.
    fn fingerprint(&self) -> String {
        format!("{:?}|{:?}", self.backends, self.routes)
    }

    /// Compiles the HTTPRoutes attached to Gateways whose class has `controllerName`
    /// `controller`. Returns what routes, the routes that do not compile (left out),
    /// and notes on what is not honoured as written (`namespace/name: what: how`).
    ///
    /// Without ReferenceGrants or Namespaces (see [`Compiled::build_in`]): a Service of
    /// another namespace is refused, and `from: Selector` sees no labels.
    pub fn build(
        classes: &[Arc<GatewayClass>],
        gateways: &[Arc<Gateway>],
        routes: &[Arc<HTTPRoute>],
        controller: &str,
    ) -> (Compiled, Vec<Error>, Vec<String>) {
        Self::build_with_policies(classes, gateways, routes, &[], controller)
    }

    /// [`Compiled::build`] with the cluster's XBackendTrafficPolicies: a policy's
    /// `sessionPersistence` applies to each rule routing to a Service it targets (kind
    /// `Service`, the policy's namespace) that sets no `sessionPersistence` itself. When
    /// several policies target one Service, the oldest wins (Gateway API's policy
    /// conflict rule: `creationTimestamp`, then namespace/name); when a rule's Services
    /// have different policies, the first listed Service's applies.
    pub fn build_with_policies(
        classes: &[Arc<GatewayClass>],
        gateways: &[Arc<Gateway>],
        routes: &[Arc<HTTPRoute>],
        policies: &[Arc<XBackendTrafficPolicy>],
        controller: &str,
    ) -> (Compiled, Vec<Error>, Vec<String>) {
        let world = World {
            classes,
            gateways,
            routes,
            policies,
            tls: true,
            ..World::default()
        };
        Self::build_in(&world, controller)
    }

    /// [`Compiled::build`] for everything the controller watches: ReferenceGrants admit
    /// Services of other namespaces, Namespace labels feed `allowedRoutes` selectors.
    /// Without a TLS listener (`world.tls`), routes do not attach to `HTTPS` listeners
    /// (they cannot be served), with a note.
    pub fn build_in(world: &World<'_>, controller: &str) -> (Compiled, Vec<Error>, Vec<String>) {
        let (classes, gateways, routes) = (world.classes, world.gateways, world.routes);
        let ctx = Arc::new(Context::of(world));
        let policies = Arc::new(service_policies(world.policies));
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
                unsupported: None,
                invalid_rules: (0, 0, None),
                ctx: ctx.clone(),
                policies: policies.clone(),
                namespace: namespace(route.as_ref()),
            };
            let hosts = b.attach(route, &gateways);
            let Some(hosts) = hosts else {
                notes.append(&mut b.notes);
                continue;
            };
            out.attached.push(name.clone());
            let (backends, route_list) = b.rules(route, &hosts);
            notes.append(&mut b.notes);
            if let (n, _, Some(message)) = std::mem::take(&mut b.invalid_rules) {
                out.invalid.insert(
                    name.clone(),
                    Invalid {
                        all: n > 0 && route_list.is_empty(),
                        message,
                    },
                );
            }
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
                let to = match &r.to {
                    RouteTo::Backend(i) => {
                        used.insert(*i);
                        RouteTo::Backend(config.backends[*i].name.clone())
                    }
                    RouteTo::Answer(a) => RouteTo::Answer(a.clone()),
                };
                out.routes.push(GatewayRoute {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    to,
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
    /// Every Service port of the rule with its weight, when there are several (a
    /// weighted backend); empty for a rule to one Service.
    weighted: Vec<(String, String, u16, u32)>,
    persistence: Option<SessionPersistence>,
    /// The cookie paths GEP-1619 gives the matches that reach it.
    cookie_paths: BTreeSet<String>,
}

/// One `[[route]]` of a route, before it is written as TOML.
struct Route {
    host: Option<String>,
    path_prefix: String,
    to: RouteTo<String>,
    matches: RouteMatches,
    filters: RouteFilters,
}

/// What a rule's backendRefs come to.
enum Refs {
    /// (namespace, Service, port, weight) of each usable one, in listed order.
    Usable(Vec<(String, String, u16, u32)>),
    /// It has some and none is usable (another kind, no ReferenceGrant, no port, no such
    /// Service): Gateway API says its requests get 500.
    Invalid,
    /// It has none, or every weight is 0: left out.
    None,
}

/// Compiles one HTTPRoute, collecting notes.
struct RouteBuilder {
    id: String,
    notes: Vec<String>,
    /// What the current rule asks for that tether does not implement (its first).
    unsupported: Option<String>,
    /// ReferenceGrants and Namespace labels.
    ctx: Arc<Context>,
    /// XBackendTrafficPolicies by (namespace, Service): (policy name, its
    /// `sessionPersistence`).
    policies: Arc<BTreeMap<(String, String), (String, SessionPersistence)>>,
    /// The route's namespace.
    namespace: String,
    /// After [`RouteBuilder::rules`]: how many rules ask for what tether does not
    /// implement, of how many, and the first such thing.
    invalid_rules: (usize, usize, Option<String>),
}

impl RouteBuilder {
    fn note(&mut self, what: &str, how: &str) {
        self.notes.push(format!("{}: {what}: {how}", self.id));
    }

    /// A note on a value tether does not implement, which leaves out the match or rule
    /// it is in: the route's status says `UnsupportedValue`.
    fn unsupported(&mut self, what: &str, how: &str) {
        self.note(what, how);
        if self.unsupported.is_none() {
            self.unsupported = Some(format!("{what}: {how}"));
        }
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
                if l.protocol == "HTTPS" {
                    let refused = if self.ctx.tls {
                        listener_certificate(&self.ctx, &ns, l).err().map(|u| u.why)
                    } else {
                        Some(NO_TLS_LISTENER.to_string())
                    };
                    if let Some(why) = refused {
                        self.note(
                            &format!("listener {ns}/{}/{}", p.name, l.name),
                            &format!("HTTPS: {why}; not attached there"),
                        );
                        continue;
                    }
                } else if l.protocol != "HTTP" {
                    self.note(
                        &format!("listener {ns}/{}/{}", p.name, l.name),
                        &format!(
                            "protocol {} is not supported yet (HTTP and HTTPS only); not \
                             attached there",
                            l.protocol
                        ),
                    );
                    continue;
                }
                let allowed = match self.ctx.admits(&ns, &route_ns, l) {
                    Ok(a) => a,
                    Err(how) => {
                        self.note(&format!("listener {ns}/{}/{}", p.name, l.name), &how);
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
                hosts.insert(h.map(|h| h.to_ascii_lowercase()));
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
        let mut invalid: Vec<String> = Vec::new();
        for (i, rule) in route.spec.rules.iter().enumerate() {
            if let Some(why) = self.unsupported.take() {
                invalid.push(why);
            }
            let at = format!("rules[{i}]");
            let Some((filters, redirect)) = self.filters(&at, rule) else {
                continue;
            };
            // Where the rule's matches go: a backend (its index), or an answer.
            let (target, filters): (Result<usize, Answer>, _) = match redirect {
                Some(r) => {
                    if !rule.backend_refs.is_empty() {
                        // The CRD refuses both; a redirect sends nothing anywhere.
                        self.note(
                            &format!("{at}.backendRefs"),
                            "a RequestRedirect rule answers itself; its backendRefs are ignored",
                        );
                    }
                    (Err(Answer::Redirect(r)), filters)
                }
                None => match self.backend_ref(&at, &ns, rule) {
                    Refs::None => continue,
                    // Gateway API: every backendRef invalid, requests get 500.
                    Refs::Invalid => (Err(Answer::Status(500)), RouteFilters::default()),
                    Refs::Usable(refs) => (
                        Ok(self.backend(&mut backends, i, rule, &ns, &route_name, refs)),
                        filters,
                    ),
                },
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
                            self.unsupported(
                                &format!("{at}.path Exact {value}"),
                                "URLRewrite ReplacePrefixMatch needs a PathPrefix match; the \
                                 match is left out",
                            );
                            continue;
                        }
                        if let Err(Answer::Redirect(Redirect {
                            path: Some(PathRewrite::Prefix { .. }),
                            ..
                        })) = &target
                        {
                            self.unsupported(
                                &format!("{at}.path Exact {value}"),
                                "RequestRedirect ReplacePrefixMatch needs a PathPrefix match; \
                                 the match is left out",
                            );
                            continue;
                        }
                        conditions.exact = true
                    }
                    PathMatchType::RegularExpression => {
                        self.unsupported(
                            &format!("{at}.path RegularExpression {value}"),
                            "not supported; the match is left out",
                        );
                        continue;
                    }
                }
                let to = match &target {
                    Ok(index) => {
                        backends[*index]
                            .cookie_paths
                            .insert(session::cookie_path(Some(m)));
                        RouteTo::Backend(backends[*index].name.clone())
                    }
                    Err(a) => RouteTo::Answer(a.clone()),
                };
                for host in hosts {
                    routes.push(Route {
                        host: host.clone(),
                        path_prefix: value.clone(),
                        to: to.clone(),
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
        if let Some(why) = self.unsupported.take() {
            invalid.push(why);
        }
        self.invalid_rules = (
            invalid.len(),
            route.spec.rules.len(),
            invalid.into_iter().next(),
        );
        (backends, routes)
    }

    /// The backend of rule `i` for its usable backendRefs `refs`: an index into
    /// `backends`, which gets a new one unless an earlier rule has the same.
    fn backend(
        &mut self,
        backends: &mut Vec<Backend>,
        i: usize,
        rule: &HTTPRouteRule,
        ns: &str,
        route_name: &str,
        refs: Vec<(String, String, u16, u32)>,
    ) -> usize {
        let at = format!("rules[{i}]");
        // The first Service names the backend, whatever the weights: a weight change
        // (or a Service added after it) keeps the name, so the reload keeps the
        // backend's endpoints and sessions.
        let (service_ns, service, port) = (refs[0].0.clone(), refs[0].1.clone(), refs[0].2);
        let weighted = if refs.len() > 1 { refs } else { Vec::new() };
        let persistence = self.persistence(&at, rule);
        let base = backend_name(ns, route_name, None, &service_ns, &service, port);
        let same = |b: &Backend| {
            b.namespace == service_ns
                && b.service == service
                && b.port == port
                && b.weighted == weighted
        };
        match backends
            .iter()
            .position(|b| same(b) && b.persistence == persistence)
        {
            Some(x) => x,
            None => {
                let mut name = base;
                if backends.iter().any(|b| b.name == name) {
                    let rule_name = rule.name.clone().unwrap_or_else(|| format!("rule-{i}"));
                    name = backend_name(
                        ns,
                        route_name,
                        Some(&rule_name),
                        &service_ns,
                        &service,
                        port,
                    );
                }
                // A rule named `rule-N` beside an unnamed rule N: `#N` is no rule name.
                if backends.iter().any(|b| b.name == name) {
                    name = backend_name(
                        ns,
                        route_name,
                        Some(&format!("#{i}")),
                        &service_ns,
                        &service,
                        port,
                    );
                }
                backends.push(Backend {
                    name,
                    namespace: service_ns.clone(),
                    service: service.clone(),
                    port,
                    weighted: weighted.clone(),
                    persistence,
                    cookie_paths: BTreeSet::new(),
                });
                backends.len() - 1
            }
        }
    }

    /// A rule's filters as tether's [`RouteFilters`], or `None` (with a note) when the
    /// rule has a filter tether does not implement: the rule is left out rather than
    /// routed without what it asks for. A header modifier's entry naming a field tether
    /// owns (`x-tether-*`, `x-forwarded-*`, hop-by-hop, framing, `Host`, a response's
    /// `Set-Cookie`) is dropped with a note: tether's own value stands.
    ///
    /// A `RequestRedirect` comes back apart from the others: the rule answers with it.
    /// Nothing goes to a pod then, so a header modifier beside it changes nothing and is
    /// dropped with a note; a `URLRewrite` beside it is refused (Gateway API: the two
    /// "may not be combined").
    fn filters(
        &mut self,
        at: &str,
        rule: &HTTPRouteRule,
    ) -> Option<(RouteFilters, Option<Redirect>)> {
        let mut out = RouteFilters::default();
        let mut redirect = None;
        for (k, f) in rule.filters.iter().enumerate() {
            let at = format!("{at}.filters[{k}]");
            let (edit, response) = match (f.kind.as_str(), f) {
                (
                    "RequestRedirect",
                    HTTPRouteFilter {
                        request_redirect: Some(r),
                        ..
                    },
                ) => {
                    redirect = Some(self.redirect(&at, r)?);
                    continue;
                }
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
                    self.unsupported(
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
        if redirect.is_some() {
            if out.rewrite.is_some() {
                self.unsupported(
                    &format!("{at}.filters"),
                    "URLRewrite and RequestRedirect may not be combined; the rule is left out",
                );
                return None;
            }
            if !out.is_empty() {
                self.note(
                    &format!("{at}.filters"),
                    "a RequestRedirect rule sends nothing to a pod; its header modifiers \
                     change nothing",
                );
            }
            return Some((RouteFilters::default(), redirect));
        }
        Some((out, None))
    }

    /// A `RequestRedirect`, or `None` (with a note) for a value tether does not know. A
    /// `ReplacePrefixMatch`'s prefix is the route's own, filled in when the route's TOML
    /// is read, as for `URLRewrite`.
    fn redirect(&mut self, at: &str, r: &HTTPRequestRedirectFilter) -> Option<Redirect> {
        let scheme = match r.scheme.as_deref() {
            None => None,
            Some(s @ ("http" | "https")) => Some(s.to_string()),
            Some(s) => {
                self.unsupported(
                    &format!("{at} RequestRedirect scheme {s}"),
                    "not supported (http, https); the rule is left out",
                );
                return None;
            }
        };
        let status = r.status_code.unwrap_or(302);
        let Some(status) = u16::try_from(status)
            .ok()
            .filter(|s| crate::config::REDIRECT_STATUSES.contains(s))
        else {
            self.unsupported(
                &format!("{at} RequestRedirect statusCode {status}"),
                "not supported (301, 302, 303, 307, 308); the rule is left out",
            );
            return None;
        };
        let port = match r.port {
            None => None,
            Some(p) => match u16::try_from(p).ok().filter(|p| *p > 0) {
                Some(p) => Some(p),
                None => {
                    self.unsupported(
                        &format!("{at} RequestRedirect port {p}"),
                        "not a port; the rule is left out",
                    );
                    return None;
                }
            },
        };
        let path = match &r.path {
            None => None,
            Some(p) => Some(self.path_modifier(&format!("{at} RequestRedirect"), p)?),
        };
        Some(Redirect {
            scheme,
            hostname: r.hostname.clone(),
            port,
            path,
            status,
        })
    }

    /// A `URLRewrite`, or `None` (with a note) for a path modifier type tether does not
    /// know. A `ReplacePrefixMatch`'s prefix is the route's own, filled in when the
    /// route's TOML is read.
    fn rewrite(&mut self, at: &str, w: &HTTPURLRewriteFilter) -> Option<Rewrite> {
        let path = match &w.path {
            None => None,
            Some(p) => Some(self.path_modifier(&format!("{at} URLRewrite"), p)?),
        };
        Some(Rewrite {
            hostname: w.hostname.clone(),
            path,
        })
    }

    /// A `URLRewrite`'s or `RequestRedirect`'s path modifier (`what` names the filter),
    /// or `None` (with a note) for a type tether does not know. A `ReplacePrefixMatch`'s
    /// `from` is left empty: reading the route's TOML fills in its own prefix.
    fn path_modifier(&mut self, what: &str, p: &HTTPPathModifier) -> Option<PathRewrite> {
        match (
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
                self.unsupported(
                    &format!("{what} path {kind}"),
                    "not supported (or its value is missing); the rule is left out",
                );
                None
            }
        }
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
                this.unsupported(
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
                    self.unsupported(
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
                    self.unsupported(
                        &format!("{at}.method {method}"),
                        "not supported (tether refuses CONNECT); the match is left out",
                    );
                    return None;
                }
            }
        }
        for (k, h) in m.headers.iter().enumerate() {
            if h.kind.as_deref().unwrap_or("Exact") != "Exact" {
                self.unsupported(
                    &format!("{at}.headers[{k}] {}", h.name),
                    "only Exact header matches are supported; the match is left out",
                );
                return None;
            }
            let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
                self.unsupported(
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
                self.unsupported(
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

    /// The namespaces, Services, ports and weights of a rule's backendRefs, in listed
    /// order (a Service port listed twice counts once, with the sum of its weights);
    /// [`Refs::Invalid`] when it has refs and none is usable (the rule answers 500),
    /// [`Refs::None`] when it has none or every weight is 0. A Service of another
    /// namespace is usable only when a ReferenceGrant allows it, and a Service only when
    /// it exists (when Services are watched).
    fn backend_ref(&mut self, at: &str, ns: &str, rule: &HTTPRouteRule) -> Refs {
        // Fields tether does not implement are reported, never silently ignored; the
        // rule still routes (they refine how, they do not say where).
        if rule.timeouts.is_some() {
            self.note(
                &format!("{at}.timeouts"),
                "not supported; the backend's timeouts apply",
            );
        }
        if rule.retry.is_some() {
            self.note(
                &format!("{at}.retry"),
                "not supported; tether's retry rule applies",
            );
        }
        let mut usable: Vec<&HTTPBackendRef> = Vec::new();
        for (j, r) in rule.backend_refs.iter().enumerate() {
            let what = format!("{at}.backendRefs[{j}] {}", r.name);
            if !r.filters.is_empty() {
                self.note(&what, "filters on a backendRef are not supported; ignored");
            }
            if !r.group.as_deref().unwrap_or("").is_empty()
                || r.kind.as_deref().unwrap_or("Service") != "Service"
            {
                self.note(&what, "only Services are supported; left out");
                continue;
            }
            if let Some(to) = r.namespace.as_deref().filter(|n| *n != ns) {
                if !self.ctx.granted(ns, to, &r.name) {
                    self.note(
                        &what,
                        &format!(
                            "no ReferenceGrant in namespace {to} lets HTTPRoutes of {ns} \
                             refer to it; left out"
                        ),
                    );
                    continue;
                }
            }
            if r.port.and_then(|p| u16::try_from(p).ok()).is_none() {
                self.note(&what, "a Service port is required; left out");
                continue;
            }
            let to = r.namespace.as_deref().unwrap_or(ns);
            if !self.ctx.service_exists(to, &r.name) {
                self.note(
                    &what,
                    &format!("Service {to}/{} does not exist; left out", r.name),
                );
                continue;
            }
            usable.push(r);
        }
        if usable.is_empty() {
            if rule.backend_refs.is_empty() {
                return Refs::None;
            }
            self.note(
                &format!("{at}.backendRefs"),
                "no backendRef is usable: requests the rule matches get 500",
            );
            return Refs::Invalid;
        }
        let mut refs: Vec<(String, String, u16, u32)> = Vec::new();
        for r in usable {
            let service_ns = r.namespace.clone().unwrap_or_else(|| ns.to_string());
            let Some(port) = r.port.and_then(|p| u16::try_from(p).ok()) else {
                continue; // (checked above)
            };
            // The CRD bounds weight to 0..=1000000; anything else is clamped.
            let weight = r
                .weight
                .unwrap_or(1)
                .clamp(0, crate::config::MAX_SERVICE_WEIGHT as i32) as u32;
            match refs
                .iter_mut()
                .find(|(n, s, p, _)| *n == service_ns && *s == r.name && *p == port)
            {
                Some(e) => {
                    e.3 =
                        e.3.saturating_add(weight)
                            .min(crate::config::MAX_SERVICE_WEIGHT)
                }
                None => refs.push((service_ns, r.name.clone(), port, weight)),
            }
        }
        if !refs.is_empty() && refs.iter().all(|(_, _, _, w)| *w == 0) {
            self.note(
                &format!("{at}.backendRefs"),
                "every weight is 0: no request goes anywhere; the rule is left out",
            );
            return Refs::None;
        }
        Refs::Usable(refs)
    }

    /// The rule's `sessionPersistence`, as tether can honour it.
    fn persistence(&mut self, at: &str, rule: &HTTPRouteRule) -> Option<SessionPersistence> {
        let mut p = match rule.session_persistence.clone() {
            Some(p) => p,
            None => self.policy_persistence(at, rule)?,
        };
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

impl RouteBuilder {
    /// The `sessionPersistence` of the XBackendTrafficPolicy of the rule's first Service
    /// that has one (for a rule without its own).
    fn policy_persistence(&mut self, at: &str, rule: &HTTPRouteRule) -> Option<SessionPersistence> {
        let mut found: Vec<&(String, SessionPersistence)> = Vec::new();
        for r in &rule.backend_refs {
            if r.group.as_deref().unwrap_or("").is_empty()
                && r.kind.as_deref().unwrap_or("Service") == "Service"
            {
                let ns = r
                    .namespace
                    .clone()
                    .unwrap_or_else(|| self.namespace.clone());
                if let Some(p) = self.policies.get(&(ns, r.name.clone())) {
                    if !found.iter().any(|f| f.0 == p.0) {
                        found.push(p);
                    }
                }
            }
        }
        let (first, p) = found.first().map(|(n, p)| (n.clone(), p.clone()))?;
        if found.len() > 1 {
            let others: Vec<&str> = found[1..].iter().map(|(n, _)| n.as_str()).collect();
            self.note(
                &format!("{at}.backendRefs"),
                &format!(
                    "its Services have different XBackendTrafficPolicies; {first} (the first \
                     Service's) applies, not {}",
                    others.join(", ")
                ),
            );
        }
        Some(p)
    }
}

/// Each Service's XBackendTrafficPolicy with a `sessionPersistence`, by (namespace,
/// Service): (policy name, its persistence). The oldest policy wins a Service two
/// target.
fn service_policies(
    policies: &[Arc<XBackendTrafficPolicy>],
) -> BTreeMap<(String, String), (String, SessionPersistence)> {
    let mut policies: Vec<&Arc<XBackendTrafficPolicy>> = policies.iter().collect();
    policies.sort_by_key(|p| (p.metadata.creation_timestamp.clone(), id(p.as_ref())));
    let mut out = BTreeMap::new();
    for p in policies {
        let Some(persistence) = &p.spec.session_persistence else {
            continue;
        };
        for t in &p.spec.target_refs {
            if !t.group.is_empty() || t.kind != "Service" {
                continue;
            }
            out.entry((namespace(p.as_ref()), t.name.clone()))
                .or_insert_with(|| (p.name_any(), persistence.clone()));
        }
    }
    out
}

/// Whether sessions of this persistence travel in a cookie.
fn cookie_kind(p: &Option<SessionPersistence>) -> bool {
    p.as_ref()
        .is_none_or(|p| p.kind != Some(SessionPersistenceType::Header))
}

/// Why an `HTTPS` listener cannot be served when tether's listener is cleartext.
const NO_TLS_LISTENER: &str = "tether has no TLS listener ([server.tls]), so it cannot be served";

/// Why an `HTTPS` listener's certificate cannot be used: the listener status reason
/// (`InvalidCertificateRef`, `RefNotPermitted`) and what to tell the operator.
struct Unusable {
    reason: &'static str,
    why: String,
}

impl From<String> for Unusable {
    fn from(why: String) -> Self {
        Unusable {
            reason: "InvalidCertificateRef",
            why,
        }
    }
}

impl From<&str> for Unusable {
    fn from(why: &str) -> Self {
        why.to_string().into()
    }
}

/// The Secret (`namespace`, `name`) an `HTTPS` listener of a Gateway in `gateway_ns`
/// terminates TLS with: its first `certificateRef`, a Secret of the Gateway's namespace,
/// or of another one whose ReferenceGrant lets the Gateway's namespace refer to it.
/// Or why the listener cannot be served.
fn listener_certificate(
    ctx: &Context,
    gateway_ns: &str,
    l: &Listener,
) -> Result<(String, String), Unusable> {
    let tls = l.tls.as_ref();
    match tls.and_then(|t| t.mode.as_deref()).unwrap_or("Terminate") {
        "Terminate" => {}
        "Passthrough" => {
            return Err("tls.mode Passthrough is not supported (tether terminates TLS)".into())
        }
        other => return Err(format!("tls.mode {other} is not supported").into()),
    }
    let Some(r) = tls.and_then(|t| t.certificate_refs.first()) else {
        return Err("no tls.certificateRefs".into());
    };
    if !r.group.as_deref().unwrap_or("").is_empty()
        || r.kind.as_deref().unwrap_or("Secret") != "Secret"
    {
        return Err(format!(
            "certificateRef {} is not a core Secret; only Secrets are supported",
            r.name
        )
        .into());
    }
    let ns = r.namespace.as_deref().unwrap_or(gateway_ns);
    if ns != gateway_ns && !ctx.grants_ref("Gateway", gateway_ns, ns, "Secret", &r.name) {
        return Err(Unusable {
            reason: "RefNotPermitted",
            why: format!(
                "certificateRef {ns}/{}: no ReferenceGrant in namespace {ns} lets Gateways \
                 of {gateway_ns} refer to it",
                r.name
            ),
        });
    }
    Ok((ns.to_string(), r.name.clone()))
}

/// The certificates the `HTTPS` listeners of tether's Gateways terminate TLS with, one
/// [`Binding`] per listener hostname, and notes on listeners whose certificate is not
/// used as written. Gateways in namespace/name order, listeners in order: a hostname
/// two listeners claim keeps the first one's certificate.
pub fn certificates(world: &World<'_>, controller: &str) -> (Vec<Binding>, Vec<String>) {
    let (classes, gateways) = (world.classes, world.gateways);
    let ctx = Context::of(world);
    let ours: BTreeSet<String> = classes
        .iter()
        .filter(|c| c.spec.controller_name == controller)
        .map(|c| c.name_any())
        .collect();
    let mut gateways: Vec<&Arc<Gateway>> = gateways
        .iter()
        .filter(|g| ours.contains(&g.spec.gateway_class_name))
        .collect();
    gateways.sort_by_key(|g| id(g.as_ref()));
    let mut bindings = Vec::new();
    let mut notes = Vec::new();
    for g in gateways {
        let ns = namespace(g.as_ref());
        for l in g.spec.listeners.iter().filter(|l| l.protocol == "HTTPS") {
            let from = format!("Gateway {}/{} listener {}", ns, g.name_any(), l.name);
            let (secret_ns, secret) = match listener_certificate(&ctx, &ns, l) {
                Ok(s) => s,
                Err(u) => {
                    notes.push(format!("{from}: {}", u.why));
                    continue;
                }
            };
            let refs = l.tls.as_ref().map_or(0, |t| t.certificate_refs.len());
            if refs > 1 {
                notes.push(format!(
                    "{from}: {} certificateRefs; tether serves the first, {secret}",
                    refs
                ));
            }
            let Some(host) = &l.hostname else {
                notes.push(format!(
                    "{from}: no hostname; tether picks certificates by SNI host, so the \
                     config file's certificate ([server.tls]) serves it, not {secret}"
                ));
                continue;
            };
            bindings.push(Binding {
                host: host.to_ascii_lowercase(),
                namespace: secret_ns,
                name: secret,
                from,
            });
        }
    }
    (bindings, notes)
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
        if b.weighted.is_empty() {
            let _ = writeln!(
                out,
                "[[backend]]\nname = {}\nkubernetes = {{ namespace = {}, service = {}, port = {} }}",
                q(&b.name),
                q(&b.namespace),
                q(&b.service),
                b.port
            );
        } else {
            let _ = writeln!(out, "[[backend]]\nname = {}\nkubernetes = [", q(&b.name));
            for (namespace, service, port, weight) in &b.weighted {
                let _ = writeln!(
                    out,
                    "  {{ namespace = {}, service = {}, port = {port}, weight = {weight} }},",
                    q(namespace),
                    q(service),
                );
            }
            let _ = writeln!(out, "]");
        }
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
            match &r.to {
                RouteTo::Backend(b) => RouteTo::Backend(b.as_str()),
                RouteTo::Answer(a) => RouteTo::Answer(a.clone()),
            },
            &r.matches,
        ));
        out.push_str(&crate::config::route_filters_toml(&r.filters));
    }
    out
}

/// The name of an HTTPRoute's backend: `httproute:namespace:route:service:port`, with
/// `rule:` before the Service for a second backend of the route to the same Service
/// port, and `service.namespace` (its DNS name's first labels) for a Service of another
/// namespace than the route's.
///
/// Unique by construction, so the merge never maps one object's routes to another's
/// backend: `:` is in no Kubernetes name and in no Ingress backend's name
/// (`namespace.ingress.service.port`, which `tether migrate` writes too), so the
/// `httproute:` prefix keeps the two kinds apart; the route's name, the only part that
/// may hold dots, sits between two `:`; a Service's namespace is told from a rule by
/// where it is (`.` in the Service part, never a part of its own); Services and
/// namespaces are DNS labels, without dots. Stable: made of names and the first
/// Service's port only, never of weights or rule order (save `rule-N`, as before), so a
/// restart or an edit that keeps them keeps the backend, its endpoints and sessions.
fn backend_name(
    ns: &str,
    route: &str,
    rule: Option<&str>,
    service_ns: &str,
    service: &str,
    port: u16,
) -> String {
    let service = if service_ns == ns {
        service.to_string()
    } else {
        format!("{service}.{service_ns}")
    };
    match rule {
        None => format!("httproute:{ns}:{route}:{service}:{port}"),
        Some(rule) => format!("httproute:{ns}:{route}:{rule}:{service}:{port}"),
    }
}

/// An object's namespace (`default` when unset).
fn namespace<K: ResourceExt>(o: &K) -> String {
    o.namespace().unwrap_or_else(|| "default".into())
}

/// `namespace/name` of an object.
fn id<K: ResourceExt>(o: &K) -> String {
    format!("{}/{}", namespace(o), o.name_any())
}

// === the world a build reads ===

/// Everything a build and the status read, as the reflector stores hold it.
#[derive(Default, Clone, Copy)]
pub struct World<'a> {
    /// Every GatewayClass.
    pub classes: &'a [Arc<GatewayClass>],
    /// Every Gateway.
    pub gateways: &'a [Arc<Gateway>],
    /// Every HTTPRoute.
    pub routes: &'a [Arc<HTTPRoute>],
    /// Every ReferenceGrant: a backendRef to a Service of another namespace needs one.
    pub grants: &'a [Arc<ReferenceGrantV1beta1>],
    /// Every Namespace, for `allowedRoutes.namespaces.from: Selector`.
    pub namespaces: &'a [Arc<Namespace>],
    /// Every Service (metadata), for `BackendNotFound`; `None`: not watched, every
    /// Service is taken to exist.
    pub services: Option<&'a [Arc<PartialObjectMeta<Service>>]>,
    /// Every XBackendTrafficPolicy: session persistence attached to Services.
    pub policies: &'a [Arc<XBackendTrafficPolicy>],
    /// tether has a TLS listener to serve `HTTPS` listeners on.
    pub tls: bool,
    /// The Secrets `HTTPS` listeners name that hold no usable certificate, as
    /// [`crate::sni`] found them; `None` (or a Secret not in it): not known to be
    /// unusable, the listener's `ResolvedRefs` stays True.
    pub certificates: Option<&'a crate::sni::Verdicts>,
}

/// What a build asks of the world beyond the routes: grants, labels, Services.
#[derive(Default)]
struct Context {
    /// Namespace → its labels.
    labels: BTreeMap<String, BTreeMap<String, String>>,
    grants: Vec<Arc<ReferenceGrantV1beta1>>,
    /// (namespace, name) of every Service, when watched.
    services: Option<BTreeSet<(String, String)>>,
    /// tether has a TLS listener to serve `HTTPS` listeners on.
    tls: bool,
}

impl Context {
    fn of(world: &World<'_>) -> Context {
        Context {
            labels: world
                .namespaces
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect(),
            grants: world.grants.to_vec(),
            services: world.services.map(|s| {
                s.iter()
                    .map(|s| (namespace(s.as_ref()), s.name_any()))
                    .collect()
            }),
            tls: world.tls,
        }
    }

    /// Whether listener `l` of a Gateway in `gateway_ns` admits HTTPRoutes of
    /// `route_ns` (`allowedRoutes`: its kinds, then its namespaces); `Err` says why a
    /// listener's setting cannot be honoured.
    fn admits(&self, gateway_ns: &str, route_ns: &str, l: &Listener) -> Result<bool, String> {
        let allowed = l.allowed_routes.as_ref();
        if !route_kinds(l).0.iter().any(|k| k.kind == "HTTPRoute") {
            return Ok(false);
        }
        let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
        match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
            "Same" => Ok(gateway_ns == route_ns),
            "All" => Ok(true),
            "Selector" => {
                let Some(selector) = namespaces.and_then(|n| n.selector.as_ref()) else {
                    return Err(
                        "allowedRoutes.namespaces.from Selector without a selector; not \
                         attached there"
                            .into(),
                    );
                };
                let none = BTreeMap::new();
                let labels = self.labels.get(route_ns).unwrap_or(&none);
                selects(selector, labels).map_err(|e| {
                    format!("allowedRoutes.namespaces.selector: {e}; not attached there")
                })
            }
            other => Err(format!(
                "allowedRoutes.namespaces.from {other} is not supported; not attached there"
            )),
        }
    }

    /// Whether Service `namespace/name` exists (every one does when Services are not
    /// watched).
    fn service_exists(&self, namespace: &str, name: &str) -> bool {
        self.services
            .as_ref()
            .is_none_or(|s| s.contains(&(namespace.to_string(), name.to_string())))
    }

    /// Whether a ReferenceGrant in `to` lets HTTPRoutes of `from` refer to Service
    /// `service` there.
    fn granted(&self, from: &str, to: &str, service: &str) -> bool {
        self.grants_ref("HTTPRoute", from, to, "Service", service)
    }

    /// Whether a ReferenceGrant in namespace `to` lets objects of Gateway API kind
    /// `from_kind` in namespace `from` refer to the core object `to_kind` `name` there
    /// (a grant's `to` without a name grants every object of the kind).
    fn grants_ref(&self, from_kind: &str, from: &str, to: &str, to_kind: &str, name: &str) -> bool {
        self.grants
            .iter()
            .filter(|g| namespace(g.as_ref()) == to)
            .any(|g| {
                g.spec
                    .from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from)
                    && g.spec.to.iter().any(|t| {
                        t.group.is_empty()
                            && t.kind == to_kind
                            && t.name.as_deref().is_none_or(|n| n == name)
                    })
            })
    }
}

/// Why tether does not serve a listener of one of its Gateways.
enum Unserved {
    /// Its protocol (or `HTTPS` without a TLS listener in tether): `UnsupportedProtocol`.
    Protocol(String),
    /// Its `HTTPS` certificate cannot be used (`InvalidCertificateRef`, or
    /// `RefNotPermitted` for a Secret of another namespace without a ReferenceGrant).
    Certificate(Unusable),
}

/// Whether tether serves listener `l` of a Gateway in `gateway_ns`: `HTTP` always,
/// `HTTPS` when tether has a TLS listener (`tls`) and the listener's certificate is a
/// Secret it can use. Status and attachment ask here; the build's `attach` also says
/// why not in its notes.
fn served(ctx: &Context, gateway_ns: &str, l: &Listener) -> Result<(), Unserved> {
    match l.protocol.as_str() {
        "HTTP" => Ok(()),
        "HTTPS" if !ctx.tls => Err(Unserved::Protocol(NO_TLS_LISTENER.into())),
        "HTTPS" => listener_certificate(ctx, gateway_ns, l)
            .map(drop)
            .map_err(Unserved::Certificate),
        other => Err(Unserved::Protocol(format!(
            "protocol {other} is not supported (HTTP and HTTPS only)"
        ))),
    }
}

/// The route kinds a listener serves (HTTPRoute, for `HTTP`), and whether its
/// `allowedRoutes.kinds` names kinds tether does not serve.
fn route_kinds(l: &Listener) -> (Vec<RouteGroupKind>, bool) {
    let http = RouteGroupKind {
        group: Some(GROUP.into()),
        kind: "HTTPRoute".into(),
    };
    if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS") {
        return (Vec::new(), false);
    }
    let asked = l
        .allowed_routes
        .as_ref()
        .map(|a| a.kinds.as_slice())
        .unwrap_or_default();
    if asked.is_empty() {
        return (vec![http], false);
    }
    let is_http =
        |k: &RouteGroupKind| k.kind == "HTTPRoute" && k.group.as_deref().unwrap_or(GROUP) == GROUP;
    let supported = if asked.iter().any(is_http) {
        vec![http]
    } else {
        Vec::new()
    };
    (supported, asked.iter().any(|k| !is_http(k)))
}

/// Whether `labels` satisfy a Kubernetes label selector (`matchLabels` and every
/// `matchExpressions` entry; an empty selector selects everything).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut by_expression = true;
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        by_expression &= match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("operator {other} is not a label selector operator")),
        };
    }
    Ok(by_label && by_expression)
}

// === status ===

/// A status write the Lease holder makes: an object of tether's whose status differs
/// from what it should say.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusUpdate {
    /// A GatewayClass of tether's.
    GatewayClass {
        /// Its name.
        name: String,
        /// The resourceVersion the status was computed from.
        version: Option<String>,
        /// The whole status (tether owns it).
        status: GatewayClassStatus,
    },
    /// A Gateway of tether's classes.
    Gateway {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The resourceVersion the status was computed from.
        version: Option<String>,
        /// The whole status (tether owns it).
        status: GatewayStatus,
    },
    /// An HTTPRoute with a parentRef to one of tether's Gateways (or an entry of
    /// tether's left over from one).
    HTTPRoute {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The resourceVersion the status was computed from: the patch carries it, so a
        /// route whose `parents` another controller changed meanwhile is not clobbered.
        version: Option<String>,
        /// The whole `parents` list: other controllers' entries unchanged, then tether's.
        status: HTTPRouteStatus,
    },
}

/// A condition as it should be, keeping `lastTransitionTime` from `previous` when its
/// status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        last_transition_time: since,
        message: message.into(),
        observed_generation: generation,
        reason: reason.into(),
        status: status.into(),
        type_: type_.into(),
    }
}

/// How one parentRef of a route fares at one of tether's Gateways.
struct ParentVerdict {
    /// (reason, message) of `Accepted`; `None`: accepted.
    refused: Option<(&'static str, String)>,
    /// Indices of the Gateway's listeners the route attaches to through it.
    listeners: Vec<usize>,
}

/// Which listeners of `gateway` the route attaches to through `p`, or why none.
fn judge(
    ctx: &Context,
    route: &HTTPRoute,
    p: &ParentReference,
    gateway: &Gateway,
) -> ParentVerdict {
    let route_ns = namespace(route);
    let gateway_ns = namespace(gateway);
    let named: Vec<(usize, &Listener)> = gateway
        .spec
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            p.section_name.as_ref().is_none_or(|s| *s == l.name)
                && p.port.is_none_or(|port| port == l.port)
        })
        .collect();
    let refuse = |reason, message: String| ParentVerdict {
        refused: Some((reason, message)),
        listeners: Vec::new(),
    };
    if named.is_empty() {
        return refuse(
            "NoMatchingParent",
            "no listener of the Gateway has this sectionName and port".into(),
        );
    }
    let admitted: Vec<(usize, &Listener)> = named
        .into_iter()
        .filter(|(_, l)| {
            served(ctx, &gateway_ns, l).is_ok() && ctx.admits(&gateway_ns, &route_ns, l) == Ok(true)
        })
        .collect();
    if admitted.is_empty() {
        return refuse(
            "NotAllowedByListeners",
            format!("no HTTP listener it names admits HTTPRoutes of namespace {route_ns}"),
        );
    }
    let listeners: Vec<usize> = admitted
        .into_iter()
        .filter(|(_, l)| !intersect(l.hostname.as_deref(), &route.spec.hostnames).is_empty())
        .map(|(i, _)| i)
        .collect();
    if listeners.is_empty() {
        return refuse(
            "NoMatchingListenerHostname",
            "no hostname of the route matches the listeners' hostnames".into(),
        );
    }
    ParentVerdict {
        refused: None,
        listeners,
    }
}

/// `ResolvedRefs` of a route: (reason, message) of the first backendRef tether cannot
/// use, or `None`.
fn unresolved(ctx: &Context, route: &HTTPRoute) -> Option<(&'static str, String)> {
    let ns = namespace(route);
    for (i, rule) in route.spec.rules.iter().enumerate() {
        for (j, r) in rule.backend_refs.iter().enumerate() {
            let at = format!("rules[{i}].backendRefs[{j}]");
            if !r.group.as_deref().unwrap_or("").is_empty()
                || r.kind.as_deref().unwrap_or("Service") != "Service"
            {
                return Some(("InvalidKind", format!("{at}: only Services are supported")));
            }
            let to = r.namespace.clone().unwrap_or_else(|| ns.clone());
            if to != ns && !ctx.granted(&ns, &to, &r.name) {
                return Some((
                    "RefNotPermitted",
                    format!(
                        "{at}: Service {to}/{}: no ReferenceGrant in {to} allows it",
                        r.name
                    ),
                ));
            }
            if ctx
                .services
                .as_ref()
                .is_some_and(|s| !s.contains(&(to.clone(), r.name.clone())))
            {
                return Some((
                    "BackendNotFound",
                    format!("{at}: Service {to}/{} does not exist", r.name),
                ));
            }
        }
    }
    None
}

/// The status writes that bring tether's GatewayClasses, Gateways and HTTPRoutes to
/// what they should say (only those that differ, so a write's own echo asks for none).
///
/// `invalid`: by `namespace/name`, the routes with rules tether leaves out for values it
/// does not implement ([`Compiled::invalid`]; every rule, or a route that does not
/// compile at all: `Accepted` False `UnsupportedValue`; some: `PartiallyInvalid` True). `address`: the Gateway's
/// `status.addresses`. `now`: the `lastTransitionTime` of conditions that change.
pub fn status(
    world: &World<'_>,
    controller: &str,
    address: Option<&str>,
    invalid: &BTreeMap<String, Invalid>,
    now: &Time,
) -> Vec<StatusUpdate> {
    let ctx = Context::of(world);
    let mut out = Vec::new();
    let ours: BTreeSet<String> = world
        .classes
        .iter()
        .filter(|c| c.spec.controller_name == controller)
        .map(|c| c.name_any())
        .collect();
    for class in world
        .classes
        .iter()
        .filter(|c| c.spec.controller_name == controller)
    {
        let previous = class.status.clone().unwrap_or_default();
        let generation = class.metadata.generation;
        let wanted = GatewayClassStatus {
            conditions: vec![condition(
                &previous.conditions,
                "Accepted",
                true,
                "Accepted",
                &format!("handled by {controller}"),
                generation,
                now,
            )],
        };
        if wanted != previous {
            out.push(StatusUpdate::GatewayClass {
                name: class.name_any(),
                version: class.metadata.resource_version.clone(),
                status: wanted,
            });
        }
    }
    let gateways: BTreeMap<(String, String), &Gateway> = world
        .gateways
        .iter()
        .filter(|g| ours.contains(&g.spec.gateway_class_name))
        .map(|g| ((namespace(g.as_ref()), g.name_any()), g.as_ref()))
        .collect();
    // Per Gateway: the routes attached to each listener.
    let mut attached: BTreeMap<(String, String), Vec<BTreeSet<String>>> = gateways
        .iter()
        .map(|(k, g)| (k.clone(), vec![BTreeSet::new(); g.spec.listeners.len()]))
        .collect();
    for route in world.routes {
        let route_ns = namespace(route.as_ref());
        let route_id = id(route.as_ref());
        let previous = route.status.clone().unwrap_or_default();
        let resolved = unresolved(&ctx, route);
        let generation = route.metadata.generation;
        let mut mine = Vec::new();
        for p in &route.spec.parent_refs {
            if p.group.as_deref().unwrap_or(GROUP) != GROUP
                || p.kind.as_deref().unwrap_or("Gateway") != "Gateway"
            {
                continue;
            }
            let key = (
                p.namespace.clone().unwrap_or_else(|| route_ns.clone()),
                p.name.clone(),
            );
            let Some(gateway) = gateways.get(&key) else {
                continue;
            };
            let mut verdict = judge(&ctx, route, p, gateway);
            let invalid = invalid.get(&route_id);
            if let Some(Invalid { all: true, message }) = invalid {
                if verdict.refused.is_none() {
                    verdict.refused = Some(("UnsupportedValue", message.clone()));
                }
            }
            if verdict.refused.is_none() {
                if let Some(per_listener) = attached.get_mut(&key) {
                    for i in &verdict.listeners {
                        if let Some(set) = per_listener.get_mut(*i) {
                            set.insert(route_id.clone());
                        }
                    }
                }
            }
            let before = previous
                .parents
                .iter()
                .find(|e| e.controller_name == controller && e.parent_ref == *p)
                .map(|e| e.conditions.as_slice())
                .unwrap_or_default();
            let (accepted_reason, accepted_message) = verdict
                .refused
                .clone()
                .unwrap_or(("Accepted", "attached".into()));
            let (refs_reason, refs_message) = resolved
                .clone()
                .unwrap_or(("ResolvedRefs", "every backendRef resolves".into()));
            mine.push(RouteParentStatus {
                parent_ref: p.clone(),
                controller_name: controller.into(),
                conditions: vec![
                    condition(
                        before,
                        "Accepted",
                        verdict.refused.is_none(),
                        accepted_reason,
                        &accepted_message,
                        generation,
                        now,
                    ),
                    condition(
                        before,
                        "ResolvedRefs",
                        resolved.is_none(),
                        refs_reason,
                        &refs_message,
                        generation,
                        now,
                    ),
                ]
                .into_iter()
                .chain(match invalid {
                    // Some rules are left out, the others route (RouteConditionPartiallyInvalid).
                    Some(Invalid {
                        all: false,
                        message,
                    }) if verdict.refused.is_none() => Some(condition(
                        before,
                        "PartiallyInvalid",
                        true,
                        "UnsupportedValue",
                        message,
                        generation,
                        now,
                    )),
                    _ => None,
                })
                .collect(),
            });
        }
        let mut parents: Vec<RouteParentStatus> = previous
            .parents
            .iter()
            .filter(|e| e.controller_name != controller)
            .cloned()
            .collect();
        parents.extend(mine);
        if parents != previous.parents {
            out.push(StatusUpdate::HTTPRoute {
                namespace: route_ns,
                name: route.name_any(),
                version: route.metadata.resource_version.clone(),
                status: HTTPRouteStatus { parents },
            });
        }
    }
    for (key, gateway) in &gateways {
        let previous = gateway.status.clone().unwrap_or_default();
        let generation = gateway.metadata.generation;
        let counts = attached.remove(key).unwrap_or_default();
        let listeners = gateway
            .spec
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let before = previous
                    .listeners
                    .iter()
                    .find(|s| s.name == l.name)
                    .map(|s| s.conditions.as_slice())
                    .unwrap_or_default();
                let (mut supported_kinds, invalid_kinds) = route_kinds(l);
                let served = served(&ctx, &key.0, l);
                if matches!(served, Err(Unserved::Protocol(_))) {
                    supported_kinds.clear();
                }
                let c = |t: &str, ok: bool, reason: &str, message: &str| {
                    condition(before, t, ok, reason, message, generation, now)
                };
                // A Secret the listener may refer to, which the Secrets' watcher found
                // missing or unusable: routes still attach (its hosts get the config
                // file's certificate, or the pair the Secret held before).
                let secret = match (&served, l.protocol.as_str(), world.certificates) {
                    (Ok(()), "HTTPS", Some(verdicts)) => listener_certificate(&ctx, &key.0, l)
                        .ok()
                        .and_then(|secret| verdicts.get(&secret))
                        .map(|why| Unusable::from(why.as_str())),
                    _ => None,
                };
                let certificate = match &served {
                    Err(Unserved::Certificate(u)) => Some(u),
                    _ => secret.as_ref(),
                };
                let conditions = vec![
                    match &served {
                        Err(Unserved::Protocol(why)) => {
                            c("Accepted", false, "UnsupportedProtocol", why)
                        }
                        _ => c("Accepted", true, "Accepted", "served"),
                    },
                    if served.is_ok() && certificate.is_none() && !supported_kinds.is_empty() {
                        c("Programmed", true, "Programmed", "served")
                    } else {
                        c("Programmed", false, "Invalid", "not served")
                    },
                    if let Some(u) = certificate {
                        c("ResolvedRefs", false, u.reason, &u.why)
                    } else if invalid_kinds {
                        c(
                            "ResolvedRefs",
                            false,
                            "InvalidRouteKinds",
                            "allowedRoutes.kinds: only HTTPRoute is supported",
                        )
                    } else {
                        c("ResolvedRefs", true, "ResolvedRefs", "resolved")
                    },
                    c("Conflicted", false, "NoConflicts", "no conflicts"),
                ];
                ListenerStatus {
                    name: l.name.clone(),
                    supported_kinds,
                    attached_routes: counts
                        .get(i)
                        .map_or(0, |s| i32::try_from(s.len()).unwrap_or(i32::MAX)),
                    conditions,
                }
            })
            .collect();
        let addresses = address
            .map(|a| {
                let kind = if a.parse::<std::net::IpAddr>().is_ok() {
                    "IPAddress"
                } else {
                    "Hostname"
                };
                vec![GatewayStatusAddress {
                    kind: Some(kind.into()),
                    value: a.into(),
                }]
            })
            .unwrap_or_default();
        let wanted = GatewayStatus {
            addresses,
            conditions: vec![
                condition(
                    &previous.conditions,
                    "Accepted",
                    true,
                    "Accepted",
                    "handled by tether",
                    generation,
                    now,
                ),
                condition(
                    &previous.conditions,
                    "Programmed",
                    true,
                    "Programmed",
                    "served on tether's proxy listener",
                    generation,
                    now,
                ),
            ],
            listeners,
        };
        if wanted != previous {
            out.push(StatusUpdate::Gateway {
                namespace: key.0.clone(),
                name: key.1.clone(),
                version: gateway.metadata.resource_version.clone(),
                status: wanted,
            });
        }
    }
    out
}

/// Watches GatewayClasses, Gateways and HTTPRoutes and publishes what tether's route.
pub struct Controller {
    /// The API client.
    pub client: Client,
    /// `[kubernetes.gateway]`.
    pub settings: GatewaySettings,
    /// Where each burst's status writes go (to [`super::status::Writer`], which writes
    /// them on the Lease holder only); `None`: status is not written.
    pub status: Option<watch::Sender<Arc<Vec<StatusUpdate>>>>,
    /// Where the certificates of `HTTPS` listeners go ([`crate::sni::Watcher`]);
    /// `None` when tether has no TLS listener, and so serves no `HTTPS` listener.
    pub tls: Option<watch::Sender<Arc<Vec<Binding>>>>,
    /// What [`crate::sni::Watcher`] finds of those Secrets, for listener status (each
    /// change is a burst); `None` without a TLS listener.
    pub secrets: Option<watch::Receiver<Arc<crate::sni::Verdicts>>>,
}

impl Controller {
    /// Runs until dropped, publishing every change of what routes on `tx`.
    pub async fn run(self, tx: watch::Sender<Arc<Compiled>>) {
        let (classes, class_changes) = objects::reflect::<GatewayClass>(&self.client);
        let (gateways, gateway_changes) = objects::reflect::<Gateway>(&self.client);
        let (routes, route_changes) = objects::reflect::<HTTPRoute>(&self.client);
        let (grants, grant_changes) = objects::reflect::<ReferenceGrantV1beta1>(&self.client);
        let (namespaces, namespace_changes) = objects::reflect::<Namespace>(&self.client);
        let (services, service_changes) =
            objects::reflect::<PartialObjectMeta<Service>>(&self.client);
        // Experimental channel: a cluster without its CRD routes as if it had none.
        let (policies, policy_changes) =
            objects::reflect_optional::<XBackendTrafficPolicy>(&self.client);
        let mut kinds = vec![
            class_changes,
            gateway_changes,
            route_changes,
            grant_changes,
            namespace_changes,
            service_changes,
            policy_changes,
        ];
        if let Some(rx) = &self.secrets {
            kinds.push(objects::published(rx.clone()));
        }
        let mut bursts = Bursts::new(kinds, self.settings.debounce, "gateway api");
        let mut published = tx.borrow().fingerprint();
        let mut reported: BTreeSet<String> = BTreeSet::new();
        while bursts.next().await.is_some() {
            let (classes, gateways, routes) = (classes.state(), gateways.state(), routes.state());
            let (grants, namespaces, services) =
                (grants.state(), namespaces.state(), services.state());
            let policies = policies.state();
            let verdicts = self.secrets.as_ref().map(|rx| rx.borrow().clone());
            let world = World {
                classes: &classes,
                gateways: &gateways,
                routes: &routes,
                grants: &grants,
                namespaces: &namespaces,
                services: Some(&services),
                policies: &policies,
                tls: self.tls.is_some(),
                certificates: verdicts.as_deref(),
            };
            let (compiled, errors, mut notes) =
                Compiled::build_in(&world, &self.settings.controller_name);
            if let Some(tx) = &self.status {
                let mut invalid = compiled.invalid.clone();
                for Error::Compile { route, source } in &errors {
                    invalid.insert(
                        route.clone(),
                        Invalid {
                            all: true,
                            message: format!("does not validate as tether settings: {source}"),
                        },
                    );
                }
                let now = Time(k8s_openapi::jiff::Timestamp::now());
                let updates = status(
                    &world,
                    &self.settings.controller_name,
                    self.settings.address.as_deref(),
                    &invalid,
                    &now,
                );
                let _ = tx.send(Arc::new(updates));
            }
            let (bindings, cert_notes) = certificates(&world, &self.settings.controller_name);
            match &self.tls {
                Some(tls) => {
                    notes.extend(cert_notes);
                    tls.send_if_modified(|b| {
                        let changed = **b != bindings;
                        if changed {
                            *b = Arc::new(bindings);
                        }
                        changed
                    });
                }
                None => notes.extend(
                    bindings
                        .iter()
                        .map(|b| format!("{}: HTTPS: {NO_TLS_LISTENER}", b.from)),
                ),
            }
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
            // `sel` (Selector without a selector: invalid) and `tls` (HTTPS) do not attach.
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
        assert_eq!(names, vec!["httproute:infra:e:web:8080"]);
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
        // A wildcard host routes every host under it (the router's suffix match).
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "w",
            json!({"parentRefs": [{"name": "gw", "sectionName": "web"}],
                   "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
        );
        let (c, _, notes) = Compiled::build(&classes, &gateways, &[r], OURS);
        assert_eq!(hosts(&c), vec![(Some("*.example.com"), "/")]);
        assert!(!notes.iter().any(|n| n.contains("wildcard")), "{notes:?}");
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
                "httproute:infra:shop:web:80",
                "httproute:infra:shop:rule-1:web:80",
                "httproute:infra:shop:a:80"
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
        let crate::config::Source::Weighted(split) = &c.backends[2].source else {
            panic!("{:?}", c.backends[2].source)
        };
        let split: Vec<_> = split
            .iter()
            .map(|s| (s.source.service.as_str(), s.weight))
            .collect();
        assert_eq!(split, [("a", 1), ("b", 3)]);
    }

    #[test]
    fn fields_tether_does_not_implement_are_reported_and_the_rule_still_routes() {
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "shop",
            json!({
                "parentRefs": [{"name": "gw", "sectionName": "web"}],
                "hostnames": ["shop.example.com"],
                "rules": [{
                    "timeouts": {"request": "10s"},
                    "retry": {"attempts": 3},
                    "backendRefs": [{"name": "web", "port": 80, "filters": [
                        {"type": "RequestHeaderModifier",
                         "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]}}]}]}],
            }),
        );
        let (c, errors, notes) = Compiled::build(&classes, &gateways, &[r], OURS);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.routes.len(), 1, "the rule routes");
        for what in ["timeouts", "retry", "filters on a backendRef"] {
            assert!(notes.iter().any(|n| n.contains(what)), "{what}: {notes:?}");
        }
    }

    #[test]
    fn a_rule_with_several_services_is_one_weighted_backend_named_without_its_weights() {
        let (classes, gateways) = world();
        let with = |weights: [i64; 3]| {
            route(
                "infra",
                "shop",
                json!({
                    "parentRefs": [{"name": "gw", "sectionName": "web"}],
                    "hostnames": ["shop.example.com"],
                    "rules": [{"backendRefs": [
                        {"name": "web", "port": 80, "weight": weights[0]},
                        {"name": "canary", "port": 80, "weight": weights[1]},
                        {"name": "old", "port": 80, "weight": weights[2]}]}],
                }),
            )
        };
        let compile = |r| {
            let (c, errors, _) = Compiled::build(&classes, &gateways, &[r], OURS);
            assert!(errors.is_empty(), "{errors:?}");
            c
        };
        let weights = |c: &Compiled| match &c.backends[0].source {
            crate::config::Source::Weighted(s) => s.iter().map(|s| s.weight).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let before = compile(with([3, 1, 0]));
        let after = compile(with([1, 3, 0]));
        assert_eq!(before.backends.len(), 1);
        assert_eq!(before.backends[0].name, "httproute:infra:shop:web:80");
        assert_eq!(after.backends[0].name, before.backends[0].name);
        // Weight 0 stays in the backend (its pods keep their sessions).
        assert_eq!(weights(&before), [3, 1, 0]);
        assert_eq!(weights(&after), [1, 3, 0]);
        // Every weight 0: nothing to send new sessions to; the rule is left out.
        let (c, _, notes) = Compiled::build(&classes, &gateways, &[with([0, 0, 0])], OURS);
        assert!(c.routes.is_empty());
        assert!(
            notes.iter().any(|n| n.contains("every weight is 0")),
            "{notes:?}"
        );
    }

    fn policy(
        ns: &str,
        name: &str,
        created: &str,
        services: &[&str],
        cookie: &str,
    ) -> Arc<XBackendTrafficPolicy> {
        let targets: Vec<_> = services
            .iter()
            .map(|s| json!({"group": "", "kind": "Service", "name": s}))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.x-k8s.io/v1alpha1",
                "kind": "XBackendTrafficPolicy",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
                "spec": {"targetRefs": targets,
                         "sessionPersistence": {"sessionName": cookie, "absoluteTimeout": "1h"}}}))
            .unwrap(),
        )
    }

    #[test]
    fn a_backend_traffic_policy_gives_its_services_persistence_unless_the_rule_has_its_own() {
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "shop",
            json!({
                "parentRefs": [{"name": "gw", "sectionName": "web"}],
                "hostnames": ["shop.example.com"],
                "rules": [
                    {"matches": [{"path": {"value": "/a"}}],
                     "backendRefs": [{"name": "web", "port": 80}]},
                    {"matches": [{"path": {"value": "/b"}}],
                     "backendRefs": [{"name": "api", "port": 80}],
                     "sessionPersistence": {"sessionName": "OWN"}},
                    {"matches": [{"path": {"value": "/c"}}],
                     "backendRefs": [{"name": "other", "port": 80}]},
                ],
            }),
        );
        let policies = [
            // Younger, so the older POLICY wins web.
            policy("infra", "late", "2026-02-01T00:00:00Z", &["web"], "LATE"),
            policy(
                "infra",
                "p",
                "2026-01-01T00:00:00Z",
                &["web", "api"],
                "POLICY",
            ),
            // Another namespace's policy does not reach infra's Services.
            policy(
                "elsewhere",
                "x",
                "2025-01-01T00:00:00Z",
                &["other"],
                "ELSEWHERE",
            ),
        ];
        let (c, errors, _) =
            Compiled::build_with_policies(&classes, &gateways, &[r], &policies, OURS);
        assert!(errors.is_empty(), "{errors:?}");
        let cookies: Vec<(&str, &str)> = c
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.affinity.cookie.name.as_str()))
            .collect();
        assert_eq!(
            cookies,
            [
                ("httproute:infra:shop:web:80", "POLICY"),
                ("httproute:infra:shop:api:80", "OWN"),
                ("httproute:infra:shop:other:80", "tether"),
            ]
        );
        assert_eq!(
            c.backends[0].affinity.absolute_timeout,
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn https_listeners_terminate_with_their_secret_and_refuse_what_tether_cannot_serve() {
        let https = |name: &str, host: &str, tls: serde_json::Value| json!({"name": name, "port": 443, "protocol": "HTTPS", "hostname": host, "tls": tls});
        let listeners = json!([
            https("shop", "shop.example.com", json!({"certificateRefs": [{"name": "shop-tls"}]})),
            https("wild", "*.example.org", json!({"mode": "Terminate",
                "certificateRefs": [{"kind": "Secret", "name": "org-tls"}, {"name": "org-ecdsa"}]})),
            https("pass", "pass.example.com", json!({"mode": "Passthrough"})),
            https("far", "far.example.com",
                  json!({"certificateRefs": [{"name": "far-tls", "namespace": "other"}]})),
            {"name": "any", "port": 443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "any-tls"}]}},
        ]);
        let classes = vec![class("tether", OURS)];
        let gateways = vec![gateway("infra", "gw", "tether", listeners)];
        let world = World {
            classes: &classes,
            gateways: &gateways,
            tls: true,
            ..World::default()
        };
        let (bindings, notes) = certificates(&world, OURS);
        let got: Vec<(&str, &str)> = bindings
            .iter()
            .map(|b| (b.host.as_str(), b.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("shop.example.com", "shop-tls"),
                ("*.example.org", "org-tls")
            ]
        );
        assert!(bindings.iter().all(|b| b.namespace == "infra"));
        for what in [
            "first, org-tls",
            "Passthrough",
            "other/far-tls",
            "no hostname",
        ] {
            assert!(notes.iter().any(|n| n.contains(what)), "{what}: {notes:?}");
        }

        // Routes attach to the listeners that can be served, as to HTTP ones...
        let spec = |section: &str| {
            json!({"parentRefs": [{"name": "gw", "sectionName": section}],
                   "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]})
        };
        let routes = vec![
            route("infra", "a", spec("shop")),
            route("infra", "b", spec("pass")),
            route("infra", "c", spec("far")),
        ];
        let (c, _, notes) = Compiled::build(&classes, &gateways, &routes, OURS);
        assert_eq!(c.attached, vec!["infra/a"]);
        assert_eq!(hosts(&c), vec![(Some("shop.example.com"), "/")]);
        assert!(notes.iter().any(|n| n.contains("Passthrough")), "{notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("ReferenceGrant")),
            "{notes:?}"
        );
        // ...and to none without a TLS listener to serve them on.
        let world = World {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            ..World::default()
        };
        let (c, _, notes) = Compiled::build_in(&world, OURS);
        assert!(c.attached.is_empty());
        assert!(
            notes.iter().any(|n| n.contains("[server.tls]")),
            "{notes:?}"
        );
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

    // === status ===

    fn grant(ns: &str, from_ns: &str, name: Option<&str>) -> Arc<ReferenceGrantV1beta1> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                "metadata": {"name": "g", "namespace": ns},
                "spec": {"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": from_ns}],
                         "to": [{"group": "", "kind": "Service", "name": name}]}}))
            .unwrap(),
        )
    }

    fn ns(name: &str, labels: serde_json::Value) -> Arc<Namespace> {
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels}}))
            .unwrap(),
        )
    }

    fn service(ns: &str, name: &str) -> Arc<PartialObjectMeta<Service>> {
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns}}))
            .unwrap(),
        )
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    /// The route's conditions of tether's one parent entry: (type, status, reason).
    fn route_conditions(updates: &[StatusUpdate], name: &str) -> Vec<(String, String, String)> {
        updates
            .iter()
            .find_map(|u| match u {
                StatusUpdate::HTTPRoute {
                    name: n, status, ..
                } if n == name => Some(status.parents.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no status for {name}: {updates:?}"))
            .iter()
            .filter(|p| p.controller_name == OURS)
            .flat_map(|p| p.conditions.iter())
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    fn cond(t: &str, s: &str, r: &str) -> (String, String, String) {
        (t.into(), s.into(), r.into())
    }

    fn to_web(ns: &str, name: &str, section: &str, hosts: serde_json::Value) -> Arc<HTTPRoute> {
        route(
            ns,
            name,
            json!({"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": section}],
                   "hostnames": hosts,
                   "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
        )
    }

    #[test]
    fn status_accepts_our_class_gateway_and_a_good_route_and_counts_attached_routes() {
        let (classes, gateways) = world();
        let routes = vec![
            to_web("infra", "good", "web", json!(["a.example.com"])),
            to_web("shop", "stranger", "web", json!(["a.example.com"])),
            to_web("infra", "nowhere", "nope", json!([])),
            to_web("infra", "elsewhere", "web", json!(["a.other.org"])),
        ];
        let services = vec![service("infra", "web"), service("shop", "web")];
        let world = World {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            services: Some(&services),
            ..World::default()
        };
        let updates = status(&world, OURS, Some("203.0.113.7"), &BTreeMap::new(), &at(1));
        let class = updates.iter().find_map(|u| match u {
            StatusUpdate::GatewayClass { name, status, .. } => Some((name, status)),
            _ => None,
        });
        let (name, class) = class.expect("our class gets a status");
        assert_eq!(name, "tether", "only our class: {updates:?}");
        assert_eq!(
            (
                class.conditions[0].type_.as_str(),
                class.conditions[0].status.as_str()
            ),
            ("Accepted", "True")
        );
        assert_eq!(
            route_conditions(&updates, "good"),
            vec![
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "True", "ResolvedRefs")
            ]
        );
        assert_eq!(
            route_conditions(&updates, "stranger")[0],
            cond("Accepted", "False", "NotAllowedByListeners")
        );
        assert_eq!(
            route_conditions(&updates, "nowhere")[0],
            cond("Accepted", "False", "NoMatchingParent")
        );
        assert_eq!(
            route_conditions(&updates, "elsewhere")[0],
            cond("Accepted", "False", "NoMatchingListenerHostname")
        );
        let gateway = updates
            .iter()
            .find_map(|u| match u {
                StatusUpdate::Gateway { name, status, .. } if name == "gw" => Some(status),
                _ => None,
            })
            .expect("our Gateway gets a status");
        assert!(
            !updates
                .iter()
                .any(|u| matches!(u, StatusUpdate::Gateway { name, .. } if name == "theirs")),
            "another class's Gateway is not ours to write"
        );
        let types: Vec<(&str, &str)> = gateway
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, vec![("Accepted", "True"), ("Programmed", "True")]);
        assert_eq!(gateway.addresses[0].value, "203.0.113.7");
        assert_eq!(gateway.addresses[0].kind.as_deref(), Some("IPAddress"));
        let web = &gateway.listeners[0];
        assert_eq!((web.name.as_str(), web.attached_routes), ("web", 1));
        assert_eq!(web.supported_kinds[0].kind, "HTTPRoute");
        let reasons: Vec<(&str, &str)> = web
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("Accepted", "Accepted"),
                ("Programmed", "Programmed"),
                ("ResolvedRefs", "ResolvedRefs"),
                ("Conflicted", "NoConflicts")
            ]
        );
        let tls = &gateway.listeners[3];
        assert_eq!(
            (
                tls.conditions[0].status.as_str(),
                tls.conditions[0].reason.as_str()
            ),
            ("False", "UnsupportedProtocol")
        );
        assert!(tls.supported_kinds.is_empty());
    }

    #[test]
    fn https_listener_status_follows_its_certificate_ref_and_tethers_tls_listener() {
        let listeners = json!([
            {"name": "good", "port": 443, "protocol": "HTTPS", "hostname": "a.example.com",
             "tls": {"certificateRefs": [{"name": "a-tls"}]}},
            {"name": "far", "port": 443, "protocol": "HTTPS", "hostname": "b.example.com",
             "tls": {"certificateRefs": [{"name": "b-tls", "namespace": "elsewhere"}]}},
            {"name": "map", "port": 443, "protocol": "HTTPS", "hostname": "c.example.com",
             "tls": {"certificateRefs": [{"kind": "ConfigMap", "name": "c-tls"}]}},
        ]);
        let classes = vec![class("tether", OURS)];
        let gateways = vec![gateway("infra", "gw", "tether", listeners)];
        let reasons = |tls: bool, certificates: Option<&crate::sni::Verdicts>| {
            let world = World {
                classes: &classes,
                gateways: &gateways,
                tls,
                certificates,
                ..World::default()
            };
            let updates = status(&world, OURS, None, &BTreeMap::new(), &at(1));
            let gateway = updates
                .iter()
                .find_map(|u| match u {
                    StatusUpdate::Gateway { status, .. } => Some(status.clone()),
                    _ => None,
                })
                .expect("our Gateway gets a status");
            gateway
                .listeners
                .iter()
                .map(|l| {
                    let reason = |t: &str| {
                        l.conditions
                            .iter()
                            .find(|c| c.type_ == t)
                            .map(|c| format!("{}:{}", c.status, c.reason))
                            .unwrap_or_default()
                    };
                    (
                        reason("Accepted"),
                        reason("Programmed"),
                        reason("ResolvedRefs"),
                    )
                })
                .collect::<Vec<_>>()
        };
        let s = |a: &str, p: &str, r: &str| (a.to_string(), p.to_string(), r.to_string());
        let refused = |why: &str| s("True:Accepted", "False:Invalid", why);
        assert_eq!(
            reasons(true, None),
            vec![
                s("True:Accepted", "True:Programmed", "True:ResolvedRefs"),
                refused("False:RefNotPermitted"),
                refused("False:InvalidCertificateRef"),
            ]
        );
        // The Secrets' watcher found a-tls missing or unusable: so does the status.
        let bad: crate::sni::Verdicts =
            [(("infra".into(), "a-tls".into()), "not found".into())].into();
        assert_eq!(
            reasons(true, Some(&bad))[0],
            refused("False:InvalidCertificateRef")
        );
        let other: crate::sni::Verdicts =
            [(("infra".into(), "other".into()), "not found".into())].into();
        assert_eq!(
            reasons(true, Some(&other))[0],
            s("True:Accepted", "True:Programmed", "True:ResolvedRefs")
        );
        // Without a TLS listener in tether, no HTTPS listener can be served.
        let unserved = s(
            "False:UnsupportedProtocol",
            "False:Invalid",
            "True:ResolvedRefs",
        );
        assert_eq!(
            reasons(false, Some(&bad)),
            vec![unserved.clone(), unserved.clone(), unserved]
        );
    }

    #[test]
    fn a_certificate_ref_to_another_namespace_needs_a_reference_grant_for_secrets() {
        let listeners = json!([
            {"name": "far", "port": 443, "protocol": "HTTPS", "hostname": "far.example.com",
             "tls": {"certificateRefs": [{"name": "far-tls", "namespace": "certs"}]}},
        ]);
        let classes = vec![class("tether", OURS)];
        let gateways = vec![gateway("infra", "gw", "tether", listeners)];
        let secret_grant = |kind: &str| -> Arc<ReferenceGrantV1beta1> {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                    "metadata": {"name": "certs", "namespace": "certs"},
                    "spec": {"from": [{"group": GROUP, "kind": kind, "namespace": "infra"}],
                             "to": [{"group": "", "kind": "Secret", "name": "far-tls"}]}}))
                .unwrap(),
            )
        };
        let outcome = |grants: &[Arc<ReferenceGrantV1beta1>]| {
            let world = World {
                classes: &classes,
                gateways: &gateways,
                grants,
                tls: true,
                ..World::default()
            };
            let (bindings, _) = certificates(&world, OURS);
            let updates = status(&world, OURS, None, &BTreeMap::new(), &at(1));
            let resolved = updates
                .iter()
                .find_map(|u| match u {
                    StatusUpdate::Gateway { status, .. } => status.listeners[0]
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "ResolvedRefs")
                        .map(|c| c.reason.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let bound: Vec<String> = bindings
                .iter()
                .map(|b| format!("{}/{}", b.namespace, b.name))
                .collect();
            (bound, resolved)
        };
        // No grant, or one for HTTPRoutes only: refused, RefNotPermitted.
        for grants in [
            vec![],
            vec![secret_grant("HTTPRoute")],
            vec![grant("certs", "infra", None)],
        ] {
            assert_eq!(
                outcome(&grants),
                (Vec::<String>::new(), "RefNotPermitted".to_string())
            );
        }
        // A grant letting Gateways of infra refer to the Secret: served with it.
        assert_eq!(
            outcome(&[secret_grant("Gateway")]),
            (
                vec!["certs/far-tls".to_string()],
                "ResolvedRefs".to_string()
            )
        );
    }

    #[test]
    fn rules_left_out_as_unsupported_make_a_route_partially_invalid_or_not_accepted() {
        let (classes, gateways) = world();
        let mirror = json!({"matches": [{"path": {"value": "/mirror"}}],
            "filters": [{"type": "RequestMirror",
                         "requestMirror": {"backendRef": {"name": "web", "port": 80}}}],
            "backendRefs": [{"name": "web", "port": 80}]});
        let good = json!({"matches": [{"path": {"value": "/ok"}}],
            "backendRefs": [{"name": "web", "port": 80}]});
        let spec = |rules: serde_json::Value| {
            json!({"parentRefs": [{"name": "gw", "sectionName": "web"}],
                   "hostnames": ["a.example.com"], "rules": rules})
        };
        let routes = vec![
            route("infra", "part", spec(json!([mirror.clone(), good]))),
            route("infra", "none", spec(json!([mirror]))),
        ];
        let world = World {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            ..World::default()
        };
        let (c, _, _) = Compiled::build_in(&world, OURS);
        assert_eq!(c.invalid.get("infra/part").map(|i| i.all), Some(false));
        assert_eq!(c.invalid.get("infra/none").map(|i| i.all), Some(true));
        assert!(c.invalid["infra/part"].message.contains("RequestMirror"));
        let updates = status(&world, OURS, None, &c.invalid, &at(1));
        assert_eq!(
            route_conditions(&updates, "part"),
            vec![
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "True", "ResolvedRefs"),
                cond("PartiallyInvalid", "True", "UnsupportedValue"),
            ]
        );
        assert_eq!(
            route_conditions(&updates, "none")[0],
            cond("Accepted", "False", "UnsupportedValue")
        );
    }

    #[test]
    fn status_is_written_once_keeps_transition_times_and_other_controllers_entries() {
        let (classes, gateways) = world();
        let mut r = (*to_web("infra", "good", "web", json!(["a.example.com"]))).clone();
        let theirs = json!({"parentRef": {"name": "theirs"}, "controllerName": "example.com/other",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                            "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
        r.status = Some(serde_json::from_value(json!({"parents": [theirs]})).unwrap());
        let routes = vec![Arc::new(r.clone())];
        let first = status(
            &World {
                classes: &classes,
                gateways: &gateways,
                routes: &routes,
                ..World::default()
            },
            OURS,
            None,
            &BTreeMap::new(),
            &at(1),
        );
        // Write every update back, as the API server would.
        let mut classes = classes;
        let mut gateways = gateways;
        for u in &first {
            match u {
                StatusUpdate::GatewayClass { name, status, .. } => {
                    for c in classes.iter_mut().filter(|c| c.name_any() == *name) {
                        Arc::make_mut(c).status = Some(status.clone());
                    }
                }
                StatusUpdate::Gateway { name, status, .. } => {
                    for g in gateways.iter_mut().filter(|g| g.name_any() == *name) {
                        Arc::make_mut(g).status = Some(status.clone());
                    }
                }
                StatusUpdate::HTTPRoute { status, .. } => {
                    assert_eq!(status.parents[0].controller_name, "example.com/other");
                    assert_eq!(status.parents.len(), 2, "{status:?}");
                    r.status = Some(status.clone());
                }
            }
        }
        let routes = vec![Arc::new(r.clone())];
        // Its echo: nothing more to write, later or not.
        let at_2 = |c: &[Arc<GatewayClass>], g: &[Arc<Gateway>], r: &[Arc<HTTPRoute>]| {
            status(
                &World {
                    classes: c,
                    gateways: g,
                    routes: r,
                    ..World::default()
                },
                OURS,
                None,
                &BTreeMap::new(),
                &at(2),
            )
        };
        assert_eq!(at_2(&classes, &gateways, &routes), vec![]);
        // A change of one condition: the others keep their transition time.
        let mut moved = r.clone();
        moved.spec.hostnames = vec!["a.other.org".into()];
        let updates = at_2(&classes, &gateways, &[Arc::new(moved)]);
        let StatusUpdate::HTTPRoute { status, .. } = &updates
            .iter()
            .find(|u| matches!(u, StatusUpdate::HTTPRoute { .. }))
            .unwrap()
        else {
            unreachable!()
        };
        let ours = &status.parents[1].conditions;
        assert_eq!(ours[0].reason, "NoMatchingListenerHostname");
        assert_eq!(ours[0].last_transition_time, at(2));
        assert_eq!(ours[1].reason, "ResolvedRefs");
        assert_eq!(ours[1].last_transition_time, at(1));
    }

    #[test]
    fn a_service_of_another_namespace_needs_a_reference_grant() {
        let (classes, gateways) = world();
        let routes = vec![route(
            "infra",
            "x",
            json!({"parentRefs": [{"name": "gw", "sectionName": "web"}],
                   "hostnames": ["x.example.com"],
                   "rules": [{"backendRefs": [{"name": "api", "namespace": "team", "port": 80}]}]}),
        )];
        let run = |grants: &[Arc<ReferenceGrantV1beta1>]| {
            let world = World {
                classes: &classes,
                gateways: &gateways,
                routes: &routes,
                grants,
                ..World::default()
            };
            let (c, _, notes) = Compiled::build_in(&world, OURS);
            let s = status(&world, OURS, None, &BTreeMap::new(), &at(1));
            (c, notes, route_conditions(&s, "x"))
        };
        let (c, notes, conditions) = run(&[]);
        // Refused, and its rule's only ref: Gateway API's 500 for it.
        let to: Vec<_> = c.routes.iter().map(|r| &r.to).collect();
        assert_eq!(to, vec![&RouteTo::Answer(Answer::Status(500))]);
        assert!(c.backends.is_empty());
        assert!(
            notes.iter().any(|n| n.contains("ReferenceGrant")),
            "{notes:?}"
        );
        assert_eq!(
            conditions[1],
            cond("ResolvedRefs", "False", "RefNotPermitted")
        );
        // A grant for another Service, or from another namespace, does not do.
        let (c, _, _) = run(&[
            grant("team", "infra", Some("other")),
            grant("team", "shop", None),
        ]);
        assert!(c.backends.is_empty());
        let (c, _, conditions) = run(&[grant("team", "infra", Some("api"))]);
        assert_eq!(conditions[1], cond("ResolvedRefs", "True", "ResolvedRefs"));
        assert_eq!(c.backends[0].name, "httproute:infra:x:api.team:80");
        assert_eq!(
            c.backends[0].source,
            crate::config::Source::Kubernetes(crate::config::KubernetesSource {
                namespace: "team".into(),
                service: "api".into(),
                port: crate::config::PortRef::Number(80),
            })
        );
    }

    #[test]
    fn a_missing_service_is_backend_not_found_and_a_foreign_kind_invalid_kind() {
        let (classes, gateways) = world();
        let routes = vec![
            to_web("infra", "missing", "web", json!(["a.example.com"])),
            route(
                "infra",
                "bucket",
                json!({"parentRefs": [{"name": "gw", "sectionName": "web"}],
                       "rules": [{"backendRefs": [{"group": "example.com", "kind": "Bucket",
                                                   "name": "b"}]}]}),
            ),
        ];
        let services = vec![service("infra", "other")];
        let world = World {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            services: Some(&services),
            ..World::default()
        };
        let s = status(&world, OURS, None, &BTreeMap::new(), &at(1));
        assert_eq!(
            route_conditions(&s, "missing")[1],
            cond("ResolvedRefs", "False", "BackendNotFound")
        );
        assert_eq!(
            route_conditions(&s, "bucket")[1],
            cond("ResolvedRefs", "False", "InvalidKind")
        );
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "shop".to_string())].into();
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        let e = |op: &str, values: serde_json::Value| {
            sel(json!({"matchExpressions": [{"key": "team", "operator": op, "values": values}]}))
        };
        assert_eq!(
            selects(&sel(json!({})), &labels),
            Ok(true),
            "empty selects all"
        );
        assert_eq!(
            selects(&sel(json!({"matchLabels": {"team": "x"}})), &labels),
            Ok(false)
        );
        assert_eq!(selects(&e("In", json!(["shop", "x"])), &labels), Ok(true));
        assert_eq!(selects(&e("NotIn", json!(["shop"])), &labels), Ok(false));
        assert_eq!(selects(&e("Exists", json!(null)), &labels), Ok(true));
        assert_eq!(selects(&e("DoesNotExist", json!(null)), &labels), Ok(false));
        assert!(selects(&e("Near", json!(null)), &labels).is_err());
    }

    #[test]
    fn a_selector_admits_routes_of_labelled_namespaces_and_kinds_must_include_httproute() {
        let classes = vec![class("tether", OURS)];
        let gateways = vec![gateway(
            "infra",
            "gw",
            "tether",
            json!([
                {"name": "sel", "port": 80, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {
                    "matchLabels": {"team": "shop"},
                    "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}}}},
                {"name": "grpc", "port": 81, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "All"},
                                   "kinds": [{"kind": "GRPCRoute"}]}},
            ]),
        )];
        let namespaces = vec![
            ns("shop", json!({"team": "shop", "env": "prod"})),
            ns("dev", json!({"team": "shop", "env": "dev"})),
        ];
        let routes = vec![
            to_web("shop", "in", "sel", json!(["in.example.com"])),
            to_web("dev", "out", "sel", json!(["out.example.com"])),
            to_web("shop", "grpc", "grpc", json!(["grpc.example.com"])),
        ];
        let world = World {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            namespaces: &namespaces,
            ..World::default()
        };
        let (c, _, _) = Compiled::build_in(&world, OURS);
        assert_eq!(c.attached, vec!["shop/in"]);
        let s = status(&world, OURS, None, &BTreeMap::new(), &at(1));
        assert_eq!(
            route_conditions(&s, "in")[0],
            cond("Accepted", "True", "Accepted")
        );
        for r in ["out", "grpc"] {
            assert_eq!(
                route_conditions(&s, r)[0],
                cond("Accepted", "False", "NotAllowedByListeners"),
                "{r}"
            );
        }
        let gateway = s
            .iter()
            .find_map(|u| match u {
                StatusUpdate::Gateway { status, .. } => Some(status),
                _ => None,
            })
            .unwrap();
        assert_eq!(gateway.listeners[0].attached_routes, 1);
        let grpc = &gateway.listeners[1];
        assert!(grpc.supported_kinds.is_empty());
        assert_eq!(grpc.conditions[2].reason, "InvalidRouteKinds");
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

    #[test]
    fn a_request_redirect_rule_answers_itself_and_a_rule_without_a_valid_backend_answers_500() {
        let (classes, gateways) = world();
        let r = route(
            "infra",
            "r",
            json!({
                "parentRefs": [{"name": "gw", "sectionName": "web"}],
                "hostnames": ["r.example.com"],
                "rules": [
                    {"matches": [{"path": {"value": "/old"}}],
                     "filters": [{"type": "RequestRedirect", "requestRedirect": {
                         "scheme": "https", "hostname": "new.example.com", "port": 8443,
                         "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                         "statusCode": 301}}]},
                    {"matches": [{"path": {"type": "Exact", "value": "/exact"}}],
                     "filters": [{"type": "RequestRedirect", "requestRedirect": {
                         "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/x"}}}]},
                    {"matches": [{"path": {"value": "/gone"}}],
                     "backendRefs": [{"name": "missing", "port": 80}]},
                    {"matches": [{"path": {"value": "/other-kind"}}],
                     "backendRefs": [{"kind": "Bucket", "group": "x.io", "name": "b"}]},
                    {"matches": [{"path": {"value": "/web"}}],
                     "backendRefs": [{"name": "web", "port": 80}, {"name": "missing", "port": 80}]},
                    {"matches": [{"path": {"value": "/both"}}],
                     "filters": [{"type": "RequestRedirect", "requestRedirect": {}},
                                 {"type": "URLRewrite", "urlRewrite": {"hostname": "x"}}],
                     "backendRefs": [{"name": "web", "port": 80}]},
                ],
            }),
        );
        let services = vec![service("infra", "web")];
        let routes = [r];
        let world = World {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            services: Some(&services),
            tls: true,
            ..World::default()
        };
        let (c, errors, notes) = Compiled::build_in(&world, OURS);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            hosts(&c),
            vec![
                (Some("r.example.com"), "/old"),
                (Some("r.example.com"), "/gone"),
                (Some("r.example.com"), "/other-kind"),
                (Some("r.example.com"), "/web"),
            ],
            "{notes:?}"
        );
        let RouteTo::Answer(Answer::Redirect(redirect)) = &c.routes[0].to else {
            panic!("a redirect: {:?}", c.routes[0]);
        };
        assert_eq!(
            *redirect,
            Redirect {
                scheme: Some("https".into()),
                hostname: Some("new.example.com".into()),
                port: Some(8443),
                path: Some(PathRewrite::Prefix {
                    from: "/old".into(),
                    to: "/new".into()
                }),
                status: 301,
            }
        );
        for r in &c.routes[1..3] {
            assert_eq!(r.to, RouteTo::Answer(Answer::Status(500)), "{r:?}");
        }
        // One usable Service of two: it takes the rule (the missing one is left out).
        assert_eq!(
            c.routes[3].to,
            RouteTo::Backend("httproute:infra:r:web:80".into())
        );
        let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, vec!["httproute:infra:r:web:80"]);
        for what in [
            "rules[1].matches[0].path Exact",
            "Service infra/missing does not exist",
            "may not be combined",
        ] {
            assert!(notes.iter().any(|n| n.contains(what)), "{what}: {notes:?}");
        }
        assert_eq!(
            c.invalid.get("infra/r").map(|i| i.all),
            Some(false),
            "PartiallyInvalid for the two rules left out, not for the redirect"
        );
    }
    #[test]
    fn backend_names_of_dotted_routes_rules_and_other_namespaces_never_coincide() {
        let (classes, gateways) = world();
        let to = |name: &str, host: &str, refs: serde_json::Value| {
            route(
                "infra",
                name,
                json!({"parentRefs": [{"name": "gw", "sectionName": "web"}],
                       "hostnames": [host], "rules": refs}),
            )
        };
        let routes = vec![
            // `infra web team api 80` three ways: a Service of namespace team, a dotted
            // route name, a second rule named team.
            to(
                "web",
                "a.example.com",
                json!([{"backendRefs": [{"name": "api", "namespace": "team", "port": 80}]}]),
            ),
            to(
                "web.team",
                "b.example.com",
                json!([{"backendRefs": [{"name": "api", "port": 80}]}]),
            ),
            to(
                "x",
                "c.example.com",
                json!([
                    {"matches": [{"path": {"value": "/a"}}],
                     "backendRefs": [{"name": "api", "port": 80}]},
                    // Named as the next unnamed rule would be.
                    {"name": "rule-2", "matches": [{"path": {"value": "/b"}}],
                     "backendRefs": [{"name": "api", "port": 80}],
                     "sessionPersistence": {"sessionName": "B"}},
                    {"matches": [{"path": {"value": "/c"}}],
                     "backendRefs": [{"name": "api", "port": 80}],
                     "sessionPersistence": {"sessionName": "C"}},
                ]),
            ),
        ];
        let grants = [grant("team", "infra", Some("api"))];
        let world = World {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            grants: &grants,
            ..World::default()
        };
        let (c, errors, _) = Compiled::build_in(&world, OURS);
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "httproute:infra:web:api.team:80",
                "httproute:infra:web.team:api:80",
                "httproute:infra:x:api:80",
                "httproute:infra:x:rule-2:api:80",
                "httproute:infra:x:#2:api:80",
            ]
        );
    }
}
