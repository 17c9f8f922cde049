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

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;

use serde::Serialize;

use super::atomic_view;
use super::link::{Links, NONE, SortedIds, host_thread};
use super::model::{Category, Event, Trace};
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
        Some(pool) => pool.install(|| event_times_threaded(t, links, jobs * 4)),
        None => event_times(t, links),
    }
}

/// [`event_times`] on the current rayon pool, with the same results; the tree is cut into about `pieces`
/// runs.
fn event_times_threaded(t: &Trace, links: &Links, pieces: usize) -> EventTimes {
    let own = own_times_threaded(t, links);
    finish_times_threaded(t, links, own, pieces)
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
    let frontends = SortedIds::by(n, |i| Some(frontend_id(t, links, i)));
    let mut own = vec![0i64; n];
    let mut near = 0;
    for i in 0..n {
        attach(t, links, &frontends, &mut near, i, |f, ns| own[f as usize] += ns);
    }
    own
}

/// Attaches event `i`, if it is an activity with an External id, to the events whose time it is:
/// `add(event, ns)` for every frontend with that id, else for the op that launched it. `near` is where
/// the last search of `frontends` ended ([`SortedIds::with_id`]).
fn attach(t: &Trace, links: &Links, frontends: &SortedIds, near: &mut usize, i: usize, mut add: impl FnMut(u32, i64)) {
    let e = &t.events[i];
    if !(e.cat.is_gpu_activity() || e.cat == Category::Sync) || e.external_id == 0 {
        return;
    }
    let mut found = false;
    for f in frontends.with_id(e.external_id, near) {
        add(f, e.dur);
        found = true;
    }
    if !found && links.launcher[i] != NONE {
        add(links.launcher[i], e.dur);
    }
}

/// [`own_times`] on the current rayon pool. The times are integer sums, so the order the activities are
/// added in does not change them.
fn own_times_threaded(t: &Trace, links: &Links) -> Vec<i64> {
    let n = t.events.len();
    let frontends = SortedIds::by_threaded(n, |i| Some(frontend_id(t, links, i)));
    let mut own = par::filled(n, 0i64);
    let cells = atomic_view::i64s(&mut own);
    (0..n).into_par_iter().for_each_init(
        || 0,
        |near, i| {
            attach(t, links, &frontends, near, i, |f, ns| {
                cells[f as usize].fetch_add(ns, Ordering::Relaxed);
            })
        },
    );
    own
}

/// The rest of [`event_times`] once each event's own GPU time is known (`own`, ns, indexed like the
/// events): folds duplicates, then sums children into parents, on one thread.
fn finish_times(t: &Trace, links: &Links, mut own: Vec<i64>) -> EventTimes {
    let (n, host) = (t.events.len(), &links.host_order[..]);
    let mut parent = links.parent.clone();
    // The fold's own vectors are dropped before the sums: a large trace's peak memory is in this pass.
    let counted: Vec<bool> = {
        let (mut folded, mut children) = (vec![NONE; n], vec![0u32; n]);
        let fold = Fold {
            parent: cells(&mut parent),
            own: cells(&mut own),
            folded: cells(&mut folded),
            children: cells(&mut children),
        };
        fold.run(t, host);
        t.events.iter().zip(&folded).map(|(e, &f)| is_row(e, f != NONE)).collect()
    };
    let (mut self_cpu, mut device) = (vec![0i64; n], vec![0i64; n]);
    let sums = Sums {
        parent: cells(&mut parent),
        own: &own,
        counted: &counted,
        self_cpu: cells(&mut self_cpu),
        device: cells(&mut device),
    };
    sums.run(t, host);
    for (e, (device, own)) in t.events.iter().zip(device.iter_mut().zip(&mut own)) {
        (*device, *own) = device_times(e, *device, *own);
    }
    EventTimes { counted, self_cpu, device, self_device: own }
}

/// A vector's items as cells that [`Fold`] and [`Sums`] can change through a shared reference.
fn cells<T>(v: &mut [T]) -> &[Cell<T>] {
    Cell::from_mut(v).as_slice_of_cells()
}

/// [`finish_times`] on the current rayon pool, with the same results: the host tree is cut into runs of
/// whole subtrees ([`tree_runs`], about `pieces` of them), and each run is folded, then summed, on its own.
///
/// Why the results are those of one thread: a fold reads and writes only an event, its parent chain and
/// that parent's child count and own time, and a sum adds a child into its parent, so a run that holds
/// every event's parent with the event changes nothing outside itself and reads nothing another run
/// writes. Within a run the events keep their host order, so each pass of the fold loop does to the run
/// exactly what the one-thread pass does to those events; a run whose pass folds nothing is done (the
/// next pass would find the same), which is where the one-thread loop leaves it too, however many passes
/// the other runs take. The sums then go through the run's events in reverse host order, children before
/// parents, as the one-thread sums do.
fn finish_times_threaded(t: &Trace, links: &Links, mut own: Vec<i64>, pieces: usize) -> EventTimes {
    let n = t.events.len();
    let mut parent: Vec<u32> = links.parent.par_iter().copied().collect();
    let (order, cuts) = tree_runs(t, links, pieces);
    let runs = || cuts.par_windows(2).map(|w| &order[w[0]..w[1]]);
    let counted: Vec<bool> = {
        let (mut folded, mut children) = (par::filled(n, NONE), par::filled(n, 0u32));
        let fold = Fold {
            parent: atomic_view::u32s(&mut parent),
            own: atomic_view::i64s(&mut own),
            folded: atomic_view::u32s(&mut folded),
            children: atomic_view::u32s(&mut children),
        };
        runs().for_each(|run| fold.run(t, run));
        t.events.par_iter().zip(&folded).map(|(e, &f)| is_row(e, f != NONE)).collect()
    };
    let (mut self_cpu, mut device) = (par::filled(n, 0i64), par::filled(n, 0i64));
    let sums = Sums {
        parent: atomic_view::u32s(&mut parent),
        own: &own,
        counted: &counted,
        self_cpu: atomic_view::i64s(&mut self_cpu),
        device: atomic_view::i64s(&mut device),
    };
    runs().for_each(|run| sums.run(t, run));
    drop((parent, order));
    t.events.par_iter().zip(device.par_iter_mut().zip(&mut own)).for_each(|(e, (device, own))| {
        (*device, *own) = device_times(e, *device, *own);
    });
    EventTimes { counted, self_cpu, device, self_device: own }
}

/// Whether event `e` is a row of the table once folded (`folded`: whether it was folded away): host
/// events that were not, and device events; events that are neither (module frames, `Other`) are not.
fn is_row(e: &Event, folded: bool) -> bool {
    if e.cat.is_host() { !folded } else { e.cat.is_device() }
}

/// Event `e`'s device time and self device time, ns, from the sums' (`device`, `own`): device events
/// time themselves.
fn device_times(e: &Event, device: i64, own: i64) -> (i64, i64) {
    if e.cat.is_device() { (e.dur, e.dur) } else { (device, own) }
}

/// Host events regrouped into runs of whole subtrees: `(order, cuts)`, where run `k` is
/// `order[cuts[k]..cuts[k + 1]]`, about `pieces` runs in all.
///
/// `order` is host order split by the thread each event nests on (each thread's events in host order,
/// one thread after another): the tree links events of one such thread only. An event without a parent
/// emptied its thread's stack when it was nested, so every later event of that thread has its parent at
/// or after it: each thread's events split into independent subtrees at the events without a parent
/// (the first event of each thread is one). The runs are cut at such events, the first one in each
/// `pieces`-th of `order`; a subtree longer than that stays whole in one run.
fn tree_runs<'a>(t: &Trace, links: &'a Links, pieces: usize) -> (Cow<'a, [u32]>, Vec<usize>) {
    let host = &links.host_order;
    let size = host.len().div_ceil(pieces.max(1)).max(1);
    let thread = |i: u32| host_thread(t, &links.overhead_op, i);
    // Every host event on one thread (the torch backend's traces): the host order is that thread's, as is.
    let one_thread = host.first().is_none_or(|&first| {
        let th = thread(first);
        host.par_iter().all(|&i| thread(i) == th)
    });
    let order: Cow<'a, [u32]> = if one_thread {
        Cow::Borrowed(host)
    } else {
        let parts: Vec<HashMap<u32, Vec<u32>>> = host.par_chunks(size).map(|chunk| by_thread(chunk, thread)).collect();
        let mut threads: Vec<u32> = parts.iter().flat_map(|p| p.keys().copied()).collect();
        threads.sort_unstable();
        threads.dedup();
        // Each thread's parts in order, one thread after another.
        let in_order: Vec<&[u32]> =
            threads.iter().flat_map(|th| parts.iter().filter_map(move |p| p.get(th).map(Vec::as_slice))).collect();
        Cow::Owned(par::concat(&in_order))
    };
    let roots: Vec<usize> = (1..order.len().div_ceil(size))
        .into_par_iter()
        .filter_map(|k| (k * size..order.len().min((k + 1) * size)).find(|&p| links.parent[order[p] as usize] == NONE))
        .collect();
    let cuts = std::iter::once(0).chain(roots).chain(std::iter::once(order.len())).collect();
    (order, cuts)
}

/// `events` split by `thread`, each thread's in their order.
fn by_thread(events: &[u32], thread: impl Fn(u32) -> u32) -> HashMap<u32, Vec<u32>> {
    let mut out: HashMap<u32, Vec<u32>> = HashMap::default();
    // Events of one thread tend to come in a row: the last thread's list is kept at hand.
    let mut last: Option<(u32, Vec<u32>)> = None;
    for &i in events {
        let th = thread(i);
        match &mut last {
            Some((t, list)) if *t == th => list.push(i),
            _ => {
                if let Some((t, list)) = last.take() {
                    out.insert(t, list);
                }
                let mut list = out.remove(&th).unwrap_or_default();
                list.push(i);
                last = Some((th, list));
            }
        }
    }
    if let Some((t, list)) = last {
        out.insert(t, list);
    }
    out
}

/// Per-event cells that [`Fold`] and [`Sums`] read and write through a shared reference: `Cell`s on one
/// thread, atomics when runs on several threads share them. Each run reads and writes only its own
/// events ([`finish_times_threaded`]), so relaxed loads and stores (plain moves) are enough there.
trait Cells<T> {
    /// Cell `i`.
    fn at(&self, i: u32) -> T;
    /// Sets cell `i`.
    fn put(&self, i: u32, v: T);
}

impl<T: Copy> Cells<T> for [Cell<T>] {
    fn at(&self, i: u32) -> T {
        self[i as usize].get()
    }
    fn put(&self, i: u32, v: T) {
        self[i as usize].set(v);
    }
}

impl Cells<u32> for [AtomicU32] {
    fn at(&self, i: u32) -> u32 {
        self[i as usize].load(Ordering::Relaxed)
    }
    fn put(&self, i: u32, v: u32) {
        self[i as usize].store(v, Ordering::Relaxed);
    }
}

impl Cells<i64> for [AtomicI64] {
    fn at(&self, i: u32) -> i64 {
        self[i as usize].load(Ordering::Relaxed)
    }
    fn put(&self, i: u32, v: i64) {
        self[i as usize].store(v, Ordering::Relaxed);
    }
}

/// torch's `_remove_dup_nodes` on the host tree: cells indexed like the events.
struct Fold<'a, U: ?Sized, I: ?Sized> {
    /// Parent in the host tree; on return, the event each one ends up under ([`NONE`] for folded events).
    parent: &'a U,
    /// Own GPU time, ns; a fold hands the child's to its parent.
    own: &'a I,
    /// For a folded event, the event it was folded into (which may be folded in turn); [`NONE`] for the
    /// others, and for all to start with.
    folded: &'a U,
    /// Each event's number of children as the folds move them; 0 to start with.
    children: &'a U,
}

impl<U: Cells<u32> + ?Sized, I: Cells<i64> + ?Sized> Fold<'_, U, I> {
    /// Folds `run` (host events in host order, each with its parent): a child with its parent's name that
    /// is the parent's only child is folded into the parent (the parent takes its children and its
    /// kernels), in passes until one folds nothing; then each event's parent is set to the one it ends
    /// up under.
    ///
    /// A folded event is not rewritten out of its children's parent links: it points to the event it was
    /// folded into, and a parent is read through those pointers (with path halving), so a chain of n such
    /// events folds in O(n α(n)) instead of rescanning every later event for each fold (n events sharing
    /// one timestamp on one thread nest into one chain).
    fn run(&self, t: &Trace, run: &[u32]) {
        let (ev, children) = (&t.events, self.children);
        for &i in run {
            let p = self.parent.at(i);
            if p != NONE {
                children.put(p, children.at(p) + 1);
            }
        }
        loop {
            let mut changed = false;
            for &i in run {
                if self.folded.at(i) != NONE {
                    continue;
                }
                let p = self.resolve(self.parent.at(i));
                self.parent.put(i, p);
                if p == NONE {
                    continue;
                }
                if ev[p as usize].name == ev[i as usize].name && children.at(p) == 1 {
                    children.put(p, children.at(i));
                    self.own.put(p, self.own.at(i));
                    self.parent.put(i, NONE);
                    self.folded.put(i, p);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for &i in run {
            self.parent.put(i, self.resolve(self.parent.at(i)));
        }
    }

    /// The event that `i` was folded into, through any chain of folds: `i` itself if not folded, NONE
    /// for NONE. Halves the path it walks.
    fn resolve(&self, mut i: u32) -> u32 {
        while i != NONE && self.folded.at(i) != NONE {
            let next = self.folded.at(i);
            let after = self.folded.at(next);
            if after != NONE {
                self.folded.put(i, after);
            }
            i = next;
        }
        i
    }
}

/// The sums over the folded host tree: cells indexed like the events.
struct Sums<'a, U: ?Sized, I: ?Sized> {
    /// Parent in the folded tree ([`Fold`]).
    parent: &'a U,
    /// Own GPU time, ns, once folded.
    own: &'a [i64],
    /// Whether each event is a row (the folded ones are not, and are left out).
    counted: &'a [bool],
    /// Self CPU time, ns; 0 to start with.
    self_cpu: &'a I,
    /// Device time with the children's, ns; 0 to start with.
    device: &'a I,
}

impl<U: Cells<u32> + ?Sized, I: Cells<i64> + ?Sized> Sums<'_, U, I> {
    /// Self CPU time and device time with children over `run` (a folded run, host order), children
    /// before parents (reverse host order).
    fn run(&self, t: &Trace, run: &[u32]) {
        let (self_cpu, device) = (self.self_cpu, self.device);
        for &i in run.iter().rev() {
            if !self.counted[i as usize] {
                continue;
            }
            let dur = t.events[i as usize].dur;
            // self_cpu holds the children's CPU time until the event itself is reached.
            self_cpu.put(i, dur - self_cpu.at(i));
            let total = device.at(i) + self.own[i as usize];
            device.put(i, total);
            let p = self.parent.at(i);
            if p != NONE {
                self_cpu.put(p, self_cpu.at(p) + dur);
                device.put(p, device.at(p) + total);
            }
        }
    }
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
            let mut phases = par::Phases::start();
            let own = own_times_threaded(t, links);
            phases.lap("own_device_times");
            let times = finish_times_threaded(t, links, own, jobs * 4);
            phases.lap("fold_and_sums");
            let rows = totals_threaded(t, &times, jobs * 4);
            phases.lap("totals");
            phases.log("table", jobs);
            rows
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
