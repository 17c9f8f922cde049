//! `coord analyze TRACE [--json]`: torch's `key_averages()` table for one trace.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tracefleet_common::trace::{Links, key_averages_with_jobs};

use super::LimitArgs;

/// Arguments of `coord analyze`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace file: .json, .json.gz or .json.zst (detected by content).
    trace: PathBuf,
    /// Print a JSON array with the keys of torch's table instead of a text table.
    #[arg(long)]
    json: bool,
    /// Print bytes, seconds, MB/s and peak memory to stderr (for benchmarks).
    #[arg(long)]
    stats: bool,
    /// Threads to read the trace on: a large trace (32 MiB and more of JSON, plain or in zstd frames) is
    /// split at event boundaries and its pieces read at once. Linking and the table use as many threads
    /// once the trace holds 100,000 events or more. Default: the machine's cores.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let jobs = a.jobs.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
    let trace = tracefleet_common::trace::parallel::open(&a.trace, &a.limits.limits(), jobs)?;
    // A trace without events is not an empty result: the profiler recorded nothing.
    if trace.meta.event_count == 0 {
        anyhow::bail!("{}: the trace holds no events (traceEvents is empty): nothing to analyze", a.trace.display());
    }
    let parsed = t0.elapsed().as_secs_f64();
    let links = Links::with_jobs(&trace, jobs);
    let linked = t0.elapsed().as_secs_f64();
    let rows = key_averages_with_jobs(&trace, &links, jobs);
    let elapsed = t0.elapsed().as_secs_f64();
    if rows.is_empty() {
        eprintln!(
            "warning: {}: none of its {} events is an op or a GPU activity: the table is empty",
            a.trace.display(),
            trace.meta.event_count
        );
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &rows).context("writing JSON")?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<60} {:>8} {:>14} {:>14} {:>14} {:>14}",
            "Name", "Calls", "Self CPU (us)", "CPU total (us)", "Self dev (us)", "Dev total (us)"
        )?;
        for r in &rows {
            let name: String = if r.key.chars().count() > 60 {
                r.key.chars().take(57).chain("...".chars()).collect()
            } else {
                r.key.clone()
            };
            writeln!(
                out,
                "{:<60} {:>8} {:>14.3} {:>14.3} {:>14.3} {:>14.3}",
                name,
                r.count,
                r.self_cpu_time_total_us,
                r.cpu_time_total_us,
                r.self_device_time_total_us,
                r.device_time_total_us
            )?;
        }
    }
    out.flush()?;
    if let Some(why) = trace.left_out.describe() {
        eprintln!("warning: {}: {why}", a.trace.display());
    }
    if a.stats {
        let bytes = trace.meta.bytes;
        eprintln!(
            "stats: bytes={} events={} retained={} parse_s={parsed:.3} link_s={:.3} table_s={:.3} seconds={:.3} mb_per_s={:.1} peak_rss_bytes={}",
            bytes,
            trace.meta.event_count,
            trace.events.len(),
            linked - parsed,
            elapsed - linked,
            elapsed,
            bytes as f64 / 1e6 / elapsed.max(1e-9),
            super::peak_rss_bytes().unwrap_or(0)
        );
    }
    Ok(())
}
