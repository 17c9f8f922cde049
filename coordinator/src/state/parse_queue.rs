//! The queue of uploaded traces waiting to be parsed, with memory-aware admission of parses.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

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
    /// Traces to queue again once their time has come (their result could not be stored).
    later: Mutex<Vec<(std::time::Instant, UploadKey)>>,
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

    /// Queues a trace again after `delay` (see [`ParseQueue::release_due`]).
    pub fn push_later(&self, k: UploadKey, delay: std::time::Duration) {
        self.later.lock().unwrap_or_else(|e| e.into_inner()).push((std::time::Instant::now() + delay, k));
    }

    /// Queues the traces whose delay has passed; the watchdog calls it every heartbeat interval.
    pub fn release_due(&self) {
        let now = std::time::Instant::now();
        let due: Vec<UploadKey> = {
            let mut later = self.later.lock().unwrap_or_else(|e| e.into_inner());
            let (due, wait): (Vec<_>, Vec<_>) = later.drain(..).partition(|(at, _)| *at <= now);
            *later = wait;
            due.into_iter().map(|(_, k)| k).collect()
        };
        for k in due {
            self.push(k);
        }
    }

    /// Waiting traces.
    pub fn len(&self) -> usize {
        self.q.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until `cost` bytes fit in `budget` (a trace bigger than the whole budget runs alone).
    pub(crate) fn admit(&self, cost: u64, budget: u64) -> u64 {
        let cost = cost.min(budget);
        let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        while *used + cost > budget {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += cost;
        cost
    }

    pub(crate) fn release(&self, cost: u64) {
        let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(cost);
        self.freed.notify_all();
    }

    pub(crate) fn pop(&self) -> UploadKey {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(k) = q.pop_front() {
                return k;
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}
