//! `coord diff A B`: two results directories compared per category and per kernel at every batch size,
//! with the noise of each side and a significance flag; a text table (or JSON) on stdout and `diff.html`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tracefleet_common::diff::{self, DiffOptions};
use tracefleet_common::results::Results;

/// Arguments of `coord diff`.
#[derive(Debug, clap::Args)]
#[command(after_help = "A change is significant (*) when Welch's t-test over the steps of the point gives a p-value \
below --alpha after Holm's correction over the rows whose change passes both size thresholds, and the change is at \
least --min-change-pct of A and at least --min-change-us. The exit code is 0 whatever the differences; it is \
non-zero only when the comparison cannot be made (a side is not a results directory, diff.html cannot be written).")]
pub struct Args {
    /// Results directory A, the baseline (from `coord sweep --out`, `coord ingest --out` or `coord fetch`).
    a: PathBuf,
    /// Results directory B, compared against A (changes are B − A).
    b: PathBuf,
    /// Folder to write diff.html into (default: the current folder).
    #[arg(long, default_value = ".", hide_default_value = true)]
    out: PathBuf,
    /// Print the comparison as JSON instead of a text table.
    #[arg(long)]
    json: bool,
    /// Significance level: a significant change has a Holm-adjusted p-value below this.
    #[arg(long, default_value_t = DiffOptions::default().alpha)]
    alpha: f64,
    /// Smallest change that counts, percent of A.
    #[arg(long, default_value_t = DiffOptions::default().min_change_pct)]
    min_change_pct: f64,
    /// Smallest change that counts, µs per step.
    #[arg(long, default_value_t = DiffOptions::default().min_change_us)]
    min_change_us: f64,
}

/// Runs `coord diff`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = DiffOptions { alpha: a.alpha, min_change_pct: a.min_change_pct, min_change_us: a.min_change_us };
    opts.validate()?;
    let ra = Results::read(&a.a).with_context(|| format!("reading A, {}", a.a.display()))?;
    let rb = Results::read(&a.b).with_context(|| format!("reading B, {}", a.b.display()))?;
    let d = diff::compare(&ra, &rb, &opts);
    let html = diff::page::render(&d)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let page = a.out.join("diff.html");
    std::fs::write(&page, html).with_context(|| format!("writing {}", page.display()))?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &d).context("writing JSON")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", diff::text::render(&d))?;
    }
    out.flush()?;
    // stdout holds the comparison (JSON stays parseable); where the page went is a message.
    eprintln!("wrote {}", page.display());
    if d.summary.points_compared == 0 {
        eprintln!(
            "warning: A and B have no point in common (mode, input length, tensor parallelism, rank, batch size): \
             nothing was compared"
        );
    }
    Ok(())
}
