//! The sweep file's schema, its validation and its expansion into points.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostic, SweepErrors, line_col, nearest};

/// Decode or prefill: what each profiled forward step runs. The one mode type of the project: the
/// sweep file, the wire (`tracefleet_proto` converts) and the aggregate's series all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// B sequences decoding, one token each per step.
    Decode,
    /// B prefills of `input_len` tokens per step.
    Prefill,
}

impl Mode {
    /// Every mode, in the order the tables list them.
    pub const ALL: [Mode; 2] = [Mode::Decode, Mode::Prefill];

    /// As written in sweep files, folder names and tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Decode => "decode",
            Mode::Prefill => "prefill",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Not `decode` or `prefill` (the text given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}`; expected {expected}")]
pub struct UnknownName {
    what: &'static str,
    given: String,
    expected: &'static str,
}

impl std::str::FromStr for Mode {
    type Err = UnknownName;

    /// Parses `decode` or `prefill`.
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Mode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| UnknownName {
            what: "mode",
            given: s.into(),
            expected: "decode or prefill",
        })
    }
}

/// Which workload runs the points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Replays an existing results folder.
    Replay,
    /// PyTorch + transformers on the GPU.
    Torch,
    /// vLLM's offline engine.
    Vllm,
    /// Any command.
    Command,
}

impl Backend {
    /// As written.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Replay => "replay",
            Backend::Torch => "torch",
            Backend::Vllm => "vllm",
            Backend::Command => "command",
        }
    }
}

/// Spread or each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Each point once over the matching agents.
    Spread,
    /// Every point on every matching agent.
    Each,
}

impl Placement {
    /// Both placements.
    pub const ALL: [Placement; 2] = [Placement::Spread, Placement::Each];

    /// As written in sweep files.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Spread => "spread",
            Placement::Each => "each",
        }
    }
}

impl std::str::FromStr for Placement {
    type Err = UnknownName;

    /// Parses `spread` or `each`.
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Placement::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| UnknownName {
            what: "placement",
            given: s.into(),
            expected: "spread or each",
        })
    }
}

/// Which agents a sweep may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSelector {
    /// Glob on GPU names (e.g. `NVIDIA H200*`).
    pub gpu: Option<String>,
    /// Labels every agent must carry.
    pub labels: BTreeMap<String, String>,
    /// Host names (agent names); empty: any.
    pub hosts: Vec<String>,
}

/// Profiler options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profiler {
    /// `record_shapes`.
    pub record_shapes: bool,
    /// `with_stack`.
    pub with_stack: bool,
    /// `with_modules`.
    pub with_modules: bool,
}

/// The replay backend's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Folder with the traces, on the agents' hosts.
    pub dir: String,
    /// Pause between files, ms.
    pub delay_ms: u32,
}

/// The torch backend's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TorchTable {
    /// Interpreter (empty: the agent's `--python`).
    pub python: String,
    /// `bfloat16` (default) or `float16`.
    pub dtype: String,
    /// Attention kernels: `flash` (default), `cudnn` or `auto`; empty means the default.
    pub attention: String,
}

/// The `[gpu]` table: what the agent does to the GPU around a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuTable {
    /// Lock the SM clock at this frequency (MHz) during the job; `None` leaves clocks alone.
    pub lock_clocks_mhz: Option<u32>,
}

/// The vLLM backend's table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VllmTable {
    /// Interpreter.
    pub python: String,
    /// Capture full CUDA graphs for the sweep's decode batch sizes (eager by default: graph replays hide
    /// which op launched a kernel).
    pub cuda_graphs: bool,
    /// `auto` (the model's own; bfloat16 for the named shapes), `bfloat16` or `float16`; empty means auto.
    pub dtype: String,
    /// The engine's `max_model_len`, tokens; `None`: the job's longest prompt plus output.
    pub max_model_len: Option<u32>,
    /// The engine's `gpu_memory_utilization`, a fraction in (0, 1]; `None`: vLLM's default (0.9).
    pub gpu_memory_utilization: Option<f64>,
    /// Tensor-parallel size: GPUs of one agent per job (one trace per rank); `None`: 1.
    pub tensor_parallel: Option<u32>,
}

/// vLLM model dtypes (`[vllm] dtype`).
pub const VLLM_DTYPES: &[&str] = &["auto", "bfloat16", "float16"];

/// A validated sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Name.
    pub name: String,
    /// Mode.
    pub mode: Mode,
    /// Backend.
    pub backend: Backend,
    /// Model (a named shape or a local folder), for GPU backends.
    pub model: Option<String>,
    /// Batch sizes, in the order given (ranges expanded).
    pub batch_sizes: Vec<u32>,
    /// Input lengths.
    pub input_lens: Vec<u32>,
    /// Output tokens (decode).
    pub output_len: u32,
    /// Warm-up steps before profiling.
    pub warmup_steps: u32,
    /// Profiled steps per point (one trace each).
    pub profile_steps: u32,
    /// Repeats of each point.
    pub repeats: u32,
    /// Placement.
    pub placement: Placement,
    /// Agent selector.
    pub agents: AgentSelector,
    /// Profiler options.
    pub profiler: Profiler,
    /// Where `coord sweep` writes the results (default `results/<name>`).
    pub output_dir: String,
    /// The replay table, when the backend is replay.
    pub replay: Option<Replay>,
    /// The torch table.
    pub torch: TorchTable,
    /// The vLLM table.
    pub vllm: VllmTable,
    /// The command template, when the backend is command.
    pub command: Option<String>,
    /// The `[gpu]` table.
    pub gpu: GpuTable,
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// `decode-bs8-in128`, with `-r2` for repeats after the first.
    pub id: String,
    /// Mode.
    pub mode: Mode,
    /// Batch size.
    pub batch_size: u32,
    /// Input length.
    pub input_len: u32,
    /// Output length.
    pub output_len: u32,
}

impl Sweep {
    /// Every point: batch sizes × input lengths × repeats.
    pub fn points(&self) -> Vec<Point> {
        let mut out = Vec::new();
        for r in 0..self.repeats.max(1) {
            for &il in &self.input_lens {
                for &bs in &self.batch_sizes {
                    let suffix = if r == 0 { String::new() } else { format!("-r{}", r + 1) };
                    out.push(Point {
                        id: format!("{}-bs{bs}-in{il}{suffix}", self.mode.name()),
                        mode: self.mode,
                        batch_size: bs,
                        input_len: il,
                        output_len: self.output_len,
                    });
                }
            }
        }
        out
    }
}

const TOP: &[&str] = &[
    "name",
    "mode",
    "backend",
    "model",
    "batch_sizes",
    "input_len",
    "output_len",
    "warmup_steps",
    "profile_steps",
    "repeats",
    "placement",
    "agents",
    "profiler",
    "output",
    "replay",
    "torch",
    "vllm",
    "command",
    "gpu",
];
const AGENTS: &[&str] = &["gpu", "labels", "hosts"];
const PROFILER: &[&str] = &["record_shapes", "with_stack", "with_modules"];
const OUTPUT: &[&str] = &["dir"];
const REPLAY: &[&str] = &["dir", "delay_ms"];
const TORCH: &[&str] = &["python", "dtype", "attention"];
const GPU: &[&str] = &["lock_clocks_mhz"];
/// Torch attention choices (`[torch] attention`).
pub const ATTENTION: &[&str] = &["flash", "cudnn", "auto"];
const VLLM: &[&str] = &["python", "cuda_graphs", "dtype", "max_model_len", "gpu_memory_utilization", "tensor_parallel"];
const COMMAND: &[&str] = &["run"];
const RANGE: &[&str] = &["from", "to", "step"];
/// Largest batch size or length accepted (a typo guard, not a hardware limit).
const MAX_VALUE: i64 = 1 << 20;

/// Collects diagnostics while reading the document.
struct Checker<'t> {
    text: &'t str,
    diags: Vec<(usize, Diagnostic)>,
}

impl Checker<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.diags.push((span.start, Diagnostic { line, col, message: message.into(), hint }));
    }

    fn unknown_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], what: &str) {
        for k in table.keys() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                let hint = nearest(k.get_ref(), allowed).map(|n| format!("did you mean `{n}`?"));
                let hint = hint.or_else(|| Some(format!("valid keys {what}: {}", allowed.join(", "))));
                self.err(k.span(), format!("unknown key `{}`", k.get_ref()), hint);
            }
        }
    }

    fn string(&mut self, v: &Spanned<DeValue<'_>>, key: &str) -> Option<String> {
        match v.get_ref().as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.err(v.span(), format!("`{key}` must be a string"), None);
                None
            }
        }
    }

    fn int(&mut self, v: &Spanned<DeValue<'_>>, key: &str, min: i64) -> Option<u32> {
        let parsed =
            v.get_ref().as_integer().and_then(|i| i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok());
        match parsed {
            Some(n) if (min..=MAX_VALUE).contains(&n) => Some(n as u32),
            Some(n) => {
                self.err(v.span(), format!("`{key}` must be between {min} and {MAX_VALUE}, not {n}"), None);
                None
            }
            // Digits past what 64 bits hold: a number, too large.
            None if v.get_ref().as_integer().is_some_and(|i| {
                i.as_str().trim_start_matches(['-', '+']).bytes().all(|c| c.is_ascii_digit() || c == b'_')
            }) =>
            {
                let text = v.get_ref().as_integer().map_or("", |i| i.as_str());
                self.err(v.span(), format!("`{key}` must be between {min} and {MAX_VALUE}, not {text}"), None);
                None
            }
            None => {
                let what = if min > 0 { "a positive integer" } else { "a non-negative integer" };
                self.err(v.span(), format!("`{key}` must be {what}"), None);
                None
            }
        }
    }

    /// A number in `(0, 1]` (integers accepted).
    fn fraction(&mut self, v: &Spanned<DeValue<'_>>, key: &str) -> Option<f64> {
        let x = match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(i) => i.as_str().replace('_', "").parse::<f64>().ok(),
            _ => None,
        };
        match x {
            Some(x) if x > 0.0 && x <= 1.0 => Some(x),
            _ => {
                self.err(
                    v.span(),
                    format!("`{key}` must be a fraction above 0 and at most 1"),
                    Some("e.g. 0.85".into()),
                );
                None
            }
        }
    }

    fn bool(&mut self, v: &Spanned<DeValue<'_>>, key: &str) -> Option<bool> {
        let b = v.get_ref().as_bool();
        if b.is_none() {
            self.err(v.span(), format!("`{key}` must be true or false"), None);
        }
        b
    }

    fn table<'a, 'i>(&mut self, v: &'a Spanned<DeValue<'i>>, key: &str) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.err(v.span(), format!("`{key}` must be a table"), None);
                None
            }
        }
    }

    /// A number, a list of numbers, or `{ from, to, step }`.
    fn values(&mut self, v: &Spanned<DeValue<'_>>, key: &str) -> Option<Vec<u32>> {
        match v.get_ref() {
            DeValue::Integer(_) => self.int(v, key, 1).map(|n| vec![n]),
            DeValue::Array(items) => {
                if items.is_empty() {
                    self.err(v.span(), format!("`{key}` is empty"), Some("give at least one value".into()));
                    return None;
                }
                let vals: Vec<Option<u32>> = items.iter().map(|i| self.int(i, key, 1)).collect();
                // A value listed twice would make two points with one id: said here, where it stands.
                let mut seen = std::collections::HashSet::new();
                let mut repeated = false;
                for (item, val) in items.iter().zip(&vals) {
                    if let Some(n) = val
                        && !seen.insert(*n)
                    {
                        self.err(item.span(), format!("`{key}` lists {n} twice"), Some("list each value once".into()));
                        repeated = true;
                    }
                }
                if repeated {
                    return None;
                }
                vals.into_iter().collect()
            }
            DeValue::Table(t) => {
                self.unknown_keys(t, RANGE, &format!("of a `{key}` range"));
                let get = |k: &str| t.iter().find(|(name, _)| name.get_ref() == k).map(|(_, v)| v);
                let from = match get("from") {
                    Some(x) => self.int(x, &format!("{key}.from"), 1),
                    None => {
                        self.err(v.span(), format!("`{key}` range needs `from`"), None);
                        None
                    }
                };
                let to = match get("to") {
                    Some(x) => self.int(x, &format!("{key}.to"), 1),
                    None => {
                        self.err(v.span(), format!("`{key}` range needs `to`"), None);
                        None
                    }
                };
                let step = match get("step") {
                    Some(x) => self.int(x, &format!("{key}.step"), 1),
                    None => Some(1),
                };
                let (from, to, step) = (from?, to?, step?);
                if from > to {
                    self.err(
                        v.span(),
                        format!("`{key}` range is empty: from {from} is above to {to}"),
                        Some(format!("swap them: {{ from = {to}, to = {from} }}")),
                    );
                    return None;
                }
                Some((from..=to).step_by(step as usize).collect())
            }
            _ => {
                self.err(v.span(), format!("`{key}` must be a number, a list, or {{ from, to, step }}"), None);
                None
            }
        }
    }
}

/// Parses and validates a sweep file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Sweep, SweepErrors> {
    let fail = |diagnostics: Vec<Diagnostic>| SweepErrors { file: file.to_string(), diagnostics };
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            let mut message = e.message().lines().next().unwrap_or("invalid TOML").to_string();
            // The parser's span covers the offending text: for a key given twice, the key, named here.
            if message == "duplicate key"
                && let Some(key) = e.span().and_then(|s| text.get(s)).map(str::trim).filter(|k| !k.is_empty())
            {
                message = format!("duplicate key `{key}`");
            }
            return Err(fail(vec![Diagnostic { line, col, message: format!("invalid TOML: {message}"), hint: None }]));
        }
    };
    let root = doc.get_ref();
    let mut c = Checker { text, diags: Vec::new() };
    c.unknown_keys(root, TOP, "at the top level");
    let get = |k: &str| root.iter().find(|(name, _)| name.get_ref() == k).map(|(_, v)| v);
    let at_top = 0..0;

    let name = match get("name") {
        Some(v) => c.string(v, "name"),
        None => {
            c.err(at_top.clone(), "missing `name`", Some("add `name = \"my-sweep\"`".into()));
            None
        }
    };
    if let (Some(n), Some(v)) = (&name, get("name"))
        && (n.is_empty() || n.len() > 100 || !n.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)))
    {
        c.err(v.span(), format!("`name` {n:?} must be 1-100 letters, digits, '-', '_' or '.'"), None);
    }
    let mode = match get("mode") {
        Some(v) => match c.string(v, "mode").map(|s| (s.parse::<Mode>(), s)) {
            Some((Ok(m), _)) => Some(m),
            Some((Err(e), other)) => {
                let hint = nearest(&other, &Mode::ALL.map(Mode::name)).map(|n| format!("did you mean `{n}`?"));
                c.err(v.span(), e.to_string(), hint);
                None
            }
            None => None,
        },
        None => {
            c.err(at_top.clone(), "missing `mode`", Some("add `mode = \"decode\"` or `mode = \"prefill\"`".into()));
            None
        }
    };
    let backend = match get("backend") {
        Some(v) => match c.string(v, "backend").as_deref() {
            Some("replay") => Some(Backend::Replay),
            Some("torch") => Some(Backend::Torch),
            Some("vllm") => Some(Backend::Vllm),
            Some("command") => Some(Backend::Command),
            Some(other) => {
                let hint =
                    nearest(other, &["replay", "torch", "vllm", "command"]).map(|n| format!("did you mean `{n}`?"));
                c.err(v.span(), format!("unknown backend `{other}`; expected replay, torch, vllm or command"), hint);
                None
            }
            None => None,
        },
        None => {
            c.err(
                at_top.clone(),
                "missing `backend`",
                Some("add `backend = \"replay\"` (or torch, vllm, command)".into()),
            );
            None
        }
    };
    let model = get("model").and_then(|v| c.string(v, "model"));
    let batch_sizes = match get("batch_sizes") {
        Some(v) => c.values(v, "batch_sizes"),
        None => {
            c.err(
                at_top.clone(),
                "missing `batch_sizes`",
                Some("e.g. `batch_sizes = { from = 1, to = 255, step = 2 }`".into()),
            );
            None
        }
    };
    let input_lens = match get("input_len") {
        Some(v) => c.values(v, "input_len"),
        None => Some(vec![128]),
    };
    let output_len = match get("output_len") {
        Some(v) => {
            let n = c.int(v, "output_len", 0);
            if mode == Some(Mode::Prefill) {
                c.err(
                    v.span(),
                    "`output_len` does not apply to prefill: each profiled forward is one prefill",
                    Some("remove `output_len`, or use mode = \"decode\"".into()),
                );
            }
            n
        }
        None => Some(if mode == Some(Mode::Decode) { 100 } else { 0 }),
    };
    let warmup_steps = get("warmup_steps").map_or(Some(5), |v| c.int(v, "warmup_steps", 0));
    let profile_steps = get("profile_steps").map_or(Some(3), |v| c.int(v, "profile_steps", 1));
    let repeats = get("repeats").map_or(Some(1), |v| c.int(v, "repeats", 1));
    let placement = match get("placement") {
        Some(v) => match c.string(v, "placement").map(|s| (s.parse::<Placement>(), s)) {
            Some((Ok(p), _)) => Some(p),
            Some((Err(e), other)) => {
                let hint =
                    nearest(&other, &Placement::ALL.map(Placement::name)).map(|n| format!("did you mean `{n}`?"));
                c.err(v.span(), e.to_string(), hint);
                None
            }
            None => None,
        },
        None => Some(Placement::Spread),
    };
    let mut agents = AgentSelector::default();
    if let Some(t) = get("agents").and_then(|v| c.table(v, "agents")) {
        c.unknown_keys(t, AGENTS, "of [agents]");
        for (k, v) in t.iter() {
            match k.get_ref().as_ref() {
                "gpu" => {
                    agents.gpu = c.string(v, "agents.gpu");
                    if let Some(Err(e)) = agents.gpu.as_deref().map(|g| crate::glob::Patterns::new(&[g])) {
                        c.err(v.span(), format!("`agents.gpu`: {e}"), None);
                    }
                }
                "hosts" => match v.get_ref() {
                    DeValue::Array(items) => {
                        agents.hosts = items.iter().filter_map(|i| c.string(i, "agents.hosts")).collect();
                    }
                    _ => c.err(v.span(), "`agents.hosts` must be a list of host names", None),
                },
                "labels" => {
                    if let Some(lt) = c.table(v, "agents.labels") {
                        for (lk, lv) in lt.iter() {
                            if let Some(s) = c.string(lv, "agents.labels") {
                                agents.labels.insert(lk.get_ref().to_string(), s);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut profiler = Profiler { record_shapes: true, with_stack: false, with_modules: false };
    if let Some(t) = get("profiler").and_then(|v| c.table(v, "profiler")) {
        c.unknown_keys(t, PROFILER, "of [profiler]");
        for (k, v) in t.iter() {
            let key = format!("profiler.{}", k.get_ref());
            match k.get_ref().as_ref() {
                "record_shapes" => profiler.record_shapes = c.bool(v, &key).unwrap_or(true),
                "with_stack" => profiler.with_stack = c.bool(v, &key).unwrap_or(false),
                "with_modules" => profiler.with_modules = c.bool(v, &key).unwrap_or(false),
                _ => {}
            }
        }
    }
    let mut output_dir = None;
    if let Some(t) = get("output").and_then(|v| c.table(v, "output")) {
        c.unknown_keys(t, OUTPUT, "of [output]");
        if let Some((_, v)) = t.iter().find(|(k, _)| k.get_ref() == "dir") {
            output_dir = c.string(v, "output.dir");
        }
    }
    let mut replay = None;
    match (backend, get("replay")) {
        (_, Some(v)) => {
            if let Some(t) = c.table(v, "replay") {
                c.unknown_keys(t, REPLAY, "of [replay]");
                let dir = t.iter().find(|(k, _)| k.get_ref() == "dir").and_then(|(_, v)| c.string(v, "replay.dir"));
                let delay = t
                    .iter()
                    .find(|(k, _)| k.get_ref() == "delay_ms")
                    .map_or(Some(0), |(_, v)| c.int(v, "replay.delay_ms", 0));
                match dir {
                    Some(dir) => replay = Some(Replay { dir, delay_ms: delay.unwrap_or(0) }),
                    None => c.err(v.span(), "[replay] needs `dir`, the folder of traces to replay", None),
                }
            }
        }
        (Some(Backend::Replay), None) => c.err(
            at_top.clone(),
            "backend `replay` needs a [replay] table",
            Some("add `[replay]` with `dir = \"path/to/results\"`".into()),
        ),
        _ => {}
    }
    let mut torch = TorchTable::default();
    if let Some(t) = get("torch").and_then(|v| c.table(v, "torch")) {
        c.unknown_keys(t, TORCH, "of [torch]");
        for (k, v) in t.iter() {
            match k.get_ref().as_ref() {
                "python" => torch.python = c.string(v, "torch.python").unwrap_or_default(),
                "dtype" => match c.string(v, "torch.dtype").as_deref() {
                    Some(d @ ("bfloat16" | "float16")) => torch.dtype = d.to_string(),
                    Some(d) => c.err(v.span(), format!("`torch.dtype` must be bfloat16 or float16, not {d:?}"), None),
                    None => {}
                },
                "attention" => match c.string(v, "torch.attention") {
                    Some(a) if ATTENTION.contains(&a.as_str()) => torch.attention = a,
                    Some(a) => {
                        let hint = nearest(&a, ATTENTION).map(|n| format!("did you mean `{n}`?"));
                        c.err(v.span(), format!("`torch.attention` must be flash, cudnn or auto, not {a:?}"), hint);
                    }
                    None => {}
                },
                _ => {}
            }
        }
    }
    let mut vllm = VllmTable::default();
    if let Some(t) = get("vllm").and_then(|v| c.table(v, "vllm")) {
        c.unknown_keys(t, VLLM, "of [vllm]");
        for (k, v) in t.iter() {
            match k.get_ref().as_ref() {
                "python" => vllm.python = c.string(v, "vllm.python").unwrap_or_default(),
                "cuda_graphs" => vllm.cuda_graphs = c.bool(v, "vllm.cuda_graphs").unwrap_or(false),
                "dtype" => match c.string(v, "vllm.dtype") {
                    Some(d) if VLLM_DTYPES.contains(&d.as_str()) => vllm.dtype = d,
                    Some(d) => {
                        let hint = nearest(&d, VLLM_DTYPES).map(|n| format!("did you mean `{n}`?"));
                        c.err(v.span(), format!("`vllm.dtype` must be auto, bfloat16 or float16, not {d:?}"), hint);
                    }
                    None => {}
                },
                "max_model_len" => vllm.max_model_len = c.int(v, "vllm.max_model_len", 1),
                "gpu_memory_utilization" => {
                    vllm.gpu_memory_utilization = c.fraction(v, "vllm.gpu_memory_utilization");
                }
                "tensor_parallel" => vllm.tensor_parallel = c.int(v, "vllm.tensor_parallel", 1),
                _ => {}
            }
        }
    }
    let mut gpu = GpuTable::default();
    if let Some(t) = get("gpu").and_then(|v| c.table(v, "gpu")) {
        c.unknown_keys(t, GPU, "of [gpu]");
        if let Some((_, v)) = t.iter().find(|(k, _)| k.get_ref() == "lock_clocks_mhz") {
            match c.int(v, "gpu.lock_clocks_mhz", 1) {
                Some(_) if vllm.tensor_parallel.is_some_and(|n| n > 1) => c.err(
                    v.span(),
                    "`gpu.lock_clocks_mhz` is not supported with `vllm.tensor_parallel` above 1 (the agent locks \
                     the clocks of one GPU per job)"
                        .to_string(),
                    None,
                ),
                Some(mhz) if (100..=5000).contains(&mhz) => gpu.lock_clocks_mhz = Some(mhz),
                Some(mhz) => c.err(
                    v.span(),
                    format!("`gpu.lock_clocks_mhz` must be a clock in MHz between 100 and 5000, not {mhz}"),
                    Some("e.g. 1980 for an H100/H200's maximum SM clock (nvidia-smi -q -d SUPPORTED_CLOCKS)".into()),
                ),
                None => {}
            }
        }
    }
    let mut command = None;
    if let Some(t) = get("command").and_then(|v| c.table(v, "command")) {
        c.unknown_keys(t, COMMAND, "of [command]");
        command = t.iter().find(|(k, _)| k.get_ref() == "run").and_then(|(_, v)| c.string(v, "command.run"));
    }
    // vLLM stops a request at output_len tokens: every decode step from the prefill's token through the
    // warm-up and profiled steps must still hold all B requests.
    if let (Some(Backend::Vllm), Some(Mode::Decode), Some(out), Some(w), Some(p)) =
        (backend, mode, output_len, warmup_steps, profile_steps)
    {
        let need = 1 + w + p;
        if out < need {
            let at = get("output_len").map_or(at_top.clone(), |v| v.span());
            c.err(
                at,
                format!(
                    "`output_len` {out} does not cover the prefill's token, {w} warm-up and {p} profiled decode steps"
                ),
                Some(format!("set `output_len` to at least {need}")),
            );
        }
    }
    if let (Some(mml), Some(ils)) = (vllm.max_model_len, &input_lens) {
        let longest = ils.iter().max().copied().unwrap_or(0)
            + if mode == Some(Mode::Decode) { output_len.unwrap_or(0) } else { 1 };
        if mml < longest {
            let at = get("vllm").map_or(at_top.clone(), |v| v.span());
            c.err(
                at,
                format!("`vllm.max_model_len` {mml} is shorter than the longest request ({longest} tokens: prompt plus output)"),
                Some(format!("raise it to at least {longest}, or leave it out")),
            );
        }
    }
    let backend_at = get("backend").map_or(at_top.clone(), |v| v.span());
    match backend {
        Some(Backend::Torch | Backend::Vllm) if model.is_none() => c.err(
            backend_at,
            format!("backend `{}` needs `model`", backend.map_or("", |b| b.name())),
            Some("a named shape (llama-3.2-1b, llama-3.1-8b, qwen2.5-1.5b) or a local model folder".into()),
        ),
        Some(Backend::Command) if command.is_none() => c.err(
            backend_at,
            "backend `command` needs a [command] table with `run`",
            Some("e.g. run = \"./profile.sh --batch {batch_size} --out {out_dir}\"".into()),
        ),
        _ => {}
    }

    if !c.diags.is_empty() {
        let mut d = c.diags;
        d.sort_by_key(|(off, _)| *off);
        return Err(fail(d.into_iter().map(|(_, d)| d).collect()));
    }
    // Every required value was checked above: a missing one is a diagnostic.
    let (Some(name), Some(mode), Some(backend), Some(batch_sizes), Some(input_lens)) =
        (name, mode, backend, batch_sizes, input_lens)
    else {
        return Err(fail(Vec::new()));
    };
    Ok(Sweep {
        output_dir: output_dir.unwrap_or_else(|| format!("results/{name}")),
        name,
        mode,
        backend,
        model,
        batch_sizes,
        input_lens,
        output_len: output_len.unwrap_or(0),
        warmup_steps: warmup_steps.unwrap_or(5),
        profile_steps: profile_steps.unwrap_or(3),
        repeats: repeats.unwrap_or(1),
        placement: placement.unwrap_or(Placement::Spread),
        agents,
        profiler,
        replay,
        torch,
        vllm,
        command,
        gpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECODE: &str = r#"
name = "llama-decode"
mode = "decode"
backend = "replay"
batch_sizes = { from = 1, to = 255, step = 2 }
input_len = 128
output_len = 100
profile_steps = 5

[replay]
dir = "fixtures/h200-llama-1b"
"#;

    /// Each diagnostic as `line:col: message [hint]`.
    fn lines(e: &SweepErrors) -> Vec<String> {
        e.diagnostics
            .iter()
            .map(|d| {
                let hint = d.hint.as_ref().map(|h| format!(" [{h}]")).unwrap_or_default();
                format!("{}:{}: {}{hint}", d.line, d.col, d.message)
            })
            .collect()
    }

    #[test]
    fn a_decode_sweep_expands_its_range() {
        let s = parse(DECODE, "decode.toml").expect("valid");
        assert_eq!(s.gpu.lock_clocks_mhz, None, "clocks are left alone by default");
        assert_eq!((s.mode, s.backend, s.placement), (Mode::Decode, Backend::Replay, Placement::Spread));
        let p = s.points();
        assert_eq!(p.len(), 128);
        assert_eq!(p[0].id, "decode-bs1-in128");
        assert_eq!(p[127].batch_size, 255);
        assert_eq!((s.profile_steps, s.warmup_steps, s.output_len), (5, 5, 100));
        assert_eq!(s.output_dir, "results/llama-decode");
        assert!(s.profiler.record_shapes && !s.profiler.with_stack);
    }

    #[test]
    fn lists_input_lengths_and_repeats_multiply() {
        let text = "name = \"p\"\nmode = \"prefill\"\nbackend = \"replay\"\nbatch_sizes = [1, 4, 16]\ninput_len = [128, 512]\nrepeats = 2\nplacement = \"each\"\n[replay]\ndir = \"x\"\ndelay_ms = 5\n[agents]\ngpu = \"NVIDIA H200*\"\nhosts = [\"a\"]\nlabels = { zone = \"z1\" }\n";
        let s = parse(text, "p.toml").expect("valid");
        let ids: Vec<String> = s.points().into_iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), 12);
        assert_eq!(ids[0], "prefill-bs1-in128");
        assert_eq!(ids[5], "prefill-bs16-in512");
        assert_eq!(ids[6], "prefill-bs1-in128-r2");
        assert_eq!(s.placement, Placement::Each);
        assert_eq!(s.agents.gpu.as_deref(), Some("NVIDIA H200*"));
        assert_eq!(s.agents.labels.get("zone").map(String::as_str), Some("z1"));
        assert_eq!(s.replay, Some(Replay { dir: "x".into(), delay_ms: 5 }));
    }

    #[test]
    fn every_error_at_once_with_locations_and_hints() {
        let text = r#"name = "bad"
mode = "prefill"
backend = "replay"
batch_size = [1, 2]
batch_sizes = { from = 9, to = 3 }
output_len = 10
placement = "spred"
profile_steps = 0
"#;
        let e = parse(text, "bad.toml").expect_err("invalid");
        let got = lines(&e);
        assert_eq!(
            got,
            vec![
                "1:1: backend `replay` needs a [replay] table [add `[replay]` with `dir = \"path/to/results\"`]".to_string(),
                "4:1: unknown key `batch_size` [did you mean `batch_sizes`?]".to_string(),
                "5:15: `batch_sizes` range is empty: from 9 is above to 3 [swap them: { from = 3, to = 9 }]".to_string(),
                "6:14: `output_len` does not apply to prefill: each profiled forward is one prefill [remove `output_len`, or use mode = \"decode\"]".to_string(),
                "7:13: unknown placement `spred`; expected spread or each [did you mean `spread`?]".to_string(),
                "8:17: `profile_steps` must be between 1 and 1048576, not 0".to_string(),
            ]
        );
        let shown = e.to_string();
        assert!(shown.starts_with("bad.toml has 6 errors:\n  bad.toml:1:1: backend"), "{shown}");
    }

    #[test]
    fn a_value_listed_twice_or_too_large_is_refused_where_it_stands() {
        let text = "name = \"t\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = [1, 8, 8]\n\
                    input_len = 99999999999999999999\n[replay]\ndir = \"x\"\n";
        let e = parse(text, "t.toml").expect_err("refused");
        assert_eq!(
            lines(&e),
            [
                "4:22: `batch_sizes` lists 8 twice [list each value once]".to_string(),
                format!("5:13: `input_len` must be between 1 and {MAX_VALUE}, not 99999999999999999999"),
            ]
        );
    }

    #[test]
    fn missing_keys_and_bad_types() {
        let e = parse("mode = 3\n[replay]\ndirr = 1\n", "m.toml").expect_err("invalid");
        let msgs: Vec<&str> = e.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            msgs,
            vec![
                "missing `name`",
                "missing `backend`",
                "missing `batch_sizes`",
                "`mode` must be a string",
                "[replay] needs `dir`, the folder of traces to replay",
                "unknown key `dirr`",
            ]
        );
        assert_eq!(e.diagnostics[5].hint.as_deref(), Some("did you mean `dir`?"));
    }

    #[test]
    fn toml_syntax_errors_have_a_location() {
        let e = parse("name = \"x\"\nmode = \n", "s.toml").expect_err("invalid");
        assert_eq!(e.diagnostics.len(), 1);
        assert_eq!(e.diagnostics[0].line, 2);
        assert!(e.diagnostics[0].message.starts_with("invalid TOML"), "{:?}", e.diagnostics);
        let e = parse("name = \"x\"\nmode = \"decode\"\nname = \"y\"\n", "s.toml").expect_err("invalid");
        assert_eq!(lines(&e), ["3:1: invalid TOML: duplicate key `name`"]);
    }

    #[test]
    fn gpu_backends_need_their_settings() {
        let e = parse("name = \"t\"\nmode = \"decode\"\nbackend = \"torch\"\nbatch_sizes = [1]\n", "t.toml")
            .expect_err("x");
        assert_eq!(e.diagnostics[0].message, "backend `torch` needs `model`");
        assert_eq!((e.diagnostics[0].line, e.diagnostics[0].col), (3, 11));
        let e = parse("name = \"t\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [1]\n", "t.toml")
            .expect_err("x");
        assert_eq!(e.diagnostics[0].message, "backend `command` needs a [command] table with `run`");
        let ok = parse(
            "name = \"t\"\nmode = \"decode\"\nbackend = \"torch\"\nmodel = \"llama-3.2-1b\"\nbatch_sizes = [1]\n[torch]\ndtype = \"float16\"\n",
            "t.toml",
        )
        .expect("valid");
        assert_eq!(
            (ok.backend, ok.torch.dtype.as_str(), ok.model.as_deref()),
            (Backend::Torch, "float16", Some("llama-3.2-1b"))
        );
    }

    #[test]
    fn vllm_settings_are_read_and_checked() {
        let base =
            "name = \"v\"\nmode = \"decode\"\nbackend = \"vllm\"\nmodel = \"llama-3.2-1b\"\nbatch_sizes = [1, 8]\n";
        let ok = parse(
            &format!("{base}output_len = 16\n[vllm]\ncuda_graphs = true\ndtype = \"bfloat16\"\nmax_model_len = 512\ngpu_memory_utilization = 0.85\ntensor_parallel = 2\n"),
            "v.toml",
        )
        .expect("valid");
        assert_eq!(
            ok.vllm,
            VllmTable {
                python: String::new(),
                cuda_graphs: true,
                dtype: "bfloat16".into(),
                max_model_len: Some(512),
                gpu_memory_utilization: Some(0.85),
                tensor_parallel: Some(2),
            }
        );
        // One GPU's clocks are locked per job: not with tensor parallelism.
        let e = parse(&format!("{base}[vllm]\ntensor_parallel = 2\n[gpu]\nlock_clocks_mhz = 1980\n"), "v.toml")
            .expect_err("refused");
        assert!(e.diagnostics[0].message.contains("not supported with `vllm.tensor_parallel` above 1"), "{e:?}");
        // Defaults: output_len 100 covers 1 + 5 warm-up + 3 profiled steps.
        assert_eq!(parse(base, "v.toml").expect("valid").vllm, VllmTable::default());

        let bad = format!(
            "{base}output_len = 8\n[vllm]\ndtype = \"bf16\"\nmax_model_len = 100\ngpu_memory_utilization = 1.5\n"
        );
        let e = parse(&bad, "v.toml").expect_err("invalid");
        let got = lines(&e);
        assert_eq!(
            got,
            vec![
                "6:14: `output_len` 8 does not cover the prefill's token, 5 warm-up and 3 profiled decode steps [set `output_len` to at least 9]".to_string(),
                "7:1: `vllm.max_model_len` 100 is shorter than the longest request (136 tokens: prompt plus output) [raise it to at least 136, or leave it out]".to_string(),
                "8:9: `vllm.dtype` must be auto, bfloat16 or float16, not \"bf16\"".to_string(),
                "10:26: `vllm.gpu_memory_utilization` must be a fraction above 0 and at most 1 [e.g. 0.85]".to_string(),
            ]
        );
        // The torch backend does not stop at output_len: no such check there.
        let torch = base.replace("vllm", "torch");
        assert!(parse(&format!("{torch}output_len = 1\n"), "t.toml").is_ok());
    }
}
