//! Workload backends: what runs a job's points and writes their trace files.
//!
//! A backend runs on a blocking thread, writes trace files under `out_dir/<point_id>/...`, and reports
//! per-point failures; the agent's watcher finds the finished files (so a backend that cannot say when a
//! file is done, such as an arbitrary command, works the same way). GPU backends (torch, vLLM, command)
//! implement the same trait.

mod command;
mod process;
mod python;
mod replay;
mod warm;

pub use command::{CommandTemplate, expand};
pub use process::parse_event;
pub use python::{Driver, PythonDriver, SHAPES, TORCH_DRIVER, VLLM_DRIVER};
pub use replay::Replay;
pub use warm::WarmPool;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracefleet_proto::v1::AssignJob;
use tracefleet_proto::v1::assign_job::Backend as JobBackend;

/// Gives a workload process the GPUs `gpus` (none: leaves the environment alone). NVML numbers GPUs by PCI
/// bus; CUDA is told to do the same, so telemetry reads the GPU the job runs on.
pub fn set_gpus(cmd: &mut std::process::Command, gpus: &[u32]) {
    if !gpus.is_empty() {
        let list: Vec<String> = gpus.iter().map(u32::to_string).collect();
        cmd.env("CUDA_VISIBLE_DEVICES", list.join(",")).env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    }
}

/// GPUs a job holds: its vLLM tensor-parallel size, else one.
pub fn gpus_of(job: &AssignJob) -> usize {
    match &job.backend {
        Some(JobBackend::Vllm(v)) => v.tensor_parallel.max(1) as usize,
        _ => 1,
    }
}

/// Writes a driver's source to `path` through a temporary file and a rename, so an interpreter starting
/// from the same path never reads half a file.
pub fn write_driver(path: &Path, source: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, source)?;
    std::fs::rename(&tmp, path)
}

/// What a backend tells the agent while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadEvent {
    /// A point began.
    PointStarted(String),
    /// The workload says a trace file is complete (no need to wait for it to stop growing).
    TraceFinished {
        point_id: String,
        path: std::path::PathBuf,
        /// When the profiled step ran, Unix ns (start, end), if the workload says (for GPU telemetry).
        window_ns: Option<(u64, u64)>,
    },
    /// A line for the agent's log.
    Log(String),
    /// A point failed; the others go on.
    PointFailed {
        point_id: String,
        /// What went wrong.
        error: String,
        /// The last lines of the workload's stderr, if it has one.
        stderr_tail: String,
    },
}

/// A failure of the whole job.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WorkloadError {
    /// What went wrong.
    pub message: String,
    /// The last lines of the workload's stderr.
    pub stderr_tail: String,
}

/// Runs the points of a job.
pub trait Backend: Send + Sync {
    /// Whether the workload announces every trace it writes (with its step window). The agent then takes
    /// only announced files while it runs, so each trace gets its step's GPU telemetry, and sweeps up
    /// whatever was not announced when the workload has ended.
    fn announces_traces(&self) -> bool {
        false
    }

    /// Runs every point of `job` on `gpus` (empty on a host without GPUs), writing trace files under
    /// `out_dir/<point_id>/`. Blocking; returns when the workload has ended (or `cancel` became true).
    fn run(
        &self,
        job: &AssignJob,
        out_dir: &Path,
        gpus: &[u32],
        events: &mpsc::Sender<WorkloadEvent>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), WorkloadError>;
}

/// What this agent lets sweeps run, whoever submits them (the agent's owner decides, not the sweep): the
/// replay backend and the Python drivers always, the drivers under the agent's own `--python` or an
/// interpreter listed with `--allow-python`; a `command` backend only with `--allow-command`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunPolicy {
    /// The agent's own interpreter (`--python`).
    pub python: String,
    /// Run `command` backends (`--allow-command`).
    pub allow_command: bool,
    /// Run this one command template, and no other (the agent `coord sweep --local` embeds).
    pub only_command: Option<String>,
    /// Other interpreters sweeps may name (`--allow-python`).
    pub allow_python: Vec<String>,
}

impl RunPolicy {
    /// The interpreter for a backend that asks for `asked` (empty: the agent's own).
    ///
    /// # Errors
    /// `asked` is neither the agent's own interpreter nor listed with `--allow-python`.
    fn python_for(&self, asked: &str) -> Result<String, WorkloadError> {
        if asked.is_empty() || asked == self.python || self.allow_python.iter().any(|p| p == asked) {
            return Ok(if asked.is_empty() { self.python.clone() } else { asked.to_string() });
        }
        Err(WorkloadError {
            message: format!(
                "this agent runs its drivers with {} and will not run the sweep's python {asked:?}; start the \
                 agent with --allow-python {asked} to allow it",
                self.python
            ),
            stderr_tail: String::new(),
        })
    }
}

/// The backend an assignment asks for, if `policy` allows it; torch and vLLM jobs go to a waiting driver
/// of `warm` when there is one.
///
/// # Errors
/// The job names no backend, or one `policy` refuses (the message says which flag allows it).
pub fn backend_for(
    job: &AssignJob,
    policy: &RunPolicy,
    warm: &Arc<WarmPool>,
) -> Result<Box<dyn Backend>, WorkloadError> {
    match &job.backend {
        Some(JobBackend::Replay(r)) => Ok(Box::new(Replay::new(r))),
        Some(JobBackend::Torch(t)) => Ok(Box::new(PythonDriver {
            driver: Driver::Torch,
            python: policy.python_for(&t.python)?,
            model: t.model.clone(),
            dtype: if t.dtype.is_empty() { "bfloat16".into() } else { t.dtype.clone() },
            attention: t.attention.clone(),
            cuda_graphs: false,
            max_model_len: 0,
            gpu_memory_utilization: 0.0,
            tensor_parallel: 1,
            warm: Some(warm.clone()),
        })),
        Some(JobBackend::Vllm(v)) => Ok(Box::new(PythonDriver {
            driver: Driver::Vllm,
            python: policy.python_for(&v.python)?,
            model: v.model.clone(),
            dtype: if v.dtype.is_empty() { "auto".into() } else { v.dtype.clone() },
            attention: String::new(),
            cuda_graphs: v.cuda_graphs,
            max_model_len: v.max_model_len,
            gpu_memory_utilization: v.gpu_memory_utilization,
            tensor_parallel: v.tensor_parallel.max(1),
            warm: Some(warm.clone()),
        })),
        Some(JobBackend::Command(c)) if policy.allow_command || policy.only_command.as_ref() == Some(&c.run) => {
            Ok(Box::new(CommandTemplate { run: c.run.clone() }))
        }
        Some(JobBackend::Command(_)) => Err(WorkloadError {
            message: "this agent does not run `command` backends (a sweep's command runs with the agent's \
                      rights); start the agent with --allow-command to allow them"
                .into(),
            stderr_tail: String::new(),
        }),
        None => Err(WorkloadError { message: "the job names no backend".into(), stderr_tail: String::new() }),
    }
}
