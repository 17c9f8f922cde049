//! The coordinator's counters (exposed by `server::metrics` in Prometheus' text format).

use std::sync::atomic::AtomicU64;

/// Counters, all monotonic except where noted.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Write streams opened.
    pub uploads_started: AtomicU64,
    /// Traces completed (SHA-256 checked).
    pub uploads_completed: AtomicU64,
    /// Finished traces uploaded again (answered "complete").
    pub uploads_duplicate: AtomicU64,
    /// Uploads refused for backpressure.
    pub uploads_rejected: AtomicU64,
    /// Uploads that started past offset 0 (resumed).
    pub uploads_resumed: AtomicU64,
    /// Raw bytes skipped thanks to resumption.
    pub resumed_bytes: AtomicU64,
    /// Compressed bytes received in chunks.
    pub wire_bytes: AtomicU64,
    /// Raw bytes received in new chunks.
    pub raw_bytes: AtomicU64,
    /// Chunks refused (bad CRC, frame, gap, ...).
    pub chunks_rejected: AtomicU64,
    /// Traces parsed.
    pub traces_parsed: AtomicU64,
    /// Raw bytes parsed.
    pub parsed_bytes: AtomicU64,
    /// Nanoseconds spent parsing (summed over workers).
    pub parse_nanos: AtomicU64,
    /// Traces that failed to parse.
    pub parse_failures: AtomicU64,
}
