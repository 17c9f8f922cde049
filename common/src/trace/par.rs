//! Helpers for the passes that run on several threads once a trace is read (linking, the table): a
//! thread pool of the size asked for, vectors filled on it, sorts that take the orders traces come in.

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

/// The phases of a threaded pass and their seconds, for the debug log (`RUST_LOG=tracefleet_common=debug`):
/// the phases that do not shrink with more threads are what limits the speed-up on many cores.
pub(crate) struct Phases {
    last: std::time::Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Phases {
    /// Starts timing.
    pub(crate) fn start() -> Self {
        Phases { last: std::time::Instant::now(), laps: Vec::new() }
    }

    /// Ends phase `name`.
    pub(crate) fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((name, (now - self.last).as_secs_f64()));
        self.last = now;
    }

    /// Logs the phases of `pass` on `threads` threads.
    pub(crate) fn log(&self, pass: &str, threads: usize) {
        let phases: Vec<String> = self.laps.iter().map(|(n, s)| format!("{n}={s:.3}")).collect();
        tracing::debug!(pass, threads, phases = %phases.join(" "), "threaded pass, seconds per phase");
    }
}

/// `n` copies of `v`, written on the current rayon pool in order. Most of the cost of a fresh vector of
/// millions of items is the first touch of its pages (page faults, over a microsecond each on a VM):
/// taken here on every thread, in address order, instead of one by one in the random order of a tree
/// pass that writes it later (measured: the threaded sums took six times longer on vectors the
/// allocator handed out untouched).
pub(crate) fn filled<T: Copy + Send + Sync>(n: usize, v: T) -> Vec<T> {
    (0..n).into_par_iter().with_min_len(1 << 14).map(|_| v).collect()
}

/// The numbers `0..n` for which `key` gives a key, with their keys, sorted by (key, number), on the
/// current rayon pool, for keys that come nearly in order (ids that grow with time): sorted in one pass
/// when they do ([`sort_nearly_sorted`]), by a parallel sort otherwise. The numbers are unique, so any
/// sort gives one order.
pub(crate) fn sorted_pairs<K: Ord + Copy + Send + Sync>(
    n: usize,
    key: impl Fn(usize) -> Option<K> + Sync,
) -> Vec<(K, u32)> {
    let mut parts = filter_parts(n, |i| key(i).map(|k| (k, i as u32)));
    // Each part sorted on a thread of its own, then the items out of order where two parts meet.
    let parts_sorted = parts.par_iter_mut().all(|p| sort_nearly_sorted(p));
    let lens: Vec<usize> = parts.iter().map(Vec::len).collect();
    let mut keyed = concat(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    drop(parts);
    if !(parts_sorted && mend_seams(&mut keyed, &lens)) {
        keyed.par_sort();
    }
    keyed
}

/// Sorts `v`, made of sorted parts of lengths `lens` one after another, where the parts meet, and says
/// whether `v` is sorted then. At each seam the items out of order are those of the part before that
/// are greater than the first of the part after, and those of the part after that are less than the
/// last of the part before: that window is sorted, on this thread. Where ids come nearly in order the
/// windows hold a few items; once they add up to more than a sixteenth of `v` (ids of two kinds that
/// interleave), mending gives up and says so, for a parallel sort. Whether the whole is sorted is checked
/// at the end on the pool, so that windows that reach past a neighbouring seam cannot leave it unsorted
/// unnoticed.
fn mend_seams<T: Ord + Copy + Send + Sync>(v: &mut [T], lens: &[usize]) -> bool {
    // Empty parts (a run of numbers with nothing kept) are no seams: one between two parts would hide
    // the seam between them.
    let lens: Vec<usize> = lens.iter().copied().filter(|&n| n > 0).collect();
    let mut budget = v.len() / 16;
    let mut start = 0;
    for w in lens.windows(2) {
        let seam = start + w[0];
        start = seam;
        if seam == 0 || seam >= v.len() || v[seam - 1] <= v[seam] {
            continue;
        }
        let (first_after, last_before) = (v[seam], v[seam - 1]);
        let lo = seam - v[seam - w[0]..seam].partition_point(|x| *x <= first_after);
        let hi = seam + v[seam..seam + w[1]].partition_point(|x| *x < last_before);
        if hi - lo > budget {
            return false;
        }
        budget -= hi - lo;
        v[lo..hi].sort_unstable();
    }
    v.par_windows(2).all(|w| w[0] <= w[1])
}

/// Sorts `v` when it is nearly sorted already, and says whether it did: an insertion sort, linear in the
/// length plus the number of places items move, that gives up once items have moved more places than
/// `v` has items (`v` then holds its items in some other order, for a full sort).
///
/// Ids in a trace grow with time, and the profiler writes events nearly in time order: the events'
/// correlation and External ids come nearly sorted, a few out of place. A general sort does its full work
/// on such input; this pass reads the items once. (Host events by start time are not for it: the
/// profiler writes them in long sorted runs, one per kind of event, that interleave in time.)
pub(crate) fn sort_nearly_sorted<T: Ord + Copy>(v: &mut [T]) -> bool {
    let mut budget = v.len();
    for i in 1..v.len() {
        let x = v[i];
        let mut j = i;
        while j > 0 && v[j - 1] > x {
            if budget == 0 {
                v[j] = x;
                return false;
            }
            v[j] = v[j - 1];
            j -= 1;
            budget -= 1;
        }
        v[j] = x;
    }
    true
}

/// Sorts `v` on the calling thread: in one pass when it is nearly sorted ([`sort_nearly_sorted`]).
pub(crate) fn sort_one_thread<T: Ord + Copy>(v: &mut [T]) {
    if !sort_nearly_sorted(v) {
        v.sort_unstable();
    }
}

/// The numbers `0..n` for which `key` gives a key, sorted by (key, number), on the current rayon pool.
///
/// The keys are read through the numbers at each comparison rather than gathered next to them: the
/// profiler writes events in long runs sorted by time (one per kind of event), so the merges read
/// events mostly in file order, and the numbers are a sixth of the size of (key, number) pairs to
/// gather, copy and merge (measured on 4 million host events on two threads: 0.07 s against 0.13 s).
/// The sort is stable and the numbers start in order, so equal keys keep their numbers' order.
pub(crate) fn sorted_by_key<K: Ord + Copy + Send + Sync>(
    n: usize,
    key: impl Fn(usize) -> Option<K> + Sync,
) -> Vec<u32> {
    let mut numbers = filter_collect(n, |i| key(i).map(|_| i as u32));
    numbers.par_sort_by_key(|&i| key(i as usize));
    numbers
}

/// The values `f(0), .., f(n - 1)` that are `Some`, in order, gathered on the current rayon pool.
///
/// Rayon's `filter_map(..).collect()` appends its threads' pieces one after another on one thread: on the
/// millions of items of a large trace, that copy (and the first touch of the memory it fills) is a large
/// part of the pass. Here the pieces are kept apart and joined by [`concat`].
pub(crate) fn filter_collect<T: Copy + Send + Sync>(n: usize, f: impl Fn(usize) -> Option<T> + Sync) -> Vec<T> {
    concat(&filter_parts(n, f).iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// The values of [`filter_collect`] in pieces, one per run of numbers, in order.
fn filter_parts<T: Send>(n: usize, f: impl Fn(usize) -> Option<T> + Sync) -> Vec<Vec<T>> {
    let size = n.div_ceil(rayon::current_num_threads() * 4).max(1);
    (0..n.div_ceil(size)).into_par_iter().map(|p| (p * size..n.min((p + 1) * size)).filter_map(&f).collect()).collect()
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
    fn ids_sorted_by_parts_and_seams_give_the_order_a_sort_gives() {
        // Ids nearly in order with items out of place across the parts' seams, runs that interleave
        // (the seams cannot mend them), and random ids.
        let mut rng = 7u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let near: Vec<u32> = (0..20_000u32).map(|i| i + (next() % 40) as u32).collect();
        let runs: Vec<u32> = (0..20_000u32).map(|i| if i % 2 == 0 { i } else { 20_000 - i }).collect();
        let random: Vec<u32> = (0..20_000).map(|_| (next() % 5000) as u32).collect();
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            for ids in [&near, &runs, &random] {
                let got = pool.install(|| sorted_pairs(ids.len(), |i| (ids[i] % 7 != 3).then_some(ids[i])));
                let mut want: Vec<(u32, u32)> =
                    (0..ids.len()).filter(|&i| ids[i] % 7 != 3).map(|i| (ids[i], i as u32)).collect();
                want.sort_unstable();
                assert_eq!(got, want, "{threads} threads");
            }
        }
    }

    #[test]
    fn one_item_out_of_place_at_a_seam_is_mended_across_an_empty_part() {
        let mut v = vec![1u32, 2, 3, 10];
        v.extend(4..100u32);
        v.extend(101..200u32);
        let n = v.len();
        for lens in [vec![4, n - 4], vec![4, 0, n - 4], vec![0, 4, 0, 0, n - 4, 0]] {
            let mut w = v.clone();
            assert!(mend_seams(&mut w, &lens), "{lens:?}");
            assert!(w.is_sorted(), "{lens:?}");
        }
    }

    #[test]
    fn a_nearly_sorted_vector_is_sorted_in_place_and_a_shuffled_one_given_up_whole() {
        // Sorted, a few items out of place, runs one after another, reversed.
        let mut near: Vec<u32> = (0..10_000).collect();
        near.swap(10, 11);
        near.swap(5000, 4990);
        near[9000..9100].reverse();
        let runs: Vec<u32> = (0..700u32).flat_map(|r| (0..10u32).map(move |i| i * 1000 + r)).collect();
        for (v, sorts) in [(near, true), (runs, false), ((0..5000u32).rev().collect(), false), (vec![], true)] {
            let mut got = v.clone();
            assert_eq!(sort_nearly_sorted(&mut got), sorts);
            let (mut a, mut b) = (got.clone(), v.clone());
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "the items stay the same, whether sorted or given up");
            if sorts {
                assert_eq!(got, a);
            }
        }
    }

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

#[cfg(test)]
/// Random inputs against a plain sort: every order the sorts may meet (random, nearly sorted, reversed,
/// interleaved runs, few distinct keys) and filters that leave whole runs of numbers empty.
mod props {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    fn make(next: &mut impl FnMut() -> u64) -> (Vec<u32>, Vec<bool>) {
        let n = (next() % 3000) as usize;
        let kind = next() % 9;
        let distinct = 1 + next() % 50;
        let keys: Vec<u32> = (0..n as u64)
            .map(|i| match kind {
                0 => (next() % 1_000_000) as u32,
                1 => (i + next() % 40) as u32,
                2 => (n as u64 - i) as u32,
                3 => (next() % distinct) as u32,
                4 => 5,
                5 => {
                    if i % 2 == 0 {
                        i as u32
                    } else {
                        (n as u64 - i) as u32
                    }
                }
                6 => ((i * 7919) % (n as u64).max(1)) as u32,
                7 => {
                    if i < n as u64 / 2 {
                        (i + 1000) as u32
                    } else {
                        i as u32
                    }
                }
                _ => (i / 10 + (next() % 3)) as u32,
            })
            .collect();
        // Filters: all, random, whole blocks missing (empty parts in the middle), sparse.
        let fkind = next() % 4;
        let block = 1 + next() % 400;
        let keep: Vec<bool> = (0..n as u64)
            .map(|i| match fkind {
                0 => true,
                1 => !next().is_multiple_of(3),
                2 => (i / block) % 3 != 1,
                _ => next().is_multiple_of(50),
            })
            .collect();
        (keys, keep)
    }

    #[test]
    fn sorted_pairs_and_sorted_by_key_equal_a_full_sort() {
        let mut next = rng(12345);
        for threads in [1, 2, 3, 5, 8] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            for _ in 0..150 {
                let (keys, keep) = make(&mut next);
                let key = |i: usize| keep[i].then_some(keys[i]);
                let mut want: Vec<(u32, u32)> = (0..keys.len()).filter_map(|i| key(i).map(|k| (k, i as u32))).collect();
                want.sort_unstable();
                let got = pool.install(|| sorted_pairs(keys.len(), key));
                assert_eq!(got, want, "pairs, {threads} threads, {keys:?} {keep:?}");
                let got = pool.install(|| sorted_by_key(keys.len(), key));
                let want_i: Vec<u32> = want.iter().map(|&(_, i)| i).collect();
                assert_eq!(got, want_i, "by_key, {threads} threads");
                let mut one = want.clone();
                one.reverse();
                sort_one_thread(&mut one);
                assert_eq!(one, want);
            }
        }
    }

    #[test]
    fn mended_seams_keep_the_items_and_say_truly_whether_sorted() {
        let mut next = rng(999);
        for _ in 0..5000 {
            let parts = (next() % 6) as usize;
            let mut lens = Vec::new();
            let mut v = Vec::new();
            for _ in 0..parts {
                let len = match next() % 4 {
                    0 => 0,
                    1 => 1,
                    _ => (next() % 30) as usize,
                };
                let base = next() % 100;
                let mut p: Vec<(u32, u32)> =
                    (0..len).map(|_| (((base + next() % 40) as u32), (next() % 1000) as u32)).collect();
                p.sort_unstable();
                lens.push(len);
                v.extend(p);
            }
            let mut want = v.clone();
            want.sort_unstable();
            let mut got = v.clone();
            let sorted = mend_seams(&mut got, &lens);
            let mut g2 = got.clone();
            g2.sort_unstable();
            assert_eq!(g2, want, "permutation {v:?} {lens:?}");
            if sorted {
                assert_eq!(got, want);
            } else {
                assert!(got.windows(2).any(|w| w[0] > w[1]), "said unsorted but sorted {v:?} {lens:?}");
            }
        }
    }

    #[test]
    fn empty_interior_part_defeats_mending() {
        // [1,2,3,10] [] [4,5,...] : one item out of place across an empty part.
        let mut v = vec![1u32, 2, 3, 10];
        v.extend(4..100u32);
        v.extend(101..200u32);
        let lens = [4, 0, v.len() - 4];
        let mut a = v.clone();
        let without_empty = [4, v.len() - 4];
        let mut b = v.clone();
        println!("with empty part: {}, without: {}", mend_seams(&mut a, &lens), mend_seams(&mut b, &without_empty));
    }
}
