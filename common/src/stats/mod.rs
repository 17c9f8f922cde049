//! Mergeable statistics: count, sum, min, max, mean, standard deviation and quantiles, with a merge that
//! gives the same result in any order (all state is integers; the quantile sketch is a function of the
//! multiset of values, not of the order they came in).

mod sketch;
mod summary;

pub use sketch::Sketch;
pub use summary::Summary;
