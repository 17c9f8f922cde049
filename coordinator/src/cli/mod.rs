//! The `coord` command line: one module per command.

mod analyze;
mod cancel;
mod certs;
mod client;
mod diff;
mod fetch;
mod ingest;
mod log_writer;
mod peaks;
mod report;
mod rm;
mod serve;
mod status;
mod sweep;
mod sweeps;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracefleet_common::logging::{self, LogFormat};
use tracefleet_common::trace::ReadLimits;

/// tracefleet coordinator and command-line tools.
#[derive(Debug, Parser)]
#[command(name = "coord", version, about)]
struct Cli {
    /// Log lines as text or one JSON object per line (levels from RUST_LOG; info by default).
    #[arg(long, global = true, default_value = "text", value_name = "text|json")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print torch's key_averages() table for one trace file, from the JSON alone.
    Analyze(analyze::Args),
    /// Reduce a results tree of traces to kernel_dat.csv, op_times.tsv, op_times_detailed.tsv and the full tables.
    Ingest(ingest::Args),
    /// Compare two results directories per category and kernel, with noise and significance; writes diff.html.
    Diff(diff::Args),
    /// Write report.html for a results directory: one self-contained page of plots and tables.
    Report(report::Args),
    /// Run the coordinator: agents connect, upload traces; sweeps are parsed and merged as traces land.
    Serve(serve::Args),
    /// Run a sweep file: validate, submit, follow progress, write the results.
    Sweep(sweep::Args),
    /// Show a sweep, or every sweep and agent.
    Status(status::Args),
    /// Stop a sweep (the traces already parsed are kept as its results).
    Cancel(cancel::Args),
    /// Download a finished sweep's results (and with --traces its raw traces as .json.gz).
    Fetch(fetch::Args),
    /// List every sweep, newest first.
    Sweeps(sweeps::Args),
    /// Delete a finished sweep's results and stored traces from the coordinator.
    Rm(rm::Args),
    /// Make certificates for mutual TLS: a CA, the coordinator's, agents' and an operator's.
    Certs(certs::Args),
}

/// Limits for reading traces, shared by the offline commands.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Most decompressed bytes one trace may have.
    #[arg(long, default_value_t = ReadLimits::default().max_decompressed_bytes)]
    pub max_decompressed_bytes: u64,
    /// Most decompressed-to-compressed ratio before a compressed trace is refused as a bomb; checked once
    /// 64 MiB have been decompressed (smaller traces are held by --max-decompressed-bytes alone).
    #[arg(long, default_value_t = ReadLimits::default().max_ratio)]
    pub max_decompression_ratio: u64,
}

impl LimitArgs {
    /// The reader limits these flags describe.
    pub fn limits(&self) -> ReadLimits {
        ReadLimits {
            max_decompressed_bytes: self.max_decompressed_bytes,
            max_ratio: self.max_decompression_ratio,
            ..ReadLimits::default()
        }
    }
}

/// A command stopped by Ctrl-C before its work was done (`coord sweep` detached from a running sweep):
/// not a success, not a failure of the work either. The process exits with 130, as a shell reports a
/// command ended by SIGINT.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// The exit status of an interrupted command (128 + SIGINT).
const INTERRUPTED: u8 = 130;

/// Parses the command line and runs the command; errors are printed with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log_format, log_writer::Stderr, std::io::stderr().is_terminal()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Ingest(a) => ingest::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Report(a) => report::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Status(a) => status::run(a),
        Command::Cancel(a) => cancel::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Sweeps(a) => sweeps::run(a),
        Command::Rm(a) => rm::run(a),
        Command::Certs(a) => certs::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`coord analyze ... | head`): nothing to say to it, and not our
        // failure. A broken pipe on the network (the coordinator closed the connection) is a failure.
        Err(e) if e.chain().any(broken_pipe) && !e.chain().any(network) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {}", message(&e));
            // Failed calls (a connection that failed outright carries its hint already).
            let status = e.chain().find_map(|c| c.downcast_ref::<tonic::Status>());
            if let Some(hint) =
                status.and_then(|s| tracefleet_proto::connection_hint(Some(s.code()), &format!("{e:#}")))
            {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// An error's message for people: its contexts, then a failed call's message and the causes under it
/// (a gRPC status's own text carries its code and debug fields, which say nothing more).
fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        if let Some(s) = c.downcast_ref::<tonic::Status>() {
            parts.push(s.message().to_string());
            let mut cause = std::error::Error::source(s);
            while let Some(x) = cause {
                parts.push(x.to_string());
                cause = x.source();
            }
            break;
        }
        parts.push(c.to_string());
    }
    // Causes often repeat their inner error's text.
    parts.dedup();
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() && out.ends_with(p.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&p);
    }
    out
}

/// Whether an error comes from talking to the coordinator (a call or the connection).
fn network(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<tonic::Status>() || e.is::<tonic::transport::Error>()
}

/// Whether an error is a write to a pipe whose reader has gone (directly, or inside a JSON writer's).
fn broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let kind = e
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
        .or_else(|| e.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind));
    kind == Some(std::io::ErrorKind::BrokenPipe)
}

/// Peak resident memory of this process in bytes (Linux), for `--stats`.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
