//! [`Summary`]: exact integer moments plus a quantile sketch.

use serde::{Deserialize, Serialize};

use super::Sketch;

/// Summary of a series of integer values (nanoseconds): mergeable, order-independent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub count: u64,
    /// Sum of values.
    pub sum: i128,
    /// Sum of squares (exact; i128 holds 10^19 values of 10^9 s in ns).
    pub sum_sq: i128,
    /// Smallest value (0 when empty).
    pub min: i64,
    /// Largest value (0 when empty).
    pub max: i64,
    /// Quantile sketch.
    pub sketch: Sketch,
}

impl Summary {
    /// Adds a value.
    pub fn add(&mut self, v: i64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += i128::from(v);
        self.sum_sq += i128::from(v) * i128::from(v);
        self.sketch.add(v);
    }

    /// Merges another summary.
    pub fn merge(&mut self, o: &Summary) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min = o.min;
            self.max = o.max;
        } else {
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
        }
        self.count += o.count;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.sketch.merge(&o.sketch);
    }

    /// Mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum as f64 / self.count as f64 }
    }

    /// Sample standard deviation (n - 1 in the denominator; 0 for fewer than two values).
    pub fn std(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = i128::from(self.count);
        // n*sum_sq - sum^2 is exact in integers; divide once at the end.
        let num = n * self.sum_sq - self.sum * self.sum;
        let var = num as f64 / (n * (n - 1)) as f64;
        var.max(0.0).sqrt()
    }

    /// A quantile (0 when empty).
    pub fn quantile(&self, q: f64) -> f64 {
        self.sketch.quantile(q).unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Summary;

    fn of(vals: &[i64]) -> Summary {
        let mut s = Summary::default();
        for &v in vals {
            s.add(v);
        }
        s
    }

    #[test]
    fn moments_and_quantiles() {
        let s = of(&[1, 2, 3, 4]);
        assert_eq!(s.count, 4);
        assert_eq!(s.min, 1);
        assert_eq!(s.max, 4);
        assert!((s.mean() - 2.5).abs() < 1e-12);
        assert!((s.std() - 1.2909944487358056).abs() < 1e-12);
        assert!((s.quantile(0.5) - 2.5).abs() < 1e-12);
        assert!((s.quantile(0.9) - 3.7).abs() < 1e-12);
    }

    #[test]
    fn merge_is_order_independent() {
        let vals: Vec<i64> = (0..3000).map(|i| (i * 7919 % 1000) * 1000 + 17).collect();
        let parts: Vec<Summary> = vals.chunks(97).map(of).collect();
        let mut fwd = Summary::default();
        for p in &parts {
            fwd.merge(p);
        }
        let mut rev = Summary::default();
        for p in parts.iter().rev() {
            rev.merge(p);
        }
        assert_eq!(fwd, rev);
        assert_eq!(fwd, of(&vals));
        let p99 = fwd.quantile(0.99);
        assert!((p99 - 990_017.0).abs() / 990_017.0 < 0.01, "{p99}");
    }
}
