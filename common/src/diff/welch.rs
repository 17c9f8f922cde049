//! Welch's t-test from summary statistics, and Holm's correction for testing many rows at once.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Summary statistics of one side: mean and sample standard deviation over `n` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Mean, µs per step.
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator), µs.
    pub std: f64,
    /// Steps.
    pub n: u64,
}

/// The outcome of Welch's t-test of B against A.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// t statistic of B − A (positive: B larger).
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Welch's unequal-variance t-test of `b` against `a` (as scipy's `ttest_ind(b, a, equal_var=False)`).
///
/// None when a side has fewer than 2 steps (no variance to estimate) or a statistic is not finite. When
/// both sides have zero variance the means either agree (p = 1) or differ exactly (p = 0): the test has
/// nothing to say, and the size thresholds decide.
pub fn welch(a: Sample, b: Sample) -> Option<Welch> {
    if a.n < 2 || b.n < 2 || ![a.mean, a.std, b.mean, b.std].iter().all(|v| v.is_finite()) {
        return None;
    }
    let (na, nb) = (a.n as f64, b.n as f64);
    let va = a.std * a.std / na;
    let vb = b.std * b.std / nb;
    let se2 = va + vb;
    let diff = b.mean - a.mean;
    if se2 <= 0.0 {
        let df = na + nb - 2.0;
        return Some(if diff == 0.0 {
            Welch { t: 0.0, df, p: 1.0 }
        } else {
            Welch { t: diff.signum() * f64::INFINITY, df, p: 0.0 }
        });
    }
    let t = diff / se2.sqrt();
    // A side with zero variance contributes nothing to the denominator; the other side's term stays.
    let df = se2 * se2 / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    // The survival function keeps its precision in the far tail, where 1 − cdf would round to 0.
    let p = (2.0 * dist.sf(t.abs())).min(1.0);
    p.is_finite().then_some(Welch { t, df, p })
}

/// Holm's step-down adjustment of p-values for testing them all at once (family-wise error rate):
/// sorted ascending, the i-th smallest (from 0) is multiplied by m − i, then made monotone and capped at 1.
/// A row is significant at level α when its adjusted p is below α. Rows without a test (None) are not
/// counted in m.
pub fn holm(p: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_some()).collect();
    order.sort_by(|&x, &y| p[x].unwrap_or(1.0).total_cmp(&p[y].unwrap_or(1.0)));
    let m = order.len();
    let mut out = vec![None; p.len()];
    let mut running = 0f64;
    for (rank, &i) in order.iter().enumerate() {
        let adj = (p[i].unwrap_or(1.0) * (m - rank) as f64).min(1.0);
        running = running.max(adj);
        out[i] = Some(running);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(x: f64, y: f64, rel: f64) -> bool {
        (x - y).abs() <= rel * y.abs().max(1e-300)
    }

    /// Reference values from scipy 1.17.1, `stats.ttest_ind(b, a, equal_var=False)`, on the samples
    /// whose mean, sample std and n are given here.
    #[test]
    fn welch_matches_scipy() {
        let cases = [
            // Wikipedia's first Welch example (15 and 15 values).
            (
                Sample { mean: 20.82, std: 2.804893682731767, n: 15 },
                Sample { mean: 22.986666666666668, std: 1.952605097470215, n: 15 },
                2.455356398286006,
                24.988529290231416,
                0.021378001462866992,
            ),
            // Three H200 steps of attention (157.216, 156.768, 158.015 µs) against 204.1, 203.2, 205.9.
            (
                Sample { mean: 157.333, std: 0.6316795073452909, n: 3 },
                Sample { mean: 204.4, std: 1.3747727084867607, n: 3 },
                53.883084209581455,
                2.8084502917306104,
                2.5489008430068573e-05,
            ),
            // Unequal sizes: 1, 2, 3, 4 against 10, 12, 9.5.
            (
                Sample { mean: 2.5, std: 1.2909944487358056, n: 4 },
                Sample { mean: 10.5, std: 1.3228756555322954, n: 3 },
                8.0,
                4.385786802030457,
                0.0008917427297919138,
            ),
        ];
        for (a, b, t, df, p) in cases {
            let w = welch(a, b).expect("testable");
            assert!(close(w.t, t, 1e-9), "t {} vs {t}", w.t);
            assert!(close(w.df, df, 1e-9), "df {} vs {df}", w.df);
            assert!(close(w.p, p, 1e-6), "p {} vs {p}", w.p);
            // Swapping the sides flips t and keeps p.
            let s = welch(b, a).expect("testable");
            assert!(close(s.t, -t, 1e-9) && close(s.p, p, 1e-9));
        }
    }

    #[test]
    fn degenerate_samples() {
        let one = Sample { mean: 1.0, std: 0.0, n: 1 };
        let three = Sample { mean: 1.0, std: 0.5, n: 3 };
        assert!(welch(one, three).is_none(), "a single step has no variance");
        let flat = Sample { mean: 5.0, std: 0.0, n: 3 };
        assert_eq!(welch(flat, flat).map(|w| w.p), Some(1.0));
        assert_eq!(welch(flat, Sample { mean: 6.0, ..flat }).map(|w| w.p), Some(0.0));
        // One side flat (a kernel absent on that side, 0 µs in each step): the other side's variance alone.
        let absent = Sample { mean: 0.0, std: 0.0, n: 3 };
        let w = welch(absent, three).expect("testable");
        assert!(close(w.df, 2.0, 1e-12) && close(w.t, 1.0 / (0.5 / 3f64.sqrt()), 1e-12));
        assert!(welch(Sample { mean: f64::NAN, ..three }, three).is_none());
    }

    #[test]
    fn holm_adjusts_step_down() {
        // Textbook: p = 0.01, 0.04, 0.03, 0.005 (m = 4) → 0.03, 0.06, 0.06, 0.02.
        let adj = holm(&[Some(0.01), Some(0.04), Some(0.03), Some(0.005), None]);
        let want = [Some(0.03), Some(0.06), Some(0.06), Some(0.02), None];
        for (x, y) in adj.iter().zip(want) {
            match (x, y) {
                (Some(x), Some(y)) => assert!(close(*x, y, 1e-12), "{x} vs {y}"),
                (x, y) => assert_eq!(*x, y),
            }
        }
        assert_eq!(holm(&[Some(0.9), Some(0.8)]), vec![Some(1.0), Some(1.0)]);
    }
}
