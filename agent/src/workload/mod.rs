//! Workload backends: what runs a job's points and writes their trace files.
//!
//! A backend runs on a blocking thread, writes trace files under `out_dir/<point_id>/...`, and reports
//! per-point failures; the agent's watcher finds the finished files (so a backend that cannot say when a
//! file is done, such as an arbitrary command, works the same way). GPU backends (torch, vLLM, command)
//! implement the same trait.

mod replay;

pub use replay::Replay;

use std::path::Path;

use tokio::sync::{mpsc, watch};
use tracefleet_proto::v1::AssignJob;
use tracefleet_proto::v1::assign_job::Backend as JobBackend;

/// What a backend tells the agent while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadEvent {
    /// A point began.
    PointStarted(String),
    /// A point failed; the others go on.
    PointFailed {
        /// The point.
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
    /// Runs every point of `job`, writing trace files under `out_dir/<point_id>/`. Blocking; returns when
    /// the workload has ended (or `cancel` became true).
    fn run(
        &self,
        job: &AssignJob,
        out_dir: &Path,
        events: &mpsc::Sender<WorkloadEvent>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), WorkloadError>;
}

/// The backend an assignment asks for.
pub fn backend_for(job: &AssignJob) -> Result<Box<dyn Backend>, WorkloadError> {
    match &job.backend {
        Some(JobBackend::Replay(r)) => Ok(Box::new(Replay::new(r))),
        None => Err(WorkloadError { message: "the job names no backend".into(), stderr_tail: String::new() }),
    }
}
