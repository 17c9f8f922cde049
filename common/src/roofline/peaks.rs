//! Peak throughput and memory bandwidth of known GPUs, named as NVML (and ROCm's SMI) name them.
//!
//! Dense (no structured sparsity) peaks at boost clock, from the vendors' datasheets:
//! NVIDIA GH200 (GH200 datasheet: 989.5 BF16 dense, 67 FP32; 4.0 TB/s HBM3, 4.9 TB/s HBM3e),
//! NVIDIA H200 (nvidia.com/en-us/data-center/h200: SXM 1,979 TFLOPS BF16 *with sparsity* → 989.5 dense,
//! 67 TFLOPS FP32, 4.8 TB/s; NVL 1,671 → 835.5, 60, 4.8 TB/s), H100 (nvidia.com/en-us/data-center/h100:
//! SXM 989.5 / 67 / 3.35 TB/s, PCIe 756.5 / 51 / 2.0 TB/s, NVL 835.5 / 60 / 3.9 TB/s), A100 (A100
//! datasheet: 312 BF16, 19.5 FP32; 40 GB 1,555 GB/s, 80 GB SXM 2,039 GB/s, 80 GB PCIe 1,935 GB/s),
//! V100 (V100 datasheet: SXM2 125 FP16 tensor, 15.7 FP32, 900 GB/s; PCIe 112 / 14 / 900; V100S 130 / 16.4 /
//! 1134), L40S (L40S
//! datasheet: 362.05 BF16 dense, 91.6 FP32, 864 GB/s), L4 (121 BF16 dense, 30.3 FP32, 300 GB/s),
//! AMD MI300X (amd.com: 1,307.4 BF16 dense, 163.4 FP32, 5.3 TB/s), MI250X (383 BF16, 47.9 FP32 vector,
//! 3.2 TB/s), MI250 (362.1, 45.3, 3.2 TB/s). FP8 peaks are twice the BF16 ones on the GPUs that have FP8
//! tensor cores (Hopper, Ada, MI300) and absent elsewhere.
//!
//! Real kernels reach 70-90 % of these at best, and clocks drop under power or thermal limits (see the
//! steps' telemetry): a ratio to the peak says how far an op is from the roof, not that the rest is waste.

use super::flops::DType;

/// Peaks of one GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// The table entry's name (or `override` when given on the command line).
    pub name: &'static str,
    /// Dense BF16/FP16 tensor TFLOP/s.
    pub bf16_tflops: f64,
    /// FP32 (non-tensor) TFLOP/s; None when unknown (a GPU named only by `--peak-tflops`).
    pub fp32_tflops: Option<f64>,
    /// FP8 tensor TFLOP/s, None without FP8 tensor cores.
    pub fp8_tflops: Option<f64>,
    /// Memory bandwidth, GB/s (10⁹ bytes per second).
    pub gbps: f64,
}

impl Peak {
    /// The compute peak for a data type, TFLOP/s (None: the GPU has no such unit).
    pub fn tflops(&self, dtype: DType) -> Option<f64> {
        match dtype {
            DType::Bf16 => Some(self.bf16_tflops),
            DType::Fp32 => self.fp32_tflops,
            DType::Fp8 => self.fp8_tflops,
        }
    }
}

/// (substring of the GPU's name, checked in order, case-insensitive; peak).
const TABLE: &[(&str, Peak)] = &[
    // Grace Hopper before the H200/H100 entries its name contains: 96 GB HBM3 at 4.0 TB/s (NVML
    // "NVIDIA GH200 480GB"), 144 GB HBM3e at 4.9 TB/s (GH200 datasheet).
    ("gh200 144g", p("NVIDIA GH200 144GB HBM3e", 989.5, 67.0, true, 4900.0)),
    ("gh200", p("NVIDIA GH200 96GB HBM3", 989.5, 67.0, true, 4000.0)),
    ("h200 nvl", p("NVIDIA H200 NVL", 835.5, 60.0, true, 4800.0)),
    ("h200", p("NVIDIA H200 SXM", 989.5, 67.0, true, 4800.0)),
    ("h100 pcie", p("NVIDIA H100 PCIe", 756.5, 51.0, true, 2000.0)),
    ("h100 nvl", p("NVIDIA H100 NVL", 835.5, 60.0, true, 3900.0)),
    ("h100", p("NVIDIA H100 SXM", 989.5, 67.0, true, 3350.0)),
    ("a100-sxm4-80gb", p("NVIDIA A100 SXM 80GB", 312.0, 19.5, false, 2039.0)),
    ("a100 80gb pcie", p("NVIDIA A100 PCIe 80GB", 312.0, 19.5, false, 1935.0)),
    ("a100", p("NVIDIA A100 40GB", 312.0, 19.5, false, 1555.0)),
    ("v100s", p("NVIDIA V100S PCIe", 130.0, 16.4, false, 1134.0)),
    ("v100-sxm2", p("NVIDIA V100 SXM2", 125.0, 15.7, false, 900.0)),
    ("v100", p("NVIDIA V100 PCIe", 112.0, 14.0, false, 900.0)),
    ("l40s", p("NVIDIA L40S", 362.05, 91.6, true, 864.0)),
    ("nvidia l40", p("NVIDIA L40", 181.05, 90.5, true, 864.0)),
    ("nvidia l4", p("NVIDIA L4", 121.0, 30.3, true, 300.0)),
    ("mi300x", p("AMD Instinct MI300X", 1307.4, 163.4, true, 5300.0)),
    ("mi250x", p("AMD Instinct MI250X", 383.0, 47.9, false, 3276.8)),
    ("mi250", p("AMD Instinct MI250", 362.1, 45.3, false, 3276.8)),
];

const fn p(name: &'static str, bf16: f64, fp32: f64, fp8: bool, gbps: f64) -> Peak {
    Peak {
        name,
        bf16_tflops: bf16,
        fp32_tflops: Some(fp32),
        fp8_tflops: if fp8 { Some(2.0 * bf16) } else { None },
        gbps,
    }
}

/// The peaks of the GPU named `gpu` (NVML's or the trace's `deviceProperties` name), None when unknown.
pub fn lookup(gpu: &str) -> Option<Peak> {
    let g = gpu.to_ascii_lowercase();
    TABLE.iter().find(|(k, _)| g.contains(k)).map(|(_, p)| *p)
}

/// Peaks given by the user (`--peak-tflops`, `--peak-gbps`): each replaces the table's value; with an
/// unknown GPU both are needed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeakOverride {
    /// BF16/FP16 TFLOP/s (FP32 and FP8 scale with it as in the table's entry, or are left out).
    pub tflops: Option<f64>,
    /// GB/s.
    pub gbps: Option<f64>,
}

impl PeakOverride {
    /// The peaks to use for `gpu`: the table's, with the overrides applied.
    pub fn resolve(&self, gpu: &str) -> Option<Peak> {
        match (lookup(gpu), self.tflops, self.gbps) {
            (Some(mut p), t, b) => {
                if let Some(t) = t {
                    let scale = t / p.bf16_tflops;
                    p.bf16_tflops = t;
                    p.fp32_tflops = p.fp32_tflops.map(|f| f * scale);
                    p.fp8_tflops = p.fp8_tflops.map(|f| f * scale);
                    p.name = "override";
                }
                if let Some(b) = b {
                    p.gbps = b;
                    p.name = "override";
                }
                Some(p)
            }
            // FP32 and FP8 peaks of an unknown GPU are unknown: its FP32 ops get no comparison rather than
            // one with the tensor-core peak.
            (None, Some(t), Some(b)) => {
                Some(Peak { name: "override", bf16_tflops: t, fp32_tflops: None, fp8_tflops: None, gbps: b })
            }
            (None, ..) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_names_find_their_entries() {
        assert_eq!(lookup("NVIDIA H200").map(|p| p.gbps), Some(4800.0));
        assert_eq!(lookup("NVIDIA H200").map(|p| p.bf16_tflops), Some(989.5));
        assert_eq!(lookup("NVIDIA H100 80GB HBM3").map(|p| p.name), Some("NVIDIA H100 SXM"));
        assert_eq!(lookup("NVIDIA H100 PCIe").map(|p| p.gbps), Some(2000.0));
        assert_eq!(lookup("NVIDIA A100-SXM4-80GB").map(|p| p.gbps), Some(2039.0));
        assert_eq!(lookup("NVIDIA A100-PG509-200").map(|p| p.gbps), Some(1555.0));
        assert_eq!(lookup("Tesla V100-SXM2-32GB").map(|p| p.bf16_tflops), Some(125.0));
        assert_eq!(lookup("AMD Instinct MI250X / MI250").map(|p| p.name), Some("AMD Instinct MI250X"));
        assert_eq!(lookup("AMD Radeon Graphics"), None);
        assert_eq!(lookup("NVIDIA L40S").map(|p| p.name), Some("NVIDIA L40S"));
        assert_eq!(lookup("NVIDIA GH200 480GB").map(|p| p.gbps), Some(4000.0));
        assert_eq!(lookup("NVIDIA GH200 144G HBM3e").map(|p| p.gbps), Some(4900.0));
        assert_eq!(lookup("Tesla V100S-PCIE-32GB").map(|p| p.gbps), Some(1134.0));
    }

    #[test]
    fn overrides_replace_the_table_and_name_unknown_gpus() {
        let o = PeakOverride { tflops: None, gbps: Some(4000.0) };
        let p = o.resolve("NVIDIA H200").expect("known");
        assert_eq!((p.gbps, p.bf16_tflops, p.name), (4000.0, 989.5, "override"));
        assert_eq!(PeakOverride { tflops: Some(100.0), gbps: None }.resolve("Some GPU"), None);
        let p = PeakOverride { tflops: Some(100.0), gbps: Some(500.0) }.resolve("Some GPU").expect("both given");
        assert_eq!((p.bf16_tflops, p.gbps), (100.0, 500.0));
        assert_eq!(p.tflops(DType::Fp32), None);
    }
}
