//! Reading PyTorch-profiler (Kineto) Chrome traces: streaming scan, compact model, linking, and the
//! `key_averages()`-equivalent table.

// Plain vectors viewed as atomics: one `unsafe` cast, allowed here only.
#[allow(unsafe_code)]
mod atomic_view;
pub mod error;
pub mod key_averages;
pub mod link;
pub mod model;
mod par;
pub mod parallel;
pub mod reader;
pub mod scan;
// SIMD loads need `unsafe`: allowed in this module only (the workspace denies it everywhere else).
#[allow(unsafe_code)]
mod structural;

pub use error::{Location, TraceError};
pub use key_averages::{KeyAverage, key_averages, key_averages_with_jobs};
pub use link::Links;
pub use model::{Category, Event, LeftOut, Trace};
pub use reader::ReadLimits;
pub mod steps;
