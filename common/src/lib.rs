//! The trace engine of tracefleet.
//!
//! Pure and synchronous: bytes in, summaries out. Networking, storage and scheduling never reach in here,
//! so everything is testable on files and usable offline (`coord analyze`, `coord ingest`).
//!
//! - [`trace`]: streaming parser for Kineto Chrome traces, linking of GPU activity to ops, steps, torch's
//!   `key_averages()` table.
//! - [`classify`]: attribution of every GPU activity to a category by the op that launched it and its
//!   place in the decoder layer (rule files).
//! - [`summary`]: one trace → per-step summaries; [`aggregate`]: merging them in any order;
//!   [`stats`]: mergeable distributions; [`tables`]: the result files; [`checks`]: what readers must be
//!   told (warnings, what `others` holds); [`telemetry`]: GPU readings per step.
//! - [`diff`]: two results directories compared per category and kernel, with significance.
//! - [`sweep`]: sweep files (schema, validation, points); [`layout`]: what a results tree's paths say;
//!   [`workload`]: what the tokens a folder's steps fed to the model say its workload was;
//!   [`glob`]: glob matching for rule files; [`gpus`]: which GPUs a job takes; [`wire`]: upload chunk framing shared by agent and coordinator;
//!   [`logging`]: the log subscriber both binaries install.

// The library surface other crates build on: every public item says what it is.
#![warn(missing_docs)]

pub mod aggregate;
pub mod checks;
pub mod classify;
pub mod derived;
pub mod diff;
pub mod glob;
pub mod gpus;
pub mod html;
pub mod latency;
pub mod layout;
pub mod logging;
pub mod ranks;
pub mod report;
pub mod results;
pub mod roofline;
pub mod stats;
pub mod summary;
pub mod sweep;
pub mod tables;
pub mod telemetry;
pub mod trace;
pub mod wire;
pub mod workload;
