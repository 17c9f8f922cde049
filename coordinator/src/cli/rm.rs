//! `coord rm SWEEP`: deletes a finished sweep's results, stored traces and records on the coordinator,
//! and says what it freed. A running sweep is refused (`coord cancel` first).

use tracefleet_proto::v1::SweepRef;

use super::client::{CoordinatorArg, resolve, runtime};

/// Arguments of `coord rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep: its id or its name (the newest sweep of that name).
    sweep: String,
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

/// Runs `coord rm`.
pub fn run(a: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.coordinator.connect().await?;
        let id = resolve(&mut c, &a.sweep).await?;
        let r = c.delete_sweep(SweepRef { sweep_id: id.clone() }).await?;
        let r = r.into_inner();
        println!(
            "removed sweep {id}: {} stored traces, {:.1} MB freed on disk (stored traces, results and their tables)",
            r.traces,
            r.freed_bytes as f64 / 1e6
        );
        Ok(())
    })
}
