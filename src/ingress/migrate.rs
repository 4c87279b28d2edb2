//! `tether migrate`: Ingress manifests → Gateway API objects, tether.toml and a report.
//!
//! Offline: the input is YAML text (one or more documents, `kind: List` too), nothing
//! talks to a cluster. Each Ingress becomes HTTPRoutes attached to a Gateway named after
//! its class in its namespace (one Gateway per class and namespace, so certificate
//! Secrets and routes need no ReferenceGrant), each path one rule with its own
//! `sessionPersistence` (GEP-1619 scopes a session to a rule, as ingress-nginx scoped
//! its cookie to the location). The same Ingresses are also written as tether.toml for
//! a setup without Gateway API, checked by [`crate::config::Config::parse`] before it is
//! printed. Every annotation and every field tether changes meaning of gets a [`Row`].
//!
//! YAML is read with `serde_yaml_ng`: `serde_yaml` is unmaintained (archived in 2024);
//! `serde_yaml_ng` is its maintained fork with the same API (multi-document iteration,
//! `Value`), and `serde_path_to_error` names the field a bad document fails on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::annotations::{self, Affinity, Key, Verdict};
use crate::gateway::api::{
    CookieConfig, Gateway, GatewaySpec, HTTPBackendRef, HTTPPathMatch, HTTPRoute, HTTPRouteMatch,
    HTTPRouteRule, HTTPRouteSpec, LifetimeType, Listener, ListenerTls, ParentReference,
    PathMatchType, SecretObjectReference, SessionPersistence, SessionPersistenceType,
};
use crate::gateway::session;

/// Why the input could not be migrated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A document is not YAML.
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        /// 1-based position of the document in the input.
        index: usize,
        /// The parser's message, with line and column.
        source: serde_yaml_ng::Error,
    },
    /// A document is YAML but not a usable object.
    #[error("document {index}{object}: {field}: {reason}")]
    Field {
        /// 1-based position of the document in the input.
        index: usize,
        /// ` (Ingress ns/name)` when known.
        object: String,
        /// The field, as a path such as `spec.rules[0].http.paths[1].pathType`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The input holds no Ingress.
    #[error("no Ingress in the input ({documents} document(s) read)")]
    NoIngress {
        /// How many documents were read.
        documents: usize,
    },
    /// The tether.toml written is not accepted by tether (a bug, or a value tether
    /// cannot hold, such as an invalid cookie name).
    #[error("the tether.toml written for these Ingresses is not valid: {0}")]
    Toml(#[from] crate::config::ConfigError),
    /// An object could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Write(#[from] serde_yaml_ng::Error),
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Choices the Ingresses do not make.
#[derive(Debug, Clone)]
pub struct Options {
    /// `gatewayClassName` of the Gateways written (tether's GatewayClass).
    pub gateway_class: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gateway_class: "tether".into(),
        }
    }
}

/// One line of the report: an annotation or Ingress field, and how it was carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    /// The annotation, or the Ingress field (`spec.tls[0]`).
    pub item: String,
    /// Its value.
    pub value: String,
    /// How it was carried over.
    pub verdict: Verdict,
    /// What tether does with it, or why it cannot.
    pub how: String,
}

/// Everything `tether migrate` prints.
#[derive(Debug, Clone)]
pub struct Migration {
    /// One per Ingress class and namespace.
    pub gateways: Vec<Gateway>,
    /// One per Ingress (one per host when an Ingress has several hosts).
    pub routes: Vec<HTTPRoute>,
    /// The equivalent tether.toml, checked by `Config::parse`.
    pub toml: String,
    /// The verdict on every annotation and changed field.
    pub rows: Vec<Row>,
    /// Documents skipped and why.
    pub notes: Vec<String>,
}

/// Reads Ingress manifests and translates them.
pub fn migrate(text: &str, options: &Options) -> Result<Migration> {
    let (ingresses, notes, documents) = read(text)?;
    if ingresses.is_empty() {
        return Err(Error::NoIngress { documents });
    }
    let mut b = Builder {
        options,
        gateways: BTreeMap::new(),
        routes: Vec::new(),
        backends: Vec::new(),
        toml_routes: Vec::new(),
        tls: Vec::new(),
        rows: Vec::new(),
    };
    for (index, ingress) in &ingresses {
        b.ingress(*index, ingress)?;
    }
    let toml = b.toml();
    crate::config::Config::parse(&toml, "tether migrate", std::path::Path::new("."))?;
    Ok(Migration {
        gateways: b
            .gateways
            .into_iter()
            .map(|((namespace, name), listeners)| {
                let mut g = Gateway::new(
                    &name,
                    GatewaySpec {
                        gateway_class_name: options.gateway_class.clone(),
                        listeners,
                    },
                );
                g.metadata.namespace = Some(namespace);
                g
            })
            .collect(),
        routes: b.routes,
        toml,
        rows: b.rows,
        notes,
    })
}

/// Compiles one Ingress into the tether.toml `tether migrate` writes for it, parsed:
/// the backends and routes Ingress mode routes, with the report rows of its annotations
/// and fields. One mapping serves both, so what `tether migrate` prints for an Ingress
/// is what the live controller routes for it. An Ingress with no Service backend
/// compiles to nothing.
pub fn compile(ingress: &Ingress) -> Result<(Option<crate::config::Config>, Vec<Row>)> {
    let options = Options::default();
    let mut b = Builder {
        options: &options,
        gateways: BTreeMap::new(),
        routes: Vec::new(),
        backends: Vec::new(),
        toml_routes: Vec::new(),
        tls: Vec::new(),
        rows: Vec::new(),
    };
    b.ingress(1, ingress)?;
    if b.backends.is_empty() {
        return Ok((None, b.rows));
    }
    let name = format!(
        "Ingress {}/{}",
        ingress.metadata.namespace.as_deref().unwrap_or("default"),
        ingress.metadata.name.as_deref().unwrap_or_default()
    );
    let config = crate::config::Config::parse(&b.toml(), &name, std::path::Path::new("."))?;
    Ok((Some(config), b.rows))
}

// === reading ===

/// The Ingresses of the input, each with its 1-based document index.
type Indexed = Vec<(usize, Ingress)>;

/// The Ingresses of the input, notes on what was skipped, and how many documents there
/// were.
fn read(text: &str) -> Result<(Indexed, Vec<String>, usize)> {
    let mut ingresses = Vec::new();
    let mut notes = Vec::new();
    let mut documents = 0;
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        documents = index;
        let value = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|source| Error::Yaml { index, source })?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let json = serde_json::to_value(&value).map_err(|e| Error::Field {
            index,
            object: String::new(),
            field: "(document)".into(),
            reason: format!("not a Kubernetes object: {e}"),
        })?;
        collect(index, json, &mut ingresses, &mut notes)?;
    }
    Ok((ingresses, notes, documents))
}

fn collect(
    index: usize,
    json: serde_json::Value,
    ingresses: &mut Indexed,
    notes: &mut Vec<String>,
) -> Result<()> {
    let field = |field: &str, reason: String| Error::Field {
        index,
        object: String::new(),
        field: field.into(),
        reason,
    };
    let Some(object) = json.as_object() else {
        return Err(field(
            "(document)",
            "not a mapping: a Kubernetes object has apiVersion, kind and metadata".into(),
        ));
    };
    let text = |k: &str| object.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let (kind, api_version) = (text("kind"), text("apiVersion"));
    if kind.is_empty() {
        return Err(field("kind", "missing: not a Kubernetes object".into()));
    }
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string();
    if kind.ends_with("List") && object.contains_key("items") {
        let items = object.get("items").and_then(|i| i.as_array());
        for item in items.into_iter().flatten() {
            collect(index, item.clone(), ingresses, notes)?;
        }
        return Ok(());
    }
    if kind != "Ingress" {
        notes.push(format!(
            "document {index}: skipped {kind} {name:?}: not an Ingress"
        ));
        return Ok(());
    }
    let object = format!(" (Ingress {name})");
    if api_version != "networking.k8s.io/v1" {
        return Err(Error::Field {
            index,
            object,
            field: "apiVersion".into(),
            reason: format!(
                "{api_version:?}: only networking.k8s.io/v1 Ingresses are read (older versions left Kubernetes in 1.22)"
            ),
        });
    }
    let ingress: Ingress = serde_path_to_error::deserialize(json).map_err(|e| Error::Field {
        index,
        object: object.clone(),
        field: e.path().to_string(),
        reason: e.inner().to_string(),
    })?;
    if ingress.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(Error::Field {
            index,
            object,
            field: "metadata.name".into(),
            reason: "missing".into(),
        });
    }
    ingresses.push((index, ingress));
    Ok(())
}

// === building ===

/// A tether.toml `[[backend]]` being written.
struct TomlBackend {
    name: String,
    ingress: String,
    namespace: String,
    service: String,
    port: Option<PortSpec>,
    affinity: Option<Affinity>,
    /// The path prefixes routed to it (for the cookie path).
    paths: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
enum PortSpec {
    Number(i32),
    Name(String),
}

/// A tether.toml `[[route]]` being written.
struct TomlRoute {
    host: Option<String>,
    path_prefix: String,
    backend: String,
    comment: Option<String>,
    /// `path_prefix` is an exact path (Ingress `pathType: Exact`).
    exact: bool,
}

struct Builder<'a> {
    options: &'a Options,
    /// Listeners per (namespace, Gateway name).
    gateways: BTreeMap<(String, String), Vec<Listener>>,
    routes: Vec<HTTPRoute>,
    backends: Vec<TomlBackend>,
    toml_routes: Vec<TomlRoute>,
    /// TLS Secrets, for the TOML's comment: (ingress, secret).
    tls: Vec<(String, String)>,
    rows: Vec<Row>,
}

impl Builder<'_> {
    fn row(&mut self, ingress: &str, item: &str, value: &str, verdict: Verdict, how: &str) {
        self.rows.push(Row {
            ingress: ingress.into(),
            item: item.into(),
            value: value.into(),
            verdict,
            how: how.into(),
        });
    }

    fn ingress(&mut self, index: usize, ingress: &Ingress) -> Result<()> {
        let name = ingress.metadata.name.clone().unwrap_or_default();
        let namespace = ingress
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let id = format!("{namespace}/{name}");
        let field_err = |field: String, reason: String| Error::Field {
            index,
            object: format!(" (Ingress {id})"),
            field,
            reason,
        };
        let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
        let spec = ingress.spec.clone().unwrap_or_default();

        // The Gateway: named after the class, in the Ingress's namespace.
        let class = spec
            .ingress_class_name
            .clone()
            .or_else(|| annotations.get("kubernetes.io/ingress.class").cloned())
            .unwrap_or_else(|| self.options.gateway_class.clone());
        let gateway_key = (namespace.clone(), class.clone());
        self.gateways.entry(gateway_key.clone()).or_insert_with(|| {
            vec![Listener {
                name: "http".into(),
                port: 80,
                protocol: "HTTP".into(),
                ..Default::default()
            }]
        });
        self.row(
            &id,
            "spec.ingressClassName",
            &class,
            Verdict::Mapped,
            &format!(
                "Gateway {class} in {namespace} (gatewayClassName {}); its HTTPRoutes attach to it",
                self.options.gateway_class
            ),
        );

        // Annotations.
        let mapping = annotations::map(&annotations);
        for f in &mapping.findings {
            self.row(&id, &f.annotation, &f.value, f.verdict, &f.how);
        }
        if mapping.affinity.is_none() {
            self.row(
                &id,
                "(no affinity annotation)",
                "",
                Verdict::Approximated,
                "ingress-nginx balanced these requests without stickiness; tether is sticky \
                 by default (TOML: its cookie \"tether\"); the HTTPRoutes carry no \
                 sessionPersistence",
            );
        }
        let persistence = mapping.affinity.as_ref().and_then(session_persistence);
        if let Some(a) = &mapping.affinity {
            if let Some(secs) = a.lifetime {
                if session::format_duration(secs).is_none() {
                    self.row(
                        &id,
                        "session lifetime",
                        &secs.to_string(),
                        Verdict::Unsupported,
                        "longer than a Gateway API duration can say (99999h): no absoluteTimeout",
                    );
                }
            }
        }

        // Rules: one HTTPRoute rule per path, grouped by host.
        let mut groups: Vec<(Option<String>, Vec<HTTPRouteRule>)> = Vec::new();
        let mut add_rule = |host: Option<String>, rule: HTTPRouteRule| match groups
            .iter_mut()
            .find(|(h, _)| *h == host)
        {
            Some((_, rules)) => rules.push(rule),
            None => groups.push((host, vec![rule])),
        };
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.clone().filter(|h| !h.is_empty());
            for (j, p) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
                let at = format!("spec.rules[{i}].http.paths[{j}]");
                let path = p.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/') {
                    return Err(field_err(
                        format!("{at}.path"),
                        format!("{path:?} must start with '/'"),
                    ));
                }
                let kind = match p.path_type.as_str() {
                    "Prefix" => PathMatchType::PathPrefix,
                    "Exact" => PathMatchType::Exact,
                    "ImplementationSpecific" => {
                        self.row(
                            &id,
                            &format!("{at}.pathType"),
                            "ImplementationSpecific",
                            Verdict::Approximated,
                            &format!(
                                "as PathPrefix {path} (ingress-nginx's meaning without use-regex)"
                            ),
                        );
                        PathMatchType::PathPrefix
                    }
                    "" => {
                        return Err(field_err(
                            format!("{at}.pathType"),
                            "missing (Prefix, Exact or ImplementationSpecific)".into(),
                        ))
                    }
                    other => {
                        return Err(field_err(
                            format!("{at}.pathType"),
                            format!("{other:?} is not Prefix, Exact or ImplementationSpecific"),
                        ))
                    }
                };
                let Some(backend_ref) = self.backend_ref(&id, &format!("{at}.backend"), &p.backend)
                else {
                    continue;
                };
                let m = HTTPRouteMatch {
                    path: Some(HTTPPathMatch {
                        kind: Some(kind),
                        value: Some(path.clone()),
                    }),
                    ..Default::default()
                };
                let routes_before = self.toml_routes.len();
                self.toml_route(
                    &id,
                    &namespace,
                    &name,
                    host.clone(),
                    &path,
                    &p.backend,
                    &mapping.affinity,
                );
                // An Exact path routes exactly, as `path` in the TOML.
                if kind == PathMatchType::Exact {
                    if let Some(r) = self.toml_routes.get_mut(routes_before) {
                        r.exact = true;
                    }
                }
                self.cookie_path_row(&id, &mapping.affinity, &m);
                add_rule(
                    host.clone(),
                    HTTPRouteRule {
                        matches: vec![m],
                        backend_refs: vec![backend_ref],
                        session_persistence: persistence.clone(),
                        ..Default::default()
                    },
                );
            }
        }
        if let Some(default) = &spec.default_backend {
            if let Some(backend_ref) = self.backend_ref(&id, "spec.defaultBackend", default) {
                self.toml_route(
                    &id,
                    &namespace,
                    &name,
                    None,
                    "/",
                    default,
                    &mapping.affinity,
                );
                self.cookie_path_row(&id, &mapping.affinity, &HTTPRouteMatch::default());
                add_rule(
                    None,
                    HTTPRouteRule {
                        backend_refs: vec![backend_ref],
                        session_persistence: persistence.clone(),
                        ..Default::default()
                    },
                );
            }
        }
        let several = groups.len() > 1;
        if several {
            self.row(
                &id,
                "spec.rules[].host",
                &groups
                    .iter()
                    .map(|(h, _)| h.as_deref().unwrap_or("*"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Verdict::Mapped,
                "one HTTPRoute per host (an HTTPRoute's hostnames apply to all its rules)",
            );
        }
        for (host, rules) in groups {
            let route_name = match (&host, several) {
                (_, false) => name.clone(),
                (Some(h), true) => format!("{name}-{}", slug(h)),
                (None, true) => format!("{name}-any-host"),
            };
            let mut route = HTTPRoute::new(
                &route_name,
                HTTPRouteSpec {
                    parent_refs: vec![ParentReference {
                        name: class.clone(),
                        ..Default::default()
                    }],
                    hostnames: host.into_iter().collect(),
                    rules,
                },
            );
            route.metadata = ObjectMeta {
                name: Some(route_name),
                namespace: Some(namespace.clone()),
                ..Default::default()
            };
            self.routes.push(route);
        }

        // TLS: an HTTPS listener per host, with the Secret as its certificate.
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let at = format!("spec.tls[{i}]");
            let Some(secret) = tls.secret_name.clone().filter(|s| !s.is_empty()) else {
                self.row(
                    &id,
                    &at,
                    "(no secretName)",
                    Verdict::Unsupported,
                    "ingress-nginx served its default certificate; a Gateway listener needs a \
                     certificateRef: add one",
                );
                continue;
            };
            let hosts: Vec<Option<String>> = match tls.hosts.as_deref() {
                None | Some([]) => vec![None],
                Some(hs) => hs.iter().cloned().map(Some).collect(),
            };
            let listeners = self.gateways.entry(gateway_key.clone()).or_default();
            for host in &hosts {
                if listeners
                    .iter()
                    .any(|l| l.protocol == "HTTPS" && l.hostname == *host)
                {
                    continue;
                }
                listeners.push(Listener {
                    name: match host {
                        Some(h) => format!("https-{}", slug(h)),
                        None => "https".into(),
                    },
                    hostname: host.clone(),
                    port: 443,
                    protocol: "HTTPS".into(),
                    tls: Some(ListenerTls {
                        mode: Some("Terminate".into()),
                        certificate_refs: vec![SecretObjectReference {
                            name: secret.clone(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                });
            }
            self.tls.push((id.clone(), secret.clone()));
            self.row(
                &id,
                &at,
                &secret,
                Verdict::Mapped,
                &format!(
                    "HTTPS listener(s) on Gateway {class} with certificateRef Secret {secret}; \
                     TOML: [server.tls] cert_file/key_file from the Secret (one certificate per \
                     listener). Not generated: ingress-nginx's default HTTP→HTTPS redirect (add \
                     an HTTPRoute with a RequestRedirect filter on the http listener)"
                ),
            );
        }
        Ok(())
    }

    /// A backendRef for an Ingress backend, or `None` (with a row) when it has no Service.
    fn backend_ref(&mut self, id: &str, at: &str, b: &IngressBackend) -> Option<HTTPBackendRef> {
        let Some(service) = &b.service else {
            self.row(
                id,
                at,
                "resource",
                Verdict::Unsupported,
                "resource backends have no Gateway API or tether equivalent: path skipped",
            );
            return None;
        };
        let port = match service.port.as_ref() {
            Some(p) => match (&p.number, &p.name) {
                (Some(n), _) => Some(*n),
                (None, Some(name)) => {
                    self.row(
                        id,
                        &format!("{at}.service.port.name"),
                        name,
                        Verdict::Approximated,
                        "named port: set the number in the HTTPRoute's backendRef (Gateway API \
                         needs it); the TOML keeps the name",
                    );
                    None
                }
                (None, None) => None,
            },
            None => None,
        };
        Some(HTTPBackendRef {
            name: service.name.clone(),
            port,
            ..Default::default()
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn toml_route(
        &mut self,
        id: &str,
        namespace: &str,
        ingress: &str,
        host: Option<String>,
        path: &str,
        b: &IngressBackend,
        affinity: &Option<Affinity>,
    ) {
        let Some(service) = &b.service else { return };
        let port = service
            .port
            .as_ref()
            .and_then(|p| match (&p.number, &p.name) {
                (Some(n), _) => Some(PortSpec::Number(*n)),
                (None, Some(name)) => Some(PortSpec::Name(name.clone())),
                (None, None) => None,
            });
        let name = format!(
            "{namespace}.{ingress}.{}.{}",
            service.name,
            match &port {
                Some(PortSpec::Number(n)) => n.to_string(),
                Some(PortSpec::Name(n)) => n.clone(),
                None => "port".into(),
            }
        );
        let index = match self.backends.iter().position(|x| x.name == name) {
            Some(i) => i,
            None => {
                if let Some(PortSpec::Number(n)) = &port {
                    self.row(
                        id,
                        &format!("service {} port", service.name),
                        &n.to_string(),
                        Verdict::Approximated,
                        &format!(
                            "TOML kubernetes.port is the endpoints' port (the Service's targetPort) \
                             or the Service port's name; the Ingress names Service port {n}: \
                             change it if the targetPort differs"
                        ),
                    );
                }
                self.backends.push(TomlBackend {
                    name: name.clone(),
                    ingress: id.into(),
                    namespace: namespace.into(),
                    service: service.name.clone(),
                    port,
                    affinity: affinity.clone(),
                    paths: Vec::new(),
                });
                self.backends.len() - 1
            }
        };
        self.backends[index].paths.push(path.into());
        let (host, comment) = match host {
            Some(h) if h.starts_with('*') => {
                self.row(
                    id,
                    "host",
                    &h,
                    Verdict::Approximated,
                    "HTTPRoute hostname as is; in tether.toml too, where a wildcard matches \
                     every host under the domain, deeper ones included (an Ingress \
                     wildcard matches one label)",
                );
                (
                    Some(h.clone()),
                    Some(format!(
                        "wildcard host {h}: tether's also matches deeper hosts (a.b.{})",
                        h.trim_start_matches("*.")
                    )),
                )
            }
            h => (h, None),
        };
        self.toml_routes.push(TomlRoute {
            host,
            path_prefix: path.into(),
            backend: name,
            comment,
            exact: false,
        });
    }

    /// Reports how `session-cookie-path` compares with the path GEP-1619 gives the rule.
    fn cookie_path_row(&mut self, id: &str, affinity: &Option<Affinity>, m: &HTTPRouteMatch) {
        let Some(a) = affinity else { return };
        if a.key != Key::Cookie {
            return;
        }
        let gep = session::cookie_path(Some(m));
        if let Some(p) = &a.cookie_path {
            if *p != gep {
                self.row(
                    id,
                    "cookie path",
                    p,
                    Verdict::Approximated,
                    &format!(
                        "the HTTPRoute rule's cookie path is {gep} (GEP-1619: the rule's match); \
                         the TOML keeps {p}"
                    ),
                );
            }
        }
    }

    fn toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.into()).to_string();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# tether.toml for these Ingresses, for a setup without Gateway API.\n\
             # Signing keys: without [[keys]] tether signs with a key made at start, and cookies\n\
             # do not survive a restart. Add one from `tether keygen`, mounted from a Secret:\n\
             # [[keys]]\n\
             # id = \"k1\"\n\
             # secret_file = \"/etc/tether/keys/k1\""
        );
        for (ingress, secret) in &self.tls {
            let _ = writeln!(
                out,
                "# TLS for {ingress}: mount Secret {secret} and set\n\
                 # [server.tls]\n\
                 # cert_file = \"/etc/tether/tls/tls.crt\"\n\
                 # key_file = \"/etc/tether/tls/tls.key\""
            );
        }
        for b in &self.backends {
            let _ = writeln!(out, "\n# from Ingress {}", b.ingress);
            let _ = writeln!(out, "[[backend]]\nname = {}", q(&b.name));
            let port = match &b.port {
                Some(PortSpec::Number(n)) => format!(", port = {n}"),
                Some(PortSpec::Name(n)) => format!(", port = {}", q(n)),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "kubernetes = {{ namespace = {}, service = {}{port} }}",
                q(&b.namespace),
                q(&b.service)
            );
            let Some(a) = &b.affinity else { continue };
            let _ = writeln!(out, "\n[backend.affinity]");
            match &a.key {
                Key::Header(h) => {
                    let _ = writeln!(out, "key = {}", q(&format!("header:{h}")));
                    continue;
                }
                Key::ClientIp => {
                    let _ = writeln!(out, "key = \"client-ip\"");
                    continue;
                }
                Key::Cookie => {}
            }
            let _ = writeln!(out, "cookie = {}", q(&a.cookie_name));
            // GEP-1619: the path of the one route to it, else `/`.
            let path = a
                .cookie_path
                .clone()
                .unwrap_or_else(|| match b.paths.as_slice() {
                    [only] => session::cookie_path(Some(&HTTPRouteMatch {
                        path: Some(HTTPPathMatch {
                            kind: Some(PathMatchType::PathPrefix),
                            value: Some(only.clone()),
                        }),
                        ..Default::default()
                    })),
                    _ => "/".into(),
                });
            let _ = writeln!(out, "path = {}", q(&path));
            if let Some(d) = &a.domain {
                let _ = writeln!(out, "domain = {}", q(d));
            }
            if let Some(s) = &a.same_site {
                let _ = writeln!(out, "same_site = {}", q(s));
            }
            let secure = match (a.same_site.as_deref(), a.secure) {
                (Some("none"), _) => Some(true),
                (_, s) => s,
            };
            if let Some(s) = secure {
                let _ = writeln!(out, "secure = {s}");
            }
            if let Some(secs) = a.lifetime {
                let secs = secs.min(crate::config::MAX_DURATION.as_secs());
                let _ = writeln!(out, "max_age = \"{secs}s\"\nabsolute_timeout = \"{secs}s\"");
            }
            if let Some(r) = a.rebalance {
                let _ = writeln!(out, "rebalance = {}", q(r));
            }
        }
        for r in &self.toml_routes {
            let _ = writeln!(out);
            if let Some(c) = &r.comment {
                let _ = writeln!(out, "# {c}");
            }
            let matches = crate::config::RouteMatches {
                exact: r.exact,
                ..Default::default()
            };
            out.push_str(&crate::config::route_toml_matching(
                r.host.as_deref(),
                &r.path_prefix,
                crate::config::RouteTo::Backend(&r.backend),
                &matches,
            ));
        }
        out
    }
}

/// The `sessionPersistence` of every rule of an Ingress with this affinity; `None` for
/// client-address affinity, which Gateway API cannot express.
fn session_persistence(a: &Affinity) -> Option<SessionPersistence> {
    match &a.key {
        Key::ClientIp => None,
        Key::Header(h) => Some(SessionPersistence {
            session_name: Some(h.clone()),
            kind: Some(SessionPersistenceType::Header),
            ..Default::default()
        }),
        Key::Cookie => {
            let timeout = a.lifetime.and_then(session::format_duration);
            Some(SessionPersistence {
                session_name: Some(a.cookie_name.clone()),
                kind: Some(SessionPersistenceType::Cookie),
                cookie_config: Some(CookieConfig {
                    lifetime_type: Some(if timeout.is_some() {
                        LifetimeType::Permanent
                    } else {
                        LifetimeType::Session
                    }),
                }),
                absolute_timeout: timeout,
            })
        }
    }
}

/// A host as a DNS label for object and listener names: `app.example.com` →
/// `app-example-com`, `*.example.com` → `wildcard-example-com`.
fn slug(host: &str) -> String {
    let s: String = host
        .replace('*', "wildcard")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    s.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

// === impl Migration ===

impl Migration {
    /// The Gateways and HTTPRoutes as one multi-document YAML stream.
    pub fn gateway_yaml(&self) -> Result<String> {
        let mut docs = Vec::new();
        for g in &self.gateways {
            docs.push(serde_yaml_ng::to_string(g)?);
        }
        for r in &self.routes {
            docs.push(serde_yaml_ng::to_string(r)?);
        }
        Ok(docs.join("---\n"))
    }

    /// The report as a Markdown table.
    pub fn report(&self) -> String {
        let mut out = String::from(
            "| Ingress | annotation / field | value | verdict | how |\n|---|---|---|---|---|\n",
        );
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&r.ingress),
                cell(&r.item),
                cell(&r.value),
                r.verdict,
                cell(&r.how)
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "\nnote: {n}");
        }
        out
    }

    /// Everything, as YAML `kubectl apply -f` takes: the objects, then the TOML and the
    /// report as comments.
    pub fn all(&self) -> Result<String> {
        let mut out = self.gateway_yaml()?;
        out.push_str("---\n# tether.toml (for a setup without Gateway API)\n#\n");
        for line in self.toml.lines() {
            out.push_str(&comment(line));
        }
        out.push_str("#\n# report: each annotation and field, and how it was carried over\n#\n");
        for line in self.report().lines() {
            out.push_str(&comment(line));
        }
        Ok(out)
    }
}

fn comment(line: &str) -> String {
    if line.is_empty() {
        "#\n".into()
    } else {
        format!("# {line}\n")
    }
}
