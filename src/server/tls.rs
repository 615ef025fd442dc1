//! HTTPS serving with rustls: certificate chain and key from PEM files, TLS 1.2 and 1.3 only,
//! ALPN `h2` and `http/1.1`, and the files reloaded when they change (a broken pair keeps the
//! last good one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::watch::Stamp;

/// How often the certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {cert} / key {key}: {problem}")]
pub struct TlsError {
    cert: String,
    key: String,
    problem: String,
}

/// The current TLS configuration, replaced whole when the files change.
#[derive(Debug)]
pub struct TlsReloader {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<ServerConfig>,
}

impl TlsReloader {
    /// Loads the pair; fails when it cannot be used.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsReloader, TlsError> {
        let config = build(cert, key)?;
        Ok(TlsReloader {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(config),
        })
    }

    /// The configuration for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Reloads the pair whenever either file changes, until `cancel`.
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>, cancel: CancellationToken) {
        let stamps = || (Stamp::of(&self.cert), Stamp::of(&self.key));
        let mut last = stamps();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_CHECK) => {}
            }
            let now = stamps();
            if now == last {
                continue;
            }
            last = now;
            match build(&self.cert, &self.key) {
                Ok(config) => {
                    self.current.store(Arc::new(config));
                    metrics.tls_reloads.with_label_values(&["ok"]).inc();
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    metrics.tls_reloads.with_label_values(&["failed"]).inc();
                    tracing::error!(error = %e, "TLS certificate changed but cannot be used; keeping the previous one");
                }
            }
        }
    }
}

fn build(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let fail = |problem: String| TlsError {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        problem,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("the certificate file is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(fail("no certificate in the certificate file".into()));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| fail(format!("cannot read the key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            fail(format!(
                "the key does not match the certificate, or is unusable: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
