//! Attribution of kernels replayed by CUDA graphs, through an eager reference step of the same shape.
//!
//! Under a CUDA graph a step's kernels are replayed by one `cudaGraphLaunch` (or several: vLLM's piecewise
//! graphs leave attention eager between them). A replayed kernel carries the launch's correlation id, so
//! nothing in the trace links it to the op that launched it when the graph was captured. The method here:
//!
//! 1. A *reference step*: one step of the same batch shape run eagerly, classified like any eager step
//!    (every kernel has its op, its decoder-layer role and its category). The vLLM driver records it in
//!    the same profiled window as the graph steps, with graphs off for that one step only, so the engine,
//!    the attention backend's settings (and hence its kernels) are those of the graph steps; offline, a
//!    trace of an eager run can be given (`--graph-reference`).
//! 2. *Alignment*: the graph step's GPU activities, all of them in GPU start order (the eager ones too:
//!    they anchor the replayed ones between them), and the reference step's are aligned by kernel name
//!    with a minimal edit script (Myers' diff, the `similar` crate).
//! 3. *Mapping*: a replayed activity aligned with a reference activity of the same name takes that
//!    activity's op and category (**exact**). Replayed activities in a gap between two aligned runs take
//!    the op of the reference activities in the opposite gap when those were all launched by one op (gaps
//!    with an aligned run on both sides only)
//!    (**inferred**: e.g. FlashAttention's split-KV kernel and its combine kernel where a reference run
//!    with other settings had the unsplit kernel and a fill, both from the attention op). Every other
//!    replayed activity is **unattributed**: it stays in `others` under [`UNATTRIBUTED_OP`], and is
//!    counted; it is never guessed.
//!
//! What is exact: the kernel sequence of a graph is the capture's launch order (one stream), so a kernel
//! that aligns by name within the same surroundings is the one the reference's op launched. What is
//! inferred: the gap rule. Both counts are reported per step (`steps.csv`, `manifest.json`).

use serde::{Deserialize, Serialize};

use super::{Classified, Detail};
use crate::trace::link::NONE;
use crate::trace::model::Trace;

/// The op name given to replayed activities that could not be mapped.
pub const UNATTRIBUTED_OP: &str = "(graph replay, unattributed)";

/// One GPU activity of a reference step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefActivity {
    /// Kernel (or copy/set) name.
    pub kernel: String,
    /// Its category in the reference step.
    pub detail: Detail,
    /// The op it was attributed to (empty: no op).
    pub op: String,
    /// The unit (the op's event in the reference trace), [`NONE`] when no op launched it.
    pub unit: u32,
    /// Whether the unit is a linear op.
    pub linear: bool,
    /// Whether it is a collective kernel.
    pub collective: bool,
}

/// An eager step's GPU activities in GPU start order, classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceStep {
    /// The step's annotation.
    pub name: String,
    /// Its vLLM batch shape, when its annotation gives one.
    pub shape: Option<(u32, u32, u32, u32)>,
    /// Decoder layers found in it.
    pub layers: u32,
    /// Its activities.
    pub activities: Vec<RefActivity>,
}

impl ReferenceStep {
    /// The reference form of a classified eager step of trace `t`.
    pub fn new(t: &Trace, cls: &Classified, name: &str, shape: Option<(u32, u32, u32, u32)>) -> Self {
        let mut acts: Vec<_> = cls.activities.iter().collect();
        acts.sort_by_key(|a| (t.events[a.event as usize].ts, a.event));
        let activities = acts
            .into_iter()
            .map(|a| RefActivity {
                kernel: t.name(t.events[a.event as usize].name).to_string(),
                detail: a.detail,
                op: if a.unit == NONE { String::new() } else { t.name(t.events[a.unit as usize].name).to_string() },
                unit: a.unit,
                linear: a.linear,
                collective: a.collective,
            })
            .collect();
        ReferenceStep { name: name.to_string(), shape, layers: cls.layers, activities }
    }
}

/// Eager reference steps from a trace other than the graph trace (`--graph-reference`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphReference {
    /// Where the steps came from (a path), for messages.
    pub source: String,
    /// The rank of the trace they came from (`distributedInfo`), if it says: they serve that rank only.
    pub rank: Option<u32>,
    /// The steps.
    pub steps: Vec<ReferenceStep>,
}

impl GraphReference {
    /// The reference for a graph step: the first step of the same vLLM shape, else of the same name.
    pub fn find(&self, name: &str, shape: Option<(u32, u32, u32, u32)>) -> Option<&ReferenceStep> {
        match shape {
            Some(_) => self.steps.iter().find(|s| s.shape == shape),
            None => self.steps.iter().find(|s| s.shape.is_none() && s.name == name),
        }
    }
}

/// How one replayed activity was mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Aligned with the reference activity at this index, same kernel name.
    Exact(usize),
    /// In a gap whose reference activities (this one among them) were all launched by one op.
    Inferred(usize),
    /// Not mapped.
    Unattributed,
}

/// Maps the replayed activities of a graph step onto a reference step.
///
/// `step` is the graph step's activities in GPU start order: (kernel name, replayed?). The result has one
/// entry per element of `step`: `None` for the eager ones (they keep their own attribution), a
/// [`Mapping`] for the replayed ones.
pub fn map_replayed(step: &[(&str, bool)], reference: &ReferenceStep) -> Vec<Option<Mapping>> {
    let old: Vec<&str> = reference.activities.iter().map(|a| a.kernel.as_str()).collect();
    let new: Vec<&str> = step.iter().map(|s| s.0).collect();
    let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &old, &new);
    let mut out: Vec<Option<Mapping>> =
        step.iter().map(|&(_, replayed)| replayed.then_some(Mapping::Unattributed)).collect();
    // Gaps: the old and new ranges between two equal runs (a delete, an insert, or both, or a replace).
    // Only a gap with an aligned run on both sides is inferred: at either end of the step nothing bounds
    // what faces what.
    type Gap = (std::ops::Range<usize>, std::ops::Range<usize>);
    let mut gap: Option<Gap> = None;
    let mut seen_equal = false;
    let infer = |gap: Gap, out: &mut Vec<Option<Mapping>>| {
        let (o, n) = gap;
        if o.is_empty() || n.is_empty() {
            return;
        }
        let unit = reference.activities[o.start].unit;
        if unit == NONE || reference.activities[o.clone()].iter().any(|a| a.unit != unit) {
            return;
        }
        for slot in &mut out[n] {
            if slot.is_some() {
                *slot = Some(Mapping::Inferred(o.start));
            }
        }
    };
    for op in &ops {
        let (tag, o, n) = op.as_tag_tuple();
        if tag == similar::DiffTag::Equal {
            if let Some(g) = gap.take().filter(|_| seen_equal) {
                infer(g, &mut out);
            }
            seen_equal = true;
            for (k, j) in n.enumerate() {
                if out[j].is_some() {
                    out[j] = Some(Mapping::Exact(o.start + k));
                }
            }
        } else {
            gap = Some(match gap.take() {
                Some((go, gn)) => (go.start.min(o.start)..go.end.max(o.end), gn.start.min(n.start)..gn.end.max(n.end)),
                None => (o, n),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(acts: &[(&str, Detail, u32)]) -> ReferenceStep {
        ReferenceStep {
            name: "s".into(),
            shape: None,
            layers: 1,
            activities: acts
                .iter()
                .map(|&(k, detail, unit)| RefActivity {
                    kernel: k.into(),
                    detail,
                    op: format!("op{unit}"),
                    unit,
                    linear: false,
                    collective: false,
                })
                .collect(),
        }
    }

    #[test]
    fn exact_inferred_and_unattributed() {
        let r = reference(&[
            ("prep", Detail::Others, 1),
            ("gemm", Detail::KqvProj, 2),
            ("fa_unsplit", Detail::PagedAttention, 3),
            ("fill", Detail::PagedAttention, 3),
            ("gemm2", Detail::OProj, 4),
            ("norm", Detail::Others, 5),
            ("act", Detail::Others, 6),
        ]);
        let step = [
            ("prep", false),
            ("gemm", true),
            ("fa_split", true),
            ("combine", true),
            ("gemm2", true),
            ("weird", true),
            ("act", true),
        ];
        let m = map_replayed(&step, &r);
        assert_eq!(m[0], None, "eager activities keep their own op");
        assert_eq!(m[1], Some(Mapping::Exact(1)));
        // The gap's reference kernels came from one op: inferred.
        assert_eq!(m[2], Some(Mapping::Inferred(2)));
        assert_eq!(m[3], Some(Mapping::Inferred(2)));
        assert_eq!(m[4], Some(Mapping::Exact(4)));
        // 'weird' faces 'norm' only, one op: inferred; a gap facing two ops would not be.
        assert_eq!(m[5], Some(Mapping::Inferred(5)));
        assert_eq!(m[6], Some(Mapping::Exact(6)));
    }

    #[test]
    fn a_gap_over_two_ops_or_none_is_unattributed() {
        let r = reference(&[
            ("a", Detail::Others, 1),
            ("x", Detail::Others, 2),
            ("y", Detail::Others, 3),
            ("b", Detail::Others, 4),
        ]);
        let m = map_replayed(&[("a", true), ("z", true), ("b", true), ("extra", true)], &r);
        assert_eq!(
            m,
            vec![
                Some(Mapping::Exact(0)),
                Some(Mapping::Unattributed),
                Some(Mapping::Exact(3)),
                Some(Mapping::Unattributed)
            ]
        );
        // A gap at either end is bounded on one side only: not inferred, even facing one op.
        let r = reference(&[("x", Detail::Others, 1), ("a", Detail::KqvProj, 2), ("y", Detail::Others, 3)]);
        let m = map_replayed(&[("p", true), ("a", true), ("q", true)], &r);
        assert_eq!(m, vec![Some(Mapping::Unattributed), Some(Mapping::Exact(1)), Some(Mapping::Unattributed)]);
    }
}
