//! `coord serve`: the coordinator server.

use std::path::PathBuf;

use crate::server;
use crate::state::{Config, Coordinator, OperatorTokens, TlsFiles};

/// Arguments of `coord serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// gRPC address (agents and the CLI connect here). Default: 0.0.0.0:50051 with TLS, 127.0.0.1:50051
    /// with --insecure.
    #[arg(long)]
    listen: Option<String>,
    /// State database, stored traces and results.
    #[arg(long)]
    data_dir: PathBuf,
    /// Prometheus metrics address (`GET /metrics`); "off" to disable. Default: port 9464 on the host of the
    /// gRPC address (0.0.0.0 with TLS, 127.0.0.1 with --insecure, unless --listen says otherwise).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// An address serving only the gRPC health check (`grpc.health.v1`), in plain text and without
    /// authentication, for probes that cannot present a client certificate (Kubernetes' gRPC probes).
    /// Off by default.
    #[arg(long, value_name = "ADDR")]
    health_listen: Option<String>,
    /// Parse worker threads (default: one per core).
    #[arg(long)]
    parse_workers: Option<usize>,
    /// Uploads in flight at once; more are refused with RESOURCE_EXHAUSTED and a retry hint.
    #[arg(long, default_value_t = Config::MAX_INFLIGHT_UPLOADS)]
    max_inflight_uploads: usize,
    /// Raw bytes of an upload between two commits (sync to disk, then database).
    #[arg(long, default_value_t = Config::COMMIT_EVERY_BYTES)]
    commit_every_bytes: u64,
    /// Longest time (ms) between two commits of an upload that is receiving bytes; a stream that breaks
    /// is committed at once.
    #[arg(long, default_value_t = Config::COMMIT_EVERY_MS)]
    commit_every_ms: u64,
    /// Time (ms) an upload stream may take to send its first message.
    #[arg(long, default_value_t = Config::UPLOAD_FIRST_MESSAGE_MS)]
    upload_first_message_ms: u64,
    /// Time (ms) an upload stream may stay silent between messages before it is ended (and committed).
    #[arg(long, default_value_t = Config::UPLOAD_IDLE_MS)]
    upload_idle_ms: u64,
    /// Upload streams one agent may have open at once; more are refused with a retry hint.
    #[arg(long, default_value_t = Config::MAX_UPLOADS_PER_AGENT)]
    max_uploads_per_agent: usize,
    /// Hours an agent not heard from stays listed (`coord status`); then it is forgotten.
    #[arg(long, default_value_t = Config::AGENT_EXPIRY_HOURS)]
    agent_expiry_hours: u64,
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
    /// The coordinator's certificate chain (PEM). With --tls-key and --client-ca: mutual TLS 1.3; agents and
    /// operators connect to https:// with certificates signed by the client CA (`coord certs init`
    /// makes a set). Files are read again when they change.
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The coordinator's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "client_ca"])]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that signs agent and operator certificates; their Common Name names them,
    /// their Organization gives the role (tracefleet:agent, tracefleet:operator).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    client_ca: Option<PathBuf>,
    /// A file of operator tokens (`NAME TOKEN` per line, `#` comments), for organisations that prefer
    /// tokens to operator certificates: a call with `authorization: Bearer TOKEN` acts as operator NAME
    /// (`coord ... --token-file`). Clients may then connect without a certificate; agents still need one.
    /// Read again when it changes.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    operator_tokens: Option<PathBuf>,
    /// Serve plain text with no authentication: anyone who reaches the port can submit sweeps that
    /// agents run. For a trusted network or a laptop only; a warning is logged at every start.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    insecure: bool,
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
    cfg.commit_every = std::time::Duration::from_millis(a.commit_every_ms.max(1));
    cfg.upload_first_message_timeout = std::time::Duration::from_millis(a.upload_first_message_ms.max(1));
    cfg.upload_idle_timeout = std::time::Duration::from_millis(a.upload_idle_ms.max(1));
    cfg.max_uploads_per_agent = a.max_uploads_per_agent.max(1);
    cfg.agent_expiry = std::time::Duration::from_secs(a.agent_expiry_hours.saturating_mul(3600));
    cfg.heartbeat_ms = a.heartbeat_ms.max(50);
    cfg.parse_memory_bytes = a.parse_memory_mb.max(16) << 20;
    cfg.point_retries = a.point_retries;
    match (a.tls_cert, a.tls_key, a.client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => {
            if let Some(p) = &a.operator_tokens {
                cfg.operator_tokens = Some(std::sync::Arc::new(OperatorTokens::load(p)?));
            }
            let files = TlsFiles { cert, key, client_ca, allow_no_client_cert: a.operator_tokens.is_some() };
            // Read now, so that a bad file stops the start with its name.
            files.load()?;
            cfg.tls = Some(files);
        }
        _ if a.insecure && a.operator_tokens.is_some() => anyhow::bail!(
            "--operator-tokens needs mutual TLS (--tls-cert, --tls-key, --client-ca): a token sent in plain text is a \
             token given away"
        ),
        _ if a.insecure => tracing::warn!(
            "serving plain text without authentication (--insecure): anyone who reaches the port can submit \
             sweeps that agents run; use --tls-cert, --tls-key and --client-ca on a shared network"
        ),
        _ => anyhow::bail!(
            "coord serve needs mutual TLS (--tls-cert, --tls-key and --client-ca; `coord certs init DIR` makes a \
             set to try) or, on a trusted network, --insecure for plain text without authentication"
        ),
    }
    cfg.reassign_after_ms = a.reassign_after_ms;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cfg_tls = cfg.tls.is_some();
    let tls = if cfg_tls { " with mutual TLS" } else { " in plain text (--insecure)" };
    rt.block_on(async move {
        let coord = Coordinator::open(cfg)?;
        let listen = a.listen.unwrap_or_else(|| if cfg_tls { "0.0.0.0:50051" } else { "127.0.0.1:50051" }.to_string());
        let (listener, addr) = server::bind(&listen).await?;
        // By default on the gRPC address's host: a coordinator serving its agents on every interface is
        // scraped there too, and one kept on loopback keeps its metrics there.
        let metrics_listen = a.metrics_listen.unwrap_or_else(|| {
            let host = listen.rsplit_once(':').map_or("127.0.0.1", |(host, _)| host);
            format!("{host}:9464")
        });
        let metrics = if metrics_listen == "off" { None } else { Some(server::bind(&metrics_listen).await?) };
        match &metrics {
            Some((_, m)) => tracing::info!("coord serving on {addr} (metrics on http://{m}/metrics){tls}"),
            None => tracing::info!("coord serving on {addr}{tls}"),
        }
        let health = match &a.health_listen {
            Some(h) => {
                let (l, addr) = server::bind(h).await?;
                tracing::info!("health check (grpc.health.v1, plain text) on {addr}");
                Some(l)
            }
            None => None,
        };
        server::serve(coord, listener, metrics.map(|(l, _)| l), health).await
    })
}
