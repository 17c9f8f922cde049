//! Splitting a trace into profiled steps.
//!
//! A step is an outermost `record_function` range whose name matches a step pattern: `ProfilerStep#N`
//! (torch's schedule), vLLM's step annotations (`execute_context_0(0)_generation_16(16)`,
//! `execute_model...`), or the user's own. A trace without such ranges is one step (the original
//! experiment writes one file per step). Host events outside every annotation belong to the step that
//! started last before them (the first step for events before it), so work an annotation does not cover
//! (vLLM's LM head and sampling run after its `execute_context_*` range) still counts in its step.

use super::link::{Links, NONE};
use super::model::{Category, Trace};
use crate::glob::Patterns;

/// The default step patterns (globs on user-annotation names).
pub const DEFAULT_STEP_PATTERNS: &[&str] = &["ProfilerStep#*", "execute_context_*", "execute_model*"];

/// The `record_function` range the vLLM driver puts around the one step it runs with CUDA graphs off, as the
/// reference for attributing the graph steps' replayed kernels (see `classify::graphs`). A step inside it
/// is a reference step: it is not counted in the series' statistics.
pub const EAGER_REFERENCE_MARK: &str = "tracefleet::eager_reference";

/// [`DEFAULT_STEP_PATTERNS`], compiled.
pub fn default_step_patterns() -> Patterns {
    // Constant patterns, covered by the tests of every trace fixture.
    #[allow(clippy::expect_used)]
    Patterns::new(DEFAULT_STEP_PATTERNS).expect("the default step patterns compile")
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The annotation's name, or empty for a whole-trace step.
    pub name: String,
    /// The annotation event, or [`NONE`] for a whole-trace step.
    pub annotation: u32,
    /// CPU-side start (ns).
    pub start: i64,
    /// CPU-side end (ns).
    pub end: i64,
    /// The batch shape vLLM wrote into the step's annotation, or into the first annotation inside it
    /// (torch.profiler's schedule wraps vLLM's `execute_context_*` in its own `ProfilerStep#N`).
    pub vllm: Option<VllmStepShape>,
    /// The step runs inside an [`EAGER_REFERENCE_MARK`] range.
    pub reference: bool,
}

/// Steps and the step of every event.
#[derive(Debug, Clone)]
pub struct Steps {
    /// Steps in time order.
    pub steps: Vec<Step>,
    /// Index into `steps` for each event, [`NONE`] for events outside every step.
    pub of_event: Vec<u32>,
}

impl Steps {
    /// The events of each step, in file order (one pass, so per-step work stays linear in the trace).
    pub fn events_by_step(&self) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.steps.len()];
        for (i, &s) in self.of_event.iter().enumerate() {
            if let Some(v) = out.get_mut(s as usize) {
                v.push(i as u32);
            }
        }
        out
    }
}

/// Batch shape that vLLM writes into its step annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VllmStepShape {
    /// Prefill (context) requests in the step.
    pub context_requests: u32,
    /// Prefill tokens.
    pub context_tokens: u32,
    /// Decode (generation) requests.
    pub generation_requests: u32,
    /// Decode tokens.
    pub generation_tokens: u32,
}

impl VllmStepShape {
    /// The shape from the (context requests, context tokens, generation requests, generation tokens) tuple
    /// that step summaries and rows store.
    pub fn from_tuple((a, b, c, d): (u32, u32, u32, u32)) -> Self {
        VllmStepShape { context_requests: a, context_tokens: b, generation_requests: c, generation_tokens: d }
    }
}

/// Parses `execute_context_{n}({tokens})_generation_{n}({tokens})`.
pub fn parse_vllm_step(name: &str) -> Option<VllmStepShape> {
    let rest = name.strip_prefix("execute_context_")?;
    let (ctx, rest) = rest.split_once("_generation_")?;
    let pair = |s: &str| -> Option<(u32, u32)> {
        let (a, b) = s.split_once('(')?;
        let b = b.strip_suffix(')')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let (context_requests, context_tokens) = pair(ctx)?;
    let (generation_requests, generation_tokens) = pair(rest)?;
    Some(VllmStepShape { context_requests, context_tokens, generation_requests, generation_tokens })
}

/// Whether each of the trace's names (by name id) matches `patterns`: asked once per name, not once per
/// event (glob matching every top-level op of a large trace was 2% of its summary).
pub fn names_matching(t: &Trace, patterns: &Patterns) -> Vec<bool> {
    t.names.iter().map(|n| patterns.is_match(n)).collect()
}

/// Splits a trace into steps using glob `patterns` on user-annotation names (and on ops: torch 1.x wrote
/// `ProfilerStep#N` with category `Operator`).
pub fn split(t: &Trace, links: &Links, patterns: &Patterns) -> Steps {
    let n = t.events.len();
    let step_name = names_matching(t, patterns);
    let is_step = |i: u32| {
        let e = &t.events[i as usize];
        matches!(e.cat, Category::UserAnnotation | Category::CpuOp) && step_name[e.name as usize]
    };
    // Outermost matching annotations, in start order.
    let mut of_event = vec![NONE; n];
    let mut steps: Vec<Step> = Vec::new();
    for &i in &links.host_order {
        let p = links.parent[i as usize];
        let inherited = if p == NONE { NONE } else { of_event[p as usize] };
        of_event[i as usize] = if inherited == NONE && is_step(i) {
            let e = &t.events[i as usize];
            let name = t.name(e.name);
            let reference = std::iter::successors(Some(p).filter(|&p| p != NONE), |&q| {
                Some(links.parent[q as usize]).filter(|&q| q != NONE)
            })
            .any(|q| t.name(t.events[q as usize].name) == EAGER_REFERENCE_MARK);
            steps.push(Step {
                name: name.to_string(),
                annotation: i,
                start: e.ts,
                end: e.end(),
                vllm: parse_vllm_step(name),
                reference,
            });
            (steps.len() - 1) as u32
        } else {
            let e = &t.events[i as usize];
            if let Some(s) = steps.get_mut(inherited as usize)
                && e.cat == Category::UserAnnotation
            {
                if s.vllm.is_none() {
                    s.vllm = parse_vllm_step(t.name(e.name));
                }
                // The mark inside the step (torch.profiler's schedule wraps the window's steps in its own
                // `ProfilerStep#N`, the step, around the mark and vLLM's annotation).
                s.reference |= t.name(e.name) == EAGER_REFERENCE_MARK;
            }
            inherited
        };
    }
    if steps.is_empty() {
        let start = t.events.iter().map(|e| e.ts).min().unwrap_or(0);
        let end = t.events.iter().map(|e| e.end()).max().unwrap_or(0);
        return Steps {
            steps: vec![Step { name: String::new(), annotation: NONE, start, end, vllm: None, reference: false }],
            of_event: vec![0; n],
        };
    }
    // Host events outside the annotation tree (other threads, modules, and the work between two
    // annotations): by time. A step runs from its annotation's start to the next step's start, because an
    // annotation need not cover the whole iteration: vLLM's `execute_context_*` covers the forward, and
    // the LM head and the sampling of that step run after it. Events before the first step go to the first.
    let by_time = |ts: i64| -> u32 { steps.partition_point(|s| s.start <= ts).saturating_sub(1) as u32 };
    // Two passes: every host event has its step before any GPU activity takes its launcher's (a launcher
    // outside the annotations may come after its kernels in the file). The first also indexes the runtime
    // and driver calls made outside every op, by correlation: vLLM launches its sampling kernels from a bare
    // `cuLaunchKernelEx` after the step's annotation, and such calls are few.
    let mut bare_calls: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for (i, e) in t.events.iter().enumerate() {
        if matches!(e.cat, Category::Runtime | Category::Driver) && links.launcher[i] == NONE && e.correlation != 0 {
            bare_calls.entry(e.correlation).or_insert(i as u32);
        }
        if of_event[i] != NONE || e.cat.is_gpu_activity() {
            continue;
        }
        of_event[i] = match e.cat {
            Category::GpuAnnotation => steps
                .iter()
                .position(|s| t.events[s.annotation as usize].external_id == e.external_id && e.external_id != 0)
                .map_or(NONE, |p| p as u32),
            _ => by_time(e.ts),
        };
    }
    // GPU work belongs to the step that launched it, whenever it ran: its op's step; launched outside every
    // op, its runtime call's step (before, these took the step in which they *ran*: with the GPU behind
    // the CPU, a step's sampling kernels were counted in the next step); else the last step started
    // before it ran.
    for (i, e) in t.events.iter().enumerate() {
        if of_event[i] != NONE || !e.cat.is_gpu_activity() {
            continue;
        }
        let l = links.launcher[i];
        let call = if e.correlation == 0 { None } else { bare_calls.get(&e.correlation).copied() };
        of_event[i] = if l != NONE {
            of_event[l as usize]
        } else if let Some(c) = call.filter(|&c| of_event[c as usize] != NONE) {
            of_event[c as usize]
        } else {
            let k = steps.partition_point(|s| s.start <= e.ts);
            if k > 0 { (k - 1) as u32 } else { NONE }
        };
    }
    Steps { steps, of_event }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_step_names() {
        assert_eq!(
            parse_vllm_step("execute_context_0(0)_generation_16(16)"),
            Some(VllmStepShape {
                context_requests: 0,
                context_tokens: 0,
                generation_requests: 16,
                generation_tokens: 16
            })
        );
        assert_eq!(parse_vllm_step("execute_context_4(512)_generation_0(0)").map(|s| s.context_tokens), Some(512));
        assert_eq!(parse_vllm_step("execute_model_step_3"), None);
    }
}
