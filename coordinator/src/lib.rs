//! The tracefleet coordinator: command-line interface and (in later modules) the gRPC server, state store,
//! scheduler and ingest pipeline.

pub mod cli;
pub mod store;
