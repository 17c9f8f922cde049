//! Parsing uploaded traces on a bounded pool of worker threads while uploads continue, and writing a
//! sweep's results when it completes.

mod results;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tracefleet_common::summary::{AnalyzeOptions, summarize_file};
use tracefleet_proto::v1::SweepEvent;

pub use results::{complete_if_done, write_results};

use crate::server::Coordinator;
use crate::store::UploadKey;

/// Traces waiting to be parsed. Only keys are queued (the bytes are on disk), so the queue's memory is
/// small whatever the backlog; after a restart it is refilled from the database.
#[derive(Default)]
pub struct ParseQueue {
    q: Mutex<VecDeque<UploadKey>>,
    ready: Condvar,
    /// Bytes of parse memory in use (estimated), against the budget.
    in_use: Mutex<u64>,
    freed: Condvar,
}

/// Estimated peak memory of parsing a trace of `raw` bytes: the engine keeps about a quarter of the
/// text (measured: 24% on a 200 MB trace), plus buffers.
pub fn parse_cost(raw: u64) -> u64 {
    raw / 4 + (16 << 20)
}

impl ParseQueue {
    /// Queues a trace.
    pub fn push(&self, k: UploadKey) {
        self.q.lock().unwrap_or_else(|e| e.into_inner()).push_back(k);
        self.ready.notify_one();
    }

    /// Waiting traces.
    pub fn len(&self) -> usize {
        self.q.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `cost` bytes fit in `budget` (a trace bigger than the whole budget runs alone).
    fn admit(&self, cost: u64, budget: u64) -> u64 {
        let cost = cost.min(budget);
        let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        while *used + cost > budget {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += cost;
        cost
    }

    fn release(&self, cost: u64) {
        let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(cost);
        self.freed.notify_all();
    }

    fn pop(&self) -> UploadKey {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(k) = q.pop_front() {
                return k;
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

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
            eprintln!("sweep {s}: {e:#}");
        }
    }
    Ok(())
}

fn worker(coord: &Arc<Coordinator>) {
    let opts = AnalyzeOptions::default();
    loop {
        let key = coord.parse_queue.pop();
        let (path, raw) = {
            let s = coord.store();
            (s.trace_path(&key), s.upload(&key).ok().flatten().map_or(0, |u| u.raw_size))
        };
        // Memory-aware admission: however many workers, parses in flight fit the memory budget.
        let admitted = coord.parse_queue.admit(parse_cost(raw), coord.cfg.parse_memory_bytes);
        let t0 = Instant::now();
        let result = summarize_file(&path, &opts);
        coord.parse_queue.release(admitted);
        coord.metrics.parse_nanos.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let message = match result {
            Ok(summary) => {
                coord.metrics.traces_parsed.fetch_add(1, Ordering::Relaxed);
                coord.metrics.parsed_bytes.fetch_add(summary.bytes, Ordering::Relaxed);
                match serde_json::to_vec(&summary) {
                    Ok(json) => match coord.store().set_parsed(&key, &json) {
                        Ok(()) => None,
                        Err(e) => Some(e.to_string()),
                    },
                    Err(e) => Some(e.to_string()),
                }
            }
            Err(e) => {
                coord.metrics.parse_failures.fetch_add(1, Ordering::Relaxed);
                // A trace that does not parse still counts as handled, with an empty summary, so that the
                // sweep can end; the failure is reported to watchers and in the manifest.
                let empty = tracefleet_common::summary::TraceSummary {
                    gpu: String::new(),
                    bytes: 0,
                    events: 0,
                    steps: Vec::new(),
                };
                let _ = serde_json::to_vec(&empty).map(|j| coord.store().set_parsed(&key, &j));
                Some(e.to_string())
            }
        };
        if let Some(m) = message {
            eprintln!("parse {}/{}/{}: {m}", key.sweep_id, key.point_id, key.trace_name);
            coord.publish(SweepEvent {
                sweep_id: key.sweep_id.clone(),
                kind: "parse_failed".into(),
                agent: key.host.clone(),
                point_id: key.point_id.clone(),
                message: m,
                ..Default::default()
            });
        }
        if let Err(e) = complete_if_done(coord, &key.sweep_id) {
            eprintln!("sweep {}: {e:#}", key.sweep_id);
        }
    }
}
