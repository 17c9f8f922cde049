//! `coord cancel SWEEP`: stop a sweep; the traces already parsed are kept as its results.

use tracefleet_proto::v1::SweepRef;

use super::client::{CoordinatorArg, connect, describe, runtime};

/// Arguments of `coord cancel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep to stop.
    sweep: String,
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

/// Runs `coord cancel`.
pub fn run(a: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut c = connect(&a.coordinator.coordinator, a.coordinator.tls_ca.as_deref()).await?;
        let s = c.cancel(SweepRef { sweep_id: a.sweep }).await?.into_inner();
        println!("{}", describe(&s));
        Ok(())
    })
}
