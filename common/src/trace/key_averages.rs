//! The table that `torch.profiler`'s `key_averages()` prints, rebuilt from the exported JSON alone.
//!
//! torch builds it from its in-memory events; the JSON holds the same events, so the same rules give the
//! same numbers, quirks included:
//! - CPU time of a host event is its duration; self CPU time subtracts its direct children in the host tree.
//! - GPU activities are attached to "frontend" host events (ones with no linked id: ops, annotations,
//!   runtime calls without an `External id`, profiler overhead) whose id equals the activity's
//!   `External id`. A frontend's id is its `External id` for ops, but its CUPTI correlation for runtime
//!   calls and, for overhead, the id of the op it ran in: when such numbers collide, torch attaches the
//!   kernel twice, and so does this table, so that it matches `key_averages()` row for row.
//! - A child with the parent's name that is the parent's only child is folded into the parent.
//! - Rows are keyed by name and by host/device side (a `record_function` has both).

use std::sync::atomic::{AtomicI64, Ordering};

use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;

use serde::Serialize;

use super::link::{Links, NONE};
use super::model::{Category, Trace};
use super::par::{self, PARALLEL_MIN_EVENTS};

/// Per-event metrics in nanoseconds, torch's definitions. CPU time is the event's duration and self
/// device time is its own kernels' time, so neither is stored.
#[derive(Debug, Clone)]
pub struct EventTimes {
    /// Whether the event is a row of the table (false for folded duplicates, module frames, `Other`).
    pub counted: Vec<bool>,
    /// Self CPU time (host events).
    pub self_cpu: Vec<i64>,
    /// Device time including children.
    pub device: Vec<i64>,
    /// Self device time: the event's own GPU activities (host events) or its duration (device events).
    pub self_device: Vec<i64>,
}

impl EventTimes {
    /// CPU time of event `i` (torch: the duration of host events, 0 for device events).
    pub fn cpu(&self, t: &Trace, i: usize) -> i64 {
        let e = &t.events[i];
        if e.cat.is_host() { e.dur } else { 0 }
    }
}

/// Computes torch's per-event metrics on one thread.
pub fn event_times(t: &Trace, links: &Links) -> EventTimes {
    let own = own_times(t, links);
    finish_times(t, links, own)
}

/// [`event_times`] on `jobs` threads, with the same results; traces of fewer than `min_events` retained
/// events on one.
pub fn event_times_with_jobs_min(t: &Trace, links: &Links, jobs: usize, min_events: usize) -> EventTimes {
    match par::pool(jobs, t.events.len(), min_events) {
        Some(pool) => pool.install(|| event_times_threaded(t, links)),
        None => event_times(t, links),
    }
}

/// [`event_times`] on the current rayon pool, with the same results.
fn event_times_threaded(t: &Trace, links: &Links) -> EventTimes {
    let own = own_times_threaded(t, links);
    finish_times(t, links, own)
}

/// A frontend's id: External id for ops and annotations, CUPTI correlation for runtime calls without an
/// External id, the interrupted op's id for overhead; 0 for events that are not frontends.
fn frontend_id(t: &Trace, links: &Links, i: usize) -> u32 {
    let ev = &t.events;
    let e = &ev[i];
    match e.cat {
        Category::CpuOp | Category::UserAnnotation => e.external_id,
        Category::Runtime | Category::Driver if e.external_id == 0 => e.correlation,
        Category::Overhead => links.overhead_op.get(&(i as u32)).map_or(0, |&op| ev[op as usize].external_id),
        _ => 0,
    }
}

/// Each event's own GPU time, ns (indexed like the events): the activities attached to it.
///
/// Each activity goes to every frontend whose id is its External id (torch's rule, collisions and all).
/// Older traces put the CUPTI correlation in a kernel's External id, which names no op: such an activity
/// goes to the op that launched it (found through its runtime call). An activity without an External id
/// (replayed by a CUDA graph, or launched where no op or annotation was open) goes to no host event, as
/// in torch, which links device events by that id alone. Synchronizations attach like kernels (torch
/// links every device event by its External id).
fn own_times(t: &Trace, links: &Links) -> Vec<i64> {
    let n = t.events.len();
    let ev = &t.events;
    let frontend_id = |i: usize| frontend_id(t, links, i);
    let mut frontends: Vec<u32> = (0..n as u32).filter(|&i| frontend_id(i as usize) > 0).collect();
    frontends.sort_unstable_by_key(|&i| (frontend_id(i as usize), i));
    let mut own = vec![0i64; n];
    for (i, e) in ev.iter().enumerate() {
        if !(e.cat.is_gpu_activity() || e.cat == Category::Sync) || e.external_id == 0 {
            continue;
        }
        let want = e.external_id;
        let lo = frontends.partition_point(|&f| frontend_id(f as usize) < want);
        let hi = lo + frontends[lo..].partition_point(|&f| frontend_id(f as usize) == want);
        if hi > lo {
            for &f in &frontends[lo..hi] {
                own[f as usize] += e.dur;
            }
        } else if links.launcher[i] != NONE {
            own[links.launcher[i] as usize] += e.dur;
        }
    }
    own
}

/// [`own_times`] on the current rayon pool. The times are integer sums, so the order the activities are
/// added in does not change them.
fn own_times_threaded(t: &Trace, links: &Links) -> Vec<i64> {
    let n = t.events.len();
    let ev = &t.events;
    let frontends: Vec<(u32, u32)> = par::sorted_pairs(n, |i| Some(frontend_id(t, links, i)).filter(|&id| id > 0));
    let own: Vec<AtomicI64> = (0..n).into_par_iter().map(|_| AtomicI64::new(0)).collect();
    ev.par_iter().enumerate().for_each(|(i, e)| {
        if !(e.cat.is_gpu_activity() || e.cat == Category::Sync) || e.external_id == 0 {
            return;
        }
        let want = e.external_id;
        let lo = frontends.partition_point(|&(id, _)| id < want);
        let hi = lo + frontends[lo..].partition_point(|&(id, _)| id == want);
        if hi > lo {
            for &(_, f) in &frontends[lo..hi] {
                own[f as usize].fetch_add(e.dur, Ordering::Relaxed);
            }
        } else if links.launcher[i] != NONE {
            own[links.launcher[i] as usize].fetch_add(e.dur, Ordering::Relaxed);
        }
    });
    own.into_par_iter().map(AtomicI64::into_inner).collect()
}

/// The rest of [`event_times`] once each event's own GPU time is known: folds duplicates, then sums
/// children into parents.
fn finish_times(t: &Trace, links: &Links, mut own: Vec<i64>) -> EventTimes {
    let n = t.events.len();
    let ev = &t.events;
    // torch's _remove_dup_nodes: a child with its parent's name that is the parent's only child is folded
    // into the parent (the parent takes its children and its kernels). A folded event is not rewritten
    // out of its children's parent links: it points to the event it was folded into (`folded`), and a
    // parent is read through those pointers (with path halving), so a chain of n such events folds in
    // O(n α(n)) instead of rescanning every later event for each fold (n events sharing one timestamp
    // on one thread nest into one chain).
    let mut parent = links.parent.clone();
    let mut folded = vec![NONE; n];
    let resolve = |folded: &mut [u32], mut i: u32| -> u32 {
        while i != NONE && folded[i as usize] != NONE {
            let next = folded[i as usize];
            let after = folded[next as usize];
            if after != NONE {
                folded[i as usize] = after;
            }
            i = next;
        }
        i
    };
    let mut child_count = vec![0u32; n];
    for &i in &links.host_order {
        let p = parent[i as usize];
        if p != NONE {
            child_count[p as usize] += 1;
        }
    }
    let mut counted: Vec<bool> = ev.iter().map(|e| e.cat.is_host() || e.cat.is_device()).collect();
    loop {
        let mut changed = false;
        for &i in &links.host_order {
            let iu = i as usize;
            if !counted[iu] {
                continue;
            }
            let p = resolve(&mut folded, parent[iu]);
            parent[iu] = p;
            if p == NONE {
                continue;
            }
            let pu = p as usize;
            if ev[pu].name == ev[iu].name && child_count[pu] == 1 {
                child_count[pu] = child_count[iu];
                own[pu] = own[iu];
                counted[iu] = false;
                parent[iu] = NONE;
                folded[iu] = p;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    drop(child_count);
    for &i in &links.host_order {
        let p = parent[i as usize];
        parent[i as usize] = resolve(&mut folded, p);
    }
    drop(folded);

    // Children before parents (reverse host order): self CPU and inclusive device time.
    let mut self_cpu = vec![0i64; n];
    let mut device = vec![0i64; n];
    for &i in links.host_order.iter().rev() {
        let iu = i as usize;
        if !counted[iu] {
            continue;
        }
        // self_cpu holds the children's CPU time until the event itself is reached.
        self_cpu[iu] = ev[iu].dur - self_cpu[iu];
        device[iu] += own[iu];
        let p = parent[iu];
        if p != NONE {
            self_cpu[p as usize] += ev[iu].dur;
            device[p as usize] += device[iu];
        }
    }
    for (i, e) in ev.iter().enumerate() {
        if e.cat.is_device() {
            device[i] = e.dur;
            own[i] = e.dur;
        }
    }
    EventTimes { counted, self_cpu, device, self_device: own }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyAverage {
    /// The event name.
    pub key: String,
    /// Number of events.
    pub count: u64,
    /// Total CPU time, µs.
    pub cpu_time_total_us: f64,
    /// Total self CPU time, µs.
    pub self_cpu_time_total_us: f64,
    /// Total device time, µs.
    pub device_time_total_us: f64,
    /// Total self device time, µs.
    pub self_device_time_total_us: f64,
}

/// Integer accumulator for one row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyTotals {
    /// Events.
    pub count: u64,
    /// ns.
    pub cpu: i64,
    /// ns.
    pub self_cpu: i64,
    /// ns.
    pub device: i64,
    /// ns.
    pub self_device: i64,
}

impl KeyTotals {
    /// Adds another accumulator.
    pub fn add(&mut self, o: &KeyTotals) {
        self.count += o.count;
        self.cpu += o.cpu;
        self.self_cpu += o.self_cpu;
        self.device += o.device;
        self.self_device += o.self_device;
    }
}

/// Row key: name and whether the row is device-side.
pub type RowKey = (u32, bool);

/// Sums per-event metrics into rows, over the given events.
pub fn totals(t: &Trace, times: &EventTimes, events: impl IntoIterator<Item = usize>) -> HashMap<RowKey, KeyTotals> {
    let mut rows: HashMap<RowKey, KeyTotals> = HashMap::default();
    for i in events {
        let e = &t.events[i];
        if !times.counted[i] {
            continue;
        }
        let r = rows.entry((e.name, e.cat.is_device())).or_default();
        r.count += 1;
        r.cpu += times.cpu(t, i);
        r.self_cpu += times.self_cpu[i];
        r.device += times.device[i];
        r.self_device += times.self_device[i];
    }
    rows
}

/// The whole-trace table, sorted by self device time, then self CPU time (both descending), then name,
/// computed on one thread.
pub fn key_averages(t: &Trace, links: &Links) -> Vec<KeyAverage> {
    key_averages_with_jobs(t, links, 1)
}

/// [`key_averages`] on `jobs` threads; traces under [`PARALLEL_MIN_EVENTS`] events on one. The rows are
/// the same whatever `jobs` is.
pub fn key_averages_with_jobs(t: &Trace, links: &Links, jobs: usize) -> Vec<KeyAverage> {
    key_averages_with_jobs_min(t, links, jobs, PARALLEL_MIN_EVENTS)
}

/// [`key_averages_with_jobs`] with another size threshold: traces of fewer than `min_events` retained
/// events are tabled on one thread (tests lower it to run the threaded code on small fixtures).
pub fn key_averages_with_jobs_min(t: &Trace, links: &Links, jobs: usize, min_events: usize) -> Vec<KeyAverage> {
    let rows = match par::pool(jobs, t.events.len(), min_events) {
        Some(pool) => pool.install(|| {
            let times = event_times_threaded(t, links);
            totals_threaded(t, &times, jobs * 4)
        }),
        None => totals(t, &event_times(t, links), 0..t.events.len()),
    };
    to_table(t, &rows)
}

/// [`totals`] over every event on the current rayon pool: each of `pieces` runs of events is summed into
/// its own map, and the maps are added together. The sums are integers: the same whatever the order.
fn totals_threaded(t: &Trace, times: &EventTimes, pieces: usize) -> HashMap<RowKey, KeyTotals> {
    let n = t.events.len();
    let size = n.div_ceil(pieces.max(1)).max(1);
    let maps: Vec<HashMap<RowKey, KeyTotals>> =
        (0..n.div_ceil(size)).into_par_iter().map(|p| totals(t, times, p * size..n.min((p + 1) * size))).collect();
    let mut rows: HashMap<RowKey, KeyTotals> = HashMap::default();
    for m in maps {
        for (k, r) in m {
            rows.entry(k).or_default().add(&r);
        }
    }
    rows
}

/// Turns row totals into sorted table rows.
pub fn to_table(t: &Trace, rows: &HashMap<RowKey, KeyTotals>) -> Vec<KeyAverage> {
    let us = |ns: i64| ns as f64 / 1000.0;
    let mut out: Vec<((KeyTotals, bool), KeyAverage)> = rows
        .iter()
        .map(|(&(name, device), r)| {
            (
                (*r, device),
                KeyAverage {
                    key: t.name(name).to_string(),
                    count: r.count,
                    cpu_time_total_us: us(r.cpu),
                    self_cpu_time_total_us: us(r.self_cpu),
                    device_time_total_us: us(r.device),
                    self_device_time_total_us: us(r.self_device),
                },
            )
        })
        .collect();
    // Host side first when a name's two rows tie on everything else: the order never depends on the
    // map's, which depends on how the totals were gathered.
    out.sort_by(|a, b| {
        let ((ra, da), (rb, db)) = (&a.0, &b.0);
        rb.self_device
            .cmp(&ra.self_device)
            .then(rb.self_cpu.cmp(&ra.self_cpu))
            .then_with(|| a.1.key.cmp(&b.1.key))
            .then(ra.device.cmp(&rb.device))
            .then(da.cmp(db))
    });
    out.into_iter().map(|(_, r)| r).collect()
}
