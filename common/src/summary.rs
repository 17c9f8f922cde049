//! Per-trace summaries: what a parse worker produces from one trace file, before any merging.
//!
//! A summary holds, for every step of the trace, the GPU time per category, the op table (torch's
//! `key_averages()` restricted to the step), per-kernel totals and the distinct launch configurations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::classify::graphs::{GraphReference, Mapping, ReferenceStep, UNATTRIBUTED_OP, map_replayed};
use crate::classify::{Classified, Detail, RuleMemo, Rules, classify_step_with};
use crate::glob::Patterns;
use crate::trace::key_averages::{KeyTotals, event_times_with_jobs_min, totals};
use crate::trace::link::NONE;
use crate::trace::reader::TraceReader;
use crate::trace::steps::{self, VllmStepShape};
use crate::trace::{Category, LeftOut, Links, ReadLimits, Trace, TraceError};

/// How to read and reduce traces.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Reader limits.
    pub limits: ReadLimits,
    /// Classification rules.
    pub rules: Rules,
    /// Step annotation patterns (user annotations whose names match are steps).
    pub step_patterns: Patterns,
    /// Refuse a trace in which no annotation matches `step_patterns` (set when the user gave them: a trace
    /// without matches is otherwise read as one step).
    pub require_step_match: bool,
    /// Eager reference steps for attributing CUDA-graph replays, from another trace; used for graph steps
    /// whose own trace holds no eager step of their shape.
    pub graph_reference: Option<Arc<GraphReference>>,
    /// Threads one trace may be read, linked and timed on (see [`crate::trace::parallel`]; traces under
    /// twice [`crate::trace::parallel::MIN_PIECE_BYTES`] are read on one, traces of fewer than
    /// [`crate::trace::link::PARALLEL_MIN_EVENTS`] retained events linked on one). Default 1.
    pub parse_jobs: usize,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self {
            limits: ReadLimits::default(),
            rules: Rules::default(),
            step_patterns: steps::default_step_patterns(),
            require_step_match: false,
            graph_reference: None,
            parse_jobs: 1,
        }
    }
}

/// A kernel launch configuration as CUPTI reports it, with the category of the kernel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LaunchConfig {
    /// Kernel name.
    pub kernel: String,
    /// Grid x, y, z.
    pub grid: [u32; 3],
    /// Block x, y, z.
    pub block: [u32; 3],
    /// Blocks per SM, as printed in the trace.
    pub blocks_per_sm: String,
    /// Warps per SM, as printed.
    pub warps_per_sm: String,
    /// Registers per thread.
    pub registers_per_thread: u32,
    /// Estimated achieved occupancy, percent, as printed.
    pub occupancy: String,
    /// Detailed category name.
    pub op_type: String,
}

/// One op row of a step (torch's key, host or device side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRow {
    /// Key (event name).
    pub name: String,
    /// Device-side row (kernels, copies, GPU annotations).
    pub device: bool,
    /// Calls of the op in the step (times below are totals over them, ns).
    pub count: u64,
    /// CPU time, ns.
    pub cpu: i64,
    /// Self CPU time, ns.
    pub self_cpu: i64,
    /// Device time, ns.
    pub device_time: i64,
    /// Self device time, ns.
    pub self_device: i64,
}

/// One kernel (by name and category) in a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRow {
    /// Kernel (or copy/set) name.
    pub name: String,
    /// Category.
    pub category: Detail,
    /// Launches.
    pub calls: u64,
    /// Summed duration, ns.
    pub total: i64,
    /// A collective communication kernel (category `others`; the full tables call it `collective`).
    #[serde(default)]
    pub collective: bool,
}

/// The GPU time of a step's `others` category that one op was given (the op its activities were
/// attributed to: their top-level op, or the op around a CUDA graph launch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRow {
    /// The op's name; empty for activities no op launched.
    pub op: String,
    /// GPU activities.
    pub activities: u32,
    /// Summed duration, ns.
    pub total: i64,
}

/// One profiled step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSummary {
    /// Index of the step in its trace.
    pub index: u32,
    /// Step annotation name, empty for a one-step file.
    pub name: String,
    /// Batch shape from a vLLM step name.
    pub vllm: Option<(u32, u32, u32, u32)>,
    /// Tokens the step fed to the model: the indices its token embedding looked up (the `aten::embedding`
    /// calls with the largest table), summed over the step's calls of it, one per forward pass; `None`
    /// when the trace recorded no shapes or the step made no embedding call (a step replayed from a CUDA
    /// graph, or compiled whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Sequences the step fed to the model, where its token embedding's indices were `[sequences, tokens
    /// per sequence]` (transformers), summed like `tokens`; `None` for flat indices (vLLM), where any call
    /// had flat ones, or without `tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequences: Option<u64>,
    /// Forward passes: the calls of the token embedding summed into `tokens` (0, as in summaries stored
    /// before it was kept, reads as 1).
    #[serde(default, skip_serializing_if = "at_most_one")]
    pub forward_passes: u32,
    /// Start of the step's annotation, ns on the trace's clock (the ranks of a job on one host share it).
    #[serde(default)]
    pub start: i64,
    /// Union of GPU activity intervals, ns.
    pub gpu_busy: i64,
    /// Sum of GPU activity durations, ns.
    pub gpu_time: i64,
    /// From the first start to the last end of the step's events, ns.
    pub wall_span: i64,
    /// Number of kernels (copies and sets excluded).
    pub kernel_count: u64,
    /// GPU time per detailed category, ns, in [`Detail::ALL`] order.
    pub detail: [i64; 7],
    /// GPU activities per detailed category.
    pub detail_activities: [u32; 7],
    /// Linear ops per detailed category.
    pub linear_ops: [u32; 7],
    /// Decoder layers found.
    pub layers: u32,
    /// Op table of the step.
    pub ops: Vec<OpRow>,
    /// Kernels of the step.
    pub kernels: Vec<KernelRow>,
    /// Distinct launch configurations.
    pub configs: Vec<LaunchConfig>,
    /// The ops the `others` category's GPU time was attributed to (what `others` holds, by op).
    #[serde(default)]
    pub others_ops: Vec<UnitRow>,
    /// GPU activities replayed by CUDA graphs: not attributed to the ops that captured them (they count
    /// under the op around the graph launch, usually `others`).
    #[serde(default)]
    pub graph_activities: u32,
    /// Their summed duration, ns.
    #[serde(default)]
    pub graph_time: i64,
    /// Replayed activities mapped exactly onto an eager reference step's (see `classify::graphs`).
    #[serde(default)]
    pub graph_exact: u32,
    /// Replayed activities mapped by the gap rule.
    #[serde(default)]
    pub graph_inferred: u32,
    /// Replayed activities not mapped (in `others`, under the op `(graph replay, unattributed)`), or all
    /// of them when no reference step was found.
    #[serde(default)]
    pub graph_unattributed: u32,
    /// Their summed duration, ns.
    #[serde(default)]
    pub graph_unattributed_time: i64,
    /// The reference step used: `step N of this trace`, or the reference file; empty when none.
    #[serde(default)]
    pub graph_reference: String,
    /// This step is the eager reference the driver recorded for the graph steps of its window: it is
    /// reported apart and not counted in the series' statistics.
    #[serde(default)]
    pub reference: bool,
    /// GPU activities of collective communication (all-reduce, all-gather, ...: their kernels and the
    /// copies their ops make), part of `others`.
    #[serde(default)]
    pub collective_activities: u32,
    /// Their summed duration, ns (wait for the other ranks included).
    #[serde(default)]
    pub collective_time: i64,
    /// Start and end (ns, trace clock) of each collective kernel (copies left out: they do not wait), in
    /// start order: merged across the ranks of a tensor-parallel job to split waiting from transfer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collectives: Vec<[i64; 2]>,
    /// FLOPs and bytes of the step's op calls that have a FLOP model (see [`crate::roofline`]).
    #[serde(default)]
    pub work: crate::roofline::StepWork,
}

/// A launch configuration by ids and float bits: (name, grid, block, registers, [blocks/SM, warps/SM,
/// occupancy], category).
type ConfigKey = (u32, [u32; 3], [u32; 3], u32, [u32; 3], Detail);

/// Summary of one trace file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// GPU name from `deviceProperties`, empty when the trace has none.
    pub gpu: String,
    /// Decompressed bytes.
    pub bytes: u64,
    /// Elements of `traceEvents`.
    pub events: u64,
    /// Steps in time order.
    pub steps: Vec<StepSummary>,
    /// The process's rank in its distributed job (`distributedInfo.rank`), when the trace says.
    #[serde(default)]
    pub rank: Option<u32>,
    /// The job's world size (`distributedInfo.world_size`).
    #[serde(default)]
    pub world_size: Option<u32>,
    /// Events not counted, and why (empty for nearly every trace).
    #[serde(default, skip_serializing_if = "LeftOut::is_empty")]
    pub left_out: LeftOut,
}

/// What tells one recording of a trace from another, whatever file holds it: a copy, the same JSON
/// compressed another way or written again, a hard link ([`TraceSummary::recording`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recording {
    gpu: String,
    rank: Option<u32>,
    events: u64,
    /// Per step: start (ns, trace clock), GPU time (ns), span (ns), kernels.
    steps: Vec<(i64, i64, i64, u64)>,
}

impl TraceSummary {
    /// The trace's recording: its GPU, rank and event count, and each step's start, GPU time, span and
    /// kernel count, to the nanosecond. Two profiled runs do not share all of these (step starts are
    /// times on the host's clock); two files of one recording always do. `None` for a trace without a
    /// step that ran on the GPU, where the times would not tell two recordings apart.
    pub fn recording(&self) -> Option<Recording> {
        if !self.steps.iter().any(|s| s.kernel_count > 0 || s.gpu_time > 0) {
            return None;
        }
        Some(Recording {
            gpu: self.gpu.clone(),
            rank: self.rank,
            events: self.events,
            steps: self.steps.iter().map(|s| (s.start, s.gpu_time, s.wall_span, s.kernel_count)).collect(),
        })
    }
}

impl StepSummary {
    /// Whether the step had any GPU activity (a kernel, copy or set, or GPU time).
    pub fn has_gpu_activity(&self) -> bool {
        self.gpu_time > 0 || self.detail_activities.iter().any(|&n| n > 0)
    }

    /// The batch shape vLLM wrote into the step's annotation (or one inside it).
    pub fn vllm_shape(&self) -> Option<VllmStepShape> {
        self.vllm.map(VllmStepShape::from_tuple)
    }

    /// What the step fed to the model; `None` without recorded shapes or an embedding call.
    pub fn fed(&self) -> Option<Fed> {
        self.tokens.map(|tokens| Fed { tokens, sequences: self.sequences, passes: self.forward_passes.max(1) })
    }
}

/// Serde's test for a count of forward passes not worth writing: 1, or 0 (unknown, read as 1).
pub(crate) fn at_most_one(n: &u32) -> bool {
    *n <= 1
}

/// What a step fed to the model: its token embedding's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fed {
    /// Indices looked up, tokens.
    pub tokens: u64,
    /// Sequences, where the indices were `[sequences, tokens per sequence]` (transformers); `None` for
    /// flat indices (vLLM's batches), which do not say how many sequences the tokens belong to.
    pub sequences: Option<u64>,
    /// Forward passes: how many times the step called its token embedding (a step of a controlled batch
    /// is one; `tokens` and `sequences` are summed over them).
    pub passes: u32,
}

impl Fed {
    /// One forward pass over flat indices: `tokens` tokens of sequences unknown.
    pub fn tokens(tokens: u64) -> Self {
        Fed { tokens, sequences: None, passes: 1 }
    }

    /// One forward pass over `[sequences, per]` indices.
    pub fn batch(sequences: u64, per: u64) -> Self {
        Fed { tokens: sequences.saturating_mul(per), sequences: Some(sequences), passes: 1 }
    }
}

/// Reads and summarizes one trace file.
pub fn summarize_file(path: &Path, opts: &AnalyzeOptions) -> Result<TraceSummary, TraceError> {
    let trace = crate::trace::parallel::open(path, &opts.limits, opts.parse_jobs)?;
    summarize_checked(&trace, path, opts)
}

/// Reads and summarizes a trace from any byte source (plain, gzip or zstd, detected as for a file), such
/// as an upload's verified chunks as they arrive; `name` is used in errors, as the path is by
/// [`summarize_file`], so both give the same summary and the same refusal for the same bytes.
pub fn summarize_reader<R: std::io::Read + 'static>(
    source: R,
    name: &Path,
    opts: &AnalyzeOptions,
) -> Result<TraceSummary, TraceError> {
    let mut reader = TraceReader::from_reader(source, name, opts.limits)?;
    let trace = Trace::read(&mut reader, &opts.limits)?;
    summarize_checked(&trace, name, opts)
}

/// Summarizes a parsed trace, refusing it when step patterns were required and none matches.
fn summarize_checked(trace: &Trace, name: &Path, opts: &AnalyzeOptions) -> Result<TraceSummary, TraceError> {
    if opts.require_step_match {
        let annotation = |e: &&crate::trace::Event| matches!(e.cat, Category::UserAnnotation | Category::CpuOp);
        let step_name = crate::trace::steps::names_matching(trace, &opts.step_patterns);
        if !trace.events.iter().filter(annotation).any(|e| step_name[e.name as usize]) {
            let mut seen: Vec<&str> =
                trace.events.iter().filter(|e| e.cat == Category::UserAnnotation).map(|e| trace.name(e.name)).collect();
            seen.sort_unstable();
            seen.dedup();
            let seen = if seen.is_empty() {
                "none".to_string()
            } else {
                seen.into_iter().take(5).collect::<Vec<_>>().join(", ")
            };
            return Err(TraceError::NoSteps {
                file: name.to_path_buf(),
                patterns: opts.step_patterns.sources().join(", "),
                seen,
            });
        }
    }
    Ok(summarize(trace, opts))
}

/// The eager steps of a trace (steps with GPU activity and no CUDA-graph replays), as references for
/// attributing another trace's graph replays (`--graph-reference`).
///
/// # Errors
/// The file cannot be read or is not a trace; a trace without such steps is [`TraceError::NoSteps`].
pub fn graph_reference_from_file(path: &Path, opts: &AnalyzeOptions) -> Result<GraphReference, TraceError> {
    let t = Trace::open(path, &opts.limits)?;
    graph_reference(&t, path, opts)
}

/// The eager steps of a parsed trace read from `path`, as [`graph_reference_from_file`] gives them.
///
/// # Errors
/// [`TraceError::NoEagerSteps`] when the trace has none.
pub fn graph_reference(t: &Trace, path: &Path, opts: &AnalyzeOptions) -> Result<GraphReference, TraceError> {
    let links = Links::new(t);
    let steps = steps::split(t, &links, &opts.step_patterns);
    let mut replayed = vec![false; steps.steps.len()];
    for &i in &links.graph_replayed {
        if let Some(r) = replayed.get_mut(steps.of_event[i as usize] as usize) {
            *r = true;
        }
    }
    let mut out = GraphReference { source: path.display().to_string(), rank: t.meta.rank, steps: Vec::new() };
    let mut memo = RuleMemo::default();
    for ((step, events), replayed) in steps.steps.iter().zip(steps.events_by_step()).zip(replayed) {
        let cls = classify_step_with(t, &links, &events, &opts.rules, &mut memo);
        if !replayed && !cls.activities.is_empty() {
            out.steps.push(ReferenceStep::new(t, &cls, &step.name, shape_tuple(step.vllm)));
        }
    }
    if out.steps.is_empty() {
        return Err(TraceError::NoEagerSteps { file: path.to_path_buf() });
    }
    Ok(out)
}

fn shape_tuple(s: Option<steps::VllmStepShape>) -> Option<(u32, u32, u32, u32)> {
    s.map(|s| (s.context_requests, s.context_tokens, s.generation_requests, s.generation_tokens))
}

/// One GPU activity of a step as the tables count it.
struct Counted<'a> {
    event: u32,
    detail: Detail,
    /// The op it is attributed to.
    op: OpName<'a>,
    collective: bool,
}

/// The op an activity is attributed to: an op of the trace (by name id; [`NONE`] for none), or a name
/// from elsewhere (a reference step's op).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum OpName<'a> {
    Id(u32),
    Ref(&'a str),
}

impl<'a> OpName<'a> {
    fn resolve(self, t: &'a Trace) -> &'a str {
        match self {
            OpName::Id(NONE) => "",
            OpName::Id(id) => t.name(id),
            OpName::Ref(s) => s,
        }
    }
}

/// Graph-replay attribution results of one step.
#[derive(Default)]
struct GraphOutcome {
    exact: u32,
    inferred: u32,
    unattributed: u32,
    unattributed_time: i64,
    reference: String,
    /// The reference's decoder layers and its activities per category.
    reference_layers: Option<(u32, [u32; 7])>,
}

/// Summarizes a parsed trace.
pub fn summarize(t: &Trace, opts: &AnalyzeOptions) -> TraceSummary {
    // Linking and the per-event times run on `parse_jobs` threads for large traces (the same results
    // whatever the number: `tests/tests/parallel_link.rs`); the per-step classification stays on one.
    let links = Links::with_jobs(t, opts.parse_jobs);
    let steps = steps::split(t, &links, &opts.step_patterns);
    let times = event_times_with_jobs_min(t, &links, opts.parse_jobs, crate::trace::link::PARALLEL_MIN_EVENTS);
    let mut out = TraceSummary {
        gpu: t.gpu_name().unwrap_or_default().to_string(),
        bytes: t.meta.bytes,
        events: t.meta.event_count,
        steps: Vec::new(),
        rank: t.meta.rank,
        world_size: t.meta.world_size,
        left_out: t.left_out.clone(),
    };
    let by_step = steps.events_by_step();
    let fed = fed_per_step(t, &steps);
    let outer = crate::roofline::outermost_modelled(t, &links);
    // GPU activities replayed by CUDA graphs, per step: (count, summed ns).
    let mut graph_by_step = vec![(0u32, 0i64); steps.steps.len()];
    let mut replayed = vec![false; if links.graph_replayed.is_empty() { 0 } else { t.events.len() }];
    for &i in &links.graph_replayed {
        replayed[i as usize] = true;
        if let Some(g) = graph_by_step.get_mut(steps.of_event[i as usize] as usize) {
            g.0 += 1;
            g.1 += t.events[i as usize].dur;
        }
    }
    // Eager steps of this trace that can serve as references for its graph steps (only in traces with
    // replays): the driver's marked reference step first. Their classification is kept for the loop below;
    // without replays each step is classified there, one at a time.
    let mut local_refs: Vec<(usize, ReferenceStep)> = Vec::new();
    let mut classified: Vec<Option<Classified>> = Vec::new();
    let mut memo = RuleMemo::default();
    if !links.graph_replayed.is_empty() {
        for (si, (step, events)) in steps.steps.iter().zip(&by_step).enumerate() {
            let cls = classify_step_with(t, &links, events, &opts.rules, &mut memo);
            if graph_by_step[si].0 == 0 && !cls.activities.is_empty() {
                local_refs.push((si, ReferenceStep::new(t, &cls, &step.name, shape_tuple(step.vllm))));
            }
            classified.push(Some(cls));
        }
        local_refs.sort_by_key(|(si, _)| (!steps.steps[*si].reference, *si));
    }
    for (si, (step, events)) in steps.steps.iter().zip(&by_step).enumerate() {
        let cls = match classified.get_mut(si).and_then(Option::take) {
            Some(c) => c,
            None => classify_step_with(t, &links, events, &opts.rules, &mut memo),
        };
        let cls = &cls;
        let (graph_activities, graph_time) = graph_by_step.get(si).copied().unwrap_or_default();
        let mut counted: Vec<Counted<'_>> = cls
            .activities
            .iter()
            .map(|a| Counted {
                event: a.event,
                detail: a.detail,
                op: if a.unit == NONE { OpName::Id(NONE) } else { OpName::Id(t.events[a.unit as usize].name) },
                collective: a.collective,
            })
            .collect();
        let mut linear_ops = cls.linear_ops;
        let mut layers = cls.layers;
        let mut graph = GraphOutcome::default();
        if graph_activities > 0 {
            let shape = shape_tuple(step.vllm);
            let same = |r: &ReferenceStep| if shape.is_some() { r.shape == shape } else { r.name == step.name };
            let reference = local_refs
                .iter()
                .find(|(_, r)| same(r))
                .map(|(rsi, r)| (r, format!("step {rsi} of this trace")))
                .or_else(|| {
                    // Another rank's reference step ran other kernels (its shard): only the same rank's.
                    let g = opts.graph_reference.as_deref().filter(|g| g.rank.is_none() || g.rank == t.meta.rank)?;
                    g.find(&step.name, shape).map(|r| (r, g.source.clone()))
                });
            match reference {
                Some((r, source)) => {
                    graph.reference = source;
                    for detail in attribute_replays(t, &replayed, &mut counted, r, &mut graph).into_values() {
                        linear_ops[detail.index()] += 1;
                    }
                    let mut per_detail = [0u32; 7];
                    for a in &r.activities {
                        per_detail[a.detail.index()] += 1;
                    }
                    graph.reference_layers = Some((r.layers, per_detail));
                }
                None => {
                    graph.unattributed = graph_activities;
                    graph.unattributed_time = graph_time;
                }
            }
        }
        let mut detail = [0i64; 7];
        let mut detail_activities = [0u32; 7];
        let mut kernels: BTreeMap<(u32, Detail, bool), (u64, i64)> = BTreeMap::new();
        // Distinct launch configurations, deduplicated on ids and bits before any string is made.
        let mut config_keys: rustc_hash::FxHashSet<ConfigKey> = Default::default();
        let mut intervals: Vec<(i64, i64)> = Vec::new();
        let mut collectives: Vec<[i64; 2]> = Vec::new();
        let mut collective_time = 0;
        let mut collective_activities = 0;
        let mut kernel_count = 0;
        // By name id (no string compared per activity), names resolved once at the end.
        let mut others_ops: rustc_hash::FxHashMap<OpName<'_>, (u32, i64)> = Default::default();
        for c in &counted {
            let e = &t.events[c.event as usize];
            let d = c.detail;
            if d == Detail::Others {
                let o = others_ops.entry(c.op).or_default();
                o.0 += 1;
                o.1 += e.dur;
            }
            if c.collective {
                collective_activities += 1;
                collective_time += e.dur;
                // Kernels only: a rank waits for the others inside the collective's kernel; the copies
                // around it (vLLM's custom all-reduce copies its input into the shared buffer) do not wait.
                if e.cat == Category::Kernel {
                    collectives.push([e.ts, e.end()]);
                }
            }
            let pos = d.index();
            detail[pos] += e.dur;
            detail_activities[pos] += 1;
            let k = kernels.entry((e.name, d, c.collective)).or_default();
            k.0 += 1;
            k.1 += e.dur;
            intervals.push((e.ts, e.end()));
            if e.cat == Category::Kernel {
                kernel_count += 1;
            }
            if e.kernel != NONE {
                let ka = &t.kernels[e.kernel as usize];
                let floats = [ka.blocks_per_sm.to_bits(), ka.warps_per_sm.to_bits(), ka.occupancy_pct.to_bits()];
                config_keys.insert((e.name, ka.grid, ka.block, ka.registers_per_thread, floats, d));
            }
        }
        collectives.sort_unstable();
        // The reference's layers are the step's when every activity of the layers' categories found its
        // counterpart (the same count in each of them).
        if let Some((ref_layers, per_detail)) = graph.reference_layers
            && Detail::ALL
                .iter()
                .filter(|&&d| d != Detail::Others)
                .all(|d| per_detail[d.index()] == detail_activities[d.index()])
        {
            layers = layers.max(ref_layers);
        }
        let configs: BTreeSet<LaunchConfig> = config_keys
            .into_iter()
            .map(|(name, grid, block, registers_per_thread, [bps, wps, occ], d)| LaunchConfig {
                kernel: t.name(name).to_string(),
                grid,
                block,
                blocks_per_sm: fmt_f32(f32::from_bits(bps)),
                warps_per_sm: fmt_f32(f32::from_bits(wps)),
                registers_per_thread,
                occupancy: fmt_f32(f32::from_bits(occ)),
                op_type: d.name().to_string(),
            })
            .collect();
        let gpu_time = detail.iter().sum();
        let gpu_busy = union_length(&mut intervals);
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for &i in events {
            let e = &t.events[i as usize];
            if e.cat.is_host() || e.cat.is_gpu_activity() {
                first = first.min(e.ts);
                last = last.max(e.end());
            }
        }
        let rows = totals(t, &times, events.iter().map(|&i| i as usize));
        let activities: Vec<(u32, Detail)> = counted.iter().map(|c| (c.event, c.detail)).collect();
        let work = crate::roofline::step_work(t, &links, &times, &outer, events, &activities);
        let mut ops: Vec<OpRow> = rows
            .iter()
            .map(|(&(name, device), r): (&(u32, bool), &KeyTotals)| OpRow {
                name: t.name(name).to_string(),
                device,
                count: r.count,
                cpu: r.cpu,
                self_cpu: r.self_cpu,
                device_time: r.device,
                self_device: r.self_device,
            })
            .collect();
        ops.sort_by(|a, b| (&a.name, a.device).cmp(&(&b.name, b.device)));
        out.steps.push(StepSummary {
            index: si as u32,
            name: step.name.clone(),
            vllm: shape_tuple(step.vllm),
            tokens: fed[si].map(|f| f.tokens),
            sequences: fed[si].and_then(|f| f.sequences),
            forward_passes: fed[si].map_or(0, |f| f.passes),
            start: step.start,
            gpu_busy,
            gpu_time,
            wall_span: if first <= last { last - first } else { 0 },
            kernel_count,
            detail,
            detail_activities,
            linear_ops,
            layers,
            ops,
            kernels: kernels
                .into_iter()
                .map(|((name, category, collective), (calls, total))| KernelRow {
                    name: t.name(name).to_string(),
                    category,
                    calls,
                    total,
                    collective,
                })
                .collect(),
            configs: configs.into_iter().collect(),
            others_ops: {
                // One row per name: an op of this trace and a reference step's op can share one.
                let mut by_name: BTreeMap<&str, (u32, i64)> = BTreeMap::new();
                for (op, (activities, total)) in others_ops {
                    let row = by_name.entry(op.resolve(t)).or_default();
                    row.0 += activities;
                    row.1 += total;
                }
                by_name
                    .into_iter()
                    .map(|(op, (activities, total))| UnitRow { op: op.to_string(), activities, total })
                    .collect()
            },
            graph_activities,
            graph_time,
            graph_exact: graph.exact,
            graph_inferred: graph.inferred,
            graph_unattributed: graph.unattributed,
            graph_unattributed_time: graph.unattributed_time,
            graph_reference: graph.reference,
            reference: step.reference,
            collective_activities,
            collective_time,
            collectives,
            work,
        });
    }
    out
}

/// Per step, what it fed to the model: the indices its token embedding looked up, summed over every
/// call of it in the step (one per forward pass), and their sequences where every call's indices were
/// `[sequences, tokens]`. The token embedding is the step's embedding table with the most rows (a
/// vocabulary of tens of thousands of rows, where a vision tower's position embedding has hundreds).
/// Summed, not the first call's: a step that holds several forward passes (steps whose annotations the
/// step pattern did not match fold into a neighbour) fed all of them, and must not pass the batch check
/// as one. One pass over the trace's lookups.
fn fed_per_step(t: &Trace, steps: &steps::Steps) -> Vec<Option<Fed>> {
    // Per step: the table's rows and what its calls fed so far.
    let mut acc: Vec<Option<(u64, Fed)>> = vec![None; steps.steps.len()];
    for l in &t.lookups {
        let Some(a) = acc.get_mut(steps.of_event[l.event as usize] as usize) else { continue };
        match a {
            Some((rows, fed)) if *rows == l.rows => {
                fed.tokens = fed.tokens.saturating_add(l.indices);
                fed.sequences = fed.sequences.zip(l.sequences).map(|(s, n)| s.saturating_add(n));
                fed.passes = fed.passes.saturating_add(1);
            }
            Some((rows, _)) if *rows > l.rows => {}
            _ => *a = Some((l.rows, Fed { tokens: l.indices, sequences: l.sequences, passes: 1 })),
        }
    }
    acc.into_iter().map(|a| a.map(|(_, fed)| fed)).collect()
}

/// Gives the replayed activities among `counted` the op and category of the reference activities they map
/// to (see `classify::graphs`); unmapped ones go to `others` under [`UNATTRIBUTED_OP`]. Returns the
/// distinct linear reference units mapped, with their category (for the step's linear-op counts).
fn attribute_replays<'a>(
    t: &Trace,
    replayed: &[bool],
    counted: &mut [Counted<'a>],
    r: &'a ReferenceStep,
    outcome: &mut GraphOutcome,
) -> BTreeMap<u32, Detail> {
    let mut order: Vec<usize> = (0..counted.len()).collect();
    order.sort_by_key(|&k| (t.events[counted[k].event as usize].ts, counted[k].event));
    let seq: Vec<(&str, bool)> = order
        .iter()
        .map(|&k| {
            let e = counted[k].event as usize;
            (t.name(t.events[e].name), replayed.get(e).copied().unwrap_or(false))
        })
        .collect();
    let mut linear_units = BTreeMap::new();
    for (pos, m) in map_replayed(&seq, r).into_iter().enumerate() {
        let c = &mut counted[order[pos]];
        let Some(m) = m else { continue };
        let hit = match m {
            Mapping::Exact(j) => {
                outcome.exact += 1;
                Some(j)
            }
            Mapping::Inferred(j) => {
                outcome.inferred += 1;
                Some(j)
            }
            Mapping::Unattributed => None,
        };
        match hit.map(|j| &r.activities[j]) {
            Some(a) => {
                c.detail = a.detail;
                c.op = OpName::Ref(&a.op);
                c.collective = a.collective;
                if a.linear {
                    linear_units.insert(a.unit, a.detail);
                }
            }
            None => {
                outcome.unattributed += 1;
                outcome.unattributed_time += t.events[c.event as usize].dur;
                c.detail = Detail::Others;
                c.op = OpName::Ref(UNATTRIBUTED_OP);
            }
        }
    }
    linear_units
}

/// Length of the union of intervals.
fn union_length(iv: &mut [(i64, i64)]) -> i64 {
    iv.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(i64, i64)> = None;
    for &(s, e) in iv.iter() {
        cur = match cur {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs;
    }
    total
}

/// Formats a CUPTI float the way Kineto prints it (up to 6 decimals, no trailing zeros).
fn fmt_f32(v: f32) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" { "0".to_string() } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(events: &str) -> TraceSummary {
        let text = format!("{{\"traceEvents\":[{events}]}}").into_bytes();
        summarize_reader(std::io::Cursor::new(text), Path::new("t.json"), &AnalyzeOptions::default()).expect("summary")
    }

    fn embedding(ts: u32, weight: &str, indices: &str) -> String {
        format!(
            r#"{{"ph":"X","cat":"cpu_op","name":"aten::embedding","pid":1,"tid":1,"ts":{ts},"dur":5,
                "args":{{"External id":{ts},"Input Dims":[{weight},{indices},[],[],[]],
                "Input type":["c10::BFloat16","long int","Scalar","Scalar","Scalar"]}}}}"#
        )
    }

    #[test]
    fn a_steps_tokens_are_those_of_its_largest_embedding_table() {
        // A vision tower's position embedding (577 rows) runs before the language model's token embedding
        // (a vocabulary of 32000): the step fed 4 × 128 tokens to the model, not 577.
        let s =
            summary(&[embedding(10, "[577, 1024]", "[1, 577]"), embedding(20, "[32000, 4096]", "[4, 128]")].join(","));
        assert_eq!(s.steps.iter().map(|s| s.fed()).collect::<Vec<_>>(), [Some(Fed::batch(4, 128))]);
        // A step that holds two forward passes (8 decodes each) fed 16 tokens, not the first pass's 8: it
        // must not pass for a step of batch 8. Sequences are summed while every call has them.
        let s = summary(&[embedding(20, "[32000, 64]", "[8, 1]"), embedding(10, "[32000, 64]", "[8, 1]")].join(","));
        assert_eq!(s.steps[0].fed(), Some(Fed { tokens: 16, sequences: Some(16), passes: 2 }));
        let s = summary(&[embedding(20, "[32000, 64]", "[8]"), embedding(10, "[32000, 64]", "[8, 1]")].join(","));
        assert_eq!(s.steps[0].fed(), Some(Fed { tokens: 16, sequences: None, passes: 2 }));
        // Indices of no size, or none, say nothing.
        // vLLM's flat batches do not say their sequences.
        let s = summary(&embedding(10, "[32000, 64]", "[24]"));
        assert_eq!(s.steps[0].fed(), Some(Fed::tokens(24)));
        let s = summary(&[embedding(10, "[32000, 64]", "[0]"), embedding(20, "[32000, 64]", "[]")].join(","));
        assert_eq!(s.steps[0].tokens, None);
    }
}
