//! Linking: the host-side call tree (by time containment on each thread, as torch builds it), which op
//! launched each GPU activity, and the `nn.Module` frame that encloses each op.

use rustc_hash::FxHashMap as HashMap;

use super::model::{Category, Trace};

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
    /// For each profiler-overhead event, the op it interrupted (the innermost op enclosing its start).
    /// torch files the overhead under that op: same thread, and the op's id.
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
    /// Links a trace.
    pub fn new(t: &Trace) -> Self {
        let n = t.events.len();
        let mut parent = vec![NONE; n];
        let mut module = Vec::new();

        // Host tree, per thread, exactly as torch's EventList._populate_cpu_children.
        let mut host: Vec<u32> = (0..n as u32).filter(|&i| t.events[i as usize].cat.is_host()).collect();
        host.sort_unstable_by_key(|&i| {
            let e = &t.events[i as usize];
            (e.ts, std::cmp::Reverse(e.end()), i)
        });
        let overhead_op = overhead_owners(t, &host);
        let host_thread = |i: u32| match overhead_op.get(&i) {
            Some(&op) => t.events[op as usize].thread,
            None => t.events[i as usize].thread,
        };
        nest(t, &host, host_thread, |child, par| parent[child as usize] = par);

        // Module frames: nest module frames and ops together; an op's module is its innermost frame.
        let has_modules = t.events.iter().any(|e| e.cat == Category::Module);
        if has_modules {
            module = vec![NONE; n];
            let mut mix: Vec<u32> = (0..n as u32)
                .filter(|&i| {
                    let c = t.events[i as usize].cat;
                    c == Category::Module || c.is_host()
                })
                .collect();
            mix.sort_unstable_by_key(|&i| {
                let e = &t.events[i as usize];
                // Module frames first on ties: a module call encloses the ops it runs.
                (e.ts, std::cmp::Reverse(e.end()), e.cat != Category::Module, i)
            });
            let mut inner = vec![NONE; n];
            nest(t, &mix, |i| t.events[i as usize].thread, |child, par| inner[child as usize] = par);
            // Resolve each event's innermost *module* ancestor.
            for &i in &mix {
                let mut p = inner[i as usize];
                while p != NONE && t.events[p as usize].cat != Category::Module {
                    p = inner[p as usize];
                }
                module[i as usize] = p;
            }
        }

        // Launchers: External id -> op; correlation -> runtime call -> the op it runs in. Indexes are event
        // numbers sorted by id (4 bytes an entry: a quarter of a hash map's memory on huge traces); among
        // events with the same id the first in file order wins.
        let ops_by_ext =
            SortedIds::new(t, |e| matches!(e.cat, Category::CpuOp | Category::UserAnnotation), |e| e.external_id);
        let rt_by_corr =
            SortedIds::new(t, |e| matches!(e.cat, Category::Runtime | Category::Driver), |e| e.correlation);
        let find_op = |id: u32| ops_by_ext.first(t, id, |e| e.external_id);
        let find_rt = |id: u32| rt_by_corr.first(t, id, |e| e.correlation);
        let graph_names: std::collections::HashSet<u32> = t
            .events
            .iter()
            .filter(|e| matches!(e.cat, Category::Runtime | Category::Driver) && is_graph_launch(t.name(e.name)))
            .map(|e| e.name)
            .collect();
        let mut graph_replayed = Vec::new();
        let mut launcher = vec![NONE; n];
        for (i, e) in t.events.iter().enumerate() {
            launcher[i] = match e.cat {
                Category::Kernel | Category::Memcpy | Category::Memset => {
                    // The runtime call is looked up first only in traces with graph launches.
                    let rt = if graph_names.is_empty() { None } else { find_rt(e.correlation) };
                    if rt.is_some_and(|r| graph_names.contains(&t.events[r as usize].name)) {
                        graph_replayed.push(i as u32);
                    }
                    find_op(e.external_id)
                        .or_else(|| rt.or_else(|| find_rt(e.correlation)).and_then(|r| enclosing_op(t, &parent, r)))
                }
                Category::Runtime | Category::Driver => {
                    find_op(e.external_id).or_else(|| enclosing_op(t, &parent, i as u32))
                }
                // The op that waited: by External id, else through the synchronize call.
                Category::Sync => {
                    find_op(e.external_id).or_else(|| find_rt(e.correlation).and_then(|r| enclosing_op(t, &parent, r)))
                }
                _ => None,
            }
            .unwrap_or(NONE);
        }
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

/// Nests events (already sorted by start, longest first) per thread with a stack, calling `link(child,
/// parent)` for each event that lies inside another. A partial overlap is no nesting, as in torch.
fn nest(t: &Trace, sorted: &[u32], thread: impl Fn(u32) -> u32, mut link: impl FnMut(u32, u32)) {
    let mut stacks: HashMap<u32, Vec<u32>> = HashMap::default();
    for &i in sorted {
        let e = &t.events[i as usize];
        let stack = stacks.entry(thread(i)).or_default();
        while let Some(&top) = stack.last() {
            let p = &t.events[top as usize];
            if e.ts >= p.end() || e.end() > p.end() {
                stack.pop();
            } else {
                link(i, top);
                break;
            }
        }
        stack.push(i);
    }
}

/// For each overhead event (Kineto's `Activity Buffer Request`, `Lazy Function Loading`, ...), the innermost
/// op or annotation, on any thread, that is open at its start: the op whose correlation id was current when
/// the profiler paid that overhead.
fn overhead_owners(t: &Trace, sorted: &[u32]) -> HashMap<u32, u32> {
    let mut out = HashMap::default();
    let mut stacks: HashMap<u32, Vec<u32>> = HashMap::default();
    for &i in sorted {
        let e = &t.events[i as usize];
        match e.cat {
            Category::CpuOp | Category::UserAnnotation => {
                let stack = stacks.entry(e.thread).or_default();
                while stack.last().is_some_and(|&top| t.events[top as usize].end() <= e.ts) {
                    stack.pop();
                }
                stack.push(i);
            }
            Category::Overhead => {
                let mut best: Option<u32> = None;
                for stack in stacks.values_mut() {
                    while stack.last().is_some_and(|&top| t.events[top as usize].end() <= e.ts) {
                        stack.pop();
                    }
                    if let Some(&top) = stack.last()
                        && best.is_none_or(|b| t.events[top as usize].ts > t.events[b as usize].ts)
                    {
                        best = Some(top);
                    }
                }
                if let Some(b) = best {
                    out.insert(i, b);
                }
            }
            _ => {}
        }
    }
    out
}

/// Event numbers sorted by an id (then by position): a compact multimap from id to events.
pub(crate) struct SortedIds(Vec<u32>);

impl SortedIds {
    /// Indexes the events passing `keep` that have a non-zero `id`.
    pub(crate) fn new(
        t: &Trace,
        keep: impl Fn(&super::model::Event) -> bool,
        id: impl Fn(&super::model::Event) -> u32,
    ) -> Self {
        let mut v: Vec<u32> = (0..t.events.len() as u32)
            .filter(|&i| keep(&t.events[i as usize]) && id(&t.events[i as usize]) != 0)
            .collect();
        v.sort_unstable_by_key(|&i| (id(&t.events[i as usize]), i));
        SortedIds(v)
    }

    /// Every event with this id, first in file order first.
    fn all(&self, t: &Trace, want: u32, id: impl Fn(&super::model::Event) -> u32) -> &[u32] {
        let lo = self.0.partition_point(|&i| id(&t.events[i as usize]) < want);
        let hi = lo + self.0[lo..].partition_point(|&i| id(&t.events[i as usize]) == want);
        &self.0[lo..hi]
    }

    /// The first event (in file order) with this id.
    pub(crate) fn first(&self, t: &Trace, want: u32, id: impl Fn(&super::model::Event) -> u32) -> Option<u32> {
        if want == 0 {
            return None;
        }
        self.all(t, want, id).first().copied()
    }
}
