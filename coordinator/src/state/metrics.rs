//! The coordinator's metrics, in a `prometheus-client` registry (`server::metrics` serves them in the
//! OpenMetrics text format). Counters are incremented where things happen; gauges that mirror the state
//! (queue depth, agents, uploads in flight, parse speed) are set when the metrics are read.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Every metric, registered once in `registry`.
#[derive(Debug)]
pub struct Metrics {
    /// Write streams opened.
    pub uploads_started: Counter,
    /// Traces completed (SHA-256 checked).
    pub uploads_completed: Counter,
    /// Finished traces uploaded again (answered "complete").
    pub uploads_duplicate: Counter,
    /// Uploads refused for backpressure.
    pub uploads_rejected: Counter,
    /// Uploads that started past offset 0 (resumed).
    pub uploads_resumed: Counter,
    /// Raw bytes skipped thanks to resumption.
    pub resumed_bytes: Counter,
    /// Compressed bytes received in chunks.
    pub wire_bytes: Counter,
    /// Raw bytes received in new chunks.
    pub raw_bytes: Counter,
    /// Chunks refused (bad CRC, frame, gap, ...).
    pub chunks_rejected: Counter,
    /// Upload streams that ended without their finish (link broken, agent gone, timed out); what had
    /// arrived intact was committed.
    pub uploads_broken: Counter,
    /// Uploads refused for who sent them: not the agent of the job, a point outside the job, a job that
    /// was reassigned or retried elsewhere.
    pub uploads_refused: Counter,
    /// Traces parsed.
    pub traces_parsed: Counter,
    /// Raw bytes parsed.
    pub parsed_bytes: Counter,
    /// Seconds spent parsing, summed over workers.
    pub parse_seconds_total: Counter<f64, AtomicU64>,
    /// Traces that failed to parse.
    pub parse_failures: Counter,
    /// Parse results the database could not take (a full disk), queued again.
    pub parse_store_retries: Counter,
    /// Reads of a stored trace that failed (the coordinator's disk), tried again later.
    pub parse_read_retries: Counter,
    /// Parse results stored (summaries and refusals), by where the bytes were read ([`ParseSource`]).
    pub parses_by_source: Family<[(&'static str, &'static str); 1], Counter>,
    /// Seconds to parse one trace.
    pub parse_seconds: Histogram,
    /// Seconds from an upload's finish request to its acknowledgement (commit, SHA-256 check, record).
    pub upload_ack_seconds: Histogram,
    /// Parse speed per worker, MB/s (set when read).
    pub parse_mb_per_second: Gauge<f64, AtomicU64>,
    /// Traces waiting to be parsed (set when read).
    pub parse_queue_depth: Gauge,
    /// Agents connected now (set when read).
    pub agents_connected: Gauge,
    /// Upload streams open now (set when read).
    pub uploads_in_flight: Gauge,
    /// The registry holding all of the above.
    pub registry: Registry,
}

/// Where a parse read its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseSource {
    /// The verified chunks of the upload stream, as they arrived.
    Memory,
    /// The stored file, through the parse queue.
    File,
}

impl ParseSource {
    /// The `source` label's value.
    pub fn label(self) -> &'static str {
        match self {
            ParseSource::Memory => "memory",
            ParseSource::File => "file",
        }
    }
}

impl Metrics {
    /// Counts a parse result stored from `source`.
    pub fn parse_stored(&self, source: ParseSource) {
        self.parses_by_source.get_or_create(&[("source", source.label())]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        // Parse times from 1 ms to ~33 s; acknowledgements from 0.1 ms to ~3 s (doubling buckets).
        let parse_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let upload_ack_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let m = Self {
            uploads_started: Counter::default(),
            uploads_completed: Counter::default(),
            uploads_duplicate: Counter::default(),
            uploads_rejected: Counter::default(),
            uploads_resumed: Counter::default(),
            resumed_bytes: Counter::default(),
            wire_bytes: Counter::default(),
            raw_bytes: Counter::default(),
            chunks_rejected: Counter::default(),
            uploads_broken: Counter::default(),
            uploads_refused: Counter::default(),
            traces_parsed: Counter::default(),
            parsed_bytes: Counter::default(),
            parse_seconds_total: Counter::default(),
            parse_failures: Counter::default(),
            parse_store_retries: Counter::default(),
            parse_read_retries: Counter::default(),
            parses_by_source: Family::default(),
            parse_seconds,
            upload_ack_seconds,
            parse_mb_per_second: Gauge::default(),
            parse_queue_depth: Gauge::default(),
            agents_connected: Gauge::default(),
            uploads_in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        let mut r = Registry::default();
        // Counters get the `_total` suffix from the encoder.
        r.register("tracefleet_uploads_started", "Upload streams opened.", m.uploads_started.clone());
        r.register("tracefleet_uploads_completed", "Traces uploaded and verified.", m.uploads_completed.clone());
        r.register("tracefleet_uploads_duplicate", "Finished traces uploaded again.", m.uploads_duplicate.clone());
        r.register("tracefleet_uploads_rejected", "Uploads refused for backpressure.", m.uploads_rejected.clone());
        r.register("tracefleet_uploads_resumed", "Uploads resumed past offset 0.", m.uploads_resumed.clone());
        r.register(
            "tracefleet_upload_resumed_bytes",
            "Raw bytes not resent thanks to resumption.",
            m.resumed_bytes.clone(),
        );
        r.register("tracefleet_upload_wire_bytes", "Compressed chunk bytes received.", m.wire_bytes.clone());
        r.register("tracefleet_upload_raw_bytes", "Raw trace bytes received.", m.raw_bytes.clone());
        r.register("tracefleet_chunks_rejected", "Chunks refused.", m.chunks_rejected.clone());
        r.register(
            "tracefleet_uploads_broken",
            "Upload streams ended before their finish (what arrived was committed).",
            m.uploads_broken.clone(),
        );
        r.register(
            "tracefleet_uploads_refused",
            "Uploads refused for their sender (not the job's agent, point or a superseded job).",
            m.uploads_refused.clone(),
        );
        r.register(
            "tracefleet_traces_parsed",
            "Traces parsed, each counted once its result is stored.",
            m.traces_parsed.clone(),
        );
        r.register(
            "tracefleet_parse_failures",
            "Traces refused by the parser, each counted once its refusal is stored.",
            m.parse_failures.clone(),
        );
        r.register(
            "tracefleet_parse_store_retries",
            "Parse results the database could not store (full disk), parsed again later.",
            m.parse_store_retries.clone(),
        );
        r.register(
            "tracefleet_parse_read_retries",
            "Reads of a stored trace that failed on the coordinator's side (I/O error, file gone), tried again \
             later; after the last attempt the failure is the trace's stored result.",
            m.parse_read_retries.clone(),
        );
        r.register(
            "tracefleet_parses_stored",
            "Parse results stored, by where the trace was read: source=memory (the upload's verified chunks as \
             they arrived) or source=file (the stored file, through the parse queue).",
            m.parses_by_source.clone(),
        );
        r.register("tracefleet_parsed_bytes", "Raw bytes parsed.", m.parsed_bytes.clone());
        r.register(
            "tracefleet_parse_seconds",
            "Seconds spent parsing, summed over workers.",
            m.parse_seconds_total.clone(),
        );
        r.register("tracefleet_trace_parse_seconds", "Seconds to parse one trace.", m.parse_seconds.clone());
        r.register(
            "tracefleet_upload_ack_seconds",
            "Seconds from an upload's finish request to its acknowledgement.",
            m.upload_ack_seconds.clone(),
        );
        r.register("tracefleet_parse_mb_per_second", "Parse speed per worker, MB/s.", m.parse_mb_per_second.clone());
        r.register("tracefleet_parse_queue_depth", "Traces waiting to be parsed.", m.parse_queue_depth.clone());
        r.register("tracefleet_agents_connected", "Agents connected now.", m.agents_connected.clone());
        r.register("tracefleet_uploads_in_flight", "Upload streams open now.", m.uploads_in_flight.clone());
        // Both sources listed from the start, at 0.
        for source in [ParseSource::Memory, ParseSource::File] {
            let _ = m.parses_by_source.get_or_create(&[("source", source.label())]);
        }
        Self { registry: r, ..m }
    }
}
