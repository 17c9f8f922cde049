//! The command backend: any command, run once per point, with placeholders; its trace files are
//! collected from `{out_dir}` by the watcher (so the original experiment's scripts, or a patched vLLM,
//! run unchanged).

use std::path::Path;
use std::process::Command;

use tokio::sync::{mpsc, watch};
use tracefleet_proto::v1::{AssignJob, Point};

use super::{Backend, WorkloadError, WorkloadEvent, process};

/// Runs a command template.
#[derive(Debug, Clone)]
pub struct CommandTemplate {
    /// The template, run with `sh -c`.
    pub run: String,
}

/// Fills the placeholders of a template for one point.
pub fn expand(template: &str, p: &Point, job: &AssignJob, out_dir: &Path) -> String {
    template
        .replace("{batch_size}", &p.batch_size.to_string())
        .replace("{input_len}", &p.input_len.to_string())
        .replace("{output_len}", &p.output_len.to_string())
        .replace("{mode}", p.mode_name())
        .replace("{warmup_steps}", &job.warmup_steps.to_string())
        .replace("{profile_steps}", &job.profile_steps.to_string())
        .replace("{point}", &p.point_id)
        .replace("{out_dir}", &out_dir.display().to_string())
}

impl Backend for CommandTemplate {
    fn run(
        &self,
        job: &AssignJob,
        out_dir: &Path,
        gpus: &[u32],
        events: &mpsc::Sender<WorkloadEvent>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), WorkloadError> {
        for p in &job.points {
            if *cancel.borrow() {
                break;
            }
            let _ = events.blocking_send(WorkloadEvent::PointStarted(p.point_id.clone()));
            // Each point writes under its own folder, laid out like the original results tree.
            let dir = out_dir.join(&p.point_id).join(p.mode_name()).join(format!("logs_{}", p.batch_size));
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return Err(WorkloadError {
                    message: format!("creating {}: {e}", dir.display()),
                    stderr_tail: String::new(),
                });
            }
            let line = expand(&self.run, p, job, &dir);
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(&line);
            super::set_gpus(&mut cmd, gpus);
            if let Err(e) = process::run(cmd, &format!("command for {}", p.point_id), events, cancel) {
                let _ = events.blocking_send(WorkloadEvent::PointFailed {
                    point_id: p.point_id.clone(),
                    error: e.message,
                    stderr_tail: e.stderr_tail,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let p = Point {
            point_id: "decode-bs8-in128".into(),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: 8,
            input_len: 128,
            output_len: 100,
            ..Default::default()
        };
        let job = AssignJob { warmup_steps: 5, profile_steps: 3, ..Default::default() };
        let s = expand(
            "run.sh --bs {batch_size} --in {input_len} --out {output_len} -d {out_dir} {mode} {profile_steps}",
            &p,
            &job,
            Path::new("/o"),
        );
        assert_eq!(s, "run.sh --bs 8 --in 128 --out 100 -d /o decode 3");
    }
}
