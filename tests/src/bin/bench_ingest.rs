//! End-to-end ingest benchmark: N simulated agents upload the same large trace concurrently to a real
//! `coord serve` on loopback (upload, durable write, parse, merge, results).
//!
//! Usage: `bench-ingest [--agents 1,8,64] [--coord PATH] [--taskset CPUS] TRACE.json`
//!
//! The agents are the agent library's own uploader (zstd frames, CRC32C, SHA-256, resumable protocol) in
//! this process; they announce themselves on a real control stream and report the job done, so the sweep
//! completes and its results are written, as in production. Reported per N:
//! - ingest MB/s: raw trace bytes / wall time from the first byte sent to the results written;
//! - MB/s per coordinator core: raw bytes / the coordinator's CPU seconds;
//! - coordinator peak RSS (`VmHWM`);
//! - agent CPU seconds per GB of raw trace (this process's CPU time during the uploads).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_stream::wrappers::ReceiverStream;
use tracefleet_agent::spool::{EntryMeta, UploadOutcome, Uploader};
use tracefleet_proto::v1::agent_control_client::AgentControlClient;
use tracefleet_proto::v1::agent_message::Msg;
use tracefleet_proto::v1::coordinator_message::Msg as In;
use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_proto::v1::{AgentMessage, Hello, HostInventory, JobDone, Point, ReplayBackend, SweepRef, SweepSpec};
use tracefleet_tests::procstat::{cpu_seconds, peak_rss};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_coord(coord: &Path, data: &Path, taskset: Option<&str>) -> anyhow::Result<(Killed, String)> {
    let mut cmd = match taskset {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(coord);
            c
        }
        None => Command::new(coord),
    };
    cmd.args([
        "serve",
        "--insecure",
        "--max-uploads-per-agent",
        "1024",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--data-dir",
    ])
    .arg(data)
    .stderr(Stdio::piped())
    .stdout(Stdio::null());
    let mut child = cmd.spawn().context("starting coord")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (addr, lines) =
        tracefleet_tests::procs::wait_serving(std::io::BufRead::lines(std::io::BufReader::new(stderr)))?;
    std::thread::spawn(move || for _ in lines {});
    Ok((Killed(child), addr))
}

async fn run_one(coord_bin: &Path, trace: &Path, n: usize, taskset: Option<&str>) -> anyhow::Result<String> {
    let data = std::env::temp_dir().join(format!("bench-ingest-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (child, addr) = start_coord(coord_bin, &data, taskset)?;
    let pid = child.0.id().to_string();
    let url = format!("http://{addr}");
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?.connect_lazy();

    // A real control stream, so that the sweep has an agent and ends when the job is reported done.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let inv = HostInventory { host: "bench".into(), ..Default::default() };
    tx.send(AgentMessage { msg: Some(Msg::Hello(Hello { inventory: Some(inv), ..Default::default() })) }).await?;
    let mut control = AgentControlClient::new(channel.clone()).session(ReceiverStream::new(rx)).await?.into_inner();
    let mut sweeps = SweepsClient::new(channel.clone());
    let points: Vec<Point> = (0..n)
        .map(|i| Point {
            point_id: format!("p{i}"),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: i as u32 + 1,
            input_len: 128,
            output_len: 0,
            ..Default::default()
        })
        .collect();
    let spec = SweepSpec {
        name: format!("bench-{n}"),
        points,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Replay(ReplayBackend { dir: "/nonexistent".into(), delay_ms: 0 })),
        ..Default::default()
    };
    let sweep = sweeps.submit(spec).await?.into_inner().sweep_id;
    let job = loop {
        match control.message().await?.and_then(|m| m.msg) {
            Some(In::Assign(a)) => break a.job_id,
            Some(_) => continue,
            None => bail!("control stream ended"),
        }
    };

    let size = std::fs::metadata(trace)?.len();
    let cpu0 = cpu_seconds("self");
    let ccpu0 = cpu_seconds(&pid);
    let t0 = Instant::now();
    let uploader = Uploader::new(channel.clone(), n);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (u, t) = (uploader.clone(), trace.to_path_buf());
        let meta = EntryMeta {
            sweep_id: sweep.clone(),
            job_id: job.clone(),
            point_id: format!("p{i}"),
            trace_name: "trace_0.json".into(),
            host: "bench".into(),
            gpu: String::new(),
            telemetry: None,
        };
        tasks.push(tokio::spawn(async move { u.upload(&t, &meta).await }));
    }
    for t in tasks {
        let o = t.await?;
        if !matches!(o, UploadOutcome::Complete { .. }) {
            bail!("upload failed: {o:?}");
        }
    }
    let agent_cpu = cpu_seconds("self") - cpu0;
    let uploaded = t0.elapsed().as_secs_f64();
    tx.send(AgentMessage { msg: Some(Msg::Done(JobDone { job_id: job, traces: n as u32 })) }).await?;
    loop {
        let st = sweeps.status(SweepRef { sweep_id: sweep.clone() }).await?.into_inner();
        if st.state() != tracefleet_proto::v1::SweepState::Running {
            if st.state() != tracefleet_proto::v1::SweepState::Completed || st.traces_parsed != n as u32 {
                bail!("sweep ended {st:?}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let coord_cpu = cpu_seconds(&pid) - ccpu0;
    let rss = peak_rss(&pid);
    drop(child);
    let _ = std::fs::remove_dir_all(&data);
    let raw_mb = (size * n as u64) as f64 / 1e6;
    Ok(format!(
        "| {n} | {:.0} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} MB | {:.2} |",
        raw_mb,
        wall,
        uploaded,
        raw_mb / wall,
        raw_mb / coord_cpu.max(1e-9),
        rss as f64 / 1e6,
        agent_cpu / (raw_mb / 1000.0)
    ))
}

/// The command line.
const USAGE: &str = "usage: bench-ingest [--agents 1,8,64] [--coord PATH] [--taskset CPUS] TRACE.json";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut agents = vec![1usize, 8, 64];
    let mut coord = tracefleet_tests::workspace().join("target/release/coord");
    let mut taskset: Option<String> = None;
    let mut trace: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--agents" => {
                agents =
                    args.next().context("--agents 1,8,64")?.split(',').map(|v| v.parse()).collect::<Result<_, _>>()?
            }
            "--coord" => coord = args.next().context("--coord PATH")?.into(),
            "--taskset" => taskset = Some(args.next().context("--taskset CPUS")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if a.starts_with('-') => bail!("unknown option {a}\n{USAGE}"),
            _ => trace = Some(a.into()),
        }
    }
    let trace = trace.context(USAGE)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!(
        "## Ingest benchmark: {} ({} MB), {} cores",
        trace.display(),
        std::fs::metadata(&trace)?.len() / 1_000_000,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Some(t) = &taskset {
        println!("\ncoordinator pinned to CPUs {t}");
    }
    println!(
        "\n| agents | raw MB | wall s | uploads s | ingest MB/s | MB/s per coordinator core | coordinator peak RSS | agent CPU s/GB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in agents {
        println!("{}", rt.block_on(run_one(&coord, &trace, n, taskset.as_deref()))?);
    }
    Ok(())
}
