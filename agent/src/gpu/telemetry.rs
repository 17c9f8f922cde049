//! Samples one GPU through NVML while a job runs on it, so every trace can carry the clocks, temperature,
//! power and clock-limit reasons of the step it recorded.
//!
//! A thread reads the GPU every `interval` into a bounded ring of readings; the job asks for the summary
//! of a step's window when the workload announces the trace. Without NVML (a CPU host, a container
//! without the driver) [`Sampler::start`] says why and the job runs without telemetry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use tracefleet_common::telemetry::{Sample, StepTelemetry, summarize};

/// Readings kept: at the default 10 ms interval the last 10 minutes (2.4 MB), enough for the windows of
/// traces that come without one (a command's point, from its start to the file's discovery).
const KEEP: usize = 60_000;

/// Unix time now, ns.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A running sampler; stops when dropped.
#[derive(Debug)]
pub struct Sampler {
    readings: Arc<Mutex<VecDeque<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling GPU `index` (NVML numbering) every `interval`; `Err` says why it cannot (no NVML,
    /// no such GPU, nothing readable).
    pub fn start(index: u32, interval: Duration) -> Result<Sampler, String> {
        let nvml = Nvml::init().map_err(|e| format!("NVML unavailable ({e})"))?;
        // Check once here so the caller learns at once when nothing can be read.
        {
            let d = nvml.device_by_index(index).map_err(|e| format!("GPU {index}: {e}"))?;
            read(&d).ok_or_else(|| format!("GPU {index}: NVML reports no clocks"))?;
        }
        let readings: Arc<Mutex<VecDeque<Sample>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (readings.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("gpu{index}-telemetry"))
            .spawn(move || {
                let Ok(d) = nvml.device_by_index(index) else { return };
                while !s.load(Ordering::Relaxed) {
                    if let Some(x) = read(&d) {
                        let mut q = r.lock().unwrap_or_else(|e| e.into_inner());
                        if q.len() == KEEP {
                            q.pop_front();
                        }
                        q.push_back(x);
                    }
                    std::thread::sleep(interval);
                }
            })
            .map_err(|e| format!("starting the telemetry thread: {e}"))?;
        Ok(Sampler { readings, stop, thread: Some(thread) })
    }

    /// The GPU's state over `[start_ns, end_ns]` (Unix ns); `None` when no reading covers it.
    pub fn window(&self, start_ns: u64, end_ns: u64) -> Option<StepTelemetry> {
        // Copy out only the window's readings and the one before it (the ring holds up to 60,000).
        let used: Vec<Sample> = {
            let q = self.readings.lock().unwrap_or_else(|e| e.into_inner());
            let from = q.partition_point(|s| s.t_ns < start_ns).saturating_sub(1);
            let to = q.partition_point(|s| s.t_ns <= end_ns).max(from);
            q.range(from..to).copied().collect()
        };
        summarize(&used, start_ns, end_ns)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One reading; `None` when the clocks cannot be read (the rest default to 0 when unsupported).
fn read(d: &nvml_wrapper::Device<'_>) -> Option<Sample> {
    let sm_mhz = d.clock_info(Clock::SM).ok()?;
    Some(Sample {
        t_ns: now_ns(),
        sm_mhz,
        mem_mhz: d.clock_info(Clock::Memory).unwrap_or(0),
        temp_c: d.temperature(TemperatureSensor::Gpu).unwrap_or(0),
        power_mw: d.power_usage().unwrap_or(0),
        reasons: d.current_throttle_reasons().map_or(0, |r| r.bits()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_the_sampler_says_why() {
        // On a host without NVML (CI) the sampler does not start and says why; on a GPU host it starts
        // and describes a window that began before its first reading by that reading.
        match Sampler::start(0, Duration::from_millis(5)) {
            Err(why) => assert!(why.contains("NVML") || why.contains("GPU 0"), "{why}"),
            Ok(s) => {
                let t0 = now_ns();
                std::thread::sleep(Duration::from_millis(30));
                let t = s.window(t0, now_ns()).expect("readings");
                assert!(t.samples >= 2 && t.sm_clock_mhz_max > 0, "{t:?}");
            }
        }
        assert!(Sampler::start(999, Duration::from_millis(5)).is_err(), "no GPU 999");
    }
}
