//! Which series each step of `coord ingest`'s traces belongs to.
//!
//! A step's batch size, mode and prompt length come from its path (`logs_8`, `decode/`, `in_128`), then
//! vLLM's step annotation, then the command line. Where none of them says the mode, or a prefill's prompt
//! length, the tokens most of the step's folder fed to the model say it ([`workload::infer`]): the
//! original experiment's `logs_B` folders hold, beside the steady decodes of B, the prompts' prefills, and
//! without a mode nothing told them apart. The steps that fed another count are then left out by the batch
//! check (`batch_mismatch`), like those of a folder whose mode was given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tracefleet_common::aggregate::SeriesKey;
use tracefleet_common::layout;
use tracefleet_common::summary::{Fed, StepSummary, TraceSummary};
use tracefleet_common::sweep::Mode;
use tracefleet_common::workload::{self, Inferred};

/// What the command line says of the traces whose paths and annotations do not.
#[derive(Debug, Clone)]
pub(super) struct Given {
    pub host: String,
    pub batch_size: Option<u32>,
    pub mode: Option<Mode>,
    pub input_len: Option<u32>,
}

/// Where a trace is: the tree it was found under (its path's hints count from there) and its path.
#[derive(Debug, Clone, Copy)]
pub(super) struct At<'a> {
    pub root: &'a Path,
    pub path: &'a Path,
}

/// A step's series as its path, annotation and the command line state it, and whether they left its mode
/// or (for prefill) its prompt length unknown with nothing in the step to tell it (no vLLM annotation).
fn stated(given: &Given, at: At<'_>, summary: &TraceSummary, step: &StepSummary) -> anyhow::Result<(SeriesKey, bool)> {
    let hints = layout::hints(at.root, at.path);
    let shape = step.vllm_shape();
    // vLLM's step names say what ran; mode from the path (or flag) picks which count is the batch.
    let mode = hints
        .mode
        .or(given.mode)
        .or_else(|| shape.map(|s| if s.context_requests > 0 { Mode::Prefill } else { Mode::Decode }));
    let prefill = mode == Some(Mode::Prefill);
    let from_shape = shape.map(|s| if prefill { s.context_requests } else { s.generation_requests });
    let batch_size = hints.batch_size.or(from_shape).or(given.batch_size).with_context(|| {
        format!("{}: no batch size (no logs_N folder, no vLLM step name, no --batch-size)", at.path.display())
    })?;
    // A vLLM prefill step says its prompt length: context tokens over context requests, when they
    // divide evenly (every prompt the same length, as a sweep makes them).
    let from_prefill = shape
        .filter(|s| prefill && s.context_requests > 0 && s.context_tokens % s.context_requests == 0)
        .map(|s| s.context_tokens / s.context_requests);
    let multi_rank = summary.world_size.is_some_and(|n| n > 1);
    let series = SeriesKey {
        host: given.host.clone(),
        gpu: summary.gpu.clone(),
        mode,
        batch_size,
        input_len: hints.input_len.or(given.input_len).or(from_prefill).unwrap_or(0),
        tp: summary.world_size.filter(|&n| n > 1).unwrap_or(1),
        rank: if multi_rank { summary.rank.unwrap_or(0) } else { 0 },
    };
    let unknown = series.mode.is_none() || (prefill && series.input_len == 0);
    Ok((series, unknown && shape.is_none()))
}

/// Steps whose series nothing stated fully: their folder and stated series, with rank 0 for every rank
/// (a tensor-parallel run's ranks are one workload: they must land in one series to be merged).
type Group = (PathBuf, SeriesKey);

/// The workloads read from the tokens of the folders whose steps' mode or prompt length nothing stated.
#[derive(Debug, Default)]
pub(super) struct Series {
    inferred: BTreeMap<Group, Inferred>,
    /// Folders whose steps fed different counts, none of them most steps: each step's workload is read
    /// from its own count. With the counts, and the steps that fed each.
    split: BTreeMap<Group, BTreeMap<Fed, usize>>,
}

fn group(at: At<'_>, series: &SeriesKey) -> Group {
    (at.path.parent().unwrap_or(Path::new("")).to_path_buf(), series.without_rank())
}

impl Series {
    /// Reads the workload of every group (one folder's steps of one stated series) whose mode or prompt
    /// length nothing stated, from the tokens its steps fed to the model. Traces without a batch size are
    /// passed over here (adding them reports it).
    pub(super) fn infer<'a>(given: &Given, traces: impl IntoIterator<Item = (At<'a>, &'a TraceSummary)>) -> Self {
        // One entry per step, with a count or not: steps without one (no shapes, CUDA-graph replays)
        // count against a majority too.
        let mut fed: BTreeMap<Group, Vec<Option<Fed>>> = BTreeMap::new();
        for (at, summary) in traces {
            for step in &summary.steps {
                if let Ok((series, true)) = stated(given, at, summary, step) {
                    fed.entry(group(at, &series)).or_default().push(step.fed());
                }
            }
        }
        let mut out = Series::default();
        for (g, counts) in fed {
            if let Some(w) = workload::infer(g.1.batch_size, g.1.mode, g.1.input_len, &counts) {
                out.inferred.insert(g, w);
                continue;
            }
            // No count gives the folder's workload (none is most steps', or the one that is is not batch
            // B's): where the steps that have one disagree (two prefills and two decodes of batch 1 in one
            // logs_1), averaging them as one series would blend two workloads; each step's own count says
            // its workload instead. Where they agree, or none has one, the steps keep their unknowns (and
            // are counted in the note on unchecked steps).
            let distinct = workload::tally(&counts);
            if distinct.len() > 1 {
                out.split.insert(g, distinct);
            }
        }
        out
    }

    /// The series of `step`: as stated, with the mode and prompt length read from its folder's tokens
    /// where nothing stated them.
    ///
    /// # Errors
    /// No batch size: no `logs_N` folder, no vLLM step name, no `--batch-size`.
    pub(super) fn of(
        &self,
        given: &Given,
        at: At<'_>,
        summary: &TraceSummary,
        step: &StepSummary,
    ) -> anyhow::Result<SeriesKey> {
        let (mut series, unknown) = stated(given, at, summary, step)?;
        if !unknown {
            return Ok(series);
        }
        let g = group(at, &series);
        let own = || workload::infer(series.batch_size, series.mode, series.input_len, &[step.fed()]);
        let read = match self.inferred.get(&g) {
            Some(w) => Some(*w),
            None if self.split.contains_key(&g) => own(),
            None => None,
        };
        if let Some(w) = read {
            series.mode = Some(w.mode);
            series.input_len = w.input_len;
        }
        Ok(series)
    }

    /// What was read from the tokens, for the note after the tables: a first line, then one per folder
    /// (its steps counted over all its ranks); `None` when nothing was.
    pub(super) fn note(&self) -> Option<String> {
        let split = self.split_note();
        if self.inferred.is_empty() {
            return split;
        }
        let n = self.inferred.len();
        let mut out = format!(
            "note: the workload of {} was read from the tokens most of {} steps fed to the model (nothing in the \
             path, the flags or a vLLM step name said it); steps there that fed another count are left out \
             (batch_mismatch):",
            plural(n as u64, "folder"),
            if n == 1 { "its" } else { "their" },
        );
        for ((folder, s), w) in &self.inferred {
            let b = u64::from(s.batch_size);
            let ran = plural(b, w.mode.name());
            let what = match (s.mode, w.mode) {
                (None, Mode::Decode) => format!("{ran} (the mode read)"),
                (None, Mode::Prefill) => {
                    let read = if s.input_len > 0 { "the mode read" } else { "the mode and length read" };
                    format!("{ran} of {} tokens ({read})", w.input_len)
                }
                (Some(_), _) => format!("{ran} of {} tokens (the length read)", w.input_len),
            };
            out.push_str(&format!(
                "\n  {}: {what}: {} of {} steps fed {}",
                folder.display(),
                w.agreeing,
                w.steps,
                plural(w.tokens, "token")
            ));
        }
        if let Some(split) = split {
            out.push('\n');
            out.push_str(&split);
        }
        Some(out)
    }

    /// The folders whose steps' workloads were read one by one, for the note: what their steps fed.
    fn split_note(&self) -> Option<String> {
        if self.split.is_empty() {
            return None;
        }
        let mut out = format!(
            "note: in {}, the steps fed the model different counts and none of them gave the folder's workload: \
             each step's workload was read from its own count (a step of B tokens is B decodes, of k × B tokens B prefills of \
             k tokens; others stay unchecked):",
            plural(self.split.len() as u64, "folder")
        );
        for ((folder, _), counts) in &self.split {
            let fed: Vec<String> = counts
                .iter()
                .map(|(f, n)| {
                    let how = match f.sequences {
                        Some(s) => format!("{s} × {} tokens", f.tokens / s.max(1)),
                        None => plural(f.tokens, "token"),
                    };
                    let passes = if f.passes > 1 { format!(" in {} forward passes", f.passes) } else { String::new() };
                    format!("{} fed {how}{passes}", plural(*n as u64, "step"))
                })
                .collect();
            out.push_str(&format!("\n  {}: {}", folder.display(), fed.join(", ")));
        }
        Some(out)
    }
}

/// `n` and the noun, plural unless `n` is 1 ("1 decode", "8 decodes").
fn plural(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}
