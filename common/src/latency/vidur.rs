//! The measured per-point times as Vidur profiling CSVs, so a simulator that reads Vidur's
//! `data/profiling/compute/<gpu>/<model>/{mlp,attention}.csv` can run on what a sweep measured.
//!
//! [`write_vidur`] writes `DIR/vidur/mlp.csv` and `DIR/vidur/attention.csv`.
//!
//! **Times** are `time_stats.<op>.{min,max,mean,median,std}` in **milliseconds per decoder layer**, over
//! the steps of the point: each step's category time (µs per step) is divided by 1000 and by the step's
//! layer count (`layers` in `steps.csv`), because Vidur times one layer's op and multiplies by the number
//! of layers itself. When `steps.csv` gives no layer count (older tables, or `layers` 0) the divisor is 1
//! and the times are per step; the `num_layers` column says which divisor was used. `std` is the
//! population standard deviation (as numpy's default, which Vidur's profiler uses); `median` of an even
//! count is the mean of the middle two.
//!
//! **Op names**: `kqv_proj` → `attn_pre_proj`, `rope` → `attn_rope`, `o_proj` → `attn_post_proj`,
//! `gated_up_proj` → `mlp_up_proj`, `down_proj` → `mlp_down_proj`, `others` → `others` (not a Vidur op:
//! everything else of the step, see below), `paged_attention` → `attn_decode` on decode rows and
//! `attn_prefill` on prefill rows (the other left empty).
//!
//! **`mlp.csv`**: one row per curve and `num_tokens` (the x of [`Results::points`]: batch size for decode,
//! batch × input length for prefill). Columns: the stats of `attn_pre_proj`, `attn_rope`,
//! `attn_post_proj`, `mlp_up_proj`, `mlp_down_proj`, `others`; then `num_tokens`,
//! `num_tensor_parallel_workers` (tp), and, beyond Vidur's columns, `num_layers`, `steps` (steps the
//! statistics are over), `host`, `gpu`, `mode`, `input_len`, `rank`.
//!
//! **`attention.csv`**: one row per curve, batch size and context: decode rows have `batch_size`,
//! `kv_cache_size` = input length (the prompt already in the cache), `prefill_chunk_size` 0,
//! `is_prefill` `False`; prefill rows have `batch_size`, `kv_cache_size` 0, `prefill_chunk_size` = input
//! length, `is_prefill` `True`; where the input length is unknown (`input_len` 0: no path part, flag or
//! vLLM prefill step name said it), the decode rows' `kv_cache_size` and the prefill rows'
//! `prefill_chunk_size` are empty, not 0 (a simulator would read an empty cache). Columns: the stats of `attn_prefill` and `attn_decode`, then
//! `batch_size`, `kv_cache_size`, `prefill_chunk_size`, `is_prefill`, `num_tensor_parallel_workers`,
//! `num_layers`, `steps`, `host`, `gpu`, `mode`, `rank`.
//!
//! **Left out**: the model-shape columns Vidur filters rows on (`n_head`/`n_q_head`, `n_kv_head`,
//! `n_embd`, `n_expanded_embd`, `vocab_size`, `use_gated_mlp`, `block_size`, `max_model_len`,
//! `attention_backend`): the traces do not carry them; add them for the model profiled before handing the
//! files to Vidur. Ops our categories do not separate: `emb`, `input_layernorm`,
//! `post_attention_layernorm`, `mlp_act`, `add` (all inside `others`) and `attn_kv_cache_save`; Vidur
//! fills the layernorms, `add` and `attn_kv_cache_save` with 0 when absent, but needs `mlp_act`. The decode
//! context grows by one token per step past the prompt; `kv_cache_size` gives the prompt length only.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::classify::Detail;
use crate::results::{Curve, Results, Series, StepRecord};

/// The folder (under the directory given) the CSVs are written to.
pub const VIDUR_DIR: &str = "vidur";

/// The statistics written per op, in column order.
pub const STATS: [&str; 5] = ["min", "max", "mean", "median", "std"];

/// `mlp.csv`'s ops: (Vidur op name, our detailed category), in column order.
pub const MLP_OPS: [(&str, Detail); 6] = [
    ("attn_pre_proj", Detail::KqvProj),
    ("attn_rope", Detail::Rope),
    ("attn_post_proj", Detail::OProj),
    ("mlp_up_proj", Detail::GatedUpProj),
    ("mlp_down_proj", Detail::DownProj),
    ("others", Detail::Others),
];

/// `attention.csv`'s ops, in column order (both from `paged_attention`, by the row's mode).
pub const ATTENTION_OPS: [&str; 2] = ["attn_prefill", "attn_decode"];

/// Writes `dir/vidur/mlp.csv` and `dir/vidur/attention.csv` from `results` (layout in the module doc);
/// returns their paths.
pub fn write_vidur(dir: &Path, results: &Results) -> std::io::Result<Vec<PathBuf>> {
    let out = dir.join(VIDUR_DIR);
    fs::create_dir_all(&out)?;
    let layers = layer_counts(results);
    let mlp = out.join("mlp.csv");
    write_mlp(&mlp, results, &layers)?;
    let attention = out.join("attention.csv");
    write_attention(&attention, results, &layers)?;
    Ok(vec![mlp, attention])
}

/// `mlp.csv`'s header.
pub fn mlp_header() -> Vec<String> {
    let mut h = stat_columns(MLP_OPS.iter().map(|o| o.0));
    h.extend(
        [
            "num_tokens",
            "num_tensor_parallel_workers",
            "num_layers",
            "steps",
            "host",
            "gpu",
            "mode",
            "input_len",
            "rank",
        ]
        .map(String::from),
    );
    h
}

/// `attention.csv`'s header.
pub fn attention_header() -> Vec<String> {
    let mut h = stat_columns(ATTENTION_OPS.iter().copied());
    h.extend(
        [
            "batch_size",
            "kv_cache_size",
            "prefill_chunk_size",
            "is_prefill",
            "num_tensor_parallel_workers",
            "num_layers",
            "steps",
            "host",
            "gpu",
            "mode",
            "rank",
        ]
        .map(String::from),
    );
    h
}

fn stat_columns<'a>(ops: impl Iterator<Item = &'a str>) -> Vec<String> {
    ops.flat_map(|op| STATS.iter().map(move |s| format!("time_stats.{op}.{s}"))).collect()
}

/// A step's identity in `steps.csv`.
type StepKey = (Series, String, u32);

/// The `layers` of every step row (read with the tables, so a sweep's derived outputs see the steps
/// being written, not a directory that does not exist yet).
fn layer_counts(results: &Results) -> BTreeMap<StepKey, u32> {
    results.steps.iter().map(|s| ((s.series.clone(), s.trace.clone(), s.step), s.layers)).collect()
}

/// The divisor for a step: its layer count, 1 when unknown or 0.
fn divisor(layers: &BTreeMap<StepKey, u32>, s: &StepRecord) -> u32 {
    match layers.get(&(s.series.clone(), s.trace.clone(), s.step)) {
        Some(&n) if n > 0 => n,
        _ => 1,
    }
}

/// The divisor of a point's steps as written in `num_layers` (empty when the steps disagree).
fn layers_column(layers: &BTreeMap<StepKey, u32>, steps: &[&StepRecord]) -> String {
    let mut d = steps.iter().map(|s| divisor(layers, s));
    match d.next() {
        Some(first) if d.all(|n| n == first) => first.to_string(),
        _ => String::new(),
    }
}

/// min, max, mean, median, std (population) of `v`, in [`STATS`] order; empty fields without values.
fn stats(v: &[f64]) -> [String; 5] {
    if v.is_empty() {
        return Default::default();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let mean = s.iter().sum::<f64>() / n as f64;
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    let std = (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    [s[0], s[n - 1], mean, median, std].map(|x| x.to_string())
}

/// One category's time per layer, ms, for each step.
fn per_layer_ms(layers: &BTreeMap<StepKey, u32>, steps: &[&StepRecord], d: Detail) -> Vec<f64> {
    steps.iter().map(|s| s.detail_us[d.index()] / 1000.0 / f64::from(divisor(layers, s))).collect()
}

fn write_mlp(path: &Path, results: &Results, layers: &BTreeMap<StepKey, u32>) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(mlp_header())?;
    for (curve, by_x) in results.points() {
        for (x, steps) in by_x {
            let mut row: Vec<String> =
                MLP_OPS.iter().flat_map(|&(_, d)| stats(&per_layer_ms(layers, &steps, d))).collect();
            row.extend([
                x.to_string(),
                curve.tp.to_string(),
                layers_column(layers, &steps),
                steps.len().to_string(),
                curve.host.clone(),
                curve.gpu.clone(),
                curve.mode.clone(),
                curve.input_len.to_string(),
                curve.rank.clone(),
            ]);
            w.write_record(&row)?;
        }
    }
    w.flush()
}

fn write_attention(path: &Path, results: &Results, layers: &BTreeMap<StepKey, u32>) -> std::io::Result<()> {
    // Grouped by series rather than by x: a prefill point of n tokens can hold several (batch, input
    // length) pairs, which are different attention shapes.
    let mut groups: BTreeMap<(Curve, u32, u32), Vec<&StepRecord>> = BTreeMap::new();
    for s in results.steps_for_curves() {
        groups.entry((s.series.curve(), s.series.batch_size, s.series.input_len)).or_default().push(s);
    }
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(attention_header())?;
    for ((curve, batch_size, input_len), steps) in groups {
        let prefill = curve.mode == "prefill";
        let attn = stats(&per_layer_ms(layers, &steps, Detail::PagedAttention));
        let empty: [String; 5] = Default::default();
        let (pre, dec) = if prefill { (attn, empty) } else { (empty, attn) };
        let mut row: Vec<String> = pre.into_iter().chain(dec).collect();
        // An unknown input length (0) is not a context of 0 tokens: the field it sets is left empty.
        let known = |n: u32| if input_len == 0 { String::new() } else { n.to_string() };
        let (kv_cache_size, chunk) =
            if prefill { ("0".to_string(), known(input_len)) } else { (known(input_len), "0".to_string()) };
        row.extend([
            batch_size.to_string(),
            kv_cache_size,
            chunk,
            if prefill { "True" } else { "False" }.to_string(),
            curve.tp.to_string(),
            layers_column(layers, &steps),
            steps.len().to_string(),
            curve.host.clone(),
            curve.gpu.clone(),
            curve.mode.clone(),
            curve.rank.clone(),
        ]);
        w.write_record(&row)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(path: &str) -> Results {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results").join(path);
        Results::read(&dir).expect("committed results")
    }

    fn read_csv(path: &Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
        let mut rd = csv::Reader::from_path(path).expect("csv written");
        let header: Vec<String> = rd.headers().expect("header").iter().map(String::from).collect();
        let rows = rd
            .records()
            .map(|r| header.iter().cloned().zip(r.expect("row").iter().map(String::from)).collect())
            .collect();
        (header, rows)
    }

    fn num(row: &BTreeMap<String, String>, col: &str) -> f64 {
        row.get(col).unwrap_or_else(|| panic!("column {col}")).parse().unwrap_or_else(|_| panic!("{col} a number"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-9)
    }

    #[test]
    fn vidur_csvs_hold_the_steps_means_per_layer() {
        for path in ["h200-vllm/decode", "h200-vllm/prefill", "h200/decode", "h200/prefill"] {
            let results = committed(path);
            let out = tempfile::tempdir().expect("tempdir");
            let files = write_vidur(out.path(), &results).expect("written");
            assert_eq!(files, vec![out.path().join("vidur/mlp.csv"), out.path().join("vidur/attention.csv")]);
            let points = results.points();
            let n_points: usize = points.values().map(|by_x| by_x.len()).sum();

            let (header, rows) = read_csv(&files[0]);
            assert_eq!(header, mlp_header());
            assert_eq!(header[0], "time_stats.attn_pre_proj.min");
            assert!(header.contains(&"num_tokens".to_string()));
            assert_eq!(rows.len(), n_points, "{path}: one mlp row per point");
            for ((curve, by_x), row) in points.iter().flat_map(|(c, b)| b.iter().map(move |p| (c, p))).zip(&rows) {
                let (x, steps) = by_x;
                assert_eq!(num(row, "num_tokens"), *x as f64);
                assert_eq!(num(row, "num_tensor_parallel_workers"), f64::from(curve.tp));
                // Every committed step was recorded with its 16 decoder layers.
                assert_eq!(num(row, "num_layers"), 16.0, "{path}");
                assert_eq!(num(row, "steps"), steps.len() as f64);
                for (op, d) in MLP_OPS {
                    let mean_us = steps.iter().map(|s| s.detail_us[d.index()]).sum::<f64>() / steps.len() as f64;
                    let got = num(row, &format!("time_stats.{op}.mean"));
                    assert!(close(got, mean_us / 1000.0 / 16.0), "{path} x {x} {op}: {got} vs {mean_us} µs");
                    let (lo, hi) =
                        (num(row, &format!("time_stats.{op}.min")), num(row, &format!("time_stats.{op}.max")));
                    let med = num(row, &format!("time_stats.{op}.median"));
                    assert!(lo <= got && got <= hi && lo <= med && med <= hi);
                }
            }

            let (header, rows) = read_csv(&files[1]);
            assert_eq!(header, attention_header());
            // The committed sweeps have one input length per curve: one attention row per point too.
            assert_eq!(rows.len(), n_points, "{path}: one attention row per point");
            let prefill = path.ends_with("prefill");
            for row in &rows {
                let steps: Vec<&StepRecord> = results
                    .steps_for_curves()
                    .filter(|s| f64::from(s.series.batch_size) == num(row, "batch_size"))
                    .collect();
                let mean_us =
                    steps.iter().map(|s| s.detail_us[Detail::PagedAttention.index()]).sum::<f64>() / steps.len() as f64;
                let (op, other) =
                    if prefill { ("attn_prefill", "attn_decode") } else { ("attn_decode", "attn_prefill") };
                assert!(close(num(row, &format!("time_stats.{op}.mean")), mean_us / 1000.0 / 16.0), "{path}");
                assert_eq!(row[&format!("time_stats.{other}.mean")], "");
                assert_eq!(row["is_prefill"], if prefill { "True" } else { "False" });
                let input_len = f64::from(steps[0].series.input_len);
                let (kv, chunk) = if prefill { (0.0, input_len) } else { (input_len, 0.0) };
                assert_eq!((num(row, "kv_cache_size"), num(row, "prefill_chunk_size")), (kv, chunk));
            }
        }
    }

    #[test]
    fn without_a_layer_count_times_stay_per_step() {
        // Tables without layer counts (older ones, or steps where no decoder layer was found).
        let mut results = committed("h200-vllm/prefill");
        for s in &mut results.steps {
            s.layers = 0;
        }
        let out = tempfile::tempdir().expect("tempdir");
        let files = write_vidur(out.path(), &results).expect("written");
        let (_, rows) = read_csv(&files[0]);
        let steps = &results.points().into_values().next().expect("a curve").into_values().next().expect("a point");
        let mean_us = steps.iter().map(|s| s.detail_us[Detail::KqvProj.index()]).sum::<f64>() / steps.len() as f64;
        assert_eq!(num(&rows[0], "num_layers"), 1.0);
        assert!(close(num(&rows[0], "time_stats.attn_pre_proj.mean"), mean_us / 1000.0));
    }

    #[test]
    fn an_unknown_input_length_leaves_the_context_empty_not_zero() {
        // vLLM decode traces say no prompt length: the rows' kv_cache_size is unknown, not an empty cache.
        for path in ["h200-vllm/decode", "h200-vllm/prefill"] {
            let mut results = committed(path);
            for s in &mut results.steps {
                s.series.input_len = 0;
            }
            let out = tempfile::tempdir().expect("tempdir");
            let files = write_vidur(out.path(), &results).expect("written");
            let (_, rows) = read_csv(&files[1]);
            assert!(!rows.is_empty());
            for row in &rows {
                let (unknown, zero) = if row["is_prefill"] == "True" {
                    ("prefill_chunk_size", "kv_cache_size")
                } else {
                    ("kv_cache_size", "prefill_chunk_size")
                };
                assert_eq!((row[unknown].as_str(), row[zero].as_str()), ("", "0"), "{path}");
            }
        }
    }

    #[test]
    fn stats_match_numpy_conventions() {
        let s = stats(&[1.0, 4.0, 2.0, 3.0]);
        assert_eq!(s, ["1", "4", "2.5", "2.5", &(1.25f64).sqrt().to_string()].map(String::from));
        assert_eq!(stats(&[]), <[String; 5]>::default());
    }
}
