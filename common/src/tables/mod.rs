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

use crate::aggregate::{Aggregate, SeriesKey, StepRow, mode_label};
use crate::classify::Detail;
use crate::ranks::{self, Merged};
use crate::stats::Summary;
use crate::sweep::Mode;
use crate::telemetry::StepTelemetry;

/// The original experiment's tables, per mode, written by [`write_results`].
pub const SEED_FILES: [&str; 3] = [KERNEL_DAT, OP_TIMES, OP_TIMES_DETAILED];
/// The full tables, written by [`write_results`].
pub const FULL_FILES: [&str; 3] = [OPS, KERNELS, STEPS];
/// Graph steps against their eager reference steps, written when there are any.
pub const GRAPH_REFERENCE: &str = "graph_reference.csv";
const KERNEL_DAT: &str = "kernel_dat.csv";
const OP_TIMES: &str = "op_times.tsv";
const OP_TIMES_DETAILED: &str = "op_times_detailed.tsv";
const OPS: &str = "ops.csv";
const KERNELS: &str = "kernels.csv";
const STEPS: &str = "steps.csv";

/// How the seed tables are split: they are keyed by batch size alone, so every other dimension of the
/// data gets its own folder, or rows of different experiments would be averaged into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    /// One folder per host as well (sweeps with `placement = "each"`, whose purpose is comparing machines;
    /// a spread sweep's points are one experiment over several hosts).
    pub per_host: bool,
}

/// One group of seed tables: (mode, input length, tensor-parallel size, host: empty unless split by host).
type Group = (Option<Mode>, u32, u32, String);

/// The folder of a group's seed tables: `dir[/MODE][/inL][/tpN][/HOST]`, each level only where the data
/// holds more than one value of it (`decode/in128/gpu-node-1/op_times.tsv`; `in0` for an unknown length).
fn group_dir(dir: &Path, groups: &BTreeSet<Group>, g: &Group) -> PathBuf {
    let varies = |f: &dyn Fn(&Group) -> String| groups.iter().map(f).collect::<BTreeSet<_>>().len() > 1;
    let mut sub = dir.to_path_buf();
    if varies(&|x| mode_label::name(x.0).to_string()) {
        sub.push(mode_label::name(g.0));
    }
    if varies(&|x| x.1.to_string()) {
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
/// the top, the seed tables once per (mode, input length[, host]) in `dir[/MODE][/inL][/HOST]`, a level
/// only where the data holds more than one value of it.
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
    written.push(write_ops(dir, agg)?);
    written.push(write_kernels(dir, agg)?);
    written.push(write_steps(dir, agg, &merged)?);
    if !agg.references.is_empty() {
        written.push(write_graph_reference(dir, agg)?);
    }
    Ok(written)
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
        if !in_group(&m.series) || !m.row.has_gpu_activity() || !m.trusted {
            continue;
        }
        let e = out.entry(m.series.batch_size).or_insert_with(|| vec![Summary::default(); 7]);
        for d in Detail::ALL {
            e[d.index()].add(m.row.detail[d.index()]);
        }
    }
    out
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

fn series_cols(k: &SeriesKey) -> [String; 7] {
    [
        k.host.clone(),
        k.gpu.clone(),
        k.mode_label().into(),
        k.batch_size.to_string(),
        k.input_len.to_string(),
        k.tp.to_string(),
        k.rank.to_string(),
    ]
}

fn stats_cols(s: &Summary) -> [String; 8] {
    [
        us(s.sum as f64),
        us(s.min as f64),
        us(s.max as f64),
        us(s.mean()),
        us(s.std()),
        us(s.quantile(0.5)),
        us(s.quantile(0.9)),
        us(s.quantile(0.99)),
    ]
}

fn write_ops(dir: &Path, agg: &Aggregate) -> io::Result<PathBuf> {
    let p = dir.join(OPS);
    let mut w = create(&p, b',')?;
    let mut header: Vec<&str> = SERIES.to_vec();
    header.extend(["name", "side", "steps", "calls"]);
    header.extend(STATS);
    header.extend(["self_device_total_us", "cpu_total_us", "self_cpu_total_us"]);
    w.write_record(&header)?;
    for ((k, name, device), o) in &agg.ops {
        let mut row: Vec<String> = series_cols(k).into();
        row.extend([
            name.clone(),
            if *device { "device" } else { "cpu" }.into(),
            o.device.count.to_string(),
            o.calls.to_string(),
        ]);
        row.extend(stats_cols(&o.device));
        row.extend([us(o.self_device as f64), us(o.cpu as f64), us(o.self_cpu as f64)]);
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(p)
}

fn write_kernels(dir: &Path, agg: &Aggregate) -> io::Result<PathBuf> {
    let p = dir.join(KERNELS);
    let mut w = create(&p, b',')?;
    let mut header: Vec<&str> = SERIES.to_vec();
    header.extend(["kernel", "category", "coarse", "steps", "calls"]);
    header.extend(STATS);
    w.write_record(&header)?;
    for ((k, name, cat), s) in &agg.kernels {
        let mut row: Vec<String> = series_cols(k).into();
        row.extend([
            name.clone(),
            cat.name().into(),
            cat.coarse().name().into(),
            s.per_step.count.to_string(),
            s.calls.to_string(),
        ]);
        row.extend(stats_cols(&s.per_step));
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(p)
}

/// GPU telemetry columns of `steps.csv` (empty when the trace has none: `coord ingest`, replayed traces,
/// hosts without NVML). A trace of several steps repeats its trace's values on each step row.
const TELEMETRY: [&str; 10] = [
    "sm_clock_mhz_min",
    "sm_clock_mhz_max",
    "mem_clock_mhz_min",
    "mem_clock_mhz_max",
    "temperature_c_max",
    "power_w_mean",
    "power_w_max",
    "throttle_reasons",
    "throttled",
    "telemetry_samples",
];

fn telemetry_cols(t: Option<&StepTelemetry>) -> [String; 10] {
    let Some(t) = t else { return Default::default() };
    [
        t.sm_clock_mhz_min.to_string(),
        t.sm_clock_mhz_max.to_string(),
        t.mem_clock_mhz_min.to_string(),
        t.mem_clock_mhz_max.to_string(),
        t.temperature_c_max.to_string(),
        format!("{:.1}", t.power_w_mean),
        format!("{:.1}", t.power_w_max),
        t.reason_names(),
        u8::from(t.throttled()).to_string(),
        t.samples.to_string(),
    ]
}

/// Columns of `steps.csv` between the per-category kernels and the telemetry.
const STEP_EXTRA: [&str; 11] = [
    "collective_activities",
    "collective_us",
    "collective_wait_us",
    "collective_transfer_us",
    "slowest_rank",
    "rank_end_skew_us",
    "graph_replayed",
    "graph_exact",
    "graph_inferred",
    "graph_unattributed",
    "graph_reference",
];

/// The columns of one step row from `step_name` to the per-category kernels.
fn step_cols(trace: &str, step: &str, r: &StepRow) -> Vec<String> {
    let mut coarse_ns = [0i64; 3];
    for d in Detail::ALL {
        coarse_ns[d.coarse().index()] += r.detail[d.index()];
    }
    let mut row = vec![
        trace.to_string(),
        step.to_string(),
        r.step_name.clone(),
        us(r.gpu_busy as f64),
        us(r.gpu_time as f64),
        us(r.wall_span as f64),
        r.kernel_count.to_string(),
        r.layers.to_string(),
        us(coarse_ns[0] as f64),
        us(coarse_ns[1] as f64),
        us(coarse_ns[2] as f64),
    ];
    row.extend(r.detail.iter().map(|&v| us(v as f64)));
    row.extend(r.detail_activities.iter().map(|v| v.to_string()));
    row
}

fn graph_cols(r: &StepRow) -> [String; 5] {
    if r.graph_activities == 0 {
        return Default::default();
    }
    [
        r.graph_activities.to_string(),
        r.graph_mapped[0].to_string(),
        r.graph_mapped[1].to_string(),
        r.graph_mapped[2].to_string(),
        r.graph_reference.clone(),
    ]
}

fn write_steps(dir: &Path, agg: &Aggregate, merged: &Merged) -> io::Result<PathBuf> {
    let p = dir.join(STEPS);
    let mut w = create(&p, b',')?;
    let mut header: Vec<String> = SERIES.iter().map(|s| s.to_string()).collect();
    header.extend(
        [
            "trace",
            "step",
            "step_name",
            "gpu_busy_us",
            "gpu_time_us",
            "wall_span_us",
            "kernel_count",
            "layers",
            "attention_us",
            "linear_us",
            "others_us",
        ]
        .map(String::from),
    );
    header.extend(Detail::ALL.iter().map(|d| format!("detail_{}_us", d.name())));
    header.extend(Detail::ALL.iter().map(|d| format!("detail_{}_kernels", d.name())));
    header.extend(STEP_EXTRA.map(String::from));
    header.extend(TELEMETRY.map(String::from));
    w.write_record(&header)?;
    for ((k, trace, step), r) in &agg.steps {
        let mut row: Vec<String> = series_cols(k).into();
        row.extend(step_cols(trace, &step.to_string(), r));
        let split = merged.splits.get(&(k.clone(), trace.clone(), *step));
        row.extend([
            r.collective_activities.to_string(),
            us(r.collective_time as f64),
            split.map_or_else(String::new, |s| us(s.wait as f64)),
            split.map_or_else(String::new, |s| us(s.transfer as f64)),
            String::new(),
            String::new(),
        ]);
        row.extend(graph_cols(r));
        row.extend(telemetry_cols(agg.telemetry.get(&(k.clone(), trace.clone()))));
        w.write_record(&row)?;
    }
    // One row per merged step of a tensor-parallel job: rank `merged`, the slowest rank's view.
    for m in &merged.steps {
        let mut row: Vec<String> = series_cols(&m.series).into();
        row[SERIES.len() - 1] = "merged".into();
        let slow = m.slowest_rank as usize;
        row.extend(step_cols(&m.traces[slow], &m.indexes[slow].to_string(), &m.row));
        row.extend([
            m.row.collective_activities.to_string(),
            us(m.row.collective_time as f64),
            if m.split { us(m.ranks[slow].wait as f64) } else { String::new() },
            if m.split { us(m.ranks[slow].transfer as f64) } else { String::new() },
            m.slowest_rank.to_string(),
            if m.split { us(m.end_skew as f64) } else { String::new() },
        ]);
        row.extend(graph_cols(&m.row));
        let of_slowest = (SeriesKey { rank: m.slowest_rank, ..m.series.clone() }, m.traces[slow].clone());
        row.extend(telemetry_cols(agg.telemetry.get(&of_slowest)));
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(p)
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
        if r.graph_activities > 0 && !r.graph_reference.is_empty() {
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
            let mut row: Vec<String> = series_cols(k).into();
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
