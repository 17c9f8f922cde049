//! Prometheus metrics over plain HTTP (`GET /metrics`), without a web framework.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::{Coordinator, Metrics};

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self, coord: &Coordinator) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, v: f64| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
        };
        line(
            "tracefleet_uploads_started_total",
            "counter",
            "Upload streams opened.",
            get(&self.uploads_started) as f64,
        );
        line(
            "tracefleet_uploads_completed_total",
            "counter",
            "Traces uploaded and verified.",
            get(&self.uploads_completed) as f64,
        );
        line(
            "tracefleet_uploads_duplicate_total",
            "counter",
            "Finished traces uploaded again.",
            get(&self.uploads_duplicate) as f64,
        );
        line(
            "tracefleet_uploads_rejected_total",
            "counter",
            "Uploads refused for backpressure.",
            get(&self.uploads_rejected) as f64,
        );
        line(
            "tracefleet_uploads_resumed_total",
            "counter",
            "Uploads resumed past offset 0.",
            get(&self.uploads_resumed) as f64,
        );
        line(
            "tracefleet_upload_resumed_bytes_total",
            "counter",
            "Raw bytes not resent thanks to resumption.",
            get(&self.resumed_bytes) as f64,
        );
        line(
            "tracefleet_upload_wire_bytes_total",
            "counter",
            "Compressed chunk bytes received.",
            get(&self.wire_bytes) as f64,
        );
        line("tracefleet_upload_raw_bytes_total", "counter", "Raw trace bytes received.", get(&self.raw_bytes) as f64);
        line("tracefleet_chunks_rejected_total", "counter", "Chunks refused.", get(&self.chunks_rejected) as f64);
        line("tracefleet_traces_parsed_total", "counter", "Traces parsed.", get(&self.traces_parsed) as f64);
        line(
            "tracefleet_parse_failures_total",
            "counter",
            "Traces that failed to parse.",
            get(&self.parse_failures) as f64,
        );
        line("tracefleet_parsed_bytes_total", "counter", "Raw bytes parsed.", get(&self.parsed_bytes) as f64);
        let secs = get(&self.parse_nanos) as f64 / 1e9;
        line("tracefleet_parse_seconds_total", "counter", "Seconds spent parsing, summed over workers.", secs);
        let mbps = if secs > 0.0 { get(&self.parsed_bytes) as f64 / 1e6 / secs } else { 0.0 };
        line("tracefleet_parse_mb_per_second", "gauge", "Parse speed per worker, MB/s.", mbps);
        line("tracefleet_parse_queue_depth", "gauge", "Traces waiting to be parsed.", coord.parse_queue.len() as f64);
        line("tracefleet_agents_connected", "gauge", "Agents connected now.", coord.agents().len() as f64);
        let inflight = coord.cfg.max_inflight_uploads - coord.upload_slots.available_permits();
        line("tracefleet_uploads_in_flight", "gauge", "Upload streams open now.", inflight as f64);
        out
    }
}

/// Answers every HTTP request with the metrics.
pub async fn serve(coord: Arc<Coordinator>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        let coord = coord.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // One request per connection; the request itself is not needed beyond its arrival.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await;
            let body = coord.metrics.render(&coord);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
