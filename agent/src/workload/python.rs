//! Backends that run an embedded Python driver (torch, vLLM). The drivers ship inside the agent binary
//! and are written to a temporary folder at run time, so the agent stays one file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracefleet_proto::v1::AssignJob;

use super::{Backend, WarmPool, WorkloadError, WorkloadEvent, process};

/// The torch driver's source.
pub const TORCH_DRIVER: &str = include_str!("../../drivers/torch_driver.py");
/// The vLLM driver's source.
pub const VLLM_DRIVER: &str = include_str!("../../drivers/vllm_driver.py");
/// The named model shapes both drivers read (`shapes.json` beside them).
pub const SHAPES: &str = include_str!("../../drivers/shapes.json");
/// What both drivers import (`driver_common.py` beside them): shapes and job-file checks.
pub const DRIVER_COMMON: &str = include_str!("../../drivers/driver_common.py");

/// The embedded Python drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Driver {
    /// PyTorch + Hugging Face transformers (`torch_driver.py`).
    Torch,
    /// vLLM's engine (`vllm_driver.py`).
    Vllm,
}

impl Driver {
    pub const ALL: [Driver; 2] = [Driver::Torch, Driver::Vllm];

    /// `torch` or `vllm`, as in sweep files and `agent --warm-drivers`.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Torch => "torch",
            Driver::Vllm => "vllm",
        }
    }

    /// The driver's source.
    pub fn source(self) -> &'static str {
        match self {
            Driver::Torch => TORCH_DRIVER,
            Driver::Vllm => VLLM_DRIVER,
        }
    }

    /// Writes the driver, the module it imports and the shapes it reads into `dir`; returns the script's
    /// path.
    pub fn write(self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        super::write_driver(&dir.join("shapes.json"), SHAPES)?;
        super::write_driver(&dir.join("driver_common.py"), DRIVER_COMMON)?;
        let script = dir.join(format!("{}_driver.py", self.name()));
        super::write_driver(&script, self.source())?;
        Ok(script)
    }
}

/// A Python driver backend.
#[derive(Debug, Clone)]
pub struct PythonDriver {
    pub driver: Driver,
    pub python: String,
    /// Model (shape name or folder).
    pub model: String,
    /// dtype (torch).
    pub dtype: String,
    /// Attention kernels (torch): flash, cudnn or auto.
    pub attention: String,
    /// CUDA graphs (vLLM).
    pub cuda_graphs: bool,
    /// The engine's max_model_len (vLLM); 0: the driver sizes it.
    pub max_model_len: u32,
    /// The engine's gpu_memory_utilization (vLLM); 0: vLLM's default.
    pub gpu_memory_utilization: f64,
    /// Tensor-parallel size (vLLM): the GPUs the job holds.
    pub tensor_parallel: u32,
    /// Waiting drivers to hand the job to (torch), instead of starting a fresh interpreter.
    pub warm: Option<Arc<WarmPool>>,
}

impl PythonDriver {
    /// The job file the driver reads.
    pub fn job_file(&self, job: &AssignJob, out_dir: &Path) -> serde_json::Value {
        let profiler = job.profiler.unwrap_or_default();
        serde_json::json!({
            "job_id": job.job_id,
            "sweep_id": job.sweep_id,
            "model": self.model,
            "dtype": self.dtype,
            "attention": if self.attention.is_empty() { "flash" } else { &self.attention },
            "cuda_graphs": self.cuda_graphs,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel": self.tensor_parallel.max(1),
            "warmup_steps": job.warmup_steps,
            "profile_steps": job.profile_steps.max(1),
            "profiler": {
                "record_shapes": profiler.record_shapes,
                "with_stack": profiler.with_stack,
                "with_modules": profiler.with_modules,
            },
            "out_dir": out_dir,
            "points": job.points.iter().map(|p| serde_json::json!({
                "point_id": p.point_id, "mode": p.mode_name(), "batch_size": p.batch_size,
                "input_len": p.input_len, "output_len": p.output_len,
            })).collect::<Vec<_>>(),
        })
    }

    fn python(&self) -> &str {
        if self.python.is_empty() { "python3" } else { &self.python }
    }

    /// Writes the job file into the job's driver folder (next to the output folder); returns its path.
    fn write_job(&self, job: &AssignJob, out_dir: &Path) -> std::io::Result<PathBuf> {
        let dir: PathBuf = out_dir.with_extension("driver");
        std::fs::create_dir_all(&dir)?;
        let job_path = dir.join("job.json");
        std::fs::write(
            &job_path,
            serde_json::to_vec_pretty(&self.job_file(job, out_dir)).map_err(std::io::Error::other)?,
        )?;
        Ok(job_path)
    }

    /// Writes the driver and the job file next to the output folder; returns the command to run.
    pub fn command(&self, job: &AssignJob, out_dir: &Path, gpus: &[u32]) -> std::io::Result<Command> {
        let job_path = self.write_job(job, out_dir)?;
        let script = self.driver.write(&out_dir.with_extension("driver"))?;
        let mut cmd = Command::new(self.python());
        cmd.arg(&script).arg("--job").arg(&job_path).env("PYTHONUNBUFFERED", "1");
        super::set_gpus(&mut cmd, gpus);
        Ok(cmd)
    }
}

impl Backend for PythonDriver {
    fn announces_traces(&self) -> bool {
        true
    }

    fn run(
        &self,
        job: &AssignJob,
        out_dir: &Path,
        gpus: &[u32],
        events: &mpsc::Sender<WorkloadEvent>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), WorkloadError> {
        let name = self.driver.name();
        let label = format!("{name} driver");
        let failed = |e: std::io::Error| WorkloadError {
            message: format!("preparing the {name} driver: {e}"),
            stderr_tail: String::new(),
        };
        // Waiting drivers hold one GPU each: a job on several GPUs starts its own.
        if let Some(warm) = self.warm.as_ref().filter(|_| gpus.len() <= 1) {
            let job_path = self.write_job(job, out_dir).map_err(failed)?;
            if let Some(child) = warm.take(self.driver, gpus.first().copied(), self.python(), &job_path) {
                let _ = events.blocking_send(WorkloadEvent::Log(format!("running on a warm {name} driver")));
                return process::supervise(child, &label, events, cancel);
            }
        }
        let cmd = self.command(job, out_dir, gpus).map_err(failed)?;
        process::run(cmd, &label, events, cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_torch_driver_accepts_the_attention_choices_of_sweep_files() {
        // The list lives in two languages; a sweep file must never pass validation and then fail in the driver.
        let quoted: Vec<String> = tracefleet_common::sweep::ATTENTION.iter().map(|a| format!("\"{a}\"")).collect();
        let line = format!("ATTENTION = ({})", quoted.join(", "));
        assert!(TORCH_DRIVER.contains(&line), "torch_driver.py should define {line}");
    }

    #[test]
    fn a_vllm_job_file_carries_the_engine_settings() {
        use tracefleet_proto::v1::{Point, VllmBackend, assign_job::Backend as JobBackend};
        let job = AssignJob {
            job_id: "s-j1".into(),
            sweep_id: "s".into(),
            points: vec![Point {
                point_id: "decode-bs8-in128".into(),
                mode: tracefleet_proto::v1::Mode::Decode.into(),
                batch_size: 8,
                input_len: 128,
                output_len: 16,
                ..Default::default()
            }],
            profile_steps: 3,
            warmup_steps: 5,
            backend: Some(JobBackend::Vllm(VllmBackend {
                model: "llama-3.2-1b".into(),
                cuda_graphs: true,
                max_model_len: 512,
                gpu_memory_utilization: 0.8,
                tensor_parallel: 1,
                ..Default::default()
            })),
            ..Default::default()
        };
        let warm = Arc::new(WarmPool::new(Path::new("/nonexistent"), "python3", &[]));
        let Ok(backend) = super::super::backend_for(
            &job,
            &super::super::RunPolicy { python: "python3".into(), ..Default::default() },
            &warm,
        ) else {
            panic!("a vLLM backend")
        };
        assert!(backend.announces_traces());
        let d = PythonDriver {
            driver: Driver::Vllm,
            python: String::new(),
            model: "llama-3.2-1b".into(),
            dtype: "auto".into(),
            attention: String::new(),
            cuda_graphs: true,
            max_model_len: 512,
            gpu_memory_utilization: 0.8,
            tensor_parallel: 1,
            warm: None,
        };
        let f = d.job_file(&job, Path::new("/w/out"));
        assert_eq!(f["sweep_id"], "s");
        assert_eq!(f["dtype"], "auto");
        assert_eq!(f["cuda_graphs"], true);
        assert_eq!(f["max_model_len"], 512);
        assert_eq!(f["gpu_memory_utilization"], 0.8);
        assert_eq!(f["points"][0]["output_len"], 16);
        // The driver and the shapes it reads are written side by side.
        let dir = tempfile::tempdir().expect("tmp");
        let script = Driver::Vllm.write(dir.path()).expect("write");
        assert!(script.ends_with("vllm_driver.py") && dir.path().join("shapes.json").exists());
        assert!(dir.path().join("driver_common.py").exists());
    }
}
