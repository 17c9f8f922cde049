//! Which GPUs of a host a job takes: one rule for the agent (which takes them) and the coordinator (which
//! sends a job only when they are free).
//!
//! A job with tensor parallelism takes all its GPUs of one kind (one name): its ranks run in lockstep, so
//! a pair of an A100 and an H100 would measure neither, and its traces would name two GPUs for one point.
//! Among the kinds with enough free GPUs, the one that reaches that many first in index order; within it,
//! the lowest indexes (neighbours, where the host numbers them so). A job waiting for GPUs holds back
//! only GPUs of the kinds that could ever hold it ([`usable`]).

/// `n` GPUs of one kind among `free`, given as (index, name) in increasing index order: those of the kind
/// that first has `n` in that order (its lowest indexes); `None` when no kind has `n` there. `n` of 0
/// takes nothing; `n` of 1 takes the first.
pub fn pick<'a>(free: impl IntoIterator<Item = (u32, &'a str)>, n: usize) -> Option<Vec<u32>> {
    if n == 0 {
        return Some(Vec::new());
    }
    // Kinds in the order of their first free GPU, each with its free GPUs in order.
    let mut kinds: Vec<(&str, Vec<u32>)> = Vec::new();
    for (index, name) in free {
        let k = match kinds.iter().position(|(kind, _)| *kind == name) {
            Some(k) => k,
            None => {
                kinds.push((name, Vec::new()));
                kinds.len() - 1
            }
        };
        kinds[k].1.push(index);
        if kinds[k].1.len() == n {
            return Some(std::mem::take(&mut kinds[k].1));
        }
    }
    None
}

/// The GPUs among `eligible` (index, name) that a job of `n` GPUs could ever take: those of the kinds with
/// at least `n` of them. A waiting job holds back only these; a kind with fewer is no use to it.
pub fn usable<'a>(eligible: impl IntoIterator<Item = (u32, &'a str)>, n: usize) -> Vec<u32> {
    let eligible: Vec<(u32, &str)> = eligible.into_iter().collect();
    let counts = per_kind(eligible.iter().map(|(_, name)| *name));
    eligible
        .into_iter()
        .filter(|(_, name)| counts.iter().any(|(kind, c)| kind == name && *c >= n))
        .map(|(index, _)| index)
        .collect()
}

/// GPUs per kind among `names`, kinds in the order of their first GPU.
fn per_kind<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, usize)> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for name in names {
        match counts.iter_mut().find(|(kind, _)| *kind == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
}

/// The most GPUs of one kind among `names`: the largest job (in GPUs) they can hold.
pub fn most_of_one_kind<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    per_kind(names).into_iter().map(|(_, c)| c).max().unwrap_or(0)
}

/// How many jobs of `per_job` GPUs each `names` can hold at once, each job on GPUs of one kind.
pub fn jobs_of_one_kind<'a>(names: impl IntoIterator<Item = &'a str>, per_job: usize) -> usize {
    per_kind(names).into_iter().map(|(_, c)| c / per_job.max(1)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_takes_gpus_of_one_kind_the_lowest_first() {
        let host = [(0, "A100"), (1, "H100"), (2, "A100"), (3, "H100"), (4, "H100")];
        assert_eq!(pick(host, 1), Some(vec![0]));
        assert_eq!(pick(host, 2), Some(vec![0, 2]), "the A100s: their first is the lowest free GPU");
        assert_eq!(pick(host, 3), Some(vec![1, 3, 4]), "only the H100s are three");
        assert_eq!(pick(host, 4), None, "no kind has four, though five are free");
        assert_eq!(pick(host[1..].iter().copied(), 2), Some(vec![1, 3]));
        assert_eq!(pick(host, 0), Some(vec![]));
        assert_eq!(pick([], 1), None);
        assert_eq!(pick([(0, "A"), (1, "H"), (2, "H"), (3, "A")], 2), Some(vec![1, 2]), "the first kind to have two");
    }

    #[test]
    fn a_job_can_use_only_kinds_with_enough_gpus() {
        let host = [(0, "A100"), (1, "H100"), (2, "H100")];
        assert_eq!(usable(host, 2), vec![1, 2]);
        assert_eq!(usable(host, 1), vec![0, 1, 2]);
        assert_eq!(usable(host, 3), Vec::<u32>::new());
    }

    #[test]
    fn kinds_are_counted_apart() {
        let names = ["A100", "H100", "A100", "H100", "H100"];
        assert_eq!(most_of_one_kind(names), 3);
        assert_eq!(most_of_one_kind([]), 0);
        assert_eq!(jobs_of_one_kind(names, 2), 2, "one pair of A100s, one of H100s; the fifth GPU alone");
        assert_eq!(jobs_of_one_kind(names, 1), 5);
        assert_eq!(jobs_of_one_kind(names, 3), 1);
    }
}
