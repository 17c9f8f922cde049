//! Talking to a coordinator from the command line.

use tonic::transport::Channel;
use tracefleet_common::wire::MAX_MESSAGE_BYTES;
use tracefleet_proto::v1::sweeps_client::SweepsClient;

/// The coordinator flag shared by client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// Coordinator address (host:port or http://host:port).
    #[arg(long, env = "TRACEFLEET_COORDINATOR", default_value = "127.0.0.1:50051")]
    pub coordinator: String,
}

/// `host:port` → `http://host:port`.
pub fn url(addr: &str) -> String {
    if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") }
}

/// A connected sweeps client.
pub async fn connect(addr: &str) -> anyhow::Result<SweepsClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(url(addr))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the coordinator at {addr}: {e}"))?;
    Ok(SweepsClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// A one-line status.
pub fn describe(s: &tracefleet_proto::v1::SweepStatus) -> String {
    format!(
        "{}  {:<10} {:<20} jobs {}/{} done, {} failed; traces {} uploaded, {} parsed; {:.1} MB",
        s.sweep_id,
        s.state,
        s.name,
        s.jobs_done,
        s.jobs_total,
        s.jobs_failed,
        s.traces_uploaded,
        s.traces_parsed,
        s.raw_bytes as f64 / 1e6
    )
}
