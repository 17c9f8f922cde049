//! The tracefleet coordinator: command-line interface, gRPC server (agent control, trace upload, sweeps),
//! state store, scheduler and ingest pipeline.

pub mod cli;
pub mod ingest;
pub mod schedule;
pub mod server;
pub mod store;
