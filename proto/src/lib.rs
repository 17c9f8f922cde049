//! Wire types of tracefleet, generated from the `.proto` files under `proto/proto`.
//!
//! The package is versioned (`tracefleet.v1`); every message is documented in its `.proto` file.

/// `tracefleet.v1`: inventory, control, upload and sweep messages.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tracefleet.v1.rs"));
}

/// A step's GPU telemetry on the wire and in the engine are the same numbers.
impl From<&tracefleet_common::telemetry::StepTelemetry> for v1::StepTelemetry {
    fn from(t: &tracefleet_common::telemetry::StepTelemetry) -> Self {
        Self {
            samples: t.samples,
            sm_clock_mhz_min: t.sm_clock_mhz_min,
            sm_clock_mhz_max: t.sm_clock_mhz_max,
            mem_clock_mhz_min: t.mem_clock_mhz_min,
            mem_clock_mhz_max: t.mem_clock_mhz_max,
            temperature_c_max: t.temperature_c_max,
            power_w_mean: t.power_w_mean,
            power_w_max: t.power_w_max,
            reasons: t.reasons,
            window_us: t.window_us,
        }
    }
}

impl From<v1::StepTelemetry> for tracefleet_common::telemetry::StepTelemetry {
    fn from(t: v1::StepTelemetry) -> Self {
        Self {
            samples: t.samples,
            sm_clock_mhz_min: t.sm_clock_mhz_min,
            sm_clock_mhz_max: t.sm_clock_mhz_max,
            mem_clock_mhz_min: t.mem_clock_mhz_min,
            mem_clock_mhz_max: t.mem_clock_mhz_max,
            temperature_c_max: t.temperature_c_max,
            power_w_mean: t.power_w_mean,
            power_w_max: t.power_w_max,
            reasons: t.reasons,
            window_us: t.window_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use tracefleet_common::telemetry::StepTelemetry;

    #[test]
    fn telemetry_survives_the_wire() {
        let t = StepTelemetry {
            samples: 3,
            sm_clock_mhz_min: 1770,
            sm_clock_mhz_max: 1980,
            mem_clock_mhz_min: 3201,
            mem_clock_mhz_max: 3201,
            temperature_c_max: 46,
            power_w_mean: 301.5,
            power_w_max: 325.4,
            reasons: 0x4,
            window_us: 19_600.0,
        };
        assert_eq!(StepTelemetry::from(super::v1::StepTelemetry::from(&t)), t);
    }
}
