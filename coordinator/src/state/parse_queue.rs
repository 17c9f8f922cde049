//! The queue of uploaded traces waiting to be parsed, with memory-aware admission of parses.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Uploads being parsed as they arrive, outside the queue (see [`ParseQueue::try_admit_streaming`]).
    streaming: AtomicUsize,
    /// Failed reads of a stored trace so far, by trace (see [`ParseQueue::read_failed`]).
    read_failures: Mutex<HashMap<UploadKey, u32>>,
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

    /// Counts a failed read of `k`'s stored copy. Returns how long to wait before reading it again, the
    /// delay doubling from `first` after each failure, or `None` once `attempts` reads have failed (the
    /// count is then forgotten).
    pub fn read_failed(&self, k: &UploadKey, attempts: u32, first: std::time::Duration) -> Option<std::time::Duration> {
        let mut failures = self.read_failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(k.clone()).or_insert(0);
        *n += 1;
        if *n >= attempts {
            failures.remove(k);
            return None;
        }
        Some(first.saturating_mul(1 << (*n - 1).min(16)))
    }

    /// Forgets `k`'s failed reads (its result is stored, or its upload started over).
    pub fn read_settled(&self, k: &UploadKey) {
        let mut failures = self.read_failures.lock().unwrap_or_else(|e| e.into_inner());
        if !failures.is_empty() {
            failures.remove(k);
        }
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

    /// Takes `cost` bytes of the budget only if they fit now (as [`ParseQueue::admit`] counts them);
    /// `None` when they do not: nothing waits.
    pub(crate) fn try_admit(&self, cost: u64, budget: u64) -> Option<u64> {
        let cost = cost.min(budget);
        let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if *used + cost > budget {
            return None;
        }
        *used += cost;
        Some(cost)
    }

    /// Admits the parse of an upload as it arrives, without waiting: at most `max` at once, and `cost`
    /// bytes that fit in `budget` now. Returns the bytes taken, to give back with
    /// [`ParseQueue::release_streaming`]; `None` leaves the trace to the queue.
    pub(crate) fn try_admit_streaming(&self, cost: u64, budget: u64, max: usize) -> Option<u64> {
        self.streaming.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        let admitted = self.try_admit(cost, budget);
        if admitted.is_none() {
            self.streaming.fetch_sub(1, Ordering::AcqRel);
        }
        admitted
    }

    /// Ends a parse admitted by [`ParseQueue::try_admit_streaming`].
    pub(crate) fn release_streaming(&self, cost: u64) {
        self.streaming.fetch_sub(1, Ordering::AcqRel);
        self.release(cost);
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

#[cfg(test)]
mod tests {
    use super::ParseQueue;

    #[test]
    fn failed_reads_wait_longer_each_time_until_the_last_attempt() {
        use std::time::Duration;
        let q = ParseQueue::default();
        let k = crate::store::UploadKey {
            sweep_id: "s".into(),
            point_id: "p".into(),
            host: "h".into(),
            trace_name: "t.json".into(),
        };
        let s = Duration::from_secs;
        let waits: Vec<_> = (0..4).map(|_| q.read_failed(&k, 4, s(2))).collect();
        assert_eq!(waits, vec![Some(s(2)), Some(s(4)), Some(s(8)), None]);
        // Forgotten after the last attempt, and when settled: a later fault starts from the first wait.
        assert_eq!(q.read_failed(&k, 4, s(2)), Some(s(2)));
        q.read_settled(&k);
        assert_eq!(q.read_failed(&k, 4, s(2)), Some(s(2)));
        q.read_settled(&k);
        assert_eq!(q.read_failed(&k, 1, s(2)), None, "one attempt: no retry");
    }

    #[test]
    fn try_admit_takes_what_fits_now_and_never_waits() {
        let q = ParseQueue::default();
        assert_eq!(q.try_admit(60, 100), Some(60));
        assert_eq!(q.try_admit(60, 100), None, "40 left");
        q.release(60);
        // Bigger than the whole budget: admitted alone, as admit() does.
        assert_eq!(q.try_admit(500, 100), Some(100));
        assert_eq!(q.try_admit(1, 100), None);
    }

    #[test]
    fn streaming_parses_are_bounded_in_number_and_memory() {
        let q = ParseQueue::default();
        let a = q.try_admit_streaming(10, 100, 2).expect("first");
        let b = q.try_admit_streaming(10, 100, 2).expect("second");
        assert_eq!(q.try_admit_streaming(10, 100, 2), None, "two at most");
        q.release_streaming(a);
        assert_eq!(q.try_admit_streaming(95, 100, 2), None, "does not fit beside the other");
        // The refusal gave its place back.
        let c = q.try_admit_streaming(10, 100, 2).expect("room again");
        q.release_streaming(b);
        q.release_streaming(c);
        assert_eq!(q.admit(100, 100), 100, "everything given back");
    }
}
