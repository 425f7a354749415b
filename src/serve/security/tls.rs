//! TLS for both listeners, from a PEM certificate chain and private key
//! (`--tls-cert`, `--tls-key`): pgwire answers `SSLRequest` (psql's
//! `sslmode=require`), the HTTP listener becomes HTTPS. rustls with ring is the
//! only crypto provider built in.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The certificate and key, loaded once, for either listener.
#[derive(Clone)]
pub struct Tls {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// The chain's PEM text, for SCRAM channel binding (pgwire reads it).
    pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("certificates", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        let pem = std::fs::read(cert)
            .with_context(|| format!("reading the certificate chain {}", cert.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading the certificate chain {}", cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{} holds no PEM certificate", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading the private key {}", key.display()))?;
        let tls = Tls {
            certs,
            key: Arc::new(key),
            pem,
        };
        // A key that does not match the certificate fails here, not at the
        // first handshake.
        tls.acceptor(&[])?;
        Ok(tls)
    }

    /// The certificate chain as PEM text.
    pub fn cert_pem(&self) -> &[u8] {
        &self.pem
    }

    /// An acceptor offering `alpn` protocols (most preferred first).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> anyhow::Result<TlsAcceptor> {
        // rustls 0.23.48 deprecates ring's provider because it lacks the
        // post-quantum key exchange; ring builds with cc alone, aws-lc-rs
        // would add a large C build. Moving is a feature switch in Cargo.toml.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .context("the TLS certificate and key do not go together")?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
