//! `coord report RESULTS_DIR [--out FILE]`: one self-contained HTML page about a results directory.

use std::path::PathBuf;

use anyhow::Context;
use tracefleet_common::latency;
use tracefleet_common::report;
use tracefleet_common::results::Results;

/// Arguments of `coord report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Results directory (`coord sweep --out`, `coord fetch`, `coord ingest --out`): steps.csv, and
    /// kernels.csv, ops.csv, roofline.csv, manifest.json where present.
    results_dir: PathBuf,
    /// Where to write the page (default: RESULTS_DIR/report.html).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = &a.results_dir;
    let results = Results::read(dir).with_context(|| format!("reading results in {}", dir.display()))?;
    let models = latency::build(&results);
    let path = match &a.out {
        Some(file) => {
            std::fs::write(file, report::render(&results, &models))
                .with_context(|| format!("writing the report of {} to {}", dir.display(), file.display()))?;
            file.clone()
        }
        None => {
            report::write(dir, &results, &models).with_context(|| format!("writing the report of {}", dir.display()))?
        }
    };
    println!("{}", path.display());
    Ok(())
}
