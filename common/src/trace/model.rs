//! The compact in-memory form of a trace: only the events the engine uses, with interned names.
//!
//! Memory grows with the retained events (about 56 bytes each plus distinct names), not with the bytes of
//! the file: flow events, metadata, `args` and non-module Python frames are dropped while scanning.

use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use std::path::Path;

use super::error::TraceError;
use super::reader::{ReadLimits, TraceReader};
use super::scan::{KernelArgs, Part, RawEvent, RawId, Scanned, TraceMeta, check_document, scan_part};

/// Index of an interned string in [`Trace::names`].
pub type NameId = u32;

/// What kind of event this is (the `cat` of a complete event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// An ATen / TorchScript operator (`cpu_op`, `Operator` in old traces).
    CpuOp,
    /// A `record_function` range (`user_annotation`), e.g. `ProfilerStep#3` or vLLM's step names.
    UserAnnotation,
    /// A CUDA/HIP runtime API call (`cuda_runtime`, `Runtime`).
    Runtime,
    /// A CUDA driver API call (`cuda_driver`), e.g. `cuLaunchKernel`.
    Driver,
    /// Profiler overhead (`overhead`), e.g. `Activity Buffer Request`.
    Overhead,
    /// An `nn.Module` frame from `with_modules`/`with_stack` (`python_function`).
    Module,
    /// A GPU kernel.
    Kernel,
    /// A GPU memory copy.
    Memcpy,
    /// A GPU memory set.
    Memset,
    /// The GPU-side span of a `record_function` range (`gpu_user_annotation`).
    GpuAnnotation,
    /// A stream or event synchronization (`cuda_sync`, recorded with `enable_cuda_sync_events`): torch
    /// counts it as a device row of the op that waited, but the GPU did no work in it, so it is in no GPU
    /// time or category.
    Sync,
    /// Anything else with a duration (`cuda_profiler_range`, `Trace`, ...): kept out of every table.
    Other,
}

impl Category {
    /// Maps a Kineto `cat` string (as bytes: the scanner hands text over unconverted).
    pub fn from_cat(cat: &[u8]) -> Self {
        match cat {
            b"cpu_op" | b"Operator" => Category::CpuOp,
            b"user_annotation" => Category::UserAnnotation,
            // Other accelerators' runtimes are host calls like CUDA's (torch: DeviceType.CPU), and their time
            // is not the launching op's self CPU time.
            b"cuda_runtime" | b"Runtime" | b"xpu_runtime" | b"mtia_runtime" | b"privateuse1_runtime" => {
                Category::Runtime
            }
            b"cuda_driver" | b"privateuse1_driver" => Category::Driver,
            b"overhead" => Category::Overhead,
            b"python_function" => Category::Module,
            // MTIA's command-processor events are its kernels.
            b"kernel" | b"Kernel" | b"mtia_ccp_events" => Category::Kernel,
            b"gpu_memcpy" | b"Memcpy" => Category::Memcpy,
            b"gpu_memset" | b"Memset" => Category::Memset,
            b"gpu_user_annotation" => Category::GpuAnnotation,
            b"cuda_sync" => Category::Sync,
            _ => Category::Other,
        }
    }

    /// Host-side events: the ones that nest by time on a thread (torch's `DeviceType.CPU`).
    pub fn is_host(self) -> bool {
        matches!(
            self,
            Category::CpuOp | Category::UserAnnotation | Category::Runtime | Category::Driver | Category::Overhead
        )
    }

    /// GPU activities that do work (and count as GPU busy time).
    pub fn is_gpu_activity(self) -> bool {
        matches!(self, Category::Kernel | Category::Memcpy | Category::Memset)
    }

    /// Device-side rows of torch's table.
    pub fn is_device(self) -> bool {
        self.is_gpu_activity() || matches!(self, Category::GpuAnnotation | Category::Sync)
    }
}

/// Folds a 64-bit id into 32 bits (0 stays "absent"): equal ids stay equal, and two positive ids of one
/// trace collide only if they differ by a multiple of 2^32 - 1, which no real trace comes near. A negative
/// id (which no profiler writes) folds as its magnitude: -5 and 5 collide. It keeps
/// [`Event`] at 40 bytes, which is most of the engine's memory on large traces.
pub fn fold_id(id: i64) -> u32 {
    if id == 0 {
        return 0;
    }
    const M: u64 = u32::MAX as u64;
    ((id.unsigned_abs() - 1) % M + 1) as u32
}

/// One retained event. Times are integer nanoseconds on the trace's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// Start, ns.
    pub ts: i64,
    /// Duration, ns.
    pub dur: i64,
    /// `External id` (0 when absent), folded into 32 bits by [`fold_id`].
    pub external_id: u32,
    /// CUPTI `correlation` (0 when absent); for module frames, the Python id. Folded by [`fold_id`].
    pub correlation: u32,
    /// Interned name.
    pub name: NameId,
    /// Index into [`Trace::threads`]: (pid, tid) for host events, (device, stream) for GPU events.
    pub thread: u32,
    /// Index into [`Trace::kernels`] for kernels with launch arguments, `u32::MAX` otherwise.
    pub kernel: u32,
    /// The kind of event.
    pub cat: Category,
}

impl Event {
    /// End time.
    pub fn end(&self) -> i64 {
        // Saturating: a start and a duration near the 64-bit limit (a malformed file) must not wrap
        // around and nest the event before its start.
        self.ts.saturating_add(self.dur)
    }
}

/// A `(pid, tid)` pair as written in the trace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tid {
    /// Integer id.
    Int(i64),
    /// String id (interned).
    Str(NameId),
    /// Absent.
    None,
}

/// Events of a trace that are not in its model, and why: the reader leaves out what it cannot count
/// rather than count it wrongly, and says so (`coord analyze` and `coord ingest` warn, a sweep's manifest
/// lists them per trace). Flow events, metadata, instants, counters, non-module Python frames and
/// Kineto's own `Trace` span are not work and are not counted here.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeftOut {
    /// Complete events (`ph` X) without a start time (`ts`).
    #[serde(default)]
    pub no_start: u64,
    /// Complete events without a valid duration (`dur` missing, not a number, or negative).
    #[serde(default)]
    pub no_duration: u64,
    /// Begin/end events (`ph` B, E) of ops, runtime calls or GPU activities: not read.
    #[serde(default)]
    pub begin_end: u64,
    /// Events without a phase the Trace Event Format defines (`ph` missing, not a string, or none of its
    /// letters): nothing says whether they are work, or how long.
    #[serde(default)]
    pub unknown_phase: u64,
    /// Complete events of categories the engine does not read, by category, most 8 named (the rest
    /// counted under `...`).
    #[serde(default)]
    pub categories: Vec<(String, u64)>,
    /// The name of the first event left out for its time or form, for the message.
    #[serde(default)]
    pub example: String,
}

impl LeftOut {
    /// Categories named before the rest are counted together.
    const NAMED_CATEGORIES: usize = 8;

    /// Whether nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.no_start == 0
            && self.no_duration == 0
            && self.begin_end == 0
            && self.unknown_phase == 0
            && self.categories.is_empty()
    }

    /// Events left out.
    pub fn total(&self) -> u64 {
        self.no_start
            + self.no_duration
            + self.begin_end
            + self.unknown_phase
            + self.categories.iter().map(|(_, n)| n).sum::<u64>()
    }

    fn note(&mut self, name: &[u8]) {
        if self.example.is_empty() {
            self.example = String::from_utf8_lossy(name).into_owned();
        }
    }

    fn category(&mut self, cat: &[u8]) {
        let cat = String::from_utf8_lossy(cat);
        let cat = if cat.is_empty() { "(none)" } else { &cat };
        self.count_category(cat, 1);
    }

    fn count_category(&mut self, cat: &str, n: u64) {
        let known = self.categories.iter().any(|(c, _)| c == cat);
        let named = self.categories.iter().filter(|(c, _)| c != "...").count();
        let key = if known || named < Self::NAMED_CATEGORIES { cat } else { "..." };
        match self.categories.iter_mut().find(|(c, _)| c == key) {
            Some(c) => c.1 += n,
            None => self.categories.push((key.to_string(), n)),
        }
    }

    /// Adds the counts of another part of the same trace (a piece read in parallel), which came after.
    pub fn add(&mut self, other: LeftOut) {
        self.no_start += other.no_start;
        self.no_duration += other.no_duration;
        self.begin_end += other.begin_end;
        self.unknown_phase += other.unknown_phase;
        for (c, n) in other.categories {
            self.count_category(&c, n);
        }
        if self.example.is_empty() {
            self.example = other.example;
        }
    }

    /// One line for people, `None` when nothing was left out: `3 events left out: 1 without a start time
    /// (ts), 2 without a valid duration (dur missing, not a number or negative) (the first: gemm); 77
    /// complete events of categories not read: cuda_profiler_range (77)`.
    pub fn describe(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        let timed = self.no_start + self.no_duration + self.begin_end + self.unknown_phase;
        if timed > 0 {
            let mut why = Vec::new();
            if self.no_start > 0 {
                why.push(format!("{} without a start time (ts)", self.no_start));
            }
            if self.no_duration > 0 {
                why.push(format!(
                    "{} without a valid duration (dur missing, not a number or negative)",
                    self.no_duration
                ));
            }
            if self.begin_end > 0 {
                why.push(format!("{} begin/end events (ph B/E; only complete events, ph X, are read)", self.begin_end));
            }
            if self.unknown_phase > 0 {
                why.push(format!(
                    "{} without a known phase (ph missing, not a string, or no letter of the Trace Event Format)",
                    self.unknown_phase
                ));
            }
            let events = if timed == 1 { "event" } else { "events" };
            parts.push(format!("{timed} {events} left out: {} (the first: `{}`)", why.join(", "), self.example));
        }
        if !self.categories.is_empty() {
            let n: u64 = self.categories.iter().map(|(_, n)| n).sum();
            let list: Vec<String> = self.categories.iter().map(|(c, n)| format!("{c} ({n})")).collect();
            let events = if n == 1 { "event" } else { "events" };
            parts.push(format!("{n} complete {events} of categories not read: {}", list.join(", ")));
        }
        Some(parts.join("; "))
    }
}

/// A parsed trace: the retained events in file order and the tables they index.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Retained events, in file order.
    pub events: Vec<Event>,
    /// Interned strings.
    pub names: Vec<Box<str>>,
    /// Distinct (pid, tid) pairs.
    pub threads: Vec<(Tid, Tid)>,
    /// Kernel launch arguments, each distinct configuration once ([`Event::kernel`] indexes it).
    pub kernels: Vec<KernelArgs>,
    /// Trace-level metadata.
    pub meta: TraceMeta,
    /// Flow events seen (not retained: kernels carry their correlation in `args`).
    pub flow_events: u64,
    /// Events not in the model, and why ([`LeftOut`]).
    pub left_out: LeftOut,
    /// The modelled work (FLOPs, bytes) of CPU ops with a FLOP model and recorded shapes, by event index
    /// (see [`crate::roofline`]). Empty for traces recorded without `record_shapes`.
    pub work: WorkMap,
    /// The [`EMBEDDING_OP`] calls with recorded shapes, by event index, ascending. Empty for traces
    /// recorded without `record_shapes`.
    pub lookups: Vec<Lookup>,
}

/// The op of an embedding lookup (`torch.nn.Embedding`, vLLM's `VocabParallelEmbedding`). The model's
/// token embedding is one; position and vision embeddings are others.
pub const EMBEDDING_OP: &[u8] = b"aten::embedding";

/// One [`EMBEDDING_OP`] call: `aten::embedding(weight [rows, dim], indices [...])`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// The call's event index.
    pub event: u32,
    /// Indices looked up: the product of the second input's sizes (`[8, 1]` for 8 decodes in
    /// transformers, `[4, 128]` for 4 prefills of 128 tokens, `[8]` in vLLM's flattened batches).
    pub indices: u64,
    /// Rows of the table (the vocabulary size for the token embedding; 0 when not recorded).
    pub rows: u64,
    /// Sequences, where the indices are two-dimensional: `[sequences, tokens per sequence]`, as
    /// transformers' models take `input_ids`; `None` for indices of another rank (vLLM's flat batches).
    pub sequences: Option<u64>,
}

impl Lookup {
    /// The lookup of event `event` from its recorded shapes; `None` when they do not say how many indices
    /// (no `Input Dims`, indices of no size or of size 0, a product past u64). Out of line: one call per
    /// step, kept out of the event loop's code.
    #[cold]
    #[inline(never)]
    pub fn of(event: u32, raw: &super::scan::RawShapes<'_>) -> Option<Self> {
        let shapes = crate::roofline::flops::Shapes::parse(raw)?;
        let dims = shapes.dims.get(1).filter(|d| !d.is_empty())?;
        let indices = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).filter(|&n| n > 0)?;
        let rows = shapes.dims.first().and_then(|w| w.first()).copied().unwrap_or(0);
        let sequences = (dims.len() == 2).then_some(dims[0]);
        Some(Lookup { event, indices, rows, sequences })
    }
}

/// Modelled work by event index: a vector sorted by index (events are pushed in order), half the memory
/// of a hash map for the tens of thousands of modelled calls of a large trace; looked up by binary search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkMap(Vec<(u32, crate::roofline::OpWork)>);

impl WorkMap {
    /// The work of event `i`.
    pub fn get(&self, i: &u32) -> Option<&crate::roofline::OpWork> {
        self.0.binary_search_by_key(i, |(k, _)| *k).ok().map(|p| &self.0[p].1)
    }

    /// The events of `events` (ascending event numbers) that have work, with it: one walk over the map's
    /// entries in their range, where a search for each event would take a binary search per event.
    pub fn of_ascending<'a>(
        &'a self,
        events: &'a [u32],
    ) -> impl Iterator<Item = (u32, &'a crate::roofline::OpWork)> + 'a {
        debug_assert!(events.is_sorted(), "of_ascending needs ascending event numbers");
        let mut at = events.first().map_or(0, |&first| self.0.partition_point(|(k, _)| *k < first));
        events.iter().filter_map(move |&i| {
            while self.0.get(at).is_some_and(|(k, _)| *k < i) {
                at += 1;
            }
            self.0.get(at).filter(|(k, _)| *k == i).map(|(_, w)| (i, w))
        })
    }

    /// Whether no event has modelled work.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (event index, work), ascending.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &crate::roofline::OpWork)> {
        self.0.iter().map(|(k, w)| (k, w))
    }

    /// Adds the work of event `i`, which must come after every event already here.
    fn push(&mut self, i: u32, w: crate::roofline::OpWork) {
        debug_assert!(self.0.last().is_none_or(|(k, _)| *k < i));
        self.0.push((i, w));
    }
}

impl Trace {
    /// Reads and parses a trace file (`.json`, `.json.gz`, `.json.zst`; detected by content).
    pub fn open(path: &Path, limits: &ReadLimits) -> Result<Self, TraceError> {
        let mut reader = TraceReader::open(path, *limits)?;
        Self::read(&mut reader, limits)
    }

    /// Parses a trace from an opened reader.
    pub fn read(reader: &mut TraceReader, limits: &ReadLimits) -> Result<Self, TraceError> {
        let (mut t, scanned) = Self::read_part(reader, limits, Part::default())?;
        check_document(reader.file(), &scanned, t.meta.event_count)?;
        // The vectors grew by doubling: up to half of their room is unused, and the link and table
        // stages allocate their own per-event vectors next (peak memory is reached there).
        t.events.shrink_to_fit();
        t.work.0.shrink_to_fit();
        check_times(reader.file(), &t)?;
        Ok(t)
    }

    /// Parses one piece of a trace split for parallel reading ([`super::parallel`]).
    pub(crate) fn read_part(
        reader: &mut TraceReader,
        limits: &ReadLimits,
        part: Part,
    ) -> Result<(Self, Scanned), TraceError> {
        let mut b = Builder::default();
        let scanned = scan_part(reader, limits, part, |ev| b.push(ev))?;
        let mut t = b.trace;
        t.meta = scanned.meta.clone();
        Ok((t, scanned))
    }

    /// Joins the pieces of one trace read in parallel ([`super::parallel`]), given in file order: one
    /// trace as a single read would build it. The names, threads, launch configurations and modelled work
    /// of the later pieces are merged into the first piece's tables (ids renumbered) on this thread; they
    /// are small. The events of the later pieces, millions of them, are copied with their ids renumbered
    /// on the current rayon pool, after the first piece's in its vector grown once to the exact size.
    pub(crate) fn concat(pieces: Vec<Trace>) -> Trace {
        let mut pieces = pieces.into_iter();
        let Some(mut out) = pieces.next() else { return Trace::default() };
        let mut tables = Tables::of(&out);
        // The first piece's events stay where they are: the vector grows once (glibc's realloc remaps a
        // large block rather than copying it) and the later pieces' events, renumbered, are written after
        // them on the pool. Writing every event into a new vector instead doubled the join's page faults
        // and copies.
        let mut events = std::mem::take(&mut out.events);
        let mut rest = Vec::new();
        for mut piece in pieces {
            let renumber = tables.merge(&mut out, &mut piece);
            rest.push((std::mem::take(&mut piece.events), renumber));
        }
        events.reserve_exact(rest.iter().map(|(e, _)| e.len()).sum());
        for (piece, renumber) in rest {
            events.par_extend(piece.par_iter().map(|&e| renumber.event(e)));
        }
        out.events = events;
        out
    }

    /// The string of an interned name.
    pub fn name(&self, id: NameId) -> &str {
        &self.names[id as usize]
    }

    /// The name of the first GPU in `deviceProperties`, if any.
    pub fn gpu_name(&self) -> Option<&str> {
        self.meta.devices.first().map(|(_, n)| n.as_str())
    }
}

/// The first piece's lookup tables while later pieces are merged into it by [`Trace::concat`].
struct Tables {
    names: HashMap<Box<str>, NameId>,
    threads: HashMap<(Tid, Tid), u32>,
    launches: HashMap<LaunchKey, u32>,
    /// Events of the pieces merged so far.
    events: u32,
}

/// How one piece's ids map to the merged trace's (indexed by the piece's ids).
struct Renumber {
    names: Vec<NameId>,
    threads: Vec<u32>,
    kernels: Vec<u32>,
}

impl Renumber {
    /// `e` with its ids renumbered.
    fn event(&self, mut e: Event) -> Event {
        e.name = self.names[e.name as usize];
        e.thread = self.threads[e.thread as usize];
        if e.kernel != u32::MAX {
            e.kernel = self.kernels[e.kernel as usize];
        }
        e
    }
}

impl Tables {
    fn of(t: &Trace) -> Self {
        Tables {
            names: t.names.iter().enumerate().map(|(i, n)| (n.clone(), i as NameId)).collect(),
            threads: t.threads.iter().enumerate().map(|(i, k)| (k.clone(), i as u32)).collect(),
            launches: t.kernels.iter().enumerate().map(|(i, k)| (launch_key(k), i as u32)).collect(),
            events: t.events.len() as u32,
        }
    }

    /// Merges everything of `piece` but its events into `out`, the trace so far (whose events were moved
    /// out): names, threads and launch configurations added when new, its modelled work and embedding
    /// lookups shifted past the events before it, its counts added, its trace-level members taken as one
    /// reader would (the last value wins). Returns the map of the piece's ids.
    fn merge(&mut self, out: &mut Trace, piece: &mut Trace) -> Renumber {
        let names: Vec<NameId> = std::mem::take(&mut piece.names)
            .into_iter()
            .map(|n| {
                let next = out.names.len() as NameId;
                *self.names.entry(n.clone()).or_insert_with(|| {
                    out.names.push(n);
                    next
                })
            })
            .collect();
        let remap = |t: &Tid| match t {
            Tid::Str(id) => Tid::Str(names[*id as usize]),
            other => other.clone(),
        };
        let threads: Vec<u32> = piece
            .threads
            .iter()
            .map(|(p, t)| {
                let key = (remap(p), remap(t));
                let next = out.threads.len() as u32;
                *self.threads.entry(key.clone()).or_insert_with(|| {
                    out.threads.push(key);
                    next
                })
            })
            .collect();
        let kernels: Vec<u32> = std::mem::take(&mut piece.kernels)
            .into_iter()
            .map(|k| launch_id(&mut out.kernels, &mut self.launches, k))
            .collect();
        for (k, w) in std::mem::take(&mut piece.work.0) {
            out.work.push(k + self.events, w);
        }
        out.lookups.extend(piece.lookups.drain(..).map(|l| Lookup { event: l.event + self.events, ..l }));
        self.events += piece.events.len() as u32;
        out.flow_events += piece.flow_events;
        out.left_out.add(std::mem::take(&mut piece.left_out));
        let m = std::mem::take(&mut piece.meta);
        out.meta.event_count += m.event_count;
        out.meta.devices.extend(m.devices);
        if m.trace_name.is_some() {
            out.meta.trace_name = m.trace_name;
        }
        if m.rank.is_some() || m.world_size.is_some() {
            (out.meta.rank, out.meta.world_size) = (m.rank, m.world_size);
        }
        Renumber { names, threads, kernels }
    }
}

/// The span of a trace's event times, and the sum of its events' durations, that the engine accepts:
/// 2^60 ns, 36 years. Every time the engine computes is a difference of two event times or a sum of
/// durations, kept in i64 nanoseconds (up to 2^63); under this bound a sum of eight such values still
/// fits. Each value alone was already bounded to 64 bits by the scanner, but a few of them (one kernel
/// of 7e15 µs, three times) wrapped the sums around without a word.
pub const TIME_LIMIT_NS: i64 = 1 << 60;

/// Refuses a trace whose events span more than [`TIME_LIMIT_NS`] (first start to last end) or whose
/// durations add up to more, naming the events. One pass over the events, after they are read.
pub(crate) fn check_times(file: &Path, t: &Trace) -> Result<(), TraceError> {
    let (mut first, mut last, mut total) = (None::<(i64, usize)>, None::<(i128, usize)>, 0i128);
    for (i, e) in t.events.iter().enumerate() {
        total += i128::from(e.dur);
        let end = i128::from(e.ts) + i128::from(e.dur);
        if first.is_none_or(|(ts, _)| e.ts < ts) {
            first = Some((e.ts, i));
        }
        if last.is_none_or(|(end_before, _)| end > end_before) {
            last = Some((end, i));
        }
    }
    let (Some((start, a)), Some((end, b))) = (first, last) else { return Ok(()) };
    let name = |i: usize| t.name(t.events[i].name);
    let what = if end - i128::from(start) > i128::from(TIME_LIMIT_NS) {
        format!(
            "its events span {} ns, from the start of `{}` to the end of `{}`",
            end - i128::from(start),
            name(a),
            name(b)
        )
    } else if total > i128::from(TIME_LIMIT_NS) {
        format!("its events' durations add up to {total} ns")
    } else {
        return Ok(());
    };
    Err(TraceError::Times { file: file.to_path_buf(), what })
}

/// Builds a [`Trace`] from scanned events.
#[derive(Default)]
struct Builder {
    trace: Trace,
    names: HashMap<Box<[u8]>, NameId>,
    threads: HashMap<(Tid, Tid), u32>,
    launches: HashMap<LaunchKey, u32>,
}

/// A launch configuration as a hashable key (its floats by bit pattern).
type LaunchKey = [u32; 11];

fn launch_key(k: &KernelArgs) -> LaunchKey {
    [
        k.grid[0],
        k.grid[1],
        k.grid[2],
        k.block[0],
        k.block[1],
        k.block[2],
        k.registers_per_thread,
        k.shared_memory,
        k.blocks_per_sm.to_bits(),
        k.warps_per_sm.to_bits(),
        k.occupancy_pct.to_bits(),
    ]
}

/// The index of `k` in `kernels`, added when new: a step's kernels repeat in every step, so distinct
/// launch configurations are few.
fn launch_id(kernels: &mut Vec<KernelArgs>, ids: &mut HashMap<LaunchKey, u32>, k: KernelArgs) -> u32 {
    *ids.entry(launch_key(&k)).or_insert_with(|| {
        kernels.push(k);
        (kernels.len() - 1) as u32
    })
}

impl Builder {
    /// The id of a name, given as the scanner's bytes (valid UTF-8: the scanner checked them).
    fn intern(&mut self, s: &[u8]) -> NameId {
        if let Some(&id) = self.names.get(s) {
            return id;
        }
        let id = self.trace.names.len() as NameId;
        self.trace.names.push(String::from_utf8_lossy(s).into());
        self.names.insert(s.into(), id);
        id
    }

    fn tid(&mut self, id: &RawId<'_>) -> Tid {
        match id {
            RawId::None => Tid::None,
            RawId::Int(v) => Tid::Int(*v),
            RawId::Str(s) => Tid::Str(self.intern(s.as_bytes())),
        }
    }

    fn push(&mut self, ev: &RawEvent<'_>) {
        match ev.ph {
            b'X' => {}
            b's' | b'f' | b't' => {
                self.trace.flow_events += 1;
                return;
            }
            // Begin/end pairs of ops or GPU activities: Kineto writes complete events; another exporter's
            // pairs are not read, and are said to be left out.
            b'B' | b'E' => {
                if Category::from_cat(&ev.cat) != Category::Other {
                    self.trace.left_out.begin_end += 1;
                    self.trace.left_out.note(&ev.name);
                }
                return;
            }
            // Metadata, instants, counters, async and object events, marks: nothing to count (the Trace
            // Event Format's phases).
            b'M' | b'i' | b'I' | b'C' | b'b' | b'n' | b'e' | b'S' | b'T' | b'p' | b'F' | b'N' | b'O' | b'D' | b'R'
            | b'P' | b'c' | b'v' | b'V' | b'(' | b')' => return,
            // No phase, or one no exporter writes: whether it is work, and how long, is unknown. Said,
            // not dropped in silence.
            _ => {
                self.trace.left_out.unknown_phase += 1;
                self.trace.left_out.note(&ev.name);
                return;
            }
        }
        let cat = Category::from_cat(&ev.cat);
        // Python frames: only nn.Module frames are kept (they give module paths).
        if cat == Category::Module && !ev.name.starts_with(b"nn.Module: ") {
            return;
        }
        if cat == Category::Other {
            // Kineto's own span of the profiling window (`Trace`) is not work; others are said.
            if ev.cat.as_ref() != b"Trace" {
                self.trace.left_out.category(&ev.cat);
            }
            return;
        }
        let Some(ts) = ev.ts_ns else {
            self.trace.left_out.no_start += 1;
            self.trace.left_out.note(&ev.name);
            return;
        };
        // A complete event without a duration (missing, not a number, negative) has no time to count:
        // left out and said, rather than counted as 0 µs.
        let Some(dur) = ev.dur_ns.filter(|&d| d >= 0) else {
            self.trace.left_out.no_duration += 1;
            self.trace.left_out.note(&ev.name);
            return;
        };
        let key = (self.tid(&ev.pid), self.tid(&ev.tid));
        let next = self.threads.len() as u32;
        let thread = *self.threads.entry(key.clone()).or_insert_with(|| {
            self.trace.threads.push(key);
            next
        });
        let kernel = match ev.kernel {
            Some(k) if cat == Category::Kernel => launch_id(&mut self.trace.kernels, &mut self.launches, k),
            _ => u32::MAX,
        };
        // Shapes are kept only for ops with a FLOP model and for embeddings (the scanner drops the rest).
        if cat == Category::CpuOp
            && let Some(raw) = &ev.shapes
        {
            let at = self.trace.events.len() as u32;
            if ev.name.as_ref() == EMBEDDING_OP {
                self.trace.lookups.extend(Lookup::of(at, raw));
            } else if let Ok(name) = std::str::from_utf8(&ev.name)
                && let Some(w) = crate::roofline::op_work(name, raw)
            {
                self.trace.work.push(at, w);
            }
        }
        let name = self.intern(&ev.name);
        let correlation = fold_id(if cat == Category::Module { ev.python_id } else { ev.correlation }.unwrap_or(0));
        self.trace.events.push(Event {
            ts,
            dur,
            external_id: fold_id(ev.external_id.unwrap_or(0)),
            correlation,
            name,
            thread,
            kernel,
            cat,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{LeftOut, WorkMap};

    #[test]
    fn events_the_model_cannot_count_are_left_out_and_said() {
        let text = r#"{"traceEvents": [
            {"ph": "X", "cat": "kernel", "name": "ok", "pid": 0, "tid": 7, "ts": 10, "dur": 5},
            {"ph": "X", "cat": "kernel", "name": "no_dur", "pid": 0, "tid": 7, "ts": 20},
            {"ph": "X", "cat": "kernel", "name": "null_dur", "pid": 0, "tid": 7, "ts": 30, "dur": null},
            {"ph": "X", "cat": "kernel", "name": "negative", "pid": 0, "tid": 7, "ts": 40, "dur": -3},
            {"ph": "X", "cat": "kernel", "name": "no_ts", "pid": 0, "tid": 7, "dur": 3},
            {"ph": "B", "cat": "cpu_op", "name": "begun", "pid": 1, "tid": 1, "ts": 50},
            {"ph": "E", "cat": "cpu_op", "name": "begun", "pid": 1, "tid": 1, "ts": 60},
            {"ph": "X", "cat": "cuda_profiler_range", "name": "r", "pid": 0, "tid": 7, "ts": 1, "dur": 90},
            {"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "pid": "Spans", "tid": 1, "ts": 1, "dur": 99},
            {"ph": "i", "cat": "cpu_instant_event", "name": "mark", "pid": 1, "tid": 1, "ts": 5},
            {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "python"}},
            {"cat": "kernel", "name": "no_ph", "pid": 0, "tid": 7, "ts": 60, "dur": 5},
            {"ph": "Xylophone", "cat": "kernel", "name": "long_ph", "pid": 0, "tid": 7, "ts": 70, "dur": 5},
            {"ph": 88, "cat": "kernel", "name": "number_ph", "pid": 0, "tid": 7, "ts": 80, "dur": 5},
            {"ph": "Q", "cat": "kernel", "name": "unknown_ph", "pid": 0, "tid": 7, "ts": 90, "dur": 5}
        ]}"#;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.json");
        std::fs::write(&path, text).expect("write");
        let t = crate::trace::Trace::open(&path, &Default::default()).expect("a trace");
        assert_eq!(t.events.len(), 1, "only the kernel with a start and a duration is in the model");
        let want = LeftOut {
            no_start: 1,
            no_duration: 3,
            begin_end: 2,
            unknown_phase: 4,
            categories: vec![("cuda_profiler_range".into(), 1)],
            example: "no_dur".into(),
        };
        assert_eq!(t.left_out, want);
        assert_eq!(t.left_out.total(), 11);
        assert_eq!(
            t.left_out.describe().as_deref(),
            Some(
                "10 events left out: 1 without a start time (ts), 3 without a valid duration (dur missing, not a \
                 number or negative), 2 begin/end events (ph B/E; only complete events, ph X, are read), 4 without \
                 a known phase (ph missing, not a string, or no letter of the Trace Event Format) (the first: \
                 `no_dur`); 1 complete event of categories not read: cuda_profiler_range (1)"
            )
        );
        // Parts of one trace read apart add up; past eight categories the rest are counted together.
        let mut a = LeftOut::default();
        for c in 0..9 {
            a.category(format!("c{c}").as_bytes());
        }
        a.add(LeftOut {
            no_duration: 2,
            example: "later".into(),
            categories: vec![("x".into(), 4)],
            ..Default::default()
        });
        assert_eq!((a.no_duration, a.example.as_str(), a.categories.len()), (2, "later", 9));
        assert_eq!(a.categories.last(), Some(&("...".to_string(), 5)));
    }
    use crate::roofline::{DType, OpWork};

    #[test]
    fn work_of_ascending_events_is_what_a_search_for_each_finds() {
        let mut m = WorkMap::default();
        for i in [2u32, 5, 9, 20] {
            m.push(i, OpWork { flops: u64::from(i), bytes: 1, dtype: DType::Bf16 });
        }
        for events in [&[][..], &[5], &[1, 2, 3, 9, 10, 20, 21], &[0, 1], &[21, 30], &[2, 5, 9, 20]] {
            let walked: Vec<(u32, u64)> = m.of_ascending(events).map(|(i, w)| (i, w.flops)).collect();
            let searched: Vec<(u32, u64)> = events.iter().filter_map(|&i| m.get(&i).map(|w| (i, w.flops))).collect();
            assert_eq!(walked, searched, "{events:?}");
        }
    }
}
