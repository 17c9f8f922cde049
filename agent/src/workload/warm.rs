//! Warm drivers: per GPU, one Python process per driver (torch, vLLM) that has already done its imports
//! (the slow part of starting a driver: 5-15 s for torch and transformers, 11-14 s for vLLM on a GPU
//! host) and waits for a job file's path on stdin.
//!
//! The agent is a long-running daemon, so paying the imports before a sweep arrives takes seconds off
//! every job. A waiting driver holds host memory only: it has not built a model or an engine, so it holds
//! no GPU memory. It is started with the job's `CUDA_VISIBLE_DEVICES` (which CUDA reads once, at
//! initialisation), serves exactly one job and exits; the agent starts the next one after the job. A
//! driver whose interpreter differs from the job's, or that died (no torch, or no vLLM, in that Python),
//! is skipped and the job starts a fresh process as without warm drivers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::python::Driver;

/// A waiting driver that died before its job this many times in a row (e.g. no vLLM in that Python) is
/// not started again until the agent restarts.
const MAX_DEATHS: u32 = 2;

/// Waiting drivers by driver and GPU slot.
#[derive(Debug)]
pub struct WarmPool {
    dir: PathBuf,
    python: String,
    /// The drivers kept waiting (empty: the pool is off).
    drivers: Vec<Driver>,
    slots: Mutex<HashMap<(Driver, Option<u32>), Child>>,
    /// Waiting drivers found dead in a row, per driver (index: position in [`Driver::ALL`]).
    deaths: [AtomicU32; 2],
}

impl WarmPool {
    /// A pool writing its drivers under `dir`, for the agent's default interpreter `python`, keeping
    /// `drivers` waiting (none: every call is a no-op and jobs start fresh processes).
    pub fn new(dir: &Path, python: &str, drivers: &[Driver]) -> Self {
        Self {
            dir: dir.to_path_buf(),
            python: python.to_string(),
            drivers: drivers.to_vec(),
            slots: Mutex::default(),
            deaths: Default::default(),
        }
    }

    fn deaths(&self, d: Driver) -> &AtomicU32 {
        &self.deaths[Driver::ALL.iter().position(|x| *x == d).unwrap_or(0)]
    }

    /// Starts the waiting drivers for GPU `gpu` that are not there. Errors are logged: without a warm
    /// driver jobs start as usual.
    pub fn fill(&self, gpu: Option<u32>) {
        for &d in &self.drivers {
            if self.deaths(d).load(Ordering::Relaxed) >= MAX_DEATHS {
                continue;
            }
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut c) = slots.remove(&(d, gpu)) {
                if matches!(c.try_wait(), Ok(None)) {
                    slots.insert((d, gpu), c);
                    continue;
                }
                // It died waiting (no vLLM in this Python, say): counted and logged as in `take`.
                self.died(d, c);
                if self.deaths(d).load(Ordering::Relaxed) >= MAX_DEATHS {
                    continue;
                }
            }
            match self.spawn(d, gpu) {
                Ok(child) => {
                    slots.insert((d, gpu), child);
                }
                Err(e) => tracing::warn!("no warm {} driver for GPU {gpu:?}: {e}", d.name()),
            }
        }
    }

    fn spawn(&self, d: Driver, gpu: Option<u32>) -> std::io::Result<Child> {
        // Written each time (an agent upgrade must not run an older driver left on disk), atomically (an
        // interpreter for another GPU may be starting from it).
        let script = d.write(&self.dir)?;
        let mut cmd = Command::new(&self.python);
        cmd.arg(&script)
            .arg("--serve")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        super::set_gpus(&mut cmd, gpu.as_slice());
        cmd.spawn()
    }

    /// Hands the waiting `driver` of `gpu` the job file `job_path`, if there is a live one for `python`.
    /// The returned process runs that job; stdout and stderr are piped.
    pub fn take(&self, driver: Driver, gpu: Option<u32>, python: &str, job_path: &Path) -> Option<Child> {
        if !self.drivers.contains(&driver) || python != self.python {
            return None;
        }
        let mut child = self.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(&(driver, gpu))?;
        if !matches!(child.try_wait(), Ok(None)) {
            // It died waiting (e.g. this Python has no vLLM); the job starts a fresh driver, which reports
            // the same problem in its own failure.
            self.died(driver, child);
            return None;
        }
        self.deaths(driver).store(0, Ordering::Relaxed);
        let line = format!("{}\n", job_path.display());
        let sent = child.stdin.take().map(|mut s| s.write_all(line.as_bytes()).and_then(|()| s.flush()));
        match sent {
            Some(Ok(())) => Some(child),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    /// Logs why a waiting driver ended (the last lines of its stderr; it has exited, so reading ends).
    fn died(&self, driver: Driver, mut child: Child) {
        let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let tail: Vec<&str> = err.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        let n = self.deaths(driver).fetch_add(1, Ordering::Relaxed) + 1;
        let again = if n >= MAX_DEATHS { "; not starting it again" } else { "" };
        tracing::warn!(
            "a waiting {} driver ended before its job ({status}){again}: {}",
            driver.name(),
            tail.join(" | ")
        );
    }

    /// Ends every waiting driver (the agent is stopping; a driver whose agent is gone would also end when
    /// its stdin closes, but only after its imports).
    pub fn stop_all(&self) {
        for (_, mut c) in self.slots.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_pool_or_another_python_gets_nothing() {
        let d = tempfile::tempdir().expect("tmp");
        let off = WarmPool::new(d.path(), "python3", &[]);
        off.fill(Some(0));
        assert!(off.take(Driver::Torch, Some(0), "python3", Path::new("/j.json")).is_none());
        // A "python" that exits at once: the pool notices it died and gives nothing.
        let dead = WarmPool::new(d.path(), "true", &[Driver::Torch]);
        dead.fill(None);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(dead.take(Driver::Torch, None, "true", Path::new("/j.json")).is_none());
        assert!(dead.take(Driver::Torch, None, "other-python", Path::new("/j.json")).is_none());
        // After dying twice before any job it is not started again.
        dead.fill(None);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(dead.take(Driver::Torch, None, "true", Path::new("/j.json")).is_none());
        dead.fill(None);
        assert!(dead.slots.lock().expect("lock").is_empty(), "no third start");
    }

    #[test]
    fn each_driver_waits_and_dies_on_its_own() {
        // An interpreter that runs the torch driver (it waits) but has no vLLM (that driver exits at once):
        // the dead vLLM driver is counted and not started again, the torch one keeps waiting, and a job
        // for one driver never gets the other.
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let py = d.path().join("python-without-vllm");
        std::fs::write(&py, "#!/bin/sh\ncase \"$1\" in *vllm_driver.py) exit 1;; esac\nexec sleep 30\n")
            .expect("write");
        std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let py = py.display().to_string();
        let pool = WarmPool::new(&d.path().join("warm"), &py, &[Driver::Torch, Driver::Vllm]);
        pool.fill(Some(1));
        assert_eq!(pool.slots.lock().expect("lock").len(), 2, "one waiting driver of each kind");
        assert!(d.path().join("warm/vllm_driver.py").exists() && d.path().join("warm/shapes.json").exists());
        for _ in 0..MAX_DEATHS {
            std::thread::sleep(std::time::Duration::from_millis(300));
            pool.fill(Some(1));
        }
        assert_eq!(pool.deaths(Driver::Vllm).load(Ordering::Relaxed), MAX_DEATHS);
        assert_eq!(pool.deaths(Driver::Torch).load(Ordering::Relaxed), 0);
        assert!(pool.take(Driver::Vllm, Some(1), &py, Path::new("/j.json")).is_none(), "no vLLM driver waits");
        let torch = pool.take(Driver::Torch, Some(1), &py, Path::new("/j.json"));
        assert!(torch.is_some(), "the torch driver still waits");
        if let Some(mut c) = torch {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
