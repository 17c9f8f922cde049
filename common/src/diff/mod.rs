//! Comparing two results directories (`coord diff A B`): per category and per kernel, the change of the
//! GPU time per step from A to B at every batch size (tokens for prefill), with its noise and whether it
//! is significant.
//!
//! A change is **significant** when all three hold:
//! - Welch's t-test on the steps of the point gives a Holm-adjusted p-value below `alpha`: Holm over the
//!   rows of the comparison (categories and kernels together) whose change passes the two size thresholds
//!   below, since with hundreds of rows some raw p-values are small by chance. Rows too small to count
//!   are left out of the correction: they can never be significant, and counting hundreds of unchanged
//!   kernels would leave a t-test over 3 steps no power for the rows that did change;
//! - `|change_pct| >= min_change_pct`: two runs of the same sweep on a real GPU differ systematically by
//!   a few percent (clocks, temperature, neighbours), which a t-test over 3 steps reads as real;
//! - `|change_us| >= min_change_us`: a relative change of a tiny kernel is no effect on the step.
//!
//! Curves are matched by (mode, input length, tensor-parallel size, rank), and also by host and GPU
//! unless each side holds a single machine: then the two machines are compared with each other whatever
//! their names (the comparison says so). A point (curve and x) present on one side only is listed, never
//! dropped. A kernel present on one side only is a row with the other side empty: it appeared or
//! disappeared, and is tested against 0 µs in each of the other side's steps.
//!
//! - [`welch`]: the t-test from summary statistics and Holm's correction.
//! - [`text`]: the aligned text table; [`page`]: `diff.html` with plots.

mod compare;
pub mod page;
pub mod text;
pub mod welch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Serialize;

use crate::classify::{Coarse, Detail};

pub use compare::compare;

/// Why a comparison could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// An option is out of its range.
    #[error("{name} = {value}: {why}")]
    Option {
        /// The option (as the command line spells it).
        name: &'static str,
        /// The value given.
        value: f64,
        /// The range it must be in.
        why: &'static str,
    },
    /// A plot could not be drawn.
    #[error("drawing the plot `{plot}`: {message}")]
    Plot {
        /// Which plot.
        plot: String,
        /// The plotting backend's error.
        message: String,
    },
}

/// Thresholds of significance (see the module documentation for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DiffOptions {
    /// Family-wise error rate: a row is significant only if its Holm-adjusted p-value is below this.
    pub alpha: f64,
    /// Smallest relative change that counts, percent of A's mean.
    pub min_change_pct: f64,
    /// Smallest absolute change that counts, µs per step.
    pub min_change_us: f64,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions { alpha: 0.01, min_change_pct: 5.0, min_change_us: 1.0 }
    }
}

impl DiffOptions {
    /// Checks the ranges: `alpha` in (0, 1), the two minimum changes finite and not negative.
    pub fn validate(&self) -> Result<(), DiffError> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(DiffError::Option { name: "--alpha", value: self.alpha, why: "must be above 0 and below 1" });
        }
        for (name, value) in [("--min-change-pct", self.min_change_pct), ("--min-change-us", self.min_change_us)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(DiffError::Option { name, value, why: "must be a number >= 0" });
            }
        }
        Ok(())
    }
}

/// What a row measures.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// GPU time of a detailed category per step.
    Detail(Detail),
    /// GPU time of a coarse category per step.
    Coarse(Coarse),
    /// Whole-step GPU time (`gpu_time_us`: the sum of the step's GPU activity durations).
    GpuTime,
    /// One kernel's time per step (`kernels.csv`; statistics over the steps it ran in).
    Kernel {
        /// Kernel name.
        name: String,
        /// Its detailed category (or `collective`).
        category: String,
    },
}

impl Metric {
    /// `detail`, `coarse`, `step` or `kernel`.
    pub fn kind(&self) -> &'static str {
        match self {
            Metric::Detail(_) => "detail",
            Metric::Coarse(_) => "coarse",
            Metric::GpuTime => "step",
            Metric::Kernel { .. } => "kernel",
        }
    }

    /// The category's name, `gpu_time`, or the kernel's name.
    pub fn name(&self) -> &str {
        match self {
            Metric::Detail(d) => d.name(),
            Metric::Coarse(c) => c.name(),
            Metric::GpuTime => "gpu_time",
            Metric::Kernel { name, .. } => name,
        }
    }

    /// The detailed category a kernel belongs to (empty for the other metrics).
    pub fn category(&self) -> &str {
        match self {
            Metric::Kernel { category, .. } => category,
            _ => "",
        }
    }

    /// A label for people: `paged_attention (detailed)`, `attention (coarse)`, `gpu_time (whole step)`,
    /// `kernel NAME [category]`.
    pub fn label(&self) -> String {
        match self {
            Metric::Detail(d) => format!("{} (detailed)", d.name()),
            Metric::Coarse(c) => format!("{} (coarse)", c.name()),
            Metric::GpuTime => "gpu_time (whole step)".to_string(),
            Metric::Kernel { name, category } => format!("kernel {name} [{category}]"),
        }
    }
}

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct M<'a> {
            kind: &'a str,
            name: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            category: &'a str,
        }
        M { kind: self.kind(), name: self.name(), category: self.category() }.serialize(s)
    }
}

/// Whether a row's metric is on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// On both sides.
    Both,
    /// Only in B (a kernel B runs and A does not).
    Appeared,
    /// Only in A.
    Disappeared,
}

/// One metric at one point (curve and x) compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Batch size (decode) or tokens (prefill).
    pub x: u64,
    /// On both sides, or appeared / disappeared.
    pub presence: Presence,
    /// A's mean, µs per step (None: absent in A).
    pub mean_a: Option<f64>,
    /// B's mean, µs per step (None: absent in B).
    pub mean_b: Option<f64>,
    /// A's sample standard deviation over steps, µs.
    pub std_a: Option<f64>,
    /// B's sample standard deviation over steps, µs.
    pub std_b: Option<f64>,
    /// A's steps (0: absent).
    pub n_a: u64,
    /// B's steps (0: absent).
    pub n_b: u64,
    /// B − A, µs per step (an absent side counts as 0).
    pub change_us: f64,
    /// B − A in percent of A (None: A is 0 or absent).
    pub change_pct: Option<f64>,
    /// Welch's t statistic of B − A (None: not tested, a side has fewer than 2 steps).
    pub t: Option<f64>,
    /// Two-sided p-value of Welch's t-test.
    pub p: Option<f64>,
    /// The p-value after Holm's correction (None: not in the correction, the change is below a size
    /// threshold or there is no test).
    pub p_adjusted: Option<f64>,
    /// Significant by the rule of [`DiffOptions`].
    pub significant: bool,
}

/// One metric of one matched curve: its rows (one per x, ascending) and their total effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// Index into [`Diff::curves`].
    pub curve: usize,
    /// What is measured.
    pub metric: Metric,
    /// Sum of |change_us| over the rows, µs per step: what the groups are sorted by.
    pub effect_us: f64,
    /// Rows that are significant.
    pub significant_rows: usize,
    /// Rows by x.
    pub rows: Vec<Row>,
}

/// A curve of A matched with a curve of B.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePair {
    /// Label: mode, input length, tensor parallelism and rank (and host where curves are matched by host).
    pub label: String,
    /// `batch size` or `tokens`.
    pub x_name: String,
    /// A's host.
    pub host_a: String,
    /// A's GPU.
    pub gpu_a: String,
    /// B's host.
    pub host_b: String,
    /// B's GPU.
    pub gpu_b: String,
}

/// A point (curve and x) that only one side has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlyPoint {
    /// The curve's label (with its host and GPU).
    pub curve: String,
    /// `batch size` or `tokens`.
    pub x_name: String,
    /// Batch size or tokens.
    pub x: u64,
    /// Steps of the point.
    pub steps: usize,
}

/// What a side of the comparison is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// The results directory.
    pub dir: PathBuf,
    /// One entry per machine: `host: GPU` (from `manifest.json`'s agents when present, with the driver
    /// version; else from the tables' host and GPU columns).
    pub machines: Vec<String>,
}

/// Counts over the whole comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// Rows compared (every metric at every point on both sides).
    pub rows: usize,
    /// Rows in Holm's correction (its m): with a t-test (both sides 2 steps or more) and a change that
    /// passes both size thresholds.
    pub tested: usize,
    /// Significant rows.
    pub significant: usize,
    /// Points (curve and x) on both sides.
    pub points_compared: usize,
    /// Points only in A.
    pub points_only_in_a: usize,
    /// Points only in B.
    pub points_only_in_b: usize,
    /// Kernel rows that appeared (only in B).
    pub kernels_appeared: usize,
    /// Kernel rows that disappeared (only in A).
    pub kernels_disappeared: usize,
}

/// The comparison of two results directories.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    /// Side A.
    pub a: RunInfo,
    /// Side B.
    pub b: RunInfo,
    /// The thresholds used.
    pub options: DiffOptions,
    /// The multiple-testing correction: `holm`.
    pub correction: &'static str,
    /// Whether curves were matched by host and GPU too (false: each side is one machine).
    pub matched_by_machine: bool,
    /// Set when each side is one machine and they differ in name: which two were compared.
    pub machines_compared: Option<String>,
    /// What else a reader must know (e.g. a side without kernels.csv: kernels not compared).
    pub notes: Vec<String>,
    /// The matched curves.
    pub curves: Vec<CurvePair>,
    /// Per curve and metric, sorted by effect: groups with a significant row first, then by `effect_us`.
    pub groups: Vec<Group>,
    /// Points only in A.
    pub only_in_a: Vec<OnlyPoint>,
    /// Points only in B.
    pub only_in_b: Vec<OnlyPoint>,
    /// Counts.
    pub summary: Summary,
}

impl Diff {
    /// The rule of significance in one sentence, for headers.
    pub fn rule(&self) -> String {
        format!(
            "significant (*): |change| >= {}% and >= {} µs, and Welch's t-test p < {} after Holm's correction over the {} rows that pass both sizes (`-` in p (Holm): below a size, not tested)",
            self.options.min_change_pct, self.options.min_change_us, self.options.alpha, self.summary.tested
        )
    }

    /// The summary line: rows compared, significant, points on one side only, kernels appeared or gone.
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        format!(
            "{} rows compared at {} points, {} significant; points only in A: {}, only in B: {}; kernels appeared: {}, disappeared: {} (rows)",
            s.rows,
            s.points_compared,
            s.significant,
            s.points_only_in_a,
            s.points_only_in_b,
            s.kernels_appeared,
            s.kernels_disappeared
        )
    }
}
