//! `coord status [SWEEP]`: one sweep, or every sweep and agent.

use tracefleet_proto::v1::{ListAgentsRequest, ListSweepsRequest, SweepRef};

use std::io::Write;

use super::client::{CoordinatorArg, describe, resolve, runtime};

/// Arguments of `coord status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A sweep id or name (the newest sweep of that name); without it, every sweep and every agent.
    sweep: Option<String>,
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

/// Runs `coord status`.
pub fn run(a: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.coordinator.connect().await?;
        // Errors of a write (a closed pipe) end the command, quietly for a pipe (see `cli::main`).
        let mut out = std::io::stdout().lock();
        match a.sweep {
            Some(arg) => {
                let sweep_id = resolve(&mut c, &arg).await?;
                writeln!(out, "{}", describe(&c.status(SweepRef { sweep_id }).await?.into_inner()))?;
            }
            None => {
                let sweeps = c.list_sweeps(ListSweepsRequest {}).await?.into_inner().sweeps;
                writeln!(out, "sweeps: {}", sweeps.len())?;
                for s in &sweeps {
                    writeln!(out, "  {}", describe(s))?;
                }
                let agents = c.list_agents(ListAgentsRequest {}).await?.into_inner().agents;
                writeln!(out, "agents: {}", agents.len())?;
                for ag in agents {
                    let inv = ag.inventory.unwrap_or_default();
                    let gpus: Vec<String> = inv.gpus.iter().map(|g| g.name.clone()).collect();
                    writeln!(
                        out,
                        "  {:<20} {:<13} last seen {:>6} ms ago; GPUs: {}; running: {}",
                        inv.host,
                        if ag.connected { "connected" } else { "disconnected" },
                        ag.last_seen_ms_ago,
                        if gpus.is_empty() { "none".into() } else { gpus.join(", ") },
                        if ag.running_jobs.is_empty() { "none".into() } else { ag.running_jobs.join(", ") }
                    )?;
                }
            }
        }
        Ok(())
    })
}
