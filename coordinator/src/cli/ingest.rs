//! `coord ingest DIR... --out OUT`.

/// Arguments of `coord ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub fn run(_a: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
