//! Real processes for integration tests: `coord serve` and `agent`, on loopback, killed when dropped,
//! and a gRPC client for sweeps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_proto::v1::{ListAgentsRequest, SweepRef, SweepSpec, SweepStatus};

use crate::bin;

/// A child process killed (SIGKILL) when dropped; its stderr is echoed with a prefix.
pub struct Proc {
    /// The child.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a process and echoes its stderr lines with `tag`; returns the first line matching `want`.
fn spawn(mut cmd: Command, tag: &str, want: Option<&str>) -> anyhow::Result<(Proc, Option<String>)> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn()?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, rx) = mpsc::channel();
    let tag = tag.to_string();
    let waiting = want.is_some();
    let want = want.map(str::to_string);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
            if !sent && want.as_deref().is_some_and(|w| line.contains(w)) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    let mut p = Proc { child };
    let line = match waiting {
        false => None,
        true => match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => Some(l),
            Err(_) => {
                let _ = p.child.kill();
                anyhow::bail!("process did not start: {:?}", p.child.try_wait());
            }
        },
    };
    Ok((p, line))
}

/// The gRPC address in `coord serve`'s log line `<time>  INFO <component>: coord serving on ADDR (...)`
/// (text or JSON format).
pub fn serving_addr(line: &str) -> Option<String> {
    let after = line.split("coord serving on ").nth(1)?;
    let addr = after.split(|c: char| c.is_whitespace() || c == '"').next()?;
    (!addr.is_empty()).then(|| addr.to_string())
}

/// Reads `coord serve`'s stderr until its serving line; returns the address and the remaining lines.
pub fn wait_serving<R: std::io::BufRead>(mut lines: std::io::Lines<R>) -> anyhow::Result<(String, std::io::Lines<R>)> {
    for line in lines.by_ref() {
        if let Some(addr) = serving_addr(&line?) {
            return Ok((addr, lines));
        }
    }
    anyhow::bail!("coord ended without serving")
}

/// A running coordinator.
pub struct Coord {
    /// The process.
    pub proc: Proc,
    /// gRPC address.
    pub addr: String,
    /// Metrics address.
    pub metrics: String,
    /// The log line that said it was serving.
    pub serving_line: String,
}

impl Coord {
    /// Starts `coord serve` on loopback with a data dir and extra flags.
    pub fn start(data_dir: &Path, listen: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin("coord"));
        cmd.args(["serve", "--listen", listen, "--metrics-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra);
        // Short heartbeats (agents noticed gone quickly) unless the test sets them.
        if !extra.contains(&"--heartbeat-ms") {
            cmd.args(["--heartbeat-ms", "200"]);
        }
        // Plain text unless the test gives TLS files.
        if !extra.contains(&"--tls-cert") {
            cmd.arg("--insecure");
        }
        let (proc, line) = spawn(cmd, "coord", Some("coord serving on"))?;
        let line = line.unwrap_or_default();
        let addr = serving_addr(&line).unwrap_or_default();
        let metrics = line.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default().to_string();
        Ok(Self { proc, addr, metrics, serving_line: line })
    }

    /// A sweeps client.
    pub async fn client(&self) -> anyhow::Result<SweepsClient<Channel>> {
        Ok(SweepsClient::connect(format!("http://{}", self.addr)).await?)
    }

    /// The Prometheus text.
    pub fn metrics_text(&self) -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics)?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// A metric's value.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
                    .map(str::to_string)
            })
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap_or(f64::NAN)
    }
}

/// Starts an agent.
pub fn agent(coordinator: &str, name: &str, spool: &Path) -> anyhow::Result<Proc> {
    agent_with(coordinator, name, spool, &[])
}

/// Starts an agent with extra flags.
pub fn agent_with(coordinator: &str, name: &str, spool: &Path, extra: &[&str]) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin("agent"));
    cmd.args(["--coordinator", coordinator, "--name", name, "--spool-dir"]).arg(spool).args(extra);
    Ok(spawn(cmd, name, None)?.0)
}

/// Waits until `n` agents are connected.
pub async fn wait_agents(c: &mut SweepsClient<Channel>, n: usize) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let r = c.list_agents(ListAgentsRequest {}).await?.into_inner();
        if r.agents.iter().filter(|a| a.connected).count() >= n {
            return Ok(());
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(60), "agents did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits a sweep.
pub async fn submit(c: &mut SweepsClient<Channel>, spec: SweepSpec) -> anyhow::Result<String> {
    Ok(c.submit(spec).await?.into_inner().sweep_id)
}

/// Polls until the sweep ends (reconnecting if the coordinator restarts); returns its last status.
pub async fn wait_sweep(addr: &str, id: &str, timeout: Duration) -> anyhow::Result<SweepStatus> {
    let t0 = Instant::now();
    loop {
        if let Ok(mut c) = SweepsClient::connect(format!("http://{addr}")).await
            && let Ok(s) = c.status(SweepRef { sweep_id: id.to_string() }).await
        {
            let s = s.into_inner();
            if s.state() != tracefleet_proto::v1::SweepState::Running {
                return Ok(s);
            }
        }
        anyhow::ensure!(t0.elapsed() < timeout, "sweep {id} did not finish in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fetches a finished sweep's result files into `dir`.
pub async fn fetch(c: &mut SweepsClient<Channel>, id: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut s = c.fetch_results(SweepRef { sweep_id: id.to_string() }).await?.into_inner();
    let mut files = Vec::new();
    while let Some(chunk) = s.message().await? {
        let p = dir.join(&chunk.file);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p)?;
        std::io::Write::write_all(&mut f, &chunk.data)?;
        if chunk.last {
            files.push(p);
        }
    }
    Ok(files)
}
