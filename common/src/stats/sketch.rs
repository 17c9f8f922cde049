//! A quantile sketch: exact values up to [`EXACT_LIMIT`], then logarithmic buckets of relative width
//! [`GAMMA`] (quantiles within ±0.5%). Its state depends only on the multiset of values added, so merging
//! in any order gives the same sketch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values kept exactly before switching to buckets.
pub const EXACT_LIMIT: usize = 1024;
/// Ratio between bucket bounds (1% wide buckets: representative within 0.5%).
pub const GAMMA: f64 = 1.01;

/// Quantile sketch over non-negative integer values (nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sketch {
    /// Sorted exact values.
    Exact(Vec<i64>),
    /// Bucket index -> count; index `i32::MIN` holds values <= 0.
    Buckets(BTreeMap<i32, u64>),
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::Exact(Vec::new())
    }
}

fn bucket(v: i64) -> i32 {
    if v <= 0 { i32::MIN } else { ((v as f64).ln() / GAMMA.ln()).ceil() as i32 }
}

fn representative(b: i32) -> f64 {
    if b == i32::MIN {
        return 0.0;
    }
    // Midpoint (in the relative sense) of (gamma^(b-1), gamma^b].
    2.0 * GAMMA.powi(b) / (GAMMA + 1.0)
}

impl Sketch {
    /// Adds one value.
    pub fn add(&mut self, v: i64) {
        match self {
            Sketch::Exact(vals) => {
                let pos = vals.partition_point(|&x| x <= v);
                vals.insert(pos, v);
                if vals.len() > EXACT_LIMIT {
                    self.switch_to_buckets();
                }
            }
            Sketch::Buckets(b) => *b.entry(bucket(v)).or_default() += 1,
        }
    }

    fn switch_to_buckets(&mut self) {
        if let Sketch::Exact(vals) = self {
            let mut b = BTreeMap::new();
            for &v in vals.iter() {
                *b.entry(bucket(v)).or_default() += 1;
            }
            *self = Sketch::Buckets(b);
        }
    }

    /// Merges another sketch into this one.
    pub fn merge(&mut self, other: &Sketch) {
        match other {
            Sketch::Exact(vals) => {
                for &v in vals {
                    self.add(v);
                }
            }
            Sketch::Buckets(ob) => {
                self.switch_to_buckets();
                if let Sketch::Buckets(b) = self {
                    for (&k, &c) in ob {
                        *b.entry(k).or_default() += c;
                    }
                }
            }
        }
    }

    /// The q-quantile (0..=1): linear interpolation between ranks for exact values (numpy's default),
    /// the bucket representative otherwise. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let q = q.clamp(0.0, 1.0);
        match self {
            Sketch::Exact(vals) => {
                if vals.is_empty() {
                    return None;
                }
                let pos = q * (vals.len() - 1) as f64;
                let lo = pos.floor() as usize;
                let hi = pos.ceil() as usize;
                let frac = pos - lo as f64;
                Some(vals[lo] as f64 + (vals[hi] - vals[lo]) as f64 * frac)
            }
            Sketch::Buckets(b) => {
                let total: u64 = b.values().sum();
                if total == 0 {
                    return None;
                }
                let rank = (q * (total - 1) as f64).round() as u64;
                let mut seen = 0;
                for (&k, &c) in b {
                    seen += c;
                    if seen > rank {
                        return Some(representative(k));
                    }
                }
                b.keys().next_back().map(|&k| representative(k))
            }
        }
    }
}
