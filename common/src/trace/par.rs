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
pub(crate) fn sorted_pairs<K: Ord + Copy + Send + Sync>(
    n: usize,
    key: impl Fn(usize) -> Option<K> + Sync,
) -> Vec<(K, u32)> {
    let mut keyed = filter_collect(n, |i| key(i).map(|k| (k, i as u32)));
    keyed.par_sort();
    keyed
}

/// The numbers of [`sorted_pairs`], without their keys.
pub(crate) fn sorted_by_key<K: Ord + Copy + Send + Sync>(
    n: usize,
    key: impl Fn(usize) -> Option<K> + Sync,
) -> Vec<u32> {
    sorted_pairs(n, key).into_par_iter().map(|(_, i)| i).collect()
}

/// The values `f(0), .., f(n - 1)` that are `Some`, in order, gathered on the current rayon pool.
///
/// Rayon's `filter_map(..).collect()` appends its threads' pieces one after another on one thread: on the
/// millions of items of a large trace, that copy (and the first touch of the memory it fills) is a large
/// part of the pass. Here the pieces are kept apart and joined by [`concat`].
pub(crate) fn filter_collect<T: Copy + Send + Sync>(n: usize, f: impl Fn(usize) -> Option<T> + Sync) -> Vec<T> {
    let size = n.div_ceil(rayon::current_num_threads() * 4).max(1);
    let parts: Vec<Vec<T>> = (0..n.div_ceil(size))
        .into_par_iter()
        .map(|p| (p * size..n.min((p + 1) * size)).filter_map(&f).collect())
        .collect();
    concat(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// `parts` one after another, written on the current rayon pool: each position copies its item from the
/// part that holds it (on one thread, the copy would come after zeroing the memory if it was used before).
pub(crate) fn concat<T: Copy + Send + Sync>(parts: &[&[T]]) -> Vec<T> {
    concat_map(parts, |_, item| item)
}

/// [`concat`] with each item passed through `f(part number, item)` on its way.
pub(crate) fn concat_map<T: Copy + Sync, U: Send>(parts: &[&[T]], f: impl Fn(usize, T) -> U + Sync) -> Vec<U> {
    // Where each part starts in the result; empty parts share the next one's start.
    let starts: Vec<usize> = parts
        .iter()
        .scan(0, |at, p| {
            *at += p.len();
            Some(*at - p.len())
        })
        .collect();
    let total = parts.iter().map(|p| p.len()).sum();
    (0..total)
        .into_par_iter()
        .with_min_len(1 << 12)
        .map(|j| {
            // The last part starting at or before `j` holds it (an empty one would end there).
            let k = starts.partition_point(|&s| s <= j) - 1;
            f(k, parts[k][j - starts[k]])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_collect_keeps_what_a_filter_keeps_in_order() {
        let keep = |i: usize| (i % 3 != 1 && !i.is_multiple_of(7)).then_some(i * 10);
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            for n in [0, 1, 2, 7, 100, 1001] {
                let expect: Vec<usize> = (0..n).filter_map(keep).collect();
                assert_eq!(pool.install(|| filter_collect(n, keep)), expect, "{threads} threads, {n} items");
            }
        }
        // Nothing kept at all, and everything.
        assert!(filter_collect(50, |_| None::<u8>).is_empty());
        assert_eq!(filter_collect(50, Some), (0..50).collect::<Vec<_>>());
    }
}
