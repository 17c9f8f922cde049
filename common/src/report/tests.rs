use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::classify::Detail;
use crate::html::external_references;
use crate::latency::{Fit, Model, Target};

fn committed(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results").join(rel)
}

fn report_of(dir: &Path, models: &Models) -> String {
    let r = Results::read(dir).expect("readable results");
    let html = render(&r, models);
    assert!(external_references(&html).is_empty(), "{:?}", external_references(&html));
    // With TRACEFLEET_REPORT_OUT set, the reports are kept for looking at in a browser.
    if let Some(out) = std::env::var_os("TRACEFLEET_REPORT_OUT") {
        let name = dir.components().rev().take(2).map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>();
        let path = Path::new(&out).join(format!("{}.html", name.join("-")));
        fs::create_dir_all(&out).expect("report out dir");
        fs::write(&path, &html).expect("kept report");
    }
    html
}

/// The HTML of one section: from its heading to the next section's.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<h2 id=\"{id}\">")).unwrap_or_else(|| panic!("section {id}"));
    let rest = &html[start + 4..];
    let end = rest.find("<h2 ").map_or(html.len(), |e| start + 4 + e);
    &html[start..end]
}

/// The texts of the SVG `<text>` elements in `html` (plotters writes them on lines of their own).
fn svg_texts(html: &str) -> Vec<&str> {
    html.split("<text").skip(1).filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim())).collect()
}

/// Copies the CSV tables and manifest of `from` to `to`, with `edit` applied to every row of
/// `steps.csv`, `kernels.csv` and `ops.csv` (header → column index given); `extra` rows are appended.
fn copy_results(from: &Path, to: &Path, edit: impl Fn(&str, usize, &mut Vec<String>, &dyn Fn(&str) -> usize)) {
    for name in ["steps.csv", "kernels.csv", "ops.csv"] {
        let mut rd = csv::Reader::from_path(from.join(name)).expect("read csv");
        let headers = rd.headers().expect("headers").clone();
        let col = |h: &str| headers.iter().position(|x| x == h).unwrap_or_else(|| panic!("column {h}"));
        let mut wr = csv::Writer::from_path(to.join(name)).expect("write csv");
        wr.write_record(&headers).expect("header");
        for (i, rec) in rd.records().enumerate() {
            let mut row: Vec<String> = rec.expect("row").iter().map(str::to_string).collect();
            edit(name, i, &mut row, &col);
            wr.write_record(&row).expect("row");
        }
        wr.flush().expect("flush");
    }
    fs::copy(from.join("manifest.json"), to.join("manifest.json")).expect("manifest");
}

#[test]
fn the_decode_report_holds_every_section_and_plot() {
    let html = report_of(&committed("h200-vllm/decode"), &Models::default());
    let latency = section(&html, "latency");
    // GPU time, 7 detailed and 3 coarse categories.
    assert_eq!(latency.matches("<svg").count(), 11);
    for d in Detail::ALL {
        assert!(latency.contains(&format!("<figcaption>{}: µs per step against batch size", d.name())), "{}", d.name());
    }
    assert!(latency.contains("no latency model"));
    assert_eq!(section(&html, "breakdown").matches("<svg").count(), 1);
    assert!(section(&html, "breakdown").contains("detailed categories stacked"));
    let kernels = section(&html, "kernels");
    assert_eq!(kernels.matches("<svg").count(), 1);
    assert!(kernels.contains("the top 8 kernels"));
    assert!(kernels.contains("more left out"), "the kernel list is capped");
    let spread = section(&html, "spread");
    assert_eq!(spread.matches("<svg").count(), 1);
    assert!(spread.contains("p99 (µs)") && spread.contains("throttled step(s) in red"));
    let run = section(&html, "run");
    assert!(run.contains("580.159.04") && run.contains("13.0") && run.contains("NVIDIA H200"));
    assert!(run.contains("1980"), "SM clock from the steps");
    assert!(section(&html, "roofline").contains("no roofline data (no shapes recorded)"));
    assert!(!html.contains("plot failed"));
}

#[test]
fn the_prefill_report_plots_against_tokens() {
    let html = report_of(&committed("h200-vllm/prefill"), &Models::default());
    let latency = section(&html, "latency");
    assert_eq!(latency.matches("<svg").count(), 11);
    assert!(latency.contains("<figcaption>kqv_proj: µs per step against tokens"));
    assert!(latency.contains("tokens (log2)"));
    assert!(section(&html, "breakdown").contains("<svg"));
    assert!(!html.contains("plot failed"));
}

#[test]
fn older_and_tensor_parallel_results_render() {
    for dir in ["h200/decode", "h200-vllm/tp2/decode-tp2"] {
        let html = report_of(&committed(dir), &Models::default());
        assert!(!html.contains("plot failed"), "{dir}");
        assert_eq!(section(&html, "latency").matches("<svg").count(), 11, "{dir}");
    }
}

#[test]
fn two_hosts_show_side_by_side_in_the_legends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let from = committed("h200-vllm/decode");
    copy_results(&from, tmp.path(), |_, _, _, _| {});
    // The same rows again as a second machine.
    for name in ["steps.csv", "kernels.csv", "ops.csv"] {
        let text = fs::read_to_string(from.join(name)).expect("csv");
        let mut out = fs::read_to_string(tmp.path().join(name)).expect("copied");
        for line in text.lines().skip(1) {
            out.push_str(&line.replacen("h200-gpu1,", "h200-gpu2,", 1));
            out.push('\n');
        }
        fs::write(tmp.path().join(name), out).expect("write");
    }
    let html = report_of(tmp.path(), &Models::default());
    let latency = section(&html, "latency");
    for host in ["h200-gpu1 · decode in128", "h200-gpu2 · decode in128"] {
        // In every category plot's legend.
        assert_eq!(svg_texts(latency).iter().filter(|t| **t == host).count(), 11, "{host}");
    }
    assert_eq!(section(&html, "breakdown").matches("<svg").count(), 2);
    assert_eq!(section(&html, "spread").matches("<svg").count(), 2);
    assert_eq!(section(&html, "kernels").matches("<svg").count(), 2);
}

#[test]
fn a_throttled_step_is_marked_and_missing_telemetry_said() {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_results(&committed("h200-vllm/decode"), tmp.path(), |name, i, row, col| {
        if name == "steps.csv" {
            let hot = i == 7;
            row[col("throttled")] = if hot { "1" } else { "0" }.to_string();
            row[col("throttle_reasons")] = if hot { "hw_slowdown" } else { "" }.to_string();
        }
    });
    let html = report_of(tmp.path(), &Models::default());
    let spread = section(&html, "spread");
    assert!(spread.contains("1 of 48 steps with telemetry were throttled"), "{spread}");
    assert!(spread.contains("1 throttled step(s) in red"));
    assert!(spread.contains("Throttled steps") && spread.contains("hw_slowdown"));
    assert!(svg_texts(spread).contains(&"throttled step"), "legend entry");
    assert!(spread.contains("<td data-v=\"1\" class=\"hi\">1 of 3</td>"));

    let tmp = tempfile::tempdir().expect("tempdir");
    copy_results(&committed("h200-vllm/decode"), tmp.path(), |name, _, row, col| {
        if name == "steps.csv" {
            for c in ["throttled", "throttle_reasons", "sm_clock_mhz_min", "sm_clock_mhz_max"] {
                row[col(c)] = String::new();
            }
        }
    });
    let html = report_of(tmp.path(), &Models::default());
    assert!(section(&html, "spread").contains("No GPU telemetry in these results"));
    assert!(section(&html, "run").contains("not recorded"));
}

#[test]
fn roofline_data_is_plotted_and_tabulated() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let from = committed("h200-vllm/decode");
    copy_results(&from, tmp.path(), |_, _, _, _| {});
    // ops.csv with the FLOP model columns: a GEMM-like op modelled at every point, one op without.
    let mut ops = String::from(
        "host,gpu,mode,batch_size,input_len,name,side,steps,calls,mean_us,std_us,flops_per_call,bytes_per_call,achieved_tflops,achieved_gbps,bound\n",
    );
    let mut roofline = String::from(
        "host,gpu,mode,batch_size,input_len,category,flops_per_step,bytes_per_step,time_us_per_step,achieved_tflops,achieved_gbps,peak_tflops,peak_gbps,bound\n",
    );
    for bs in [1u32, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256] {
        let b = f64::from(bs);
        let flops = 2.0 * b * 2048.0 * 6144.0;
        let bytes = 2.0 * 2048.0 * 6144.0 + 4.0 * b * 8192.0;
        let t = 10.0 + b * 0.05;
        let tf = flops / (t * 1e-6) / 1e12;
        let gb = bytes / (t * 1e-6) / 1e9;
        ops.push_str(&format!(
            "h200-gpu1,NVIDIA H200,decode,{bs},128,aten::mm,cpu,3,48,{t},0.1,{flops},{bytes},{tf},{gb},memory\n"
        ));
        ops.push_str(&format!("h200-gpu1,NVIDIA H200,decode,{bs},128,_C::rms_norm,cpu,3,96,{},0.1,,,,,\n", t / 2.0));
        for d in Detail::ALL {
            roofline.push_str(&format!(
                "h200-gpu1,NVIDIA H200,decode,{bs},128,{},{},{},{t},{tf},{gb},989,4800,memory\n",
                d.name(),
                flops * 16.0,
                bytes * 16.0
            ));
        }
    }
    fs::write(tmp.path().join("ops.csv"), ops).expect("ops");
    fs::write(tmp.path().join("roofline.csv"), roofline).expect("roofline");
    let html = report_of(tmp.path(), &Models::default());
    let roof = section(&html, "roofline");
    assert!(!roof.contains("no roofline data"));
    assert_eq!(roof.matches("<svg").count(), 16, "one plot per batch size");
    assert!(roof.contains("ridge at 206 FLOP/byte"));
    assert!(svg_texts(roof).contains(&"roof (989 TFLOP/s, 4800 GB/s)"));
    assert!(roof.contains("Ops with a FLOP model") && roof.contains("aten::mm"));
    assert!(roof.contains("Top ops without a FLOP model") && roof.contains("_C::rms_norm"));
    assert!(!html.contains("plot failed"));
}

#[test]
fn a_fitted_model_is_drawn_with_its_knee_and_r2() {
    let dir = committed("h200-vllm/decode");
    let r = Results::read(&dir).expect("readable");
    let curve = r.curves().into_iter().next().expect("a curve");
    let fit = Fit {
        intercept_us: 1100.0,
        slope_us: 1.0,
        knee: Some(64.0),
        slope_after_us: 8.0,
        r2: 0.987,
        held_out_error: Some(0.02),
    };
    let models = Models {
        curves: vec![CurveModels::new(
            &curve,
            vec![Model { target: Target::Total, name: "gpu_time".into(), points: 16, fit: Some(fit) }],
        )],
    };
    let html = report_of(&dir, &models);
    let latency = section(&html, "latency");
    assert!(latency.contains(
        "GPU time (whole step): µs per step against batch size; fit h200-gpu1 · decode in128: R² 0.987, knee at 64"
    ));
    assert_eq!(latency.matches("no latency model").count(), 10, "the other plots have none");
    assert!(latency.contains("Latency models") && latency.contains("<td data-v=\"64\">64</td>"));
}

#[test]
fn write_puts_report_html_in_the_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = Results::read(&committed("h200-vllm/prefill")).expect("readable");
    let path = write(tmp.path(), &r, &Models::default()).expect("written");
    assert_eq!(path, tmp.path().join("report.html"));
    assert!(fs::read_to_string(&path).expect("read").starts_with("<!DOCTYPE html>"));
    let e = write(&tmp.path().join("missing"), &r, &Models::default()).expect_err("no such dir").to_string();
    assert!(e.contains("missing/report.html"), "{e}");
}

#[test]
fn kernel_names_are_shortened_without_losing_copies() {
    assert_eq!(short_name("void vllm::f<int, (int)3>(float*, int)", 80), "vllm::f<int, (int)3>");
    assert_eq!(short_name("Memcpy DtoH (Device -> Pinned)", 80), "Memcpy DtoH (Device -> Pinned)");
    assert_eq!(short_name("_gumbel_sample_kernel", 8), "_gumbel…");
    assert_eq!(
        short_name(
            "std::enable_if<(((8)>(0)))&&vllm::_typeConvert<c10::BFloat16>::exists, void>::type \
             vllm::fused_add_rms_norm_kernel<c10::BFloat16, 8, true>(c10::BFloat16*, long, float)",
            80
        ),
        "vllm::fused_add_rms_norm_kernel<c10::BFloat16, 8, true>"
    );
    assert_eq!(
        short_name("void at::native::(anonymous namespace)::k<(int)2>(at::A (*)(int))", 80),
        "at::native::(anonymous namespace)::k<(int)2>"
    );
    assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), Some(2.0));
    assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.9), Some(2.8));
    assert_eq!(quantile(&[], 0.9), None);
}
