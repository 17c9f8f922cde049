//! The TLS files of `coord serve` (mutual TLS): reading them into a rustls server configuration, TLS 1.3
//! only, client certificates required and checked against the client CA, ALPN `h2`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The coordinator's certificate chain and key, and the CA that signs agent and operator certificates
/// (all PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificate(s) that client certificates must chain to.
    pub client_ca: PathBuf,
    /// Let clients connect without a certificate (operator tokens are on; the authorization layer
    /// still requires a certificate or a token for every call).
    pub allow_no_client_cert: bool,
}

/// A TLS setting that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, say).
    #[error("TLS settings refused: {0}")]
    Rustls(String),
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_path_buf(), why: why.to_string() }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads the files into a server configuration.
    ///
    /// # Errors
    /// A file is unreadable or holds no certificate or key; the key does not match; the CA is not a CA.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| file_error(&self.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in certs(&self.client_ca)? {
            roots.add(ca).map_err(|e| file_error(&self.client_ca, e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if self.allow_no_client_cert {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier.build().map_err(|e| file_error(&self.client_ca, e))?;
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rustls(format!("{} and {}: {e}", self.cert.display(), self.key.display())))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The files' contents, to notice a change (they are small; a rename over them counts too).
    pub(crate) fn fingerprint(&self) -> Option<Vec<u8>> {
        let mut all = Vec::new();
        for p in [&self.cert, &self.key, &self.client_ca] {
            all.extend(std::fs::read(p).ok()?);
            all.push(0);
        }
        Some(all)
    }
}
