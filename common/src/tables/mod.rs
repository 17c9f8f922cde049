//! Writers of the result tables. The offline `coord ingest` and a distributed sweep share these, so a
//! sweep's outputs are by construction what `ingest` gives on the same traces.
//!
//! Seed-compatible tables (the original experiment's names and columns):
//! - `op_times.tsv`: `batch_size attention linear others`, mean GPU ms per step.
//! - `op_times_detailed.tsv`: `batch_size kqv_proj rope paged_attention o_proj gated_up_proj down_proj others`.
//! - `kernel_dat.csv`: distinct kernel launch configurations per batch size with their category.
//!
//! Full tables (one row per series and name, with statistics over steps):
//! - `ops.csv`, `kernels.csv`, `steps.csv`; `graph_reference.csv` where CUDA-graph steps were attributed
//!   through eager reference steps recorded beside them (per category: graph, eager, difference).
//!
//! Tensor parallelism: every full table has `tp` and `rank` columns (one row per rank); `steps.csv` adds,
//! per step of a tensor-parallel job, a row with rank `merged` (the slowest rank's view, see [`crate::ranks`]),
//! and the seed tables of a tensor-parallel series are the means of those merged steps, with the time the
//! collectives spent waiting for other ranks left out of `others`.
//!
//! Files are written with the `csv` crate (RFC 4180: a field holding the delimiter, a quote or a line
//! break is quoted, as kernel names like `elementwise_kernel<4, ...>` need); the `.tsv` files use tabs.
//!
//! The seed tables' rows are keyed by batch size alone, so each (mode, input length[, host]) gets its own
//! folder where the data holds several ([`Layout`], `group_dir`); the full tables stay at the top.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::aggregate::{Aggregate, SeriesKey, StepLeftOut, StepRow, mode_label};
use crate::classify::Detail;
use crate::ranks::{self, Merged};
use crate::roofline::{DType, PeakOverride, WorkSums};
use crate::stats::Summary;
use crate::sweep::Mode;
use crate::telemetry::StepTelemetry;

pub mod parquet;
pub mod table;

pub use table::{Kind, Table, Value};

/// The original experiment's tables, per mode, written by [`write_results`].
pub const SEED_FILES: [&str; 3] = [KERNEL_DAT, OP_TIMES, OP_TIMES_DETAILED];
/// The full tables, written by [`write_results`] as CSV and beside each its Parquet twin
/// ([`PARQUET_FILES`]).
pub const FULL_FILES: [&str; 3] = [OPS, KERNELS, STEPS];
/// The Parquet twins of the full tables: the same rows and columns, typed.
pub const PARQUET_FILES: [&str; 3] = ["ops.parquet", "kernels.parquet", "steps.parquet"];
/// Graph steps against their eager reference steps, written when there are any.
pub const GRAPH_REFERENCE: &str = "graph_reference.csv";
const KERNEL_DAT: &str = "kernel_dat.csv";
const OP_TIMES: &str = "op_times.tsv";
const OP_TIMES_DETAILED: &str = "op_times_detailed.tsv";
const OPS: &str = "ops.csv";
const KERNELS: &str = "kernels.csv";
const STEPS: &str = "steps.csv";
/// Per-category roofline, written when any op call had a FLOP model.
pub const ROOFLINE: &str = "roofline.csv";

/// How the seed tables are split: they are keyed by batch size alone, so every other dimension of the
/// data gets its own folder, or rows of different experiments would be averaged into one.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Layout {
    /// One folder per host as well (sweeps with `placement = "each"`, whose purpose is comparing machines;
    /// a spread sweep's points are one experiment over several hosts).
    pub per_host: bool,
    /// The GPU peaks the roofline columns compare with: the table's for the GPU's name, with these
    /// overrides (`--peak-tflops`, `--peak-gbps`).
    pub peaks: PeakOverride,
}

/// One group of seed tables: (mode, input length, tensor-parallel size, host: empty unless split by host).
type Group = (Option<Mode>, u32, u32, String);

/// The folder of a group's seed tables: `dir[/MODE][/inL][/tpN][/HOST]`, each level only where the data
/// holds more than one value of it (`decode/in128/gpu-node-1/op_times.tsv`; `in0` for an unknown length).
/// The input length is judged within the group's mode: decodes of one length beside prefills of two go to
/// `decode/` and `prefill/in128/`, `prefill/in2048/` (folders of the two modes never mix, so their lengths
/// need not tell them apart).
fn group_dir(dir: &Path, groups: &BTreeSet<Group>, g: &Group) -> PathBuf {
    let varies_in = |of: &dyn Fn(&Group) -> bool, f: &dyn Fn(&Group) -> String| {
        groups.iter().filter(|x| of(x)).map(f).collect::<BTreeSet<_>>().len() > 1
    };
    let varies = |f: &dyn Fn(&Group) -> String| varies_in(&|_| true, f);
    let mut sub = dir.to_path_buf();
    if varies(&|x| mode_label::name(x.0).to_string()) {
        sub.push(mode_label::name(g.0));
    }
    if varies_in(&|x| x.0 == g.0, &|x| x.1.to_string()) {
        sub.push(format!("in{}", g.1));
    }
    if varies(&|x| x.2.to_string()) {
        sub.push(format!("tp{}", g.2));
    }
    if varies(&|x| x.3.clone()) {
        sub.push(&g.3);
    }
    sub
}

/// Writes every table into `dir` (created if needed) and returns the paths written: the full tables at
/// the top, the seed tables once per (mode, input length, tensor-parallel size[, host]) in
/// `dir[/MODE][/inL][/tpN][/HOST]`, a level only where the data holds more than one value of it (the
/// length: within the group's mode).
pub fn write_results(dir: &Path, agg: &Aggregate, layout: Layout) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let group_of = |k: &SeriesKey| -> Group {
        (k.mode, k.input_len, k.tp, if layout.per_host { k.host.clone() } else { String::new() })
    };
    let merged = ranks::merge(agg);
    let groups: BTreeSet<Group> = agg.categories.keys().map(group_of).collect();
    for g in &groups {
        let sub = group_dir(dir, &groups, g);
        fs::create_dir_all(&sub)?;
        written.extend(write_seed(&sub, agg, &merged, &|k: &SeriesKey| group_of(k) == *g)?);
    }
    if groups.is_empty() {
        written.extend(write_seed(dir, agg, &merged, &|_: &SeriesKey| false)?);
    }
    written.extend(write_ops(dir, agg, &layout.peaks)?);
    written.extend(write_kernels(dir, agg)?);
    written.extend(write_steps(dir, agg, &merged)?);
    if !agg.roofline.is_empty() {
        written.push(write_roofline(dir, agg, &layout.peaks)?);
    }
    if !agg.references.is_empty() {
        written.push(write_graph_reference(dir, agg)?);
    }
    Ok(written)
}

/// Rows the seed tables (`op_times.tsv`, `op_times_detailed.tsv`) of `agg` hold, over every group: the
/// batch sizes with at least one step counted. 0 when every step was left out (another batch, ranks
/// not merged, no GPU activity).
pub fn seed_rows(agg: &Aggregate) -> usize {
    by_batch(agg, &ranks::merge(agg), &|_: &SeriesKey| true).len()
}

/// A CSV (`b','`) or TSV (`b'\t'`) writer on a new file at `path`.
fn create(path: &Path, delimiter: u8) -> io::Result<csv::Writer<fs::File>> {
    Ok(csv::WriterBuilder::new().delimiter(delimiter).from_writer(fs::File::create(path)?))
}

fn us(ns: f64) -> String {
    format!("{:.3}", ns / 1000.0)
}

fn ms(ns: f64) -> String {
    format!("{:.6}", ns / 1e6)
}

/// Per batch size of one group of series: the per-step category summaries merged across what the group
/// does not split (GPUs, and hosts unless split by host). A tensor-parallel series counts its merged
/// steps (one per step, the slowest rank's view without collective wait), not its ranks' steps.
fn by_batch(agg: &Aggregate, merged: &Merged, in_group: &dyn Fn(&SeriesKey) -> bool) -> BTreeMap<u32, Vec<Summary>> {
    let mut out: BTreeMap<u32, Vec<Summary>> = BTreeMap::new();
    for (k, cats) in &agg.categories {
        if !in_group(k) || k.tp > 1 {
            continue;
        }
        let e = out.entry(k.batch_size).or_insert_with(|| vec![Summary::default(); 7]);
        for (a, b) in e.iter_mut().zip(cats) {
            a.merge(b);
        }
    }
    for m in &merged.steps {
        // A step whose wait could not be told from compute is not a per-step cost (ranks::MergedStep).
        if !in_group(&m.series) || merged_left_out(m).is_some() {
            continue;
        }
        let e = out.entry(m.series.batch_size).or_insert_with(|| vec![Summary::default(); 7]);
        for d in Detail::ALL {
            e[d.index()].add(m.row.detail[d.index()]);
        }
    }
    out
}

/// Why a merged tensor-parallel step is left out of its series' GPU statistics: as any step
/// ([`StepLeftOut::of`]), or because its wait could not be told from its compute (`ranks::MergedStep`).
fn merged_left_out(m: &crate::ranks::MergedStep) -> Option<StepLeftOut> {
    StepLeftOut::of(&m.series, &m.row).or((!m.trusted).then_some(StepLeftOut::Ranks))
}

fn write_seed(
    dir: &Path,
    agg: &Aggregate,
    merged: &Merged,
    in_group: &dyn Fn(&SeriesKey) -> bool,
) -> io::Result<Vec<PathBuf>> {
    let rows = by_batch(agg, merged, in_group);

    let p_coarse = dir.join(OP_TIMES);
    let mut w = create(&p_coarse, b'\t')?;
    w.write_record(["batch_size", "attention", "linear", "others"])?;
    for (bs, cats) in &rows {
        let mut sums = [0f64; 3];
        for d in Detail::ALL {
            sums[d.coarse().index()] += cats[d.index()].mean();
        }
        w.write_record([bs.to_string(), ms(sums[0]), ms(sums[1]), ms(sums[2])])?;
    }
    w.flush()?;

    let p_detail = dir.join(OP_TIMES_DETAILED);
    let mut w = create(&p_detail, b'\t')?;
    w.write_record(std::iter::once("batch_size").chain(Detail::ALL.iter().map(|d| d.name())))?;
    for (bs, cats) in &rows {
        w.write_record(std::iter::once(bs.to_string()).chain(Detail::ALL.iter().map(|&d| ms(cats[d.index()].mean()))))?;
    }
    w.flush()?;

    let p_kernels = dir.join(KERNEL_DAT);
    let mut w = create(&p_kernels, b',')?;
    w.write_record([
        "bsize",
        "kernel",
        "gdim_x",
        "gdim_y",
        "gdim_z",
        "bdim_x",
        "bdim_y",
        "bdim_z",
        "blocks_per_sm",
        "warps_per_sm",
        "regs_per_thread",
        "occupancy",
        "op_type",
    ])?;
    let mut per_bs: BTreeMap<u32, std::collections::BTreeSet<&crate::summary::LaunchConfig>> = BTreeMap::new();
    for (k, set) in &agg.configs {
        if in_group(k) {
            per_bs.entry(k.batch_size).or_default().extend(set.iter());
        }
    }
    for (bs, set) in &per_bs {
        for c in set {
            w.write_record([
                bs.to_string(),
                c.kernel.clone(),
                c.grid[0].to_string(),
                c.grid[1].to_string(),
                c.grid[2].to_string(),
                c.block[0].to_string(),
                c.block[1].to_string(),
                c.block[2].to_string(),
                c.blocks_per_sm.to_string(),
                c.warps_per_sm.to_string(),
                c.registers_per_thread.to_string(),
                c.occupancy.to_string(),
                c.op_type.to_string(),
            ])?;
        }
    }
    w.flush()?;
    Ok(vec![p_kernels, p_coarse, p_detail])
}

const SERIES: [&str; 7] = ["host", "gpu", "mode", "batch_size", "input_len", "tp", "rank"];
const STATS: [&str; 8] = ["total_us", "min_us", "max_us", "mean_us", "std_us", "p50_us", "p90_us", "p99_us"];

/// µs with the CSV's 3 decimals.
const US: Kind = Kind::Float(3);

/// A table whose first columns are the series; `rank` is text in every table (`merged` rows of
/// tensor-parallel steps), so the tables join on it.
fn series_table() -> Table {
    let mut t = Table::new();
    for c in SERIES {
        let kind = if matches!(c, "batch_size" | "input_len" | "tp") { Kind::Int } else { Kind::Str };
        t.col(c, kind);
    }
    t
}

fn series_cols(k: &SeriesKey) -> Vec<Value> {
    vec![
        k.host.clone().into(),
        k.gpu.clone().into(),
        k.mode_label().into(),
        k.batch_size.into(),
        k.input_len.into(),
        k.tp.into(),
        k.rank.to_string().into(),
    ]
}

fn usv(ns: impl Into<f64>) -> Value {
    Value::Float(ns.into() / 1000.0)
}

fn stats_cols(s: &Summary) -> [Value; 8] {
    [
        usv(s.sum as f64),
        usv(s.min as f64),
        usv(s.max as f64),
        usv(s.mean()),
        usv(s.std()),
        usv(s.quantile(0.5)),
        usv(s.quantile(0.9)),
        usv(s.quantile(0.99)),
    ]
}

/// Writes a full table as `NAME.csv` and `NAME.parquet`; returns both paths.
fn write_both(dir: &Path, csv_name: &str, t: &Table) -> io::Result<[PathBuf; 2]> {
    let c = dir.join(csv_name);
    t.write_csv(&c, b',')?;
    let p = c.with_extension("parquet");
    parquet::write_parquet(t, &p)?;
    Ok([c, p])
}

/// Roofline columns of `ops.csv` (empty for ops without a FLOP model; see [`crate::roofline`]).
const ROOFLINE_COLS: [(&str, Kind); 11] = [
    ("dtype", Kind::Str),
    ("modeled_calls", Kind::Int),
    ("flops_per_call", Kind::Float(0)),
    ("bytes_per_call", Kind::Float(0)),
    ("arithmetic_intensity", Kind::Float(3)),
    ("achieved_tflops", Kind::Float(3)),
    ("achieved_gbps", Kind::Float(1)),
    ("peak_tflops", Kind::Float(1)),
    ("peak_gbps", Kind::Float(0)),
    ("bound", Kind::Str),
    ("of_roof", Kind::Float(4)),
];

/// The rates and the comparison with the GPU's peaks, shared by `ops.csv` and `roofline.csv`:
/// intensity, TFLOP/s, GB/s, then peak TFLOP/s, peak GB/s, bound and of_roof (empty without a peak).
fn rate_cols(w: &WorkSums, against: Option<crate::roofline::Against>) -> [Value; 7] {
    [
        w.intensity().into(),
        w.tflops().into(),
        w.gbps().into(),
        against.map(|a| a.peak_tflops).into(),
        against.map(|a| a.peak_gbps).into(),
        against.map(|a| a.bound.name().to_string()).into(),
        against.map(|a| a.of_roof).into(),
    ]
}

/// The roofline columns for modelled work of `dtype` on `gpu` (all empty without work).
fn roofline_cols(w: Option<(DType, &WorkSums)>, gpu: &str, peaks: &PeakOverride) -> Vec<Value> {
    let Some((dtype, w)) = w.filter(|(_, w)| w.calls > 0) else { return vec![Value::Null; ROOFLINE_COLS.len()] };
    let against = peaks.resolve(gpu).and_then(|p| w.against(&p, dtype));
    let mut cols = vec![
        dtype.name().into(),
        w.calls.into(),
        Value::Float(w.flops as f64 / w.calls as f64),
        Value::Float(w.bytes as f64 / w.calls as f64),
    ];
    cols.extend(rate_cols(w, against));
    cols
}

/// An op's work over its data types: the sums, under the type with the most FLOPs (whose peak it is
/// compared with).
fn op_work(work: &BTreeMap<DType, WorkSums>) -> Option<(DType, WorkSums)> {
    let (&dtype, _) = work.iter().max_by_key(|(d, w)| (w.flops, std::cmp::Reverse(**d)))?;
    let mut all = WorkSums::default();
    for w in work.values() {
        all.merge(w);
    }
    Some((dtype, all))
}

fn write_ops(dir: &Path, agg: &Aggregate, peaks: &PeakOverride) -> io::Result<[PathBuf; 2]> {
    let mut t = series_table();
    t.col("name", Kind::Str).col("side", Kind::Str).col("steps", Kind::Int).col("calls", Kind::Int);
    for s in STATS {
        t.col(s, US);
    }
    t.col("self_device_total_us", US).col("cpu_total_us", US).col("self_cpu_total_us", US);
    for (c, kind) in ROOFLINE_COLS {
        t.opt(c, kind);
    }
    for ((k, name, device), o) in &agg.ops {
        let mut row = series_cols(k);
        row.extend([
            name.clone().into(),
            if *device { "device" } else { "cpu" }.into(),
            o.device.count.into(),
            o.calls.into(),
        ]);
        row.extend(stats_cols(&o.device));
        row.extend([usv(o.self_device as f64), usv(o.cpu as f64), usv(o.self_cpu as f64)]);
        let work = op_work(&o.work);
        row.extend(roofline_cols(work.as_ref().map(|(d, w)| (*d, w)), &k.gpu, peaks));
        t.push(row);
    }
    write_both(dir, OPS, &t)
}

fn write_kernels(dir: &Path, agg: &Aggregate) -> io::Result<[PathBuf; 2]> {
    let mut t = series_table();
    t.col("kernel", Kind::Str)
        .col("category", Kind::Str)
        .col("coarse", Kind::Str)
        .col("steps", Kind::Int)
        .col("calls", Kind::Int);
    for s in STATS {
        t.col(s, US);
    }
    for ((k, name, cat), s) in &agg.kernels {
        let mut row = series_cols(k);
        row.extend([
            name.clone().into(),
            cat.name().into(),
            cat.coarse().name().into(),
            s.per_step.count.into(),
            s.calls.into(),
        ]);
        row.extend(stats_cols(&s.per_step));
        t.push(row);
    }
    write_both(dir, KERNELS, &t)
}

/// `roofline.csv`: per series, detailed category and data type, the outermost modelled op calls' work
/// per step (over the steps with any modelled call: `steps`) against the GPU's peaks. Written when any op
/// had a FLOP model; intensity and rates are empty without bytes or time.
fn write_roofline(dir: &Path, agg: &Aggregate, peaks: &PeakOverride) -> io::Result<PathBuf> {
    let mut t = series_table();
    t.col("category", Kind::Str).col("dtype", Kind::Str).col("steps", Kind::Int).col("calls_per_step", Kind::Float(2));
    t.col("flops_per_step", Kind::Float(0)).col("bytes_per_step", Kind::Float(0)).col("time_us_per_step", US);
    t.opt("arithmetic_intensity", Kind::Float(3))
        .opt("achieved_tflops", Kind::Float(3))
        .opt("achieved_gbps", Kind::Float(1));
    t.opt("peak_tflops", Kind::Float(1))
        .opt("peak_gbps", Kind::Float(0))
        .opt("bound", Kind::Str)
        .opt("of_roof", Kind::Float(4));
    for ((k, d, dtype), w) in &agg.roofline {
        let steps = agg.roofline_steps.get(k).copied().unwrap_or(0);
        if steps == 0 || w.calls == 0 {
            continue;
        }
        let n = steps as f64;
        let against = peaks.resolve(&k.gpu).and_then(|p| w.against(&p, *dtype));
        let mut row = series_cols(k);
        row.extend([
            d.name().into(),
            dtype.name().into(),
            steps.into(),
            Value::Float(w.calls as f64 / n),
            Value::Float(w.flops as f64 / n),
            Value::Float(w.bytes as f64 / n),
            usv(w.time_ns as f64 / n),
        ]);
        row.extend(rate_cols(w, against));
        t.push(row);
    }
    let p = dir.join(ROOFLINE);
    t.write_csv(&p, b',')?;
    Ok(p)
}

/// GPU telemetry columns of `steps.csv` (empty when the trace has none: `coord ingest`, replayed traces,
/// hosts without NVML). A trace of several steps repeats its trace's values on each step row.
const TELEMETRY: [(&str, Kind); 10] = [
    ("sm_clock_mhz_min", Kind::Int),
    ("sm_clock_mhz_max", Kind::Int),
    ("mem_clock_mhz_min", Kind::Int),
    ("mem_clock_mhz_max", Kind::Int),
    ("temperature_c_max", Kind::Int),
    ("power_w_mean", Kind::Float(1)),
    ("power_w_max", Kind::Float(1)),
    ("throttle_reasons", Kind::Str),
    ("throttled", Kind::Int),
    ("telemetry_samples", Kind::Int),
];

fn telemetry_cols(t: Option<&StepTelemetry>) -> Vec<Value> {
    let Some(t) = t else { return vec![Value::Null; TELEMETRY.len()] };
    vec![
        t.sm_clock_mhz_min.into(),
        t.sm_clock_mhz_max.into(),
        t.mem_clock_mhz_min.into(),
        t.mem_clock_mhz_max.into(),
        t.temperature_c_max.into(),
        Value::Float(t.power_w_mean),
        Value::Float(t.power_w_max),
        t.reason_names().into(),
        u64::from(t.throttled()).into(),
        t.samples.into(),
    ]
}

/// Columns of `steps.csv` between the per-category kernels and the telemetry (all may be empty).
const STEP_EXTRA: [(&str, Kind); 13] = [
    ("collective_activities", Kind::Int),
    ("collective_us", US),
    ("collective_wait_us", US),
    ("collective_transfer_us", US),
    ("slowest_rank", Kind::Int),
    ("rank_end_skew_us", US),
    ("graph_replayed", Kind::Int),
    ("graph_exact", Kind::Int),
    ("graph_inferred", Kind::Int),
    ("graph_unattributed", Kind::Int),
    ("graph_reference", Kind::Str),
    ("model_tokens", Kind::Int),
    ("left_out", Kind::Str),
];

/// The columns of one step row from `trace` to the per-category kernels.
fn step_cols(trace: &str, step: u32, r: &StepRow) -> Vec<Value> {
    let mut coarse_ns = [0i64; 3];
    for d in Detail::ALL {
        coarse_ns[d.coarse().index()] += r.detail[d.index()];
    }
    let mut row: Vec<Value> = vec![
        trace.into(),
        step.into(),
        r.step_name.clone().into(),
        usv(r.gpu_busy as f64),
        usv(r.gpu_time as f64),
        usv(r.wall_span as f64),
        r.kernel_count.into(),
        r.layers.into(),
        usv(coarse_ns[0] as f64),
        usv(coarse_ns[1] as f64),
        usv(coarse_ns[2] as f64),
    ];
    row.extend(r.detail.iter().map(|&v| usv(v as f64)));
    row.extend(r.detail_activities.iter().map(|&v| Value::from(v)));
    row
}

fn graph_cols(r: &StepRow) -> [Value; 5] {
    if r.graph_activities == 0 {
        return [Value::Null, Value::Null, Value::Null, Value::Null, Value::Null];
    }
    [
        r.graph_activities.into(),
        r.graph_mapped[0].into(),
        r.graph_mapped[1].into(),
        r.graph_mapped[2].into(),
        r.graph_reference.clone().into(),
    ]
}

fn write_steps(dir: &Path, agg: &Aggregate, merged: &Merged) -> io::Result<[PathBuf; 2]> {
    let mut t = series_table();
    t.col("trace", Kind::Str).col("step", Kind::Int).col("step_name", Kind::Str);
    t.col("gpu_busy_us", US).col("gpu_time_us", US).col("wall_span_us", US);
    t.col("kernel_count", Kind::Int).col("layers", Kind::Int);
    t.col("attention_us", US).col("linear_us", US).col("others_us", US);
    for d in Detail::ALL {
        t.col(format!("detail_{}_us", d.name()), US);
    }
    for d in Detail::ALL {
        t.col(format!("detail_{}_kernels", d.name()), Kind::Int);
    }
    for (c, kind) in STEP_EXTRA {
        t.opt(c, kind);
    }
    for (c, kind) in TELEMETRY {
        t.opt(c, kind);
    }
    for ((k, trace, step), r) in &agg.steps {
        let mut row = series_cols(k);
        row.extend(step_cols(trace, *step, r));
        let split = merged.splits.get(&(k.clone(), trace.clone(), *step));
        row.extend([
            r.collective_activities.into(),
            usv(r.collective_time as f64),
            split.map(|s| s.wait as f64 / 1000.0).into(),
            split.map(|s| s.transfer as f64 / 1000.0).into(),
            Value::Null,
            Value::Null,
        ]);
        row.extend(graph_cols(r));
        row.push(r.tokens.into());
        row.push(StepLeftOut::of(k, r).map(StepLeftOut::name).into());
        row.extend(telemetry_cols(agg.telemetry.get(&(k.clone(), trace.clone()))));
        t.push(row);
    }
    // One row per merged step of a tensor-parallel job: rank `merged`, the slowest rank's view.
    for m in &merged.steps {
        let mut row = series_cols(&m.series);
        row[SERIES.len() - 1] = "merged".into();
        let slow = m.slowest_rank as usize;
        row.extend(step_cols(&m.traces[slow], m.indexes[slow], &m.row));
        let split = |v: i64| if m.split { usv(v as f64) } else { Value::Null };
        row.extend([
            m.row.collective_activities.into(),
            usv(m.row.collective_time as f64),
            split(m.ranks[slow].wait),
            split(m.ranks[slow].transfer),
            m.slowest_rank.into(),
            split(m.end_skew),
        ]);
        row.extend(graph_cols(&m.row));
        row.push(m.row.tokens.into());
        row.push(merged_left_out(m).map(StepLeftOut::name).into());
        let of_slowest = (SeriesKey { rank: m.slowest_rank, ..m.series.clone() }, m.traces[slow].clone());
        row.extend(telemetry_cols(agg.telemetry.get(&of_slowest)));
        t.push(row);
    }
    write_both(dir, STEPS, &t)
}

/// `graph_reference.csv`: per series and category, the mean per step of the graph steps that were mapped
/// onto eager reference steps, the mean of those reference steps, and the difference (graph - eager), in
/// µs and in activities.
fn write_graph_reference(dir: &Path, agg: &Aggregate) -> io::Result<PathBuf> {
    let p = dir.join(GRAPH_REFERENCE);
    let mut w = create(&p, b',')?;
    let mut header: Vec<&str> = SERIES.to_vec();
    header.extend([
        "category",
        "graph_steps",
        "reference_steps",
        "graph_us",
        "eager_us",
        "difference_us",
        "graph_kernels",
        "eager_kernels",
    ]);
    w.write_record(&header)?;
    // (sum ns, sum activities, steps) per category.
    type Sums = ([i64; 7], [u64; 7], u64);
    let add = |s: &mut Sums, r: &StepRow| {
        for d in Detail::ALL {
            s.0[d.index()] += r.detail[d.index()];
            s.1[d.index()] += u64::from(r.detail_activities[d.index()]);
        }
        s.2 += 1;
    };
    let mut graph: BTreeMap<&SeriesKey, Sums> = BTreeMap::new();
    for ((k, _, _), r) in &agg.steps {
        // A step left out of its series' statistics is not compared either (its reference would be of
        // another batch).
        if r.graph_activities > 0 && !r.graph_reference.is_empty() && StepLeftOut::of(k, r).is_none() {
            add(graph.entry(k).or_default(), r);
        }
    }
    let mut eager: BTreeMap<&SeriesKey, Sums> = BTreeMap::new();
    for ((k, _, _), r) in &agg.references {
        add(eager.entry(k).or_default(), r);
    }
    let mean = |v: f64, n: u64| if n == 0 { 0.0 } else { v / n as f64 };
    for (k, g) in &graph {
        let e = eager.get(k).copied().unwrap_or_default();
        for d in Detail::ALL {
            let (gi, ei) = (mean(g.0[d.index()] as f64, g.2), mean(e.0[d.index()] as f64, e.2));
            let mut row: Vec<String> = series_cols(k)
                .iter()
                .map(|v| match v {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => String::new(),
                })
                .collect();
            row.extend([
                d.name().to_string(),
                g.2.to_string(),
                e.2.to_string(),
                us(gi),
                if e.2 == 0 { String::new() } else { us(ei) },
                if e.2 == 0 { String::new() } else { us(gi - ei) },
                format!("{:.2}", mean(g.1[d.index()] as f64, g.2)),
                if e.2 == 0 { String::new() } else { format!("{:.2}", mean(e.1[d.index()] as f64, e.2)) },
            ]);
            w.write_record(&row)?;
        }
    }
    w.flush()?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_level_is_judged_within_each_mode() {
        let g = |mode, len| (Some(mode), len, 1, String::new());
        let dirs = |groups: &[Group]| -> Vec<String> {
            let set: BTreeSet<Group> = groups.iter().cloned().collect();
            set.iter().map(|x| group_dir(Path::new(""), &set, x).display().to_string()).collect()
        };
        // Decodes of an unknown length beside prefills of 128 tokens: one length in each mode.
        assert_eq!(dirs(&[g(Mode::Decode, 0), g(Mode::Prefill, 128)]), ["decode", "prefill"]);
        assert_eq!(
            dirs(&[g(Mode::Decode, 128), g(Mode::Prefill, 128), g(Mode::Prefill, 2048)]),
            ["decode", "prefill/in128", "prefill/in2048"]
        );
        // One mode: the level as before.
        assert_eq!(dirs(&[g(Mode::Decode, 128), g(Mode::Decode, 2048)]), ["in128", "in2048"]);
    }
}
