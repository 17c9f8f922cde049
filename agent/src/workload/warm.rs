//! Warm torch drivers: one Python process per GPU that has already imported torch and transformers (the
//! slow part of starting a driver: 5-15 s on a GPU host) and waits for a job file's path on stdin.
//!
//! The agent is a long-running daemon, so paying the imports before a sweep arrives takes seconds off
//! every job. A waiting driver holds host memory only: it has not touched CUDA, so it holds no GPU memory
//! and no GPU context. It is started with the job's `CUDA_VISIBLE_DEVICES` (which CUDA reads once, at
//! initialisation), serves exactly one job and exits; the agent starts the next one after the job. A
//! driver whose interpreter differs from the job's, or that died (no torch in that Python), is skipped
//! and the job starts a fresh process as without warm drivers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::python::TORCH_DRIVER;

/// A waiting driver that died before its job this many times in a row (e.g. no torch in that Python)
/// is not started again until the agent restarts.
const MAX_DEATHS: u32 = 2;

/// Waiting drivers by GPU slot.
#[derive(Debug)]
pub struct WarmPool {
    dir: PathBuf,
    python: String,
    enabled: bool,
    slots: Mutex<HashMap<Option<u32>, Child>>,
    /// Waiting drivers found dead in a row.
    deaths: AtomicU32,
}

impl WarmPool {
    /// A pool writing its driver under `dir`, for the agent's default interpreter `python`; `enabled`
    /// false makes every call a no-op (jobs start fresh processes).
    pub fn new(dir: &Path, python: &str, enabled: bool) -> Self {
        Self {
            dir: dir.to_path_buf(),
            python: python.to_string(),
            enabled,
            slots: Mutex::default(),
            deaths: AtomicU32::new(0),
        }
    }

    /// Starts a waiting driver for GPU `gpu` unless one is there. Errors are logged: without a warm driver
    /// jobs start as usual.
    pub fn fill(&self, gpu: Option<u32>) {
        if !self.enabled || self.deaths.load(Ordering::Relaxed) >= MAX_DEATHS {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.get_mut(&gpu).is_some_and(|c| matches!(c.try_wait(), Ok(None))) {
            return;
        }
        match self.spawn(gpu) {
            Ok(child) => {
                slots.insert(gpu, child);
            }
            Err(e) => eprintln!("agent: no warm torch driver for GPU {gpu:?}: {e}"),
        }
    }

    fn spawn(&self, gpu: Option<u32>) -> std::io::Result<Child> {
        std::fs::create_dir_all(&self.dir)?;
        let script = self.dir.join("torch_driver.py");
        // Written each time (an agent upgrade must not run an older driver left on disk), atomically (an
        // interpreter for another GPU may be starting from it).
        super::write_driver(&script, TORCH_DRIVER)?;
        let mut cmd = Command::new(&self.python);
        cmd.arg(&script)
            .arg("--serve")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        super::set_gpu(&mut cmd, gpu);
        cmd.spawn()
    }

    /// Hands the waiting driver of `gpu` the job file `job_path`, if there is a live one for `python`.
    /// The returned process runs that job; stdout and stderr are piped.
    pub fn take(&self, gpu: Option<u32>, python: &str, job_path: &Path) -> Option<Child> {
        if !self.enabled || python != self.python {
            return None;
        }
        let mut child = self.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(&gpu)?;
        if !matches!(child.try_wait(), Ok(None)) {
            // It died waiting (e.g. this Python has no torch); the job starts a fresh driver, which
            // reports the same problem in its own failure.
            self.died(child);
            return None;
        }
        self.deaths.store(0, Ordering::Relaxed);
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
}

impl WarmPool {
    /// Logs why a waiting driver ended (the last lines of its stderr; it has exited, so reading ends).
    fn died(&self, mut child: Child) {
        let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let tail: Vec<&str> = err.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        let n = self.deaths.fetch_add(1, Ordering::Relaxed) + 1;
        let again = if n >= MAX_DEATHS { "; not starting it again" } else { "" };
        eprintln!("agent: a waiting torch driver ended before its job ({status}){again}: {}", tail.join(" | "));
    }
}

impl WarmPool {
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
        let off = WarmPool::new(d.path(), "python3", false);
        off.fill(Some(0));
        assert!(off.take(Some(0), "python3", Path::new("/j.json")).is_none());
        // A "python" that exits at once: the pool notices it died and gives nothing.
        let dead = WarmPool::new(d.path(), "true", true);
        dead.fill(None);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(dead.take(None, "true", Path::new("/j.json")).is_none());
        assert!(dead.take(None, "other-python", Path::new("/j.json")).is_none());
        // After dying twice before any job it is not started again.
        dead.fill(None);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(dead.take(None, "true", Path::new("/j.json")).is_none());
        dead.fill(None);
        assert!(dead.slots.lock().expect("lock").is_empty(), "no third start");
    }
}
