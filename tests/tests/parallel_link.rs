//! Linking and the table on several threads give exactly what one thread gives: every link, every
//! per-event time, every row in the same order with the same bits, on every fixture kind (Llama steps,
//! vLLM eager, CUDA graphs and tensor parallel ranks, and the external traces), and on synthetic traces
//! built to reach what the fixtures rarely hold: profiler overhead on several threads with ties between
//! them, and chains of duplicates to fold longer than the pieces the work is cut into.

use std::path::{Path, PathBuf};

use tracefleet_common::trace::key_averages::{
    EventTimes, KeyAverage, event_times_with_jobs_min, key_averages_with_jobs_min,
};
use tracefleet_common::trace::link::NONE;
use tracefleet_common::trace::{Category, Event, Links, ReadLimits, Trace};
use tracefleet_tests::fixture;

/// The files under `dir`, at any depth, whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("fixture dir").filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn llama() -> PathBuf {
    fixture("h200-llama-1b/multistep/decode_bs16_8steps.pt.trace.json.zst")
}

fn assert_same_links(a: &Links, b: &Links, what: &str) {
    assert!(a.parent == b.parent, "{what}: parent");
    assert!(a.launcher == b.launcher, "{what}: launcher");
    assert!(a.module == b.module, "{what}: module");
    assert!(a.host_order == b.host_order, "{what}: host_order");
    assert_eq!(a.overhead_op, b.overhead_op, "{what}: overhead_op");
    assert_eq!(a.graph_replayed, b.graph_replayed, "{what}: graph_replayed");
}

fn assert_same_times(a: &EventTimes, b: &EventTimes, what: &str) {
    assert!(a.counted == b.counted, "{what}: counted");
    assert!(a.self_cpu == b.self_cpu, "{what}: self_cpu");
    assert!(a.device == b.device, "{what}: device");
    assert!(a.self_device == b.self_device, "{what}: self_device");
}

/// A row with its floats as bits: equal means identical, not merely close.
fn bits(rows: &[KeyAverage]) -> Vec<(String, u64, [u64; 4])> {
    rows.iter()
        .map(|r| {
            let f =
                [r.cpu_time_total_us, r.self_cpu_time_total_us, r.device_time_total_us, r.self_device_time_total_us];
            (r.key.clone(), r.count, f.map(f64::to_bits))
        })
        .collect()
}

fn check(path: &Path) {
    let t = Trace::open(path, &ReadLimits::default()).expect("fixture parses");
    let what = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    check_trace(&t, &what);
}

/// Links, times and table of `t` on 2, 3 and 8 threads equal those of one thread; returns the one-thread
/// links and table.
fn check_trace(t: &Trace, what: &str) -> (Links, Vec<KeyAverage>) {
    // A threshold of 0 events sends even these small traces through the threaded code.
    let one = Links::with_jobs_min(t, 1, 0);
    let one_times = event_times_with_jobs_min(t, &one, 1, 0);
    let table = key_averages_with_jobs_min(t, &one, 1, 0);
    let one_rows = bits(&table);
    assert!(!one_rows.is_empty(), "{what}: empty table");
    for jobs in [2, 3, 8] {
        let what = format!("{what}, {jobs} jobs");
        let many = Links::with_jobs_min(t, jobs, 0);
        assert_same_links(&one, &many, &what);
        assert_same_times(&one_times, &event_times_with_jobs_min(t, &one, jobs, 0), &what);
        assert_eq!(one_rows, bits(&key_averages_with_jobs_min(t, &one, jobs, 0)), "{what}: table");
    }
    (one, table)
}

#[test]
fn threads_link_and_table_the_llama_trace_as_one_does() {
    check(&llama());
}

#[test]
fn threads_link_and_table_every_vllm_rank_as_one_does() {
    let ranks = files(&fixture("h200-vllm-0.25"), ".pt.trace.json.zst");
    assert!(ranks.len() >= 11, "vLLM ranks: {}", ranks.len());
    for p in &ranks {
        check(p);
    }
}

#[test]
fn threads_link_and_table_every_external_trace_as_one_does() {
    let ext = files(&fixture("external"), ".json.gz");
    assert_eq!(ext.len(), 11);
    for p in &ext {
        check(p);
    }
}

#[test]
fn small_traces_and_one_job_stay_on_one_thread() {
    // Below the threshold the threaded code is not used; the results are the one-thread ones all the same.
    let t = Trace::open(&llama(), &ReadLimits::default()).expect("fixture parses");
    assert!(t.events.len() < tracefleet_common::trace::link::PARALLEL_MIN_EVENTS);
    assert_same_links(&Links::new(&t), &Links::with_jobs(&t, 8), "default threshold");
}

#[test]
fn a_large_trace_summarized_on_several_threads_gives_the_one_thread_summary() {
    // The coordinator's parse pool summarizes large traces with `parse_jobs` threads: links and times on
    // the pool, steps and tables as before. Four copies of the 8-step fixture pass the event threshold.
    let z = std::fs::read(llama()).expect("fixture");
    let mut doc: serde_json::Value = serde_json::from_slice(&zstd::decode_all(&z[..]).expect("zstd")).expect("json");
    let events = doc["traceEvents"].as_array_mut().expect("traceEvents");
    let one_copy = events.clone();
    for _ in 0..3 {
        events.extend(one_copy.iter().cloned());
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("four.json");
    std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write");
    let t = Trace::open(&path, &ReadLimits::default()).expect("parses");
    assert!(t.events.len() >= tracefleet_common::trace::link::PARALLEL_MIN_EVENTS, "{} events", t.events.len());
    let summary = |jobs| {
        let opts = tracefleet_common::summary::AnalyzeOptions { parse_jobs: jobs, ..Default::default() };
        serde_json::to_string(&tracefleet_common::summary::summarize(&t, &opts)).expect("json")
    };
    let one = summary(1);
    assert!(one.contains("\"steps\":[{"), "steps found");
    assert_eq!(one, summary(3), "3 jobs");
}

/// A small deterministic generator (xorshift64): the synthetic traces need variety, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// True `pct` percent of the time.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Host threads of the synthetic traces; overhead events sit on the thread after them, GPU work on the
/// one after that.
const HOST_THREADS: u32 = 3;
const OVERHEAD_THREAD: u32 = HOST_THREADS;
const GPU_THREAD: u32 = HOST_THREADS + 1;

/// Builds a synthetic trace event by event (times in ns).
struct Synth {
    t: Trace,
    rng: Rng,
    /// The last External id handed out (op ids; runtime calls without one use correlations from the same
    /// range, so that torch's id collisions happen too).
    ids: u32,
}

impl Synth {
    fn new(seed: u64) -> Self {
        let mut t = Trace::default();
        let names = ["ProfilerStep#1", "aten::linear", "aten::mm", "aten::add", "aten::copy_", "chain"];
        let more = ["cudaLaunchKernel", "Activity Buffer Request", "gemm_kernel", "cudaStreamSynchronize"];
        t.names = names.iter().chain(&more).map(|&n| n.into()).collect();
        Synth { t, rng: Rng(seed | 1), ids: 0 }
    }

    fn name(&self, n: &str) -> u32 {
        self.t.names.iter().position(|m| &**m == n).expect("a known name") as u32
    }

    fn push(&mut self, cat: Category, ts: i64, dur: i64, thread: u32, name: &str, ids: (u32, u32)) -> u32 {
        let name = self.name(name);
        let (external_id, correlation) = ids;
        let e = Event { ts, dur, external_id, correlation, name, thread, kernel: u32::MAX, cat };
        self.t.events.push(e);
        self.t.events.len() as u32 - 1
    }

    /// An op over `[ts, ts + dur)` on `thread` with a subtree of up to `depth` levels below it: children
    /// that split its span (some sharing its start, some overlapping each other, which is no nesting),
    /// sometimes an only child of the same name (folded into it), and kernels it launches.
    fn op(&mut self, thread: u32, ts: i64, dur: i64, depth: u32) {
        const OPS: [&str; 4] = ["aten::linear", "aten::mm", "aten::add", "aten::copy_"];
        let name = OPS[self.rng.below(OPS.len() as u64) as usize];
        self.ids += 1;
        let id = self.ids;
        self.push(Category::CpuOp, ts, dur, thread, name, (id, 0));
        if self.rng.chance(40) && dur > 4 {
            self.launch(thread, ts + 1, id);
        }
        if depth == 0 || dur < 8 {
            return;
        }
        if self.rng.chance(15) {
            // An only child of the same name, sometimes over the very same span.
            let inset = self.rng.below(2) as i64;
            self.ops_named(name, thread, ts + inset, dur - 2 * inset, depth - 1);
            return;
        }
        let kids = self.rng.below(4);
        let mut at = ts + self.rng.below(2) as i64;
        for _ in 0..kids {
            let len = (self.rng.below(dur as u64 / 2) as i64).max(1);
            if at + len > ts + dur {
                break;
            }
            // Now and then a child that runs past its next sibling's start: a partial overlap.
            let over = if self.rng.chance(10) { len / 2 } else { 0 };
            self.op(thread, at, len, depth - 1);
            at += (len - over).max(1);
        }
    }

    /// [`Synth::op`] with a given name for the top op.
    fn ops_named(&mut self, name: &str, thread: u32, ts: i64, dur: i64, depth: u32) {
        self.ids += 1;
        let id = self.ids;
        self.push(Category::CpuOp, ts, dur, thread, name, (id, 0));
        if depth > 0 && dur >= 8 {
            self.op(thread, ts + 1, dur - 2, depth - 1);
        }
    }

    /// A kernel launch by op `id` at `ts` on `thread`: the runtime call and the kernel (and now and then
    /// a synchronization). The kernel's External id is usually its op's, sometimes the correlation (as in
    /// older traces, found through the runtime call), sometimes absent.
    fn launch(&mut self, thread: u32, ts: i64, id: u32) {
        let corr = 1 + self.rng.below(u64::from(self.ids) + 50) as u32;
        let rt_ext = if self.rng.chance(80) { id } else { 0 };
        self.push(Category::Runtime, ts, 1, thread, "cudaLaunchKernel", (rt_ext, corr));
        let ext = match self.rng.below(10) {
            0 => corr,
            1 => 0,
            _ => id,
        };
        let dur = 1 + self.rng.below(50) as i64;
        self.push(Category::Kernel, ts + 5, dur, GPU_THREAD, "gemm_kernel", (ext, corr));
        if self.rng.chance(10) {
            self.push(Category::Sync, ts + 2, 3, GPU_THREAD, "cudaStreamSynchronize", (id, corr));
        }
    }

    /// A long chain of same-name annotations over one span, each nested in the one before it in the
    /// file and the only child of it: one subtree that folds into its top event.
    fn chain(&mut self, thread: u32, ts: i64, links: u32) {
        for _ in 0..links {
            self.ids += 1;
            self.push(Category::UserAnnotation, ts, 5, thread, "chain", (self.ids, 0));
        }
    }

    /// Profiler overhead at `ts` on its own thread: it nests on the thread of the op it interrupted.
    fn overhead(&mut self, ts: i64) {
        let dur = 1 + self.rng.below(3) as i64;
        self.push(Category::Overhead, ts, dur, OVERHEAD_THREAD, "Activity Buffer Request", (0, 0));
    }
}

/// Steps on every host thread starting at the same times (so that ops of several threads tie on their
/// start), top-level ops between them, overhead events anywhere (inside ops, between steps, at an op's
/// start or end), and one chain of `chain` duplicates.
fn synthetic(seed: u64, steps: u32, chain: u32) -> Trace {
    let mut s = Synth::new(seed);
    let mut ts = 1_000;
    for step in 0..steps {
        let len = 400 + s.rng.below(400) as i64;
        for thread in 0..HOST_THREADS {
            // The annotation of the step on each thread, the same span on some.
            let dur = if s.rng.chance(50) { len } else { len - s.rng.below(100) as i64 };
            s.ids += 1;
            let id = s.ids;
            s.push(Category::UserAnnotation, ts, dur, thread, "ProfilerStep#1", (id, 0));
            let mut at = ts + s.rng.below(3) as i64;
            while at < ts + dur - 10 {
                let op = (s.rng.below(dur as u64 / 3) as i64).clamp(2, ts + dur - at);
                s.op(thread, at, op, 4);
                at += op + s.rng.below(3) as i64;
            }
        }
        if step == steps / 2 {
            s.chain(1, ts + len + 2, chain);
        }
        for _ in 0..s.rng.below(4) {
            let at = ts + s.rng.below(len as u64 + 20) as i64;
            s.overhead(at);
        }
        // Overhead at a step's start (every thread's step ties there), at an op's end (when it is no
        // longer open) and just before (when it is the op open for the longest while, far back in host
        // order if it is a step).
        if s.rng.chance(30) {
            s.overhead(ts);
        }
        for _ in 0..3 {
            let e = s.t.events[s.rng.below(s.t.events.len() as u64) as usize];
            if e.cat.is_host() {
                let at = e.end() - s.rng.below(2) as i64;
                s.overhead(at);
            }
        }
        ts += len + 20 + s.rng.below(20) as i64;
        // Top-level ops between steps, with nothing around them.
        s.op(0, ts, 10, 2);
        ts += 15;
    }
    // A background op open all along on a thread of its own: overhead just before its end has it, the
    // op first in host order, for owner; overhead after it has none.
    s.push(Category::UserAnnotation, 500, ts + 10 - 500, GPU_THREAD + 1, "ProfilerStep#1", (0, 0));
    s.overhead(ts + 9);
    s.overhead(ts + 20);
    s.t
}

#[test]
fn threads_link_and_table_synthetic_traces_as_one_does() {
    for seed in 1..=6 {
        let t = synthetic(seed, 40, 300);
        let (links, table) = check_trace(&t, &format!("synthetic {seed}"));
        // The cases are there: overhead events owned by ops of several threads, and the chain folded.
        let owners: std::collections::HashSet<u32> =
            links.overhead_op.values().map(|&op| t.events[op as usize].thread).collect();
        assert!(owners.len() > 1, "seed {seed}: overhead owners on threads {owners:?}");
        let chain = table.iter().find(|r| r.key == "chain").expect("the chain's row");
        assert_eq!(chain.count, 1, "seed {seed}: the chain folds into one event");
    }
}

/// Ops on `threads` host threads starting together and ending at `ends[k]`, then an overhead event inside
/// all of them: who owns it.
fn owner_of_tie(ends: &[i64]) -> (Trace, u32) {
    let mut s = Synth::new(1);
    for (thread, &end) in ends.iter().enumerate() {
        s.push(Category::CpuOp, 100, end - 100, thread as u32, "aten::mm", (thread as u32 + 1, 0));
    }
    let q = s.push(Category::Overhead, 120, 1, OVERHEAD_THREAD, "Activity Buffer Request", (0, 0));
    let links = Links::with_jobs_min(&s.t, 1, 0);
    let owner = links.overhead_op.get(&q).copied().unwrap_or(NONE);
    check_trace(&s.t, "tie");
    (s.t, owner)
}

#[test]
fn overhead_goes_to_the_op_last_in_host_order_when_starts_tie() {
    // Same start: the shorter op comes later in host order and owns the overhead.
    assert_eq!(owner_of_tie(&[200, 150, 300]).1, 1);
    // Same start and end on every thread: the last in the file, whatever order the threads' stacks are in.
    for threads in [2, 5, 17] {
        assert_eq!(owner_of_tie(&vec![200; threads]).1, threads as u32 - 1);
    }
}

#[test]
fn many_overhead_events_after_ended_ops_get_the_one_thread_owners() {
    // A shape that would make the threaded backward search quadratic (every overhead event after every
    // op has ended, most with nothing open): it takes the one-pass walk instead, with the same owners.
    let mut s = Synth::new(7);
    for k in 0..3000 {
        s.push(Category::CpuOp, 2 * k, 1, k as u32 % 3, "aten::add", (k as u32 + 1, 0));
    }
    s.push(Category::UserAnnotation, 10_000, 5_000, 0, "ProfilerStep#1", (90_000, 0));
    for k in 0..3000 {
        s.push(Category::Overhead, 8_000 + 3 * k, 1, OVERHEAD_THREAD, "Activity Buffer Request", (0, 0));
    }
    let (links, _) = check_trace(&s.t, "many overheads");
    // Those inside the annotation belong to it; those before it to no op.
    let owned = links.overhead_op.len();
    assert!(owned > 1000 && owned < 3000, "{owned} owned");
}
