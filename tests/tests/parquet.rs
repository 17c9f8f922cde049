//! The Parquet twins of the full tables, read back with the `parquet` crate and set against the CSVs
//! field by field: same columns in the same order, same rows, typed columns (text, INT64, DOUBLE), nulls
//! where the CSV is empty, floats equal to the CSV's rounded text within half its last digit.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use parquet::basic::Type as Physical;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use tracefleet_tests::{bin, fixture};

fn ingest(args: &[&str], out: &Path) {
    let o = Command::new(bin("coord")).arg("ingest").args(args).arg("--out").arg(out).output().expect("run coord");
    assert!(o.status.success(), "coord ingest failed: {}", String::from_utf8_lossy(&o.stderr));
}

fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).expect("csv");
    let header = r.headers().expect("header").iter().map(str::to_string).collect();
    let rows = r.records().map(|x| x.expect("record").iter().map(str::to_string).collect()).collect();
    (header, rows)
}

fn parquet_rows(path: &Path) -> (Vec<(String, Physical)>, Vec<Row>) {
    let r = SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("parquet file");
    let schema = r.metadata().file_metadata().schema_descr_ptr();
    let cols = schema.columns().iter().map(|c| (c.name().to_string(), c.physical_type())).collect();
    let rows = r.get_row_iter(None).expect("rows").collect::<Result<Vec<_>, _>>().expect("rows");
    (cols, rows)
}

/// Checks one table; returns the Parquet type of each column by name.
fn same_table(dir: &Path, name: &str) -> BTreeMap<String, Physical> {
    let (header, csv) = csv_rows(&dir.join(format!("{name}.csv")));
    let (cols, pq) = parquet_rows(&dir.join(format!("{name}.parquet")));
    assert_eq!(header, cols.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), "{name}: columns");
    assert_eq!(csv.len(), pq.len(), "{name}: rows");
    assert!(!csv.is_empty(), "{name}: no rows");
    for (i, (c, p)) in csv.iter().zip(&pq).enumerate() {
        for (j, ((col, ty), (_, field))) in cols.iter().zip(p.get_column_iter()).enumerate() {
            let text = &c[j];
            let at = format!("{name} row {i} column {col}");
            match field {
                Field::Null => assert!(text.is_empty(), "{at}: null in Parquet, `{text}` in CSV"),
                Field::Str(s) => assert_eq!(s, text, "{at}"),
                Field::Long(v) => assert_eq!(v.to_string(), *text, "{at}"),
                Field::Double(v) => {
                    let decimals = text.split('.').nth(1).map_or(0, str::len) as i32;
                    let csv_value: f64 = text.parse().unwrap_or_else(|_| panic!("{at}: `{text}` is not a number"));
                    assert!(
                        (v - csv_value).abs() <= 0.5 * 10f64.powi(-decimals) * (1.0 + 1e-9) + 1e-12,
                        "{at}: {v} vs `{text}`"
                    );
                }
                other => panic!("{at}: unexpected Parquet field {other:?} (type {ty:?})"),
            }
        }
    }
    cols.into_iter().collect()
}

#[test]
fn parquet_tables_hold_the_csv_rows_with_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vllm = fixture("h200-vllm-0.25/decode-eager");
    let torch = fixture("h200-llama-1b/decode");
    ingest(&[torch.to_str().expect("utf-8"), vllm.to_str().expect("utf-8")], dir.path());
    let ops = same_table(dir.path(), "ops");
    let kernels = same_table(dir.path(), "kernels");
    let steps = same_table(dir.path(), "steps");
    // The keys are typed: text names, integer batch sizes; rank is text in every table (`merged` rows).
    for t in [&ops, &kernels, &steps] {
        assert_eq!(t["host"], Physical::BYTE_ARRAY);
        assert_eq!(t["batch_size"], Physical::INT64);
        assert_eq!(t["input_len"], Physical::INT64);
        assert_eq!(t["rank"], Physical::BYTE_ARRAY);
    }
    assert_eq!(ops["mean_us"], Physical::DOUBLE);
    assert_eq!(ops["calls"], Physical::INT64);
    assert_eq!(ops["achieved_gbps"], Physical::DOUBLE);
    assert_eq!(ops["bound"], Physical::BYTE_ARRAY);
    assert_eq!(kernels["p99_us"], Physical::DOUBLE);
    assert_eq!(steps["gpu_time_us"], Physical::DOUBLE);
    assert_eq!(steps["sm_clock_mhz_min"], Physical::INT64);
}

/// The roofline of real H200 decode steps (the fixture's Llama-3.2-1B shape, batch 1): every projection
/// GEMM is memory-bound, with its achieved bandwidth set against the H200's 4800 GB/s.
#[test]
fn decode_gemms_at_batch_1_are_memory_bound_on_the_h200() {
    let dir = tempfile::tempdir().expect("tempdir");
    let torch = fixture("h200-llama-1b/decode");
    ingest(&[torch.to_str().expect("utf-8")], dir.path());
    let (header, rows) = csv_rows(&dir.path().join("roofline.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap_or_else(|| panic!("no column {n}"));
    let mut seen = 0;
    for r in rows.iter().filter(|r| r[col("batch_size")] == "1") {
        let cat = r[col("category")].as_str();
        if !matches!(cat, "kqv_proj" | "o_proj" | "gated_up_proj" | "down_proj") {
            continue;
        }
        seen += 1;
        assert_eq!(r[col("bound")], "memory", "{cat}");
        assert_eq!(r[col("peak_gbps")], "4800", "{cat}");
        let gbps: f64 = r[col("achieved_gbps")].parse().expect("number");
        let intensity: f64 = r[col("arithmetic_intensity")].parse().expect("number");
        // A GEMV with bf16 weights does 2 FLOPs per 2-byte weight: intensity ≈ 1 FLOP/byte.
        assert!((intensity - 1.0).abs() < 0.01, "{cat}: {intensity}");
        assert!(gbps > 100.0 && gbps < 4800.0, "{cat}: {gbps} GB/s");
    }
    assert_eq!(seen, 4, "the four projection categories at batch 1");
    // The op rows carry the same columns: aten::mm at batch 1 is memory-bound.
    let (header, rows) = csv_rows(&dir.path().join("ops.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap_or_else(|| panic!("no column {n}"));
    let mm = rows.iter().find(|r| r[col("batch_size")] == "1" && r[col("name")] == "aten::mm").expect("aten::mm row");
    assert_eq!(mm[col("bound")], "memory");
    assert_eq!(mm[col("dtype")], "bf16");
    // Ops without a FLOP model have empty roofline columns.
    let silu = rows.iter().find(|r| r[col("name")] == "aten::silu").expect("aten::silu row");
    assert!(silu[col("flops_per_call")].is_empty() && silu[col("bound")].is_empty());
}

/// `--peak-gbps` replaces the table's bandwidth.
#[test]
fn peak_overrides_change_the_comparison_not_the_achieved_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let torch = fixture("h200-llama-1b/decode/logs_1");
    ingest(
        &[torch.to_str().expect("utf-8"), "--batch-size", "1", "--peak-gbps", "1000", "--peak-tflops", "10"],
        dir.path(),
    );
    let (header, rows) = csv_rows(&dir.path().join("roofline.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap_or_else(|| panic!("no column {n}"));
    let r = rows.iter().find(|r| r[col("category")] == "gated_up_proj").expect("row");
    assert_eq!((r[col("peak_gbps")].as_str(), r[col("peak_tflops")].as_str()), ("1000", "10.0"));
}

/// `tests/scripts/read_parquet.py` reads the Parquet tables with DuckDB (or pandas) and checks them
/// against the CSVs. Runs where Python has either (`.ci/run` installs DuckDB); says so where not.
#[test]
fn duckdb_or_pandas_read_the_parquet_tables() {
    let has = |m: &str| {
        Command::new("python3").args(["-c", &format!("import {m}")]).output().is_ok_and(|o| o.status.success())
    };
    let readable = has("duckdb") || (has("pandas") && has("pyarrow"));
    if !readable {
        eprintln!("skipped: neither duckdb nor pandas with pyarrow is installed for python3 (pip install duckdb)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let vllm = fixture("h200-vllm-0.25/decode-eager");
    ingest(&[vllm.to_str().expect("utf-8")], dir.path());
    let script = tracefleet_tests::workspace().join("tests/scripts/read_parquet.py");
    let o = Command::new("python3").arg(script).arg(dir.path()).output().expect("python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    for t in ["ops", "kernels", "steps"] {
        assert!(out.contains(&format!("{t}.parquet (")), "{out}");
    }
}
