//! The online parse pool: parsing uploaded traces on a bounded pool of worker threads while uploads
//! continue, and writing a sweep's results when it completes. (`coord ingest` is the offline tool.)

pub mod outcome;
mod results;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use tracefleet_common::summary::{AnalyzeOptions, TraceSummary, summarize_file};
use tracefleet_common::trace::TraceError;
use tracefleet_proto::v1::{SweepEvent, SweepEventKind};

pub use results::complete_if_done;

use crate::state::{Coordinator, ParseSource, parse_cost};
use crate::store::UploadKey;

/// Refills the queue from the database and starts the workers; then finishes sweeps that were complete
/// when the coordinator stopped.
pub fn start(coord: &Arc<Coordinator>) -> anyhow::Result<()> {
    for k in coord.store().unparsed()? {
        coord.parse_queue.push(k);
    }
    for i in 0..coord.cfg.parse_workers.max(1) {
        let c = coord.clone();
        std::thread::Builder::new().name(format!("parse-{i}")).spawn(move || worker(&c))?;
    }
    let running: Vec<String> = coord.store().running_sweeps()?.into_iter().map(|s| s.id).collect();
    for s in running {
        if let Err(e) = complete_if_done(coord, &s) {
            tracing::error!(sweep = %s, "writing the results: {e:#}");
        }
    }
    Ok(())
}

/// How long a trace whose result could not be stored waits before it is parsed again.
const STORE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// Puts a trace back in the parse queue after a storage error, [`STORE_RETRY_DELAY`] later (the watchdog
/// releases it), so that a sweep ends once the disk has room again, without a restart.
fn retry_later(coord: &Arc<Coordinator>, key: UploadKey, why: &str) {
    tracing::warn!(
        sweep = %key.sweep_id, point = %key.point_id, host = %key.host, trace = %key.trace_name,
        "storing the parse result failed: {why}; parsing again in {} s", STORE_RETRY_DELAY.as_secs()
    );
    coord.metrics.parse_store_retries.inc_by(1);
    coord.parse_queue.push_later(key, STORE_RETRY_DELAY);
}

/// Traces of at least this many decompressed bytes are read on as many threads as the pool has workers
/// (split at event boundaries, [`tracefleet_common::trace::parallel`]): one large trace otherwise holds
/// one core for seconds while the others idle. Smaller ones keep one thread each, so that a pool busy with
/// many traces is not oversubscribed.
const PARALLEL_PARSE_BYTES: u64 = 256 << 20;

fn worker(coord: &Arc<Coordinator>) {
    let opts = AnalyzeOptions::default();
    let parallel = AnalyzeOptions { parse_jobs: coord.cfg.parse_workers.max(1), ..opts.clone() };
    loop {
        let key = coord.parse_queue.pop();
        let (path, row) = {
            let s = coord.store();
            (s.trace_path(&key), s.upload(&key))
        };
        let raw = match row {
            Ok(Some(u)) if u.complete => u.raw_size,
            // Started over since it was queued (its point runs again here): the new bytes queue their
            // own parse when they are complete.
            Ok(_) => continue,
            Err(e) => {
                retry_later(coord, key, &e.to_string());
                continue;
            }
        };
        let path = match path {
            Ok(p) => p,
            Err(e) => {
                retry_later(coord, key, &e.to_string());
                continue;
            }
        };
        // Memory-aware admission: however many workers, parses in flight fit the memory budget.
        let admitted = coord.parse_queue.admit(parse_cost(raw), coord.cfg.parse_memory_bytes);
        let t0 = Instant::now();
        let result = summarize_file(&path, if raw >= PARALLEL_PARSE_BYTES { &parallel } else { &opts });
        coord.parse_queue.release(admitted);
        store_result(coord, key, result, t0.elapsed().as_secs_f64(), ParseSource::File);
    }
}

/// Stores one parse's result, however the trace was read (the one place that does, so that a trace
/// parsed from its file and one parsed as it arrived are handled alike): the summary, or the refusal
/// with an empty summary; the metrics; the `parse_failed` event; the sweep's results when it was the
/// last trace. A result the database cannot take is parsed again later, from the file.
pub(crate) fn store_result(
    coord: &Arc<Coordinator>,
    key: UploadKey,
    result: Result<TraceSummary, TraceError>,
    secs: f64,
    source: ParseSource,
) {
    // A refusal names the trace as its agent uploaded it (`host:name`), not the coordinator's copy; a
    // failure to read that copy (its disk) stays the coordinator's, named by its path.
    let result = result.map_err(|e| match e {
        TraceError::Io { .. } => e,
        e => e.naming(std::path::PathBuf::from(format!("{}:{}", key.host, key.trace_name))),
    });
    // Parsing time is work done, stored or not; the counts of traces, bytes and failures count results,
    // once each: only a stored result is counted (one the database did not take is parsed again).
    coord.metrics.parse_seconds_total.inc_by(secs);
    coord.metrics.parse_seconds.observe(secs);
    let stored = match &result {
        Ok(summary) => serde_json::to_vec(summary)
            .map_err(|e| e.to_string())
            .and_then(|json| coord.store().set_parsed(&key, &json).map_err(|e| e.to_string())),
        Err(e) => {
            // A trace that does not parse still counts as handled, with an empty summary, so that the
            // sweep can end; the failure is reported to watchers and in the manifest.
            let empty = TraceSummary {
                gpu: String::new(),
                bytes: 0,
                events: 0,
                steps: Vec::new(),
                rank: None,
                world_size: None,
            };
            serde_json::to_vec(&empty)
                .map_err(|e| e.to_string())
                .and_then(|j| coord.store().set_refused(&key, &j, &e.to_string()).map_err(|e| e.to_string()))
        }
    };
    if let Err(why) = stored {
        // The database could not take the result (a full disk, say): not the trace's fault, so it is
        // neither refused nor forgotten; it is parsed again later.
        retry_later(coord, key, &why);
        return;
    }
    match &result {
        Ok(summary) => {
            coord.metrics.traces_parsed.inc_by(1);
            coord.metrics.parsed_bytes.inc_by(summary.bytes);
        }
        Err(_) => {
            coord.metrics.parse_failures.inc_by(1);
        }
    }
    coord.metrics.parse_stored(source);
    tracing::debug!(
        sweep = %key.sweep_id, point = %key.point_id, host = %key.host, trace = %key.trace_name,
        "parse result stored ({secs:.3} s parsing, read from {})", source.label()
    );
    let message = result.err().map(|e| e.to_string());
    if let Some(m) = message {
        tracing::warn!(sweep = %key.sweep_id, point = %key.point_id, host = %key.host, trace = %key.trace_name, "refused: {m}");
        coord.publish(SweepEvent {
            sweep_id: key.sweep_id.clone(),
            kind: SweepEventKind::ParseFailed.into(),
            agent: key.host.clone(),
            point_id: key.point_id.clone(),
            message: m,
            ..Default::default()
        });
    }
    if let Err(e) = complete_if_done(coord, &key.sweep_id) {
        tracing::error!(sweep = %key.sweep_id, "writing the results: {e:#}");
    }
}
