//! `coord ingest` on the H200 fixtures: seed tables, full tables, category sums and kernel counts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tracefleet_tests::{bin, fixture, read_json};

/// A CSV/TSV table as header -> column, one map per row (RFC 4180 quotes handled).
fn table(path: &Path, sep: char) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().map(|h| split(h, sep)).unwrap_or_default();
    lines.map(|l| header.iter().cloned().zip(split(l, sep)).collect()).collect()
}

fn split(line: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c if c == sep && !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn f(row: &BTreeMap<String, String>, k: &str) -> f64 {
    row.get(k).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {k} in {row:?}"))
}

fn ingest(args: &[&str], out: &Path) -> String {
    let o = Command::new(bin("coord")).arg("ingest").args(args).arg("--out").arg(out).output().expect("run coord");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "coord ingest failed: {stderr}");
    stderr
}

/// Sum of GPU activity durations of a trace, straight from the JSON (an independent reference).
fn gpu_time_us(trace: &Path) -> f64 {
    let v: Value = read_json(trace).expect("read trace");
    v["traceEvents"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .filter(|e| matches!(e["cat"].as_str(), Some("kernel" | "gpu_memcpy" | "gpu_memset")))
                .map(|e| e["dur"].as_f64().unwrap_or(0.0))
                .sum()
        })
        .unwrap_or(0.0)
}

#[test]
fn decode_fixtures_give_seed_and_full_tables() {
    let out = tempfile::tempdir().expect("tempdir");
    let root = fixture("h200-llama-1b/decode");
    ingest(&[root.to_str().unwrap_or_default(), "--input-len", "128"], out.path());

    // Seed tables with the original columns.
    let op_times = table(&out.path().join("op_times.tsv"), '\t');
    assert_eq!(op_times.len(), 4);
    let bs: Vec<f64> = op_times.iter().map(|r| f(r, "batch_size")).collect();
    assert_eq!(bs, vec![1.0, 8.0, 32.0, 128.0]);
    for r in &op_times {
        assert!(f(r, "attention") > 0.0 && f(r, "linear") > 0.0 && f(r, "others") > 0.0, "{r:?}");
        assert_eq!(r.keys().cloned().collect::<Vec<_>>(), ["attention", "batch_size", "linear", "others"]);
    }
    let detailed = table(&out.path().join("op_times_detailed.tsv"), '\t');
    assert_eq!(detailed.len(), 4);
    let header = std::fs::read_to_string(out.path().join("op_times_detailed.tsv")).unwrap_or_default();
    assert!(
        header.starts_with("batch_size\tkqv_proj\trope\tpaged_attention\to_proj\tgated_up_proj\tdown_proj\tothers\n")
    );
    let kd = std::fs::read_to_string(out.path().join("kernel_dat.csv")).unwrap_or_default();
    assert!(kd.starts_with("bsize,kernel,gdim_x,gdim_y,gdim_z,bdim_x,bdim_y,bdim_z,blocks_per_sm,warps_per_sm,regs_per_thread,occupancy,op_type\n"));
    let kd = table(&out.path().join("kernel_dat.csv"), ',');
    assert!(kd.iter().any(|r| r["op_type"] == "kqv_proj" && r["kernel"].starts_with("nvjet_sm90")));
    assert!(
        kd.iter()
            .any(|r| r["op_type"] == "paged_attention" && r["kernel"].starts_with("cudnn_generated_fort_native_sdpa"))
    );

    // Every step: the three coarse columns add up to the step's GPU time, which is the sum of the
    // durations of its GPU activities read independently from the JSON.
    let steps = table(&out.path().join("steps.csv"), ',');
    assert_eq!(steps.len(), 12, "4 batch sizes x 3 steps, every step read");
    for r in &steps {
        let sum = f(r, "attention_us") + f(r, "linear_us") + f(r, "others_us");
        assert!((sum - f(r, "gpu_time_us")).abs() < 0.005, "{r:?}");
        let reference = gpu_time_us(&root.join(&r["trace"]));
        assert!((f(r, "gpu_time_us") - reference).abs() < 0.005, "{} vs {reference}", r["gpu_time_us"]);
        assert_eq!(r["layers"], "16");
        assert_eq!(r["detail_kqv_proj_kernels"], "48", "{r:?}");
        assert_eq!(r["detail_o_proj_kernels"], "16");
        assert_eq!(r["detail_gated_up_proj_kernels"], "32");
        assert_eq!(r["detail_paged_attention_kernels"], "16");
        assert!(f(r, "gpu_busy_us") <= f(r, "gpu_time_us") + 0.001);
        assert!(f(r, "wall_span_us") > f(r, "gpu_busy_us"));
    }

    // down_proj: 16 GEMM kernels per step; cuBLASLt adds its split-K reduction kernel to each of them
    // at these shapes, which is part of the projection's cost and so of the same category.
    let kernels = table(&out.path().join("kernels.csv"), ',');
    for b in ["1", "8", "32", "128"] {
        let per_step = |pred: &dyn Fn(&str) -> bool| -> f64 {
            kernels
                .iter()
                .filter(|r| r["batch_size"] == b && r["category"] == "down_proj" && pred(&r["kernel"]))
                .map(|r| f(r, "calls") / f(r, "steps"))
                .sum()
        };
        assert_eq!(per_step(&|k| !k.contains("splitKreduce")), 16.0, "bs {b}");
        assert_eq!(per_step(&|k| k.contains("splitKreduce")), 16.0, "bs {b}");
        let gemms = |cat: &str| -> f64 {
            kernels
                .iter()
                .filter(|r| r["batch_size"] == b && r["category"] == cat)
                .map(|r| f(r, "calls") / f(r, "steps"))
                .sum()
        };
        assert_eq!((gemms("kqv_proj"), gemms("o_proj"), gemms("gated_up_proj")), (48.0, 16.0, 32.0));
    }

    // Full op statistics over the three steps of each batch size.
    let ops = table(&out.path().join("ops.csv"), ',');
    let linear = ops.iter().find(|r| r["batch_size"] == "1" && r["name"] == "aten::linear" && r["side"] == "cpu");
    let linear = linear.expect("aten::linear row");
    assert_eq!(linear["steps"], "3");
    assert_eq!(linear["calls"], "339");
    assert!(f(linear, "min_us") <= f(linear, "p50_us") && f(linear, "p50_us") <= f(linear, "max_us"));
    assert!((f(linear, "mean_us") * 3.0 - f(linear, "total_us")).abs() < 0.01);
}

#[test]
fn multistep_trace_is_split_into_steps() {
    let out = tempfile::tempdir().expect("tempdir");
    let dir = fixture("h200-llama-1b/multistep");
    ingest(&[dir.to_str().unwrap_or_default()], out.path());
    let steps = table(&out.path().join("steps.csv"), ',');
    assert_eq!(steps.len(), 8);
    for (i, r) in steps.iter().enumerate() {
        assert_eq!(r["batch_size"], "16", "from the file name decode_bs16_...");
        assert_eq!(r["mode"], "decode");
        assert_eq!(r["step_name"], format!("execute_model_step_{i}"));
        assert_eq!(r["detail_kqv_proj_kernels"], "48");
    }
    let ops = table(&out.path().join("ops.csv"), ',');
    let mm = ops.iter().find(|r| r["name"] == "aten::mm").expect("aten::mm");
    assert_eq!(mm["steps"], "8");
    assert_eq!(mm["calls"], "904");
}

#[test]
fn vllm_step_names_give_the_batch_size() {
    // The multistep fixture with vLLM's step names, in a folder that says nothing about the batch.
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = fixture("h200-llama-1b/multistep/decode_bs16_8steps.pt.trace.json.zst");
    let text =
        String::from_utf8(zstd::decode_all(&std::fs::read(src).expect("read")[..]).expect("zstd")).expect("utf8");
    let mut renamed = text;
    for s in 0..8 {
        renamed = renamed.replace(&format!("\"execute_model_step_{s}\""), "\"execute_context_0(0)_generation_16(16)\"");
    }
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("worker0.pt.trace.json"), renamed).expect("write");
    let out = tmp.path().join("out");
    ingest(&[dir.to_str().unwrap_or_default()], &out);
    let steps = table(&out.join("steps.csv"), ',');
    assert_eq!(steps.len(), 8);
    assert!(steps.iter().all(|r| r["batch_size"] == "16" && r["mode"] == "decode"), "{steps:?}");
}

#[test]
fn decode_and_prefill_get_their_own_seed_tables() {
    let out = tempfile::tempdir().expect("tempdir");
    let root = fixture("h200-llama-1b");
    ingest(
        &[root.join("decode").to_str().unwrap_or_default(), root.join("prefill").to_str().unwrap_or_default()],
        out.path(),
    );
    // The prefills' input length is read from the tokens they fed (4 × 128 for 4 prompts), the decodes'
    // is unknown; one length within each mode: no length level.
    assert!(!out.path().join("prefill/in128").exists() && !out.path().join("decode/in0").exists());
    let steps = table(&out.path().join("steps.csv"), ',');
    assert!(steps.iter().filter(|r| r["mode"] == "prefill").all(|r| r["input_len"] == "128"));
    for dir in ["decode", "prefill"] {
        for f in ["op_times.tsv", "op_times_detailed.tsv", "kernel_dat.csv"] {
            assert!(out.path().join(dir).join(f).exists(), "{dir}/{f}");
        }
    }
    let prefill = table(&out.path().join("prefill/op_times.tsv"), '\t');
    assert_eq!(prefill.iter().map(|r| r["batch_size"].clone()).collect::<Vec<_>>(), ["1", "4", "16"]);
    assert_eq!(steps.len(), 18);
}

#[test]
fn missing_batch_size_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    std::fs::copy(t, tmp.path().join("trace_0.json.zst")).expect("copy");
    let o = Command::new(bin("coord"))
        .args(["ingest"])
        .arg(tmp.path())
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("trace_0.json.zst") && err.contains("--batch-size"), "{err}");
}
