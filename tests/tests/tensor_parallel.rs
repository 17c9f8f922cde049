//! Tensor parallelism on the real two-rank vLLM traces of `fixtures/h200-vllm-0.25/tp2-*` (two H200s of
//! one host, vLLM's custom all-reduce): each rank's trace is read with its rank, the ranks are merged per
//! step (the slowest rank's view), every collective's time is split into waiting for the other rank and
//! the transfer, and nothing is counted twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tracefleet_tests::{bin, fixture};

const EAGER: &str = "h200-vllm-0.25/tp2-decode-eager/logs_32";
const PREFILL: &str = "h200-vllm-0.25/tp2-prefill-eager/logs_8";

/// `coord ingest DIR --out OUT`; returns stderr.
fn ingest(dir: &str, out: &Path) -> String {
    let o = Command::new(bin("coord")).arg("ingest").arg(fixture(dir)).arg("--out").arg(out).output().expect("coord");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "coord ingest failed: {stderr}");
    stderr
}

/// Rows of a CSV file as maps from column to value.
fn rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = r.headers().expect("header").iter().map(String::from).collect();
    r.records()
        .map(|rec| header.iter().cloned().zip(rec.expect("row").iter().map(String::from)).collect())
        .collect()
}

fn num(row: &BTreeMap<String, String>, col: &str) -> f64 {
    row.get(col).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{col} in {row:?}"))
}

/// Checks the merged view of one two-rank fixture; returns (per-rank rows, merged rows).
fn check_merge(dir: &str, steps: usize) -> (Vec<BTreeMap<String, String>>, Vec<BTreeMap<String, String>>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let stderr = ingest(dir, &out);
    assert!(!stderr.contains("ranks not merged") && !stderr.contains("not split"), "{stderr}");
    let all = rows(&out.join("steps.csv"));
    let (merged, ranks): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r["rank"] == "merged");
    assert_eq!(ranks.len(), 2 * steps, "one row per rank and step");
    assert_eq!(merged.len(), steps, "one merged row per step");
    for r in &ranks {
        assert_eq!(r["tp"], "2");
        // Nothing double-counted: each rank's categories add up to its GPU time, and its collective time
        // is exactly its wait plus its transfer.
        let cats: f64 = ["attention_us", "linear_us", "others_us"].iter().map(|c| num(r, c)).sum();
        assert!((cats - num(r, "gpu_time_us")).abs() < 0.01, "{r:?}");
        let split = num(r, "collective_wait_us") + num(r, "collective_transfer_us");
        assert!((split - num(r, "collective_us")).abs() < 0.01, "{r:?}");
        assert!(num(r, "collective_activities") > 0.0);
    }
    for m in &merged {
        // The two ranks' rows of this step (the fixtures' ranks hold their steps at the same indexes).
        let of_step: Vec<&BTreeMap<String, String>> = ranks.iter().filter(|r| r["step"] == m["step"]).collect();
        assert_eq!(of_step.len(), 2);
        let slowest = of_step.iter().find(|r| r["rank"] == m["slowest_rank"]).expect("the slowest rank's row");
        assert_eq!(slowest["trace"], m["trace"]);
        // The step's time is the slowest rank's: the most GPU time net of waiting for the other.
        let net = |r: &BTreeMap<String, String>| num(r, "gpu_time_us") - num(r, "collective_wait_us");
        assert!(of_step.iter().all(|r| net(r) <= net(slowest)), "{of_step:?}");
        assert_eq!(num(m, "gpu_time_us"), num(slowest, "gpu_time_us"));
        // The merged view leaves the wait out of `others` and keeps the transfer.
        assert!((num(m, "others_us") - (num(slowest, "others_us") - num(slowest, "collective_wait_us"))).abs() < 0.01);
        assert!((num(m, "collective_wait_us") - num(slowest, "collective_wait_us")).abs() < 0.01);
        // One host, one clock: the ranks' end times of each collective agree within a few microseconds.
        assert!(num(m, "rank_end_skew_us") < 20.0, "{m:?}");
    }
    (ranks, merged)
}

#[test]
fn eager_decode_ranks_merge_per_step_with_the_wait_apart() {
    let (ranks, merged) = check_merge(EAGER, 3);
    // 16 layers x 2 all-reduces plus the embedding's (a copy into the shared buffer and a kernel each),
    // and the LM head's all-gather (NCCL), per step.
    for r in &ranks {
        assert_eq!(num(r, "collective_activities"), 68.0, "{r:?}");
    }
    // vLLM's printout for rank 0 put 89% of the window's GPU time in the all-reduce: almost all of it is
    // waiting for the other rank, which the merged view reports apart.
    let wait: f64 = ranks.iter().map(|r| num(r, "collective_wait_us")).sum();
    let transfer: f64 = ranks.iter().map(|r| num(r, "collective_transfer_us")).sum();
    assert!(wait > 10.0 * transfer, "wait {wait} transfer {transfer}");
    for m in &merged {
        assert!(num(m, "others_us") < num(m, "gpu_time_us") * 0.5, "{m:?}");
        assert!(num(m, "attention_us") > 0.0 && num(m, "linear_us") > 0.0);
    }
}

#[test]
fn prefill_ranks_merge_and_the_seed_tables_use_the_merged_steps() {
    let (_, merged) = check_merge(PREFILL, 1);
    let tmp = tempfile::tempdir().expect("tmp");
    ingest(PREFILL, &tmp.path().join("o"));
    let text = std::fs::read_to_string(tmp.path().join("o/op_times.tsv")).expect("op_times.tsv");
    let line: Vec<f64> = text.lines().nth(1).expect("a row").split('\t').map(|v| v.parse().expect("number")).collect();
    // batch 8; attention, linear, others in ms: the merged step's (µs in steps.csv).
    assert_eq!(line[0], 8.0);
    for (k, col) in ["attention_us", "linear_us", "others_us"].iter().enumerate() {
        assert!((line[k + 1] * 1000.0 - num(&merged[0], col)).abs() < 0.01, "{col}: {line:?} {:?}", merged[0]);
    }
}
