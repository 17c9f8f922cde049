//! Engine benchmark: `coord analyze` against what the machine does with the same bytes, in the same run.
//!
//! Usage: `bench-engine [--runs N] [--coord PATH] [--jobs 1,2,...] [--python PATH | --no-python] [--no-serde]
//! TRACE.json ...`
//!
//! Per trace (uncompressed JSON), alternated run by run (`--runs`, default 5), medians reported:
//! 1. the engine on one core, `coord analyze --json --stats` (its own `stats:` line), its CPU seconds, and
//!    with `--jobs N` for each value given when `coord analyze --help` offers `--jobs`;
//! 2. `zstd -d` of the trace compressed once at level 3, to /dev/null: how fast a streaming decoder
//!    writes these bytes, the key yardstick (engine MB/s / `zstd -d` MB/s);
//! 3. a memchr count of `\n` over 1 MiB reads in this process: reading and touching every byte;
//! 4. Python's `json.load` plus one loop over the events;
//! 5. HTA's `parse_trace_file` where `import hta` works;
//! 6. (unless `--no-serde`) `serde_json` checking the JSON and keeping nothing (`IgnoredAny`), in this
//!    process: streamed from the file through a 64 KiB buffer, as the engine reads; from the whole file
//!    read into memory first (seconds include the read); and from bytes already in memory (the check
//!    alone). A yardstick for a parse that builds nothing: what an exact JSON reader pays before it keeps
//!    a single field.
//!
//! 7. the engine's own scanner in this process (this build's code): every event skipped whole (reading,
//!    stage-one index, top-level walk), and every event's fields read with nothing built; with the
//!    engine's split, where one core's time goes;
//! 8. simdjson (C++, through the `pysimdjson` package) where `import simdjson` works: its DOM parse of the
//!    file's bytes already in memory (read not timed), the first parse of a fresh parser and a second one
//!    with the parser's buffers warm. The fastest exact JSON parser the field has: what checking the JSON
//!    and building its tape costs, with nothing read from a disk or a page cache and nothing kept.
//!
//! Prints a Markdown report to stdout. Ratios are medians of the per-run ratios: the machine is shared and
//! noisy, and programs measured in the same run saw the same machine.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tracefleet_common::trace::scan::{ScanDepth, scan_only};
use tracefleet_tests::bench::{PYTHON_JSON_LOAD, median, stat};
use tracefleet_tests::procstat::{children_cpu_seconds, cpu_seconds, peak_rss};

/// HTA's own trace parsing of one file (JSON, DataFrame, symbol table, forward/backward links, correlation to
/// index, iterations: what `TraceAnalysis` does per rank), timed after the import, with a `stats:` line.
const PYTHON_HTA: &str = r#"
import sys, time, resource, os
from hta.common.trace import parse_trace_file
t = time.perf_counter()
meta, df, symbols = parse_trace_file(sys.argv[1])
s = time.perf_counter() - t
b = os.path.getsize(sys.argv[1])
print(f"stats: bytes={b} events={len(df)} seconds={s:.3f} mb_per_s={b/1e6/s:.1f} peak_rss_bytes={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024}")
"#;

/// simdjson's DOM parse (C++, `pysimdjson`) of the file's bytes already in memory: `argv[2]` is `first`
/// (a fresh parser: its tape's memory allocated and touched in the timed parse) or `warm` (the second
/// parse of the same parser, timed alone). Peak RSS includes the file's bytes and the tape.
const PYTHON_SIMDJSON: &str = r#"
import sys, time, resource, os
import simdjson
with open(sys.argv[1], "rb") as f:
    b = f.read()
p = simdjson.Parser()
if sys.argv[2] == "warm":
    d = p.parse(b)
    del d
t = time.perf_counter()
d = p.parse(b)
s = time.perf_counter() - t
n = len(d["traceEvents"])
print(f"stats: bytes={len(b)} events={n} seconds={s:.4f} mb_per_s={len(b)/1e6/s:.1f} peak_rss_bytes={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024}")
"#;

/// Prints simdjson's version (of the `pysimdjson` package), or fails when it cannot be imported.
const PYTHON_SIMDJSON_VERSION: &str = r#"
import simdjson, importlib.metadata as m
try:
    print(m.version("pysimdjson"))
except m.PackageNotFoundError:
    print("unknown version")
"#;

/// Prints HTA's version, or fails when it cannot be imported.
const PYTHON_HTA_VERSION: &str = r#"
import hta, importlib.metadata as m
try:
    print(m.version("HolisticTraceAnalysis"))
except m.PackageNotFoundError:
    print("unknown version")
"#;

/// The command line.
const USAGE: &str = "usage: bench-engine [--runs N] [--coord PATH] [--jobs 1,2,...] [--python PATH | --no-python] [--no-serde] \
     TRACE.json ...";

/// Read size of the memchr scan.
const CHUNK: usize = 1 << 20;

struct Opts {
    runs: usize,
    coord: PathBuf,
    /// `--jobs` values; `None` when not given (then 1, 2, 4, ... up to the cores, if `coord` has `--jobs`).
    jobs: Option<Vec<usize>>,
    python: PathBuf,
    /// `--no-python`: leave Python and HTA out (a multi-GB trace needs about seven times its size in
    /// memory under `json.load`).
    no_python: bool,
    /// `--no-serde`: leave out the three `serde_json` rows (two of them hold the whole file in memory).
    no_serde: bool,
    traces: Vec<PathBuf>,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        runs: 5,
        coord: tracefleet_tests::workspace().join("target/release/coord"),
        jobs: None,
        python: PathBuf::from("python3"),
        no_python: false,
        no_serde: false,
        traces: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => o.runs = args.next().context("--runs N")?.parse().context("--runs N")?,
            "--coord" => o.coord = args.next().context("--coord PATH")?.into(),
            "--python" => o.python = args.next().context("--python PATH")?.into(),
            "--no-python" => o.no_python = true,
            "--no-serde" => o.no_serde = true,
            "--jobs" => {
                let list = args.next().context("--jobs 1,2,...")?;
                let jobs = list.split(',').map(|j| j.trim().parse::<usize>()).collect::<Result<Vec<_>, _>>();
                o.jobs = Some(jobs.with_context(|| format!("--jobs takes numbers like 1,2,4, not {list}"))?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ if a.starts_with('-') => bail!("unknown option {a}\n{USAGE}"),
            _ => o.traces.push(a.into()),
        }
    }
    if o.traces.is_empty() || o.runs == 0 {
        bail!("{USAGE}");
    }
    Ok(o)
}

/// The programs measured on each trace.
#[derive(Clone, Copy, PartialEq)]
enum Prog<'a> {
    Zstd,
    Memchr,
    /// `coord analyze`; `Some(n)` with `--jobs n`.
    Engine(Option<usize>),
    Python,
    /// `serde_json` into `IgnoredAny` through a 64 KiB `BufReader` over the file.
    SerdeStream,
    /// `serde_json` into `IgnoredAny` from the whole file read into memory first.
    SerdeWhole,
    /// `serde_json` into `IgnoredAny` from bytes already in memory (the read not timed).
    SerdeMemory,
    /// This build's scanner in this process, every event skipped whole ([`ScanDepth::Skip`]).
    ScanSkip,
    /// This build's scanner in this process, every event's fields read and dropped ([`ScanDepth::Fields`]).
    ScanFields,
    /// HTA, reading this path.
    Hta(&'a Path),
    /// simdjson's parse of bytes in memory; `true`: the second parse of one parser (buffers warm).
    Simdjson(bool),
}

impl Prog<'_> {
    fn label(self) -> String {
        match self {
            Prog::Zstd => "`zstd -d` (level 3 file, to /dev/null)".into(),
            Prog::Memchr => "memchr `\\n` count, 1 MiB reads (RSS: its buffer)".into(),
            Prog::Engine(None) => "`coord analyze --json` (one core: parse, link, key_averages)".into(),
            Prog::Engine(Some(1)) => "`coord analyze --json --jobs 1` (one core: parse, link, key_averages)".into(),
            Prog::Engine(Some(j)) => format!("`coord analyze --json --jobs {j}`"),
            Prog::Python => "Python `json.load` + one loop".into(),
            Prog::SerdeStream => "`serde_json` check only (`IgnoredAny`), 64 KiB buffered reads (RSS: –)".into(),
            Prog::SerdeWhole => "`serde_json` check only (`IgnoredAny`), whole file read first (RSS: the file)".into(),
            Prog::SerdeMemory => "`serde_json` check only (`IgnoredAny`), bytes in memory, read not timed".into(),
            Prog::ScanSkip => {
                "engine's scanner, events skipped whole: read, stage-one index, top-level walk (RSS: –)".into()
            }
            Prog::ScanFields => "engine's scanner, every event's fields read, nothing built (RSS: –)".into(),
            Prog::Hta(_) => "HTA `parse_trace_file`".into(),
            Prog::Simdjson(false) => {
                "simdjson (C++) DOM parse, bytes in memory, first parse (read not timed; RSS: file + tape)".into()
            }
            Prog::Simdjson(true) => {
                "simdjson (C++) DOM parse, bytes in memory, second parse (buffers warm; RSS: file + tape)".into()
            }
        }
    }
}

/// One program's figures in one run.
#[derive(Clone, Copy)]
struct Sample {
    mb_s: f64,
    seconds: f64,
    /// Whole-process CPU seconds (start-up and imports included).
    cpu_s: f64,
    rss: Option<f64>,
    /// The engine's parse, link and table seconds.
    split: Option<[f64; 3]>,
    /// Start to exit of the process, measured from outside.
    process_s: f64,
}

/// A program's samples over the runs, or why it stopped being measured.
struct Bench<'a> {
    prog: Prog<'a>,
    samples: Vec<Sample>,
    error: Option<String>,
}

impl Bench<'_> {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples.iter().map(f).collect())
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    for trace in &o.traces {
        refuse_compressed(trace)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    check_zstd()?;
    let jobs = engine_jobs(&o, cores)?;
    let hta = if o.no_python { Err("left out (--no-python)".to_string()) } else { hta_version(&o.python) };
    let simdjson = if o.no_python {
        Err("left out (--no-python)".to_string())
    } else {
        module_version(&o.python, PYTHON_SIMDJSON_VERSION, "simdjson", "pip install pysimdjson")
    };
    println!("## Engine against the machine's limits\n");
    println!(
        "- machine: {cores} cores; runs: {} per program, alternated; `coord`: `{}`; HTA: {}; pysimdjson: {}\n",
        o.runs,
        o.coord.display(),
        match &hta {
            Ok(v) => v.clone(),
            Err(e) => e.clone(),
        },
        match &simdjson {
            Ok(v) => v.clone(),
            Err(e) => e.clone(),
        }
    );
    println!(
        "- MB/s: file bytes / seconds. Seconds: the engine's and the Python programs' own timers (after \
         start-up and imports), `zstd -d` from start to exit, the memchr scan in this process. CPU s: the \
         whole process (start-up and imports included), to a 10 ms clock tick. Peak RSS: the engine's and \
         Python's own (`VmHWM`, `ru_maxrss`); `zstd -d`'s `VmHWM` sampled every millisecond.\n"
    );
    if jobs.is_none() {
        println!("`coord analyze --help` offers no `--jobs`: one-core engine figures only.\n");
    }
    for trace in &o.traces {
        bench_trace(&o, trace, jobs.as_deref().unwrap_or_default(), hta.is_ok(), simdjson.is_ok())?;
    }
    Ok(())
}

fn check_zstd() -> anyhow::Result<()> {
    match Command::new("zstd").arg("--version").stdout(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("the zstd command is needed (apt-get install zstd, dnf install zstd or brew install zstd)"),
    }
}

/// The `--jobs` values to run, or `None` when this `coord analyze` has no `--jobs`.
fn engine_jobs(o: &Opts, cores: usize) -> anyhow::Result<Option<Vec<usize>>> {
    let help = run_child(Command::new(&o.coord).args(["analyze", "--help"]).stdout(Stdio::piped()), false)
        .with_context(|| format!("running {} (build it: cargo build --release --bin coord)", o.coord.display()))?;
    if !help.out.contains("--jobs") {
        return Ok(None);
    }
    Ok(Some(
        o.jobs
            .clone()
            .unwrap_or_else(|| std::iter::successors(Some(1), |j| Some(j * 2)).take_while(|j| *j <= cores).collect()),
    ))
}

/// HTA's version, or a line saying why it cannot be used.
fn hta_version(python: &Path) -> Result<String, String> {
    module_version(python, PYTHON_HTA_VERSION, "hta", "pip install HolisticTraceAnalysis")
}

/// What `code` (a snippet importing `module` and printing its version) prints, or a line saying why the
/// module cannot be used.
fn module_version(python: &Path, code: &str, module: &str, install: &str) -> Result<String, String> {
    match run_child(Command::new(python).args(["-c", code]).stdout(Stdio::piped()), false) {
        Ok(r) => Ok(r.out.trim().to_string()),
        Err(e) if format!("{e:#}").contains(&format!("No module named '{module}'")) => {
            Err(format!("not installed ({install})"))
        }
        Err(e) => Err(format!("`import {module}` fails: {}", last_line(&format!("{e:#}")))),
    }
}

fn bench_trace(o: &Opts, trace: &Path, jobs: &[usize], hta: bool, simdjson: bool) -> anyhow::Result<()> {
    let size = std::fs::metadata(trace).with_context(|| format!("reading {}", trace.display()))?.len() as f64;
    // Untimed: puts the file in the page cache for every program alike, and counts its lines once.
    let (_, lines) = memchr_scan(trace)?;
    let zst = Temp(std::env::temp_dir().join(format!("bench-engine-{}.json.zst", std::process::id())));
    run_child(Command::new("zstd").args(["-q", "-3", "-f"]).arg(trace).arg("-o").arg(&zst.0), false)?;
    let zst_size = std::fs::metadata(&zst.0)?.len() as f64;
    let hta_input = if hta { Some(hta_input(trace)?) } else { None };

    // One core: `--jobs 1` where `coord analyze` reads on several threads (its default is every core).
    let one = if jobs.is_empty() { None } else { Some(1) };
    let mut progs = vec![Prog::Zstd, Prog::Memchr, Prog::Engine(one)];
    progs.extend(jobs.iter().filter(|&&j| j != 1).map(|j| Prog::Engine(Some(*j))));
    progs.extend([Prog::ScanSkip, Prog::ScanFields]);
    if !o.no_serde {
        progs.extend([Prog::SerdeStream, Prog::SerdeWhole, Prog::SerdeMemory]);
    }
    if !o.no_python {
        progs.push(Prog::Python);
    }
    if let Some((path, _)) = &hta_input {
        progs.push(Prog::Hta(path.path()));
    }
    if simdjson {
        progs.extend([Prog::Simdjson(false), Prog::Simdjson(true)]);
    }
    let mut benches: Vec<Bench> = progs.into_iter().map(|prog| Bench { prog, samples: vec![], error: None }).collect();
    for _ in 0..o.runs {
        for b in benches.iter_mut().filter(|b| b.error.is_none()) {
            let sample = match b.prog {
                Prog::Zstd => zstd_d(&zst.0, size),
                Prog::Memchr => memchr_scan(trace).map(|(s, _)| s),
                Prog::Engine(j) => engine(&o.coord, trace, j),
                Prog::SerdeStream => serde_check(trace, SerdeInput::Stream),
                Prog::SerdeWhole => serde_check(trace, SerdeInput::Whole),
                Prog::SerdeMemory => serde_check(trace, SerdeInput::Memory),
                Prog::ScanSkip => scan(trace, ScanDepth::Skip),
                Prog::ScanFields => scan(trace, ScanDepth::Fields),
                Prog::Python => python(&o.python, PYTHON_JSON_LOAD, trace),
                Prog::Hta(p) => python(&o.python, PYTHON_HTA, p),
                Prog::Simdjson(warm) => python_args(
                    &o.python,
                    PYTHON_SIMDJSON,
                    &[trace.as_os_str(), (if warm { "warm" } else { "first" }).as_ref()],
                ),
            };
            match sample {
                Ok(s) => b.samples.push(s),
                // HTA and simdjson are somebody else's programs: a failure is reported, not fatal.
                Err(e) if matches!(b.prog, Prog::Hta(_) | Prog::Simdjson(_)) => {
                    b.error = Some(last_line(&format!("{e:#}")).to_string())
                }
                Err(e) => return Err(e),
            }
        }
    }
    let hta_note = hta_input.as_ref().map(|(_, note)| note.as_str());
    report(trace, size, zst_size, lines, &benches, hta_note);
    Ok(())
}

/// The programs compared here read plain JSON; a compressed trace would make the MB/s mean different bytes.
fn refuse_compressed(trace: &Path) -> anyhow::Result<()> {
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(trace).with_context(|| format!("opening {}", trace.display()))?.read(&mut magic)?;
    if magic[..n].starts_with(&[0x1f, 0x8b]) || magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        bail!("{} is compressed: pass the uncompressed JSON (zstd -d / gunzip it first)", trace.display());
    }
    Ok(())
}

/// The engine's figures of one run, from its `stats:` line; CPU seconds of the whole process.
fn engine(coord: &Path, trace: &Path, jobs: Option<usize>) -> anyhow::Result<Sample> {
    let mut cmd = Command::new(coord);
    cmd.args(["analyze", "--json", "--stats"]);
    if let Some(j) = jobs {
        cmd.args(["--jobs", &j.to_string()]);
    }
    let r = run_child(cmd.arg(trace).stdout(Stdio::null()), false)?;
    Ok(Sample {
        mb_s: stat(&r.out, "mb_per_s")?,
        seconds: stat(&r.out, "seconds")?,
        cpu_s: r.cpu_s,
        rss: Some(stat(&r.out, "peak_rss_bytes")?),
        split: Some([stat(&r.out, "parse_s")?, stat(&r.out, "link_s")?, stat(&r.out, "table_s")?]),
        process_s: r.wall,
    })
}

/// `zstd -d` of the compressed trace to /dev/null: decompressed bytes / wall seconds of the process.
fn zstd_d(zst: &Path, bytes: f64) -> anyhow::Result<Sample> {
    // zstd's memory is its window and buffers, taken at start: sampling VmHWM while it runs sees it.
    let r = run_child(Command::new("zstd").args(["-d", "-q", "-c"]).arg(zst).stdout(Stdio::null()), true)?;
    Ok(Sample {
        mb_s: bytes / 1e6 / r.wall,
        seconds: r.wall,
        cpu_s: r.cpu_s,
        rss: r.rss,
        split: None,
        process_s: r.wall,
    })
}

/// Counts `\n` over 1 MiB reads of the file in this process; returns the figures and the count.
fn memchr_scan(trace: &Path) -> anyhow::Result<(Sample, u64)> {
    let cpu0 = cpu_seconds("self");
    let t = Instant::now();
    let mut f = std::fs::File::open(trace)?;
    let mut buf = vec![0u8; CHUNK];
    let (mut bytes, mut lines) = (0u64, 0u64);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
    let s = t.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds("self") - cpu0;
    let sample =
        Sample { mb_s: bytes as f64 / 1e6 / s, seconds: s, cpu_s, rss: Some(CHUNK as f64), split: None, process_s: s };
    Ok((sample, lines))
}

/// The engine's scanner alone, in this process (this build's code, whatever `--coord` names): how much
/// of the engine's parse the reading and walking of the text take before anything is built.
fn scan(trace: &Path, depth: ScanDepth) -> anyhow::Result<Sample> {
    let limits = tracefleet_common::trace::ReadLimits::default();
    let cpu0 = cpu_seconds("self");
    let t = Instant::now();
    scan_only(trace, &limits, depth).with_context(|| format!("scanning {}", trace.display()))?;
    let seconds = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(trace)?.len() as f64;
    Ok(Sample {
        mb_s: size / 1e6 / seconds,
        seconds,
        cpu_s: cpu_seconds("self") - cpu0,
        rss: None,
        split: None,
        process_s: seconds,
    })
}

/// How `serde_json` is given the trace.
#[derive(Clone, Copy, PartialEq)]
enum SerdeInput {
    /// Through a 64 KiB `BufReader` over the file.
    Stream,
    /// All of the file read into memory, the read timed with the check.
    Whole,
    /// All of the file read into memory before the clock starts.
    Memory,
}

/// `serde_json` checking the file's JSON and keeping nothing, in this process.
fn serde_check(trace: &Path, input: SerdeInput) -> anyhow::Result<Sample> {
    let check = |b: &[u8]| -> anyhow::Result<()> {
        let _: serde::de::IgnoredAny = serde_json::from_slice(b).with_context(|| format!("{}", trace.display()))?;
        Ok(())
    };
    let early = if input == SerdeInput::Memory { Some(std::fs::read(trace)?) } else { None };
    let cpu0 = cpu_seconds("self");
    let t = Instant::now();
    let bytes = match (input, &early) {
        (SerdeInput::Memory, Some(b)) => {
            check(b)?;
            b.len()
        }
        (SerdeInput::Stream, _) => {
            let f = std::io::BufReader::with_capacity(64 << 10, std::fs::File::open(trace)?);
            let _: serde::de::IgnoredAny =
                serde_json::from_reader(f).with_context(|| format!("{}", trace.display()))?;
            std::fs::metadata(trace)?.len() as usize
        }
        _ => {
            let b = std::fs::read(trace)?;
            check(&b)?;
            b.len()
        }
    };
    let s = t.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds("self") - cpu0;
    let rss = (input != SerdeInput::Stream).then_some(bytes as f64);
    Ok(Sample { mb_s: bytes as f64 / 1e6 / s, seconds: s, cpu_s, rss, split: None, process_s: s })
}

/// A Python snippet with a `stats:` line (seconds after the imports); CPU seconds of the whole process.
fn python(python: &Path, code: &str, trace: &Path) -> anyhow::Result<Sample> {
    python_args(python, code, &[trace.as_os_str()])
}

/// [`python`] with these arguments after the snippet.
fn python_args(python: &Path, code: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<Sample> {
    let r = run_child(Command::new(python).args(["-c", code]).args(args).stdout(Stdio::piped()), false)?;
    Ok(Sample {
        mb_s: stat(&r.out, "mb_per_s")?,
        seconds: stat(&r.out, "seconds")?,
        cpu_s: r.cpu_s,
        rss: Some(stat(&r.out, "peak_rss_bytes")?),
        split: None,
        process_s: r.wall,
    })
}

/// Where HTA reads the trace from.
enum HtaPath {
    Direct(PathBuf),
    /// A symlink in a temp dir, removed with it.
    Linked {
        link: PathBuf,
        _dir: Temp,
    },
}

impl HtaPath {
    fn path(&self) -> &Path {
        match self {
            HtaPath::Direct(p) | HtaPath::Linked { link: p, .. } => p,
        }
    }
}

/// The file itself when its name ends in `.json` (HTA's `parse_trace_file` refuses other names), else a
/// symlink `rank-0.json` to it in a temp dir; and a note saying which.
fn hta_input(trace: &Path) -> anyhow::Result<(HtaPath, String)> {
    if trace.to_string_lossy().ends_with(".json") {
        return Ok((HtaPath::Direct(trace.to_path_buf()), "the file itself".into()));
    }
    let dir = Temp(std::env::temp_dir().join(format!("bench-engine-hta-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let link = dir.0.join("rank-0.json");
    let _ = std::fs::remove_file(&link);
    let target = std::fs::canonicalize(trace)?;
    std::os::unix::fs::symlink(&target, &link)?;
    let note =
        format!("a symlink `rank-0.json` to `{}` in a temp dir (HTA reads only names ending .json)", trace.display());
    Ok((HtaPath::Linked { link, _dir: dir }, note))
}

/// What running one child program gave.
struct Ran {
    /// stdout then stderr.
    out: String,
    wall: f64,
    cpu_s: f64,
    /// Peak RSS sampled every millisecond while it ran (when asked for).
    rss: Option<f64>,
}

fn run_child(cmd: &mut Command, sample_rss: bool) -> anyhow::Result<Ran> {
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    let cpu0 = children_cpu_seconds();
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    // Read the pipes while it runs, so that a full pipe never stalls it.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let pid = child.id().to_string();
    let mut rss = 0u64;
    let status = if sample_rss {
        loop {
            rss = rss.max(peak_rss(&pid));
            if let Some(s) = child.try_wait()? {
                break s;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    } else {
        child.wait()?
    };
    let wall = t.elapsed().as_secs_f64();
    let cpu_s = children_cpu_seconds() - cpu0;
    let out = format!("{}{}", joined(stdout), joined(stderr));
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {out}");
    }
    Ok(Ran { out, wall, cpu_s, rss: sample_rss.then_some(rss as f64) })
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = r.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    })
}

fn joined(h: Option<JoinHandle<String>>) -> String {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// A temp file or directory, removed when dropped.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Median over the runs of `a`'s figure / `b`'s figure in the same run.
fn ratio(a: &Bench, b: &Bench, f: impl Fn(&Sample) -> f64) -> f64 {
    median(a.samples.iter().zip(&b.samples).map(|(x, y)| f(x) / f(y)).collect())
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn report(trace: &Path, size: f64, zst_size: f64, lines: u64, benches: &[Bench], hta_note: Option<&str>) {
    println!("### `{}` ({}, {lines} lines; level-3 .zst {})\n", trace.display(), mb(size), mb(zst_size));
    println!("| program | MB/s | seconds | CPU s | MB/s per CPU-s | peak RSS | RSS / file | MB/s / `zstd -d` MB/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let Some(zstd) = benches.iter().find(|b| b.prog == Prog::Zstd) else { return };
    for b in benches {
        if b.samples.is_empty() {
            println!("| {} | – | – | – | – | – | – | – |", b.prog.label());
            continue;
        }
        let (cpu_text, per_cpu) = cpu_cells(b, size);
        let rss = b.samples.iter().all(|s| s.rss.is_some()).then(|| b.med(|s| s.rss.unwrap_or(0.0)));
        println!(
            "| {} | {:.1} | {:.3} | {cpu_text} | {per_cpu} | {} | {} | {:.3} |",
            b.prog.label(),
            b.med(|s| s.mb_s),
            b.med(|s| s.seconds),
            rss.map_or("–".into(), mb),
            rss.map_or("–".into(), |r| format!("{:.1}%", 100.0 * r / size)),
            ratio(b, zstd, |s| s.mb_s)
        );
    }
    if let Some(e) = benches.iter().find(|b| matches!(b.prog, Prog::Engine(None | Some(1)))) {
        engine_summary(size, e, zstd, benches);
    }
    if let (Some(h), Some(note)) = (benches.iter().find(|b| matches!(b.prog, Prog::Hta(_))), hta_note) {
        match &h.error {
            Some(err) => println!("- HTA failed on this file (it read {note}): {err}"),
            None => println!("- HTA read {note}."),
        }
    }
    for b in benches.iter().filter(|b| matches!(b.prog, Prog::Simdjson(_))) {
        if let Some(err) = &b.error {
            println!("- {} failed on this file: {err}", b.prog.label());
        }
    }
    println!();
}

/// CPU seconds and MB per CPU-second, as table cells.
fn cpu_cells(b: &Bench, size: f64) -> (String, String) {
    let cpu = b.med(|s| s.cpu_s);
    // Below a clock tick the CPU time reads as 0: no rate from that.
    if cpu < 0.005 {
        return ("< 0.01".into(), "–".into());
    }
    (format!("{cpu:.2}"), format!("{:.1}", b.med(|s| size / 1e6 / s.cpu_s)))
}

fn engine_summary(size: f64, e: &Bench, zstd: &Bench, benches: &[Bench]) {
    println!(
        "\n**Engine / `zstd -d`: {:.3}** (one core; {:.1} vs {:.1} MB/s, medians of per-run ratios).\n",
        ratio(e, zstd, |s| s.mb_s),
        e.med(|s| s.mb_s),
        zstd.med(|s| s.mb_s)
    );
    println!(
        "- engine split (medians): parse {:.3} s, link {:.3} s, table {:.3} s; whole process {:.3} s wall, {} CPU s",
        e.med(|s| s.split.map_or(f64::NAN, |x| x[0])),
        e.med(|s| s.split.map_or(f64::NAN, |x| x[1])),
        e.med(|s| s.split.map_or(f64::NAN, |x| x[2])),
        e.med(|s| s.process_s),
        cpu_cells(e, size).0
    );
    let secs = |p: Prog| benches.iter().find(|b| b.prog == p && !b.samples.is_empty()).map(|b| b.med(|s| s.seconds));
    if let (Some(skip), Some(fields)) = (secs(Prog::ScanSkip), secs(Prog::ScanFields)) {
        let split = |k: usize| e.med(|s| s.split.map_or(f64::NAN, |x| x[k]));
        let (parse, rest) = (split(0), split(1) + split(2));
        println!(
            "- where one core's time goes (medians, s): reading, stage-one index and top-level walk {skip:.3}; \
             reading the events' fields {:.3}; building the model {:.3}; link and table {rest:.3}. \
             At 0.7x `zstd -d` all of it would take {:.3}.",
            fields - skip,
            parse - fields,
            size / 1e6 / (0.7 * zstd.med(|s| s.mb_s)),
        );
    }
    if let Some(sj) = benches.iter().find(|b| b.prog == Prog::Simdjson(true) && !b.samples.is_empty()) {
        println!(
            "- simdjson's DOM parse alone, the bytes already in memory and its buffers warm: {:.3} of `zstd -d`; \
             the engine (reading, parse, link, table) runs at {:.3} of it.",
            ratio(sj, zstd, |s| s.mb_s),
            ratio(e, sj, |s| s.mb_s),
        );
    }
    let jobs: Vec<&Bench> = benches.iter().filter(|b| matches!(b.prog, Prog::Engine(Some(_)))).collect();
    if jobs.is_empty() {
        return;
    }
    // Speed-up over one job: the `--jobs 1` run when measured, else the plain one-core run.
    let base = jobs.iter().find(|b| b.prog == Prog::Engine(Some(1))).copied().unwrap_or(e);
    println!("\n| jobs | wall MB/s | speed-up over one job | MB/s per CPU-s |");
    println!("|---:|---:|---:|---:|");
    for b in jobs {
        let Prog::Engine(Some(j)) = b.prog else { continue };
        println!("| {j} | {:.1} | {:.2}x | {} |", b.med(|s| s.mb_s), ratio(b, base, |s| s.mb_s), cpu_cells(b, size).1);
    }
    println!();
}
