//! The tracefleet agent: runs profiling workloads on a GPU host and streams their traces to the
//! coordinator.
//!
//! - [`control`]: connection, hello, heartbeats, job loop, reconnect with backoff.
//! - [`workload`]: backends that run a job's points and write trace files (replay, torch, vLLM, command).
//! - [`gpu`]: NVML inventory; one job per GPU.
//! - [`spool`]: the on-disk queue, the finished-file watcher and the resumable uploader.
//! - [`tls`]: mutual TLS towards the coordinator, its files read again at every connection.
//! - [`cli`]: the `agent` command; [`inventory`]: what the host reports; [`backoff`]: reconnect delays.

pub mod backoff;
pub mod cli;
pub mod control;
pub mod gpu;
pub mod inventory;
pub mod spool;
pub mod tls;
pub mod workload;
