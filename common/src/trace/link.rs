//! Linking: the host-side call tree (by time containment on each thread, as torch builds it), which op
//! launched each GPU activity, and the `nn.Module` frame that encloses each op.

use std::sync::atomic::Ordering;

use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;

use super::atomic_view;
use super::model::{Category, Event, Trace};
use super::par;
pub use super::par::PARALLEL_MIN_EVENTS;

/// "No such event".
pub const NONE: u32 = u32::MAX;

/// The links of a trace. Every vector is indexed like [`Trace::events`].
#[derive(Debug, Clone)]
pub struct Links {
    /// Parent in the host call tree (torch's `cpu_parent`), [`NONE`] for roots and GPU events.
    pub parent: Vec<u32>,
    /// For GPU activities: the CPU op (or annotation) that launched it; for runtime/driver calls: the op
    /// they run in. [`NONE`] when unknown.
    pub launcher: Vec<u32>,
    /// For host events: the innermost enclosing `nn.Module` frame; for module frames: the enclosing one.
    /// Empty when the trace has no module frames.
    pub module: Vec<u32>,
    /// Host events in the order torch sorts them (start, then longest first, then file order).
    pub host_order: Vec<u32>,
    /// For each profiler-overhead event, the op it interrupted (the innermost op enclosing its start; of
    /// the innermost ops of several threads, the one that started last, and on a tie of starts the one
    /// host order puts last: the shorter, then the later in the file). torch files the overhead under
    /// that op: same thread, and the op's id.
    pub overhead_op: HashMap<u32, u32>,
    /// GPU activities replayed by a CUDA graph (their correlation is a `cudaGraphLaunch`'s), in event
    /// order. Their `launcher` is the op around the graph launch, not the op that captured them.
    pub graph_replayed: Vec<u32>,
}

/// Runtime and driver calls that replay a CUDA graph.
pub fn is_graph_launch(name: &str) -> bool {
    name.starts_with("cudaGraphLaunch") || name.starts_with("cuGraphLaunch")
}

impl Links {
    /// Links a trace on one thread.
    pub fn new(t: &Trace) -> Self {
        Self::with_jobs(t, 1)
    }

    /// Links a trace on `jobs` threads; traces under [`PARALLEL_MIN_EVENTS`] events on one. The links are
    /// the same whatever `jobs` is.
    pub fn with_jobs(t: &Trace, jobs: usize) -> Self {
        Self::with_jobs_min(t, jobs, PARALLEL_MIN_EVENTS)
    }

    /// [`Links::with_jobs`] with another size threshold: traces of fewer than `min_events` retained events
    /// are linked on one thread (tests lower it to run the threaded code on small fixtures).
    pub fn with_jobs_min(t: &Trace, jobs: usize, min_events: usize) -> Self {
        match par::pool(jobs, t.events.len(), min_events) {
            Some(pool) => pool.install(|| Self::threaded(t, jobs)),
            None => Self::one_thread(t),
        }
    }

    fn one_thread(t: &Trace) -> Self {
        let n = t.events.len();
        let mut parent = vec![NONE; n];
        let mut module = Vec::new();

        // Host tree, per thread, exactly as torch's EventList._populate_cpu_children.
        let mut host: Vec<u32> = (0..n as u32).filter(|&i| t.events[i as usize].cat.is_host()).collect();
        // A stable sort takes the sorted runs the profiler writes (one per kind of host event) as they
        // are; the numbers are unique, so it gives the one order any sort would.
        host.sort_by_key(|&i| host_key(t, i as usize));
        let overhead_op = overhead_owners(t, &host);
        let host_thread = |i: u32| host_thread(t, &overhead_op, i);
        nest(t, &host, host_thread, |child, par| parent[child as usize] = par);

        // Module frames: nest module frames and ops together; an op's module is its innermost frame.
        let has_modules = t.events.iter().any(|e| e.cat == Category::Module);
        if has_modules {
            module = vec![NONE; n];
            let mut mix: Vec<u32> = (0..n as u32).filter(|&i| mix_key(t, i as usize).is_some()).collect();
            mix.sort_by_key(|&i| mix_key(t, i as usize));
            let mut inner = vec![NONE; n];
            nest(t, &mix, |i| t.events[i as usize].thread, |child, par| inner[child as usize] = par);
            for &i in &mix {
                module[i as usize] = innermost_module(t, &inner, i);
            }
        }

        let launch = Launch::new(t, false);
        let mut graph_replayed = Vec::new();
        let mut launcher = vec![NONE; n];
        let mut near = [0; 2];
        for (i, l) in launcher.iter_mut().enumerate() {
            let (op, replayed) = launch.of(t, &parent, i as u32, &mut near);
            *l = op;
            if replayed {
                graph_replayed.push(i as u32);
            }
        }
        Links { parent, launcher, module, host_order: host, overhead_op, graph_replayed }
    }

    /// [`Links::one_thread`] on the current rayon pool, step for step with the same results: the sorts
    /// sort (key, event) pairs, nesting runs on pieces of the sorted events joined in order, and the
    /// per-event passes are maps.
    fn threaded(t: &Trace, jobs: usize) -> Self {
        let n = t.events.len();
        let pieces = jobs * 4;
        let mut phases = par::Phases::start();

        let host = par::sorted_by_key(n, |i| t.events[i].cat.is_host().then(|| host_key(t, i)));
        // Overhead events are few, or none: most traces need no search.
        let overhead_op = if t.events.par_iter().any(|e| e.cat == Category::Overhead) {
            overhead_owners_threaded(t, &host, pieces)
        } else {
            HashMap::default()
        };
        phases.lap("host_order");
        let parent = nest_pieces(t, &host, |i| host_thread(t, &overhead_op, i), pieces);

        phases.lap("nest");
        let module = if t.events.par_iter().any(|e| e.cat == Category::Module) {
            let mix = par::sorted_by_key(n, |i| mix_key(t, i));
            let inner = nest_pieces(t, &mix, |i| t.events[i as usize].thread, pieces);
            // Events outside `mix` have no `inner` link, so they get NONE as in the one-thread pass.
            (0..n as u32).into_par_iter().map(|i| innermost_module(t, &inner, i)).collect()
        } else {
            Vec::new()
        };

        phases.lap("modules");
        let launch = Launch::new(t, true);
        phases.lap("launch_index");
        let (launcher, replayed): (Vec<u32>, Vec<bool>) =
            (0..n as u32).into_par_iter().map_init(|| [0; 2], |near, i| launch.of(t, &parent, i, near)).unzip();
        let graph_replayed = replayed.par_iter().enumerate().filter(|&(_, &r)| r).map(|(i, _)| i as u32).collect();
        phases.lap("launchers");
        phases.log("link", jobs);
        Links { parent, launcher, module, host_order: host, overhead_op, graph_replayed }
    }

    /// The chain of op/annotation ancestors of `i`, innermost first, `i` included.
    pub fn ancestors<'a>(&'a self, t: &'a Trace, i: u32) -> impl Iterator<Item = u32> + 'a {
        std::iter::successors(Some(i).filter(|&i| i != NONE), move |&j| {
            Some(self.parent[j as usize]).filter(|&p| p != NONE)
        })
        .filter(move |&j| matches!(t.events[j as usize].cat, Category::CpuOp | Category::UserAnnotation))
    }

    /// The module path of a host event, outermost first, e.g. `LlamaModel_0/LlamaDecoderLayer_3/LlamaMLP_3`.
    pub fn module_path(&self, i: u32) -> Vec<u32> {
        let at = |j: u32| self.module.get(j as usize).copied().unwrap_or(NONE);
        let mut out = Vec::new();
        let mut m = if i == NONE { NONE } else { at(i) };
        while m != NONE {
            out.push(m);
            m = at(m);
        }
        out.reverse();
        out
    }
}

/// The innermost op or annotation above `i` in the host tree.
fn enclosing_op(t: &Trace, parent: &[u32], i: u32) -> Option<u32> {
    let mut p = parent[i as usize];
    while p != NONE {
        if matches!(t.events[p as usize].cat, Category::CpuOp | Category::UserAnnotation) {
            return Some(p);
        }
        p = parent[p as usize];
    }
    None
}

/// torch's sort key of host events: start, then longest first (then file order, added by the sorts).
fn host_key(t: &Trace, i: usize) -> (i64, std::cmp::Reverse<i64>) {
    let e = &t.events[i];
    (e.ts, std::cmp::Reverse(e.end()))
}

/// Sort key of module frames and host events nested together; `None` for other events. Module frames
/// come first on ties: a module call encloses the ops it runs.
fn mix_key(t: &Trace, i: usize) -> Option<(i64, std::cmp::Reverse<i64>, bool)> {
    let e = &t.events[i];
    (e.cat == Category::Module || e.cat.is_host())
        .then(|| (e.ts, std::cmp::Reverse(e.end()), e.cat != Category::Module))
}

/// The thread a host event nests on: its own, or for profiler overhead, the thread of the op it ran in.
pub(crate) fn host_thread(t: &Trace, overhead_op: &HashMap<u32, u32>, i: u32) -> u32 {
    let e = &t.events[i as usize];
    // Only overhead events are in the map: the others need no lookup.
    let op = if e.cat == Category::Overhead { overhead_op.get(&i).copied() } else { None };
    op.map_or(e.thread, |op| t.events[op as usize].thread)
}

/// The innermost module frame above `i` in the mixed tree `inner` ([`NONE`] if none).
fn innermost_module(t: &Trace, inner: &[u32], i: u32) -> u32 {
    let mut p = inner[i as usize];
    while p != NONE && t.events[p as usize].cat != Category::Module {
        p = inner[p as usize];
    }
    p
}

/// What the launcher pass looks events up in.
struct Launch {
    ops_by_ext: SortedIds,
    rt_by_corr: SortedIds,
    /// Names of the runtime and driver calls that replay a CUDA graph.
    graph_names: std::collections::HashSet<u32>,
}

impl Launch {
    /// Builds the indexes, on the current rayon pool if `threaded`.
    fn new(t: &Trace, threaded: bool) -> Self {
        // External id -> op; correlation -> runtime call -> the op it runs in. Among events with the same
        // id the first in file order wins.
        let is_op = |e: &Event| matches!(e.cat, Category::CpuOp | Category::UserAnnotation);
        let is_call = |e: &Event| matches!(e.cat, Category::Runtime | Category::Driver);
        // Whether each name is a graph launch, asked once per name rather than once per call.
        let launches_graph: Vec<bool> = t.names.iter().map(|n| is_graph_launch(n)).collect();
        let is_graph = |e: &&Event| is_call(e) && launches_graph[e.name as usize];
        let (ops_by_ext, rt_by_corr, graph_names) = if threaded {
            // Two indexes at once: each one's sort check runs on one thread a while.
            let ((ops, rt), graphs) = rayon::join(
                || {
                    rayon::join(
                        || SortedIds::new_threaded(t, is_op, |e| e.external_id),
                        || SortedIds::new_threaded(t, is_call, |e| e.correlation),
                    )
                },
                || t.events.par_iter().filter(is_graph).map(|e| e.name).collect(),
            );
            (ops, rt, graphs)
        } else {
            (
                SortedIds::new(t, is_op, |e| e.external_id),
                SortedIds::new(t, is_call, |e| e.correlation),
                t.events.iter().filter(is_graph).map(|e| e.name).collect(),
            )
        };
        Launch { ops_by_ext, rt_by_corr, graph_names }
    }

    /// Event `i`'s launcher ([`NONE`] if none or not a launched event), and whether a CUDA graph replayed it.
    /// `near` holds where the last searches of the two indexes ended ([`SortedIds::with_id`]).
    fn of(&self, t: &Trace, parent: &[u32], i: u32, near: &mut [usize; 2]) -> (u32, bool) {
        let e = &t.events[i as usize];
        let [op_near, rt_near] = near;
        let mut find_op = |id: u32| self.ops_by_ext.with_id(id, op_near).next();
        let mut find_rt = |id: u32| self.rt_by_corr.with_id(id, rt_near).next();
        let mut replayed = false;
        let op = match e.cat {
            Category::Kernel | Category::Memcpy | Category::Memset => {
                // The runtime call is looked up first only in traces with graph launches.
                let rt = if self.graph_names.is_empty() { None } else { find_rt(e.correlation) };
                replayed = rt.is_some_and(|r| self.graph_names.contains(&t.events[r as usize].name));
                find_op(e.external_id)
                    .or_else(|| rt.or_else(|| find_rt(e.correlation)).and_then(|r| enclosing_op(t, parent, r)))
            }
            Category::Runtime | Category::Driver => find_op(e.external_id).or_else(|| enclosing_op(t, parent, i)),
            // The op that waited: by External id, else through the synchronize call.
            Category::Sync => {
                find_op(e.external_id).or_else(|| find_rt(e.correlation).and_then(|r| enclosing_op(t, parent, r)))
            }
            _ => None,
        };
        (op.unwrap_or(NONE), replayed)
    }
}

/// Whether event `i` lies inside `p` (torch: a partial overlap is no nesting).
fn encloses(t: &Trace, p: u32, i: u32) -> bool {
    let (e, p) = (&t.events[i as usize], &t.events[p as usize]);
    !(e.ts >= p.end() || e.end() > p.end())
}

/// Nests events (already sorted by start, longest first) per thread with a stack, calling `link(child,
/// parent)` for each event that lies inside another. A partial overlap is no nesting, as in torch.
fn nest(t: &Trace, sorted: &[u32], thread: impl Fn(u32) -> u32, mut link: impl FnMut(u32, u32)) {
    let mut stacks: HashMap<u32, Vec<u32>> = HashMap::default();
    for &i in sorted {
        let stack = stacks.entry(thread(i)).or_default();
        while let Some(&top) = stack.last() {
            if encloses(t, top, i) {
                link(i, top);
                break;
            }
            stack.pop();
        }
        stack.push(i);
    }
}

/// One piece of a [`nest_pieces`] pass, once nested on its own.
#[derive(Default)]
struct Piece {
    /// (thread, event) for the events whose parent, if any, lies before the piece, in order.
    open: Vec<(u32, u32)>,
    /// Each thread's stack at the end of the piece, bottom first.
    stacks: HashMap<u32, Vec<u32>>,
}

/// [`nest`] on the current rayon pool: the parent of every event (indexed like the events, [`NONE`] where
/// there is none). The sorted events are cut into `pieces` runs, each nested on its own from empty
/// stacks; an event that empties its stack there is left open. Joining the runs in order then replays
/// the one-thread pass: each open event pops the stack carried from the runs before it, exactly as
/// the one-thread pass would have once the run's own events were popped, and the run's final stacks go
/// on top of the carried ones.
fn nest_pieces(t: &Trace, sorted: &[u32], thread: impl Fn(u32) -> u32 + Sync, pieces: usize) -> Vec<u32> {
    let size = sorted.len().div_ceil(pieces.max(1)).max(1);
    // Each event's parent is written once, by the run that finds it or by the join.
    let mut parent = par::filled(t.events.len(), NONE);
    let cells = atomic_view::u32s(&mut parent);
    let link = |child: u32, par: u32| cells[child as usize].store(par, Ordering::Relaxed);
    let runs: Vec<Piece> = sorted
        .par_chunks(size)
        .map(|run| {
            let mut p = Piece::default();
            for &i in run {
                let th = thread(i);
                let stack = p.stacks.entry(th).or_default();
                loop {
                    match stack.last() {
                        Some(&top) if encloses(t, top, i) => {
                            link(i, top);
                            break;
                        }
                        Some(_) => {
                            stack.pop();
                        }
                        None => {
                            p.open.push((th, i));
                            break;
                        }
                    }
                }
                stack.push(i);
            }
            p
        })
        .collect();
    let mut carried: HashMap<u32, Vec<u32>> = HashMap::default();
    for r in runs {
        for &(th, i) in &r.open {
            let stack = carried.entry(th).or_default();
            while let Some(&top) = stack.last() {
                if encloses(t, top, i) {
                    link(i, top);
                    break;
                }
                stack.pop();
            }
        }
        for (th, s) in r.stacks {
            carried.entry(th).or_default().extend(s);
        }
    }
    parent
}

/// For each overhead event (Kineto's `Activity Buffer Request`, `Lazy Function Loading`, ...), the op it
/// interrupted: the innermost op or annotation, on any thread, open at its start, whose correlation id was
/// current when the profiler paid that overhead. Each thread's innermost open op is the top of its stack;
/// of those, the one that comes last in `sorted` (host order) wins: the latest start, and on a tie the one
/// that order puts last (the shorter, then the later in the file). The tie rule does not depend on how the
/// threads' stacks are stored, so [`overhead_owners_threaded`] finds the same owners.
fn overhead_owners(t: &Trace, sorted: &[u32]) -> HashMap<u32, u32> {
    let mut out = HashMap::default();
    // Per thread, the positions in `sorted` of its open ops, innermost last.
    let mut stacks: HashMap<u32, Vec<usize>> = HashMap::default();
    let pop_ended = |stack: &mut Vec<usize>, ts: i64| {
        while stack.last().is_some_and(|&top| t.events[sorted[top] as usize].end() <= ts) {
            stack.pop();
        }
    };
    for (q, &i) in sorted.iter().enumerate() {
        let e = &t.events[i as usize];
        match e.cat {
            Category::CpuOp | Category::UserAnnotation => {
                let stack = stacks.entry(e.thread).or_default();
                pop_ended(stack, e.ts);
                stack.push(q);
            }
            Category::Overhead => {
                let tops = stacks.values_mut().filter_map(|stack| {
                    pop_ended(stack, e.ts);
                    stack.last().copied()
                });
                if let Some(best) = tops.max() {
                    out.insert(i, sorted[best]);
                }
            }
            _ => {}
        }
    }
    out
}

/// Positions of `sorted` per block of [`overhead_owners_threaded`]'s backward search.
const OWNER_BLOCK: usize = 1024;

/// [`overhead_owners`] on the current rayon pool, `pieces` blocks at least on small traces.
///
/// Start times never decrease along `sorted`, so an op whose end is after overhead event `q`'s start was
/// never popped by the stack pass before `q` (each pop there needs a later start at or after the op's
/// end), and every op above it on its thread's stack at `q` ends by `q`'s start and is popped at `q`: the
/// top of each thread's stack at `q` is that thread's last op before `q` in `sorted` that is still open at
/// `q`'s start. The owner, the last of those tops in `sorted`, is therefore the last op before `q` in
/// `sorted` that is still open, whatever its thread. Each overhead event searches backwards for it,
/// skipping the blocks of `sorted` whose ops all end by its start.
fn overhead_owners_threaded(t: &Trace, sorted: &[u32], pieces: usize) -> HashMap<u32, u32> {
    let block = sorted.len().div_ceil(pieces.max(1)).clamp(1, OWNER_BLOCK);
    // Per block: the latest end of its ops (i64::MIN if none) and the positions of its overhead events.
    let blocks: Vec<(i64, Vec<usize>)> = sorted
        .par_chunks(block)
        .enumerate()
        .map(|(b, chunk)| {
            let (mut last_end, mut overheads) = (i64::MIN, Vec::new());
            for (k, &i) in chunk.iter().enumerate() {
                let e = &t.events[i as usize];
                match e.cat {
                    Category::CpuOp | Category::UserAnnotation => last_end = last_end.max(e.end()),
                    Category::Overhead => overheads.push(b * block + k),
                    _ => {}
                }
            }
            (last_end, overheads)
        })
        .collect();
    // Each search walks back over up to every earlier block and scans up to two blocks: with many
    // overhead events and no op open (a crafted file), that is quadratic. Past a bound linear in the
    // trace, the one-pass stack walk is used instead; it finds the same owners.
    let overheads: usize = blocks.iter().map(|(_, o)| o.len()).sum();
    if overheads.saturating_mul(blocks.len() + 2 * block) > 16 * sorted.len() + (1 << 20) {
        return overhead_owners(t, sorted);
    }
    let last_end: Vec<i64> = blocks.iter().map(|&(end, _)| end).collect();
    blocks
        .par_iter()
        .flat_map_iter(|(_, overheads)| overheads.iter().copied())
        .filter_map(|q| last_open_op(t, sorted, &last_end, block, q).map(|op| (sorted[q], op)))
        .collect()
}

/// The last op or annotation before position `q` of `sorted` that is open at event `sorted[q]`'s start
/// (ends after it), if any. `last_end[b]` is the latest end of the ops in block `b` (positions
/// `b * block ..`): a block whose ops all end by then holds none and is skipped whole.
fn last_open_op(t: &Trace, sorted: &[u32], last_end: &[i64], block: usize, q: usize) -> Option<u32> {
    let ts = t.events[sorted[q] as usize].ts;
    let open = |p: usize| {
        let e = &t.events[sorted[p] as usize];
        matches!(e.cat, Category::CpuOp | Category::UserAnnotation) && e.end() > ts
    };
    let own = q / block;
    // `q`'s own block is searched below `q` only, so its latest end (which may be a later op's) is no guide.
    (0..=own).rev().filter(|&b| b == own || last_end[b] > ts).find_map(|b| {
        let start = b * block;
        let stop = if b == own { q } else { start + block };
        (start..stop).rev().find(|&p| open(p)).map(|p| sorted[p])
    })
}

/// (id, event number) pairs sorted: a compact multimap from id to events, searched without reading the
/// events (8 bytes an entry: half of a hash map's memory on huge traces).
pub(crate) struct SortedIds(Vec<(u32, u32)>);

impl SortedIds {
    /// Indexes the numbers `0..n` by `id(i)`, leaving out those without one (`None` or 0). The entries
    /// are counted first, so that the index is allocated once at its size: grown by doubling, it could
    /// take up to twice the memory, at the peak of a one-core run.
    pub(crate) fn by(n: usize, id: impl Fn(usize) -> Option<u32>) -> Self {
        let id = |i: usize| id(i).filter(|&k| k != 0);
        let mut v = Vec::with_capacity((0..n).filter(|&i| id(i).is_some()).count());
        v.extend((0..n).filter_map(|i| id(i).map(|k| (k, i as u32))));
        par::sort_one_thread(&mut v);
        SortedIds(v)
    }

    /// [`SortedIds::by`] on the current rayon pool.
    pub(crate) fn by_threaded(n: usize, id: impl Fn(usize) -> Option<u32> + Sync) -> Self {
        SortedIds(par::sorted_pairs(n, |i| id(i).filter(|&k| k != 0)))
    }

    /// Indexes the events passing `keep` that have a non-zero `id`.
    pub(crate) fn new(t: &Trace, keep: impl Fn(&Event) -> bool, id: impl Fn(&Event) -> u32) -> Self {
        let mut v: Vec<(u32, u32)> = (0..t.events.len() as u32)
            .filter_map(|i| {
                let e = &t.events[i as usize];
                Some((id(e), i)).filter(|&(k, _)| k != 0 && keep(e))
            })
            .collect();
        par::sort_one_thread(&mut v);
        SortedIds(v)
    }

    /// [`SortedIds::new`] on the current rayon pool.
    pub(crate) fn new_threaded(
        t: &Trace,
        keep: impl Fn(&Event) -> bool + Sync,
        id: impl Fn(&Event) -> u32 + Sync,
    ) -> Self {
        Self::by_threaded(t.events.len(), |i| Some(&t.events[i]).filter(|e| keep(e)).map(&id))
    }

    /// The events with id `want`, in file order (none for 0). The search starts from `near`, where the
    /// last one ended, and moves it to where this one does: ids are looked up mostly in increasing order
    /// (a trace's ids grow with time), so the answer is usually a few entries on, where a binary search
    /// over millions of entries would miss the cache at every step.
    pub(crate) fn with_id<'a>(&'a self, want: u32, near: &mut usize) -> impl Iterator<Item = u32> + 'a {
        let at = if want == 0 {
            self.0.len()
        } else {
            *near = lower_bound_near(&self.0, *near, want);
            *near
        };
        self.0[at..].iter().take_while(move |&&(k, _)| k == want).map(|&(_, i)| i)
    }
}

/// The first position of `pairs` (sorted) whose id is not below `want`, searched outwards from `from` in
/// steps that double, then by halves: O(log d) steps for an answer d positions away.
fn lower_bound_near(pairs: &[(u32, u32)], from: usize, want: u32) -> usize {
    let below = |p: usize| pairs[p].0 < want;
    let from = from.min(pairs.len());
    // The answer lies in lo..=hi.
    let (lo, hi) = if from < pairs.len() && below(from) {
        let (mut lo, mut step) = (from + 1, 1);
        loop {
            let probe = lo + step;
            if probe >= pairs.len() {
                break (lo, pairs.len());
            }
            if !below(probe) {
                break (lo, probe);
            }
            (lo, step) = (probe + 1, step * 2);
        }
    } else {
        let (mut hi, mut step) = (from, 1);
        loop {
            if hi == 0 {
                break (0, 0);
            }
            let probe = hi.saturating_sub(step);
            if below(probe) {
                break (probe + 1, hi);
            }
            (hi, step) = (probe, step * 2);
        }
    };
    lo + pairs[lo..hi].partition_point(|&(id, _)| id < want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_near_the_last_answer_finds_what_a_binary_search_finds() {
        // Ids with repeats and gaps, searched for from every starting point, for ids in and around them.
        let ids = [1u32, 1, 2, 5, 5, 5, 9, 12, 12, 40];
        let pairs: Vec<(u32, u32)> = ids.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
        for from in 0..=pairs.len() + 2 {
            for want in 0..=42 {
                let expect = pairs.partition_point(|&(id, _)| id < want);
                assert_eq!(lower_bound_near(&pairs, from, want), expect, "from {from}, want {want}");
            }
        }
        assert_eq!(lower_bound_near(&[], 0, 7), 0);
    }
}
