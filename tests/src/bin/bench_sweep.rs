//! Sweep benchmark: 128 points × 5 traces replayed by 1, 2 and 4 agents (separate processes) through a
//! real `coord serve` on loopback. Each trace "takes" `--delay-ms` on its agent (standing in for the
//! profiled step), so the ideal wall time is points × traces × delay / agents; what is above that is
//! the coordinator's and pipeline's overhead, reported per point.
//!
//! Usage: `bench-sweep [--agents 1,2,4] [--points 128] [--traces 5] [--delay-ms 20] [--bin-dir target/release]`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_proto::v1::{ListAgentsRequest, Point, ReplayBackend, SweepRef, SweepSpec};
use tracefleet_tests::procstat::cpu_seconds;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// decode/logs_{bs}/trace_{k}.json.zst for every point, hard links to one real H200 trace.
fn replay_tree(dir: &Path, points: u32, traces: u32) -> anyhow::Result<()> {
    let src = tracefleet_tests::fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    for bs in 1..=points {
        let d = dir.join("decode").join(format!("logs_{bs}"));
        std::fs::create_dir_all(&d)?;
        for k in 0..traces {
            let dst = d.join(format!("trace_{k}.json.zst"));
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst)?;
            }
        }
    }
    Ok(())
}

async fn run_one(
    bins: &Path,
    replay: &Path,
    agents: usize,
    points: u32,
    traces: u32,
    delay: u32,
) -> anyhow::Result<(f64, f64)> {
    let base = std::env::temp_dir().join(format!("bench-sweep-{}-{agents}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let mut coord = Command::new(bins.join("coord"))
        .args([
            "serve",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--heartbeat-ms",
            "500",
            "--data-dir",
        ])
        .arg(base.join("coord"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("coord")?;
    let stderr = coord.stderr.take().context("stderr")?;
    let coord = Killed(coord);
    let (addr, lines) =
        tracefleet_tests::procs::wait_serving(std::io::BufRead::lines(std::io::BufReader::new(stderr)))?;
    std::thread::spawn(move || for _ in lines {});
    let _agents: Vec<Killed> = (0..agents)
        .map(|i| {
            Command::new(bins.join("agent"))
                .args(["--coordinator", &addr, "--name", &format!("agent-{i}"), "--spool-dir"])
                .arg(base.join(format!("agent-{i}")))
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map(Killed)
        })
        .collect::<Result<_, _>>()?;
    let mut c = SweepsClient::connect(format!("http://{addr}")).await?;
    while c.list_agents(ListAgentsRequest {}).await?.into_inner().agents.iter().filter(|a| a.connected).count() < agents
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spec = SweepSpec {
        name: format!("bench-{agents}"),
        points: (1..=points)
            .map(|bs| Point {
                point_id: format!("decode-bs{bs}"),
                mode: tracefleet_proto::v1::Mode::Decode.into(),
                batch_size: bs,
                input_len: 128,
                output_len: 0,
                ..Default::default()
            })
            .collect(),
        profile_steps: traces,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Replay(ReplayBackend { dir: replay.display().to_string(), delay_ms: delay })),
        ..Default::default()
    };
    let cpu0 = cpu_seconds(&coord.0.id().to_string());
    let t0 = Instant::now();
    let id = c.submit(spec).await?.into_inner().sweep_id;
    loop {
        let s = c.status(SweepRef { sweep_id: id.clone() }).await?.into_inner();
        if s.state() != tracefleet_proto::v1::SweepState::Running {
            if s.state() != tracefleet_proto::v1::SweepState::Completed || s.traces_parsed != points * traces {
                bail!("sweep ended {s:?}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&coord.0.id().to_string()) - cpu0;
    drop(coord);
    let _ = std::fs::remove_dir_all(&base);
    Ok((wall, cpu))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut agents, mut points, mut traces, mut delay) = (vec![1usize, 2, 4], 128u32, 5u32, 20u32);
    let mut bins = tracefleet_tests::workspace().join("target/release");
    while let Some(a) = args.next() {
        let mut val = || args.next().context("missing value");
        match a.as_str() {
            "--agents" => agents = val()?.split(',').map(|v| v.parse()).collect::<Result<_, _>>()?,
            "--points" => points = val()?.parse()?,
            "--traces" => traces = val()?.parse()?,
            "--delay-ms" => delay = val()?.parse()?,
            "--bin-dir" => bins = PathBuf::from(val()?),
            other => bail!("unknown argument {other}"),
        }
    }
    let replay = std::env::temp_dir().join(format!("bench-sweep-replay-{}", std::process::id()));
    replay_tree(&replay, points, traces)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("## Sweep benchmark: {points} points x {traces} traces, {delay} ms per trace on the agent\n");
    println!("| agents | wall s | ideal s | speed-up | overhead per point | coordinator CPU per point |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut first = None;
    for a in agents {
        let (wall, cpu) = rt.block_on(run_one(&bins, &replay, a, points, traces, delay))?;
        let ideal = f64::from(points * traces * delay) / 1000.0 / a as f64;
        let per_agent_points = f64::from(points) / a as f64;
        let base = *first.get_or_insert(wall);
        println!(
            "| {a} | {wall:.2} | {ideal:.2} | {:.2}x | {:.1} ms | {:.1} ms |",
            base / wall,
            (wall - ideal).max(0.0) * 1000.0 / per_agent_points,
            cpu * 1000.0 / f64::from(points)
        );
    }
    let _ = std::fs::remove_dir_all(&replay);
    Ok(())
}
