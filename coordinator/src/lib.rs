//! The tracefleet coordinator: command-line interface, gRPC server (agent control, trace upload, sweeps),
//! state store, scheduler and ingest pipeline.

pub mod cli;
pub mod parse;
pub mod schedule;
pub mod server;
pub mod state;
pub mod store;
