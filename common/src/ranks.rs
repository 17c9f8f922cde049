//! Tensor-parallel jobs: the ranks' traces merged into one view per step.
//!
//! Each rank of a job writes its own trace, and the ranks start a step at different moments (each
//! process launches its own kernels); every collective then waits inside its kernel until the last rank
//! arrives. A rank's collective time is therefore mostly waiting for the slower rank, and per-rank totals
//! are not per-step costs. Per step, with the ranks' collective kernels matched in order:
//!
//! - **wait** of rank r in collective j = (latest start of j over the ranks) - (r's start of j), clamped
//!   to r's duration of j: the time r's kernel spent before the last rank arrived;
//! - **transfer** = the kernel's duration minus the wait: the exchange itself, once every rank is in;
//! - the step's **merged view** is the slowest rank's: the rank with the most GPU time net of waiting
//!   (the one the others waited for); its GPU time and categories with its wait taken out (of `others`)
//!   are what the seed tables report for a tensor-parallel series; its wait is reported apart
//!   (`collective_wait_us`).
//!
//! Clocks: the ranks of a job run on one host, and Kineto writes every process's timestamps on the host's
//! clock, so the ranks' times compare directly. That is checked, not assumed: a collective whose kernels
//! overlap on the ranks ends on every rank at the same moment (no rank finishes before the data of every
//! rank has arrived), so the spread of the ranks' end times of each such collective is measured; a clock
//! offset would show in every one of them, so the step's median spread (`rank_end_skew_us`) above
//! [`CLOCK_SKEW_LIMIT_NS`] is reported as a problem (the split is then not reliable). A collective whose kernels do not overlap on the ranks (one
//! ended before another began) waited for nothing inside its kernel: it counts as transfer.
//!
//! Steps are matched across ranks per (series without rank, trace folder), in start order; the ranks must
//! hold the same number of steps with the same names, else the folder is not merged and the reason is
//! reported.

use std::collections::BTreeMap;

use crate::aggregate::{Aggregate, SeriesKey, StepRow};
use crate::classify::Detail;

/// The largest difference between the ranks' starts of one step (ns) for them to be one job's step: 1 s.
/// The ranks of the H200 runs start a decode step at most 30 ms apart (eager, launch-bound).
pub const SAME_WINDOW_NS: i64 = 1_000_000_000;

/// The largest median spread of the ranks' end times of a step's collectives (ns) accepted as one clock:
/// 20 µs. The ranks' custom all-reduce kernels of the shared H200 fixtures end within 0.5 µs of each other.
pub const CLOCK_SKEW_LIMIT_NS: i64 = 20_000;

/// One rank's share of a merged step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RankSplit {
    /// Time its collective kernels spent waiting for the other ranks, ns.
    pub wait: i64,
    /// The rest of its collective kernels' time: the transfer, ns.
    pub transfer: i64,
}

/// One step of a tensor-parallel job, merged over its ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedStep {
    /// The series (rank 0).
    pub series: SeriesKey,
    /// The traces of the ranks, by rank.
    pub traces: Vec<String>,
    /// The step's index in each rank's trace, by rank.
    pub indexes: Vec<u32>,
    /// The rank whose view this is (the most GPU time net of waiting).
    pub slowest_rank: u32,
    /// The slowest rank's row with its collective wait taken out of `others` and `gpu_time` (so the
    /// categories still add up to the GPU time); `gpu_busy` and `wall_span` are its own, wait included.
    pub row: StepRow,
    /// The split of every rank, by rank.
    pub ranks: Vec<RankSplit>,
    /// Whether the collectives could be matched (same count on every rank); without it the wait is 0.
    pub split: bool,
    /// Split, some rank ran a collective (tensor parallelism), and the clock check passed: the step counts
    /// in the seed tables. Otherwise the merged row
    /// is written, a problem says why, and the seed tables leave it out.
    pub trusted: bool,
    /// The median over the step's collectives of the spread of the ranks' end times, ns (the clock check).
    pub end_skew: i64,
}

/// The merge of every tensor-parallel series of an aggregate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// Merged steps, in series, folder and start order.
    pub steps: Vec<MergedStep>,
    /// Per rank step (series with rank, trace, index): its split.
    pub splits: BTreeMap<(SeriesKey, String, u32), RankSplit>,
    /// Why some steps were not merged or not split, by series (without rank).
    pub problems: Vec<(SeriesKey, String)>,
}

impl Merged {
    /// The merged steps of a series (keyed without rank).
    pub fn of_series<'a>(&'a self, series: &'a SeriesKey) -> impl Iterator<Item = &'a MergedStep> + 'a {
        self.steps.iter().filter(move |m| &m.series == series)
    }
}

/// The folder part of a trace name (`p3/decode/logs_8/rank1.x.json` -> `p3/decode/logs_8`).
fn folder(trace: &str) -> &str {
    trace.rsplit_once('/').map_or("", |(d, _)| d)
}

type RankSteps<'a> = BTreeMap<u32, Vec<(&'a str, u32, &'a StepRow)>>;

/// Merges the ranks of every series with `tp > 1`.
pub fn merge(agg: &Aggregate) -> Merged {
    let mut groups: BTreeMap<(SeriesKey, &str), RankSteps<'_>> = BTreeMap::new();
    for ((k, trace, idx), row) in &agg.steps {
        if k.tp > 1 {
            groups
                .entry((k.without_rank(), folder(trace)))
                .or_default()
                .entry(k.rank)
                .or_default()
                .push((trace, *idx, row));
        }
    }
    let mut out = Merged::default();
    const LEFT_OUT: &str = "ranks not merged; these steps are left out of the seed tables (each rank's rows are in \
                            the full tables)";
    for ((series, dir), mut ranks) in groups {
        // Where: the folder, or the traces themselves when they sit at the top of what was read.
        let place = if dir.is_empty() {
            let mut traces: Vec<&str> = ranks.values().flatten().map(|(t, _, _)| *t).collect();
            traces.sort_unstable();
            traces.dedup();
            traces.join(", ")
        } else {
            format!("folder {dir}")
        };
        let what =
            format!("{} {} batch {} (tp {}), {place}", series.host, series.mode_label(), series.batch_size, series.tp);
        // The world size comes from the trace: counted, not listed, past a few (a corrupt one of billions
        // must not take the memory or the time of a list).
        let present = ranks.keys().filter(|&&r| r < series.tp).count() as u64;
        let missing = u64::from(series.tp) - present;
        let extra: Vec<u32> = ranks.keys().copied().filter(|&r| r >= series.tp).collect();
        if missing > 0 || !extra.is_empty() {
            let why = if missing == 0 {
                format!("traces of ranks {extra:?}, beyond the job's {} ranks", series.tp)
            } else {
                const LISTED: usize = 8;
                let first: Vec<u32> = (0..series.tp).filter(|r| !ranks.contains_key(r)).take(LISTED).collect();
                let more = if missing > LISTED as u64 {
                    format!(" and {} more", missing - LISTED as u64)
                } else {
                    String::new()
                };
                format!("no trace of rank(s) {first:?}{more} of {}", series.tp)
            };
            out.problems.push((series.clone(), format!("{what}: {why}: {LEFT_OUT}")));
            continue;
        }
        for steps in ranks.values_mut() {
            steps.sort_by_key(|(trace, idx, row)| (row.start, *trace, *idx));
        }
        let counts: Vec<usize> = ranks.values().map(Vec::len).collect();
        if counts.iter().any(|&c| c != counts[0]) {
            out.problems.push((series.clone(), format!("{what}: the ranks hold {counts:?} steps: {LEFT_OUT}")));
            continue;
        }
        // Steps pair up in start order only if every pair has the same name and starts within
        // SAME_WINDOW_NS (the ranks of one job run one window together); one that does not means the
        // ranks' steps are not aligned (or not one job's), and nothing after it would pair right either.
        let name = |v: &Vec<(&str, u32, &StepRow)>, i: usize| v[i].2.step_name.clone();
        let first = ranks.values().next().cloned().unwrap_or_default();
        if let Some(i) = (0..counts[0]).find(|&i| ranks.values().any(|v| name(v, i) != name(&first, i))) {
            let names: Vec<String> = ranks.values().map(|v| name(v, i)).collect();
            out.problems.push((
                series.clone(),
                format!("{what}: step {i} has different names on the ranks {names:?}: {LEFT_OUT}"),
            ));
            continue;
        }
        let apart = |i: usize| {
            let starts = ranks.values().map(|v| v[i].2.start);
            starts.clone().max().unwrap_or(0) - starts.min().unwrap_or(0)
        };
        if let Some(i) = (0..counts[0]).find(|&i| apart(i) > SAME_WINDOW_NS) {
            out.problems.push((
                series.clone(),
                format!(
                    "{what}: step {i} starts {:.3} s apart on the ranks (over {} s): not one job's steps: {LEFT_OUT}",
                    apart(i) as f64 / 1e9,
                    SAME_WINDOW_NS / 1_000_000_000
                ),
            ));
            continue;
        }
        for i in 0..counts[0] {
            let at: Vec<(&str, u32, &StepRow)> = ranks.values().map(|v| v[i]).collect();
            let m = merge_step(&series, &at, &what, i, &mut out.problems);
            // Per-rank splits only where they were computed: no row says "no wait" for an unsplit step.
            if m.split {
                for (rank, ((trace, idx, _), split)) in at.iter().zip(&m.ranks).enumerate() {
                    out.splits
                        .insert((SeriesKey { rank: rank as u32, ..series.clone() }, trace.to_string(), *idx), *split);
                }
            }
            out.steps.push(m);
        }
    }
    out
}

fn merge_step(
    series: &SeriesKey,
    at: &[(&str, u32, &StepRow)],
    what: &str,
    i: usize,
    problems: &mut Vec<(SeriesKey, String)>,
) -> MergedStep {
    let n = at[0].2.collectives.len();
    let split = at.iter().all(|(_, _, r)| r.collectives.len() == n);
    let mut ranks = vec![RankSplit::default(); at.len()];
    let mut spreads = Vec::with_capacity(n);
    if split {
        for j in 0..n {
            let last_start = at.iter().map(|(_, _, r)| r.collectives[j][0]).max().unwrap_or(0);
            let ends = at.iter().map(|(_, _, r)| r.collectives[j][1]);
            let first_end = ends.clone().min().unwrap_or(0);
            // Every collective, overlapping or not: a clock offset larger than the kernels would leave
            // none overlapping, and must still show.
            spreads.push(ends.max().unwrap_or(0) - first_end);
            if first_end <= last_start {
                // The ranks' kernels do not overlap: one ended before another began (NCCL's all-gather of
                // the logits in the H200 fixtures), so no kernel waited inside for the others; it is all
                // transfer.
                continue;
            }
            for (s, (_, _, r)) in ranks.iter_mut().zip(at) {
                let [start, end] = r.collectives[j];
                s.wait += (last_start - start).clamp(0, end - start);
            }
        }
    }
    // A clock offset between the ranks would show in every collective: the median spread measures it (one
    // collective can end apart on its own: NCCL's all-gather of the logits ends up to tens of µs apart).
    spreads.sort_unstable();
    let end_skew = spreads.get(spreads.len() / 2).copied().unwrap_or(0);
    // The ranks of a tensor-parallel step exchange partial results in every layer; ranks that ran no
    // collective at all are of another kind of job (data-parallel ranks serving their own batches, or
    // pipeline stages without NCCL between them), whose slowest rank is not the step's cost.
    let communicated = at.iter().any(|(_, _, r)| r.collective_activities > 0 || !r.collectives.is_empty());
    if !communicated {
        problems.push((
            series.clone(),
            format!(
                "{what}: step {i}: no rank ran a collective kernel: not a tensor-parallel step (its ranks all-reduce \
                 every layer); data-parallel ranks or pipeline stages are not one step (the step is left out of the \
                 seed tables)"
            ),
        ));
    } else if split {
        if end_skew > CLOCK_SKEW_LIMIT_NS {
            problems.push((
                series.clone(),
                format!(
                    "{what}: step {i}: the ranks' end times of its collectives differ by {:.1} µs (median, over {} \
                     µs): their clocks may not agree, so the wait/transfer split is not reliable (the step is left out of the seed tables)",
                    end_skew as f64 / 1e3,
                    CLOCK_SKEW_LIMIT_NS / 1000
                ),
            ));
        }
    } else {
        let counts: Vec<usize> = at.iter().map(|(_, _, r)| r.collectives.len()).collect();
        problems.push((
            series.clone(),
            format!(
                "{what}: step {i}: the ranks ran {counts:?} collective kernels: wait and transfer not split (the step \
                 is left out of the seed tables)"
            ),
        ));
    }
    for (s, (_, _, r)) in ranks.iter_mut().zip(at) {
        s.transfer = r.collective_time - s.wait;
    }
    let slowest = (0..at.len()).max_by_key(|&r| (at[r].2.gpu_time - ranks[r].wait, std::cmp::Reverse(r))).unwrap_or(0);
    let mut row = at[slowest].2.clone();
    row.detail[Detail::Others.index()] -= ranks[slowest].wait;
    row.gpu_time -= ranks[slowest].wait;
    row.collective_time -= ranks[slowest].wait;
    MergedStep {
        series: series.clone(),
        traces: at.iter().map(|(t, _, _)| t.to_string()).collect(),
        indexes: at.iter().map(|(_, i, _)| *i).collect(),
        slowest_rank: slowest as u32,
        row,
        ranks,
        split,
        end_skew,
        trusted: communicated && split && end_skew <= CLOCK_SKEW_LIMIT_NS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64, gpu: i64, colls: &[[i64; 2]]) -> StepRow {
        let ct: i64 = colls.iter().map(|c| c[1] - c[0]).sum();
        let mut detail = [0; 7];
        detail[Detail::Others.index()] = ct;
        detail[Detail::KqvProj.index()] = gpu - ct;
        StepRow {
            step_name: "s".into(),
            gpu_busy: gpu,
            gpu_time: gpu,
            wall_span: gpu,
            kernel_count: 1,
            detail,
            detail_activities: [1; 7],
            layers: 1,
            graph_activities: 0,
            graph_time: 0,
            graph_mapped: [0; 3],
            graph_reference: String::new(),
            graph_unattributed_time: 0,
            start,
            collective_activities: colls.len() as u32,
            collective_time: ct,
            collectives: colls.to_vec(),
            tokens: None,
            sequences: None,
            forward_passes: 0,
            vllm: None,
        }
    }

    #[test]
    fn the_early_rank_waits_and_the_late_rank_is_the_step() {
        let series =
            SeriesKey { host: "h".into(), gpu: "g".into(), mode: None, batch_size: 1, input_len: 0, tp: 2, rank: 0 };
        let mut agg = Aggregate::default();
        // Rank 0 arrives at 100 and waits for rank 1 (arrives at 160); both end at 200.
        agg.steps.insert((series.clone(), "d/rank0.json".into(), 0), row(0, 1000, &[[100, 200]]));
        agg.steps
            .insert((SeriesKey { rank: 1, ..series.clone() }, "d/rank1.json".into(), 0), row(5, 900, &[[160, 200]]));
        let m = merge(&agg);
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        let s = &m.steps[0];
        assert_eq!(s.ranks, vec![RankSplit { wait: 60, transfer: 40 }, RankSplit { wait: 0, transfer: 40 }]);
        // Net of waiting: rank 0 940, rank 1 900: rank 0 is the slowest.
        assert_eq!(s.slowest_rank, 0);
        assert_eq!(s.row.detail[Detail::Others.index()], 40);
        assert_eq!(s.end_skew, 0);
    }

    #[test]
    fn a_clock_offset_in_every_collective_is_reported() {
        let series =
            SeriesKey { host: "h".into(), gpu: "g".into(), mode: None, batch_size: 1, input_len: 0, tp: 2, rank: 0 };
        let mut agg = Aggregate::default();
        // Rank 1's clock runs 50 µs ahead: every collective ends 50 µs later there.
        let r0: Vec<[i64; 2]> = (0..5).map(|j| [j * 1_000_000, j * 1_000_000 + 100_000]).collect();
        let r1: Vec<[i64; 2]> = r0.iter().map(|c| [c[0] + 50_000, c[1] + 50_000]).collect();
        agg.steps.insert((series.clone(), "d/rank0.json".into(), 0), row(0, 10_000_000, &r0));
        agg.steps.insert((SeriesKey { rank: 1, ..series.clone() }, "d/rank1.json".into(), 0), row(0, 10_000_000, &r1));
        let m = merge(&agg);
        assert_eq!(m.steps[0].end_skew, 50_000);
        assert_eq!(m.problems.len(), 1, "{:?}", m.problems);
        assert!(m.problems[0].1.contains("differ by 50.0 µs (median, over 20 µs)"), "{:?}", m.problems);

        // An offset larger than the kernels leaves none overlapping: still seen, and nothing is waiting.
        let short0: Vec<[i64; 2]> = (0..5).map(|j| [j * 1_000_000, j * 1_000_000 + 10_000]).collect();
        let short1: Vec<[i64; 2]> = short0.iter().map(|c| [c[0] + 150_000, c[1] + 150_000]).collect();
        agg.steps.insert((series.clone(), "d/rank0.json".into(), 0), row(0, 10_000_000, &short0));
        agg.steps
            .insert((SeriesKey { rank: 1, ..series.clone() }, "d/rank1.json".into(), 0), row(0, 10_000_000, &short1));
        let m = merge(&agg);
        assert_eq!(m.steps[0].end_skew, 150_000);
        assert!(m.steps[0].ranks.iter().all(|r| r.wait == 0));
        assert_eq!(m.problems.len(), 1, "{:?}", m.problems);
    }

    #[test]
    fn ranks_that_ran_no_collective_are_not_merged_as_tensor_parallel() {
        // Two ranks of world size 2 with no collective kernel: data-parallel ranks (or pipeline stages),
        // not one step. Their slowest rank was taken as the step's cost without a word.
        let series =
            SeriesKey { host: "h".into(), gpu: "g".into(), mode: None, batch_size: 1, input_len: 0, tp: 2, rank: 0 };
        let mut agg = Aggregate::default();
        agg.steps.insert((series.clone(), "d/rank0.json".into(), 0), row(0, 1000, &[]));
        agg.steps.insert((SeriesKey { rank: 1, ..series.clone() }, "d/rank1.json".into(), 0), row(5, 900, &[]));
        let m = merge(&agg);
        assert!(!m.steps[0].trusted);
        assert_eq!(m.problems.len(), 1, "{:?}", m.problems);
        assert!(m.problems[0].1.contains("step 0: no rank ran a collective kernel"), "{:?}", m.problems);
    }

    #[test]
    fn a_world_size_of_billions_is_counted_not_listed() {
        // A corrupt distributedInfo.world_size: the missing ranks are counted, the first few named, at
        // once (listing them all took 17 GB and minutes).
        let series = SeriesKey {
            host: "h".into(),
            gpu: "g".into(),
            mode: None,
            batch_size: 1,
            input_len: 0,
            tp: 4_000_000_000,
            rank: 0,
        };
        let mut agg = Aggregate::default();
        agg.steps.insert((series.clone(), "d/rank0.json".into(), 0), row(0, 1000, &[[10, 20]]));
        agg.steps
            .insert((SeriesKey { rank: 2, ..series.clone() }, "d/rank2.json".into(), 0), row(0, 1000, &[[10, 20]]));
        let m = merge(&agg);
        assert!(m.steps.is_empty());
        assert!(
            m.problems[0].1.contains("no trace of rank(s) [1, 3, 4, 5, 6, 7, 8, 9] and 3999999990 more of 4000000000"),
            "{:?}",
            m.problems
        );
    }

    #[test]
    fn ranks_whose_steps_do_not_pair_by_name_are_not_merged() {
        let series =
            SeriesKey { host: "h".into(), gpu: "g".into(), mode: None, batch_size: 1, input_len: 0, tp: 2, rank: 0 };
        let mut agg = Aggregate::default();
        for (i, names) in [("a", "a"), ("b", "x"), ("c", "c")].iter().enumerate() {
            let mut r0 = row(i as i64 * 100, 1000, &[[10, 20]]);
            r0.step_name = names.0.into();
            let mut r1 = row(i as i64 * 100, 1000, &[[10, 20]]);
            r1.step_name = names.1.into();
            agg.steps.insert((series.clone(), "d/rank0.json".into(), i as u32), r0);
            agg.steps.insert((SeriesKey { rank: 1, ..series.clone() }, "d/rank1.json".into(), i as u32), r1);
        }
        let m = merge(&agg);
        assert!(m.steps.is_empty() && m.splits.is_empty());
        assert!(m.problems[0].1.contains("step 1 has different names"), "{:?}", m.problems);
    }
}
