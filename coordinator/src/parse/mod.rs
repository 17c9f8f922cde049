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

/// Puts a trace back in the parse queue after a storage error, `parse_retry_delay` later (the watchdog
/// releases it), so that a sweep ends once the disk has room again, without a restart.
fn retry_later(coord: &Arc<Coordinator>, key: UploadKey, why: &str) {
    let delay = coord.cfg.parse_retry_delay;
    tracing::warn!(
        sweep = %key.sweep_id, point = %key.point_id, host = %key.host, trace = %key.trace_name,
        "storing the parse result failed: {why}; parsing again in {:.1} s", delay.as_secs_f64()
    );
    coord.metrics.parse_store_retries.inc_by(1);
    coord.parse_queue.push_later(key, delay);
}

/// A failed read of the coordinator's own copy of a trace (an I/O error of its disk, the file gone) is
/// not the trace's fault: the read is tried again, `parse_read_attempts` times in all with doubling waits.
/// Returns the error to store once the attempts are spent, saying whose failure it is; `None` when the
/// trace was queued again.
fn read_failed(coord: &Arc<Coordinator>, key: &UploadKey, e: TraceError) -> Option<TraceError> {
    let TraceError::Io { file, source } = e else {
        return Some(e);
    };
    let attempts = coord.cfg.parse_read_attempts.max(1);
    match coord.parse_queue.read_failed(key, attempts, coord.cfg.parse_retry_delay) {
        Some(delay) => {
            tracing::warn!(
                sweep = %key.sweep_id, point = %key.point_id, host = %key.host, trace = %key.trace_name,
                "reading the stored trace {} failed: {source}; reading it again in {:.1} s",
                file.display(), delay.as_secs_f64()
            );
            coord.metrics.parse_read_retries.inc_by(1);
            coord.parse_queue.push_later(key.clone(), delay);
            None
        }
        None => Some(TraceError::Io {
            source: std::io::Error::new(
                source.kind(),
                format!(
                    "the coordinator could not read its stored copy of {}:{} ({attempts} attempts; a fault of the \
                     coordinator's disk, not of the trace): {source}",
                    key.host, key.trace_name
                ),
            ),
            file,
        }),
    }
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
        let (raw, sha256) = match row {
            Ok(Some(u)) if u.complete => (u.raw_size, u.sha256),
            // Started over since it was queued (its point runs again here): the new bytes queue their
            // own parse when they are complete.
            Ok(_) => {
                coord.parse_queue.read_settled(&key);
                continue;
            }
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
        let result = match result {
            Err(e) => match read_failed(coord, &key, e) {
                Some(e) => Err(e),
                None => continue,
            },
            ok => ok,
        };
        store_result(coord, key, &sha256, result, t0.elapsed().as_secs_f64(), ParseSource::File);
    }
}

/// Stores one parse's result, however the trace was read (the one place that does, so that a trace
/// parsed from its file and one parsed as it arrived are handled alike): the summary, or the refusal
/// with an empty summary; the metrics; the `parse_failed` event; the sweep's results when it was the
/// last trace. A result the database cannot take is parsed again later, from the file.
pub(crate) fn store_result(
    coord: &Arc<Coordinator>,
    key: UploadKey,
    sha256: &str,
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
            .and_then(|json| coord.store().set_parsed(&key, sha256, &json).map_err(|e| e.to_string())),
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
                left_out: Default::default(),
            };
            serde_json::to_vec(&empty)
                .map_err(|e| e.to_string())
                .and_then(|j| coord.store().set_refused(&key, sha256, &j, &e.to_string()).map_err(|e| e.to_string()))
        }
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(why) => {
            // The database could not take the result (a full disk, say): not the trace's fault, so it is
            // neither refused nor forgotten; it is parsed again later.
            retry_later(coord, key, &why);
            return;
        }
    };
    coord.parse_queue.read_settled(&key);
    if !stored {
        // The upload started over while it was parsed (its point runs again on this host): these were
        // the old bytes, and the new ones queue their own parse once complete. Nothing counted.
        tracing::debug!(
            sweep = %key.sweep_id, point = %key.point_id, host = %key.host, trace = %key.trace_name,
            "parse result dropped: the upload started over while it was parsed"
        );
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::state::{Config, Coordinator};
    use crate::store::{JobRow, JobState, SweepRow, UploadKey, UploadRow};

    const TRACE: &str = r#"{"traceEvents":[
        {"ph":"X","cat":"cpu_op","name":"aten::mm","pid":1,"tid":1,"ts":10,"dur":5,"args":{"External id":1}},
        {"ph":"X","cat":"cuda_runtime","name":"cudaLaunchKernel","pid":1,"tid":1,"ts":11,"dur":2,"args":{"External id":1,"correlation":7}},
        {"ph":"X","cat":"kernel","name":"gemm","pid":0,"tid":7,"ts":12,"dur":3,"args":{"External id":1,"correlation":7}}
    ]}"#;

    /// A coordinator with one complete, unparsed upload whose stored copy is a folder (every read fails
    /// with EISDIR, whoever runs the test: permissions would not stop root).
    fn coordinator_with_unreadable_trace(dir: &std::path::Path) -> (Arc<Coordinator>, UploadKey) {
        let mut cfg = Config::new(dir.to_path_buf());
        cfg.parse_workers = 1;
        cfg.parse_read_attempts = 3;
        cfg.parse_retry_delay = Duration::from_millis(20);
        let coord = Coordinator::open(cfg).expect("coordinator");
        let key =
            UploadKey { sweep_id: "s".into(), point_id: "p".into(), host: "h".into(), trace_name: "t.json".into() };
        let sweep = SweepRow::running("s", Vec::new());
        let job = JobRow {
            id: "j".into(),
            sweep_id: "s".into(),
            agent: "h".into(),
            assign: Vec::new(),
            state: JobState::Assigned,
            error: String::new(),
        };
        {
            let mut s = coord.store();
            s.insert_sweep(&sweep, &[job]).expect("sweep");
            s.open_upload(&key, "j", TRACE.len() as u64, "gpu", None).expect("open");
            s.commit_upload(&key, TRACE.len() as u64, TRACE.len() as u64).expect("commit");
            assert!(s.complete_upload(&key, "digest").expect("complete"));
        }
        let path = coord.store().trace_path(&key).expect("path");
        std::fs::create_dir_all(&path).expect("a folder where the file should be");
        (coord, key)
    }

    /// Releases delayed parses (the watchdog's work) until `done` holds of the upload's row.
    fn wait_for(coord: &Arc<Coordinator>, key: &UploadKey, done: impl Fn(&UploadRow) -> bool) -> UploadRow {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            coord.parse_queue.release_due();
            let row = coord.store().upload(key).expect("row").expect("the upload");
            if done(&row) {
                return row;
            }
            assert!(Instant::now() < deadline, "still waiting: {row:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_stored_trace_that_cannot_be_read_is_read_again_and_not_refused_for_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let (coord, key) = coordinator_with_unreadable_trace(dir.path());
        super::start(&coord).expect("parse pool");
        let deadline = Instant::now() + Duration::from_secs(30);
        while coord.metrics.parse_read_retries.get() == 0 {
            assert!(Instant::now() < deadline, "no read retried");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The fault clears (the disk is back): the next attempt reads the trace.
        let path = coord.store().trace_path(&key).expect("path");
        std::fs::remove_dir(&path).expect("rmdir");
        std::fs::write(&path, TRACE).expect("the trace");
        let row = wait_for(&coord, &key, |r| r.parsed);
        assert_eq!(row.parse_error, "", "read, not refused");
        assert_eq!(coord.metrics.parse_failures.get(), 0);
        assert_eq!(coord.metrics.traces_parsed.get(), 1);
    }

    #[test]
    fn a_stored_trace_unreadable_at_every_attempt_is_recorded_as_the_coordinators_failure() {
        let dir = tempfile::tempdir().expect("tmp");
        let (coord, key) = coordinator_with_unreadable_trace(dir.path());
        super::start(&coord).expect("parse pool");
        let row = wait_for(&coord, &key, |r| r.parsed);
        assert_eq!(coord.metrics.parse_read_retries.get(), 2, "three attempts: two retries");
        assert!(
            row.parse_error.contains("the coordinator could not read its stored copy of h:t.json (3 attempts"),
            "{}",
            row.parse_error
        );
        let stored = coord.store().trace_path(&key).expect("path");
        assert!(row.parse_error.contains(&stored.display().to_string()), "names the stored file: {}", row.parse_error);
    }
}
