//! TLS termination with rustls: certificate loading, ALPN (h2, http/1.1), reloading
//! when the certificate or key file changes (e.g. cert-manager renewing a Secret), and
//! choosing a certificate by the client's SNI.
//!
//! One `ServerConfig` per listener, built at start, whose certificate resolver is
//! [`Certificates`]: the config file's pair is its default, and the Kubernetes
//! controllers add per-host pairs from Secrets (the `sni` module). Each table sits behind
//! an `ArcSwap`; a handshake loads it (no lock, no allocation), so a reload or a Secret
//! rotation never disturbs connections already open and applies to the next handshake.
//! A bad new pair is rejected with a log line and the old one keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// PEM held in memory (a Secret's `tls.crt` / `tls.key`) could not be used.
    #[error("{field}: {reason}")]
    Pem {
        /// `tls.crt` or `tls.key`.
        field: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// The live TLS configuration of a listener.
#[derive(Debug)]
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// Built once: the certificates change inside `certificates`, not here.
    config: Arc<ServerConfig>,
    certificates: Arc<Certificates>,
}

impl Tls {
    /// Loads the pair; fails at start with the file and the reason.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, Error> {
        let certificates = Arc::new(Certificates::default());
        certificates
            .default
            .store(Some(Arc::new(load_pair(cert_file, key_file)?)));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(certificates.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            certificates,
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        })
    }

    /// The configuration for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The listener's certificates, for the Kubernetes controllers to add hosts to.
    pub fn certificates(&self) -> Arc<Certificates> {
        self.certificates.clone()
    }

    /// Checks the files every `every` and reloads them when they change, until dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let stamp = |tls: &Tls| (modified(&tls.cert_file), modified(&tls.key_file));
        let mut last = stamp(&self);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = stamp(&self);
            if now == last {
                continue;
            }
            last = now;
            match load_pair(&self.cert_file, &self.key_file) {
                Ok(c) => {
                    self.certificates.default.store(Some(Arc::new(c)));
                    tracing::info!(cert = %self.cert_file.display(), "tls certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tls certificate reload failed; keeping the previous one")
                }
            }
        }
    }
}

// === impl Certificates ===

/// The certificates of a TLS listener, chosen by the client's SNI (RFC 6066 §3): the
/// exact host's, else the one-label wildcard's (`*.example.com` covers `a.example.com`,
/// not `a.b.example.com` nor `example.com`, as RFC 6125 §6.4.3 matches a certificate),
/// else the config file's. A client without SNI gets the config file's.
#[derive(Debug, Default)]
pub struct Certificates {
    /// The config file's pair (`[server.tls]`), reloaded when the files change.
    default: ArcSwapOption<CertifiedKey>,
    /// Per-host pairs from Secrets, rebuilt whole off the request path.
    hosts: ArcSwap<HostTable>,
}

/// Per-host certificates, keyed by lowercase host.
#[derive(Debug, Default, Clone)]
pub struct HostTable {
    /// `shop.example.com` → its pair.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` (from `*.example.com`) → its pair.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl HostTable {
    /// Adds `pair` for `host` (`shop.example.com` or `*.example.com`); a host already
    /// present keeps its first pair (returns `false`).
    pub fn insert(&mut self, host: &str, pair: Arc<CertifiedKey>) -> bool {
        let host = host.to_ascii_lowercase();
        let (map, key) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_string()),
            None => (&mut self.exact, host),
        };
        match map.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(pair);
                true
            }
        }
    }

    /// How many hosts have a pair.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether no host has a pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pair for `sni` (lowercase, as rustls hands it over), if a host has one.
    fn get(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(sni).or_else(|| {
            let (_, parent) = sni.split_once('.')?;
            self.wildcard.get(parent)
        })
    }
}

impl Certificates {
    /// Replaces the per-host pairs; the next handshake sees the new table.
    pub fn set_hosts(&self, table: HostTable) {
        self.hosts.store(Arc::new(table));
    }

    /// The pair a handshake for `sni` gets.
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = sni {
            if let Some(pair) = self.hosts.load().get(sni) {
                return Some(pair.clone());
            }
        }
        self.default.load_full()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// A certificate chain and its private key from PEM held in memory (a Secret's
/// `tls.crt` and `tls.key`), checked to belong together.
pub fn pair_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    let err = |field, reason: String| Error::Pem { field, reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err("tls.crt", e.to_string()))?;
    if certs.is_empty() {
        return Err(err("tls.crt", "no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| err("tls.key", e.to_string()))?;
    certified(certs, key)
}

/// rustls's pair, refused when the key is not the certificate's.
fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    let provider = rustls::crypto::ring::default_provider();
    let pair = CertifiedKey::from_der(certs, key, &provider)?;
    // `from_der` lets an unknown consistency pass; a pair must be known to match.
    pair.keys_match()?;
    Ok(pair)
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, Error> {
    let err = |p: &Path, reason: String| Error::File {
        path: p.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| err(cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(cert_file, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| err(key_file, e.to_string()))?;
    certified(certs, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(host: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        Arc::new(
            pair_from_pem(
                c.cert.pem().as_bytes(),
                c.signing_key.serialize_pem().as_bytes(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn sni_picks_the_exact_host_then_a_one_label_wildcard_then_the_default() {
        let certs = Certificates::default();
        let (default, exact, wild) = (
            pair("localhost"),
            pair("a.example.com"),
            pair("*.example.com"),
        );
        certs.default.store(Some(default.clone()));
        let mut table = HostTable::default();
        assert!(table.insert("A.example.com", exact.clone()));
        assert!(table.insert("*.example.com", wild.clone()));
        assert!(
            !table.insert("a.example.com", wild.clone()),
            "the first binding wins"
        );
        certs.set_hosts(table);
        let picked = |sni| certs.pick(sni).map(|p| p.cert[0].clone());
        assert_eq!(picked(Some("a.example.com")), Some(exact.cert[0].clone()));
        assert_eq!(picked(Some("b.example.com")), Some(wild.cert[0].clone()));
        // One label only (RFC 6125 §6.4.3), and not the bare domain.
        assert_eq!(
            picked(Some("x.b.example.com")),
            Some(default.cert[0].clone())
        );
        assert_eq!(picked(Some("example.com")), Some(default.cert[0].clone()));
        assert_eq!(picked(None), Some(default.cert[0].clone()));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["a".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".to_string()]).unwrap();
        let err = pair_from_pem(
            a.cert.pem().as_bytes(),
            b.signing_key.serialize_pem().as_bytes(),
        );
        assert!(matches!(err, Err(Error::Rustls(_))), "{err:?}");
        let err = pair_from_pem(b"garbage", a.signing_key.serialize_pem().as_bytes());
        assert!(err.is_err());
    }
}
