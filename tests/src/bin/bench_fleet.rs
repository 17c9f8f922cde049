//! Fleet benchmark: N agents (default 256), simulated in this process, each with its own certificate and
//! its own mutual-TLS connection, say hello on a real control stream, take the jobs a real `coord serve`
//! deals them, upload real traces for their points with the agent library's uploader, and report the jobs
//! done. Several sweeps run back to back.
//!
//! Usage: `bench-fleet [--agents 256] [--traces 2] [--rounds 3] [--bin-dir target/release] TRACE.json`
//!
//! Reported per sweep: ingest MB/s (raw trace bytes / wall time from submission to results written),
//! upload acknowledgement latency p50/p99 from the coordinator's `tracefleet_upload_ack_seconds`
//! histogram (finish request to acknowledgement: commit, SHA-256 check, record; the bucket's upper bound),
//! the agents' whole-upload time p50/p99, and the coordinator's RSS and open file descriptors once the
//! agents are connected and after each sweep.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracefleet_agent::spool::{EntryMeta, UploadOutcome, Uploader};
use tracefleet_proto::v1::agent_control_client::AgentControlClient;
use tracefleet_proto::v1::agent_message::Msg;
use tracefleet_proto::v1::coordinator_message::Msg as In;
use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_proto::v1::{AgentMessage, Hello, HostInventory, JobDone, Point, ReplayBackend, SweepRef, SweepSpec};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (kb * 1024, fds)
}

/// The coordinator's histogram `name` as (upper bound, cumulative count) pairs.
fn histogram(metrics_addr: &str, name: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics_addr)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let prefix = format!("{name}_bucket{{le=\"");
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.split_whitespace().next()?.parse().ok()?))
        })
        .collect())
}

/// The upper bound of the bucket holding quantile `q` of the observations between two histogram reads.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counts: Vec<(f64, f64)> =
        after.iter().map(|(le, c)| (*le, c - before.iter().find(|(l, _)| l == le).map_or(0.0, |(_, b)| *b))).collect();
    let total = counts.last().map_or(0.0, |(_, c)| *c);
    counts.iter().find(|(_, c)| *c >= q * total).map_or(f64::NAN, |(le, _)| *le)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One simulated agent: its connection, uploader and control stream.
struct SimAgent {
    name: String,
    uploader: Uploader,
    tx: tokio::sync::mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<tracefleet_proto::v1::CoordinatorMessage>,
}

async fn connect_agent(pki: &Path, url: &str, i: usize) -> anyhow::Result<SimAgent> {
    let name = format!("agent-{i}");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(pki.join("ca.pem"))?))
        .identity(Identity::from_pem(
            std::fs::read(pki.join(format!("agents/{name}.pem")))?,
            std::fs::read(pki.join(format!("agents/{name}-key.pem")))?,
        ));
    let channel: Channel = Endpoint::from_shared(url.to_string())?.tls_config(tls)?.connect().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let inv = HostInventory { host: name.clone(), ..Default::default() };
    let hello = Hello { inventory: Some(inv), instance: format!("bench-{i}"), ..Default::default() };
    tx.send(AgentMessage { msg: Some(Msg::Hello(hello)) }).await?;
    let inbound = AgentControlClient::new(channel.clone()).session(ReceiverStream::new(rx)).await?.into_inner();
    // Heartbeats, as a real agent sends them: an agent silent for three intervals is dropped.
    let beat = tx.clone();
    tokio::spawn(async move {
        for seq in 1.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let hb = tracefleet_proto::v1::Heartbeat { seq, spooled_traces: 0 };
            if beat.send(AgentMessage { msg: Some(Msg::Heartbeat(hb)) }).await.is_err() {
                return;
            }
        }
    });
    Ok(SimAgent { name, uploader: Uploader::new(channel, 2), tx, inbound })
}

/// Takes this agent's jobs as they come, forever: uploads `traces` copies of `trace` per point, reports
/// the job done, and records each upload's time in `latencies`.
async fn serve_jobs(
    mut a: SimAgent,
    trace: PathBuf,
    traces: u32,
    latencies: Arc<std::sync::Mutex<Vec<f64>>>,
) -> anyhow::Result<()> {
    while let Some(msg) = a.inbound.message().await? {
        if let Some(In::Assign(job)) = msg.msg {
            let lat = upload_job(&a, &job, &trace, traces).await?;
            latencies.lock().unwrap_or_else(|e| e.into_inner()).extend(lat);
        }
    }
    bail!("{}: the coordinator ended the control stream", a.name)
}

async fn upload_job(
    a: &SimAgent,
    job: &tracefleet_proto::v1::AssignJob,
    trace: &Path,
    traces: u32,
) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::new();
    for p in &job.points {
        for k in 0..traces {
            let meta = EntryMeta {
                sweep_id: job.sweep_id.clone(),
                job_id: job.job_id.clone(),
                point_id: p.point_id.clone(),
                trace_name: format!("decode/logs_{}/trace_{k}.json", p.batch_size),
                host: a.name.clone(),
                gpu: String::new(),
                telemetry: None,
            };
            let t0 = Instant::now();
            let o = a.uploader.upload(trace, &meta).await;
            if !matches!(o, UploadOutcome::Complete { .. }) {
                bail!("{}: upload failed: {o:?}", a.name);
            }
            latencies.push(t0.elapsed().as_secs_f64());
        }
    }
    let done = JobDone { job_id: job.job_id.clone(), traces: traces * job.points.len() as u32 };
    a.tx.send(AgentMessage { msg: Some(Msg::Done(done)) }).await?;
    Ok(latencies)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut agents, mut traces, mut rounds) = (256usize, 2u32, 3u32);
    let mut bins = tracefleet_tests::workspace().join("target/release");
    let mut trace: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().context("a value");
        match a.as_str() {
            "--agents" => agents = val()?.parse()?,
            "--traces" => traces = val()?.parse()?,
            "--rounds" => rounds = val()?.parse()?,
            "--bin-dir" => bins = val()?.into(),
            _ => trace = Some(a.into()),
        }
    }
    let trace = trace.context("usage: bench-fleet [--agents 256] [--traces 2] [--rounds 3] TRACE.json")?;
    let base = std::env::temp_dir().join(format!("bench-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let pki = base.join("pki");
    let o = Command::new(bins.join("coord"))
        .args(["certs", "init"])
        .arg(&pki)
        .args(["--coordinator-san", "localhost", "--agents", &agents.to_string()])
        .output()?;
    if !o.status.success() {
        bail!("coord certs init: {}", String::from_utf8_lossy(&o.stderr));
    }
    let p = |f: &str| pki.join(f).display().to_string();
    let mut child = Command::new(bins.join("coord"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(base.join("coord"))
        .args(["--tls-cert", &p("coordinator.pem"), "--tls-key", &p("coordinator-key.pem")])
        .args(["--client-ca", &p("ca.pem")])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting coord")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let serving =
        lines.by_ref().map_while(Result::ok).find(|l| l.contains("coord serving on")).context("no serving line")?;
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();
    let _coord = Killed(child);
    let addr = tracefleet_tests::procs::serving_addr(&serving).context("address")?;
    let metrics = serving.split("http://").nth(1).and_then(|r| r.split('/').next()).context("metrics")?.to_string();
    let url = format!("https://localhost:{}", addr.rsplit(':').next().unwrap_or_default());
    let raw = std::fs::metadata(&trace)?.len();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let t0 = Instant::now();
        // 16 handshakes at a time.
        let mut sims = Vec::new();
        for chunk in (0..agents).collect::<Vec<_>>().chunks(16) {
            let connecting: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let (pki, url) = (pki.clone(), url.clone());
                    tokio::spawn(async move { connect_agent(&pki, &url, i).await })
                })
                .collect();
            for c in connecting {
                sims.push(c.await??);
            }
        }
        let connect_s = t0.elapsed().as_secs_f64();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(pki.join("ca.pem"))?))
            .identity(Identity::from_pem(std::fs::read(pki.join("operator.pem"))?, std::fs::read(pki.join("operator-key.pem"))?));
        let mut op = SweepsClient::new(Endpoint::from_shared(url.clone())?.tls_config(tls)?.connect().await?);
        let listed = op.list_agents(tracefleet_proto::v1::ListAgentsRequest {}).await?.into_inner().agents;
        if listed.iter().filter(|a| a.connected).count() != agents {
            bail!("{} of {agents} agents connected", listed.iter().filter(|a| a.connected).count());
        }
        let (rss0, fds0) = rss_and_fds(pid);
        println!(
            "## Fleet benchmark: {agents} agents (one process, one mutual-TLS connection each), {traces} traces of {:.1} MB per agent per sweep, {} cores\n",
            raw as f64 / 1e6,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!("{agents} agents connected in {connect_s:.1} s; coordinator RSS {:.0} MB, {fds0} open fds\n", rss0 as f64 / 1e6);
        println!("| sweep | raw MB | wall s | ingest MB/s | ack p50 ms | ack p99 ms | upload p50 ms | upload p99 ms | RSS after MB | fds after |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let latencies: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
        for a in sims {
            let (trace, lat) = (trace.clone(), latencies.clone());
            tokio::spawn(async move {
                if let Err(e) = serve_jobs(a, trace, traces, lat).await {
                    eprintln!("agent: {e:#}");
                }
            });
        }
        for round in 0..rounds {
            let h0 = histogram(&metrics, "tracefleet_upload_ack_seconds")?;
            let points: Vec<Point> = (0..agents)
                .map(|i| Point {
                    point_id: format!("p{i}"),
                    mode: tracefleet_proto::v1::Mode::Decode.into(),
                    batch_size: i as u32 + 1,
                    input_len: 128,
                    ..Default::default()
                })
                .collect();
            let spec = SweepSpec {
                name: format!("fleet-{round}"),
                points,
                profile_steps: traces,
                placement: tracefleet_proto::v1::Placement::Spread.into(),
                backend: Some(Backend::Replay(ReplayBackend { dir: "/nonexistent".into(), delay_ms: 0 })),
                ..Default::default()
            };
            let t0 = Instant::now();
            let id = op.submit(spec).await?.into_inner().sweep_id;
            loop {
                let st = op.status(SweepRef { sweep_id: id.clone() }).await?.into_inner();
                if st.state() != tracefleet_proto::v1::SweepState::Running {
                    if st.state() != tracefleet_proto::v1::SweepState::Completed
                        || st.traces_parsed != agents as u32 * traces
                    {
                        bail!("sweep ended {st:?}");
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let wall = t0.elapsed().as_secs_f64();
            let h1 = histogram(&metrics, "tracefleet_upload_ack_seconds")?;
            let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
            lat.sort_by(f64::total_cmp);
            let (rss, fds) = rss_and_fds(pid);
            let mb = (raw * u64::from(traces) * agents as u64) as f64 / 1e6;
            println!(
                "| {} | {mb:.0} | {wall:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {fds} |",
                round + 1,
                mb / wall,
                quantile(&h0, &h1, 0.5) * 1e3,
                quantile(&h0, &h1, 0.99) * 1e3,
                percentile(&lat, 0.5) * 1e3,
                percentile(&lat, 0.99) * 1e3,
                rss as f64 / 1e6,
            );
        }
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
