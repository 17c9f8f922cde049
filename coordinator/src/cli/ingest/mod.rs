//! `coord ingest DIR... --out OUT`: reduce a results tree of traces (every step, not one per batch size)
//! to the seed tables and the full statistics, parsing files on a pool of worker threads. Every trace is
//! read before a step is added: which series a step belongs to can take its whole folder ([`series`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use tracefleet_common::aggregate::{Aggregate, SeriesKey, StepLeftOut};
use tracefleet_common::checks;
use tracefleet_common::classify::Rules;
use tracefleet_common::glob::Patterns;
use tracefleet_common::layout;
use tracefleet_common::summary::{AnalyzeOptions, TraceSummary, summarize, summarize_file};
use tracefleet_common::sweep::Mode;
use tracefleet_common::tables;
use tracefleet_common::trace::TraceError;

use super::LimitArgs;
use series::{At, Given, Series};

mod series;

/// Arguments of `coord ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Results folders (original layout `logs_{bs}/trace_N.json`, or vLLM's `*.pt.trace.json[.gz]`) or files.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Batch size for traces whose path and step names do not give one.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// Mode (decode or prefill) for traces whose path and step names do not give one.
    #[arg(long)]
    mode: Option<Mode>,
    /// Input length (prompt tokens) for traces whose path does not give one.
    #[arg(long)]
    input_len: Option<u32>,
    /// Host name for the host column.
    #[arg(long, default_value = "local")]
    host: String,
    /// Classification rules (TOML); the built-in Llama-family rules by default.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// An eager trace of the same model and batch shapes, whose steps attribute the kernels that CUDA graphs
    /// replay in the traces (graph steps whose own trace holds no eager step of their shape). Its steps are
    /// written beside the graph steps in graph_reference.csv and not counted in the tables.
    #[arg(long, value_name = "TRACE")]
    graph_reference: Option<PathBuf>,
    /// Step annotation patterns (globs), replacing the defaults (ProfilerStep#*, execute_context_*, execute_model*).
    #[arg(long = "step-pattern")]
    step_patterns: Vec<String>,
    /// Write the tables from the traces that could be read when others cannot (the command still fails,
    /// after listing them).
    #[arg(long)]
    keep_going: bool,
    /// Parse worker threads (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print bytes, seconds, MB/s and peak memory to stderr.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    peaks: super::peaks::PeakArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// One trace to parse, with what its path says.
struct Job {
    root: PathBuf,
    path: PathBuf,
    /// Named on the command line (not found in a folder): a file that is not a trace is an error.
    explicit: bool,
}

impl Job {
    fn at(&self) -> At<'_> {
        At { root: &self.root, path: &self.path }
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let mut opts = AnalyzeOptions { limits: a.limits.limits(), ..AnalyzeOptions::default() };
    if let Some(r) = &a.rules {
        opts.rules = Rules::load(r)?;
    }
    if !a.step_patterns.is_empty() {
        opts.step_patterns = Patterns::new(&a.step_patterns).context("--step-pattern")?;
        opts.require_step_match = true;
    }
    let reference = match &a.graph_reference {
        Some(path) => {
            // Read once: its eager steps are the reference, and its summary is reported beside the graph
            // steps. The errors name the file already.
            let trace = tracefleet_common::trace::Trace::open(path, &opts.limits)
                .map_err(|e| anyhow::anyhow!("--graph-reference: {e}"))?;
            let r = tracefleet_common::summary::graph_reference(&trace, path, &opts)
                .map_err(|e| anyhow::anyhow!("--graph-reference: {e}"))?;
            let shapes: Vec<String> =
                r.steps.iter().map(|s| s.name.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            opts.graph_reference = Some(std::sync::Arc::new(r));
            let summary = summarize(&trace, &AnalyzeOptions { graph_reference: None, ..opts.clone() });
            Some((path.clone(), summary, shapes))
        }
        None => None,
    };
    // Traces are found by content: every JSON file is read, and one that is not a Kineto trace is passed
    // over with the reason, like every other file the walk skips.
    let mut jobs = Vec::new();
    let mut skipped: Vec<(PathBuf, String)> = Vec::new();
    for d in &a.dirs {
        let explicit = d.is_file();
        let found = layout::find_traces(d, false).with_context(|| format!("reading {}", d.display()))?;
        let root = if explicit { d.parent().unwrap_or(Path::new(".")).to_path_buf() } else { d.clone() };
        jobs.extend(found.files.into_iter().map(|path| Job { root: root.clone(), path, explicit }));
        skipped.extend(found.skipped);
    }
    // A file reached twice (a folder given twice, or inside another one given, or as itself besides its
    // folder) is read once: its steps would otherwise count twice in every aggregate.
    let mut seen: std::collections::HashMap<PathBuf, PathBuf> = std::collections::HashMap::new();
    jobs.retain(|j| {
        let key = j.path.canonicalize().unwrap_or_else(|_| j.path.clone());
        match seen.get(&key) {
            Some(first) => {
                skipped.push((j.path.clone(), format!("the same file as {}: read once", first.display())));
                false
            }
            None => {
                seen.insert(key, j.path.clone());
                true
            }
        }
    });
    // The reference trace among the inputs: its steps are the graph steps' reference, not data.
    if let Some((reference, ..)) = &reference {
        let same = |p: &Path| match (p.canonicalize(), reference.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        jobs.retain(|j| {
            let is = same(&j.path);
            if is {
                skipped.push((
                    j.path.clone(),
                    "the --graph-reference trace: reported in graph_reference.csv, not counted".into(),
                ));
            }
            !is
        });
    }
    let threads = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let results = parse_all(&jobs, &opts, threads);
    let (jobs, results) = once_per_recording(jobs, results, &mut skipped);

    let given = Given { host: a.host.clone(), batch_size: a.batch_size, mode: a.mode, input_len: a.input_len };
    // Every trace is read before any step is added: a folder's steps together say its workload where
    // nothing else does.
    let series =
        Series::infer(&given, jobs.iter().zip(&results).filter_map(|(job, r)| r.as_ref().ok().map(|s| (job.at(), s))));
    let mut agg = Aggregate::default();
    let mut bytes = 0u64;
    let mut errors = Vec::new();
    let mut read = 0usize;
    // Traces with events the engine did not count, and why: said after the tables, with their number.
    let mut left_out: Vec<String> = Vec::new();
    for (job, res) in jobs.iter().zip(results) {
        match res {
            Ok(summary) => {
                bytes += summary.bytes;
                match add_trace(&mut agg, &series, &given, job, &summary) {
                    Ok(()) => {
                        read += 1;
                        if let Some(why) = summary.left_out.describe() {
                            left_out.push(format!("{}: {why}", job.path.display()));
                        }
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            Err(TraceError::NotATrace { file, what }) if !job.explicit => {
                skipped.push((file, format!("not a Kineto trace (no traceEvents): {what}")))
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    // A file reached more than once (a folder given beside one inside it) is listed, and counted, once:
    // the summary counts files, not the ways to them.
    skipped.sort();
    skipped.dedup_by(|later, first| later.0 == first.0);
    for (f, why) in &skipped {
        eprintln!("skipped {}: {why}", f.display());
    }
    if read == 0 && errors.is_empty() {
        let dirs: Vec<String> = a.dirs.iter().map(|d| d.display().to_string()).collect();
        let skipped = match skipped.len() {
            0 => "no file there is a .json, .json.gz or .json.zst".to_string(),
            n => format!("{n} files skipped, listed above"),
        };
        bail!("no Kineto trace under {} ({skipped})", dirs.join(", "));
    }
    if !errors.is_empty() && !a.keep_going {
        bail!(
            "{} of {} traces could not be counted (--keep-going writes the tables of the others):\n  {}",
            errors.len(),
            read + errors.len(),
            errors.join("\n  ")
        );
    }
    if let Some((path, summary, shapes)) = &reference {
        let source = path.display().to_string();
        add_reference_steps(&mut agg, &source, summary);
        let unmatched = agg.steps.values().filter(|r| r.graph_activities > 0 && r.graph_reference.is_empty()).count();
        if unmatched > 0 {
            eprintln!(
                "warning: --graph-reference {source}: {unmatched} steps with CUDA-graph replays found no eager step \
                 of their shape (or rank) there; it holds {}",
                shapes.join(", ")
            );
        }
    }
    let mut written =
        tables::write_results(&a.out, &agg, tables::Layout { peaks: a.peaks.overrides(), ..Default::default() })
            .with_context(|| format!("writing {}", a.out.display()))?;
    // Models, Vidur profiles and the report, from the tables just written.
    written.extend(
        tracefleet_common::derived::write_derived(&a.out, &a.out)
            .with_context(|| format!("writing {}", a.out.display()))?,
    );
    let steps = agg.steps.len();
    eprintln!("ingested {read} traces, {steps} steps ({} files skipped); wrote:", skipped.len());
    for p in written {
        eprintln!("  {}", p.display());
    }
    let unknown_input = agg.steps.keys().filter(|(s, ..)| s.input_len == 0).count();
    if unknown_input > 0 {
        eprintln!(
            "note: {unknown_input} of {steps} steps have no input length (input_len 0): no ilen_N/in_N path part, \
             no vLLM prefill step name, no --input-len"
        );
    }
    // Steps whose batch nothing checks: a folder's steps of another batch (the original experiment's
    // prefills and filling decodes) would be averaged in without a warning.
    if let Some(note) = series.note() {
        eprintln!("{note}");
    }
    let unchecked = agg
        .steps
        .iter()
        .filter(|((s, ..), r)| {
            let prefill_of_unknown_length = s.mode == Some(Mode::Prefill) && s.input_len == 0;
            r.vllm.is_none()
                && (r.tokens.is_none() || s.mode.is_none() || prefill_of_unknown_length)
                && StepLeftOut::of(s, r).is_none()
        })
        .count();
    if unchecked > 0 {
        // Of the steps the tables count: those left out were checked, and say why.
        let counted = agg.steps.iter().filter(|((s, ..), r)| StepLeftOut::of(s, r).is_none()).count();
        eprintln!(
            "note: {unchecked} of {counted} steps could not be checked for their folder's batch (no vLLM step \
             annotation, and no recorded shapes, an unknown mode or a prefill of unknown input length): steps of \
             another batch among them would be averaged in (see model_tokens in steps.csv; --mode and --input-len \
             let them be checked)"
        );
    }
    let peaks = a.peaks.overrides();
    let unknown: std::collections::BTreeSet<&str> =
        agg.roofline.keys().map(|(s, ..)| s.gpu.as_str()).filter(|g| peaks.resolve(g).is_none()).collect();
    for gpu in unknown {
        eprintln!(
            "warning: no peaks known for GPU `{gpu}`: the roofline's achieved rates are written, their peak, bound \
             and of_roof columns are empty; give both --peak-tflops and --peak-gbps"
        );
    }
    for l in &left_out {
        eprintln!("warning: {l}");
    }
    if !left_out.is_empty() {
        eprintln!("  ({} of {read} traces have events left out of the tables, listed above)", left_out.len());
    }
    let warnings = checks::warnings(&agg);
    for w in &warnings {
        eprintln!("warning: {}", w.message);
    }
    if warnings.iter().any(|w| w.kind == checks::WarningKind::OthersDominant) {
        eprintln!("  (kernels.csv lists what `others` holds: rows of category `others`)");
    }
    if a.stats {
        let s = t0.elapsed().as_secs_f64();
        eprintln!(
            "stats: bytes={bytes} traces={} threads={threads} seconds={s:.3} mb_per_s={:.1} peak_rss_bytes={}",
            jobs.len(),
            bytes as f64 / 1e6 / s.max(1e-9),
            super::peak_rss_bytes().unwrap_or(0)
        );
    }
    if !errors.is_empty() {
        bail!(
            "{} of {} traces could not be counted; the tables hold the other {read}:\n  {}",
            errors.len(),
            read + errors.len(),
            errors.join("\n  ")
        );
    }
    // Steps ran on the GPU, yet the seed tables hold none of them: every one was left out (the warnings
    // above say why). Header-only tables are not a result.
    let on_gpu = agg.steps.values().filter(|r| r.has_gpu_activity()).count();
    if on_gpu > 0 && tables::seed_rows(&agg) == 0 {
        bail!(
            "the seed tables ({}) hold no row: each of the {on_gpu} steps that ran on the GPU was left out, for the \
             reasons warned above (steps.csv lists every step with its left_out)",
            a.out.display()
        );
    }
    Ok(())
}

/// The jobs and their results without the second and later files of one recording (a trace beside its
/// decompressed or recompressed copy, a hard link, a copy under another name), each added to `skipped`
/// with the first: like a file reached twice, a recording is counted once.
fn once_per_recording(
    jobs: Vec<Job>,
    results: Vec<Result<TraceSummary, TraceError>>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> (Vec<Job>, Vec<Result<TraceSummary, TraceError>>) {
    let mut first_of: std::collections::HashMap<_, PathBuf> = std::collections::HashMap::new();
    jobs.into_iter()
        .zip(results)
        .filter(|(job, res)| {
            let Some(recording) = res.as_ref().ok().and_then(TraceSummary::recording) else { return true };
            match first_of.get(&recording) {
                Some(first) => {
                    skipped.push((
                        job.path.clone(),
                        format!(
                            "the same recording as {} (the same events, step starts and GPU times): counted once",
                            first.display()
                        ),
                    ));
                    false
                }
                None => {
                    first_of.insert(recording, job.path.clone());
                    true
                }
            }
        })
        .unzip()
}

/// Parses every job on `threads` workers; results come back in job order.
fn parse_all(
    jobs: &[Job],
    opts: &AnalyzeOptions,
    threads: usize,
) -> Vec<Result<TraceSummary, tracefleet_common::trace::TraceError>> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<TraceSummary, _>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = summarize_file(&job.path, opts);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(tracefleet_common::trace::TraceError::Io {
                    file: PathBuf::from("-"),
                    source: std::io::Error::other("parse worker failed"),
                })
            })
        })
        .collect()
}

/// Adds the steps of one trace to the aggregate, each to its series.
fn add_trace(
    agg: &mut Aggregate,
    series: &Series,
    given: &Given,
    job: &Job,
    summary: &TraceSummary,
) -> anyhow::Result<()> {
    // A profile that recorded nothing is refused as `coord analyze` refuses it: counted, it would be a
    // step of no GPU activity in a series of its own.
    if summary.events == 0 {
        bail!("{}: the trace holds no events (traceEvents is empty): nothing to count", job.path.display());
    }
    let name = job.path.strip_prefix(&job.root).unwrap_or(&job.path).display().to_string();
    for step in &summary.steps {
        agg.add_step(&series.of(given, job.at(), summary, step)?, &name, step);
    }
    Ok(())
}

/// Adds the eager steps of the `--graph-reference` trace as reference steps of every series whose graph
/// steps were mapped onto them (same vLLM shape, or same name), for `graph_reference.csv`.
fn add_reference_steps(agg: &mut Aggregate, source: &str, summary: &TraceSummary) {
    let mapped: std::collections::BTreeSet<(SeriesKey, String)> = agg
        .steps
        .iter()
        .filter(|((k, _, _), r)| r.graph_reference == source && StepLeftOut::of(k, r).is_none())
        .map(|((k, _, _), r)| (k.clone(), r.step_name.clone()))
        .collect();
    for (series, name) in mapped {
        for st in summary.steps.iter().filter(|s| s.graph_activities == 0 && s.name == name) {
            let st = tracefleet_common::summary::StepSummary { reference: true, ..st.clone() };
            agg.add_step(&series, source, &st);
        }
    }
}
