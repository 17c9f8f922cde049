//! The compact in-memory form of a trace: only the events the engine uses, with interned names.
//!
//! Memory grows with the retained events (about 56 bytes each plus distinct names), not with the bytes of
//! the file: flow events, metadata, `args` and non-module Python frames are dropped while scanning.

use rustc_hash::FxHashMap as HashMap;
use std::path::Path;

use super::error::TraceError;
use super::reader::{ReadLimits, TraceReader};
use super::scan::{KernelArgs, RawEvent, RawId, TraceMeta, scan};

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
    /// Maps a Kineto `cat` string.
    pub fn from_cat(cat: &str) -> Self {
        match cat {
            "cpu_op" | "Operator" => Category::CpuOp,
            "user_annotation" => Category::UserAnnotation,
            // Other accelerators' runtimes are host calls like CUDA's (torch: DeviceType.CPU), and their time
            // is not the launching op's self CPU time.
            "cuda_runtime" | "Runtime" | "xpu_runtime" | "mtia_runtime" | "privateuse1_runtime" => Category::Runtime,
            "cuda_driver" | "privateuse1_driver" => Category::Driver,
            "overhead" => Category::Overhead,
            "python_function" => Category::Module,
            // MTIA's command-processor events are its kernels.
            "kernel" | "Kernel" | "mtia_ccp_events" => Category::Kernel,
            "gpu_memcpy" | "Memcpy" => Category::Memcpy,
            "gpu_memset" | "Memset" => Category::Memset,
            "gpu_user_annotation" => Category::GpuAnnotation,
            "cuda_sync" => Category::Sync,
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

/// Folds a 64-bit id into 32 bits (0 stays "absent"): equal ids stay equal, and two ids of one trace
/// collide only if they differ by a multiple of 2^32 - 1, which no real trace comes near. It keeps
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
        self.ts + self.dur
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

/// A parsed trace: the retained events in file order and the tables they index.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Retained events, in file order.
    pub events: Vec<Event>,
    /// Interned strings.
    pub names: Vec<Box<str>>,
    /// Distinct (pid, tid) pairs.
    pub threads: Vec<(Tid, Tid)>,
    /// Kernel launch arguments.
    pub kernels: Vec<KernelArgs>,
    /// Trace-level metadata.
    pub meta: TraceMeta,
    /// Flow events seen (not retained: kernels carry their correlation in `args`).
    pub flow_events: u64,
    /// Events dropped because they had no start time.
    pub dropped: u64,
    /// The modelled work (FLOPs, bytes) of CPU ops with a FLOP model and recorded shapes, by event index
    /// (see [`crate::roofline`]). Empty for traces recorded without `record_shapes`.
    pub work: HashMap<u32, crate::roofline::OpWork>,
}

impl Trace {
    /// Reads and parses a trace file (`.json`, `.json.gz`, `.json.zst`; detected by content).
    pub fn open(path: &Path, limits: &ReadLimits) -> Result<Self, TraceError> {
        let mut reader = TraceReader::open(path, *limits)?;
        Self::read(&mut reader, limits)
    }

    /// Parses a trace from an opened reader.
    pub fn read(reader: &mut TraceReader, limits: &ReadLimits) -> Result<Self, TraceError> {
        let mut b = Builder::default();
        let meta = scan(reader, limits, |ev| b.push(ev))?;
        let mut t = b.trace;
        t.meta = meta;
        Ok(t)
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

/// Builds a [`Trace`] from scanned events.
#[derive(Default)]
struct Builder {
    trace: Trace,
    names: HashMap<Box<str>, NameId>,
    threads: HashMap<(Tid, Tid), u32>,
}

impl Builder {
    fn intern(&mut self, s: &str) -> NameId {
        if let Some(&id) = self.names.get(s) {
            return id;
        }
        let id = self.trace.names.len() as NameId;
        self.trace.names.push(s.into());
        self.names.insert(s.into(), id);
        id
    }

    fn tid(&mut self, id: &RawId<'_>) -> Tid {
        match id {
            RawId::None => Tid::None,
            RawId::Int(v) => Tid::Int(*v),
            RawId::Str(s) => Tid::Str(self.intern(s)),
        }
    }

    fn push(&mut self, ev: RawEvent<'_>) {
        match ev.ph {
            b'X' => {}
            b's' | b'f' | b't' => {
                self.trace.flow_events += 1;
                return;
            }
            _ => return,
        }
        let cat = Category::from_cat(&ev.cat);
        // Python frames: only nn.Module frames are kept (they give module paths).
        if cat == Category::Module && !ev.name.starts_with("nn.Module: ") {
            return;
        }
        if cat == Category::Other {
            return;
        }
        let Some(ts) = ev.ts_ns else {
            self.trace.dropped += 1;
            return;
        };
        let key = (self.tid(&ev.pid), self.tid(&ev.tid));
        let next = self.threads.len() as u32;
        let thread = *self.threads.entry(key.clone()).or_insert_with(|| {
            self.trace.threads.push(key);
            next
        });
        let kernel = match ev.kernel {
            Some(k) if cat == Category::Kernel => {
                self.trace.kernels.push(k);
                (self.trace.kernels.len() - 1) as u32
            }
            _ => u32::MAX,
        };
        if cat == Category::CpuOp
            && let Some(raw) = &ev.shapes
            && let Some(w) = crate::roofline::op_work(&ev.name, raw)
        {
            self.trace.work.insert(self.trace.events.len() as u32, w);
        }
        let name = self.intern(&ev.name);
        let correlation = fold_id(if cat == Category::Module { ev.python_id } else { ev.correlation }.unwrap_or(0));
        self.trace.events.push(Event {
            ts,
            dur: ev.dur_ns.unwrap_or(0).max(0),
            external_id: fold_id(ev.external_id.unwrap_or(0)),
            correlation,
            name,
            thread,
            kernel,
            cat,
        });
    }
}
