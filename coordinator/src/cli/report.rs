//! `coord report RESULTS_DIR [--out FILE]`: one self-contained HTML page about a results directory (and,
//! written into the directory, the latency models and Vidur profiles beside it, as a sweep writes them).

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
    /// Where to write the page (default: RESULTS_DIR/report.html, with models.json and vidur/ refreshed
    /// beside it).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    peaks: super::peaks::PeakArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = &a.results_dir;
    let mut results = Results::read(dir).with_context(|| format!("reading results in {}", dir.display()))?;
    if a.peaks.peak_tflops.is_some() || a.peaks.peak_gbps.is_some() {
        results.with_peaks(&a.peaks.overrides());
    }
    let unknown: std::collections::BTreeSet<&str> =
        results.roofline.iter().filter(|r| r.peak_tflops <= 0.0).map(|r| r.series.gpu.as_str()).collect();
    for gpu in unknown {
        eprintln!(
            "warning: no peaks known for GPU `{gpu}`: the roofline shows achieved rates without a roof; give both \
             --peak-tflops and --peak-gbps"
        );
    }
    let models = latency::build(&results);
    if results.steps.is_empty() {
        eprintln!("warning: {}: steps.csv has no rows: the report has nothing to show", dir.display());
    }
    let path = match &a.out {
        // A directory gets report.html inside it.
        Some(d) if d.is_dir() => {
            let file = d.join("report.html");
            std::fs::write(&file, report::render(&results, &models))
                .with_context(|| format!("writing the report of {} to {}", dir.display(), file.display()))?;
            file
        }
        Some(file) => {
            std::fs::write(file, report::render(&results, &models))
                .with_context(|| format!("writing the report of {} to {}", dir.display(), file.display()))?;
            file.clone()
        }
        None => {
            let io = |e: std::io::Error| anyhow::Error::new(e).context(format!("writing into {}", dir.display()));
            latency::write_models(dir, &models).map_err(io)?;
            latency::write_vidur(dir, &results).map_err(io)?;
            report::write(dir, &results, &models).with_context(|| format!("writing the report of {}", dir.display()))?
        }
    };
    println!("{}", path.display());
    Ok(())
}
