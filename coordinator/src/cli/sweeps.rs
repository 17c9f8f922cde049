//! `coord sweeps`: every sweep the coordinator knows, newest first, one line each.

use tracefleet_proto::v1::ListSweepsRequest;

use std::io::Write;

use super::client::{CoordinatorArg, describe, runtime};

/// Arguments of `coord sweeps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

/// Runs `coord sweeps`.
pub fn run(a: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.coordinator.connect().await?;
        // Errors of a write (a closed pipe) end the command, quietly for a pipe (see `cli::main`).
        let mut out = std::io::stdout().lock();
        for s in c.list_sweeps(ListSweepsRequest {}).await?.into_inner().sweeps {
            writeln!(out, "{}", describe(&s))?;
        }
        Ok(())
    })
}
