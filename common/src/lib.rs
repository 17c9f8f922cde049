//! The trace engine of tracefleet.
//!
//! Pure and synchronous: bytes in, summaries out. Networking, storage and scheduling never reach in here,
//! so everything is testable on files and usable offline (`coord analyze`, `coord ingest`).
//!
//! - [`trace`]: streaming parser for Kineto Chrome traces, linking of GPU activity to ops, torch's table.

pub mod aggregate;
pub mod checks;
pub mod classify;
pub mod glob;
pub mod layout;
pub mod stats;
pub mod summary;
pub mod sweep;
pub mod tables;
pub mod telemetry;
pub mod trace;
pub mod wire;
