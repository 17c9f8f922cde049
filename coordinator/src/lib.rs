//! The tracefleet coordinator: command-line interface, gRPC server (agent control, trace upload, sweeps),
//! state store, scheduler and ingest pipeline.

pub mod cli;
// Only the binary uses this library, through `cli`: the rest stays private, so unused code is reported.
mod parse;
mod schedule;
mod server;
mod state;
mod store;
