//! The roofline of the committed H200 sweep (docs/results/h200-analysis/decode-a, recorded with shapes):
//! at batch 1 every decode projection GEMM is memory-bound, its achieved bandwidth set against the H200's
//! 4800 GB/s; by batch 256 the MLP GEMMs are compute-bound.

use tracefleet_tests::workspace;

fn rows(rel: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(workspace().join(rel)).expect("roofline.csv");
    let header = r.headers().expect("header").iter().map(str::to_string).collect();
    (header, r.records().map(|x| x.expect("row").iter().map(str::to_string).collect()).collect())
}

#[test]
fn committed_h200_decode_gemms_are_memory_bound_at_batch_1() {
    let (header, rows) = rows("docs/results/h200-analysis/decode-a/roofline.csv");
    let col = |n: &str| header.iter().position(|h| h == n).unwrap_or_else(|| panic!("no column {n}"));
    let get = |bs: &str, cat: &str| {
        rows.iter()
            .find(|r| r[col("batch_size")] == bs && r[col("category")] == cat && r[col("dtype")] == "bf16")
            .unwrap_or_else(|| panic!("no row for batch {bs} {cat}"))
    };
    for cat in ["kqv_proj", "o_proj", "gated_up_proj", "down_proj"] {
        let r = get("1", cat);
        assert_eq!(r[col("gpu")], "NVIDIA H200");
        assert_eq!(r[col("bound")], "memory", "{cat}");
        assert_eq!(r[col("peak_gbps")], "4800", "{cat}");
        let gbps: f64 = r[col("achieved_gbps")].parse().expect("number");
        let of_roof: f64 = r[col("of_roof")].parse().expect("number");
        // Memory-bound: the roof is intensity × bandwidth, so of_roof is the share of 4800 GB/s.
        assert!((of_roof - gbps / 4800.0).abs() < 0.002, "{cat}: {of_roof} vs {gbps} GB/s");
        assert!(gbps > 500.0 && gbps < 4800.0, "{cat}: {gbps} GB/s");
    }
    for cat in ["gated_up_proj", "down_proj"] {
        assert_eq!(get("256", cat)[col("bound")], "compute", "{cat} at batch 256");
    }
}
