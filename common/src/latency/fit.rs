//! Piecewise-linear least squares with an automatically found breakpoint.
//!
//! The model is the continuous two-segment ("hinge") line
//! `y = a + b·x + c·max(0, x − k)`: slope `b` up to the knee `k`, slope `b + c` after it.
//!
//! - **Weights.** Least squares on relative residuals: each point weighs `1/m²`, `m` the mean of y at its
//!   x. Step times scatter in proportion to their size; unweighted, the noise of the slowest points alone
//!   would buy a knee at the large x (on a noisy straight line, about a quarter of the time with 3 steps
//!   per x; weighted, a few percent).
//! - **Knee search.** For a fixed `k` the model is linear in `a, b, c` and is solved by weighted least
//!   squares. `k` is searched over a grid: every distinct x and every midpoint between neighbouring
//!   distinct x, keeping only knees with at least three distinct x on each side (counting an x equal to
//!   `k` on both). A segment resting on one or two x passes through their means whatever the data, which
//!   fits noise (or a kernel switch at one batch size) rather than a change of regime; so a knee needs at
//!   least 5 distinct x, and a sweep of 4 batch sizes is fitted with one line. The knee with the smallest
//!   weighted residual sum of squares (RSS) wins.
//! - **Selection (BIC).** The hinge is kept only when it lowers the Bayesian information criterion
//!   `n·ln(RSS/n) + p·ln(n)` (weighted RSS, `n` points) below the single line's, with `p = 2` for the line and `p = 4` for the hinge
//!   (`a, b, c` and the searched knee). Otherwise the fit is one line and `knee` is None. BIC rather than an
//!   F-test because the knee is chosen by a search, which breaks the F distribution of the nested test,
//!   while BIC only needs the parameter count, and its `ln(n)` penalty grows with the number of steps so
//!   noise alone rarely buys a knee.
//! - **R²** is `1 − RSS/TSS`, unweighted, over the points fitted (every step, not the per-x means), so the steps' noise
//!   shows as R² below 1. With no variance in y (TSS = 0) it is 1 when the fit is exact, 0 otherwise.
//! - **Held-out error** is leave-one-x-out: for each distinct x, the whole procedure (knee search and
//!   selection) runs on the points of the other x, predicts x, and the absolute error relative to the mean
//!   of the points at x is taken; the result is the mean over x (x whose mean is 0 are skipped). It needs
//!   at least 4 distinct x (3 left to fit), otherwise None.
//!
//! Degenerate inputs never panic: no finite point gives no fit; one distinct x gives a constant (the mean,
//! slope 0); two distinct x give the line through them.

use super::Fit;

/// Below this many distinct x, no held-out error is given (a fit on 2 x of 3 says little).
const MIN_X_HELD_OUT: usize = 4;

/// Fits `y(x)` to `points` (x, y in µs): hinge or single line chosen by BIC (see the module doc).
///
/// Points with a non-finite coordinate are ignored. None when no point is left.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let pts: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let line = select(&pts)?;
    let (rss, tss, yy) = sums_of_squares(&pts, &line);
    Some(Fit {
        intercept_us: line.a,
        slope_us: line.b,
        knee: line.knee,
        slope_after_us: line.b_after,
        r2: r_squared(rss, tss, yy),
        held_out_error: held_out_error(&pts),
    })
}

/// The distinct x of `points`, ascending.
pub fn distinct_x(points: &[(f64, f64)]) -> Vec<f64> {
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).filter(|x| x.is_finite()).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs
}

/// One fitted model before R² and held-out error: `a + b·x`, then slope `b_after` past the knee.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Piecewise {
    a: f64,
    b: f64,
    knee: Option<f64>,
    b_after: f64,
}

impl Piecewise {
    fn predict(&self, x: f64) -> f64 {
        match self.knee {
            Some(k) if x > k => self.a + self.b * k + self.b_after * (x - k),
            _ => self.a + self.b * x,
        }
    }
}

/// The selected model (hinge or line) of finite `pts`; None when `pts` is empty.
fn select(pts: &[(f64, f64)]) -> Option<Piecewise> {
    if pts.is_empty() {
        return None;
    }
    let xs = distinct_x(pts);
    let w = relative_weights(pts);
    let line = fit_line(pts, &w, &xs);
    if xs.len() < 3 {
        return Some(line);
    }
    let n = pts.len() as f64;
    let line_rss = weighted_rss(pts, &w, &line);
    // ln(0) is -inf: a floor far below any real residual keeps an exact line comparable (and an exact
    // line then wins, having fewer parameters).
    let floor = 1e-18 * pts.iter().zip(&w).map(|(p, w)| w * p.1 * p.1).sum::<f64>().max(f64::MIN_POSITIVE);
    let bic = |rss: f64, params: f64| n * (rss.max(floor) / n).ln() + params * n.ln();
    let best_hinge = knee_candidates(&xs)
        .into_iter()
        .filter_map(|k| fit_hinge(pts, &w, &xs, k))
        .map(|h| (weighted_rss(pts, &w, &h), h))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    match best_hinge {
        Some((rss, hinge)) if bic(rss, 4.0) < bic(line_rss, 2.0) => Some(hinge),
        _ => Some(line),
    }
}

/// Per point, `1 / m²` with `m` the mean of y at the point's x: least squares on relative residuals.
/// Step times scatter in proportion to their size, and unweighted residuals of the slowest points
/// would let noise at the large x alone buy a knee. A mean of (near) 0 is floored at a millionth of the
/// largest mean; all weights are 1 when every mean is 0.
fn relative_weights(pts: &[(f64, f64)]) -> Vec<f64> {
    let mut sums: Vec<(f64, f64, usize)> = Vec::new();
    let mut idx = Vec::with_capacity(pts.len());
    for &(x, y) in pts {
        let i = match sums.iter().position(|s| s.0 == x) {
            Some(i) => i,
            None => {
                sums.push((x, 0.0, 0));
                sums.len() - 1
            }
        };
        sums[i].1 += y;
        sums[i].2 += 1;
        idx.push(i);
    }
    let means: Vec<f64> = sums.iter().map(|s| (s.1 / s.2 as f64).abs()).collect();
    let largest = means.iter().copied().fold(0f64, f64::max);
    if largest.is_nan() || largest <= 0.0 {
        return vec![1.0; pts.len()];
    }
    let floor = 1e-6 * largest;
    idx.into_iter().map(|i| 1.0 / means[i].max(floor).powi(2)).collect()
}

/// Knees to try: distinct x and midpoints between neighbours, with at least three distinct x on each
/// side (an x equal to the knee counting on both sides).
fn knee_candidates(xs: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    for (i, w) in xs.windows(2).enumerate() {
        // x index i is the left end of this window; x = xs[i] has i+1 x at or below it and len−i at or
        // above it; the midpoint has i+1 below and len−i−1 above (which must be 3 or more).
        if i >= 2 && xs.len() - i >= 3 {
            out.push(w[0]);
        }
        if i >= 2 && xs.len() - i > 3 {
            out.push((w[0] + w[1]) / 2.0);
        }
    }
    out
}

/// Weighted least-squares line (or the weighted mean with one distinct x).
fn fit_line(pts: &[(f64, f64)], w: &[f64], xs: &[f64]) -> Piecewise {
    let sw: f64 = w.iter().sum();
    let mean = |f: &dyn Fn(&(f64, f64)) -> f64| pts.iter().zip(w).map(|(p, w)| w * f(p)).sum::<f64>() / sw;
    let mean_y = mean(&|p| p.1);
    let constant = Piecewise { a: mean_y, b: 0.0, knee: None, b_after: 0.0 };
    if xs.len() < 2 {
        return constant;
    }
    let mean_x = mean(&|p| p.0);
    let sxx = mean(&|p| (p.0 - mean_x).powi(2));
    let sxy = mean(&|p| (p.0 - mean_x) * (p.1 - mean_y));
    if sxx.is_nan() || sxx <= 0.0 {
        return constant;
    }
    let b = sxy / sxx;
    Piecewise { a: mean_y - b * mean_x, b, knee: None, b_after: b }
}

/// Weighted least-squares hinge with its knee at `k`; None when the system is singular.
fn fit_hinge(pts: &[(f64, f64)], w: &[f64], xs: &[f64], k: f64) -> Option<Piecewise> {
    let (lo, hi) = (*xs.first()?, *xs.last()?);
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 {
        return None;
    }
    // Solved on x scaled to [0, 1]: tokens reach tens of thousands, and the normal equations square the
    // condition number.
    let u = |x: f64| (x - lo) / span;
    let ku = u(k);
    let mut ata = [[0f64; 3]; 3];
    let mut aty = [0f64; 3];
    for (&(x, y), &wi) in pts.iter().zip(w) {
        let row = [1.0, u(x), (u(x) - ku).max(0.0)];
        for (i, ri) in row.iter().enumerate() {
            for (cell, rj) in ata[i].iter_mut().zip(&row) {
                *cell += wi * ri * rj;
            }
            aty[i] += wi * ri * y;
        }
    }
    let [a_u, b_u, c_u] = solve3(ata, aty)?;
    // Back to x: a_u + b_u·(x−lo)/span + c_u·max(0, x−k)/span.
    let b = b_u / span;
    let c = c_u / span;
    let h = Piecewise { a: a_u - b * lo, b, knee: Some(k), b_after: b + c };
    [h.a, h.b, h.b_after].iter().all(|v| v.is_finite()).then_some(h)
}

/// Solves the 3×3 system by Gaussian elimination with partial pivoting; None when singular.
fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> Option<[f64; 3]> {
    let scale = m.iter().flatten().fold(0f64, |s, x| s.max(x.abs()));
    if scale.is_nan() || scale <= 0.0 {
        return None;
    }
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() <= 1e-12 * scale {
            return None;
        }
        m.swap(col, pivot);
        v.swap(col, pivot);
        let (pivot_row, pivot_v) = (m[col], v[col]);
        for row in col + 1..3 {
            let f = m[row][col] / pivot_row[col];
            for (cell, p) in m[row].iter_mut().zip(&pivot_row).skip(col) {
                *cell -= f * p;
            }
            v[row] -= f * pivot_v;
        }
    }
    let mut out = [0f64; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|j| m[row][j] * out[j]).sum();
        out[row] = (v[row] - s) / m[row][row];
    }
    Some(out)
}

/// Weighted residual sum of squares of `model` over `pts`.
fn weighted_rss(pts: &[(f64, f64)], w: &[f64], model: &Piecewise) -> f64 {
    pts.iter().zip(w).map(|(&(x, y), w)| w * (y - model.predict(x)).powi(2)).sum()
}

/// (RSS, TSS, Σy²) of `model` over `pts`, unweighted (for R²).
fn sums_of_squares(pts: &[(f64, f64)], model: &Piecewise) -> (f64, f64, f64) {
    let n = pts.len() as f64;
    let mean_y = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let rss = pts.iter().map(|&(x, y)| (y - model.predict(x)).powi(2)).sum();
    let tss = pts.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    let yy = pts.iter().map(|p| p.1 * p.1).sum();
    (rss, tss, yy)
}

/// `1 − RSS/TSS`; with TSS = 0, 1 for a fit exact to rounding (RSS within 1e-20 of Σy²) and 0
/// otherwise. Always finite.
fn r_squared(rss: f64, tss: f64, yy: f64) -> f64 {
    if tss > 0.0 {
        let r2 = 1.0 - rss / tss;
        if r2.is_finite() { r2 } else { 0.0 }
    } else if rss <= 1e-20 * yy {
        1.0
    } else {
        0.0
    }
}

/// Leave-one-x-out mean absolute relative error of predicting each x's mean (see the module doc).
fn held_out_error(pts: &[(f64, f64)]) -> Option<f64> {
    let xs = distinct_x(pts);
    if xs.len() < MIN_X_HELD_OUT {
        return None;
    }
    let mut errors = Vec::with_capacity(xs.len());
    for &x in &xs {
        let at: Vec<f64> = pts.iter().filter(|p| p.0 == x).map(|p| p.1).collect();
        let rest: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.0 != x).collect();
        let mean = at.iter().sum::<f64>() / at.len() as f64;
        if mean == 0.0 || !mean.is_finite() {
            continue;
        }
        if let Some(model) = select(&rest) {
            errors.push(((model.predict(x) - mean) / mean).abs());
        }
    }
    if errors.is_empty() { None } else { Some(errors.iter().sum::<f64>() / errors.len() as f64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decode batch sizes of a sweep.
    const GRID: [f64; 16] = [1., 2., 4., 8., 12., 16., 24., 32., 48., 64., 96., 128., 160., 192., 224., 256.];

    /// A small deterministic generator (SplitMix64) with Box–Muller normals, so the tests need no crate.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in (0, 1].
        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u1, u2) = (self.uniform(), self.uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    /// `steps` noisy steps per grid x of `truth`, noise `rel` × the true value (like measured step times).
    fn sample(truth: impl Fn(f64) -> f64, steps: usize, rel: f64, seed: u64) -> Vec<(f64, f64)> {
        let mut rng = Rng(seed);
        GRID.iter()
            .flat_map(|&x| (0..steps).map(move |_| x))
            .map(|x| (x, truth(x) * (1.0 + rel * rng.normal())))
            .collect()
    }

    /// The grid values around `k`: the knee must land between them.
    fn neighbours(k: f64) -> (f64, f64) {
        let below = GRID.iter().copied().rfind(|&x| x < k).unwrap_or(GRID[0]);
        let above = GRID.iter().copied().find(|&x| x > k).unwrap_or(GRID[GRID.len() - 1]);
        (below, above)
    }

    #[test]
    fn finds_the_knee_within_one_grid_step() {
        // Flat-ish (memory bound) then steep (compute bound), as decode GEMMs behave.
        for (i, &knee) in [10.0, 24.0, 40.0, 64.0, 100.0, 128.0, 180.0].iter().enumerate() {
            for seed in 0..5u64 {
                let truth = |x: f64| 300.0 + 0.5 * x + 6.0 * (x - knee).max(0.0);
                let pts = sample(truth, 5, 0.01, 1000 * i as u64 + seed);
                let f = fit(&pts).expect("a fit");
                let found = f.knee.expect("a knee");
                let (lo, hi) = neighbours(knee);
                assert!(lo <= found && found <= hi, "knee {knee}, seed {seed}: found {found}, not in [{lo}, {hi}]");
                assert!(f.r2 > 0.99, "knee {knee}: R² {}", f.r2);
                assert!(f.held_out_error.expect("16 x") < 0.05, "knee {knee}: {:?}", f.held_out_error);
                assert!((f.slope_after_us - 6.5).abs() < 0.5, "slope after {}", f.slope_after_us);
            }
        }
    }

    #[test]
    fn a_linear_series_has_no_knee() {
        // Noise alone can buy a knee now and then (BIC is a trade-off, not a guarantee): over 100 noisy
        // straight lines, a handful at most.
        let mut knees = Vec::new();
        for seed in 0..100u64 {
            let pts = sample(|x| 120.0 + 3.0 * x, 3, 0.01, seed);
            let f = fit(&pts).expect("a fit");
            assert!(f.r2 > 0.99, "R² {}", f.r2);
            match f.knee {
                Some(k) => knees.push((seed, k)),
                None => {
                    assert_eq!(f.slope_us, f.slope_after_us);
                    assert!((f.slope_us - 3.0).abs() < 0.1, "slope {}", f.slope_us);
                    assert!(f.held_out_error.expect("16 x") < 0.02);
                }
            }
        }
        println!("knees on straight lines: {knees:?}");
        assert!(knees.len() <= 8, "{} of 100 straight lines got a knee: {knees:?}", knees.len());
        // The first seeds, as a plain check that a line is a line.
        for seed in 0..3u64 {
            assert_eq!(fit(&sample(|x| 120.0 + 3.0 * x, 3, 0.01, seed)).expect("a fit").knee, None, "seed {seed}");
        }
    }

    #[test]
    fn exact_data_is_fitted_exactly() {
        let pts: Vec<(f64, f64)> = GRID.iter().map(|&x| (x, 10.0 + 2.0 * x + 5.0 * (x - 64.0).max(0.0))).collect();
        let f = fit(&pts).expect("a fit");
        assert_eq!(f.knee, Some(64.0));
        assert!((f.intercept_us - 10.0).abs() < 1e-6 && (f.slope_us - 2.0).abs() < 1e-9);
        assert!((f.slope_after_us - 7.0).abs() < 1e-9);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert!(f.held_out_error.expect("16 x") < 0.05);
        let line: Vec<(f64, f64)> = GRID.iter().map(|&x| (x, 10.0 + 2.0 * x)).collect();
        let f = fit(&line).expect("a fit");
        assert_eq!(f.knee, None);
        assert!(f.held_out_error.expect("16 x") < 1e-9);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert_eq!(fit(&[]), None);
        assert_eq!(fit(&[(f64::NAN, 1.0), (1.0, f64::INFINITY)]), None);
        let one = fit(&[(4.0, 7.0)]).expect("one point");
        assert_eq!((one.intercept_us, one.slope_us, one.knee, one.r2, one.held_out_error), (7.0, 0.0, None, 1.0, None));
        let same_x = fit(&[(4.0, 1.0), (4.0, 3.0)]).expect("same x");
        assert_eq!((same_x.intercept_us, same_x.slope_us, same_x.r2), (2.0, 0.0, 0.0));
        let flat = fit(&GRID.iter().map(|&x| (x, 5.0)).collect::<Vec<_>>()).expect("flat");
        assert_eq!((flat.knee, flat.r2), (None, 1.0));
        assert!(flat.held_out_error.expect("16 x") < 1e-12);
        let zeros = fit(&GRID.iter().map(|&x| (x, 0.0)).collect::<Vec<_>>()).expect("zeros");
        assert_eq!((zeros.knee, zeros.r2, zeros.held_out_error), (None, 1.0, None));
        let two = fit(&[(1.0, 1.0), (3.0, 5.0)]).expect("two x");
        assert!((two.slope_us - 2.0).abs() < 1e-12 && two.knee.is_none());
        let three = fit(&[(1.0, 1.0), (2.0, 2.0), (3.0, 10.0)]).expect("three x");
        assert!(three.r2.is_finite());
    }

    #[test]
    fn knee_candidates_keep_three_x_each_side() {
        assert_eq!(knee_candidates(&[1.0, 2.0]), Vec::<f64>::new());
        // Four batch sizes (the replay example): one line, no knee.
        assert_eq!(knee_candidates(&[1.0, 8.0, 32.0, 128.0]), Vec::<f64>::new());
        assert_eq!(knee_candidates(&[1.0, 2.0, 4.0, 8.0, 16.0]), vec![4.0]);
        assert_eq!(knee_candidates(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]), vec![4.0, 6.0, 8.0]);
    }
}
