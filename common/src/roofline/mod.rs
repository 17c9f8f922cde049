//! Roofline per op: how close each op runs to the GPU's limits.
//!
//! For every op call with a FLOP model ([`flops`]) the FLOPs and bytes its shapes imply are set against
//! the device time of the GPU work it launched (torch's device total of the call, children included):
//! achieved TFLOP/s and GB/s per op (`ops.csv` columns) and per detailed category (`roofline.csv`),
//! compared with the GPU's peaks ([`peaks`]). An op's arithmetic intensity (FLOP/byte) below the GPU's
//! ridge point (peak FLOP/s ÷ peak bytes/s) makes it memory-bound, above it compute-bound.
//!
//! Per category only the outermost modelled op of each call chain counts (`aten::linear` and not also the
//! `aten::mm` inside it), in the category that got most of its GPU time. Steps replayed from CUDA graphs
//! launch no ops, so they have no roofline.

pub mod flops;
pub mod peaks;

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::classify::Detail;
use crate::trace::key_averages::EventTimes;
use crate::trace::link::{Links, NONE};
use crate::trace::model::Trace;

pub use flops::{DType, OpWork};
pub use peaks::{Peak, PeakOverride};

/// Modelled work summed over calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkSums {
    /// Modelled calls.
    pub calls: u64,
    /// FLOPs.
    pub flops: u128,
    /// Bytes.
    pub bytes: u128,
    /// Device time of the calls, ns.
    pub time_ns: i128,
}

impl WorkSums {
    /// Adds one call.
    pub fn add(&mut self, w: &OpWork, time_ns: i64) {
        self.calls += 1;
        self.flops += u128::from(w.flops);
        self.bytes += u128::from(w.bytes);
        self.time_ns += i128::from(time_ns);
    }

    /// Adds other sums.
    pub fn merge(&mut self, o: &WorkSums) {
        self.calls += o.calls;
        self.flops += o.flops;
        self.bytes += o.bytes;
        self.time_ns += o.time_ns;
    }

    /// Achieved TFLOP/s (None without device time).
    pub fn tflops(&self) -> Option<f64> {
        (self.time_ns > 0).then(|| self.flops as f64 / self.time_ns as f64 / 1e3)
    }

    /// Achieved GB/s (10⁹ bytes/s; None without device time).
    pub fn gbps(&self) -> Option<f64> {
        (self.time_ns > 0).then(|| self.bytes as f64 / self.time_ns as f64)
    }

    /// Arithmetic intensity, FLOP/byte.
    pub fn intensity(&self) -> Option<f64> {
        (self.bytes > 0).then(|| self.flops as f64 / self.bytes as f64)
    }

    /// Where these calls sit against `peak` for `dtype`: None without a peak for the type or without
    /// time.
    pub fn against(&self, peak: &Peak, dtype: DType) -> Option<Against> {
        let peak_tflops = peak.tflops(dtype)?;
        let intensity = self.intensity()?;
        let achieved = self.tflops()?;
        // Ridge point in FLOP/byte: TFLOP/s ÷ (GB/s / 1000).
        let ridge = peak_tflops * 1e3 / peak.gbps;
        let roof = peak_tflops.min(intensity * peak.gbps / 1e3);
        Some(Against {
            peak_tflops,
            peak_gbps: peak.gbps,
            bound: if intensity < ridge { Bound::Memory } else { Bound::Compute },
            of_roof: achieved / roof,
        })
    }
}

/// Which roof limits an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Intensity below the ridge point: memory bandwidth limits it.
    Memory,
    /// At or above the ridge point: compute limits it.
    Compute,
}

impl Bound {
    /// Column value.
    pub fn name(self) -> &'static str {
        match self {
            Bound::Memory => "memory",
            Bound::Compute => "compute",
        }
    }
}

/// Modelled work set against a GPU's peaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Against {
    /// Compute peak for the data type, TFLOP/s.
    pub peak_tflops: f64,
    /// Bandwidth peak, GB/s.
    pub peak_gbps: f64,
    /// The limiting roof.
    pub bound: Bound,
    /// Achieved FLOP/s as a fraction of the roof at this intensity (min of the compute peak and
    /// intensity × bandwidth): 1.0 is on the roof.
    pub of_roof: f64,
}

/// The modelled work of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepWork {
    /// Per (op name, data type): every modelled call, nested ones included (each op's own row).
    pub ops: Vec<(String, DType, WorkSums)>,
    /// Per (detailed category, data type): the outermost modelled calls.
    pub categories: Vec<(Detail, DType, WorkSums)>,
}

/// Computes a step's modelled work.
///
/// `events` are the step's events, ascending; `activities` its counted GPU activities with their detailed category
/// (event index, category). Calls torch folds into their parent (`times.counted` false) are skipped, as
/// in the op rows.
pub fn step_work(
    t: &Trace,
    links: &Links,
    times: &EventTimes,
    outer: &[u32],
    events: &[u32],
    activities: &[(u32, Detail)],
) -> StepWork {
    if t.work.is_empty() || outer.is_empty() {
        return StepWork::default();
    }
    let mut ops: BTreeMap<(u32, DType), WorkSums> = BTreeMap::new();
    for (i, w) in t.work.of_ascending(events) {
        if !times.counted[i as usize] {
            continue;
        }
        ops.entry((t.events[i as usize].name, w.dtype)).or_default().add(w, times.device[i as usize]);
    }
    // The GPU time per category under each outermost modelled op.
    let mut under: FxHashMap<u32, [i64; 7]> = FxHashMap::default();
    for &(a, d) in activities {
        let launcher = links.launcher[a as usize];
        let Some(&op) = outer.get(launcher as usize) else { continue };
        if op != NONE {
            under.entry(op).or_default()[d.index()] += t.events[a as usize].dur;
        }
    }
    let mut categories: BTreeMap<(Detail, DType), WorkSums> = BTreeMap::new();
    let mut outer: Vec<(&u32, &[i64; 7])> = under.iter().collect();
    outer.sort_unstable_by_key(|(i, _)| **i);
    for (op, per) in outer {
        let Some(w) = t.work.get(op) else { continue };
        let total: i64 = per.iter().sum();
        let Some(d) = Detail::ALL.iter().copied().max_by_key(|d| (per[d.index()], std::cmp::Reverse(d.index()))) else {
            continue;
        };
        categories.entry((d, w.dtype)).or_default().add(w, total);
    }
    StepWork {
        ops: ops.into_iter().map(|((n, dt), s)| (t.name(n).to_string(), dt, s)).collect(),
        categories: categories.into_iter().map(|((d, dt), s)| (d, dt, s)).collect(),
    }
}

/// For every event, the outermost op call with modelled work among it and its host ancestors ([`NONE`]:
/// none), computed once per trace in one pass over the host tree in torch's order (parents first), so a
/// step's activities find theirs without walking up. Empty when the trace has no modelled work.
pub fn outermost_modelled(t: &Trace, links: &Links) -> Vec<u32> {
    if t.work.is_empty() {
        return Vec::new();
    }
    // Whether each event has work, read once: the pass goes in time order, and a search of the map for
    // each of millions of host events was a few percent of a trace's summary.
    let mut modelled = vec![false; t.events.len()];
    for (&i, _) in t.work.iter() {
        if let Some(m) = modelled.get_mut(i as usize) {
            *m = true;
        }
    }
    let mut outer = vec![NONE; t.events.len()];
    for &i in &links.host_order {
        let p = links.parent[i as usize];
        let above = if p == NONE { NONE } else { outer[p as usize] };
        outer[i as usize] = if above != NONE {
            above
        } else if modelled[i as usize] {
            i
        } else {
            NONE
        };
    }
    outer
}

/// The modelled work of an op call if it has a FLOP model and readable shapes (called while a trace is
/// built: only these results are kept, not the shapes).
pub fn op_work(name: &str, raw: &crate::trace::scan::RawShapes<'_>) -> Option<OpWork> {
    if !flops::has_model(name) {
        return None;
    }
    flops::model(name, &flops::Shapes::parse(raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_gemm_is_memory_bound_on_an_h200() {
        let peak = peaks::lookup("NVIDIA H200").expect("in the table");
        // q_proj at batch 1: 8.4 MFLOP, 8.4 MB, in 5 µs.
        let w = OpWork { flops: 2 * 2048 * 2048, bytes: (2048 * 2048 + 2 * 2048) * 2, dtype: DType::Bf16 };
        let mut s = WorkSums::default();
        s.add(&w, 5_000);
        let a = s.against(&peak, DType::Bf16).expect("comparable");
        assert_eq!(a.bound, Bound::Memory);
        // 8.4 MB in 5 µs is 1679 GB/s: 35 % of 4800 GB/s.
        let gbps = s.gbps().expect("time");
        assert!((gbps - 1679.4).abs() < 1.0, "{gbps}");
        assert!((a.of_roof - gbps / 4800.0).abs() < 0.01, "{}", a.of_roof);
        // A prefill GEMM of 4096 tokens is compute-bound (intensity ≈ 1170 FLOP/byte > ridge 206).
        let w = OpWork {
            flops: 2 * 4096 * 2048 * 8192,
            bytes: (4096 * 2048 + 2048 * 8192 + 4096 * 8192) * 2,
            dtype: DType::Bf16,
        };
        let mut s = WorkSums::default();
        s.add(&w, 300_000);
        assert_eq!(s.against(&peak, DType::Bf16).map(|a| a.bound), Some(Bound::Compute));
    }
}
