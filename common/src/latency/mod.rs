//! Latency models: per curve (host, GPU, mode, input length, tp, rank) and per category, coarse category,
//! whole step and top kernel, latency per step against batch size (decode) or tokens (prefill), fitted
//! piecewise-linear with its breakpoint (the knee between memory-bound and compute-bound) found
//! automatically. Written as `models.json`; drawn over the points in the report.
//!
//! - [`mod@fit`]: the piecewise-linear fit, its knee search and the selection rule (BIC).
//! - [`build`] fits every target of every curve; [`write_models`] writes `models.json`.
//! - [`vidur`]: the per-point times as Vidur profiling CSVs ([`write_vidur`]).
//!
//! Every model is fitted on per-step points (each step of each x), in µs per step, so the fit sees the
//! steps' noise; kernels, whose table holds only per-point statistics, give one point (the mean) per x.

pub mod fit;
pub mod vidur;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::classify::{Coarse, Detail};
use crate::results::{Curve, Results};

pub use fit::fit;
pub use vidur::write_vidur;

/// How many kernels per curve get a model: the slowest at the curve's largest x.
pub const TOP_KERNELS: usize = 10;

/// The file [`write_models`] writes.
pub const MODELS_FILE: &str = "models.json";

/// What a model is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A detailed category (`kqv_proj`, ..., `others`).
    Category,
    /// A coarse category (`attention`, `linear`, `others`).
    Coarse,
    /// The whole step's GPU time.
    Total,
    /// One kernel.
    Kernel,
}

/// A fitted latency model `y(x)` in µs per step: `intercept_us + slope_us·x` up to the knee, then
/// `slope_after_us` per unit of x beyond it (continuous at the knee). Without a knee, one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// µs at x = 0.
    pub intercept_us: f64,
    /// µs per unit of x before the knee.
    pub slope_us: f64,
    /// The breakpoint (batch size or tokens), None when one line fits as well.
    pub knee: Option<f64>,
    /// µs per unit of x after the knee (equal to `slope_us` without a knee).
    pub slope_after_us: f64,
    /// Coefficient of determination over the points fitted.
    pub r2: f64,
    /// Mean absolute relative error (0..1) of predicting each x's mean from a fit without that x
    /// (leave-one-x-out), None with fewer than 4 distinct x.
    pub held_out_error: Option<f64>,
}

impl Fit {
    /// The model's latency at `x`, µs.
    pub fn predict(&self, x: f64) -> f64 {
        match self.knee {
            Some(k) if x > k => self.intercept_us + self.slope_us * k + self.slope_after_us * (x - k),
            _ => self.intercept_us + self.slope_us * x,
        }
    }
}

/// One model: what it is of, and its fit (None when too few points).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Kind of target.
    pub target: Target,
    /// Its name: the category, `gpu_time`, or the kernel's name.
    pub name: String,
    /// Distinct x values the fit saw.
    pub points: usize,
    /// The fit.
    pub fit: Option<Fit>,
}

/// The models of one curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveModels {
    /// Host.
    pub host: String,
    /// GPU.
    pub gpu: String,
    /// Mode.
    pub mode: String,
    /// Input length (prompt tokens; 0: unknown).
    pub input_len: u32,
    /// Tensor-parallel size.
    pub tp: u32,
    /// Rank.
    pub rank: String,
    /// `batch size`, `tokens`, or `sequences` (prefill of an unknown input length: x is the batch size).
    pub x: String,
    /// The models.
    pub models: Vec<Model>,
}

impl CurveModels {
    /// The models of `curve` (its fields copied flat, as `models.json` lays them out).
    pub fn new(curve: &Curve, models: Vec<Model>) -> Self {
        CurveModels {
            host: curve.host.clone(),
            gpu: curve.gpu.clone(),
            mode: curve.mode.clone(),
            input_len: curve.input_len,
            tp: curve.tp,
            rank: curve.rank.clone(),
            x: curve.x_name().to_string(),
            models,
        }
    }

    /// The curve these models are of.
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

    /// The model of one target, if fitted.
    pub fn get(&self, target: Target, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.target == target && m.name == name)
    }
}

/// All models of a results directory (`models.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Models {
    /// Per curve.
    pub curves: Vec<CurveModels>,
}

/// Fits every model of `results`: per curve (as [`Results::points`] gives them), each detailed category
/// ([`Target::Category`], named by [`Detail::name`]), each coarse category ([`Target::Coarse`], by
/// [`Coarse::name`]), the whole step ([`Target::Total`], `gpu_time`, from `gpu_time_us`), and the
/// [`TOP_KERNELS`] kernels with the largest mean time per step at the curve's largest x
/// ([`Target::Kernel`], from `kernels.csv`: one point per x, a kernel's rows of several categories summed;
/// an x where the kernel did not run gives no point). All in µs per step against batch size (decode) or
/// tokens (prefill).
pub fn build(results: &Results) -> Models {
    let kernels = kernel_points(results);
    let curves = results
        .points()
        .into_iter()
        .map(|(curve, by_x)| {
            let series = |value: &dyn Fn(&crate::results::StepRecord) -> f64| -> Vec<(f64, f64)> {
                by_x.iter().flat_map(|(&x, steps)| steps.iter().map(move |s| (x as f64, value(s)))).collect()
            };
            let mut models = Vec::new();
            for d in Detail::ALL {
                models.push(model(Target::Category, d.name(), &series(&|s| s.detail_us[d.index()])));
            }
            for c in Coarse::ALL {
                models.push(model(Target::Coarse, c.name(), &series(&|s| s.coarse_us(c))));
            }
            models.push(model(Target::Total, "gpu_time", &series(&|s| s.gpu_time_us)));
            if let Some(per_kernel) = kernels.get(&curve) {
                for (name, pts) in top_kernels(per_kernel) {
                    models.push(model(Target::Kernel, name, &pts));
                }
            }
            CurveModels::new(&curve, models)
        })
        .collect();
    Models { curves }
}

/// Writes `models` as `dir/models.json` (pretty JSON); returns its path.
pub fn write_models(dir: &Path, models: &Models) -> std::io::Result<PathBuf> {
    let path = dir.join(MODELS_FILE);
    let text = serde_json::to_string_pretty(models).map_err(std::io::Error::other)?;
    std::fs::write(&path, text + "\n")?;
    Ok(path)
}

fn model(target: Target, name: &str, points: &[(f64, f64)]) -> Model {
    Model { target, name: name.to_string(), points: fit::distinct_x(points).len(), fit: fit(points) }
}

/// Per curve, per kernel name: its (x, mean µs per step) points.
type KernelPoints<'a> = BTreeMap<Curve, BTreeMap<&'a str, Vec<(u64, f64)>>>;

/// Per curve, per kernel name, per x: its mean µs per step (rows of the same series summed, since one
/// kernel can be attributed to several categories), as (x, µs) points.
fn kernel_points(results: &Results) -> KernelPoints<'_> {
    // Keyed by (x, batch size, input length): one series, whose rows of several categories add up.
    type PerSeries = BTreeMap<(u64, u32, u32), f64>;
    let mut acc: BTreeMap<Curve, BTreeMap<&str, PerSeries>> = BTreeMap::new();
    for k in &results.kernels {
        let s = &k.series;
        *acc.entry(s.curve())
            .or_default()
            .entry(k.kernel.as_str())
            .or_default()
            .entry((s.tokens(), s.batch_size, s.input_len))
            .or_default() += k.mean_us;
    }
    acc.into_iter()
        .map(|(curve, per_kernel)| {
            let per_kernel = per_kernel
                .into_iter()
                .map(|(name, per_series)| (name, per_series.into_iter().map(|((x, _, _), us)| (x, us)).collect()))
                .collect();
            (curve, per_kernel)
        })
        .collect()
}

/// The [`TOP_KERNELS`] kernels by mean time at the largest x of the curve (the largest of their points at
/// that x when several series share it), slowest first, ties by name; with their points as f64.
fn top_kernels<'a>(per_kernel: &BTreeMap<&'a str, Vec<(u64, f64)>>) -> Vec<(&'a str, Vec<(f64, f64)>)> {
    let Some(max_x) = per_kernel.values().flatten().map(|p| p.0).max() else {
        return Vec::new();
    };
    let mut at_max: Vec<(&str, f64)> = per_kernel
        .iter()
        .filter_map(|(&name, pts)| {
            pts.iter().filter(|p| p.0 == max_x).map(|p| p.1).reduce(f64::max).map(|us| (name, us))
        })
        .collect();
    at_max.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    at_max
        .into_iter()
        .take(TOP_KERNELS)
        .map(|(name, _)| {
            let pts = per_kernel.get(name).map(|v| v.iter().map(|&(x, us)| (x as f64, us)).collect());
            (name, pts.unwrap_or_default())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(path: &str) -> Results {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results").join(path);
        Results::read(&dir).expect("committed results")
    }

    /// Prints the models of a committed sweep (`--nocapture`) and returns them.
    fn fitted(path: &str) -> Models {
        let models = build(&committed(path));
        for c in &models.curves {
            println!("{path} · {} ({})", c.curve().label(), c.x);
            for m in &c.models {
                let Some(f) = &m.fit else {
                    println!("  {:?} {}: no fit", m.target, m.name);
                    continue;
                };
                let name: String = m.name.chars().take(60).collect();
                println!(
                    "  {:<8} {:<60} x={:<3} R²={:.4} knee={:<8} held-out={} a={:.1} µs slope={:.3}→{:.3} µs/x",
                    format!("{:?}", m.target),
                    name,
                    m.points,
                    f.r2,
                    f.knee.map_or("-".to_string(), |k| k.to_string()),
                    f.held_out_error.map_or("-".to_string(), |e| format!("{:.1}%", 100.0 * e)),
                    f.intercept_us,
                    f.slope_us,
                    f.slope_after_us,
                );
            }
        }
        models
    }

    #[test]
    fn every_target_of_the_committed_h200_sweeps_is_fitted() {
        for path in ["h200-vllm/decode", "h200-vllm/prefill", "h200/decode", "h200/prefill"] {
            let models = fitted(path);
            assert_eq!(models.curves.len(), 1, "{path}");
            let c = &models.curves[0];
            let distinct = if path.ends_with("decode") { 16 } else { 6 };
            for d in Detail::ALL {
                let m = c.get(Target::Category, d.name()).expect("every category");
                assert_eq!(m.points, distinct);
                let f = m.fit.as_ref().expect("fitted");
                assert!(f.r2.is_finite() && f.held_out_error.is_some_and(f64::is_finite), "{path} {}", d.name());
            }
            for co in Coarse::ALL {
                assert!(c.get(Target::Coarse, co.name()).and_then(|m| m.fit.as_ref()).is_some(), "{path}");
            }
            assert!(c.get(Target::Total, "gpu_time").and_then(|m| m.fit.as_ref()).is_some(), "{path}");
            // What the data gives: prefill is close to linear in tokens throughout; decode attention,
            // others and the whole step too. The decode projections are step-like (the GEMM kernel chosen
            // changes with the batch size: down_proj jumps up at 192 and 224 and back down at 256), which
            // no two-segment line follows closely; their sum (coarse `linear`) smooths the steps out. Decode
            // rope is a few µs per layer, flat past batch 16, where the steps' jitter weighs as much as
            // the trend.
            let r2 = |t: Target, name: &str| c.get(t, name).and_then(|m| m.fit.as_ref()).map(|f| f.r2).expect("fitted");
            let step_like = ["kqv_proj", "rope", "o_proj", "gated_up_proj", "down_proj"];
            for d in Detail::ALL {
                let min = if path.ends_with("decode") && step_like.contains(&d.name()) { 0.7 } else { 0.99 };
                assert!(
                    r2(Target::Category, d.name()) > min,
                    "{path} {}: R² {}",
                    d.name(),
                    r2(Target::Category, d.name())
                );
            }
            for co in Coarse::ALL {
                let min = if path.ends_with("decode") && co == Coarse::Linear { 0.95 } else { 0.99 };
                assert!(r2(Target::Coarse, co.name()) > min, "{path} {}", co.name());
            }
            assert!(r2(Target::Total, "gpu_time") > 0.99, "{path}");
            // And each x's mean is predicted within 12% by a fit that did not see it.
            for m in c.models.iter().filter(|m| m.target != Target::Kernel) {
                let e = m.fit.as_ref().and_then(|f| f.held_out_error).expect("held-out error");
                assert!(e < 0.12, "{path} {}: held-out error {e}", m.name);
            }
            let kernels: Vec<&Model> = c.models.iter().filter(|m| m.target == Target::Kernel).collect();
            assert_eq!(kernels.len(), TOP_KERNELS, "{path}");
            assert!(kernels.iter().all(|m| m.fit.as_ref().is_some_and(|f| f.r2.is_finite())));
        }
    }

    #[test]
    fn models_json_round_trips() {
        let models = build(&committed("h200-vllm/prefill"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_models(dir.path(), &models).expect("written");
        assert_eq!(path, dir.path().join(MODELS_FILE));
        let back: Models = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        // serde_json parses floats to within an ulp (exact round trips need a crate feature): compare the
        // structure exactly and the numbers closely.
        assert_eq!(back.curves.len(), models.curves.len());
        for (b, m) in back.curves.iter().zip(&models.curves) {
            assert_eq!((b.curve(), &b.x, b.models.len()), (m.curve(), &m.x, m.models.len()));
            for (bm, mm) in b.models.iter().zip(&m.models) {
                assert_eq!((bm.target, &bm.name, bm.points), (mm.target, &mm.name, mm.points));
                let (bf, mf) = (bm.fit.as_ref().expect("fit"), mm.fit.as_ref().expect("fit"));
                assert_eq!(bf.knee.is_some(), mf.knee.is_some());
                for x in [1.0, 100.0, 10_000.0] {
                    assert!((bf.predict(x) - mf.predict(x)).abs() <= 1e-9 * mf.predict(x).abs().max(1.0));
                }
            }
        }
    }

    #[test]
    fn empty_results_give_no_models() {
        assert_eq!(build(&Results::default()), Models::default());
    }
}
