//! `coord serve`: the coordinator server.

use std::path::PathBuf;

use crate::server;
use crate::state::{Config, Coordinator};

/// Arguments of `coord serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// gRPC address (agents and the CLI connect here).
    #[arg(long, default_value = "0.0.0.0:50051")]
    listen: String,
    /// State database, stored traces and results.
    #[arg(long)]
    data_dir: PathBuf,
    /// Prometheus metrics address (`GET /metrics`); "off" to disable.
    #[arg(long, default_value = "0.0.0.0:9464")]
    metrics_listen: String,
    /// Parse worker threads (default: one per core).
    #[arg(long)]
    parse_workers: Option<usize>,
    /// Uploads in flight at once; more are refused with RESOURCE_EXHAUSTED and a retry hint.
    #[arg(long, default_value_t = Config::MAX_INFLIGHT_UPLOADS)]
    max_inflight_uploads: usize,
    /// Raw bytes of an upload between two commits (sync to disk, then database).
    #[arg(long, default_value_t = Config::COMMIT_EVERY_BYTES)]
    commit_every_bytes: u64,
    /// Memory budget of the parse workers together, MiB (a parse needs about a quarter of the trace's
    /// size); keeps the coordinator's memory bounded whatever the number of cores and trace sizes.
    #[arg(long, default_value_t = Config::PARSE_MEMORY_MB)]
    parse_memory_mb: u64,
    /// Times a failed point is run again before it is reported as failed.
    #[arg(long, default_value_t = Config::POINT_RETRIES)]
    point_retries: u32,
    /// How long an agent may be away (ms) before its unfinished points go to other agents.
    #[arg(long, default_value_t = Config::REASSIGN_AFTER_MS)]
    reassign_after_ms: u64,
    /// TLS certificate chain (PEM); with --tls-key, agents and clients connect with https://.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Heartbeat interval asked of agents, ms.
    #[arg(long, default_value_t = Config::HEARTBEAT_MS)]
    heartbeat_ms: u32,
}

/// Runs the server until interrupted.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cfg = Config::new(a.data_dir);
    if let Some(n) = a.parse_workers {
        cfg.parse_workers = n.max(1);
    }
    cfg.max_inflight_uploads = a.max_inflight_uploads.max(1);
    cfg.commit_every_bytes = a.commit_every_bytes.max(1);
    cfg.heartbeat_ms = a.heartbeat_ms.max(50);
    cfg.parse_memory_bytes = a.parse_memory_mb.max(16) << 20;
    cfg.point_retries = a.point_retries;
    if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()));
        cfg.tls = Some((read(c)?, read(k)?));
    }
    cfg.reassign_after_ms = a.reassign_after_ms;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let tls = if cfg.tls.is_some() { " with TLS" } else { "" };
    rt.block_on(async move {
        let coord = Coordinator::open(cfg)?;
        let (listener, addr) = server::bind(&a.listen).await?;
        let metrics = if a.metrics_listen == "off" { None } else { Some(server::bind(&a.metrics_listen).await?) };
        match &metrics {
            Some((_, m)) => tracing::info!("coord serving on {addr} (metrics on http://{m}/metrics){tls}"),
            None => tracing::info!("coord serving on {addr}{tls}"),
        }
        server::serve(coord, listener, metrics.map(|(l, _)| l)).await
    })
}
