//! `coord cancel SWEEP`: stop a sweep; the traces already parsed are kept as its results.

use tracefleet_proto::v1::{SweepRef, SweepState};

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
        // A sweep that ended on its own cannot be stopped: saying "cancelled" would be untrue, and exit 0
        // would tell a script that it was. Cancelling a cancelled sweep again changes nothing, and is fine.
        let before = c.status(SweepRef { sweep_id: sweep_id.clone() }).await?.into_inner();
        if matches!(before.state(), SweepState::Completed | SweepState::Failed) {
            anyhow::bail!(
                "sweep {sweep_id} has already ended ({}): nothing to cancel",
                before.state().name().unwrap_or("?")
            );
        }
        let s = c.cancel(SweepRef { sweep_id: sweep_id.clone() }).await?.into_inner();
        println!("{}", describe(&s));
        // It may have ended on its own between the two calls.
        if matches!(s.state(), SweepState::Completed | SweepState::Failed) {
            anyhow::bail!(
                "sweep {sweep_id} has already ended ({}): nothing to cancel",
                s.state().name().unwrap_or("?")
            );
        }
        Ok(())
    })
}
