//! Certificates from `kubernetes.io/tls` Secrets for the hosts Gateway API listeners and
//! Ingresses name: what the controllers ask for ([`Binding`]s) joined with the Secrets,
//! built into the TLS listener's per-host table ([`crate::tls::Certificates`]).
//!
//! The controllers publish their bindings (host → Secret) on `watch` channels; the
//! Secrets are reflected by the mechanism both controllers share
//! ([`crate::discovery::objects`]). Every change of either rebuilds the whole table off
//! the request path and publishes it with one store; handshakes read it lock-free. A
//! Secret rotation therefore swaps the certificate for new handshakes without a
//! restart, and open connections keep theirs.
//!
//! A Secret that does not hold a usable pair (no `tls.crt` / `tls.key`, bad PEM, a key
//! that is not the certificate's) is refused with a log line naming `namespace/name`
//! and the reason, once per resourceVersion; its hosts keep the last pair that Secret
//! held, so a botched edit never takes a site's certificate away. A Secret that is gone
//! (or never existed) leaves its hosts to the config file's certificate, with a log
//! line.
//!
//! What it finds out about each Secret a binding names (missing, not of the TLS type,
//! not a usable pair) it publishes as [`Verdicts`], so Gateway API status can say so
//! (listener `ResolvedRefs` False, `InvalidCertificateRef`) without a second watch of
//! Secrets or a second parse: each Secret is parsed once per resourceVersion, here.
//!
//! **What is watched, and the RBAC it needs.** Secrets of type `kubernetes.io/tls`,
//! cluster-wide, selected on the server with the field selector
//! `type=kubernetes.io/tls`: list and watch (get for a reader's convenience). The other
//! choice, a `get` per referenced Secret, was refused: Secret names come from Gateways
//! and Ingresses in any namespace, so RBAC could not narrow it by `resourceNames`
//! either, and a rotation would only be seen by polling, late and at a cost per Secret
//! per period; a watch sees it at once, for one connection. The field selector keeps
//! every other Secret (service-account tokens, passwords) off the wire and out of
//! memory, though RBAC cannot express it: the ClusterRole grants reading Secrets, and
//! tether holds the private keys it serves, as any TLS-terminating proxy must (the
//! store keeps every TLS Secret of the cluster; the parsed pairs only of those asked
//! for). The watch starts only once a Gateway or an Ingress names a Secret, so a tether
//! that terminates TLS with its file's certificate alone needs no right to Secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::discovery::objects::{self, Bursts};
use crate::tls::{Certificates, HostTable};

/// The Secret type that holds a certificate and its key.
pub const TLS_SECRET: &str = "kubernetes.io/tls";

/// Why a Secret's certificate is not served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key of the Secret's `data` is missing.
    #[error("secret {secret}: no {field} in data")]
    Missing {
        /// `namespace/name`.
        secret: String,
        /// `tls.crt` or `tls.key`.
        field: &'static str,
    },
    /// The pair does not parse or does not belong together.
    #[error("secret {secret}: {source}")]
    Pair {
        /// `namespace/name`.
        secret: String,
        /// What TLS said.
        source: crate::tls::Error,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One host's certificate, as a controller asks for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    /// `shop.example.com`, or `*.example.com` (one label).
    pub host: String,
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
    /// What asks for it, for logs (`Gateway infra/gw listener https`, `Ingress shop/web`).
    pub from: String,
}

impl Binding {
    /// `namespace/name` of the Secret.
    pub fn secret(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The pair of a Secret, from its `tls.crt` and `tls.key`.
pub fn pair(secret: &Secret) -> Result<CertifiedKey> {
    let id = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or("default"),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    let field = |field: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(field))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| Error::Missing {
                secret: id.clone(),
                field,
            })
    };
    crate::tls::pair_from_pem(field("tls.crt")?, field("tls.key")?)
        .map_err(|source| Error::Pair { secret: id, source })
}

/// The Secrets bindings name that hold no usable certificate now: `(namespace, name)` →
/// why (not found or not of type `kubernetes.io/tls`, no `tls.crt`, bad PEM, a key
/// that is not the certificate's). A Secret not in it is usable, or not known yet.
pub type Verdicts = BTreeMap<(String, String), String>;

/// What the last build knew of each Secret.
#[derive(Default)]
struct Cache {
    /// `(namespace, name)` → the resourceVersion last read, and why it was not usable
    /// (`None`: it was).
    read: BTreeMap<(String, String), (Option<String>, Option<String>)>,
    /// `(namespace, name)` → the last usable pair the Secret held.
    good: BTreeMap<(String, String), Arc<CertifiedKey>>,
}

impl Cache {
    /// The table for `bindings` given the Secrets `lookup` finds, notes on hosts that
    /// get no certificate of their own (logged by the caller while they hold), and the
    /// named Secrets that are not usable now.
    fn build(
        &mut self,
        bindings: &[Binding],
        lookup: impl Fn(&str, &str) -> Option<Arc<Secret>>,
    ) -> (HostTable, BTreeSet<String>, Verdicts) {
        let mut table = HostTable::default();
        let mut notes = BTreeSet::new();
        let mut verdicts = Verdicts::new();
        let mut seen = BTreeSet::new();
        for b in bindings {
            let key = (b.namespace.clone(), b.name.clone());
            let Some(secret) = lookup(&b.namespace, &b.name) else {
                self.good.remove(&key);
                self.read.remove(&key);
                verdicts.insert(
                    key,
                    format!(
                        "secret {} not found (or not of type {TLS_SECRET})",
                        b.secret()
                    ),
                );
                notes.insert(format!(
                    "{}: secret {} not found (or not of type {TLS_SECRET}); \
                     the config file's certificate serves {}",
                    b.from,
                    b.secret(),
                    b.host
                ));
                continue;
            };
            seen.insert(key.clone());
            let rv = secret.metadata.resource_version.clone();
            if self.read.get(&key).is_none_or(|(read, _)| *read != rv) {
                let refused = match pair(&secret) {
                    Ok(p) => {
                        self.good.insert(key.clone(), Arc::new(p));
                        None
                    }
                    Err(e) => {
                        let keeps = if self.good.contains_key(&key) {
                            "keeping the certificate it held before"
                        } else {
                            "its hosts get the config file's certificate"
                        };
                        tracing::warn!(secret = %b.secret(), error = %e, "tls secret refused; {keeps}");
                        Some(e.to_string())
                    }
                };
                self.read.insert(key.clone(), (rv, refused));
            }
            if let Some((_, Some(why))) = self.read.get(&key) {
                // Its hosts may still be served the pair it held before: the Secret as
                // it is now is what the status speaks of.
                verdicts.insert(key.clone(), why.clone());
            }
            let Some(p) = self.good.get(&key) else {
                notes.insert(format!(
                    "{}: secret {} holds no usable certificate; the config file's certificate \
                     serves {}",
                    b.from,
                    b.secret(),
                    b.host
                ));
                continue;
            };
            if !table.insert(&b.host, p.clone()) {
                notes.insert(format!(
                    "{}: host {} already has a certificate from an object listed before; it wins",
                    b.from, b.host
                ));
            }
        }
        self.read.retain(|k, _| seen.contains(k));
        self.good.retain(|k, _| seen.contains(k));
        (table, notes, verdicts)
    }
}

/// Watches `kubernetes.io/tls` Secrets and keeps a TLS listener's per-host
/// certificates in step with the bindings the controllers ask for.
pub struct Watcher {
    /// The API client.
    pub client: Client,
    /// The TLS listener's certificates.
    pub certificates: Arc<Certificates>,
    /// How long a burst of Secret changes is collected before the table is rebuilt.
    pub debounce: Duration,
    /// Where the [`Verdicts`] of each rebuild go (to the Gateway API controller, for
    /// listener status), when they change; `None`: nobody asks.
    pub verdicts: Option<watch::Sender<Arc<Verdicts>>>,
}

impl Watcher {
    /// Runs until dropped. `sources` are the controllers' bindings, earlier sources
    /// first: a host two of them bind keeps the earlier one's certificate.
    pub async fn run(self, mut sources: Vec<watch::Receiver<Arc<Vec<Binding>>>>) {
        // Nothing is read from the API until an object names a Secret: a tether whose
        // Gateways and Ingresses ask for no certificate needs no right to read Secrets.
        loop {
            if sources.iter().any(|s| !s.borrow().is_empty()) {
                break;
            }
            if sources.is_empty() {
                return;
            }
            let changed =
                futures::future::select_all(sources.iter_mut().map(|s| s.changed().boxed()));
            if changed.await.0.is_err() {
                return;
            }
        }
        let config = watcher::Config::default().fields(&format!("type={TLS_SECRET}"));
        let (secrets, changes) = objects::reflect_with::<Secret>(&self.client, config);
        // The Secrets' bursts on a channel of their own, so waiting on them and on the
        // bindings together never drops half a burst.
        let (listed_tx, mut listed) = watch::channel(0u64);
        let debounce = self.debounce;
        let bursts = tokio::spawn(async move {
            let mut bursts = Bursts::new(vec![changes], debounce, "tls secrets");
            while bursts.next().await.is_some() {
                listed_tx.send_modify(|n| *n += 1);
            }
        });
        let _stop = AbortOnDrop(bursts);
        let mut cache = Cache::default();
        let mut reported = BTreeSet::new();
        loop {
            let changed = futures::future::select_all(
                sources
                    .iter_mut()
                    .map(|s| s.changed().boxed())
                    .chain(std::iter::once(listed.changed().boxed())),
            );
            if changed.await.0.is_err() {
                return;
            }
            let mut bindings = Vec::new();
            for s in &mut sources {
                bindings.extend(s.borrow_and_update().iter().cloned());
            }
            if *listed.borrow_and_update() == 0 {
                continue; // not listed in full yet: every Secret would look missing
            }
            let (table, notes, verdicts) =
                cache.build(&bindings, |ns, name| lookup(&secrets, ns, name));
            if let Some(tx) = &self.verdicts {
                tx.send_if_modified(|v| {
                    let changed = **v != verdicts;
                    if changed {
                        *v = Arc::new(verdicts);
                    }
                    changed
                });
            }
            for n in notes.difference(&reported) {
                tracing::warn!("tls: {n}");
            }
            reported = notes;
            tracing::info!(hosts = table.len(), "tls certificates from secrets applied");
            self.certificates.set_hosts(table);
        }
    }
}

/// A Secret in the store, if it is of the TLS type (the field selector already says
/// so; a second look costs nothing).
fn lookup(secrets: &Store<Secret>, namespace: &str, name: &str) -> Option<Arc<Secret>> {
    secrets
        .get(&ObjectRef::new(name).within(namespace))
        .filter(|s| s.type_.as_deref() == Some(TLS_SECRET))
}

/// Aborts the Secrets' watch when the watcher is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(ns: &str, name: &str, rv: &str, crt: &str, key: &str) -> Arc<Secret> {
        let mut s = Secret::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some(rv.into());
        s.type_ = Some(TLS_SECRET.into());
        s.data = Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec())),
            ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
        ]));
        Arc::new(s)
    }

    fn binding(host: &str, name: &str) -> Binding {
        Binding {
            host: host.into(),
            namespace: "shop".into(),
            name: name.into(),
            from: "test".into(),
        }
    }

    #[test]
    fn a_secret_that_does_not_parse_keeps_the_pair_it_held() {
        let c = rcgen::generate_simple_self_signed(vec!["shop.example.com".into()]).unwrap();
        let (crt, key) = (c.cert.pem(), c.signing_key.serialize_pem());
        let (crt, key) = (crt.as_str(), key.as_str());
        let mut cache = Cache::default();
        let bindings = [binding("shop.example.com", "web-tls")];
        let good = secret("shop", "web-tls", "1", crt, key);
        let (table, notes, verdicts) = cache.build(&bindings, |_, _| Some(good.clone()));
        assert!(verdicts.is_empty(), "{verdicts:?}");
        assert_eq!(table.len(), 1, "{notes:?}");
        let bad = secret("shop", "web-tls", "2", "not pem", key);
        let (table, _, verdicts) = cache.build(&bindings, |_, _| Some(bad.clone()));
        assert_eq!(table.len(), 1, "the previous pair stays");
        let key = ("shop".to_string(), "web-tls".to_string());
        assert!(
            verdicts.contains_key(&key),
            "refused, though its pair is served"
        );
        // Read once per resourceVersion, and still refused at the next build.
        let (_, _, verdicts) = cache.build(&bindings, |_, _| Some(bad.clone()));
        assert!(verdicts.contains_key(&key));
        // A key that is not the certificate's is refused the same way.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let mismatch = secret(
            "shop",
            "web-tls",
            "3",
            crt,
            &other.signing_key.serialize_pem(),
        );
        assert!(matches!(pair(&mismatch), Err(Error::Pair { .. })));
        let (table, _, verdicts) = cache.build(&bindings, |_, _| Some(mismatch.clone()));
        assert!(verdicts.contains_key(&key));
        assert_eq!(table.len(), 1, "the previous pair stays");
        // Gone: its host falls back to the default, with a note.
        let (table, notes, verdicts) = cache.build(&bindings, |_, _| None);
        assert!(verdicts[&key].contains("not found"), "{verdicts:?}");
        assert!(table.is_empty());
        assert!(
            notes.iter().any(|n| n.contains("shop/web-tls")),
            "{notes:?}"
        );
    }
}
