//! The agent's life: connect to the coordinator (reconnecting with jittered backoff), say hello, send
//! heartbeats, run the jobs it is given, and report them. Uploads go on whether or not the control stream
//! is up: the spool keeps every trace until the coordinator acknowledged it.

mod job;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracefleet_common::wire::MAX_MESSAGE_BYTES;
use tracefleet_proto::v1::agent_control_client::AgentControlClient;
use tracefleet_proto::v1::agent_message::Msg as Out;
use tracefleet_proto::v1::coordinator_message::Msg as In;
use tracefleet_proto::v1::{AgentMessage, Heartbeat, Hello, HostInventory, JobFailed, JobGpus};

use crate::backoff::Backoff;
use crate::spool::{Spool, UploadOutcome, Uploader};
use crate::workload::{Driver, WarmPool};

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Coordinator `host:port` (or a full `http://` URL).
    pub coordinator: String,
    /// Spool folder.
    pub spool_dir: PathBuf,
    /// Uploads (and compression threads) at once.
    pub upload_threads: usize,
    /// Python interpreter for the drivers (a sweep's backend table may name another).
    pub python: String,
    /// Hold uploads until each job's workload has ended (to measure the agent's effect on the GPU).
    pub pause_uploads: bool,
    /// TLS towards an `https://` coordinator: the CA to trust, and this agent's certificate and key (read
    /// again at every connection).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Run sweeps' `command` backends (`--allow-command`).
    pub allow_command: bool,
    /// Run this one command template only (the agent `coord sweep --local` embeds).
    pub only_command: Option<String>,
    /// Interpreters other than `python` that sweeps may name (`--allow-python`).
    pub allow_python: Vec<String>,
    /// Honour sweeps' `[gpu] lock_clocks_mhz` (off: such jobs are refused).
    pub allow_clock_locking: bool,
    /// GPU telemetry reading interval; zero turns telemetry off.
    pub telemetry_interval: std::time::Duration,
    /// The drivers kept waiting on each GPU with their imports done (empty: none).
    pub warm_drivers: Vec<Driver>,
    /// A job starts only while the spool holds less than this many bytes (None: no cap).
    pub spool_max_bytes: Option<u64>,
}

impl AgentConfig {
    /// What sweeps may run here.
    pub fn policy(&self) -> crate::workload::RunPolicy {
        crate::workload::RunPolicy {
            python: self.python.clone(),
            allow_command: self.allow_command,
            only_command: self.only_command.clone(),
            allow_python: self.allow_python.clone(),
        }
    }

    /// Uploads at once unless told otherwise.
    pub const UPLOAD_THREADS: usize = 2;
    /// The drivers' interpreter unless told otherwise.
    pub const PYTHON: &str = "python3";
    /// GPU telemetry interval unless told otherwise, ms (NVML answers in well under a millisecond).
    pub const TELEMETRY_INTERVAL_MS: u64 = 10;

    /// The settings of an agent of `coordinator` spooling to `spool_dir`, everything else as `agent`
    /// starts without flags: no TLS, no clock locking, every driver warm.
    pub fn new(coordinator: impl Into<String>, spool_dir: PathBuf) -> Self {
        Self {
            coordinator: coordinator.into(),
            spool_dir,
            upload_threads: Self::UPLOAD_THREADS,
            python: Self::PYTHON.into(),
            pause_uploads: false,
            tls: None,
            allow_command: false,
            only_command: None,
            allow_python: Vec::new(),
            allow_clock_locking: false,
            telemetry_interval: std::time::Duration::from_millis(Self::TELEMETRY_INTERVAL_MS),
            warm_drivers: Driver::ALL.to_vec(),
            spool_max_bytes: None,
        }
    }
}

/// The running agent.
pub struct Agent {
    pub cfg: AgentConfig,
    pub inventory: HostInventory,
    pub spool: Spool,
    pub uploader: Uploader,
    /// Torch drivers waiting for jobs, one per GPU.
    pub warm: Arc<WarmPool>,
    channel: Channel,
    session: Mutex<Option<mpsc::Sender<AgentMessage>>>,
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// The jobs this agent finished and the failures it reported, listed in every hello (see [`Reports`]).
    reports: Mutex<Reports>,
    /// This process, in every hello (see `Hello.instance`).
    instance: String,
    /// GPUs not running a job now (indices); empty on a host without GPUs.
    free_gpus: Mutex<GpuQueue>,
    gpu_freed: tokio::sync::Notify,
    /// The GPUs each running job holds, listed in every hello (see [`HeldGpus`]).
    held: Mutex<HashMap<String, Vec<u32>>>,
}

/// The GPUs one job holds: known to the coordinator (in the job's progress messages and in every hello)
/// until they are given back, when this is dropped, whichever way the job ends (a panic included).
pub struct HeldGpus {
    agent: Arc<Agent>,
    job_id: String,
    gpus: Vec<u32>,
}

impl HeldGpus {
    /// Takes `n` GPUs among `eligible` for job `job_id`, waiting for them (see [`Agent::acquire_gpus`]).
    pub async fn acquire(agent: &Arc<Agent>, job_id: &str, n: usize, eligible: &[u32]) -> Self {
        let gpus = agent.acquire_gpus(n, eligible).await;
        if !gpus.is_empty() {
            relock(&agent.held).insert(job_id.to_string(), gpus.clone());
        }
        HeldGpus { agent: agent.clone(), job_id: job_id.to_string(), gpus }
    }

    /// The GPUs' indexes, in increasing order.
    pub fn gpus(&self) -> &[u32] {
        &self.gpus
    }
}

impl Drop for HeldGpus {
    fn drop(&mut self) {
        if !self.gpus.is_empty() {
            relock(&self.agent.held).remove(&self.job_id);
            self.agent.release_gpus(&self.gpus);
        }
    }
}

/// Finished jobs remembered for hellos.
const FINISHED_KEPT: usize = 1000;
/// Failure reports remembered for hellos: at most this many...
const FAILURES_KEPT: usize = 256;
/// ... of at most this many bytes in all (a hello must stay well under the 4 MiB message limit).
const FAILURES_KEPT_BYTES: usize = 1 << 20;

/// What the agent reported about its jobs, listed again in every hello: a report made while the control
/// stream is down, or queued on a stream that then broke, is not lost. Both lists are under one lock, the
/// one a hello is built under, and a report is listed and sent under it: a session that starts meanwhile
/// either lists the report in its hello or is the session the report goes to.
#[derive(Default)]
struct Reports {
    /// Jobs finished, the most recent [`FINISHED_KEPT`] (ending a job twice is harmless).
    finished: VecDeque<String>,
    /// Failures of jobs and of points, the most recent ones ([`FAILURES_KEPT`], [`FAILURES_KEPT_BYTES`]).
    /// The coordinator handles them before the finished jobs (a point failure must be recorded before its
    /// job ends) and ignores one it has recorded already.
    failures: VecDeque<JobFailed>,
    /// The encoded size of `failures`.
    failure_bytes: usize,
}

impl Reports {
    fn push_finished(&mut self, job_id: &str) {
        self.finished.push_back(job_id.to_string());
        while self.finished.len() > FINISHED_KEPT {
            self.finished.pop_front();
        }
    }

    fn push_failure(&mut self, f: JobFailed) {
        self.failure_bytes += f.encoded_len();
        self.failures.push_back(f);
        while self.failures.len() > FAILURES_KEPT || self.failure_bytes > FAILURES_KEPT_BYTES {
            let Some(old) = self.failures.pop_front() else { break };
            self.failure_bytes -= old.encoded_len();
        }
    }
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agent's free GPUs and the line of jobs waiting for them.
struct GpuQueue {
    free: Vec<u32>,
    next_ticket: u64,
    /// Tickets not yet served, in the order they were taken, with the GPUs each may take (see
    /// [`Agent::acquire_gpus`]). A cancelled job's ticket leaves the line when dropped.
    waiting: std::collections::BTreeMap<u64, Vec<u32>>,
}

impl GpuQueue {
    /// The GPUs ticket `number` may take now: free, eligible for it, and not eligible for any ticket
    /// that came before it and still waits (so that no job is held back by one that came later).
    fn takeable(&self, number: u64, eligible: &[u32]) -> Vec<u32> {
        let earlier: std::collections::HashSet<u32> =
            self.waiting.range(..number).flat_map(|(_, e)| e.iter().copied()).collect();
        let mut fit: Vec<u32> =
            self.free.iter().copied().filter(|g| eligible.contains(g) && !earlier.contains(g)).collect();
        fit.sort_unstable();
        fit
    }
}

/// A place in the GPU line; dropped before it was served (the waiting job was cancelled), it gives the
/// place up so that the jobs behind it are not held.
struct Ticket<'a> {
    agent: &'a Agent,
    number: u64,
    served: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.served {
            relock(&self.agent.free_gpus).waiting.remove(&self.number);
            self.agent.gpu_freed.notify_waiters();
        }
    }
}

impl Agent {
    /// Prepares an agent (no connection is made yet).
    pub fn new(cfg: AgentConfig, inventory: HostInventory) -> anyhow::Result<Arc<Self>> {
        let spool = Spool::open(&cfg.spool_dir).map_err(|e| match e.kind() {
            // The lock's message names the folder already.
            std::io::ErrorKind::WouldBlock => anyhow::anyhow!("{e}"),
            _ => anyhow::anyhow!("opening the spool {}: {e}", cfg.spool_dir.display()),
        })?;
        let gpus: Vec<u32> = inventory.gpus.iter().map(|g| g.index).collect();
        let url = tracefleet_proto::url(&cfg.coordinator);
        let channel = match &cfg.tls {
            Some(files) if url.starts_with("https://") => crate::tls::channel(&url, files.clone())?,
            _ => tracefleet_proto::endpoint(&cfg.coordinator, &tracefleet_proto::ClientTls::default())?.connect_lazy(),
        };
        let drivers: &[Driver] = if gpus.is_empty() { &[] } else { &cfg.warm_drivers };
        let warm = WarmPool::new(&cfg.spool_dir.join("warm"), &cfg.python, drivers);
        Ok(Arc::new(Self {
            uploader: Uploader::new(channel.clone(), cfg.upload_threads),
            warm: Arc::new(warm),
            cfg,
            inventory,
            spool,
            channel,
            session: Mutex::new(None),
            running: Mutex::new(HashMap::new()),
            reports: Mutex::new(Reports::default()),
            instance: format!(
                "{:x}-{:x}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            ),
            free_gpus: Mutex::new(GpuQueue { free: gpus, next_ticket: 0, waiting: Default::default() }),
            gpu_freed: tokio::sync::Notify::new(),
            held: Mutex::new(HashMap::new()),
        }))
    }

    /// The indexes of this host's GPUs whose name matches `glob` (a sweep's GPU selector; empty: every
    /// GPU), in index order.
    ///
    /// # Errors
    /// The glob does not compile (the coordinator checks it at submission; an older one may not have).
    pub fn gpus_matching(&self, glob: &str) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        for g in &self.inventory.gpus {
            if tracefleet_common::glob::selects_gpu(glob, &g.name).map_err(|e| format!("GPU selector {glob:?}: {e}"))? {
                out.push(g.index);
            }
        }
        Ok(out)
    }

    /// The name of GPU `index` (empty for an index the host does not have).
    fn gpu_name(&self, index: u32) -> &str {
        self.inventory.gpus.iter().find(|g| g.index == index).map_or("", |g| g.name.as_str())
    }

    /// Takes `n` free GPUs of one kind ([`tracefleet_common::gpus::pick`]) among `eligible` (see
    /// [`Agent::gpus_matching`]) for a job, all at once; none on a host without GPUs. Jobs are served in
    /// the order they asked for the GPUs they could share: a job waiting for two GPUs is not overtaken by a
    /// later one-GPU job that could take one of them, but a later job for GPUs of another kind (on a host
    /// with several kinds) does not wait behind it. `n` above the eligible GPUs of any one kind is the
    /// caller's to refuse (it would wait for ever). Dropping the future
    /// while it waits (a cancelled job) gives its place up.
    pub async fn acquire_gpus(&self, n: usize, eligible: &[u32]) -> Vec<u32> {
        if self.inventory.gpus.is_empty() {
            return Vec::new();
        }
        // Only kinds with n GPUs can hold the job: it waits for (and holds back) those alone.
        let eligible = tracefleet_common::gpus::usable(eligible.iter().map(|&g| (g, self.gpu_name(g))), n);
        let eligible = &eligible[..];
        let mut ticket = {
            let mut q = relock(&self.free_gpus);
            let number = q.next_ticket;
            q.next_ticket += 1;
            q.waiting.insert(number, eligible.to_vec());
            Ticket { agent: self, number, served: false }
        };
        loop {
            let notified = self.gpu_freed.notified();
            {
                let mut q = relock(&self.free_gpus);
                // Lowest indexes first: a job's GPUs are then neighbours where the host numbers them so.
                let fit = q.takeable(ticket.number, eligible);
                if let Some(fit) = tracefleet_common::gpus::pick(fit.iter().map(|&g| (g, self.gpu_name(g))), n) {
                    q.free.retain(|g| !fit.contains(g));
                    q.waiting.remove(&ticket.number);
                    ticket.served = true;
                    drop(q);
                    // The next in line may fit in what is left, or wait for less.
                    self.gpu_freed.notify_waiters();
                    return fit;
                }
            }
            notified.await;
        }
    }

    /// Cancels every running job (their workload processes are killed); used when the agent is stopped.
    pub fn cancel_all(&self) {
        for tx in relock(&self.running).values() {
            let _ = tx.send(true);
        }
    }

    /// Gives GPUs back.
    pub fn release_gpus(&self, gpus: &[u32]) {
        if !gpus.is_empty() {
            relock(&self.free_gpus).free.extend_from_slice(gpus);
            self.gpu_freed.notify_waiters();
        }
    }

    /// Sends a message on the current control stream; false when there is none.
    pub fn send(&self, msg: Out) -> bool {
        let tx = relock(&self.session).clone();
        tx.is_some_and(|tx| tx.try_send(AgentMessage { msg: Some(msg) }).is_ok())
    }

    /// Reports a finished job now, and again at every hello.
    pub fn report_done(&self, job_id: &str, traces: u32) {
        // Listed and sent under the lock a hello is built under: a session that starts meanwhile either
        // lists the job in its hello or is the session this report goes to.
        let mut r = relock(&self.reports);
        r.push_finished(job_id);
        let done = Out::Done(tracefleet_proto::v1::JobDone { job_id: job_id.to_string(), traces });
        if self.send(done) {
            tracing::info!(job = %job_id, "job done, traces uploaded: {traces}; reported");
        } else {
            tracing::info!(job = %job_id, "job done, traces uploaded: {traces}; reported in the next hello (no control stream now)");
        }
    }

    /// Reports a failed job (an empty `point_id`) or point now, and again at every hello while it is among
    /// the most recent failures (before, a failure reported while the control stream was down was lost:
    /// its point ended "missing" instead of failed and was never retried, and a failed job was run again).
    pub fn report_failed(&self, failure: JobFailed) {
        // As report_done: listed and sent under the lock a hello is built under.
        let mut r = relock(&self.reports);
        r.push_failure(failure.clone());
        let (job, point, error) = (failure.job_id.clone(), failure.point_id.clone(), failure.error.clone());
        let what = if point.is_empty() { "job failed".to_string() } else { format!("point {point} failed") };
        if self.send(Out::Failed(failure)) {
            tracing::warn!(job = %job, "{what}: {error}; reported");
        } else {
            tracing::warn!(job = %job, "{what}: {error}; reported in the next hello (no control stream now)");
        }
    }

    /// Runs until the process is stopped.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        for g in &self.inventory.gpus {
            self.warm.fill(Some(g.index));
        }
        // Traces left in the spool by an earlier run are uploaded first.
        for e in self.spool.pending()? {
            let a = self.clone();
            tokio::spawn(async move {
                match a.uploader.upload(&e.data, &e.meta).await {
                    UploadOutcome::Complete { .. } => {
                        let _ = a.spool.remove(&e);
                    }
                    UploadOutcome::Refused(m) | UploadOutcome::Superseded(m) => {
                        tracing::warn!(trace = %e.meta.trace_name, "refused by the coordinator: {m}");
                        let _ = a.spool.fail(&e);
                    }
                }
            });
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        // Refusals of the name in a row: its holder may be this agent's own previous process, which the
        // coordinator has not noticed gone yet; it says when the name is free unless the holder is heard
        // from again. A holder still heard from after a few such waits is another live process.
        let mut name_refusals = 0u32;
        loop {
            match self.clone().session(&mut backoff).await {
                Ok(()) => {
                    name_refusals = 0;
                    tracing::warn!("control stream closed by the coordinator");
                }
                Err(e) => {
                    let status = e.downcast_ref::<tonic::Status>();
                    if let Some(wait) = status.and_then(name_free_in).filter(|_| name_refusals < NAME_REFUSALS) {
                        name_refusals += 1;
                        tracing::warn!(
                            "the coordinator has another process under this agent's name (a previous process of \
                             this agent not yet noticed gone?); trying again in {} ms",
                            wait.as_millis()
                        );
                        *relock(&self.session) = None;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    name_refusals = 0;
                    // Another agent has this name, or the certificate does not let this agent act as its
                    // --name: retrying would not help (and two agents would report as one).
                    if let Some(s) = status.filter(|s| {
                        matches!(
                            s.code(),
                            tonic::Code::AlreadyExists | tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                        )
                    }) {
                        let hint = tracefleet_proto::connection_hint(Some(s.code()), s.message());
                        return Err(match hint {
                            Some(h) => anyhow::anyhow!("{} ({h})", s.message()),
                            None => anyhow::anyhow!("{}", s.message()),
                        });
                    }
                    match tracefleet_proto::connection_hint(status.map(tonic::Status::code), &format!("{e:#}")) {
                        Some(h) => tracing::warn!("control stream: {e:#} ({h})"),
                        None => tracing::warn!("control stream: {e:#}"),
                    }
                }
            }
            *relock(&self.session) = None;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One control session: hello, then messages until the stream ends.
    async fn session(self: Arc<Self>, backoff: &mut Backoff) -> anyhow::Result<()> {
        let mut client = AgentControlClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel::<AgentMessage>(256);
        {
            // The hello is queued and the session made current under the lock of the reports: a job that
            // ends (or fails) while the stream is being opened is listed in this hello, or its report is
            // queued behind it (before, a report made then went nowhere, and the coordinator waited for
            // the job for ever).
            let reports = relock(&self.reports);
            let hello = Hello {
                inventory: Some(self.inventory.clone()),
                running_jobs: relock(&self.running).keys().cloned().collect(),
                finished_jobs: reports.finished.iter().cloned().collect(),
                instance: self.instance.clone(),
                failures: reports.failures.iter().cloned().collect(),
                job_gpus: relock(&self.held)
                    .iter()
                    .map(|(job_id, gpus)| JobGpus { job_id: job_id.clone(), gpus: gpus.clone() })
                    .collect(),
            };
            // The channel is new and empty: the hello is its first message.
            tx.try_send(AgentMessage { msg: Some(Out::Hello(hello)) })?;
            *relock(&self.session) = Some(tx.clone());
        }
        let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
        let result = loop {
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            };
            match msg.msg {
                Some(In::Welcome(w)) => {
                    backoff.reset();
                    tracing::info!("connected to {} as {}", self.cfg.coordinator, w.agent_id);
                    let every = Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(50)));
                    let (tx, agent) = (tx.clone(), self.clone());
                    if let Some(h) = heartbeat.take() {
                        h.abort();
                    }
                    heartbeat = Some(tokio::spawn(async move {
                        let mut seq = 0u64;
                        loop {
                            tokio::time::sleep(every).await;
                            seq += 1;
                            let spooled = agent.spool.len() as u32;
                            let hb = Heartbeat { seq, spooled_traces: spooled };
                            if tx.send(AgentMessage { msg: Some(Out::Heartbeat(hb)) }).await.is_err() {
                                return;
                            }
                        }
                    }));
                }
                Some(In::Assign(job)) => {
                    let mut running = relock(&self.running);
                    if running.contains_key(&job.job_id) {
                        continue;
                    }
                    let (cancel_tx, cancel_rx) = watch::channel(false);
                    running.insert(job.job_id.clone(), cancel_tx);
                    drop(running);
                    let agent = self.clone();
                    tokio::spawn(async move {
                        let id = job.job_id.clone();
                        // On a task of its own, so that a panic in it (a bug) ends the job as failed, with
                        // its GPUs given back, rather than leaving it listed as running for ever.
                        let ran = tokio::spawn(job::run(agent.clone(), job, cancel_rx)).await;
                        let cancel = relock(&agent.running).remove(&id);
                        if let Err(e) = ran
                            && e.is_panic()
                        {
                            // Its workload may still run: stopped, so that its GPUs come back (see
                            // job::Running).
                            if let Some(tx) = cancel {
                                let _ = tx.send(true);
                            }
                            agent.report_failed(JobFailed {
                                job_id: id,
                                error: format!("the agent failed while running the job (a defect of the agent): {e}"),
                                ..Default::default()
                            });
                        }
                    });
                }
                Some(In::Cancel(c)) => {
                    if let Some(t) = relock(&self.running).get(&c.job_id) {
                        let _ = t.send(true);
                    }
                }
                None => {}
            }
        };
        if let Some(h) = heartbeat {
            h.abort();
        }
        result
    }
}

/// Refusals of the agent's name, each after the wait the coordinator gave, before the agent gives up.
const NAME_REFUSALS: u32 = 3;

/// When a refusal of the agent's name (`ALREADY_EXISTS`) says the name is free unless its holder is heard
/// from again (`retry-after-ms`); `None` for any other status.
fn name_free_in(s: &tonic::Status) -> Option<Duration> {
    if s.code() != tonic::Code::AlreadyExists {
        return None;
    }
    let ms = s.metadata().get("retry-after-ms")?.to_str().ok()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ms.min(60_000)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn agent_with_gpus(dir: &std::path::Path, names: &[&str]) -> Arc<Agent> {
        let cfg = AgentConfig { warm_drivers: Vec::new(), ..AgentConfig::new("127.0.0.1:9", dir.to_path_buf()) };
        let gpus = (0..)
            .zip(names)
            .map(|(index, name)| tracefleet_proto::v1::GpuInfo { index, name: name.to_string(), ..Default::default() })
            .collect();
        let inventory = HostInventory { host: "t".into(), gpus, ..Default::default() };
        Agent::new(cfg, inventory).expect("agent")
    }

    fn two_gpu_agent(dir: &std::path::Path) -> Arc<Agent> {
        agent_with_gpus(dir, &["G", "G"])
    }

    #[tokio::test]
    async fn a_job_takes_only_gpus_of_the_kind_its_sweep_selects() {
        let dir = tempfile::tempdir().expect("tmp");
        let agent =
            agent_with_gpus(dir.path(), &["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"]);
        assert_eq!(agent.gpus_matching(""), Ok(vec![0, 1, 2]));
        assert_eq!(agent.gpus_matching("*H100*"), Ok(vec![1]));
        assert_eq!(agent.gpus_matching("*A100*"), Ok(vec![0, 2]));
        assert_eq!(agent.gpus_matching("*H200*"), Ok(vec![]));
        assert!(agent.gpus_matching("[").is_err_and(|e| e.contains("\"[\"")));

        // GPU 0 is free and lower, but not an H100.
        let h100 = agent.gpus_matching("*H100*").expect("glob");
        let first = agent.acquire_gpus(1, &h100).await;
        assert_eq!(first, vec![1]);
        // A second H100 job waits although two A100s are free.
        let a = agent.clone();
        let h = h100.clone();
        let second = tokio::spawn(async move { a.acquire_gpus(1, &h).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        // A later A100 job does not wait behind it: it takes a GPU the H100 job cannot use.
        let a100 = agent.gpus_matching("*A100*").expect("glob");
        assert_eq!(agent.acquire_gpus(1, &a100).await, vec![0]);
        // A later job for any GPU may take the other A100, never the H100 the earlier job waits for.
        let a = agent.clone();
        let any = vec![0, 1, 2];
        let later = tokio::spawn(async move {
            let one = a.acquire_gpus(1, &any).await;
            let two = a.acquire_gpus(1, &any).await;
            (one, two)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!later.is_finished(), "its second GPU would be the H100");
        agent.release_gpus(&first);
        assert_eq!(second.await.expect("second"), vec![1], "the H100 goes to the job that waited for it");
        agent.release_gpus(&[1]);
        assert_eq!(later.await.expect("later"), (vec![2], vec![1]));
    }

    #[tokio::test]
    async fn a_tensor_parallel_job_takes_gpus_of_one_kind_and_gives_them_back_however_it_ends() {
        let dir = tempfile::tempdir().expect("tmp");
        let agent = agent_with_gpus(dir.path(), &["A100", "H100", "A100", "H100"]);
        let all = agent.gpus_matching("").expect("glob");
        let one = HeldGpus::acquire(&agent, "j1", 1, &all).await;
        assert_eq!(one.gpus(), [0]);
        // Free: an H100, an A100, an H100: the pair is of H100s, not GPUs 1 and 2.
        let pair = HeldGpus::acquire(&agent, "j2", 2, &all).await;
        assert_eq!(pair.gpus(), [1, 3]);
        let listed = |a: &Agent| {
            let mut v: Vec<(String, Vec<u32>)> = relock(&a.held).iter().map(|(j, g)| (j.clone(), g.clone())).collect();
            v.sort();
            v
        };
        assert_eq!(listed(&agent), [("j1".to_string(), vec![0]), ("j2".to_string(), vec![1, 3])]);
        // A job's task that panics drops its GPUs with it.
        let a = agent.clone();
        let all2 = all.clone();
        let panicked = tokio::spawn(async move {
            let _held = HeldGpus::acquire(&a, "j3", 1, &all2).await;
            panic!("a defect");
        })
        .await;
        assert!(panicked.is_err_and(|e| e.is_panic()));
        drop(pair);
        assert_eq!(listed(&agent), [("j1".to_string(), vec![0])]);
        let mut free = relock(&agent.free_gpus).free.clone();
        free.sort_unstable();
        assert_eq!(free, [1, 2, 3]);
        drop(one);
        assert!(listed(&agent).is_empty());
    }

    #[tokio::test]
    async fn a_waiting_tensor_parallel_job_holds_back_only_kinds_that_can_hold_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let agent = agent_with_gpus(dir.path(), &["A100", "H100", "H100"]);
        let all = agent.gpus_matching("").expect("glob");
        let busy = agent.acquire_gpus(1, &[1]).await;
        let a = agent.clone();
        let all2 = all.clone();
        let pair = tokio::spawn(async move { a.acquire_gpus(2, &all2).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pair.is_finished(), "one H100 is busy");
        // The lone A100 can never be half of the pair: a later job for it does not wait.
        let a100 = tokio::time::timeout(Duration::from_secs(5), agent.acquire_gpus(1, &all)).await;
        assert_eq!(a100.expect("not held back by the waiting pair"), vec![0]);
        agent.release_gpus(&busy);
        assert_eq!(pair.await.expect("pair"), vec![1, 2]);
    }

    #[test]
    fn the_failures_kept_for_hellos_are_the_most_recent_within_their_bounds() {
        let failure = |i: usize, tail: usize| JobFailed {
            job_id: format!("j{i}"),
            point_id: "p".into(),
            error: "boom".into(),
            stderr_tail: "x".repeat(tail),
        };
        let mut r = Reports::default();
        for i in 0..FAILURES_KEPT + 10 {
            r.push_failure(failure(i, 0));
        }
        assert_eq!(r.failures.len(), FAILURES_KEPT);
        assert_eq!(r.failures.front().map(|f| f.job_id.as_str()), Some("j10"));
        // Large ones: as many of the newest as fit in the byte bound.
        for i in 0..8 {
            r.push_failure(failure(1000 + i, 300 << 10));
        }
        assert_eq!(r.failures.len(), 3, "three of 300 KiB fit in 1 MiB");
        assert_eq!(r.failures.back().map(|f| f.job_id.as_str()), Some("j1007"));
        assert_eq!(r.failure_bytes, r.failures.iter().map(|f| f.encoded_len()).sum::<usize>());
        assert!(r.failure_bytes <= FAILURES_KEPT_BYTES);
    }

    #[tokio::test]
    async fn gpus_go_in_order_and_an_abandoned_place_does_not_hold_the_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let agent = two_gpu_agent(dir.path());
        let first = agent.acquire_gpus(1, &[0, 1]).await;
        // A two-GPU job waits for the second GPU; a one-GPU job asking later must not overtake it.
        let a = agent.clone();
        let two = tokio::spawn(async move { a.acquire_gpus(2, &[0, 1]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let a = agent.clone();
        let later = tokio::spawn(async move { a.acquire_gpus(1, &[0, 1]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!two.is_finished() && !later.is_finished(), "one GPU is free, but the two-GPU job is first");
        agent.release_gpus(&first);
        let both = two.await.expect("two");
        assert_eq!(both, vec![0, 1]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!later.is_finished());
        agent.release_gpus(&both);
        let one = later.await.expect("later");
        assert_eq!(one.len(), 1);
        agent.release_gpus(&one);

        // A waiting job that is cancelled (its future dropped) gives its place up.
        let held = agent.acquire_gpus(2, &[0, 1]).await;
        let a = agent.clone();
        let cancelled = tokio::spawn(async move { a.acquire_gpus(2, &[0, 1]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let a = agent.clone();
        let behind = tokio::spawn(async move { a.acquire_gpus(1, &[0, 1]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancelled.abort();
        let _ = cancelled.await;
        agent.release_gpus(&held);
        let got = tokio::time::timeout(Duration::from_secs(5), behind).await.expect("not held").expect("behind");
        assert_eq!(got.len(), 1);
    }
}
