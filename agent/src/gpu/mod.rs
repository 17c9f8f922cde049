//! The host's GPUs through NVML: inventory, telemetry during jobs, optional clock locking. No GPU and no
//! NVML (a CPU host, a container without the driver) is a normal case: the inventory is empty, jobs run
//! without `CUDA_VISIBLE_DEVICES` and without telemetry.

mod clocks;
mod telemetry;

pub use clocks::{ClockLock, reset_all as reset_locked_clocks};
use nvml_wrapper::Nvml;
pub use telemetry::{Sampler, now_ns};
use tracefleet_proto::v1::GpuInfo;

/// The GPUs NVML reports, filtered to `only` (indices) when given. Empty without NVML.
pub fn inventory(only: Option<&[u32]>) -> (Vec<GpuInfo>, Option<String>) {
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => return (Vec::new(), Some(format!("NVML unavailable ({e}); no GPUs reported"))),
    };
    let driver = nvml.sys_driver_version().unwrap_or_default();
    let cuda = nvml.sys_cuda_driver_version().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10)).unwrap_or_default();
    let count = nvml.device_count().unwrap_or(0);
    let mut gpus = Vec::new();
    for i in 0..count {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let Ok(d) = nvml.device_by_index(i) else { continue };
        gpus.push(GpuInfo {
            index: i,
            name: d.name().unwrap_or_default(),
            uuid: d.uuid().unwrap_or_default(),
            memory_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
            driver_version: driver.clone(),
            cuda_version: cuda.clone(),
        });
    }
    (gpus, None)
}

/// Parses `--gpus 0,1`.
pub fn parse_indices(s: &str) -> Result<Vec<u32>, String> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse::<u32>().map_err(|_| format!("{x:?} is not a GPU index")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gpu_is_not_an_error() {
        // On a machine without NVML the inventory is empty, with a note; with NVML it lists GPUs.
        let (gpus, note) = inventory(None);
        assert!(gpus.is_empty() == note.is_some() || !gpus.is_empty());
        assert_eq!(parse_indices("0, 2"), Ok(vec![0, 2]));
        assert!(parse_indices("x").is_err());
    }
}
