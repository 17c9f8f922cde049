//! Plain integer vectors seen as atomics, for the passes where several threads write items of one
//! vector that interleave (runs of a tree, by event number). Building those vectors as atomics and
//! converting them back afterwards costs a fresh allocation and a copy of each (tens of MB on a large
//! trace: a tenth of the threaded table's time on two threads, measured); viewing the plain vector
//! costs nothing.
//!
//! These are std's `AtomicU32::from_mut_slice` and `AtomicI64::from_mut_slice` (unstable, feature
//! `atomic_from_mut`), which do the same cast.

use std::sync::atomic::{AtomicI64, AtomicU32};

// The casts below need the atomics to have the layout of the plain integers. Guaranteed for the size
// and bit validity by std; the alignment differs on some 32-bit targets, where this fails to build.
const _: () = assert!(size_of::<AtomicU32>() == size_of::<u32>() && align_of::<AtomicU32>() == align_of::<u32>());
const _: () = assert!(size_of::<AtomicI64>() == size_of::<i64>() && align_of::<AtomicI64>() == align_of::<i64>());

/// `v` as atomics, for as long as `v` is borrowed.
pub(crate) fn u32s(v: &mut [u32]) -> &[AtomicU32] {
    // SAFETY: same size, alignment (checked above) and bit validity; the exclusive borrow of `v` lasts
    // as long as the returned slice, so no plain access overlaps the atomic ones.
    unsafe { &*(std::ptr::from_mut(v) as *const [AtomicU32]) }
}

/// `v` as atomics, for as long as `v` is borrowed.
pub(crate) fn i64s(v: &mut [i64]) -> &[AtomicI64] {
    // SAFETY: as in `u32s`.
    unsafe { &*(std::ptr::from_mut(v) as *const [AtomicI64]) }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use rayon::prelude::*;

    #[test]
    fn writes_through_the_view_land_in_the_vector() {
        let mut a = vec![7u32; 1000];
        let mut b = vec![0i64; 1000];
        {
            let (va, vb) = (super::u32s(&mut a), super::i64s(&mut b));
            (0..1000usize).into_par_iter().for_each(|i| {
                va[(i * 7) % 1000].store(i as u32, Ordering::Relaxed);
                vb[i].fetch_add(-(i as i64), Ordering::Relaxed);
            });
        }
        assert!((0..1000usize).all(|i| a[(i * 7) % 1000] == i as u32 && b[i] == -(i as i64)));
    }
}
