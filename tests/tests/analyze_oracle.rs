//! `coord analyze --json` reproduces torch's own `key_averages()` on every H200 fixture with an oracle:
//! count exactly, device times within 0.1% (or 0.01 µs), CPU times within 1% (or 0.01 µs).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tracefleet_tests::{bin, fixture, read_json};

const KEYS: [&str; 6] = [
    "key",
    "count",
    "cpu_time_total_us",
    "self_cpu_time_total_us",
    "device_time_total_us",
    "self_device_time_total_us",
];

fn num(r: &Value, k: &str) -> f64 {
    r.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= (rel * want.abs()).max(0.01)
}

/// Compares one trace with its oracle; returns the mismatches.
fn compare(trace: &Path, oracle: &Path) -> Vec<String> {
    let out = Command::new(bin("coord")).arg("analyze").arg("--json").arg(trace).output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        other => {
            return vec![format!("{}: coord analyze failed: {other:?}", trace.display())];
        }
    };
    let got: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => return vec![format!("{}: output is not JSON: {e}", trace.display())],
    };
    let want = read_json(oracle).unwrap_or(Value::Null);
    let (Some(got), Some(want)) = (got.as_array(), want.as_array()) else {
        return vec![format!("{}: not arrays", trace.display())];
    };
    // Every row has exactly the documented keys.
    let mut errors = Vec::new();
    for r in got {
        let keys: Vec<&str> = r.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        let mut sorted = KEYS.to_vec();
        sorted.sort_unstable();
        let mut k = keys.clone();
        k.sort_unstable();
        if k != sorted {
            errors.push(format!("row with keys {keys:?}"));
        }
    }
    // A key can have two rows (a record_function's host and GPU sides): pair them by CPU time.
    let group = |rows: &[Value]| {
        let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in rows {
            m.entry(r["key"].as_str().unwrap_or_default().to_string()).or_default().push(r.clone());
        }
        for v in m.values_mut() {
            v.sort_by(|a, b| num(a, "cpu_time_total_us").total_cmp(&num(b, "cpu_time_total_us")));
        }
        m
    };
    let (g, w) = (group(got), group(want));
    if g.len() != w.len() {
        errors.push(format!("{} keys, oracle has {}", g.len(), w.len()));
    }
    for (key, wrows) in &w {
        let Some(grows) = g.get(key) else {
            errors.push(format!("missing key {key}"));
            continue;
        };
        if grows.len() != wrows.len() {
            errors.push(format!("{key}: {} rows, oracle {}", grows.len(), wrows.len()));
            continue;
        }
        for (a, b) in grows.iter().zip(wrows) {
            if a["count"].as_u64() != b["count"].as_u64() {
                errors.push(format!("{key}: count {} != {}", a["count"], b["count"]));
            }
            for (k, rel) in [
                ("cpu_time_total_us", 0.01),
                ("self_cpu_time_total_us", 0.01),
                ("device_time_total_us", 0.001),
                ("self_device_time_total_us", 0.001),
            ] {
                if !close(num(a, k), num(b, k), rel) {
                    errors.push(format!("{key}: {k} {} != oracle {}", num(a, k), num(b, k)));
                }
            }
        }
    }
    errors.into_iter().map(|e| format!("{}: {e}", trace.display())).collect()
}

fn pairs() -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    let root = fixture("h200-llama-1b");
    let mut out = Vec::new();
    for mode in ["decode", "prefill"] {
        for bs in [1, 4, 8, 16, 32, 128] {
            for step in 0..3 {
                let dir = root.join(mode).join(format!("logs_{bs}"));
                let t = dir.join(format!("trace_{step}.json.zst"));
                if t.exists() {
                    out.push((t, dir.join(format!("oracle_{step}.json.zst"))));
                }
            }
        }
    }
    out.push((root.join("multistep/decode_bs16_8steps.pt.trace.json.zst"), root.join("multistep/oracle.json.zst")));
    out.push((root.join("modules/decode_bs8_with_stack.json.zst"), root.join("modules/oracle.json.zst")));
    out
}

#[test]
fn every_fixture_matches_its_oracle() {
    let pairs = pairs();
    assert_eq!(pairs.len(), 20, "expected 12 decode + 6 prefill + multistep + modules fixtures");
    let errors: Vec<String> = pairs.iter().flat_map(|(t, o)| compare(t, o)).collect();
    assert!(errors.is_empty(), "{} mismatches:\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn text_table_is_sorted_by_self_device_time() {
    let t = fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    let out = Command::new(bin("coord")).arg("analyze").arg(&t).output().expect("run coord");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let self_dev: Vec<f64> =
        text.lines().skip(1).filter_map(|l| l.split_whitespace().rev().nth(1).and_then(|v| v.parse().ok())).collect();
    assert!(self_dev.len() > 80, "{} rows", self_dev.len());
    assert!(self_dev.windows(2).all(|w| w[0] >= w[1]), "not sorted: {self_dev:?}");
    // aten::mm holds the GEMMs of every projection: the largest self device time of a decode step.
    assert!(text.lines().nth(1).unwrap_or_default().starts_with("aten::mm "), "{text}");
}
