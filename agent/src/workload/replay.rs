//! The replay backend: "produces" the trace files of an existing results folder as if a run had written
//! them, so the whole pipeline runs on any machine. A point `decode, batch 8` takes the traces under
//! `DIR/decode/logs_8/` (or `DIR/logs_8/`); each file is written to the output folder under a temporary
//! name and renamed when complete, as a profiler's export would appear.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracefleet_common::layout::find_traces;
use tracefleet_proto::v1::{AssignJob, Point, ReplayBackend};

use super::{Backend, WorkloadError, WorkloadEvent};

/// Replays a folder.
#[derive(Debug, Clone)]
pub struct Replay {
    dir: PathBuf,
    delay: Duration,
}

impl Replay {
    /// From the assignment's settings.
    pub fn new(r: &ReplayBackend) -> Self {
        Self { dir: PathBuf::from(&r.dir), delay: Duration::from_millis(u64::from(r.delay_ms)) }
    }

    /// The source files of a point, with their names relative to the replay folder.
    pub fn sources(&self, p: &Point) -> Vec<(PathBuf, String)> {
        let logs = format!("logs_{}", p.batch_size);
        for cand in [self.dir.join(p.mode_name()).join(&logs), self.dir.join(&logs)] {
            if let Ok(found) = find_traces(&cand, true)
                && !found.files.is_empty()
            {
                return found
                    .files
                    .into_iter()
                    .map(|f| {
                        let rel = f.strip_prefix(&self.dir).unwrap_or(&f).to_string_lossy().into_owned();
                        (f, rel)
                    })
                    .collect();
            }
        }
        Vec::new()
    }
}

fn copy_atomically(src: &Path, dst: &Path) -> std::io::Result<()> {
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = dst.with_extension("partial");
    std::fs::copy(src, &tmp)?;
    std::fs::rename(&tmp, dst)
}

impl Backend for Replay {
    fn run(
        &self,
        job: &AssignJob,
        out_dir: &Path,
        _gpus: &[u32],
        events: &mpsc::Sender<WorkloadEvent>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), WorkloadError> {
        if !self.dir.is_dir() {
            // A relative folder is the agent's working directory's: say which folder that was.
            let message = match std::path::absolute(&self.dir) {
                Ok(abs) if self.dir.is_relative() => format!(
                    "replay folder {} does not exist on this host (a relative folder is taken from the agent's \
                     working directory: {}); give an absolute path",
                    self.dir.display(),
                    abs.display()
                ),
                _ => format!("replay folder {} does not exist on this host", self.dir.display()),
            };
            return Err(WorkloadError { message, stderr_tail: String::new() });
        }
        for p in &job.points {
            if *cancel.borrow() {
                break;
            }
            let _ = events.blocking_send(WorkloadEvent::PointStarted(p.point_id.clone()));
            let sources = self.sources(p);
            if sources.is_empty() {
                let _ = events.blocking_send(WorkloadEvent::PointFailed {
                    point_id: p.point_id.clone(),
                    error: format!(
                        "no traces for {} batch {} under {}",
                        p.mode_name(),
                        p.batch_size,
                        self.dir.display()
                    ),
                    stderr_tail: String::new(),
                });
                continue;
            }
            for (src, rel) in sources {
                if *cancel.borrow() {
                    break;
                }
                let dst = out_dir.join(&p.point_id).join(&rel);
                if let Err(e) = copy_atomically(&src, &dst) {
                    let _ = events.blocking_send(WorkloadEvent::PointFailed {
                        point_id: p.point_id.clone(),
                        error: format!("copying {}: {e}", src.display()),
                        stderr_tail: String::new(),
                    });
                    break;
                }
                if !self.delay.is_zero() {
                    std::thread::sleep(self.delay);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_relative_folder_is_named_as_the_agent_resolved_it() {
        let r = Replay::new(&ReplayBackend { dir: "fixtures/not-here".into(), delay_ms: 0 });
        let (tx, _rx) = mpsc::channel(1);
        let (_cancel_tx, cancel) = watch::channel(false);
        let out = tempfile::tempdir().expect("tmp");
        let e = r.run(&AssignJob::default(), out.path(), &[], &tx, &cancel).expect_err("no such folder");
        let abs = std::env::current_dir().expect("cwd").join("fixtures/not-here");
        assert!(
            e.message.contains("replay folder fixtures/not-here does not exist on this host")
                && e.message.contains(&format!("working directory: {})", abs.display())),
            "{}",
            e.message
        );
    }
}
