//! Writers of the result tables. The offline `coord ingest` and a distributed sweep share these, so a
//! sweep's outputs are by construction what `ingest` gives on the same traces.
//!
//! Seed-compatible tables (the original experiment's names and columns):
//! - `op_times.tsv`: `batch_size attention linear others`, mean GPU ms per step.
//! - `op_times_detailed.tsv`: `batch_size kqv_proj rope paged_attention o_proj gated_up_proj down_proj others`.
//! - `kernel_dat.csv`: distinct kernel launch configurations per batch size with their category.
//!
//! Full tables (one row per series and name, with statistics over steps):
//! - `ops.csv`, `kernels.csv`, `steps.csv`.
//!
//! When the aggregate holds several modes (decode and prefill), the seed tables of each mode go to a
//! sub-folder named after the mode, since their columns have no mode; the full tables stay at the top.

mod csv;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::aggregate::{Aggregate, SeriesKey, mode_label};
use crate::classify::Detail;
use crate::stats::Summary;
use crate::sweep::Mode;
use crate::telemetry::StepTelemetry;

pub use csv::field;

/// The original experiment's tables, per mode, written by [`write_results`].
pub const SEED_FILES: [&str; 3] = [KERNEL_DAT, OP_TIMES, OP_TIMES_DETAILED];
/// The full tables, written by [`write_results`].
pub const FULL_FILES: [&str; 3] = [OPS, KERNELS, STEPS];
const KERNEL_DAT: &str = "kernel_dat.csv";
const OP_TIMES: &str = "op_times.tsv";
const OP_TIMES_DETAILED: &str = "op_times_detailed.tsv";
const OPS: &str = "ops.csv";
const KERNELS: &str = "kernels.csv";
const STEPS: &str = "steps.csv";

/// Writes every table into `dir` (created if needed) and returns the paths written.
pub fn write_results(dir: &Path, agg: &Aggregate) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let modes = agg.modes();
    for &mode in &modes {
        let sub = if modes.len() > 1 { dir.join(mode_label::name(mode)) } else { dir.to_path_buf() };
        fs::create_dir_all(&sub)?;
        written.extend(write_seed(&sub, agg, mode)?);
    }
    if modes.is_empty() {
        written.extend(write_seed(dir, agg, None)?);
    }
    written.push(write_ops(dir, agg)?);
    written.push(write_kernels(dir, agg)?);
    written.push(write_steps(dir, agg)?);
    Ok(written)
}

fn create(path: &Path) -> io::Result<BufWriter<fs::File>> {
    Ok(BufWriter::new(fs::File::create(path)?))
}

fn us(ns: f64) -> String {
    format!("{:.3}", ns / 1000.0)
}

fn ms(ns: f64) -> String {
    format!("{:.6}", ns / 1e6)
}

/// Per batch size of one mode: the per-step category summaries merged across hosts, GPUs and input lengths.
fn by_batch(agg: &Aggregate, mode: Option<Mode>) -> BTreeMap<u32, Vec<Summary>> {
    let mut out: BTreeMap<u32, Vec<Summary>> = BTreeMap::new();
    for (k, cats) in &agg.categories {
        if k.mode != mode {
            continue;
        }
        let e = out.entry(k.batch_size).or_insert_with(|| vec![Summary::default(); 7]);
        for (a, b) in e.iter_mut().zip(cats) {
            a.merge(b);
        }
    }
    out
}

fn write_seed(dir: &Path, agg: &Aggregate, mode: Option<Mode>) -> io::Result<Vec<PathBuf>> {
    let rows = by_batch(agg, mode);

    let p_coarse = dir.join(OP_TIMES);
    let mut w = create(&p_coarse)?;
    writeln!(w, "batch_size\tattention\tlinear\tothers")?;
    for (bs, cats) in &rows {
        let mut sums = [0f64; 3];
        for d in Detail::ALL {
            sums[d.coarse().index()] += cats[d.index()].mean();
        }
        writeln!(w, "{bs}\t{}\t{}\t{}", ms(sums[0]), ms(sums[1]), ms(sums[2]))?;
    }
    w.flush()?;

    let p_detail = dir.join(OP_TIMES_DETAILED);
    let mut w = create(&p_detail)?;
    let header: Vec<&str> = Detail::ALL.iter().map(|d| d.name()).collect();
    writeln!(w, "batch_size\t{}", header.join("\t"))?;
    for (bs, cats) in &rows {
        let vals: Vec<String> = Detail::ALL.iter().map(|&d| ms(cats[d.index()].mean())).collect();
        writeln!(w, "{bs}\t{}", vals.join("\t"))?;
    }
    w.flush()?;

    let p_kernels = dir.join(KERNEL_DAT);
    let mut w = create(&p_kernels)?;
    writeln!(
        w,
        "bsize,kernel,gdim_x,gdim_y,gdim_z,bdim_x,bdim_y,bdim_z,blocks_per_sm,warps_per_sm,regs_per_thread,occupancy,op_type"
    )?;
    let mut per_bs: BTreeMap<u32, std::collections::BTreeSet<&crate::summary::LaunchConfig>> = BTreeMap::new();
    for (k, set) in &agg.configs {
        if k.mode == mode {
            per_bs.entry(k.batch_size).or_default().extend(set.iter());
        }
    }
    for (bs, set) in &per_bs {
        for c in set {
            writeln!(
                w,
                "{bs},{},{},{},{},{},{},{},{},{},{},{},{}",
                field(&c.kernel),
                c.grid[0],
                c.grid[1],
                c.grid[2],
                c.block[0],
                c.block[1],
                c.block[2],
                c.blocks_per_sm,
                c.warps_per_sm,
                c.registers_per_thread,
                c.occupancy,
                c.op_type
            )?;
        }
    }
    w.flush()?;
    Ok(vec![p_kernels, p_coarse, p_detail])
}

fn series_cols(k: &SeriesKey) -> String {
    format!("{},{},{},{},{}", field(&k.host), field(&k.gpu), k.mode_label(), k.batch_size, k.input_len)
}

fn stats_cols(s: &Summary) -> String {
    format!(
        "{},{},{},{},{},{},{},{}",
        us(s.sum as f64),
        us(s.min as f64),
        us(s.max as f64),
        us(s.mean()),
        us(s.std()),
        us(s.quantile(0.5)),
        us(s.quantile(0.9)),
        us(s.quantile(0.99))
    )
}

const SERIES: &str = "host,gpu,mode,batch_size,input_len";
const STATS: &str = "total_us,min_us,max_us,mean_us,std_us,p50_us,p90_us,p99_us";

fn write_ops(dir: &Path, agg: &Aggregate) -> io::Result<PathBuf> {
    let p = dir.join(OPS);
    let mut w = create(&p)?;
    writeln!(w, "{SERIES},name,side,steps,calls,{STATS},self_device_total_us,cpu_total_us,self_cpu_total_us")?;
    for ((k, name, device), o) in &agg.ops {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{}",
            series_cols(k),
            field(name),
            if *device { "device" } else { "cpu" },
            o.device.count,
            o.calls,
            stats_cols(&o.device),
            us(o.self_device as f64),
            us(o.cpu as f64),
            us(o.self_cpu as f64)
        )?;
    }
    w.flush()?;
    Ok(p)
}

fn write_kernels(dir: &Path, agg: &Aggregate) -> io::Result<PathBuf> {
    let p = dir.join(KERNELS);
    let mut w = create(&p)?;
    writeln!(w, "{SERIES},kernel,category,coarse,steps,calls,{STATS}")?;
    for ((k, name, cat), s) in &agg.kernels {
        writeln!(
            w,
            "{},{},{},{},{},{},{}",
            series_cols(k),
            field(name),
            cat.name(),
            cat.coarse().name(),
            s.per_step.count,
            s.calls,
            stats_cols(&s.per_step)
        )?;
    }
    w.flush()?;
    Ok(p)
}

/// GPU telemetry columns of `steps.csv` (empty when the trace has none: `coord ingest`, replayed traces,
/// hosts without NVML). A trace of several steps repeats its trace's values on each step row.
const TELEMETRY: &str = "sm_clock_mhz_min,sm_clock_mhz_max,mem_clock_mhz_min,mem_clock_mhz_max,temperature_c_max,\
power_w_mean,power_w_max,throttle_reasons,throttled,telemetry_samples";

fn telemetry_cols(t: Option<&StepTelemetry>) -> String {
    let Some(t) = t else { return ",".repeat(TELEMETRY.matches(',').count()) };
    format!(
        "{},{},{},{},{},{:.1},{:.1},{},{},{}",
        t.sm_clock_mhz_min,
        t.sm_clock_mhz_max,
        t.mem_clock_mhz_min,
        t.mem_clock_mhz_max,
        t.temperature_c_max,
        t.power_w_mean,
        t.power_w_max,
        field(&t.reason_names()),
        u8::from(t.throttled()),
        t.samples
    )
}

fn write_steps(dir: &Path, agg: &Aggregate) -> io::Result<PathBuf> {
    let p = dir.join(STEPS);
    let mut w = create(&p)?;
    let details: Vec<String> = Detail::ALL.iter().map(|d| format!("detail_{}_us", d.name())).collect();
    let counts: Vec<String> = Detail::ALL.iter().map(|d| format!("detail_{}_kernels", d.name())).collect();
    writeln!(
        w,
        "{SERIES},trace,step,step_name,gpu_busy_us,gpu_time_us,wall_span_us,kernel_count,layers,attention_us,linear_us,others_us,{},{},{TELEMETRY}",
        details.join(","),
        counts.join(",")
    )?;
    for ((k, trace, step), r) in &agg.steps {
        let mut coarse_ns = [0i64; 3];
        for d in Detail::ALL {
            coarse_ns[d.coarse().index()] += r.detail[d.index()];
        }
        let det: Vec<String> = r.detail.iter().map(|&v| us(v as f64)).collect();
        let cnt: Vec<String> = r.detail_activities.iter().map(|v| v.to_string()).collect();
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            series_cols(k),
            field(trace),
            step,
            field(&r.step_name),
            us(r.gpu_busy as f64),
            us(r.gpu_time as f64),
            us(r.wall_span as f64),
            r.kernel_count,
            r.layers,
            us(coarse_ns[0] as f64),
            us(coarse_ns[1] as f64),
            us(coarse_ns[2] as f64),
            det.join(","),
            cnt.join(","),
            telemetry_cols(agg.telemetry.get(&(k.clone(), trace.clone())))
        )?;
    }
    w.flush()?;
    Ok(p)
}
