//! Talking to a coordinator from the command line.

use tonic::transport::Channel;
use tracefleet_common::wire::MAX_MESSAGE_BYTES;
use tracefleet_proto::v1::sweeps_client::SweepsClient;

/// The coordinator flags shared by client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// Coordinator address (host:port, http://host:port or https://host:port).
    // The same flag, env name and default in every client command (`coord sweep` adds that --local
    // excludes it); the agent declares its own, required, with the same env name.
    #[arg(long, env = "TRACEFLEET_COORDINATOR", default_value = "127.0.0.1:50051")]
    pub coordinator: String,
    /// CA certificate (PEM) to trust for https:// coordinators.
    #[arg(long, env = "TRACEFLEET_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
}

/// A runtime for one client command (a few requests: one thread).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// A connected sweeps client; with a CA, over TLS.
pub async fn connect(addr: &str, tls_ca: Option<&std::path::Path>) -> anyhow::Result<SweepsClient<Channel>> {
    let pem = match tls_ca {
        Some(ca) => Some(std::fs::read(ca).map_err(|e| anyhow::anyhow!("reading {}: {e}", ca.display()))?),
        None => None,
    };
    let endpoint = tracefleet_proto::endpoint(addr, pem.as_deref())?;
    let ch = endpoint.connect().await.map_err(|e| anyhow::anyhow!("cannot reach the coordinator at {addr}: {e}"))?;
    Ok(SweepsClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// A one-line status.
pub fn describe(s: &tracefleet_proto::v1::SweepStatus) -> String {
    format!(
        "{}  {:<10} {:<20} points {}/{} done, {} failed, {} missing; traces {} uploaded, {} parsed, {} refused; {:.1} MB",
        s.sweep_id,
        s.state().name().unwrap_or("?"),
        s.name,
        s.points_done,
        s.points_total,
        s.points_failed,
        s.points_missing,
        s.traces_uploaded,
        s.traces_parsed,
        s.traces_refused,
        s.raw_bytes as f64 / 1e6
    )
}
