//! `coord diff A B` on the committed H200 results: two runs of the same sweep (nothing significant), torch
//! against vLLM on another machine (the whole step significantly faster at every batch size), and a side
//! that is not a results directory.

use std::path::PathBuf;
use std::process::{Command, Output};

use tracefleet_common::html::external_references;
use tracefleet_tests::{bin, workspace};

fn results(rel: &str) -> PathBuf {
    workspace().join("docs/results").join(rel)
}

fn coord_diff(a: &str, b: &str, out: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(bin("coord"))
        .arg("diff")
        .arg(results(a))
        .arg(results(b))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("coord runs")
}

/// The lines of the block whose heading starts with `heading`, up to the next blank line.
fn block<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines().skip_while(|l| !l.starts_with(heading)).skip(2).take_while(|l| !l.is_empty()).collect()
}

#[test]
fn two_runs_of_the_same_sweep_differ_by_nothing_significant() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = coord_diff("h200/decode", "h200/decode-paused", out.path(), &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("176 rows compared at 16 points, 0 significant"), "{stdout}");
    assert!(!stdout.lines().any(|l| l.ends_with('*')), "{stdout}");
    assert!(stdout.contains("kernels not compared"), "decode-paused has steps.csv only: {stdout}");
    assert!(stderr.contains("diff.html"), "{stderr}");
    let html = std::fs::read_to_string(out.path().join("diff.html")).expect("diff.html");
    assert!(external_references(&html).is_empty(), "{:?}", external_references(&html));
}

#[test]
fn torch_against_vllm_is_faster_at_every_batch_size() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = coord_diff("h200/decode", "h200-vllm/decode", out.path(), &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "exit code 0 whatever the differences: {}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("note: A's gpu-host (NVIDIA H200) compared with B's h200-gpu1 (NVIDIA H200)"), "{stdout}");
    // The whole step: 16 batch sizes, every one significant and faster in B.
    let step = block(&stdout, "gpu_time (whole step) · decode in128");
    assert_eq!(step.len(), 16, "{stdout}");
    for l in &step {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols.last(), Some(&"*"), "{l}");
        assert!(cols.iter().any(|c| c.starts_with('-') && c.ends_with('%')), "{l}");
    }
    // Every significant line sits under a heading that counts it.
    let mut heading_count = 0;
    let mut marked = 0;
    for l in stdout.lines() {
        if let Some(n) = l.split(", ").last().and_then(|t| t.strip_suffix(" significant")) {
            heading_count += n.parse::<usize>().expect("count in heading");
        }
        marked += usize::from(l.starts_with("  ") && l.ends_with('*'));
    }
    assert!(marked > 16 && marked == heading_count, "{marked} marked, {heading_count} counted");
    let html = std::fs::read_to_string(out.path().join("diff.html")).expect("diff.html");
    assert!(external_references(&html).is_empty(), "{:?}", external_references(&html));
    assert!(html.contains("<svg"));

    // --json: the same comparison, machine-readable.
    let o = coord_diff("h200/decode", "h200-vllm/decode", out.path(), &["--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["summary"]["points_compared"], 16);
    assert_eq!(v["correction"], "holm");
    // The text shows every significant row (kernels without one are left to the page and the JSON).
    assert_eq!(v["summary"]["significant"].as_u64(), Some(marked as u64));
}

#[test]
fn a_side_that_is_not_results_is_named() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = Command::new(bin("coord"))
        .arg("diff")
        .arg(results("h200/decode"))
        .arg(out.path())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("coord runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("reading B") && stderr.contains(&out.path().display().to_string()), "{stderr}");
    assert!(stderr.contains("no steps.csv"), "{stderr}");
    assert!(!out.path().join("diff.html").exists());

    let o = Command::new(bin("coord"))
        .args(["diff", "--alpha", "2"])
        .arg(results("h200/decode"))
        .arg(results("h200/decode"))
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("coord runs");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--alpha = 2"));
}

/// The JSON of `coord diff A B --json` on two committed result directories.
fn diff_json(a: &str, b: &str) -> serde_json::Value {
    let out = tempfile::tempdir().expect("tempdir");
    let o = coord_diff(a, b, out.path(), &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// (metric kind, name, category, significant rows) of every group with a significant row.
fn significant_groups(d: &serde_json::Value) -> Vec<(String, String, String, u64)> {
    let groups = d["groups"].as_array().expect("groups");
    groups
        .iter()
        .filter(|g| g["significant_rows"].as_u64().unwrap_or(0) > 0)
        .map(|g| {
            let m = &g["metric"];
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (s(&m["kind"]), s(&m["name"]), s(&m["category"]), g["significant_rows"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// Two runs of the same 16-point decode sweep on the H200 (docs/results/h200-analysis, runs A and B, one
/// after the other): no category and no kernel changed significantly.
#[test]
fn two_gpu_runs_of_one_sweep_show_no_significant_change() {
    let d = diff_json("h200-analysis/decode-a", "h200-analysis/decode-b");
    assert_eq!(d["summary"]["points_compared"], 16);
    assert!(d["summary"]["rows"].as_u64().unwrap_or(0) > 700, "kernels compared too: {}", d["summary"]);
    assert_eq!(significant_groups(&d), vec![], "{}", d["summary"]);
}

/// The same sweep with `[torch] attention = "cudnn"` instead of FlashAttention: attention (its category,
/// its kernels, and the whole step that holds it) changes significantly; no other category does.
#[test]
fn cudnn_attention_shows_the_attention_change_and_no_other_category() {
    let d = diff_json("h200-analysis/decode-a", "h200-analysis/decode-cudnn");
    let sig = significant_groups(&d);
    let category = |name: &str| sig.iter().find(|(k, n, ..)| k != "kernel" && n == name).map(|g| g.3);
    assert_eq!(category("paged_attention"), Some(16), "{sig:?}");
    assert_eq!(category("attention"), Some(16), "{sig:?}");
    for (kind, name, _, _) in &sig {
        if kind != "kernel" {
            assert!(matches!(name.as_str(), "paged_attention" | "attention" | "gpu_time"), "{kind} {name}: {sig:?}");
        }
    }
    // FlashAttention's kernel is gone at every batch size, cuDNN's appeared.
    let flash = sig.iter().find(|(k, n, ..)| k == "kernel" && n.contains("flash_fwd_kernel")).expect("flash kernel");
    assert_eq!((flash.2.as_str(), flash.3), ("paged_attention", 16));
    assert!(sig.iter().any(|(k, n, c, _)| k == "kernel"
        && n.starts_with("cudnn_generated_fort_native_sdpa")
        && c == "paged_attention"));
    // The largest effects are attention's.
    let first = &d["groups"][0]["metric"];
    assert_eq!(first["category"], "paged_attention", "{first}");
}
