//! Comparisons of the committed H200 results: with themselves, with another run of the same sweep, with a
//! copy whose attention is 1.3× slower, and with another machine and runtime.

use std::path::{Path, PathBuf};

use super::*;
use crate::classify::{Coarse, Detail};
use crate::html::external_references;
use crate::results::Results;

fn results_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results").join(rel)
}

fn read(rel: &str) -> Results {
    Results::read(&results_dir(rel)).expect("committed results are readable")
}

fn significant(d: &Diff) -> Vec<String> {
    d.groups
        .iter()
        .flat_map(|g| g.rows.iter().filter(|r| r.significant).map(move |r| format!("{} x={}", g.metric.label(), r.x)))
        .collect()
}

#[test]
fn a_run_against_itself_has_no_significant_row() {
    let a = read("h200/decode");
    let d = compare(&a, &a, &DiffOptions::default());
    assert_eq!(d.summary.significant, 0, "{:?}", significant(&d));
    // 16 batch sizes × (7 detailed + 3 coarse + whole step) and every kernel row of kernels.csv.
    assert_eq!(d.summary.rows, 16 * 11 + a.kernels.len());
    assert_eq!(d.summary.points_compared, 16);
    assert!(d.only_in_a.is_empty() && d.only_in_b.is_empty() && d.machines_compared.is_none());
    assert!(d.groups.iter().flat_map(|g| &g.rows).all(|r| r.change_us == 0.0 && r.presence == Presence::Both));
}

/// Two real runs of the same sweep on the same GPU differ by up to 1.4% per category with p-values down
/// to 0.003 before correction: noise, not effects.
#[test]
fn another_run_of_the_same_sweep_has_no_significant_row() {
    let a = read("h200/decode");
    for other in ["h200/decode-paused", "h200/decode-cold"] {
        let d = compare(&a, &read(other), &DiffOptions::default());
        assert_eq!(d.summary.significant, 0, "{other}: {:?}", significant(&d));
        assert_eq!(d.summary.points_compared, 16, "{other}");
        // These runs kept steps.csv only: no kernel data is not "every kernel gone".
        assert_eq!(d.summary.rows, 16 * 11, "{other}");
        assert!(d.notes.iter().any(|n| n.contains("has no kernels.csv")), "{other}: {:?}", d.notes);
        // Without the correction and the size thresholds, the t-test alone would flag some.
        let loose = DiffOptions { alpha: 0.05, min_change_pct: 0.0, min_change_us: 0.0 };
        let raw = d.groups.iter().flat_map(|g| &g.rows).filter(|r| r.p.is_some_and(|p| p < loose.alpha)).count();
        assert!(raw > 0, "{other}: the runs differ by noise that raw p-values see");
    }
}

/// Deterministic noise of a step: a small relative deviation in ±`scale`, different per row and column.
fn noise(row: usize, col: usize, scale: f64) -> f64 {
    let k = ((row * 7 + col * 3) % 5) as f64 - 2.0;
    1.0 + scale * k / 2.0
}

/// Copies `src` to `dst` with attention `factor`× slower: `detail_paged_attention_us` and `attention_us`
/// scaled (with per-step noise of its own), `gpu_time_us` and `gpu_busy_us` by the same µs; the other
/// categories get ±0.4% of noise (the coarse columns and GPU time follow); the attention kernels' times in
/// kernels.csv scaled, their standard deviation 20% more. Points of batch size `drop` are left out.
fn slower_attention(src: &Path, dst: &Path, factor: f64, drop: u32) {
    let mut rd = csv::Reader::from_path(src.join("steps.csv")).expect("steps.csv");
    let headers = rd.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect("column");
    let mut wr = csv::Writer::from_path(dst.join("steps.csv")).expect("write steps.csv");
    wr.write_record(&headers).expect("header");
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.expect("row");
        let mut v: Vec<String> = rec.iter().map(str::to_string).collect();
        if v[col("batch_size")] == drop.to_string() {
            continue;
        }
        let num = |v: &[String], c: &str| v[col(c)].parse::<f64>().expect("number");
        let mut delta = 0.0;
        let mut coarse = [0f64; 3];
        for (j, d) in Detail::ALL.iter().enumerate() {
            let c = format!("detail_{}_us", d.name());
            let old = num(&v, &c);
            let new =
                if *d == Detail::PagedAttention { old * factor * noise(i, j, 0.004) } else { old * noise(i, j, 0.008) };
            delta += new - old;
            coarse[d.coarse().index()] += new;
            v[col(&c)] = format!("{new:.3}");
        }
        for c in Coarse::ALL {
            v[col(&format!("{}_us", c.name()))] = format!("{:.3}", coarse[c.index()]);
        }
        for c in ["gpu_time_us", "gpu_busy_us"] {
            v[col(c)] = format!("{:.3}", num(&v, c) + delta);
        }
        wr.write_record(&v).expect("row");
    }
    wr.flush().expect("flush");

    let mut rd = csv::Reader::from_path(src.join("kernels.csv")).expect("kernels.csv");
    let headers = rd.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect("column");
    let mut wr = csv::Writer::from_path(dst.join("kernels.csv")).expect("write kernels.csv");
    wr.write_record(&headers).expect("header");
    for rec in rd.records() {
        let rec = rec.expect("row");
        let mut v: Vec<String> = rec.iter().map(str::to_string).collect();
        if v[col("batch_size")] == drop.to_string() {
            continue;
        }
        if v[col("category")] == "paged_attention" {
            for (c, f) in [
                ("total_us", factor),
                ("min_us", factor),
                ("max_us", factor),
                ("mean_us", factor),
                ("std_us", factor * 1.2),
                ("p50_us", factor),
                ("p90_us", factor),
                ("p99_us", factor),
            ] {
                let old: f64 = v[col(c)].parse().expect("number");
                v[col(c)] = format!("{:.3}", old * f);
            }
        }
        wr.write_record(&v).expect("row");
    }
    wr.flush().expect("flush");
    std::fs::copy(src.join("manifest.json"), dst.join("manifest.json")).expect("manifest");
}

#[test]
fn slower_attention_is_significant_at_every_batch_size_and_nothing_else_is() {
    let src = results_dir("h200/decode");
    let tmp = tempfile::tempdir().expect("tempdir");
    slower_attention(&src, tmp.path(), 1.3, 256);
    let a = read("h200/decode");
    let b = Results::read(tmp.path()).expect("the copy is readable");
    let d = compare(&a, &b, &DiffOptions::default());
    let xs: Vec<u64> = vec![1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224];

    let attention = |m: &Metric| {
        matches!(m, Metric::Detail(Detail::PagedAttention) | Metric::Coarse(Coarse::Attention))
            || m.category() == "paged_attention"
    };
    let mut attention_groups = 0;
    for g in &d.groups {
        if attention(&g.metric) {
            attention_groups += 1;
            let sig: Vec<u64> = g.rows.iter().filter(|r| r.significant).map(|r| r.x).collect();
            assert_eq!(sig, g.rows.iter().map(|r| r.x).collect::<Vec<_>>(), "{}", g.metric.label());
            for r in &g.rows {
                let pct = r.change_pct.expect("A has attention");
                assert!((pct - 30.0).abs() < 1.0, "{} x={}: {pct}", g.metric.label(), r.x);
            }
        } else if g.metric == Metric::GpuTime {
            // The whole step carries the attention's extra time: significant where that is 5% of it or more.
            for r in &g.rows {
                let pct = r.change_pct.expect("gpu time");
                if pct < 4.5 {
                    assert!(!r.significant, "gpu_time x={} {pct:.1}% is below the threshold", r.x);
                }
                if pct > 5.5 {
                    assert!(r.significant, "gpu_time x={} {pct:.1}% is a real change", r.x);
                }
            }
        } else {
            assert_eq!(g.significant_rows, 0, "{} is unchanged but flagged", g.metric.label());
        }
    }
    // Detailed, coarse and the one flash-attention kernel per batch size.
    assert_eq!(attention_groups, 3);
    let pa = d.groups.iter().find(|g| g.metric == Metric::Detail(Detail::PagedAttention)).expect("paged_attention");
    assert_eq!(pa.rows.iter().map(|r| r.x).collect::<Vec<_>>(), xs);
    // Significant groups sort first, by effect: the attention's (or the whole step's) lead.
    assert!(d.groups[0].significant_rows > 0);
    assert!(d.groups.windows(2).all(|w| (w[0].significant_rows > 0) >= (w[1].significant_rows > 0)));

    // Batch size 256 was left out of B: reported, not dropped.
    assert_eq!(d.summary.points_only_in_a, 1);
    assert_eq!((d.only_in_a[0].x, d.only_in_a[0].steps), (256, 3));
    assert!(d.only_in_b.is_empty());
    let text = text::render(&d);
    assert!(text.contains("points only in A:\n  gpu-host · decode in128 batch size 256 (3 steps)"), "{text}");
    assert!(text.contains("points only in A: 1, only in B: 0"), "{text}");
    assert!(text.contains("paged_attention (detailed) · decode in128: effect"), "{text}");
    let html = page::render(&d).expect("page");
    assert!(external_references(&html).is_empty(), "{:?}", external_references(&html));
    assert!(html.contains("<svg") && html.contains("batch size 256"));
}

#[test]
fn two_machines_are_compared_and_kernels_that_differ_are_listed() {
    let a = read("h200/decode");
    let b = read("h200-vllm/decode");
    let d = compare(&a, &b, &DiffOptions::default());
    let note = d.machines_compared.as_deref().expect("the machines differ in name");
    assert!(note.contains("gpu-host") && note.contains("h200-gpu1"), "{note}");
    assert_eq!(d.curves.len(), 1);
    assert_eq!(d.summary.points_compared, 16);
    // torch's SDPA and vLLM's FlashAttention 3 run different kernels.
    assert!(d.summary.kernels_appeared > 0 && d.summary.kernels_disappeared > 0);
    let appeared = d.groups.iter().flat_map(|g| &g.rows).find(|r| r.presence == Presence::Appeared).expect("one");
    assert!(appeared.mean_a.is_none() && appeared.n_a == 0 && appeared.mean_b.is_some());
    // vLLM's decode step is about half torch's eager one.
    let step = d.groups.iter().find(|g| g.metric == Metric::GpuTime).expect("gpu_time");
    assert!(step.rows.iter().all(|r| r.significant && r.change_us < 0.0));
    assert!(d.a.machines[0].starts_with("gpu-host: NVIDIA H200 (driver"), "{:?}", d.a.machines);
    let text = text::render(&d);
    assert!(text.contains("note: A's gpu-host (NVIDIA H200) compared with B's h200-gpu1"), "{text}");
    let html = page::render(&d).expect("page");
    assert!(external_references(&html).is_empty());
}

#[test]
fn options_out_of_range_are_refused() {
    assert!(DiffOptions::default().validate().is_ok());
    let e = DiffOptions { alpha: 1.5, ..DiffOptions::default() }.validate().expect_err("alpha > 1");
    assert!(e.to_string().contains("--alpha = 1.5"), "{e}");
    assert!(DiffOptions { min_change_pct: -1.0, ..DiffOptions::default() }.validate().is_err());
    assert!(DiffOptions { min_change_us: f64::NAN, ..DiffOptions::default() }.validate().is_err());
}
