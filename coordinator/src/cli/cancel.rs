//! `coord cancel SWEEP`: stop a sweep; the traces already parsed are kept as its results.

use tracefleet_proto::v1::SweepRef;

use super::client::{CoordinatorArg, describe, resolve, runtime};

/// Arguments of `coord cancel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep to stop: its id or name (the newest sweep of that name).
    sweep: String,
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

/// Runs `coord cancel`.
pub fn run(a: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.coordinator.connect().await?;
        let sweep_id = resolve(&mut c, &a.sweep).await?;
        let s = c.cancel(SweepRef { sweep_id }).await?.into_inner();
        println!("{}", describe(&s));
        Ok(())
    })
}
