//! Optional SM clock locking around a job (`[gpu] lock_clocks_mhz`), like the original experiment's
//! `nvidia-smi -lgc`: fewer clock swings make steps comparable, at the price of changing a setting of a
//! GPU that others may share. So it is off by default, the agent refuses it unless its operator started it
//! with `--allow-clock-locking`, NVML's "no permission" becomes a message that says what to do, and the
//! clocks are reset when the job ends, when the lock is dropped, and when the agent is stopped by a signal.

use std::sync::Mutex;

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::GpuLockedClocksSetting;
use nvml_wrapper::error::NvmlError;

/// GPUs whose clocks this process locked and has not reset yet (for the signal handler).
static LOCKED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A GPU's SM clock held at one frequency; reset on drop.
#[derive(Debug)]
pub struct ClockLock {
    nvml: Nvml,
    index: u32,
    mhz: u32,
}

impl ClockLock {
    /// Locks GPU `index` (NVML numbering) at `mhz`. `allowed` is the agent's `--allow-clock-locking`.
    pub fn acquire(index: Option<u32>, mhz: u32, allowed: bool, host: &str) -> Result<ClockLock, String> {
        if !allowed {
            return Err(format!(
                "this sweep asks to lock GPU clocks at {mhz} MHz ([gpu] lock_clocks_mhz), but agent {host:?} was \
                 not started with --allow-clock-locking: locking changes the GPU for everyone using it, so the \
                 host's operator must allow it (or remove [gpu] lock_clocks_mhz from the sweep)"
            ));
        }
        let Some(index) = index else {
            return Err(format!("cannot lock GPU clocks at {mhz} MHz: agent {host:?} reports no GPU"));
        };
        let nvml = Nvml::init().map_err(|e| format!("cannot lock GPU clocks: NVML unavailable ({e})"))?;
        let set = nvml
            .device_by_index(index)
            .map_err(|e| format!("cannot lock clocks of GPU {index}: {e}"))?
            .set_gpu_locked_clocks(GpuLockedClocksSetting::Numeric { min_clock_mhz: mhz, max_clock_mhz: mhz });
        match set {
            Ok(()) => {}
            Err(NvmlError::NoPermission) => {
                return Err(format!(
                    "locking the clocks of GPU {index} at {mhz} MHz needs root (NVML: no permission); run the agent \
                     as root or with CAP_SYS_ADMIN, or remove [gpu] lock_clocks_mhz from the sweep"
                ));
            }
            Err(NvmlError::InvalidArg) => {
                return Err(format!(
                    "GPU {index} cannot lock its clocks at {mhz} MHz (NVML: invalid argument); \
                     `nvidia-smi -q -d SUPPORTED_CLOCKS` lists the clocks it supports"
                ));
            }
            Err(e) => return Err(format!("locking the clocks of GPU {index} at {mhz} MHz: {e}")),
        }
        LOCKED.lock().unwrap_or_else(|e| e.into_inner()).push(index);
        Ok(ClockLock { nvml, index, mhz })
    }

    /// The locked frequency, MHz.
    pub fn mhz(&self) -> u32 {
        self.mhz
    }
}

impl Drop for ClockLock {
    fn drop(&mut self) {
        match self.nvml.device_by_index(self.index).and_then(|mut d| d.reset_gpu_locked_clocks()) {
            Ok(()) => tracing::info!("GPU {} clocks reset", self.index),
            Err(e) => tracing::error!("resetting the clocks of GPU {} failed: {e}", self.index),
        }
        LOCKED.lock().unwrap_or_else(|e| e.into_inner()).retain(|&g| g != self.index);
    }
}

/// Resets every GPU this process locked (the agent's signal handler calls it before exiting).
pub fn reset_all() {
    let locked = std::mem::take(&mut *LOCKED.lock().unwrap_or_else(|e| e.into_inner()));
    if locked.is_empty() {
        return;
    }
    let Ok(nvml) = Nvml::init() else { return };
    for i in locked {
        let r = nvml.device_by_index(i).and_then(|mut d| d.reset_gpu_locked_clocks());
        match r {
            Ok(()) => tracing::info!("GPU {i} clocks reset on exit"),
            Err(e) => tracing::error!("resetting the clocks of GPU {i} on exit failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locking_is_refused_unless_allowed_and_possible() {
        let e = ClockLock::acquire(Some(0), 1980, false, "h1").expect_err("not allowed");
        assert!(e.contains("not started with --allow-clock-locking"), "{e}");
        let e = ClockLock::acquire(None, 1980, true, "h1").expect_err("no GPU");
        assert!(e.contains("reports no GPU"), "{e}");
        // GPU 999 exists nowhere: with NVML it is an unknown device, without NVML the library is missing.
        // (Never lock a real GPU in a test: test machines are shared.)
        let e = ClockLock::acquire(Some(999), 1980, true, "h1").expect_err("no such GPU");
        assert!(e.contains("NVML unavailable") || e.contains("GPU 999"), "{e}");
        reset_all();
    }
}
