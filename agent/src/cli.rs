//! The `agent` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracefleet_common::logging::{self, LogFormat};

use crate::control::{Agent, AgentConfig};
use crate::inventory;
use crate::workload::Driver;

/// tracefleet agent: runs profiling workloads on this host and streams traces to the coordinator.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about)]
struct Args {
    /// Coordinator address (host:port, http://host:port or https://host:port).
    #[arg(long, env = "TRACEFLEET_COORDINATOR", required_unless_present = "print_inventory")]
    coordinator: Option<String>,
    /// Name of this agent (default: its certificate's Common Name with --tls-cert, else the host name).
    #[arg(long)]
    name: Option<String>,
    /// Folder for traces waiting to be uploaded.
    #[arg(long, default_value = "/var/lib/tracefleet/spool")]
    spool_dir: PathBuf,
    /// Cap on the spool, MiB: a job starts only while the spool holds less (traces not yet uploaded, refused
    /// ones kept for inspection, running jobs' files); a job assigned over it fails saying so. One job's
    /// traces can take the spool past the cap. Default: no cap.
    #[arg(long, value_name = "MIB")]
    spool_max_mb: Option<u64>,
    /// Labels, k=v,k2=v2, used by sweep agent selectors.
    #[arg(long, default_value = "", value_parser = inventory::parse_labels)]
    labels: Labels,
    /// Uploads (each with one compression thread) at once.
    #[arg(long, default_value_t = AgentConfig::UPLOAD_THREADS)]
    upload_threads: usize,
    /// Python interpreter for the torch and vLLM drivers.
    #[arg(long, default_value = AgentConfig::PYTHON)]
    python: String,
    /// Serve only these GPUs (indices, e.g. 0,1); default: every GPU NVML reports.
    #[arg(long, value_parser = parse_gpus)]
    gpus: Option<GpuIndices>,
    /// Report a GPU of this name when NVML sees none (AMD/ROCm hosts, containers without the NVML
    /// library): GPU backends are only scheduled on agents that report a GPU. Repeat it for several
    /// GPUs (indices 0, 1, ...: tensor-parallel jobs hold several). No telemetry or clock locking for them.
    #[arg(long, value_name = "NAME")]
    assume_gpu: Vec<String>,
    /// Hold uploads until each job's workload has ended (to measure the agent's effect on the GPU).
    #[arg(long)]
    pause_uploads: bool,
    /// CA certificate (PEM) to trust when the coordinator is https://. The TLS files are read again at
    /// every connection, so rotated certificates are used without a restart.
    #[arg(long, env = "TRACEFLEET_TLS_CA", value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// This agent's certificate (PEM), signed by the coordinator's client CA; its Common Name must be
    /// the agent's --name and its Organization `tracefleet:agent` (`coord certs init` makes them).
    #[arg(long, env = "TRACEFLEET_TLS_CERT", value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<std::path::PathBuf>,
    /// This agent's private key (PEM).
    #[arg(long, env = "TRACEFLEET_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Let sweeps run `command` backends here (their command runs with this agent's rights). Off by
    /// default: such jobs fail with a message naming this flag.
    #[arg(long)]
    allow_command: bool,
    /// Let sweeps run the Python drivers with this interpreter (besides --python); repeat for several.
    /// By default a sweep naming another interpreter fails with a message naming this flag.
    #[arg(long, value_name = "PATH")]
    allow_python: Vec<String>,
    /// Let sweeps lock GPU clocks (`[gpu] lock_clocks_mhz`; needs root). Off by default: locking changes
    /// the GPU for everyone using it.
    #[arg(long)]
    allow_clock_locking: bool,
    /// How often the GPU is read (clocks, temperature, power, throttle reasons) while a job runs, in
    /// milliseconds; 0 turns telemetry off.
    #[arg(long, default_value_t = AgentConfig::TELEMETRY_INTERVAL_MS)]
    telemetry_interval_ms: u64,
    /// Do not keep drivers waiting on the GPUs; every torch or vLLM job then starts a fresh interpreter.
    #[arg(long)]
    no_warm_driver: bool,
    /// The drivers kept waiting on each GPU with their imports done (torch and transformers: 5-15 s;
    /// vLLM: 15-26 s on an H200 host), holding host memory but no GPU memory. A driver whose Python lacks its library
    /// dies twice and is not started again.
    #[arg(long, value_delimiter = ',', default_value = "torch,vllm", value_parser = parse_driver)]
    warm_drivers: Vec<Driver>,
    /// Log lines as text or one JSON object per line (levels from RUST_LOG; info by default).
    #[arg(long, default_value = "text", value_name = "text|json")]
    log_format: LogFormat,
    /// Print the inventory this agent would report, as JSON, and exit.
    #[arg(long)]
    print_inventory: bool,
}

/// Label pairs (`--labels`).
type Labels = std::collections::HashMap<String, String>;

/// GPU indices (`--gpus`): one value holding a list, so clap does not take it for repeated flags.
#[derive(Debug, Clone)]
struct GpuIndices(Vec<u32>);

fn parse_gpus(s: &str) -> Result<GpuIndices, String> {
    crate::gpu::parse_indices(s).map(GpuIndices)
}

fn parse_driver(s: &str) -> Result<Driver, String> {
    Driver::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| format!("unknown driver {s:?}: torch or vllm"))
}

/// Waits for SIGINT or SIGTERM (how Kubernetes stops a pod); returns its name.
async fn stopped() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Parses the command line and runs the agent.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = logging::init(args.log_format, std::io::stderr, std::io::stderr().is_terminal()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let labels = args.labels;
    let only = args.gpus.map(|g| g.0);
    let (gpus, note) = crate::gpu::inventory(only.as_deref());
    match note {
        // NVML is absent on a host given its GPUs by --assume-gpu (tests, GPU-less rehearsals): say so.
        Some(_) if gpus.is_empty() && !args.assume_gpu.is_empty() => {
            tracing::info!("no GPU found through NVML; reporting the GPUs given by --assume-gpu: {:?}", args.assume_gpu)
        }
        Some(n) => tracing::warn!("{n}"),
        None => {}
    }
    // Under mutual TLS the agent is who its certificate says: that is its name unless told otherwise.
    let name = match (&args.name, &args.tls_cert) {
        (Some(n), _) => Some(n.clone()),
        (None, Some(cert)) => match crate::tls::common_name(cert) {
            Ok(cn) => Some(cn),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => None,
    };
    let mut inv = inventory::inventory(name.as_deref(), labels);
    inv.gpus = gpus;
    if inv.gpus.is_empty() {
        for (index, name) in (0..).zip(&args.assume_gpu) {
            inv.gpus.push(tracefleet_proto::v1::GpuInfo { index, name: name.clone(), ..Default::default() });
        }
    }
    if args.print_inventory {
        let json = inventory::to_json(&inv);
        println!("{json}");
        return ExitCode::SUCCESS;
    }
    // clap requires --coordinator unless --print-inventory, which returned above.
    let coordinator = args.coordinator.unwrap_or_default();
    let tls = args.tls_ca.map(|ca| crate::tls::TlsFiles { ca, identity: args.tls_cert.zip(args.tls_key) });
    // The files are read at every connection; read them once now, so that a bad one stops the start.
    if let Some(files) = &tls
        && let Err(e) = files.client_config()
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cfg = AgentConfig {
        upload_threads: args.upload_threads,
        python: args.python,
        pause_uploads: args.pause_uploads,
        tls: tls.clone(),
        allow_command: args.allow_command,
        allow_python: args.allow_python,
        allow_clock_locking: args.allow_clock_locking,
        telemetry_interval: std::time::Duration::from_millis(args.telemetry_interval_ms),
        warm_drivers: if args.no_warm_driver { Vec::new() } else { args.warm_drivers },
        spool_max_bytes: args.spool_max_mb.map(|mb| mb.saturating_mul(1 << 20)),
        ..AgentConfig::new(coordinator, args.spool_dir)
    };
    let run = || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let r = rt.block_on(async move {
            let agent = Agent::new(cfg, inv)?;
            tokio::select! {
                r = agent.clone().run() => r,
                signal = stopped() => {
                    // Workloads are killed (their supervisors poll every 50 ms) and their jobs unwind,
                    // resetting the clocks they locked; whatever is still locked is reset here. A requested
                    // stop is a clean exit (Kubernetes sends SIGTERM); unsent traces stay in the spool.
                    agent.cancel_all();
                    agent.warm.stop_all();
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    crate::gpu::reset_locked_clocks();
                    tracing::info!("stopped by {signal}");
                    Ok(())
                }
            }
        });
        // Blocking threads (a workload's supervisor) must not keep the process alive.
        rt.shutdown_timeout(std::time::Duration::from_secs(2));
        r
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
