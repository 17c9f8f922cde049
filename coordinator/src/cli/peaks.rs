//! `--peak-tflops` / `--peak-gbps`: the GPU peaks the roofline compares with, for GPUs the built-in
//! table does not know or that run below their datasheet's numbers.

use tracefleet_common::roofline::PeakOverride;

/// Peak overrides (flattened into `coord ingest` and `coord report`).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct PeakArgs {
    /// The GPU's dense BF16/FP16 peak in TFLOP/s for the roofline (ingest: the columns of ops.csv and
    /// roofline.csv; report: the page) (default: the table of known GPUs by name; FP32 and FP8 peaks scale
    /// with it; a GPU not in the table needs --peak-gbps too).
    #[arg(long, value_name = "TFLOPS", value_parser = positive)]
    pub peak_tflops: Option<f64>,
    /// The GPU's memory bandwidth in GB/s (10^9 bytes/s) for the roofline (default: the table).
    #[arg(long, value_name = "GBPS", value_parser = positive)]
    pub peak_gbps: Option<f64>,
}

impl PeakArgs {
    /// The overrides.
    pub fn overrides(&self) -> PeakOverride {
        PeakOverride { tflops: self.peak_tflops, gbps: self.peak_gbps }
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}
