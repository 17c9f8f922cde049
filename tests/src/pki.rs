//! Certificates for mutual-TLS tests, made by the real `coord certs init`, and clients that present them.

use std::path::{Path, PathBuf};
use std::process::Command;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::bin;

/// A folder written by `coord certs init`.
pub struct Pki {
    /// The folder.
    pub dir: PathBuf,
}

impl Pki {
    /// Runs `coord certs init DIR --coordinator-san localhost --coordinator-san 127.0.0.1` with agent
    /// certificates for `agents`.
    pub fn init(dir: &Path, agents: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin("coord"));
        cmd.args(["certs", "init"]).arg(dir).args(["--coordinator-san", "localhost", "--coordinator-san", "127.0.0.1"]);
        for a in agents {
            cmd.args(["--agent", a]);
        }
        let out = cmd.output()?;
        anyhow::ensure!(out.status.success(), "coord certs init: {}", String::from_utf8_lossy(&out.stderr));
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// A file of the set, as a string argument.
    pub fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// `coord serve`'s TLS flags.
    pub fn serve_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("coordinator.pem"),
            "--tls-key".into(),
            self.path("coordinator-key.pem"),
            "--client-ca".into(),
            self.path("ca.pem"),
        ]
    }

    /// An agent's TLS flags (its certificate from `agents/NAME.pem`).
    pub fn agent_flags(&self, name: &str) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.path("ca.pem"),
            "--tls-cert".into(),
            self.path(&format!("agents/{name}.pem")),
            "--tls-key".into(),
            self.path(&format!("agents/{name}-key.pem")),
        ]
    }

    /// The operator's TLS flags for the CLI.
    pub fn operator_flags(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.path("ca.pem"),
            "--tls-cert".into(),
            self.path("operator.pem"),
            "--tls-key".into(),
            self.path("operator-key.pem"),
        ]
    }

    /// A channel to `url` trusting this CA and presenting `cert` (relative paths, e.g. `operator.pem`
    /// and `operator-key.pem`; `None`: no client certificate).
    pub async fn channel(&self, url: &str, cert: Option<(&str, &str)>) -> anyhow::Result<Channel> {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(self.dir.join("ca.pem"))?));
        if let Some((c, k)) = cert {
            tls = tls.identity(Identity::from_pem(std::fs::read(self.dir.join(c))?, std::fs::read(self.dir.join(k))?));
        }
        Ok(Endpoint::from_shared(url.to_string())?.tls_config(tls)?.connect().await?)
    }
}

/// `https://localhost:PORT` for a coordinator listening on `addr` (`127.0.0.1:PORT`): the name its
/// certificate carries.
pub fn https_url(addr: &str) -> String {
    format!("https://localhost:{}", addr.rsplit(':').next().unwrap_or_default())
}
