//! The merged statistics of many traces: per series (host, GPU, mode, batch size, input length) and name.
//!
//! Adding trace summaries in any order, or merging partial aggregates in any order, gives the same
//! aggregate: all maps are ordered and all statistics are exact integers or order-independent sketches.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::classify::Detail;
use crate::roofline::{DType, WorkSums};
use crate::stats::Summary;
use crate::summary::{Fed, LaunchConfig, StepSummary};
use crate::sweep::Mode;
use crate::telemetry::StepTelemetry;
use crate::trace::steps::{VllmStepShape, parse_vllm_step};

/// Which series a step belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Host the trace was recorded on.
    pub host: String,
    /// GPU name.
    pub gpu: String,
    /// Decode or prefill; `None` when neither the path, the step names nor the user said (written
    /// `unknown`).
    #[serde(with = "mode_label")]
    pub mode: Option<Mode>,
    /// Sequences per forward step.
    pub batch_size: u32,
    /// Prompt length in tokens (0 when unknown).
    pub input_len: u32,
    /// Tensor-parallel size of the job (1: none). A job of `tp` ranks writes one trace per rank.
    #[serde(default = "one")]
    pub tp: u32,
    /// The trace's rank within the job (0 without tensor parallelism).
    #[serde(default)]
    pub rank: u32,
}

fn one() -> u32 {
    1
}

/// One step row (`steps.csv`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRow {
    /// Step name (annotation), empty for one-step files.
    pub step_name: String,
    /// Union of GPU activity intervals, ns.
    pub gpu_busy: i64,
    /// Sum of GPU activity durations, ns.
    pub gpu_time: i64,
    /// Wall span, ns.
    pub wall_span: i64,
    /// Kernels.
    pub kernel_count: u64,
    /// GPU time per detailed category, ns.
    pub detail: [i64; 7],
    /// GPU activities (kernels, copies, sets) per detailed category.
    pub detail_activities: [u32; 7],
    /// Decoder layers found in the step.
    pub layers: u32,
    /// GPU activities replayed by CUDA graphs (not attributed to the ops that captured them).
    #[serde(default)]
    pub graph_activities: u32,
    /// Their summed duration, ns.
    #[serde(default)]
    pub graph_time: i64,
    /// Replayed activities mapped exactly / by the gap rule / not at all (see `classify::graphs`).
    #[serde(default)]
    pub graph_mapped: [u32; 3],
    /// The reference step the replays were mapped onto (empty: none).
    #[serde(default)]
    pub graph_reference: String,
    /// Duration of the unattributed replayed activities, ns.
    #[serde(default)]
    pub graph_unattributed_time: i64,
    /// Start of the step, ns on the trace's clock.
    #[serde(default)]
    pub start: i64,
    /// Collective GPU activities of the step (see [`StepSummary::collective_activities`]).
    #[serde(default)]
    pub collective_activities: u32,
    /// Their summed duration, ns (part of `others`).
    #[serde(default)]
    pub collective_time: i64,
    /// Start and end of each collective kernel, ns, in start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collectives: Vec<[i64; 2]>,
    /// Tokens the step fed to the model ([`StepSummary::tokens`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Sequences the step fed to the model ([`StepSummary::sequences`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequences: Option<u64>,
    /// Forward passes the step's tokens were fed in ([`StepSummary::forward_passes`]).
    #[serde(default, skip_serializing_if = "crate::summary::at_most_one")]
    pub forward_passes: u32,
    /// The batch shape of a vLLM annotation of the step or inside it ([`StepSummary::vllm`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vllm: Option<(u32, u32, u32, u32)>,
}

/// Why a step is left out of its series' GPU statistics (it stays in `steps.csv`, saying so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepLeftOut {
    /// No kernel, copy or set: a 0 ms step would pull every GPU mean down.
    NoGpuActivity,
    /// It ran another batch than its series' ([`batch_mismatch`]).
    BatchMismatch,
    /// A merged tensor-parallel step whose waiting could not be told from its compute.
    Ranks,
}

impl StepLeftOut {
    /// The name in `steps.csv`'s `left_out` column: the kind of the warning that reports it.
    pub fn name(self) -> &'static str {
        match self {
            StepLeftOut::NoGpuActivity => "no_gpu_activity",
            StepLeftOut::BatchMismatch => "batch_mismatch",
            StepLeftOut::Ranks => "ranks",
        }
    }

    /// Why `row` of `series` is left out of the series' GPU statistics, or `None` when it counts.
    pub fn of(series: &SeriesKey, row: &StepRow) -> Option<Self> {
        if !row.has_gpu_activity() {
            Some(StepLeftOut::NoGpuActivity)
        } else if batch_mismatch(series, &row.step_name, row.vllm_shape(), row.fed()).is_some() {
            Some(StepLeftOut::BatchMismatch)
        } else {
            None
        }
    }
}

impl StepRow {
    /// Whether the step had any GPU activity (see [`StepSummary::has_gpu_activity`]).
    pub fn has_gpu_activity(&self) -> bool {
        self.gpu_time > 0 || self.detail_activities.iter().any(|&n| n > 0)
    }

    /// The batch shape of the step's vLLM annotation ([`StepSummary::vllm_shape`]).
    pub fn vllm_shape(&self) -> Option<VllmStepShape> {
        self.vllm.map(VllmStepShape::from_tuple)
    }

    /// What the step fed to the model ([`StepSummary::fed`]).
    pub fn fed(&self) -> Option<Fed> {
        self.tokens.map(|tokens| Fed { tokens, sequences: self.sequences, passes: self.forward_passes.max(1) })
    }
}

/// Statistics of one op key over steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStats {
    /// Calls over all steps.
    pub calls: u64,
    /// Device time (including children) per step, ns.
    pub device: Summary,
    /// Self device time, ns, summed over steps.
    pub self_device: i128,
    /// CPU time, ns, summed.
    pub cpu: i128,
    /// Self CPU time, ns, summed.
    pub self_cpu: i128,
    /// Modelled FLOPs and bytes of the calls that have a FLOP model, per data type (see
    /// [`crate::roofline`]).
    #[serde(default)]
    pub work: BTreeMap<DType, WorkSums>,
}

/// Statistics of one kernel (name and category) over steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelStats {
    /// Launches over all steps.
    pub calls: u64,
    /// Summed duration per step, ns.
    pub per_step: Summary,
}

/// Merged statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Step rows by (series, trace, step index).
    pub steps: BTreeMap<(SeriesKey, String, u32), StepRow>,
    /// Per-step GPU time of each detailed category.
    pub categories: BTreeMap<SeriesKey, Vec<Summary>>,
    /// Op statistics by (series, name, device side).
    pub ops: BTreeMap<(SeriesKey, String, bool), OpStats>,
    /// Kernel statistics by (series, kernel, category).
    pub kernels: BTreeMap<(SeriesKey, String, Category), KernelStats>,
    /// Distinct launch configurations by series.
    pub configs: BTreeMap<SeriesKey, BTreeSet<LaunchConfig>>,
    /// What the `others` category holds, by (series, op the time was attributed to; empty: no op).
    #[serde(default)]
    pub others_ops: BTreeMap<(SeriesKey, String), KernelStats>,
    /// The GPU's state during each trace's step(s), by (series, trace), when the agent recorded it.
    #[serde(default)]
    pub telemetry: BTreeMap<(SeriesKey, String), StepTelemetry>,
    /// Eager reference steps recorded for CUDA-graph steps (by series, trace, step index): reported beside
    /// the graph steps (`graph_reference.csv`), never counted in the series' statistics.
    #[serde(default)]
    pub references: BTreeMap<(SeriesKey, String, u32), StepRow>,
    /// Modelled work of the outermost modelled op calls by (series, detailed category, data type).
    #[serde(default)]
    pub roofline: BTreeMap<(SeriesKey, Detail, DType), WorkSums>,
    /// Steps with any modelled op call, by series: what `roofline.csv`'s per-step values divide by (a step
    /// replayed from a CUDA graph launches no op and would dilute them).
    #[serde(default)]
    pub roofline_steps: BTreeMap<SeriesKey, u64>,
}

/// Why a step did not run its series' batch, or `None` when it did or nothing says (the step has neither
/// a vLLM annotation nor known tokens, or an annotation in a series of unknown mode).
///
/// vLLM's step annotation (`step_name`, or `shape`: one found inside the step, such as vLLM's step
/// inside torch's `ProfilerStep#N`) says how many requests and tokens the step ran, and is used when
/// there is one. Otherwise `fed`, what the step fed to the model ([`StepSummary::fed`]), says it: its
/// sequences, where the embedding's indices were `[sequences, tokens per sequence]` (transformers), must
/// be the batch size; its tokens must be the batch size for decode (one token per sequence) and batch
/// size × input length for prefill when the series' input length is known; when it is not, or the mode
/// is unknown, at least the batch size (`coord ingest` reads an unknown mode or length from what most of
/// a folder's steps fed first: [`crate::workload::infer`]). That catches the steps a run records around
/// the ones it is about: the original experiment's server wrote every step of its life into `logs_B` (the
/// prompts' prefills, the decodes while the batch filled up and drained), and its parser read only
/// `trace_50.json`. Where the indices are flat (vLLM without its annotation), a prefill of as many tokens
/// as the decode batch size passes for a decode step: nothing then tells the two apart.
pub fn batch_mismatch(
    series: &SeriesKey,
    step_name: &str,
    shape: Option<VllmStepShape>,
    fed: Option<Fed>,
) -> Option<String> {
    let named = parse_vllm_step(step_name);
    let Some(s) = named.or(shape) else {
        return fed_mismatch(series, step_name, fed?);
    };
    let b = series.batch_size;
    let ok = match series.mode? {
        Mode::Decode => s.context_requests == 0 && s.generation_requests == b && s.generation_tokens == b,
        Mode::Prefill => {
            s.generation_requests == 0
                && s.context_requests == b
                && (series.input_len == 0 || u64::from(s.context_tokens) == u64::from(b) * u64::from(series.input_len))
        }
    };
    if ok {
        return None;
    }
    let want = match series.mode {
        Some(Mode::Decode) => format!("{b} decodes"),
        _ if series.input_len > 0 => format!("{b} prefills of {} tokens", series.input_len),
        _ => format!("{b} prefills"),
    };
    let inner = if named.is_none() {
        format!(" (vLLM's step inside it: {} prefills, {} decodes)", s.context_requests, s.generation_requests)
    } else {
        String::new()
    };
    Some(format!("step {step_name}{inner} is not {want}"))
}

/// [`batch_mismatch`] of a step without a vLLM annotation that fed `fed` to the model. Where the mode,
/// or a prefill's prompt length, is unknown, only what no step of B sequences can do is a mismatch: feed
/// another number of sequences, or fewer than B tokens (a decode feeds one per sequence, a prefill at
/// least one per prompt). A step that called its token embedding more than once holds several forward
/// passes, whatever they fed: a step of a controlled batch is one (steps that a step pattern did not match
/// fold into a neighbour).
fn fed_mismatch(series: &SeriesKey, step_name: &str, fed: Fed) -> Option<String> {
    let tokens = fed.tokens;
    let b = u64::from(series.batch_size);
    let step = if step_name.is_empty() { "the step".to_string() } else { format!("step {step_name}") };
    if fed.passes > 1 {
        return Some(format!(
            "{step} holds {} forward passes of the model ({} calls of its token embedding, {tokens} tokens in all), \
             not one (steps outside every step annotation, or whose annotation the step pattern does not match, \
             fold into the step beside them)",
            fed.passes, fed.passes
        ));
    }
    if let Some(n) = fed.sequences.filter(|&n| n != b) {
        return Some(format!(
            "{step} fed the model {n} × {} tokens (its embedding's input: {n} {}), not the {b} sequences of its \
             batch",
            tokens / n.max(1),
            if n == 1 { "sequence" } else { "sequences" }
        ));
    }
    let (want, what) = match series.mode {
        Some(Mode::Decode) => (b, format!("{b} decodes")),
        Some(Mode::Prefill) if series.input_len > 0 => {
            (b * u64::from(series.input_len), format!("{b} prefills of {} tokens", series.input_len))
        }
        Some(Mode::Prefill) | None if tokens < b => {
            return Some(format!(
                "{step} fed {tokens} tokens to the model (its embedding's input): fewer than the {b} sequences of \
                 its batch"
            ));
        }
        Some(Mode::Prefill) | None => return None,
    };
    if tokens == want {
        return None;
    }
    Some(format!("{step} fed {tokens} tokens to the model (its embedding's input), not the {want} of {what}"))
}

impl Aggregate {
    /// Adds one step of trace `trace` to `series`. A step without any GPU activity (a trace recorded
    /// without CUDA activities, or a step that launched nothing) is left out of the GPU statistics
    /// (categories, kernels, the ops' device time and step count): as a 0 ms step it would pull every GPU
    /// mean down. So is a step that ran another batch ([`batch_mismatch`]: its vLLM annotation or the
    /// tokens it fed to the model say so): none of its times are the series', not even its ops' CPU times
    /// ([`StepLeftOut`]). The ops' calls and CPU times of a step without GPU activity still count.
    /// `checks::warnings` reports both.
    ///
    /// An eager reference step ([`StepSummary::reference`]) goes to [`Aggregate::references`] only.
    pub fn add_step(&mut self, series: &SeriesKey, trace: &str, s: &StepSummary) {
        let row = StepRow {
            step_name: s.name.clone(),
            gpu_busy: s.gpu_busy,
            gpu_time: s.gpu_time,
            wall_span: s.wall_span,
            kernel_count: s.kernel_count,
            detail: s.detail,
            detail_activities: s.detail_activities,
            layers: s.layers,
            graph_activities: s.graph_activities,
            graph_time: s.graph_time,
            graph_mapped: [s.graph_exact, s.graph_inferred, s.graph_unattributed],
            graph_reference: s.graph_reference.clone(),
            graph_unattributed_time: s.graph_unattributed_time,
            start: s.start,
            collective_activities: s.collective_activities,
            collective_time: s.collective_time,
            collectives: s.collectives.clone(),
            tokens: s.tokens,
            sequences: s.sequences,
            forward_passes: s.forward_passes,
            vllm: s.vllm,
        };
        let key = (series.clone(), trace.to_string(), s.index);
        if s.reference {
            self.references.insert(key, row);
            return;
        }
        let left_out = StepLeftOut::of(series, &row);
        self.steps.insert(key, row);
        if left_out == Some(StepLeftOut::BatchMismatch) {
            // Not even its CPU times are the series': a prefill's ops in a decode row.
            return;
        }
        if left_out.is_some() {
            for op in &s.ops {
                let o = self.ops.entry((series.clone(), op.name.clone(), op.device)).or_default();
                o.calls += op.count;
                o.cpu += i128::from(op.cpu);
                o.self_cpu += i128::from(op.self_cpu);
            }
            return;
        }
        for o in &s.others_ops {
            let os = self.others_ops.entry((series.clone(), o.op.clone())).or_default();
            os.calls += u64::from(o.activities);
            os.per_step.add(o.total);
        }
        let cats = self.categories.entry(series.clone()).or_insert_with(|| vec![Summary::default(); 7]);
        for d in Detail::ALL {
            cats[d.index()].add(s.detail[d.index()]);
        }
        for op in &s.ops {
            let o = self.ops.entry((series.clone(), op.name.clone(), op.device)).or_default();
            o.calls += op.count;
            o.device.add(op.device_time);
            o.self_device += i128::from(op.self_device);
            o.cpu += i128::from(op.cpu);
            o.self_cpu += i128::from(op.self_cpu);
        }
        for (name, dtype, w) in &s.work.ops {
            // An op call is a host event: its row is the `cpu` side one.
            let o = self.ops.entry((series.clone(), name.clone(), false)).or_default();
            o.work.entry(*dtype).or_default().merge(w);
        }
        for (d, dtype, w) in &s.work.categories {
            self.roofline.entry((series.clone(), *d, *dtype)).or_default().merge(w);
        }
        if !s.work.categories.is_empty() {
            *self.roofline_steps.entry(series.clone()).or_default() += 1;
        }
        for k in &s.kernels {
            let ks = self.kernels.entry((series.clone(), k.name.clone(), Category::of(k))).or_default();
            ks.calls += k.calls;
            ks.per_step.add(k.total);
        }
        self.configs.entry(series.clone()).or_default().extend(s.configs.iter().cloned());
    }

    /// Records the GPU's state while trace `trace` of `series` was recorded.
    pub fn add_telemetry(&mut self, series: &SeriesKey, trace: &str, t: StepTelemetry) {
        self.telemetry.insert((series.clone(), trace.to_string()), t);
    }

    /// Merges another aggregate (from another worker or machine).
    pub fn merge(&mut self, other: &Aggregate) {
        for (k, v) in &other.telemetry {
            self.telemetry.insert(k.clone(), v.clone());
        }
        for (k, v) in &other.steps {
            self.steps.insert(k.clone(), v.clone());
        }
        for (k, v) in &other.references {
            self.references.insert(k.clone(), v.clone());
        }
        for (k, v) in &other.categories {
            let mine = self.categories.entry(k.clone()).or_insert_with(|| vec![Summary::default(); 7]);
            for (a, b) in mine.iter_mut().zip(v) {
                a.merge(b);
            }
        }
        for (k, v) in &other.ops {
            let o = self.ops.entry(k.clone()).or_default();
            o.calls += v.calls;
            o.device.merge(&v.device);
            o.self_device += v.self_device;
            o.cpu += v.cpu;
            o.self_cpu += v.self_cpu;
            for (dt, w) in &v.work {
                o.work.entry(*dt).or_default().merge(w);
            }
        }
        for (k, v) in &other.roofline {
            self.roofline.entry(k.clone()).or_default().merge(v);
        }
        for (k, v) in &other.roofline_steps {
            *self.roofline_steps.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.kernels {
            let ks = self.kernels.entry(k.clone()).or_default();
            ks.calls += v.calls;
            ks.per_step.merge(&v.per_step);
        }
        for (k, v) in &other.configs {
            self.configs.entry(k.clone()).or_default().extend(v.iter().cloned());
        }
        for (k, v) in &other.others_ops {
            let os = self.others_ops.entry(k.clone()).or_default();
            os.calls += v.calls;
            os.per_step.merge(&v.per_step);
        }
    }

    /// The modes present, in order (unknown first).
    pub fn modes(&self) -> BTreeSet<Option<Mode>> {
        self.categories.keys().map(|k| k.mode).collect()
    }
}

/// A kernel's category in the full tables: its detailed category, or `collective` for collective
/// communication kernels (which the seed tables count in `others`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    /// A detailed category.
    Detail(Detail),
    /// A collective (all-reduce, all-gather, ...); coarse `others`.
    Collective,
}

impl Category {
    /// The category of a kernel row.
    pub fn of(k: &crate::summary::KernelRow) -> Self {
        if k.collective { Category::Collective } else { Category::Detail(k.category) }
    }

    /// Name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Category::Detail(d) => d.name(),
            Category::Collective => "collective",
        }
    }

    /// The coarse category (op_times.tsv's column) it is counted in.
    pub fn coarse(self) -> crate::classify::Coarse {
        match self {
            Category::Detail(d) => d.coarse(),
            Category::Collective => crate::classify::Coarse::Others,
        }
    }
}

impl SeriesKey {
    /// This series without its rank: the key the ranks of one tensor-parallel job share.
    pub fn without_rank(&self) -> SeriesKey {
        SeriesKey { rank: 0, ..self.clone() }
    }

    /// The mode as the tables write it: `decode`, `prefill` or `unknown`.
    pub fn mode_label(&self) -> &'static str {
        mode_label::name(self.mode)
    }
}

/// A series' mode in JSON and tables: `decode`, `prefill`, or `unknown` for `None`.
pub mod mode_label {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::sweep::Mode;

    /// The label of `mode`.
    pub fn name(mode: Option<Mode>) -> &'static str {
        mode.map_or("unknown", Mode::name)
    }

    /// Writes the label.
    pub fn serialize<S: Serializer>(mode: &Option<Mode>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*mode))
    }

    /// Reads a label; `unknown` is `None`.
    ///
    /// # Errors
    /// A label that is none of the three.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mode>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "unknown" { Ok(None) } else { s.parse().map(Some).map_err(serde::de::Error::custom) }
    }
}
