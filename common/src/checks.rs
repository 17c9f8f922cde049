//! What a reader of the tables must be told about them: steps whose batch is not the one their series
//! says, steps the classification could not explain (`others` holding most of the GPU time while
//! attention or linear is empty), kernels replayed by CUDA graphs (not attributed to ops), and what the
//! `others` category holds.
//!
//! `coord ingest` prints the warnings; a sweep's `manifest.json` lists them with the `others` listing,
//! and `coord sweep` prints them with its summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::aggregate::{Aggregate, SeriesKey};
use crate::classify::{Coarse, Detail};

/// The name listed for `others` time that no op launched (e.g. Triton kernels of vLLM's sampler launched
/// outside any op).
pub const NO_OP: &str = "(no launching op)";

/// A step is "explained badly" when `others` holds more than this share of its GPU time while attention
/// or linear is empty.
pub const OTHERS_SHARE: f64 = 0.5;

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// vLLM's step annotation says another batch than the series' (not controlled batching).
    BatchMismatch,
    /// `others` holds more than half of the GPU time while attention or linear is 0.
    OthersDominant,
    /// Kernels replayed by CUDA graphs are not attributed to the ops that captured them (no eager
    /// reference step, or some did not map onto it).
    GraphReplays,
    /// The ranks of a tensor-parallel job could not be merged, or their collectives not split.
    Ranks,
    /// Steps without any GPU activity, left out of the GPU statistics.
    NoGpuActivity,
}

/// One warning about the steps of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    /// What it is about.
    pub kind: WarningKind,
    /// The series.
    pub series: SeriesKey,
    /// Steps concerned.
    pub steps: u64,
    /// Steps of the series.
    pub of_steps: u64,
    /// One line for people.
    pub message: String,
}

/// One name in a listing: its calls and GPU time per step of the series (steps where it does not occur
/// count as 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NameTime {
    /// Kernel or op name; [`NO_OP`] for activities no op launched.
    pub name: String,
    /// Calls per step.
    pub calls_per_step: f64,
    /// GPU time per step, µs.
    pub us_per_step: f64,
    /// Share of the series' `others` time.
    pub share_of_others: f64,
}

/// What `others` holds in one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OthersListing {
    /// The series.
    pub series: SeriesKey,
    /// Steps.
    pub steps: u64,
    /// GPU time per step, µs.
    pub gpu_us_per_step: f64,
    /// `others` per step, µs.
    pub others_us_per_step: f64,
    /// `others` / GPU time.
    pub others_share: f64,
    /// The kernels with the most `others` time, most first.
    pub top_kernels: Vec<NameTime>,
    /// The ops the most `others` time was attributed to, most first.
    pub top_ops: Vec<NameTime>,
}

/// A series as people read it: `decode batch 32, input 128 (local, NVIDIA H200)`.
pub fn describe(s: &SeriesKey) -> String {
    let input = if s.input_len > 0 { format!(", input {}", s.input_len) } else { String::new() };
    let tp = if s.tp > 1 { format!(", tp {} rank {}", s.tp, s.rank) } else { String::new() };
    format!(
        "{} batch {}{input} ({}, {}{tp})",
        s.mode_label(),
        s.batch_size,
        s.host,
        if s.gpu.is_empty() { "?" } else { &s.gpu }
    )
}

pub use crate::aggregate::batch_mismatch;

/// Every warning, grouped by kind and series.
pub fn warnings(agg: &Aggregate) -> Vec<Warning> {
    // (kind, series) -> (steps concerned, an example, summed time of interest, summed GPU time)
    let mut found: BTreeMap<(WarningKind, SeriesKey), (u64, String, i64, i64)> = BTreeMap::new();
    let mut totals: BTreeMap<SeriesKey, u64> = BTreeMap::new();
    for ((series, trace, index), r) in &agg.steps {
        *totals.entry(series.clone()).or_default() += 1;
        let mut note = |kind: WarningKind, example: String, time: i64| {
            let f = found.entry((kind, series.clone())).or_insert_with(|| (0, example, 0, 0));
            f.0 += 1;
            f.2 += time;
            f.3 += r.gpu_time;
        };
        // A step left out of the series' statistics gets the warning that says why (the same reason as
        // steps.csv's `left_out`), and no other: what its `others` holds is not in the tables.
        if !r.has_gpu_activity() {
            note(WarningKind::NoGpuActivity, format!("{trace} step {index}"), 0);
            continue;
        }
        if let Some(why) = batch_mismatch(series, &r.step_name, r.vllm_shape(), r.fed()) {
            note(WarningKind::BatchMismatch, format!("{trace} step {index}: {why}"), 0);
            continue;
        }
        let coarse =
            |c: Coarse| -> i64 { Detail::ALL.iter().filter(|d| d.coarse() == c).map(|d| r.detail[d.index()]).sum() };
        let others = r.detail[Detail::Others.index()];
        let unattributed = if r.graph_reference.is_empty() { r.graph_activities } else { r.graph_mapped[2] };
        if r.gpu_time > 0
            && others as f64 > OTHERS_SHARE * r.gpu_time as f64
            && (coarse(Coarse::Attention) == 0 || coarse(Coarse::Linear) == 0)
        {
            note(WarningKind::OthersDominant, format!("{trace} step {index}"), others);
        }
        if unattributed > 0 {
            let time = if r.graph_reference.is_empty() { r.graph_time } else { r.graph_unattributed_time };
            let example = if r.graph_reference.is_empty() {
                format!(
                    "{trace} step {index}: {unattributed} replayed kernels and no eager reference step of its shape"
                )
            } else {
                format!(
                    "{trace} step {index}: {unattributed} of {} replayed kernels without a counterpart in the eager \
                     reference step",
                    r.graph_activities
                )
            };
            note(WarningKind::GraphReplays, example, time);
        }
    }
    // Series whose `others` may come from unattributed graph replays rather than from the rules.
    let with_replays: std::collections::BTreeSet<SeriesKey> =
        found.keys().filter(|(k, _)| *k == WarningKind::GraphReplays).map(|(_, s)| s.clone()).collect();
    found
        .into_iter()
        .map(|((kind, series), (steps, example, time, gpu))| {
            let of_steps = totals.get(&series).copied().unwrap_or(steps);
            let share = if gpu > 0 { 100.0 * time as f64 / gpu as f64 } else { 0.0 };
            let what = describe(&series);
            let message = match kind {
                WarningKind::BatchMismatch => format!(
                    "{what}: {steps} of {of_steps} steps ran another batch than the series' (e.g. {example}): \
                     left out of the series' statistics (op_times, kernel_dat, kernels, ops, models), listed in \
                     steps.csv with left_out batch_mismatch"
                ),
                WarningKind::OthersDominant if with_replays.contains(&series) => format!(
                    "{what}: in {steps} of {of_steps} steps `others` holds {share:.0}% of the GPU time while \
                     attention or linear is 0 (e.g. {example}): kernels replayed by CUDA graphs are not attributed \
                     (see the graph_replays warning)"
                ),
                WarningKind::OthersDominant => format!(
                    "{what}: in {steps} of {of_steps} steps `others` holds {share:.0}% of the GPU time while \
                     attention or linear is 0 (e.g. {example}): the classification rules do not fit this model \
                     or runtime"
                ),
                WarningKind::NoGpuActivity => format!(
                    "{what}: {steps} of {of_steps} steps have no GPU activity (e.g. {example}): left out of the \
                     GPU statistics (op_times, kernel_dat, kernels, the ops' device times), listed in steps.csv; \
                     was the trace recorded with CUDA activities?"
                ),
                WarningKind::GraphReplays => format!(
                    "{what}: kernels under graph replays: not attributed ({steps} of {of_steps} steps, {share:.0}% \
                     of their GPU time, counted in `others`; e.g. {example}; see docs/analysis.md, CUDA graphs)"
                ),
                // Filled in below, from the rank merge.
                WarningKind::Ranks => String::new(),
            };
            Warning { kind, series, steps, of_steps, message }
        })
        .chain(crate::ranks::merge(agg).problems.into_iter().map(|(series, message)| {
            let of_steps = totals.get(&series).copied().unwrap_or(0);
            Warning { kind: WarningKind::Ranks, series, steps: 0, of_steps, message }
        }))
        .collect()
}

/// What `others` holds, per series: the `top` kernels and ops with the most `others` time.
pub fn others_listing(agg: &Aggregate, top: usize) -> Vec<OthersListing> {
    let mut kernels: BTreeMap<&SeriesKey, Vec<(&str, u64, i128)>> = BTreeMap::new();
    for ((series, name, cat), k) in &agg.kernels {
        if matches!(cat, crate::aggregate::Category::Detail(Detail::Others) | crate::aggregate::Category::Collective) {
            kernels.entry(series).or_default().push((name, k.calls, k.per_step.sum));
        }
    }
    let mut ops: BTreeMap<&SeriesKey, Vec<(&str, u64, i128)>> = BTreeMap::new();
    for ((series, name), k) in &agg.others_ops {
        ops.entry(series).or_default().push((name, k.calls, k.per_step.sum));
    }
    agg.categories
        .iter()
        .map(|(series, cats)| {
            let steps = cats.first().map_or(0, |c| c.count).max(1);
            let per_step = |ns: i128| ns as f64 / 1e3 / steps as f64;
            let gpu: i128 = cats.iter().map(|c| c.sum).sum();
            let others = cats[Detail::Others.index()].sum;
            let list = |rows: Option<&Vec<(&str, u64, i128)>>| -> Vec<NameTime> {
                let mut rows = rows.cloned().unwrap_or_default();
                rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
                rows.into_iter()
                    .take(top)
                    .map(|(name, calls, ns)| NameTime {
                        name: if name.is_empty() { NO_OP.to_string() } else { name.to_string() },
                        calls_per_step: calls as f64 / steps as f64,
                        us_per_step: per_step(ns),
                        share_of_others: if others > 0 { ns as f64 / others as f64 } else { 0.0 },
                    })
                    .collect()
            };
            OthersListing {
                series: series.clone(),
                steps,
                gpu_us_per_step: per_step(gpu),
                others_us_per_step: per_step(others),
                others_share: if gpu > 0 { others as f64 / gpu as f64 } else { 0.0 },
                top_kernels: list(kernels.get(series)),
                top_ops: list(ops.get(series)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::Fed;

    fn series(mode: &str, b: u32, l: u32) -> SeriesKey {
        SeriesKey {
            host: "h".into(),
            gpu: "G".into(),
            mode: mode.parse().ok(),
            batch_size: b,
            input_len: l,
            tp: 1,
            rank: 0,
        }
    }

    #[test]
    fn vllm_annotations_are_checked_against_the_series() {
        let d = series("decode", 32, 128);
        assert_eq!(batch_mismatch(&d, "execute_context_0(0)_generation_32(32)", None, None), None);
        assert_eq!(
            batch_mismatch(&d, "execute_context_1(128)_generation_31(31)", None, None).as_deref(),
            Some("step execute_context_1(128)_generation_31(31) is not 32 decodes")
        );
        let p = series("prefill", 8, 512);
        assert_eq!(batch_mismatch(&p, "execute_context_8(4096)_generation_0(0)", None, None), None);
        assert!(batch_mismatch(&p, "execute_context_8(2048)_generation_0(0)", None, None).is_some());
        // Unknown input length: only the requests are checked; no annotation: nothing to check.
        assert_eq!(
            batch_mismatch(&series("prefill", 8, 0), "execute_context_8(4096)_generation_0(0)", None, None),
            None
        );
        assert_eq!(batch_mismatch(&d, "ProfilerStep#3", None, None), None);
        // An annotation wins over the tokens (a CUDA-graph batch is padded: 32 decodes fed as 40 tokens).
        assert_eq!(batch_mismatch(&d, "execute_context_0(0)_generation_32(32)", None, Some(Fed::tokens(40))), None);
    }

    #[test]
    fn an_annotation_inside_the_step_is_checked_as_its_own() {
        // vLLM's step inside torch's ProfilerStep#4 (case C13): 1 decode, though its embedding looked up 8.
        let shape = Some(crate::trace::steps::VllmStepShape {
            context_requests: 0,
            context_tokens: 0,
            generation_requests: 1,
            generation_tokens: 1,
        });
        assert_eq!(batch_mismatch(&series("decode", 1, 0), "ProfilerStep#4", shape, Some(Fed::tokens(8))), None);
        assert_eq!(
            batch_mismatch(&series("decode", 8, 0), "ProfilerStep#4", shape, Some(Fed::tokens(8))).as_deref(),
            Some("step ProfilerStep#4 (vLLM's step inside it: 0 prefills, 1 decodes) is not 8 decodes")
        );
    }

    #[test]
    fn left_out_steps_are_named_as_the_warnings_that_report_them() {
        use crate::aggregate::StepLeftOut;
        for (l, k) in [
            (StepLeftOut::NoGpuActivity, WarningKind::NoGpuActivity),
            (StepLeftOut::BatchMismatch, WarningKind::BatchMismatch),
            (StepLeftOut::Ranks, WarningKind::Ranks),
        ] {
            assert_eq!(serde_json::to_value(k).ok(), Some(serde_json::Value::from(l.name())));
        }
    }

    #[test]
    fn without_an_annotation_the_tokens_fed_to_the_model_are_checked() {
        let d = series("decode", 8, 0);
        assert_eq!(batch_mismatch(&d, "", None, Some(Fed::tokens(8))), None);
        // The original experiment's logs_8 holds the prompts' prefills (32 tokens each) and the decodes
        // while the batch fills up.
        assert_eq!(
            batch_mismatch(&d, "", None, Some(Fed::tokens(32))).as_deref(),
            Some("the step fed 32 tokens to the model (its embedding's input), not the 8 of 8 decodes")
        );
        assert!(
            batch_mismatch(&d, "ProfilerStep#3", None, Some(Fed::tokens(5)))
                .is_some_and(|w| w.starts_with("step ProfilerStep#3 fed 5"))
        );
        assert_eq!(batch_mismatch(&d, "", None, None), None);
        let p = series("prefill", 4, 128);
        assert_eq!(batch_mismatch(&p, "", None, Some(Fed::tokens(512))), None);
        assert!(batch_mismatch(&p, "", None, Some(Fed::tokens(128))).is_some());
        // Prefill of an unknown input length: any count of at least one token per prompt.
        assert_eq!(batch_mismatch(&series("prefill", 4, 0), "", None, Some(Fed::tokens(128))), None);
        assert_eq!(
            batch_mismatch(&series("prefill", 4, 0), "", None, Some(Fed::tokens(3))).as_deref(),
            Some("the step fed 3 tokens to the model (its embedding's input): fewer than the 4 sequences of its batch")
        );
        // A series of no known mode: a decode or a prefill of the batch, at least one token per sequence.
        let mut u = series("decode", 8, 0);
        u.mode = None;
        assert_eq!(batch_mismatch(&u, "", None, Some(Fed::tokens(32))), None);
        assert_eq!(batch_mismatch(&u, "", None, Some(Fed::tokens(8))), None);
        assert!(
            batch_mismatch(&u, "", None, Some(Fed::tokens(7)))
                .is_some_and(|w| w.contains("fewer than the 8 sequences"))
        );
        // Indices of [sequences, tokens] (transformers) say the sequences, whatever the mode: a prefill of one
        // 128-token prompt in logs_128 feeds as many tokens as 128 decodes, but one sequence.
        let two_d = |sequences: u64, per: u64| Some(Fed::batch(sequences, per));
        assert_eq!(batch_mismatch(&series("decode", 128, 0), "", None, two_d(128, 1)), None);
        assert_eq!(
            batch_mismatch(&series("decode", 128, 0), "", None, two_d(1, 128)).as_deref(),
            Some(
                "the step fed the model 1 × 128 tokens (its embedding's input: 1 sequence), not the 128 sequences of its batch"
            )
        );
        assert!(batch_mismatch(&u, "", None, two_d(1, 128)).is_some());
        assert_eq!(batch_mismatch(&series("prefill", 4, 0), "", None, two_d(4, 128)), None);
        // Two forward passes of 8 decodes in one step feed 16 tokens of 16 sequences: not a step of 16
        // decodes, whatever the counts say.
        let two_passes = Some(Fed { tokens: 16, sequences: Some(16), passes: 2 });
        assert_eq!(
            batch_mismatch(&series("decode", 16, 0), "s", None, two_passes).as_deref(),
            Some(
                "step s holds 2 forward passes of the model (2 calls of its token embedding, 16 tokens in all), not \
                 one (steps outside every step annotation, or whose annotation the step pattern does not match, fold \
                 into the step beside them)"
            )
        );
        assert!(batch_mismatch(&u, "", None, two_passes).is_some());
    }
}
