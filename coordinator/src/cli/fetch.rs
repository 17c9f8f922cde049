//! `coord fetch SWEEP [--traces] [--out DIR]`: a finished sweep's result files (tables, manifest) and,
//! with `--traces`, its raw traces as `.json.gz`, from any coordinator; for a sweep submitted with
//! `--detach` or left with Ctrl-C.

use std::path::PathBuf;

use super::client::{CoordinatorArg, download, download_traces, resolve, runtime};

/// Arguments of `coord fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep: its id or its name (the newest sweep of that name).
    sweep: String,
    /// Also the raw traces, under OUT/traces/POINT/HOST/, gzip-compressed JSON (Perfetto and HTA open them).
    #[arg(long)]
    traces: bool,
    /// Where to write them (default: results/NAME, NAME being the sweep's name); they replace the files an
    /// earlier fetch wrote there, and leave other files alone.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

/// Runs `coord fetch`.
pub fn run(a: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.coordinator.connect().await?;
        let id = resolve(&mut c, &a.sweep).await?;
        let status = c.status(tracefleet_proto::v1::SweepRef { sweep_id: id.clone() }).await?.into_inner();
        let out = a.out.unwrap_or_else(|| PathBuf::from("results").join(&status.name));
        let mut files = download(&mut c, &id, &out).await?;
        if a.traces {
            files.extend(download_traces(&mut c, &id, &out).await?);
        }
        println!("{}", super::client::describe(&status));
        println!("{} files in {}", files.len(), out.display());
        Ok(())
    })
}
