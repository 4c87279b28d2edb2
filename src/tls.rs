//! TLS termination with rustls: certificate loading, ALPN (h2, http/1.1), and reloading
//! when the certificate or key file changes (e.g. cert-manager renewing a Secret).
//!
//! The active `ServerConfig` sits behind an `ArcSwap`; each new connection's handshake
//! loads it, so a reload never disturbs connections already open. A bad new pair is
//! rejected with a log line and the old one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
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
}

/// The live TLS configuration of a listener.
#[derive(Debug)]
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    config: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Loads the pair; fails at start with the file and the reason.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, Error> {
        Ok(Tls {
            config: ArcSwap::from_pointee(server_config(cert_file, key_file)?),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        })
    }

    /// The configuration for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
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
            match server_config(&self.cert_file, &self.key_file) {
                Ok(c) => {
                    self.config.store(Arc::new(c));
                    tracing::info!(cert = %self.cert_file.display(), "tls certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tls certificate reload failed; keeping the previous one")
                }
            }
        }
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, Error> {
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
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
