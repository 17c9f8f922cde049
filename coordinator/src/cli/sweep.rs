//! `coord sweep FILE.toml [--coordinator ADDR | --local] [--out DIR] [--detach]`: validate a sweep file,
//! submit it, show live progress, and write the results.
//!
//! `--local` runs an embedded coordinator and one in-process agent (the same code as `coord serve` and
//! `agent`, over loopback gRPC): no server to start.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tracefleet_common::sweep::{self, Sweep};
use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{
    self, ListAgentsRequest, Point, ReplayBackend, SweepEventKind as Kind, SweepRef, SweepSpec,
};

use super::client::{CoordinatorArg, connect, describe, download};
use crate::parse::outcome::{PointState, headline};
use crate::server;
use crate::state::{Config, Coordinator};
use tracefleet_proto::url;

/// Arguments of `coord sweep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep file (see docs/sweep.md).
    file: PathBuf,
    #[command(flatten)]
    coordinator: CoordinatorArg,
    /// Succeed when some points failed or gave no data (they are still listed); without it, any such
    /// point makes the command fail after writing the results.
    #[arg(long)]
    allow_failures: bool,
    /// Run an embedded coordinator and one agent in this process (instead of --coordinator).
    #[arg(long, conflicts_with = "coordinator")]
    local: bool,
    /// Where to write the results (default: the file's [output] dir, else results/NAME); they replace the
    /// files an earlier run wrote there, and leave other files alone.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Submit and return at once; `coord status ID` shows progress.
    #[arg(long, conflicts_with = "local")]
    detach: bool,
    /// State folder of the embedded coordinator and agent (with --local).
    #[arg(long, default_value = ".tracefleet")]
    data_dir: PathBuf,
}

/// The spec the coordinator runs, from a validated sweep file.
pub fn to_spec(s: &Sweep, source: &str, base: &Path) -> SweepSpec {
    let points = s
        .points()
        .into_iter()
        .map(|p| Point {
            point_id: p.id,
            mode: v1::Mode::from(p.mode).into(),
            batch_size: p.batch_size,
            input_len: p.input_len,
            output_len: p.output_len,
            ..Default::default()
        })
        .collect();
    let model = s.model.clone().unwrap_or_default();
    let backend = match s.backend {
        sweep::Backend::Replay => s.replay.as_ref().map(|r| {
            let dir = if Path::new(&r.dir).is_relative() && base.join(&r.dir).exists() {
                base.join(&r.dir).display().to_string()
            } else {
                r.dir.clone()
            };
            Backend::Replay(ReplayBackend { dir, delay_ms: r.delay_ms })
        }),
        sweep::Backend::Torch => Some(Backend::Torch(tracefleet_proto::v1::TorchBackend {
            model: model.clone(),
            python: s.torch.python.clone(),
            dtype: s.torch.dtype.clone(),
            attention: s.torch.attention.clone(),
        })),
        sweep::Backend::Vllm => Some(Backend::Vllm(tracefleet_proto::v1::VllmBackend {
            model: model.clone(),
            python: s.vllm.python.clone(),
            cuda_graphs: s.vllm.cuda_graphs,
            dtype: s.vllm.dtype.clone(),
            max_model_len: s.vllm.max_model_len.unwrap_or(0),
            gpu_memory_utilization: s.vllm.gpu_memory_utilization.unwrap_or(0.0),
            tensor_parallel: s.vllm.tensor_parallel.unwrap_or(1),
        })),
        sweep::Backend::Command => {
            Some(Backend::Command(tracefleet_proto::v1::CommandBackend { run: s.command.clone().unwrap_or_default() }))
        }
    };
    SweepSpec {
        name: s.name.clone(),
        points,
        profile_steps: s.profile_steps,
        placement: v1::Placement::from(s.placement).into(),
        agents: s.agents.hosts.clone(),
        source: source.to_string(),
        gpu_glob: s.agents.gpu.clone().unwrap_or_default(),
        labels: s.agents.labels.clone().into_iter().collect(),
        mode: v1::Mode::from(s.mode).into(),
        backend_name: s.backend.name().into(),
        model,
        warmup_steps: s.warmup_steps,
        profiler: Some(tracefleet_proto::v1::ProfilerOptions {
            record_shapes: s.profiler.record_shapes,
            with_stack: s.profiler.with_stack,
            with_modules: s.profiler.with_modules,
        }),
        gpu: s.gpu.lock_clocks_mhz.map(|mhz| tracefleet_proto::v1::GpuSettings { lock_clocks_mhz: mhz }),
        backend,
        ..Default::default()
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let s = sweep::parse(&text, &a.file.display().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let r = rt.block_on(async move {
        let addr = if a.local { start_local(&a.data_dir, &s).await? } else { a.coordinator.coordinator.clone() };
        let (tls, token) = if a.local {
            (tracefleet_proto::ClientTls::default(), super::client::Token::default())
        } else {
            (a.coordinator.tls()?, a.coordinator.token()?)
        };
        let mut c = connect(&addr, &tls, token).await?;
        if a.local {
            // The in-process agent connects within moments.
            let t0 = Instant::now();
            while c.list_agents(ListAgentsRequest {}).await?.into_inner().agents.iter().all(|x| !x.connected) {
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("the local agent did not connect");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Relative replay folders are taken from where the command runs (for --local, where the agent is).
        let base = if a.local { std::env::current_dir()? } else { PathBuf::from("/nonexistent") };
        let spec = to_spec(&s, &text, &base);
        // Checked before the sweep runs, not once it has.
        if !a.detach {
            super::client::check_out(&a.out.clone().unwrap_or_else(|| PathBuf::from(&s.output_dir)))?;
        }
        let n_points = spec.points.len();
        let per_point =
            crate::parse::outcome::traces_per_point(Some(&spec), s.profile_steps).unwrap_or(s.profile_steps.max(1));
        let expected = n_points as u64 * u64::from(per_point);
        let id = c.submit(spec).await?.into_inner().sweep_id;
        eprintln!("sweep {id} ({}): {n_points} points, submitted to {}", s.name, url(&addr));
        if a.detach {
            eprintln!("detached; follow it with: coord status {id} --coordinator {addr}");
            return Ok(());
        }
        let t0 = Instant::now();
        let ended = follow(&mut c, &id, expected).await?;
        let Some(status) = ended else {
            if a.local {
                eprintln!(
                    "stopped; the sweep's state is kept in {}: `coord serve --data-dir {}` resumes it",
                    a.data_dir.display(),
                    a.data_dir.join("coord").display()
                );
            } else {
                eprintln!(
                    "detached; the sweep goes on: `coord status {id} --coordinator {addr}`, and when it ends \
                     `coord fetch {id} --coordinator {addr}`"
                );
            }
            eprintln!("Ctrl-C again within {} s cancels the sweep", SECOND_CTRL_C.as_secs());
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    let s = c.cancel(SweepRef { sweep_id: id.clone() }).await?.into_inner();
                    eprintln!("cancelled: {}", describe(&s));
                }
                _ = tokio::time::sleep(SECOND_CTRL_C) => {}
            }
            // Not a success: the sweep has not ended here and no results were written.
            return Err(super::Interrupted(format!("interrupted before sweep {id} ended: no results written")).into());
        };
        let out = a.out.clone().unwrap_or_else(|| PathBuf::from(&s.output_dir));
        let files = download(&mut c, &id, &out).await?;
        let failed = summary(&status, &out, &files, t0.elapsed());
        if status.state() != v1::SweepState::Completed {
            bail!("sweep {id} ended {}", status.state().name().unwrap_or("in an unspecified state"));
        }
        if !failed.is_empty() && !a.allow_failures {
            bail!(
                "{} of {} points gave no data (listed above; manifest.json: point_status); --allow-failures \
                 accepts partial results",
                failed.len(),
                status.points_total
            );
        }
        Ok(())
    });
    // The embedded agent's workload runs on a blocking thread: do not wait for it after a detach.
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

/// Starts an embedded coordinator (plain text on a loopback port of its own, for this run) and agent, the
/// agent allowed to run what this sweep file asks (its command, its interpreter): the user runs it
/// themselves. Returns the coordinator's address.
async fn start_local(data: &Path, s: &sweep::Sweep) -> anyhow::Result<String> {
    let coord = Coordinator::open(Config::new(data.join("coord")))?;
    let (listener, addr) = server::bind("127.0.0.1:0").await?;
    tokio::spawn(async move {
        if let Err(e) = server::serve(coord, listener, None, None).await {
            tracing::error!("embedded coordinator: {e:#}");
        }
    });
    // The embedded agent never changes GPU clocks (AgentConfig::new leaves that off; a real agent started
    // with --allow-clock-locking does), and a one-shot local sweep has nothing to warm up ahead of.
    let cfg = tracefleet_agent::control::AgentConfig {
        warm_drivers: Vec::new(),
        // This sweep's command only, not commands in general: the embedded coordinator is plain text on
        // loopback, reachable by other local users for the sweep's duration.
        only_command: s.command.clone().filter(|_| s.backend == sweep::Backend::Command),
        allow_python: [&s.torch.python, &s.vllm.python].into_iter().filter(|p| !p.is_empty()).cloned().collect(),
        ..tracefleet_agent::control::AgentConfig::new(addr.to_string(), data.join("agent"))
    };
    let mut inv = tracefleet_agent::inventory::inventory(None, Default::default());
    inv.gpus = tracefleet_agent::gpu::inventory(None).0;
    let agent = tracefleet_agent::control::Agent::new(cfg, inv)?;
    tokio::spawn(async move {
        if let Err(e) = agent.run().await {
            tracing::error!("embedded agent: {e:#}");
        }
    });
    Ok(addr.to_string())
}

/// How long a second Ctrl-C (which cancels the sweep) is waited for after the first (which detaches).
const SECOND_CTRL_C: Duration = Duration::from_secs(3);

/// How often progress is printed as a line when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long `coord sweep` keeps trying to reach a coordinator that went away (restarted, network) before
/// it gives up; the sweep goes on either way.
const RECONNECT_FOR: Duration = Duration::from_secs(600);

type SweepsClient = super::client::Client;

/// Reaches the coordinator again after the progress stream broke and re-attaches to sweep `id`: its status
/// and a new progress stream, or the status alone once it has ended. Retries with backoff for
/// [`RECONNECT_FOR`] (the channel reconnects by itself; each try is one status call).
async fn reattach(
    c: &mut SweepsClient,
    id: &str,
) -> anyhow::Result<(v1::SweepStatus, Option<tonic::Streaming<v1::SweepEvent>>)> {
    let t0 = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            let st = c.status(SweepRef { sweep_id: id.to_string() }).await?.into_inner();
            if st.state() != v1::SweepState::Running {
                return Ok::<_, tonic::Status>((st, None));
            }
            let watch = c.watch(SweepRef { sweep_id: id.to_string() }).await?.into_inner();
            // It may have ended between the two calls: a status after the watch began misses nothing.
            let st = c.status(SweepRef { sweep_id: id.to_string() }).await?.into_inner();
            let watch = (st.state() == v1::SweepState::Running).then_some(watch);
            Ok((st, watch))
        };
        match attempt.await {
            Ok(r) => return Ok(r),
            Err(e) if e.code() == tonic::Code::NotFound => bail!("sweep {id} is no longer on the coordinator"),
            // Trying again would not help.
            Err(e) if matches!(e.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
                return Err(e.into());
            }
            Err(e) if t0.elapsed() >= RECONNECT_FOR => {
                bail!("the coordinator has been unreachable for {} s: {}", RECONNECT_FOR.as_secs(), e.message())
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Shows progress until the sweep ends (Some(status)) or the user presses Ctrl-C (None).
async fn follow(
    c: &mut SweepsClient,
    id: &str,
    expected: u64,
) -> anyhow::Result<Option<tracefleet_proto::v1::SweepStatus>> {
    let mut watch = c.watch(SweepRef { sweep_id: id.to_string() }).await?.into_inner();
    let multi = super::log_writer::progress();
    let overall = multi.add(ProgressBar::new(expected));
    overall.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} traces {msg}")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .progress_chars("=> "),
    );
    // Per agent: its line, traces, bytes, current point, first event.
    let mut lines: BTreeMap<String, (ProgressBar, u64, u64, String, Instant)> = BTreeMap::new();
    let mut failures = 0u32;
    // Off a terminal (CI, nohup, a pipe) the bars are not drawn: a line every few seconds instead.
    let plain = !std::io::stderr().is_terminal();
    // A line above the bars; off a terminal the bars are hidden and would swallow it.
    let say = |bar: &ProgressBar, line: String| if plain { eprintln!("{line}") } else { bar.println(line) };
    let mut tick = tokio::time::interval(PLAIN_PROGRESS_EVERY);
    tick.tick().await;
    let (t0, mut bytes) = (Instant::now(), 0u64);
    loop {
        let ev = tokio::select! {
            ev = watch.message() => ev,
            _ = tick.tick(), if plain => {
                let done = overall.position();
                let secs = t0.elapsed().as_secs_f64();
                let eta = if done > 0 && expected > done {
                    format!(", ETA {:.0} s", secs / done as f64 * (expected - done) as f64)
                } else {
                    String::new()
                };
                eprintln!(
                    "progress: {done}/{expected} traces, {failures} failures, {:.1} MB/s{eta}",
                    bytes as f64 / 1e6 / secs.max(1e-3)
                );
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                overall.abandon_with_message("(detached)");
                return Ok(None);
            }
        };
        let ev = match ev {
            Ok(Some(ev)) => ev,
            // The coordinator restarted or the network broke: the sweep goes on there; find it again.
            broken => {
                let why = match broken {
                    Err(e) => e.message().to_string(),
                    _ => "the progress stream closed".to_string(),
                };
                say(&overall, format!("lost the coordinator ({why}); reconnecting"));
                let (st, w) = reattach(c, id).await?;
                overall.set_position(u64::from(st.traces_uploaded));
                let Some(w) = w else {
                    overall.finish();
                    return Ok(Some(st));
                };
                say(&overall, format!("re-attached to sweep {id}: {}", describe(&st)));
                watch = w;
                continue;
            }
        };
        if !ev.agent.is_empty() && !lines.contains_key(&ev.agent) {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(ProgressStyle::with_template("  {prefix:<16} {msg}").map_err(|e| anyhow::anyhow!("{e}"))?);
            pb.set_prefix(ev.agent.clone());
            lines.insert(ev.agent.clone(), (pb, 0, 0, String::new(), Instant::now()));
        }
        match ev.kind() {
            Kind::Trace => {
                overall.inc(1);
                bytes += ev.bytes;
                if let Some(l) = lines.get_mut(&ev.agent) {
                    l.1 += 1;
                    l.2 += ev.bytes;
                    l.3 = ev.point_id.clone();
                    let mbps = l.2 as f64 / 1e6 / l.4.elapsed().as_secs_f64().max(1e-3);
                    l.0.set_message(format!("{}: {} traces uploaded, {mbps:.1} MB/s, {failures} failures", l.3, l.1));
                }
            }
            Kind::JobFailed | Kind::ParseFailed | Kind::PointFailed | Kind::PointRetry => {
                failures += 1;
                let first = headline(&ev.message);
                // A failure of a whole job (refused before it ran, say) names the job.
                let what = if ev.point_id.is_empty() { format!("job {}", ev.job_id) } else { ev.point_id.clone() };
                say(&overall, format!("failure on {} {what}: {first}", ev.agent));
                overall.set_message(format!("{failures} failures"));
            }
            Kind::Completed | Kind::Failed | Kind::Cancelled => {
                for (_, (pb, ..)) in lines {
                    pb.finish();
                }
                overall.finish();
                let s = match ev.status {
                    Some(s) => s,
                    None => c.status(SweepRef { sweep_id: id.to_string() }).await?.into_inner(),
                };
                return Ok(Some(s));
            }
            Kind::Status => {
                if let Some(s) = ev.status.filter(|s| s.state() != v1::SweepState::Running) {
                    return Ok(Some(s));
                }
            }
            Kind::Unspecified | Kind::Assigned | Kind::Progress | Kind::JobDone | Kind::Reassigned => {}
        }
    }
}

/// A line about traces recorded while the GPU slowed itself down (they are not comparable with the
/// others), from the manifest; `None` when there are none.
fn throttle_note(manifest: &serde_json::Value) -> Option<String> {
    let throttled = manifest["throttled_traces"].as_array().filter(|t| !t.is_empty())?;
    let traces: u64 = manifest["points"].as_array().into_iter().flatten().filter_map(|p| p["traces"].as_u64()).sum();
    let mut reasons: Vec<&str> = throttled.iter().filter_map(|t| t["reasons"].as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    Some(format!(
        "note: {} of {traces} traces were recorded while the GPU limited its clocks ({}); steps.csv flags them \
         (column `throttled`)",
        throttled.len(),
        reasons.join(", ")
    ))
}

/// The manifest's points that gave no data, one line each: point, agent, what became of it and why.
fn failed_points(manifest: &serde_json::Value) -> Vec<String> {
    manifest["point_status"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] != PointState::Done.name())
        .map(|p| {
            let why = p["error"].as_str().map(headline).unwrap_or_default();
            let attempts = p["attempts"].as_u64().unwrap_or(0);
            let runs = if attempts > 0 { format!(" after {attempts} failed runs") } else { String::new() };
            format!(
                "point {} on {}: {}{runs}: {why}",
                p["point"].as_str().unwrap_or("?"),
                p["agent"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// What the listed files hold: the results, the results of the points that gave data, or, when no trace
/// was read, tables without rows (the manifest still says why each point gave nothing).
fn results_heading(s: &tracefleet_proto::v1::SweepStatus, out: &Path) -> String {
    let read = s.traces_parsed.saturating_sub(s.traces_refused);
    if read == 0 {
        format!("no trace was read, so the tables in {} have no rows; manifest.json says why", out.display())
    } else if s.points_done < s.points_total {
        format!("results of {} of {} points in {}", s.points_done, s.points_total, out.display())
    } else {
        format!("results in {}", out.display())
    }
}

/// Prints the outcome; returns the lines of the points that gave no data.
fn summary(s: &tracefleet_proto::v1::SweepStatus, out: &Path, files: &[PathBuf], wall: Duration) -> Vec<String> {
    println!("\n{}", describe(s));
    println!("wall time {:.1} s; {}:", wall.as_secs_f64(), results_heading(s, out));
    for f in files {
        println!("  {}", f.strip_prefix(out).unwrap_or(f).display());
    }
    let mut failed = Vec::new();
    if let Ok(m) = std::fs::read(out.join("manifest.json"))
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m)
    {
        failed = failed_points(&v);
        for line in &failed {
            println!("{line}");
        }
        if let Some(note) = throttle_note(&v) {
            println!("{note}");
        }
        let warnings = v["warnings"].as_array().into_iter().flatten();
        for w in warnings.clone() {
            println!("warning: {}", w["message"].as_str().unwrap_or_default());
        }
        if warnings.clone().any(|w| w["kind"] == "others_dominant") {
            println!("  (manifest.json lists what `others` holds per series: key `others`)");
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_traces_get_a_note() {
        let m = serde_json::json!({
            "points": [{"traces": 3}, {"traces": 3}],
            "throttled_traces": [{"reasons": "sw_power_cap"}, {"reasons": "gpu_idle|sw_power_cap"}, {"reasons": "sw_power_cap"}],
        });
        assert_eq!(
            throttle_note(&m).as_deref(),
            Some(
                "note: 3 of 6 traces were recorded while the GPU limited its clocks (gpu_idle|sw_power_cap, \
                 sw_power_cap); steps.csv flags them (column `throttled`)"
            )
        );
        assert_eq!(throttle_note(&serde_json::json!({"points": [], "throttled_traces": []})), None);
        assert_eq!(throttle_note(&serde_json::json!({})), None, "manifests from before telemetry");
    }
}
