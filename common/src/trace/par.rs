//! Helpers for the passes that run on several threads once a trace is read (linking, the table): a
//! thread pool of the size asked for, and sorts whose keys are gathered once instead of fetched by index.

use rayon::prelude::*;

/// Below this many retained events, linking and the table run on one thread: starting a pool and
/// splitting the work costs more than it saves.
pub const PARALLEL_MIN_EVENTS: usize = 100_000;

/// A pool of `jobs` threads, or `None` when one thread is asked for, the trace is small (fewer than
/// `min_events` events), or the threads cannot be started (the caller then runs on its own thread).
pub(crate) fn pool(jobs: usize, events: usize, min_events: usize) -> Option<rayon::ThreadPool> {
    if jobs <= 1 || events < min_events {
        return None;
    }
    rayon::ThreadPoolBuilder::new().num_threads(jobs).build().ok()
}

/// The numbers `0..n` for which `key` gives a key, with their keys, sorted by (key, number). The keys
/// are gathered once next to their numbers and sorted there: fetching them through the events on every
/// comparison misses the cache on large traces. The sort is a merge sort: traces are written mostly in
/// time order, and it takes those runs as they are. The numbers are unique, so any sort gives one order.
pub(crate) fn sorted_pairs<K: Ord + Send>(n: usize, key: impl Fn(usize) -> Option<K> + Sync) -> Vec<(K, u32)> {
    let mut keyed: Vec<(K, u32)> = (0..n).into_par_iter().filter_map(|i| key(i).map(|k| (k, i as u32))).collect();
    keyed.par_sort();
    keyed
}

/// The numbers of [`sorted_pairs`], without their keys.
pub(crate) fn sorted_by_key<K: Ord + Send>(n: usize, key: impl Fn(usize) -> Option<K> + Sync) -> Vec<u32> {
    sorted_pairs(n, key).into_par_iter().map(|(_, i)| i).collect()
}
