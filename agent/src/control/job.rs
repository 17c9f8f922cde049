//! Running one job: the backend writes trace files, the watcher finds the finished ones, the spool keeps
//! them, the uploader sends them; the job is done when the backend has ended and every trace is
//! acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracefleet_proto::v1::agent_message::Msg as Out;
use tracefleet_proto::v1::assign_job::Backend as JobBackend;
use tracefleet_proto::v1::{AssignJob, JobFailed, JobProgress};

use super::{Agent, HeldGpus};
use crate::gpu::{ClockLock, Sampler, now_ns};
use crate::spool::{EntryMeta, UploadOutcome, Watcher};
use crate::workload::{WorkloadError, WorkloadEvent, backend_for};

/// How often the output folder is polled.
const POLL: Duration = Duration::from_millis(50);
/// How long after its workload ended a job waits for trace files still growing (written by a process the
/// workload left behind) before it reports them not uploaded.
const SETTLE: Duration = Duration::from_secs(30);

/// (point, trace name) of a file under the job's output folder: `<point>/<name...>`.
fn split(out_dir: &Path, f: &Path) -> Option<(String, String)> {
    let rel = f.strip_prefix(out_dir).ok()?;
    let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
    let point = parts.next()?;
    let name: Vec<String> = parts.collect();
    (!name.is_empty()).then(|| (point, name.join("/")))
}

/// The name of the GPU a job runs on (the first GPU's on a host without NVML indices).
fn gpu_name(agent: &Agent, gpu: Option<u32>) -> String {
    let gpus = &agent.inventory.gpus;
    gpu.and_then(|i| gpus.iter().find(|g| g.index == i)).or(gpus.first()).map(|g| g.name.clone()).unwrap_or_default()
}

/// Starts reading the job's GPUs (one sampler per GPU, in the job's order), when it has any and runs a real
/// workload (replayed traces were recorded elsewhere: this GPU's state says nothing about them). A GPU
/// NVML cannot read gets `None`, with a log line.
async fn telemetry_for(agent: &Agent, job: &AssignJob, gpus: &[u32]) -> Vec<Option<Sampler>> {
    let interval = agent.cfg.telemetry_interval;
    if interval.is_zero() || matches!(job.backend, Some(JobBackend::Replay(_)) | None) {
        return Vec::new();
    }
    if gpus.is_empty() {
        tracing::warn!(job = %job.job_id, "no GPU telemetry (this agent reports no GPU)");
        return Vec::new();
    }
    let mut samplers = Vec::with_capacity(gpus.len());
    for &g in gpus {
        // NVML calls block: keep them off the async workers.
        let started = tokio::task::spawn_blocking(move || Sampler::start(g, interval))
            .await
            .unwrap_or_else(|e| Err(format!("starting the telemetry sampler: {e}")));
        samplers.push(started.inspect_err(|why| tracing::warn!(job = %job.job_id, "no GPU telemetry: {why}")).ok());
    }
    samplers
}

/// The rank a trace file's name gives, as vLLM names its profiler's files (`rank1.<ns>.pt.trace.json`).
fn rank_in_name(f: &Path) -> Option<usize> {
    let name = f.file_name()?.to_str()?;
    let digits = name.strip_prefix("rank")?.split('.').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Which of a job's `gpus` GPUs recorded trace `f`: the only one, or, for a job on several GPUs (tensor
/// parallelism, rank N on the job's N-th GPU, as CUDA numbers the visible devices), the one of the rank
/// its name gives. `None` when that cannot be told: the trace then carries no telemetry rather than
/// another GPU's.
fn gpu_slot_of(gpus: usize, f: &Path) -> Option<usize> {
    match gpus {
        0 => None,
        1 => Some(0),
        n => rank_in_name(f).filter(|&r| r < n),
    }
}

/// Uploads a spooled trace in the background; the spool keeps it until the coordinator has it (or moves
/// it to `failed/` when refused for good).
/// Its result: (point, trace name as the workload wrote it, outcome).
fn spawn_upload(
    uploads: &mut JoinSet<(String, String, UploadOutcome)>,
    agent: &Arc<Agent>,
    entry: crate::spool::Entry,
) {
    let a = agent.clone();
    uploads.spawn(async move {
        let o = a.uploader.upload(&entry.data, &entry.meta).await;
        match &o {
            UploadOutcome::Complete { .. } => {
                let _ = a.spool.remove(&entry);
            }
            UploadOutcome::Refused(_) | UploadOutcome::Superseded(_) => {
                let _ = a.spool.fail(&entry);
            }
        }
        (entry.meta.point_id.clone(), entry.meta.trace_name.clone(), o)
    });
}

/// Runs a job to its end and reports it.
pub async fn run(agent: Arc<Agent>, job: AssignJob, cancel: watch::Receiver<bool>) {
    // Sent now and listed in every hello after (a failure reported while the control stream is down is
    // delivered when it is back, before the job's end).
    let fail = |point: &str, error: String, stderr_tail: String| {
        agent.report_failed(JobFailed { job_id: job.job_id.clone(), point_id: point.to_string(), error, stderr_tail })
    };
    // A point without a mode would run as something nobody asked for.
    if let Some(p) = job.points.iter().find(|p| p.mode().known().is_none()) {
        fail("", format!("point {} has no mode (decode or prefill)", p.point_id), String::new());
        return;
    }
    let backend = match backend_for(&job, &agent.cfg.policy(), &agent.warm) {
        Ok(b) => b,
        Err(e) => {
            fail("", e.message, e.stderr_tail);
            return;
        }
    };
    // A spool over its cap (traces the coordinator has not taken, e.g. while it is unreachable) starts no
    // job: more traces would only pile up on the node's disk.
    if let Some(cap) = agent.cfg.spool_max_bytes {
        let spool = agent.spool.clone();
        match tokio::task::spawn_blocking(move || spool.bytes()).await {
            Ok(Ok(held)) if held >= cap => {
                fail(
                    "",
                    format!(
                        "the agent's spool holds {} MB, at or over its cap (--spool-max-mb {}): no job starts until \
                         its traces are uploaded (is the coordinator reachable?)",
                        held >> 20,
                        cap >> 20
                    ),
                    String::new(),
                );
                return;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("measuring the spool: {e}"),
            Err(e) => tracing::warn!("measuring the spool: {e}"),
        }
    }
    let out_dir = agent.spool.work_dir(&job.job_id);
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        fail("", format!("creating {}: {e}", out_dir.display()), String::new());
        return;
    }
    // A job holds its GPUs (CUDA_VISIBLE_DEVICES) for its whole run: one, or its tensor-parallel size.
    // Only GPUs of the kind the sweep asked for: a host may hold several kinds.
    let need = crate::workload::gpus_of(&job);
    let eligible = match agent.gpus_matching(&job.gpu_glob) {
        Ok(e) => e,
        Err(e) => {
            fail("", e, String::new());
            return;
        }
    };
    let have = agent.inventory.gpus.len();
    // A job on several GPUs takes them of one kind (see tracefleet_common::gpus).
    let of_one_kind = tracefleet_common::gpus::most_of_one_kind(eligible.iter().map(|&g| agent.gpu_name(g)));
    if have > 0 && need > of_one_kind {
        let names: Vec<&str> = agent.inventory.gpus.iter().map(|g| g.name.as_str()).collect();
        let what = match (job.gpu_glob.is_empty(), need > 1 && of_one_kind < eligible.len()) {
            (true, false) => format!("this agent has {have}"),
            (true, true) => {
                format!("this agent has at most {of_one_kind} of one kind (its GPUs: {})", names.join(", "))
            }
            (false, _) => format!(
                "this agent has {} of one kind whose name matches the sweep's GPU selector {:?} (its GPUs: {})",
                of_one_kind,
                job.gpu_glob,
                names.join(", ")
            ),
        };
        let unit = if need == 1 { "GPU" } else { "GPUs of one kind (tensor_parallel)" };
        fail("", format!("the job needs {need} {unit} and {what}"), String::new());
        return;
    }
    // A job cancelled while it waits for GPUs ends there (its place in line is given up).
    let mut cancelled = cancel.clone();
    let held = tokio::select! {
        g = HeldGpus::acquire(&agent, &job.job_id, need, &eligible) => g,
        _ = cancelled.wait_for(|c| *c) => {
            tracing::info!(job = %job.job_id, "cancelled while waiting for {need} GPUs");
            agent.report_done(&job.job_id, 0);
            return;
        }
    };
    let gpus = held.gpus().to_vec();
    // The coordinator learns which GPUs the job holds now, not at its first trace: on a host with GPUs of
    // several kinds, it sends the next job by what is free.
    let progress = |point_id: &str, produced: u32, uploaded: u32| {
        agent.send(Out::Progress(JobProgress {
            job_id: job.job_id.clone(),
            point_id: point_id.to_string(),
            traces_produced: produced,
            traces_uploaded: uploaded,
            gpus: gpus.clone(),
        }));
    };
    if !gpus.is_empty() {
        progress("", 0, 0);
    }
    // Clocks are locked on one GPU only (refused below for several); telemetry and the GPU name are those
    // of the GPU each trace was recorded on.
    let gpu = gpus.first().copied();
    let lock_mhz = job.gpu.map_or(0, |g| g.lock_clocks_mhz);
    if lock_mhz > 0 && gpus.len() > 1 {
        // The lock is one GPU's; sweep files refuse it with tensor parallelism, other clients too.
        drop(held);
        fail("", "locking clocks is not supported for a job on several GPUs (tensor_parallel)".into(), String::new());
        return;
    }
    let clock_lock = if lock_mhz > 0 {
        // NVML calls block: keep them off the async workers.
        let (allowed, host) = (agent.cfg.allow_clock_locking, agent.inventory.host.clone());
        let locked = tokio::task::spawn_blocking(move || ClockLock::acquire(gpu, lock_mhz, allowed, &host))
            .await
            .unwrap_or_else(|e| Err(format!("locking clocks: {e}")));
        match locked {
            Ok(l) => {
                tracing::info!(job = %job.job_id, "GPU clocks locked at {} MHz", l.mhz());
                Some(l)
            }
            Err(e) => {
                drop(held);
                fail("", e, String::new());
                return;
            }
        }
    } else {
        None
    };
    let samplers = telemetry_for(&agent, &job, &gpus).await;
    let job_start_ns = now_ns();
    let (ev_tx, mut ev_rx) = mpsc::channel(64);
    let announces = backend.announces_traces();
    let (j, d, g) = (job.clone(), out_dir.clone(), gpus.clone());
    let workload = Running {
        handle: Some(tokio::task::spawn_blocking(move || backend.run(&j, &d, &g, &ev_tx, &cancel))),
        held: Some(held),
    };

    let mut watcher = Watcher::default();
    // When the workload had ended and every upload was done (files still growing get SETTLE from then).
    let mut ended_at: Option<std::time::Instant> = None;
    let mut uploads: JoinSet<(String, String, UploadOutcome)> = JoinSet::new();
    let (mut produced, mut uploaded) = (0u32, 0u32);
    let mut current_point = String::new();
    // With --pause-uploads, traces wait in the spool until the workload has ended.
    let mut deferred = Vec::new();
    // Step windows the workload announced, and when the current point started: a trace without a window
    // (a command's, vLLM's) gets the GPU's state from its point's start to the file's discovery.
    let mut windows: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    let mut point_starts: HashMap<String, u64> = HashMap::new();
    loop {
        // Read before draining the events: once the workload has ended its sender is gone, so every
        // event it sent is drained below (a point failure reported at the very end is not lost).
        let ended = workload.is_finished();
        let mut announced = Vec::new();
        while let Ok(ev) = ev_rx.try_recv() {
            match ev {
                WorkloadEvent::PointStarted(p) => {
                    point_starts.insert(p.clone(), now_ns());
                    current_point = p;
                }
                WorkloadEvent::Log(m) => tracing::info!(job = %job.job_id, "{m}"),
                WorkloadEvent::TraceFinished { path, window_ns, .. } => {
                    if let Some(w) = window_ns {
                        windows.insert(path.clone(), w);
                    }
                    // The watcher may have found the file before the workload said so.
                    if watcher.mark_done(path.clone()) {
                        announced.push(path);
                    }
                }
                WorkloadEvent::PointFailed { point_id, error, stderr_tail } => {
                    fail(&point_id, error, stderr_tail);
                }
            }
        }
        let d = out_dir.clone();
        let found = if announces && !ended {
            Vec::new()
        } else {
            let mut w = std::mem::take(&mut watcher);
            let (w, found) = tokio::task::spawn_blocking(move || {
                let f = w.poll(&d, ended);
                (w, f)
            })
            .await
            .unwrap_or_default();
            watcher = w;
            found
        };
        for f in announced.into_iter().chain(found) {
            let Some((point_id, trace_name)) = split(&out_dir, &f) else { continue };
            let found_ns = now_ns();
            let point_start = point_starts.get(&point_id).copied().unwrap_or(job_start_ns);
            let (start, end) = windows.remove(&f).unwrap_or((point_start, found_ns));
            let slot = gpu_slot_of(gpus.len(), &f);
            let meta = EntryMeta {
                sweep_id: job.sweep_id.clone(),
                job_id: job.job_id.clone(),
                point_id: point_id.clone(),
                trace_name,
                host: agent.inventory.host.clone(),
                gpu: gpu_name(&agent, slot.and_then(|k| gpus.get(k).copied()).or(gpu)),
                telemetry: slot
                    .and_then(|k| samplers.get(k))
                    .and_then(Option::as_ref)
                    .and_then(|s| s.window(start, end)),
            };
            match agent.spool.add(&f, meta) {
                Ok(entry) if agent.cfg.pause_uploads && !ended => {
                    produced += 1;
                    deferred.push(entry);
                }
                Ok(entry) => {
                    produced += 1;
                    spawn_upload(&mut uploads, &agent, entry);
                }
                Err(e) => {
                    fail(&point_id, format!("spooling {}: {e}", f.display()), String::new());
                }
            }
        }
        while let Some(r) = uploads.try_join_next() {
            if let Ok((point, trace, o)) = r {
                match o {
                    UploadOutcome::Complete { .. } => uploaded += 1,
                    // Named: a point may have several traces, and the refusal's text names none.
                    UploadOutcome::Refused(m) => {
                        fail(&point, format!("upload of {trace} refused: {m}"), String::new());
                    }
                    // The coordinator has moved the point on: nothing to report; it cancels the job.
                    UploadOutcome::Superseded(m) => tracing::warn!(job = %job.job_id, point = %point, "{m}"),
                }
            }
            progress(&current_point, produced, uploaded);
        }
        if ended {
            for entry in deferred.drain(..) {
                spawn_upload(&mut uploads, &agent, entry);
            }
        }
        if ended && uploads.is_empty() {
            // Files seen but not yet taken: wait for them to stop growing, for a while.
            let settled_at = *ended_at.get_or_insert_with(std::time::Instant::now);
            let pending = watcher.pending();
            if pending.is_empty() {
                break;
            }
            if settled_at.elapsed() >= SETTLE {
                for f in pending {
                    let point = split(&out_dir, &f).map(|(p, _)| p).unwrap_or_default();
                    fail(
                        &point,
                        format!(
                            "{} was still being written {} s after the workload ended (by a process it left \
                             behind?): not uploaded",
                            f.display(),
                            SETTLE.as_secs()
                        ),
                        String::new(),
                    );
                }
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let Some((handle, held)) = workload.into_parts() else { return };
    let result = handle.await;
    // Stopping the sampler joins its thread and resetting clocks calls NVML: both block. Clocks go back to
    // their defaults before the GPU is free for the next job.
    let _ = tokio::task::spawn_blocking(move || drop((samplers, clock_lock))).await;
    for &g in &gpus {
        // The next job on this GPU finds a driver with its imports done (started before the GPU is free,
        // so that job cannot miss it).
        agent.warm.fill(Some(g));
    }
    drop(held);
    let _ = std::fs::remove_dir_all(&out_dir);
    let _ = std::fs::remove_dir_all(out_dir.with_extension("driver"));
    match result {
        Ok(Err(e)) => {
            fail("", e.message, e.stderr_tail);
        }
        Err(e) => {
            fail("", format!("workload thread failed: {e}"), String::new());
        }
        // Failed points were reported one by one (the coordinator retries them); the job itself is done.
        Ok(Ok(())) => agent.report_done(&job.job_id, uploaded),
    }
}

/// A job's workload thread and the GPUs it runs on. Should the job's task unwind (a defect) while the
/// workload runs, the GPUs are given back only once the workload has ended (the agent cancels it), never
/// while it still uses them: the next job would share the GPU, and both measure wrong.
pub(super) struct Running {
    handle: Option<tokio::task::JoinHandle<Result<(), WorkloadError>>>,
    held: Option<HeldGpus>,
}

impl Running {
    fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(tokio::task::JoinHandle::is_finished)
    }

    /// The workload's handle and the GPUs, for the job's own end (nothing is left to the drop).
    fn into_parts(mut self) -> Option<(tokio::task::JoinHandle<Result<(), WorkloadError>>, HeldGpus)> {
        Some((self.handle.take()?, self.held.take()?))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let (Some(handle), Some(held)) = (self.handle.take(), self.held.take()) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(async move {
                    let _ = handle.await;
                    drop(held);
                })),
                // No runtime to wait on: the GPUs stay taken rather than shared with a running workload.
                Err(_) => std::mem::forget(held),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gpus_of_a_job_whose_task_unwinds_are_given_back_only_when_its_workload_ends() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = crate::control::AgentConfig {
            warm_drivers: Vec::new(),
            ..crate::control::AgentConfig::new("127.0.0.1:9", dir.path().to_path_buf())
        };
        let gpus = vec![tracefleet_proto::v1::GpuInfo { index: 0, name: "G".into(), ..Default::default() }];
        let inventory = tracefleet_proto::v1::HostInventory { host: "t".into(), gpus, ..Default::default() };
        let agent = Agent::new(cfg, inventory).expect("agent");
        let held = HeldGpus::acquire(&agent, "j", 1, &[0]).await;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let handle = tokio::task::spawn_blocking(move || {
            let _ = stop_rx.recv();
            Ok(())
        });
        // The job's task unwinds: its Running is dropped while the workload still runs.
        drop(Running { handle: Some(handle), held: Some(held) });
        let a = agent.clone();
        let next = tokio::spawn(async move { a.acquire_gpus(1, &[0]).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!next.is_finished(), "the GPU is still the running workload's");
        stop_tx.send(()).expect("stop the workload");
        let got = tokio::time::timeout(Duration::from_secs(5), next).await.expect("freed").expect("task");
        assert_eq!(got, vec![0]);
    }

    #[test]
    fn a_trace_of_a_tensor_parallel_job_is_told_to_its_ranks_gpu() {
        let p = |s: &str| PathBuf::from(format!("/spool/job/p1/decode/logs_8/{s}"));
        // vLLM's names (the H200 fixtures'): rank N on the job's N-th GPU.
        assert_eq!(gpu_slot_of(2, &p("rank0.1795978476875373500.pt.trace.json")), Some(0));
        assert_eq!(gpu_slot_of(2, &p("rank1.1795978476859100235.pt.trace.json.gz")), Some(1));
        assert_eq!(gpu_slot_of(4, &p("rank12.1.pt.trace.json")), None, "no such rank in the job");
        // A name that does not say: no telemetry rather than another GPU's.
        for odd in ["trace_0.json", "rank.1.json", "rankx.json", "my_rank1.json", "rank1"] {
            assert_eq!(gpu_slot_of(2, &p(odd)), if odd == "rank1" { Some(1) } else { None }, "{odd}");
        }
        // One GPU: every trace is its; no GPU: none.
        assert_eq!(gpu_slot_of(1, &p("trace_0.json")), Some(0));
        assert_eq!(gpu_slot_of(1, &p("rank1.1.pt.trace.json")), Some(0));
        assert_eq!(gpu_slot_of(0, &p("rank0.1.pt.trace.json")), None);
    }
}
