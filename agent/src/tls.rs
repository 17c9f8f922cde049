//! The agent's mutual TLS towards the coordinator, with its files read again for every new connection: a
//! rotated certificate or CA (cert-manager renewing a secret volume) is used from the next reconnect,
//! without restarting the agent. Connections are rare (one, kept alive, per coordinator), so reading three
//! small files each time costs nothing.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Uri};

/// The agent's TLS files (PEM): the CA that signed the coordinator's certificate, and the agent's own
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) to trust.
    pub ca: PathBuf,
    /// The agent's certificate chain and private key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

fn read_err(path: &std::path::Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {e}", path.display()))
}

impl TlsFiles {
    /// Reads the files into a client configuration (ALPN `h2`).
    ///
    /// # Errors
    /// A file is unreadable or holds no certificate or key (the message names it), or rustls refuses them.
    pub fn client_config(&self) -> std::io::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&self.ca).map_err(|e| read_err(&self.ca, e))?;
        for ca in cas {
            roots.add(ca.map_err(|e| read_err(&self.ca, e))?).map_err(|e| read_err(&self.ca, e))?;
        }
        if roots.is_empty() {
            return Err(read_err(&self.ca, "no PEM certificate in the file"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots);
        let mut cfg = match &self.identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| read_err(cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| read_err(cert, e))?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| std::io::Error::other(format!("{} and {}: {e}", cert.display(), key.display())))?
            }
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }
}

/// The Common Name of the first certificate in a PEM file (an agent's name under mutual TLS).
///
/// # Errors
/// The file is unreadable, holds no certificate, or its certificate has no Common Name.
pub fn common_name(path: &std::path::Path) -> std::io::Result<String> {
    let der = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(path, e))?
        .next()
        .ok_or_else(|| read_err(path, "no PEM certificate in the file"))?
        .map_err(|e| read_err(path, e))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| read_err(path, e))?;
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok().map(str::to_string));
    cn.ok_or_else(|| read_err(path, "the certificate has no Common Name (CN) to name the agent"))
}

/// A connector that opens TCP, then TLS with the files as they are now.
#[derive(Debug, Clone)]
struct ReloadingTls {
    files: Arc<TlsFiles>,
    /// The host and port dialled, from the coordinator's address.
    host: String,
    port: u16,
}

impl tower::Service<Uri> for ReloadingTls {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (files, host, port) = (self.files.clone(), self.host.clone(), self.port);
        Box::pin(async move {
            let cfg = files.client_config()?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| std::io::Error::other(format!("{host} is not a server name: {e}")))?;
            let tls = TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A lazily connecting channel to the `https://` coordinator at `addr`, over TLS with `files` read again
/// at every (re)connection.
///
/// # Errors
/// `addr` has no host, or is not a valid URI.
pub fn channel(addr: &str, files: TlsFiles) -> anyhow::Result<Channel> {
    let uri: Uri = addr.parse().map_err(|e| anyhow::anyhow!("coordinator address {addr}: {e}"))?;
    let host = uri.host().ok_or_else(|| anyhow::anyhow!("coordinator address {addr} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(443);
    // tonic refuses an https:// endpoint without its own TLS settings, and those are fixed for the
    // channel's life; this connector does TLS itself, so the endpoint is named http:// (the scheme only
    // fills the requests' :scheme field, which the coordinator does not read).
    let plain = addr.replacen("https://", "http://", 1);
    let endpoint = tracefleet_proto::endpoint(&plain, &tracefleet_proto::ClientTls::default())?;
    Ok(endpoint.connect_with_connector_lazy(ReloadingTls { files: Arc::new(files), host, port }))
}
