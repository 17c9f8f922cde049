//! Parse benchmark: `coord` against Python's `json.load` on the same files, in the same run.
//!
//! Usage: `bench-parse [--runs N] [--coord PATH] [--python PATH] LARGE.json [MANY_DIR]`
//!
//! 1. One large trace: `coord analyze --stats` (one core) and `python3 -c json.load + one loop over the
//!    events`, alternated `--runs` times; medians of MB/s and peak RSS, and their ratios.
//! 2. Many files (optional `MANY_DIR`, a results tree): `coord ingest --jobs J` for J = 1, 2, 4, ... up to
//!    the cores of the machine; MB/s and speed-up over one job.
//!
//! Prints a Markdown report to stdout; numbers come from the programs' own `--stats` lines.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use tracefleet_tests::bench::{PYTHON_JSON_LOAD, median, stat};

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut runs = 3usize;
    let mut coord = tracefleet_tests::workspace().join("target/release/coord");
    let mut python = PathBuf::from("python3");
    let mut files: Vec<PathBuf> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--coord" => coord = args.next().context("--coord PATH")?.into(),
            "--python" => python = args.next().context("--python PATH")?.into(),
            _ => files.push(a.into()),
        }
    }
    let Some(large) = files.first() else { bail!("usage: bench-parse [--runs N] LARGE.json [MANY_DIR]") };
    let size = std::fs::metadata(large)?.len();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## Parse benchmark\n");
    println!(
        "- file: `{}` ({:.1} MB), machine: {} cores, runs: {runs} (alternated)\n",
        large.display(),
        size as f64 / 1e6,
        cores
    );

    let (mut c_mbs, mut c_rss, mut p_mbs, mut p_rss) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let out = run(Command::new(&coord)
            .args(["analyze", "--json", "--stats", "--jobs", "1"])
            .arg(large)
            .stdout(std::process::Stdio::null()))?;
        c_mbs.push(stat(&out, "mb_per_s")?);
        c_rss.push(stat(&out, "peak_rss_bytes")?);
        let out = run(Command::new(&python).args(["-c", PYTHON_JSON_LOAD]).arg(large))?;
        p_mbs.push(stat(&out, "mb_per_s")?);
        p_rss.push(stat(&out, "peak_rss_bytes")?);
    }
    let (cm, cr, pm, pr) = (median(c_mbs), median(c_rss), median(p_mbs), median(p_rss));
    println!("| program | MB/s (one core) | peak RSS | RSS / file size |");
    println!("|---|---:|---:|---:|");
    println!(
        "| `coord analyze` (parse, link, key_averages) | {cm:.0} | {:.1} MB | {:.1}% |",
        cr / 1e6,
        100.0 * cr / size as f64
    );
    println!("| Python `json.load` + one loop | {pm:.1} | {:.1} MB | {:.0}% |", pr / 1e6, 100.0 * pr / size as f64);
    println!("\nSpeed ratio coord / Python: **{:.1}x**; memory ratio Python / coord: **{:.1}x**\n", cm / pm, pr / cr);

    if let Some(dir) = files.get(1) {
        many(&coord, dir, cores, runs)?;
    }
    Ok(())
}

/// `coord ingest` over a tree of many traces with 1, 2, 4, ... workers.
fn many(coord: &Path, dir: &Path, cores: usize, runs: usize) -> anyhow::Result<()> {
    let out = tempdir()?;
    println!("### Many files: `coord ingest --jobs J {}`\n", dir.display());
    println!("| jobs | MB/s | speed-up |");
    println!("|---:|---:|---:|");
    let mut base = 0.0;
    let mut j = 1;
    while j <= cores {
        let mut mbs = Vec::new();
        for _ in 0..runs {
            let o = run(Command::new(coord)
                .args(["ingest", "--stats", "--batch-size", "1", "--jobs", &j.to_string()])
                .arg(dir)
                .arg("--out")
                .arg(&out))?;
            mbs.push(stat(&o, "mb_per_s")?);
        }
        let m = median(mbs);
        if j == 1 {
            base = m;
        }
        println!("| {j} | {m:.0} | {:.2}x |", m / base);
        j *= 2;
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("bench-parse-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
