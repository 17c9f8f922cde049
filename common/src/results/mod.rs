//! Reading a results directory back: the full tables (`steps.csv`, `kernels.csv`, `ops.csv`,
//! `roofline.csv` when present) and `manifest.json`, as the derived outputs (report, latency models, diff)
//! need them.
//!
//! Everything derived is computed from the files, not from the in-memory aggregate, so `coord report DIR`
//! and `coord diff A B` give what a sweep gives at its end, on results copied from anywhere. Columns are
//! found by header name (older results without `tp`/`rank` read as tp 1, rank 0); a missing required
//! column or a value that does not parse is an error naming the file, the line and the column.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::classify::Detail;

/// Why a results directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CSV file is malformed or lacks a column.
    #[error("{path}, line {line}: {message}")]
    Table {
        /// The file.
        path: PathBuf,
        /// 1-based line (1 = the header).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// `steps.csv` is missing: the directory holds no results.
    #[error("{0}: no steps.csv here; is this a results directory (`coord sweep --out`, `coord ingest --out`)?")]
    NotResults(PathBuf),
}

/// Which series a row belongs to, as the tables write it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    /// Host.
    pub host: String,
    /// GPU name.
    pub gpu: String,
    /// `decode`, `prefill` or `unknown`.
    pub mode: String,
    /// Sequences per step.
    pub batch_size: u32,
    /// Prompt length, tokens (0: unknown).
    pub input_len: u32,
    /// Tensor-parallel size.
    pub tp: u32,
    /// Rank (`0`, `1`, ... or `merged`).
    pub rank: String,
}

impl Series {
    /// Tokens per step: the batch size for decode (one new token per sequence), batch × input length
    /// for prefill.
    pub fn tokens(&self) -> u64 {
        if self.mode == "prefill" {
            u64::from(self.batch_size) * u64::from(self.input_len.max(1))
        } else {
            u64::from(self.batch_size)
        }
    }

    /// The series without its batch size: the curve a point of this series lies on.
    pub fn curve(&self) -> Curve {
        Curve {
            host: self.host.clone(),
            gpu: self.gpu.clone(),
            mode: self.mode.clone(),
            input_len: self.input_len,
            tp: self.tp,
            rank: self.rank.clone(),
        }
    }
}

/// A series without its batch size: what one plotted line or one latency model covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Curve {
    /// Host.
    pub host: String,
    /// GPU name.
    pub gpu: String,
    /// Mode.
    pub mode: String,
    /// Input length (prompt tokens; 0: unknown). Prefill curves run over tokens (batch × input length)
    /// and are kept apart per input length, so no two shapes with the same token count share a point.
    pub input_len: u32,
    /// Tensor-parallel size.
    pub tp: u32,
    /// Rank.
    pub rank: String,
}

impl Curve {
    /// A short label: `host · mode` plus `in128`, `tp2 rank merged` where they say something.
    pub fn label(&self) -> String {
        let mut s = format!("{} · {}", self.host, self.mode);
        if self.input_len > 0 {
            s.push_str(&format!(" in{}", self.input_len));
        }
        if self.tp > 1 {
            s.push_str(&format!(" tp{} rank {}", self.tp, self.rank));
        }
        s
    }

    /// What the x axis of this curve is: `batch size` for decode, `tokens` for prefill (batch size x input
    /// length), and `sequences` for prefill of an unknown input length (x is then the batch size: calling
    /// it tokens made every per-token slope L times too large).
    pub fn x_name(&self) -> &'static str {
        match (self.mode.as_str(), self.input_len) {
            ("prefill", 0) => "sequences",
            ("prefill", _) => "tokens",
            _ => "batch size",
        }
    }
}

/// One row of `steps.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Series.
    pub series: Series,
    /// Trace file (relative to the sweep's store).
    pub trace: String,
    /// Step index within the trace.
    pub step: u32,
    /// GPU busy time (union of activities), µs.
    pub gpu_busy_us: f64,
    /// Sum of GPU activity durations, µs.
    pub gpu_time_us: f64,
    /// GPU time per detailed category, µs, in [`Detail::ALL`] order.
    pub detail_us: [f64; 7],
    /// Decoder layers found in the step (0: none found, or tables without the column).
    pub layers: u32,
    /// SM clock range during the step, MHz (None: not recorded).
    pub sm_clock_mhz: Option<(u32, u32)>,
    /// Throttled during the step (None: not recorded).
    pub throttled: Option<bool>,
    /// Throttle reasons as written (empty: none or not recorded).
    pub throttle_reasons: String,
    /// Why the step is left out of its series' GPU statistics (`steps.csv`'s `left_out`: the kind of the
    /// warning that reports it); empty when it counts, and in tables written without the column.
    pub left_out: String,
}

impl StepRecord {
    /// Whether the step counts in its series' GPU statistics (and so in every curve and model made from
    /// the step rows).
    pub fn counted(&self) -> bool {
        self.left_out.is_empty()
    }

    /// GPU time of a coarse category (`attention`, `linear`, `others`), µs.
    pub fn coarse_us(&self, coarse: crate::classify::Coarse) -> f64 {
        Detail::ALL.iter().filter(|d| d.coarse() == coarse).map(|d| self.detail_us[d.index()]).sum()
    }
}

/// One row of `kernels.csv`: a kernel's time per step over the series' steps.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRecord {
    /// Series.
    pub series: Series,
    /// Kernel name.
    pub kernel: String,
    /// Detailed category.
    pub category: String,
    /// Steps the statistics are over.
    pub steps: u64,
    /// Launches over all steps.
    pub calls: u64,
    /// Mean time per step, µs.
    pub mean_us: f64,
    /// Standard deviation of the time per step, µs.
    pub std_us: f64,
}

/// One row of `ops.csv` (device-side rows and CPU ops alike).
#[derive(Debug, Clone, PartialEq)]
pub struct OpRecord {
    /// Series.
    pub series: Series,
    /// Op name.
    pub name: String,
    /// `cpu` or `device`.
    pub side: String,
    /// Calls over all steps.
    pub calls: u64,
    /// Steps.
    pub steps: u64,
    /// Mean device time per step (children included), µs.
    pub mean_us: f64,
    /// Its standard deviation, µs.
    pub std_us: f64,
    /// FLOPs per call by the op's shape model (None: no model or no shapes).
    pub flops_per_call: Option<f64>,
    /// Bytes moved per call by the model.
    pub bytes_per_call: Option<f64>,
    /// Achieved TFLOP/s over the modelled calls.
    pub achieved_tflops: Option<f64>,
    /// Achieved GB/s over the modelled calls.
    pub achieved_gbps: Option<f64>,
    /// `memory` or `compute` (empty: no model).
    pub bound: String,
    /// Data type the op was compared with (`bf16`, `fp32`, `fp8`; empty: no model).
    pub dtype: String,
    /// The compute peak it was compared with, TFLOP/s (None: no model or no known peak).
    pub peak_tflops: Option<f64>,
    /// The bandwidth peak it was compared with, GB/s.
    pub peak_gbps: Option<f64>,
}

/// One row of `roofline.csv`: a detailed category's modelled work per step.
#[derive(Debug, Clone, PartialEq)]
pub struct RooflineRecord {
    /// Series.
    pub series: Series,
    /// Detailed category.
    pub category: String,
    /// FLOPs per step.
    pub flops: f64,
    /// Bytes moved per step.
    pub bytes: f64,
    /// Device time of the modelled ops per step, µs.
    pub time_us: f64,
    /// Achieved TFLOP/s.
    pub achieved_tflops: f64,
    /// Achieved GB/s.
    pub achieved_gbps: f64,
    /// The GPU's peak TFLOP/s used (dense, the ops' data type).
    pub peak_tflops: f64,
    /// The GPU's peak memory bandwidth, GB/s.
    pub peak_gbps: f64,
    /// `memory` or `compute`.
    pub bound: String,
    /// Data type of the ops (`bf16`, `fp32`, `fp8`).
    pub dtype: String,
}

/// A results directory read back.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// The directory.
    pub dir: PathBuf,
    /// Every `steps.csv` row: each rank's, and for tensor-parallel jobs the `merged` rows too
    /// ([`Results::steps_for_curves`] picks one row per step).
    pub steps: Vec<StepRecord>,
    /// `kernels.csv` rows.
    pub kernels: Vec<KernelRecord>,
    /// `ops.csv` rows (empty when the file was left out).
    pub ops: Vec<OpRecord>,
    /// `roofline.csv` rows (empty when absent).
    pub roofline: Vec<RooflineRecord>,
    /// `manifest.json`, when present and valid JSON.
    pub manifest: Option<serde_json::Value>,
}

impl Results {
    /// Reads `dir`. `steps.csv` is required; the other files are read when present.
    ///
    /// Errors: [`ResultsError::NotResults`] without `steps.csv`; [`ResultsError::Table`] for a malformed
    /// row (file, line, column); [`ResultsError::Io`].
    pub fn read(dir: &Path) -> Result<Self, ResultsError> {
        if !dir.exists() {
            return Err(ResultsError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            });
        }
        let steps_path = dir.join("steps.csv");
        if !steps_path.is_file() {
            return Err(ResultsError::NotResults(dir.to_path_buf()));
        }
        let mut r = Results { dir: dir.to_path_buf(), ..Default::default() };
        let details: Vec<String> = Detail::ALL.iter().map(|c| format!("detail_{}_us", c.name())).collect();
        let mut steps_columns = vec!["trace", "step", "gpu_busy_us", "gpu_time_us"];
        steps_columns.extend(details.iter().map(String::as_str));
        read_table(&steps_path, &steps_columns, |row| {
            r.steps.push(StepRecord {
                series: row.series()?,
                trace: row.str("trace")?.to_string(),
                step: row.num("step")?,
                gpu_busy_us: row.value("gpu_busy_us")?,
                gpu_time_us: row.value("gpu_time_us")?,
                detail_us: {
                    let mut d = [0f64; 7];
                    for c in Detail::ALL {
                        d[c.index()] = row.value(&format!("detail_{}_us", c.name()))?;
                    }
                    d
                },
                layers: row.opt_num("layers")?.unwrap_or(0),
                sm_clock_mhz: match (row.opt_num::<u32>("sm_clock_mhz_min")?, row.opt_num::<u32>("sm_clock_mhz_max")?) {
                    (Some(a), Some(b)) => Some((a, b)),
                    _ => None,
                },
                throttled: row.opt_num::<u8>("throttled")?.map(|v| v != 0),
                throttle_reasons: row.opt_str("throttle_reasons").to_string(),
                left_out: row.opt_str("left_out").to_string(),
            });
            Ok(())
        })?;
        let kernels_path = dir.join("kernels.csv");
        if kernels_path.is_file() {
            read_table(&kernels_path, &["kernel", "category", "steps", "calls", "mean_us", "std_us"], |row| {
                r.kernels.push(KernelRecord {
                    series: row.series()?,
                    kernel: row.str("kernel")?.to_string(),
                    category: row.str("category")?.to_string(),
                    steps: row.num("steps")?,
                    calls: row.num("calls")?,
                    mean_us: row.value("mean_us")?,
                    std_us: row.value("std_us")?,
                });
                Ok(())
            })?;
        }
        let ops_path = dir.join("ops.csv");
        if ops_path.is_file() {
            read_table(&ops_path, &["name", "side", "calls", "steps", "mean_us", "std_us"], |row| {
                r.ops.push(OpRecord {
                    series: row.series()?,
                    name: row.str("name")?.to_string(),
                    side: row.str("side")?.to_string(),
                    calls: row.num("calls")?,
                    steps: row.num("steps")?,
                    mean_us: row.value("mean_us")?,
                    std_us: row.value("std_us")?,
                    flops_per_call: row.opt_value("flops_per_call")?,
                    bytes_per_call: row.opt_value("bytes_per_call")?,
                    achieved_tflops: row.opt_value("achieved_tflops")?,
                    achieved_gbps: row.opt_value("achieved_gbps")?,
                    bound: row.opt_str("bound").to_string(),
                    dtype: row.opt_str("dtype").to_string(),
                    peak_tflops: row.opt_value("peak_tflops")?,
                    peak_gbps: row.opt_value("peak_gbps")?,
                });
                Ok(())
            })?;
        }
        let roofline_path = dir.join("roofline.csv");
        if roofline_path.is_file() {
            let columns = ["category", "flops_per_step", "bytes_per_step", "time_us_per_step"];
            read_table(&roofline_path, &columns, |row| {
                r.roofline.push(RooflineRecord {
                    series: row.series()?,
                    category: row.str("category")?.to_string(),
                    flops: row.value("flops_per_step")?,
                    bytes: row.value("bytes_per_step")?,
                    time_us: row.value("time_us_per_step")?,
                    achieved_tflops: row.opt_value("achieved_tflops")?.unwrap_or(0.0),
                    achieved_gbps: row.opt_value("achieved_gbps")?.unwrap_or(0.0),
                    // Empty for a GPU without known peaks.
                    peak_tflops: row.opt_value("peak_tflops")?.unwrap_or(0.0),
                    peak_gbps: row.opt_value("peak_gbps")?.unwrap_or(0.0),
                    bound: row.opt_str("bound").to_string(),
                    dtype: row.opt_str("dtype").to_string(),
                });
                Ok(())
            })?;
        }
        let manifest = dir.join("manifest.json");
        match fs::read_to_string(&manifest) {
            Ok(text) => {
                let v = serde_json::from_str(&text).map_err(|e| ResultsError::Table {
                    path: manifest.clone(),
                    line: e.line() as u64,
                    message: format!("not valid JSON: {e}"),
                })?;
                r.manifest = Some(v);
            }
            // Results from `coord ingest` have no manifest.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ResultsError::Io { path: manifest, source }),
        }
        Ok(r)
    }

    /// Sets the roofline rows and the ops' `bound` against other peaks (`coord report --peak-tflops
    /// --peak-gbps`): the achieved values stay, the peaks and what bounds each op are worked out again.
    /// Rows whose GPU has no known peak and no override keep what the tables said.
    pub fn with_peaks(&mut self, peaks: &crate::roofline::PeakOverride) {
        use crate::roofline::DType;
        let dtype = |s: &str| match s {
            "fp32" => DType::Fp32,
            "fp8" => DType::Fp8,
            _ => DType::Bf16,
        };
        let assess = |gpu: &str, dt: &str, intensity: f64| {
            let p = peaks.resolve(gpu)?;
            let t = p.tflops(dtype(dt))?;
            let bound = if intensity < t * 1e3 / p.gbps { "memory" } else { "compute" };
            Some((t, p.gbps, bound.to_string()))
        };
        for r in &mut self.roofline {
            let intensity = if r.bytes > 0.0 { r.flops / r.bytes } else { 0.0 };
            if let Some((t, g, b)) = assess(&r.series.gpu, &r.dtype, intensity) {
                (r.peak_tflops, r.peak_gbps, r.bound) = (t, g, b);
            }
        }
        for o in &mut self.ops {
            let (Some(f), Some(b)) = (o.flops_per_call, o.bytes_per_call) else { continue };
            if b > 0.0
                && let Some((t, g, bound)) = assess(&o.series.gpu, &o.dtype, f / b)
            {
                (o.peak_tflops, o.peak_gbps, o.bound) = (Some(t), Some(g), bound);
            }
        }
    }

    /// The step rows that stand for one step of their series: single-rank rows, and for tensor-parallel
    /// jobs the `merged` rows (the slowest rank's view) instead of each rank's; rows left out of their
    /// series' GPU statistics ([`StepRecord::counted`]) are not among them, as in the seed tables.
    pub fn steps_for_curves(&self) -> impl Iterator<Item = &StepRecord> {
        self.steps.iter().filter(|s| s.counted() && if s.series.tp > 1 { s.series.rank == "merged" } else { true })
    }

    /// The curves of the results, in order.
    pub fn curves(&self) -> Vec<Curve> {
        let mut c: Vec<Curve> = self.steps_for_curves().map(|s| s.series.curve()).collect();
        c.sort();
        c.dedup();
        c
    }

    /// Per curve and x (batch size or tokens), the step rows of that point.
    pub fn points(&self) -> BTreeMap<Curve, BTreeMap<u64, Vec<&StepRecord>>> {
        let mut out: BTreeMap<Curve, BTreeMap<u64, Vec<&StepRecord>>> = BTreeMap::new();
        for s in self.steps_for_curves() {
            out.entry(s.series.curve()).or_default().entry(s.series.tokens()).or_default().push(s);
        }
        out
    }
}

/// One CSV row with its header, for reading columns by name with errors that say where.
pub struct Row<'a> {
    path: &'a Path,
    line: u64,
    headers: &'a BTreeMap<String, usize>,
    record: &'a csv::StringRecord,
}

impl Row<'_> {
    fn err(&self, message: String) -> ResultsError {
        ResultsError::Table { path: self.path.to_path_buf(), line: self.line, message }
    }

    /// The text of a required column.
    pub fn str(&self, col: &str) -> Result<&str, ResultsError> {
        let i = *self.headers.get(col).ok_or_else(|| ResultsError::Table {
            path: self.path.to_path_buf(),
            line: 1,
            message: format!("no column `{col}` in the header"),
        })?;
        self.record.get(i).ok_or_else(|| self.err(format!("the row has no field for column `{col}`")))
    }

    /// The text of an optional column (empty when the column is absent).
    pub fn opt_str(&self, col: &str) -> &str {
        self.headers.get(col).and_then(|&i| self.record.get(i)).unwrap_or("")
    }

    /// A required number.
    pub fn num<T: std::str::FromStr>(&self, col: &str) -> Result<T, ResultsError> {
        let v = self.str(col)?;
        v.trim().parse().map_err(|_| self.err(format!("column `{col}`: `{v}` is not a number of its type")))
    }

    /// A required measurement (time, count of FLOPs or bytes, rate): a finite number ≥ 0. An infinite,
    /// NaN or negative value is refused here: it would poison every mean, fit and plot axis after it.
    pub fn value(&self, col: &str) -> Result<f64, ResultsError> {
        let v: f64 = self.num(col)?;
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(self.err(format!("column `{col}`: `{}` is not a finite number >= 0", self.str(col)?)))
        }
    }

    /// An optional measurement: None when absent or empty, else as [`Row::value`].
    pub fn opt_value(&self, col: &str) -> Result<Option<f64>, ResultsError> {
        if self.opt_str(col).trim().is_empty() { Ok(None) } else { self.value(col).map(Some) }
    }

    /// An optional number: None when the column is absent or the field empty.
    pub fn opt_num<T: std::str::FromStr>(&self, col: &str) -> Result<Option<T>, ResultsError> {
        let v = self.opt_str(col).trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| self.err(format!("column `{col}`: `{v}` is not a number of its type")))
    }

    /// The series columns (`tp` and `rank` optional: tables written before tensor parallelism).
    pub fn series(&self) -> Result<Series, ResultsError> {
        Ok(Series {
            host: self.str("host")?.to_string(),
            gpu: self.str("gpu")?.to_string(),
            mode: self.str("mode")?.to_string(),
            batch_size: self.num("batch_size")?,
            input_len: self.num("input_len")?,
            tp: self.opt_num("tp")?.unwrap_or(1),
            rank: match self.opt_str("rank") {
                "" => "0".to_string(),
                r => r.to_string(),
            },
        })
    }
}

/// The series columns every table has ([`Row::series`]; `tp` and `rank` are optional).
const SERIES_COLUMNS: [&str; 5] = ["host", "gpu", "mode", "batch_size", "input_len"];

/// Calls `f` on every data row of the CSV file at `path`, after checking that its header has the series
/// columns and `required`: a table cut inside its header, or of another kind, is refused even when it
/// has no row (it was read as a table with nothing in it).
pub fn read_table(
    path: &Path,
    required: &[&str],
    mut f: impl FnMut(&Row<'_>) -> Result<(), ResultsError>,
) -> Result<(), ResultsError> {
    let io = |source| ResultsError::Io { path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(io)?;
    let mut rd = csv::ReaderBuilder::new().from_reader(std::io::BufReader::new(file));
    let table =
        |line: u64, e: csv::Error| ResultsError::Table { path: path.to_path_buf(), line, message: e.to_string() };
    let headers: BTreeMap<String, usize> =
        rd.headers().map_err(|e| table(1, e))?.iter().enumerate().map(|(i, h)| (h.to_string(), i)).collect();
    if let Some(col) = SERIES_COLUMNS.iter().chain(required).find(|c| !headers.contains_key(**c)) {
        return Err(ResultsError::Table {
            path: path.to_path_buf(),
            line: 1,
            message: format!("no column `{col}` in the header"),
        });
    }
    let mut record = csv::StringRecord::new();
    let mut line = 1;
    loop {
        line += 1;
        match rd.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => f(&Row { path, line, headers: &headers, record: &record })?,
            Err(e) => return Err(table(line, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_committed_h200_results() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results/h200-vllm/decode");
        let r = Results::read(&dir).expect("readable");
        assert_eq!(r.steps.len(), 48);
        assert_eq!(r.curves().len(), 1);
        let points = r.points();
        let (_, by_x) = points.iter().next().expect("one curve");
        assert_eq!(
            by_x.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256]
        );
        assert!(by_x.values().all(|v| v.len() == 3));
        assert!(!r.kernels.is_empty() && !r.ops.is_empty());
        assert!(r.manifest.is_some());
    }

    #[test]
    fn infinite_nan_and_negative_times_are_refused() {
        for bad in ["inf", "1e400", "NaN", "-500"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut d = String::from("host,gpu,mode,batch_size,input_len,trace,step,gpu_busy_us,gpu_time_us");
            for c in Detail::ALL {
                d.push_str(&format!(",detail_{}_us", c.name()));
            }
            d.push_str(&format!("\nh,g,decode,1,128,t,0,1,{bad},1,1,1,1,1,1,1\n"));
            fs::write(dir.path().join("steps.csv"), d).expect("write");
            let e = Results::read(dir.path()).expect_err(bad).to_string();
            assert!(e.contains("line 2") && e.contains("`gpu_time_us`") && e.contains("finite number >= 0"), "{e}");
        }
    }

    /// A steps.csv header with every required column, then `rows`.
    fn steps_csv(rows: &str) -> String {
        let mut d = String::from("host,gpu,mode,batch_size,input_len,trace,step,gpu_busy_us,gpu_time_us");
        for c in Detail::ALL {
            d.push_str(&format!(",detail_{}_us", c.name()));
        }
        format!("{d}\n{rows}")
    }

    #[test]
    fn a_bad_number_names_the_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("steps.csv"), steps_csv("h,g,decode,x1,128,t,0,1,1,1,1,1,1,1,1,1\n")).expect("write");
        let e = Results::read(dir.path()).expect_err("bad batch size").to_string();
        assert!(e.contains("steps.csv, line 2") && e.contains("`batch_size`") && e.contains("x1"), "{e}");
    }

    #[test]
    fn a_table_cut_inside_its_header_is_refused_even_without_rows() {
        // The first 600 bytes of a real steps.csv: a header that ends inside the detail columns. It was read
        // as a table of no rows (a report of nothing, exit 0).
        let full = steps_csv("");
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("steps.csv"), &full[..full.find("detail_rope").expect("column") + 6]).expect("write");
        let e = Results::read(dir.path()).expect_err("cut header").to_string();
        assert!(e.contains("steps.csv, line 1") && e.contains("no column `detail_rope_us` in the header"), "{e}");
        // The whole header and no row: nothing wrong with it.
        fs::write(dir.path().join("steps.csv"), &full).expect("write");
        assert!(Results::read(dir.path()).expect("a header alone").steps.is_empty());
        // Another table's header where kernels.csv should be.
        fs::write(dir.path().join("kernels.csv"), "host,gpu,mode,batch_size,input_len,name\n").expect("write");
        let e = Results::read(dir.path()).expect_err("not kernels").to_string();
        assert!(e.contains("kernels.csv, line 1") && e.contains("no column `kernel`"), "{e}");
    }
}
