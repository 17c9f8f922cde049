//! The tracefleet agent: runs profiling workloads on a GPU host and streams their traces to the
//! coordinator.
//!
//! This build has the command line and the host inventory the agent reports when it connects; the control
//! stream, workload backends and resumable upload are the next modules to land (see `docs/architecture.md`).

pub mod cli;
pub mod inventory;
