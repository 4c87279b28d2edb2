//! Ingress mode: the live controller for `networking.k8s.io/v1` Ingresses.
//!
//! watchers → reflector stores → debounce → compile → publish. Two kube-runtime
//! watchers (IngressClasses and Ingresses, cluster-wide) feed reflector stores, which
//! swap a re-list in whole at `InitDone` (the mechanism both controllers share:
//! [`crate::discovery::objects`]). Once both have listed, every burst of changes
//! (collected for `debounce`) compiles the Ingresses of tether's classes, each through
//! [`migrate::compile`] (the one mapping `tether migrate` prints), into [`Compiled`]
//! backends and routes, published on a `watch` channel only when they differ. The
//! server merges them with the config file's own ([`merge`]) and applies the result
//! through its reload path, so the routing snapshot is built the same way as for a file
//! and backends that keep their names keep their endpoints and sessions.
//!
//! Their `spec.tls` entries become [`Binding`]s (host → Secret) sent to [`crate::sni`],
//! which serves each host its Secret's certificate by SNI on tether's TLS listener.
//!
//! Every burst also hands tether's Ingresses to the status writer
//! ([`super::status`]), which writes only on the replica holding the Lease.
//!
//! Errors only log: watch errors are retried with backoff, and an Ingress that does not
//! compile is left out (with a warning) while the others route.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Client;
use tokio::sync::watch;

use super::annotations::Verdict;
use super::migrate;
use crate::config::{
    BackendSettings, Config, IngressSettings, RouteFilters, RouteMatches, RouteSettings, RouteTo,
};
use crate::discovery::objects::{self, Bursts};
use crate::sni::Binding;

/// Why an Ingress could not be routed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Ingress does not translate (a bad path, pathType, or a value tether cannot
    /// hold).
    #[error("ingress {ingress}: {source}")]
    Compile {
        /// `namespace/name`.
        ingress: String,
        /// What the mapping said.
        source: migrate::Error,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An Ingress of tether's classes with the report rows of its translation.
pub type Report = (Arc<Ingress>, Vec<migrate::Row>);

/// The annotation that makes an IngressClass the cluster's default.
const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

/// One route compiled from an Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRoute {
    /// Exact host, or any host.
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: String,
    /// The backend's name (an entry of [`Compiled::backends`]), or the answer the route
    /// gives itself (an HTTPRoute's redirect, or 500 for a rule without a valid backend).
    pub to: RouteTo<String>,
    /// Its other conditions (an exact path; an HTTPRoute's method, headers, query).
    pub matches: RouteMatches,
    /// What it changes on the way (an HTTPRoute rule's filters).
    pub filters: RouteFilters,
    /// The object it came from, kind first (`Ingress shop/web`, `HTTPRoute shop/web`),
    /// for logs and `tether check`.
    pub ingress: String,
}

/// What the Ingresses of tether's classes route, ready to merge with a config file.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// Backends, named `namespace.ingress.service.port` (as `tether migrate` names them).
    pub backends: Vec<BackendSettings>,
    /// Routes, in Ingress order.
    pub routes: Vec<IngressRoute>,
    /// `namespace/name` of every Ingress of tether's classes, routed or not.
    pub ingresses: Vec<String>,
    /// The certificates their `spec.tls` entries ask for, one per host, in Ingress
    /// order (a host two Ingresses bind keeps the first one's).
    pub certificates: Vec<Binding>,
    /// `spec.tls` entries whose certificate is not used as written.
    pub certificate_notes: Vec<String>,
}

impl Compiled {
    /// Compiles the Ingresses of the classes whose `spec.controller` is `controller`.
    /// Ingresses that do not compile are left out, each with an error in the second
    /// value.
    pub fn build(
        classes: &[Arc<IngressClass>],
        ingresses: &[Arc<Ingress>],
        controller: &str,
    ) -> (Compiled, Vec<Report>, Vec<Error>) {
        let ours: BTreeSet<String> = classes
            .iter()
            .filter(|c| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller))
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let default_is_ours = classes.iter().any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
                && c.metadata.name.as_ref().is_some_and(|n| ours.contains(n))
        });
        let mut selected: Vec<&Arc<Ingress>> = ingresses
            .iter()
            .filter(|i| match class_of(i) {
                Some(c) => ours.contains(c),
                None => default_is_ours,
            })
            .collect();
        selected.sort_by_key(|i| id(i));
        let mut out = Compiled::default();
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        for ingress in selected {
            let name = id(ingress);
            out.ingresses.push(name.clone());
            certificates(ingress, &mut out);
            let (config, rows) = match migrate::compile(ingress) {
                Ok(c) => c,
                Err(source) => {
                    errors.push(Error::Compile {
                        ingress: name,
                        source,
                    });
                    continue;
                }
            };
            reports.push((ingress.clone(), rows));
            let Some(config) = config else { continue };
            for r in &config.routes {
                out.routes.push(IngressRoute {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    to: match &r.to {
                        RouteTo::Backend(i) => RouteTo::Backend(config.backends[*i].name.clone()),
                        RouteTo::Answer(a) => RouteTo::Answer(a.clone()),
                    },
                    matches: r.matches.clone(),
                    filters: r.filters.clone(),
                    ingress: format!("Ingress {name}"),
                });
            }
            out.backends.extend(config.backends);
        }
        (out, reports, errors)
    }

    /// A fingerprint of what routes, to publish only real changes (a reload restarts
    /// discovery, so a no-op one is not free).
    fn fingerprint(&self) -> String {
        format!("{:?}|{:?}", self.backends, self.routes)
    }
}

/// The certificates an Ingress's `spec.tls` asks for: its `secretName` (a Secret of
/// the Ingress's namespace, as the Ingress API says) for each of its `hosts`.
fn certificates(i: &Ingress, out: &mut Compiled) {
    let name = id(i);
    let ns = i.metadata.namespace.as_deref().unwrap_or("default");
    for (n, tls) in i
        .spec
        .iter()
        .flat_map(|s| s.tls.iter().flatten())
        .enumerate()
    {
        let at = format!("Ingress {name} spec.tls[{n}]");
        let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            out.certificate_notes.push(format!(
                "{at}: no secretName; the config file's certificate ([server.tls]) serves its hosts"
            ));
            continue;
        };
        let hosts = tls.hosts.as_deref().unwrap_or_default();
        if hosts.is_empty() {
            out.certificate_notes.push(format!(
                "{at}: no hosts; tether picks certificates by SNI host, so the config \
                 file's certificate ([server.tls]) serves it, not {ns}/{secret}"
            ));
        }
        // Only hosts the Ingress routes: `spec.tls` must not let an Ingress take the
        // certificate of a host it does not serve.
        let routed: Vec<String> = i
            .spec
            .iter()
            .flat_map(|s| s.rules.iter().flatten())
            .filter_map(|r| r.host.as_deref())
            .map(str::to_ascii_lowercase)
            .collect();
        for host in hosts {
            if !routed.iter().any(|r| r.eq_ignore_ascii_case(host)) {
                out.certificate_notes.push(format!(
                    "{at}: host {host} is in no rule of the Ingress; its certificate is \
                     not served for it"
                ));
                continue;
            }
            out.certificates.push(Binding {
                host: host.to_ascii_lowercase(),
                namespace: ns.to_string(),
                name: secret.to_string(),
                from: format!("Ingress {name}"),
            });
        }
    }
}

/// `namespace/name` of an object.
fn id(i: &Ingress) -> String {
    format!(
        "{}/{}",
        i.metadata.namespace.as_deref().unwrap_or("default"),
        i.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The class an Ingress names: `spec.ingressClassName`, else the deprecated
/// `kubernetes.io/ingress.class` annotation.
fn class_of(i: &Ingress) -> Option<&str> {
    i.spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            i.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/ingress.class"))
                .map(String::as_str)
        })
}

/// The config file's backends and routes plus the Ingresses'.
///
/// The rule: the file's backends come first and keep their names; an Ingress backend
/// whose name a file backend already has is dropped (with its routes), so a file can
/// never be overridden by an Ingress. Ingress routes are added after the file's; one
/// with the same host and path prefix as a file route is dropped (the file's wins).
/// Routing then picks the longest prefix, host-specific before any-host, as for a file.
/// Returns the merged config and one line per dropped item.
pub fn merge(base: &Config, extra: &Compiled) -> (Config, Vec<String>) {
    let mut config = base.clone();
    let mut dropped = Vec::new();
    let mut taken: BTreeSet<&str> = base.backends.iter().map(|b| b.name.as_str()).collect();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &extra.backends {
        if !taken.insert(b.name.as_str()) {
            let first = if base.backends.iter().any(|f| f.name == b.name) {
                "the config file"
            } else {
                "an object listed before it"
            };
            dropped.push(format!(
                "backend {:?}: {first} has a backend of that name; it wins",
                b.name
            ));
            continue;
        }
        index.insert(b.name.as_str(), config.backends.len());
        config.backends.push(b.clone());
    }
    for r in &extra.routes {
        let to = match &r.to {
            RouteTo::Backend(name) => match index.get(name.as_str()) {
                Some(&i) => RouteTo::Backend(i),
                None => continue,
            },
            RouteTo::Answer(a) => RouteTo::Answer(a.clone()),
        };
        let clash = base
            .routes
            .iter()
            .any(|f| f.host == r.host && f.path_prefix == r.path_prefix && f.matches == r.matches);
        if clash {
            dropped.push(format!(
                "route {}{} of {}: the config file routes it; it wins",
                r.host.as_deref().unwrap_or("*"),
                r.path_prefix,
                r.ingress
            ));
            continue;
        }
        config.routes.push(RouteSettings {
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            to,
            matches: r.matches.clone(),
            filters: r.filters.clone(),
        });
    }
    (config, dropped)
}

/// Watches IngressClasses and Ingresses and publishes what tether's route.
pub struct Controller {
    /// The API client.
    pub client: Client,
    /// `[kubernetes.ingress]`.
    pub settings: IngressSettings,
    /// Where tether's Ingresses (with their report rows) go after every burst, for the
    /// status writer ([`super::status::Writer`]).
    pub ours: Option<watch::Sender<Arc<Vec<Report>>>>,
    /// Where the certificates of `spec.tls` go ([`crate::sni::Watcher`]); `None` when
    /// tether has no TLS listener (the Ingresses then route in cleartext, with a note).
    pub tls: Option<watch::Sender<Arc<Vec<Binding>>>>,
}

impl Controller {
    /// Runs until dropped, publishing every change of what routes on `tx`.
    pub async fn run(self, tx: watch::Sender<Arc<Compiled>>) {
        let (classes, class_changes) = objects::reflect::<IngressClass>(&self.client);
        let (ingresses, ingress_changes) = objects::reflect::<Ingress>(&self.client);
        let mut bursts = Bursts::new(
            vec![class_changes, ingress_changes],
            self.settings.debounce,
            "ingress",
        );
        let mut published = tx.borrow().fingerprint();
        let mut reported = BTreeSet::new();
        let mut noted = BTreeSet::new();
        while bursts.next().await.is_some() {
            let (compiled, reports, errors) = Compiled::build(
                &classes.state(),
                &ingresses.state(),
                &self.settings.controller,
            );
            for e in &errors {
                tracing::warn!(error = %e, "ingress left out: it does not compile");
            }
            report(&reports, &mut reported);
            let mut notes: BTreeSet<String> = compiled.certificate_notes.iter().cloned().collect();
            match &self.tls {
                Some(tls) => {
                    tls.send_if_modified(|b| {
                        let changed = **b != compiled.certificates;
                        if changed {
                            *b = Arc::new(compiled.certificates.clone());
                        }
                        changed
                    });
                }
                None => notes.extend(compiled.certificates.iter().map(|b| {
                    format!(
                        "{}: spec.tls for {}: tether has no TLS listener ([server.tls]); \
                         served in cleartext only",
                        b.from, b.host
                    )
                })),
            }
            for n in notes.difference(&noted) {
                tracing::warn!("ingress tls: not honoured as written: {n}");
            }
            noted = notes;
            if let Some(ours) = &self.ours {
                ours.send_replace(Arc::new(reports));
            }
            let fingerprint = compiled.fingerprint();
            if fingerprint != published {
                published = fingerprint;
                tracing::info!(
                    ingresses = compiled.ingresses.len(),
                    backends = compiled.backends.len(),
                    routes = compiled.routes.len(),
                    "ingresses changed"
                );
                let _ = tx.send(Arc::new(compiled));
            }
        }
    }
}

/// Logs the annotations and fields tether does not honour as written, once per Ingress
/// generation.
fn report(reports: &[Report], seen: &mut BTreeSet<(String, Option<i64>)>) {
    let current: BTreeSet<(String, Option<i64>)> = reports
        .iter()
        .map(|(i, _)| (id(i), i.metadata.generation))
        .collect();
    seen.retain(|k| current.contains(k));
    for (ingress, rows) in reports {
        if !seen.insert((id(ingress), ingress.metadata.generation)) {
            continue;
        }
        for r in rows {
            match r.verdict {
                Verdict::Unsupported => tracing::warn!(
                    ingress = %r.ingress, item = %r.item, value = %r.value,
                    "not honoured: {}", r.how
                ),
                Verdict::Approximated => tracing::info!(
                    ingress = %r.ingress, item = %r.item, value = %r.value,
                    "approximated: {}", r.how
                ),
                Verdict::Mapped | Verdict::NotIngressNginx => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::parse(toml, "test.toml", std::path::Path::new(".")).unwrap()
    }

    fn backend(name: &str) -> BackendSettings {
        let c = config(&format!(
            "[[backend]]\nname = \"{name}\"\nendpoints = [{{ name = \"p\", address = \"127.0.0.1:1\" }}]\n"
        ));
        c.backends[0].clone()
    }

    fn route(host: &str, backend: &str, from: &str) -> IngressRoute {
        IngressRoute {
            host: Some(host.into()),
            path_prefix: "/".into(),
            to: RouteTo::Backend(backend.into()),
            matches: RouteMatches::default(),
            filters: RouteFilters::default(),
            ingress: from.into(),
        }
    }

    #[test]
    fn each_dropped_item_names_what_it_came_from_and_what_won() {
        let base = config(
            "[[backend]]\nname = \"file\"\nendpoints = [{ name = \"p\", address = \"127.0.0.1:1\" }]\n\
             [[route]]\nhost = \"a.test\"\npath_prefix = \"/\"\nbackend = \"file\"\n",
        );
        let extra = Compiled {
            backends: vec![backend("file"), backend("shop"), backend("shop")],
            routes: vec![
                route("a.test", "shop", "HTTPRoute web/shop"),
                route("b.test", "shop", "Ingress web/shop"),
            ],
            ingresses: vec![],
            ..Compiled::default()
        };
        let (merged, dropped) = merge(&base, &extra);
        assert_eq!(merged.backends.len(), 2, "the file's and one shop");
        assert_eq!(merged.routes.len(), 2, "the file's and b.test");
        assert_eq!(
            dropped,
            [
                "backend \"file\": the config file has a backend of that name; it wins",
                "backend \"shop\": an object listed before it has a backend of that name; it wins",
                "route a.test/ of HTTPRoute web/shop: the config file routes it; it wins",
            ]
        );
    }

    #[test]
    fn an_ingress_gets_certificates_only_for_hosts_its_rules_route() {
        let i: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "namespace": "web"},
            "spec": {
                "tls": [{"hosts": ["Shop.example.com", "bank.example.com"], "secretName": "s"}],
                "rules": [{"host": "shop.example.com"}],
            },
        }))
        .unwrap();
        let mut out = Compiled::default();
        certificates(&i, &mut out);
        let bound: Vec<(&str, &str)> = out
            .certificates
            .iter()
            .map(|b| (b.host.as_str(), b.name.as_str()))
            .collect();
        assert_eq!(bound, [("shop.example.com", "s")]);
        assert!(
            out.certificate_notes
                .iter()
                .any(|n| n.contains("bank.example.com")),
            "{:?}",
            out.certificate_notes
        );
    }
}
