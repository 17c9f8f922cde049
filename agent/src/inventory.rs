//! The inventory an agent reports: host name, labels and (later, through NVML) its GPUs.

use std::collections::HashMap;

use tracefleet_proto::v1::HostInventory;

/// The inventory as JSON (`agent --print-inventory`, and each agent in a sweep's `manifest.json`):
/// `{"host", "agent_version", "labels": {k: v}, "gpus": [{"index", "name", "uuid", "memory_bytes",
/// "driver_version", "cuda_version"}]}`.
pub fn to_json(inv: &HostInventory) -> serde_json::Value {
    serde_json::json!({
        "host": inv.host,
        "agent_version": inv.agent_version,
        "labels": inv.labels,
        "gpus": inv.gpus.iter().map(|g| serde_json::json!({
            "index": g.index, "name": g.name, "uuid": g.uuid, "memory_bytes": g.memory_bytes,
            "driver_version": g.driver_version, "cuda_version": g.cuda_version,
        })).collect::<Vec<_>>(),
    })
}

/// An invalid `--labels` value.
#[derive(Debug, thiserror::Error)]
#[error("label {0:?} is not of the form key=value")]
pub struct LabelError(pub String);

/// Parses `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> Result<HashMap<String, String>, LabelError> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(LabelError(kv.to_string())),
        })
        .collect()
}

/// The host's name: `--name`, else the kernel's host name, else `unknown-host`.
pub fn host_name(name: Option<&str>) -> String {
    if let Some(n) = name {
        return n.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// The inventory of this host, without GPUs (the caller adds them from [`crate::gpu::inventory`]).
pub fn inventory(name: Option<&str>, labels: HashMap<String, String>) -> HostInventory {
    HostInventory {
        host: host_name(name),
        gpus: Vec::new(),
        labels,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let l = parse_labels("zone=a, rack=7").expect("valid");
        assert_eq!(l.get("zone").map(String::as_str), Some("a"));
        assert_eq!(l.get("rack").map(String::as_str), Some("7"));
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("").is_ok_and(|l| l.is_empty()));
    }
}
