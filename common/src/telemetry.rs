//! GPU state during a profiled step: clocks, temperature, power and the driver's clock-limit ("throttle")
//! reasons, sampled by the agent through NVML and summarised per trace.
//!
//! A decode step lasts a few milliseconds, shorter than any sensible sampling interval, so a step's
//! summary uses the samples taken inside its window *plus the last one before it* (the state the step
//! started in). A step whose clocks were held down by power or temperature is flagged `throttled`: its
//! times are not comparable with the others.

use serde::{Deserialize, Serialize};

/// NVML clock-limit reason bits (`nvmlClocksEventReason*`, formerly `nvmlClocksThrottleReason*`): a stable
/// part of NVML's ABI, listed here so the coordinator can name them without linking NVML.
pub const REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// Reasons that mean the GPU ran slower than it was asked to (power cap, thermal or hardware slowdown).
/// Idle, application/locked clocks, sync boost and display settings are not slowdowns of the step.
pub const THROTTLE_MASK: u64 = 0x4 | 0x8 | 0x20 | 0x40 | 0x80;

/// One NVML reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Unix time of the reading, ns.
    pub t_ns: u64,
    /// SM clock, MHz.
    pub sm_mhz: u32,
    /// Memory clock, MHz.
    pub mem_mhz: u32,
    /// GPU temperature, °C.
    pub temp_c: u32,
    /// Board power, mW.
    pub power_mw: u32,
    /// Clock-limit reason bits at the reading.
    pub reasons: u64,
}

/// The GPU's state over one profiled step (one trace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StepTelemetry {
    /// Readings used (inside the window, plus the last one before it).
    pub samples: u32,
    /// SM clock range, MHz.
    pub sm_clock_mhz_min: u32,
    /// SM clock range, MHz.
    pub sm_clock_mhz_max: u32,
    /// Memory clock range, MHz.
    pub mem_clock_mhz_min: u32,
    /// Memory clock range, MHz.
    pub mem_clock_mhz_max: u32,
    /// Highest temperature, °C.
    pub temperature_c_max: u32,
    /// Mean and highest board power, W.
    pub power_w_mean: f64,
    /// Highest board power, W.
    pub power_w_max: f64,
    /// Union of the clock-limit reason bits seen.
    pub reasons: u64,
    /// Length of the step window, µs.
    pub window_us: f64,
}

impl StepTelemetry {
    /// Whether a slowdown reason (power cap, thermal, hardware) was active during the step.
    pub fn throttled(&self) -> bool {
        self.reasons & THROTTLE_MASK != 0
    }

    /// The reasons seen, by name, joined with `|` (`""` for none).
    pub fn reason_names(&self) -> String {
        reason_names(self.reasons)
    }
}

/// Names of the bits of `mask`, joined with `|`; unknown bits as hex.
pub fn reason_names(mask: u64) -> String {
    let mut names: Vec<String> =
        REASONS.iter().filter(|(bit, _)| mask & bit != 0).map(|(_, n)| (*n).to_string()).collect();
    let known = REASONS.iter().fold(0, |a, (b, _)| a | b);
    if mask & !known != 0 {
        names.push(format!("0x{:x}", mask & !known));
    }
    names.join("|")
}

/// Summarises the readings of a step that ran in `[start_ns, end_ns]` (Unix ns). `samples` are sorted by
/// time. `None` when no reading is inside the window or before it.
pub fn summarize(samples: &[Sample], start_ns: u64, end_ns: u64) -> Option<StepTelemetry> {
    let first_in = samples.partition_point(|s| s.t_ns < start_ns);
    let past_end = samples.partition_point(|s| s.t_ns <= end_ns);
    let from = first_in.saturating_sub(1);
    let used = samples.get(from..past_end.max(from))?;
    let first = used.first()?;
    let mut t = StepTelemetry {
        samples: used.len() as u32,
        sm_clock_mhz_min: first.sm_mhz,
        mem_clock_mhz_min: first.mem_mhz,
        window_us: end_ns.saturating_sub(start_ns) as f64 / 1e3,
        ..StepTelemetry::default()
    };
    let mut power_sum = 0.0;
    for s in used {
        t.sm_clock_mhz_min = t.sm_clock_mhz_min.min(s.sm_mhz);
        t.sm_clock_mhz_max = t.sm_clock_mhz_max.max(s.sm_mhz);
        t.mem_clock_mhz_min = t.mem_clock_mhz_min.min(s.mem_mhz);
        t.mem_clock_mhz_max = t.mem_clock_mhz_max.max(s.mem_mhz);
        t.temperature_c_max = t.temperature_c_max.max(s.temp_c);
        let w = f64::from(s.power_mw) / 1e3;
        power_sum += w;
        t.power_w_max = t.power_w_max.max(w);
        t.reasons |= s.reasons;
    }
    t.power_w_mean = power_sum / used.len() as f64;
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ns: u64, sm_mhz: u32, reasons: u64) -> Sample {
        Sample { t_ns, sm_mhz, mem_mhz: 3201, temp_c: 40 + (t_ns / 100) as u32, power_mw: 100_000, reasons }
    }

    #[test]
    fn a_short_step_uses_the_reading_before_it() {
        let xs = [s(100, 1980, 0), s(200, 1980, 0x1), s(300, 1500, 0x4)];
        // Window (210, 250) holds no reading: the one at 200 describes it.
        let t = summarize(&xs, 210, 250).expect("one reading");
        assert_eq!((t.samples, t.sm_clock_mhz_min, t.reasons), (1, 1980, 0x1));
        assert!(!t.throttled());
        // Window [150, 300] holds 200 and 300, plus 100 before it.
        let t = summarize(&xs, 150, 300).expect("readings");
        assert_eq!((t.samples, t.sm_clock_mhz_min, t.sm_clock_mhz_max), (3, 1500, 1980));
        assert!(t.throttled());
        assert_eq!(t.reason_names(), "gpu_idle|sw_power_cap");
        assert_eq!(t.temperature_c_max, 43);
        assert!((t.power_w_mean - 100.0).abs() < 1e-9);
        // Nothing at or before the window.
        assert_eq!(summarize(&xs, 10, 50), None);
        assert_eq!(summarize(&[], 10, 50), None);
    }

    #[test]
    fn names_and_unknown_bits() {
        assert_eq!(reason_names(0), "");
        assert_eq!(reason_names(0x40 | 0x1000), "hw_thermal_slowdown|0x1000");
        assert_eq!(THROTTLE_MASK & 0x1, 0, "idle is not throttling");
        assert_eq!(THROTTLE_MASK & 0x2, 0, "locked clocks are not throttling");
    }
}
