//! A folder's workload (decode or prefill, and the prompt length) from the tokens its steps fed to the model,
//! where nothing else says it.
//!
//! `coord ingest` takes a step's mode from its path (`decode/`, `prefill/`), the user (`--mode`) or vLLM's
//! step annotation, and its prompt length from the path, `--input-len` or the annotation. Traces of the
//! original experiment carry no annotation and often sit in `logs_B` folders without a mode above them;
//! its server wrote every step of its life there (the prompts' prefills beside the steady decodes). Without
//! a mode, [`crate::aggregate::batch_mismatch`] cannot tell those steps apart, and they were averaged into
//! batch B's row. A controlled sweep runs one shape per folder, so the count most of a folder's steps fed to
//! the model ([`crate::summary::StepSummary::tokens`]) is that shape's: B tokens for B decodes, B × L for B
//! prefills of L tokens. [`infer`] reads the workload from it; the steps that fed another count are then
//! the batch check's to leave out.

use crate::summary::Fed;
use crate::sweep::Mode;

/// A workload read from the tokens a group of steps fed to the model ([`infer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inferred {
    /// Decode or prefill.
    pub mode: Mode,
    /// Prompt length in tokens; for decode, the one known before (0 when none was): decode steps do not
    /// tell it.
    pub input_len: u32,
    /// The count most steps fed, tokens.
    pub tokens: u64,
    /// Steps that fed it.
    pub agreeing: usize,
    /// Steps of the group, with a known count or not.
    pub steps: usize,
}

/// The workload of a group of steps (one folder's, of batch size `batch`), from `fed`, what each step fed
/// to the model (`None` where nothing says: no recorded shapes, or replayed from CUDA graphs), where `mode`
/// and `input_len` are what was known before (`None`, 0: unknown).
///
/// `None` when there is nothing to infer (decode, or prefill of a known length) or nothing says it: no
/// input is fed by more than half of the group's steps (steps without one are among them, so that a
/// folder of graph-replayed decodes is not taken for its few eager prefills), or it is not one of batch
/// `batch`'s: more than one forward pass per step, another number of sequences, where the indices say it
/// (`[sequences, tokens]`), or a token count that is not a multiple of B. Otherwise the majority's token count `c` gives:
/// - mode unknown: decode when `c` = B; prefill of L = `c` / B when `c` is a multiple of B at least 2 B
///   (and L agrees with a known `input_len`);
/// - prefill of unknown length: L = `c` / B when that is at least 2 (B tokens is what B decodes feed: a
///   prefill folder whose server also recorded its decodes is not taken for prefills of one token).
///
/// Decodes feed one token per sequence and a prefill of B prompts of L tokens feeds B × L (both as the
/// sweeps run them: no speculative tokens, no prefix caching, prompts of one length).
pub fn infer(batch: u32, mode: Option<Mode>, input_len: u32, fed: &[Option<Fed>]) -> Option<Inferred> {
    let b = u64::from(batch);
    if b == 0 || mode == Some(Mode::Decode) || (mode == Some(Mode::Prefill) && input_len > 0) {
        return None;
    }
    let (most, agreeing) = majority(fed)?;
    if most.passes > 1 || most.sequences.is_some_and(|n| n != b) {
        return None;
    }
    let c = most.tokens;
    let per_sequence = u32::try_from(c / b).ok().filter(|_| c % b == 0 && c > 0)?;
    let (mode, input_len) = match mode {
        Some(_) if per_sequence >= 2 => (Mode::Prefill, per_sequence),
        Some(_) => return None,
        None if c == b => (Mode::Decode, input_len),
        None if per_sequence >= 2 && (input_len == 0 || input_len == per_sequence) => (Mode::Prefill, per_sequence),
        None => return None,
    };
    Some(Inferred { mode, input_len, tokens: c, agreeing, steps: fed.len() })
}

/// The distinct inputs of `fed`, each with the number of steps that fed it (steps without one left out).
pub fn tally(fed: &[Option<Fed>]) -> std::collections::BTreeMap<Fed, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for &x in fed.iter().flatten() {
        *counts.entry(x).or_default() += 1;
    }
    counts
}

/// The value held by more than half of `v` (entries without one among them), and how many hold it.
fn majority(v: &[Option<Fed>]) -> Option<(Fed, usize)> {
    let counts = tally(v);
    let (&value, &n) = counts.iter().max_by_key(|(_, n)| **n)?;
    (2 * n > v.len()).then_some((value, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(tokens: &[u64]) -> Vec<Option<Fed>> {
        tokens.iter().map(|&t| Some(Fed::tokens(t))).collect()
    }

    fn mode_and_len(batch: u32, mode: Option<Mode>, input_len: u32, tokens: &[u64]) -> Option<(Mode, u32)> {
        infer(batch, mode, input_len, &counts(tokens)).map(|w| (w.mode, w.input_len))
    }

    #[test]
    fn a_folder_of_decodes_with_a_prefill_among_them_is_decode() {
        // logs_8 of the original experiment: the prompts' prefill (8 × 32 tokens), then decodes of 8.
        let w = infer(8, None, 0, &counts(&[256, 8, 8, 8, 8])).expect("inferred");
        assert_eq!(w, Inferred { mode: Mode::Decode, input_len: 0, tokens: 8, agreeing: 4, steps: 5 });
        // A known prompt length stays.
        assert_eq!(mode_and_len(8, None, 32, &[256, 8, 8]), Some((Mode::Decode, 32)));
    }

    #[test]
    fn a_folder_of_prefills_gives_the_prompt_length() {
        assert_eq!(mode_and_len(4, None, 0, &[512, 512, 1]), Some((Mode::Prefill, 128)));
        assert_eq!(mode_and_len(4, Some(Mode::Prefill), 0, &[512, 128, 512]), Some((Mode::Prefill, 128)));
        // B tokens under prefill/ are the server's decodes, not prefills of one token.
        assert_eq!(mode_and_len(4, Some(Mode::Prefill), 0, &[4, 4, 512]), None);
        // A known length that the counts contradict: not inferred (the batch check says which steps).
        assert_eq!(mode_and_len(4, None, 64, &[512, 512]), None);
    }

    #[test]
    fn nothing_is_inferred_without_a_majority_or_a_count_of_the_batch() {
        let infer = |batch, mode, tokens: &[u64]| infer(batch, mode, 0, &counts(tokens));
        assert_eq!(infer(8, None, &[8, 256]), None, "a tie");
        assert_eq!(infer(8, None, &[8, 8, 256, 256, 1]), None, "no majority");
        assert_eq!(infer(8, None, &[]), None);
        assert_eq!(infer(8, None, &[12, 12, 12]), None, "not a multiple of the batch");
        assert_eq!(infer(8, None, &[4, 4]), None, "fewer tokens than sequences");
        assert_eq!(infer(0, None, &[4, 4]), None);
        // Decode, or prefill of a known length: nothing to infer.
        assert_eq!(infer(8, Some(Mode::Decode), &[8, 8]), None);
        assert_eq!(super::infer(4, Some(Mode::Prefill), 128, &counts(&[512])), None);
        // Steps of two forward passes of 8 decodes each: 16 tokens, but not 16 decodes, nor 8.
        let two = Some(Fed { tokens: 16, sequences: None, passes: 2 });
        assert_eq!(super::infer(16, None, 0, &[two, two]), None);
        assert_eq!(super::infer(8, None, 0, &[two, two]), None);
    }

    #[test]
    fn steps_without_a_count_are_not_outvoted_by_the_few_with_one() {
        // logs_8 with CUDA graphs: the prompts' eager prefill has a count, the replayed decodes none.
        let mut fed = vec![Some(Fed::tokens(256))];
        fed.extend([None; 50]);
        assert_eq!(infer(8, None, 0, &fed), None);
        // Most steps counted: the others ride along with their folder.
        let eight = Some(Fed::tokens(8));
        assert_eq!(
            infer(8, None, 0, &[eight, eight, None]).map(|w| (w.mode, w.agreeing, w.steps)),
            Some((Mode::Decode, 2, 3))
        );
    }

    #[test]
    fn two_dimensional_indices_say_the_sequences() {
        let fed = |sequences, per| Some(Fed::batch(sequences, per));
        // logs_8 holding three prefills of one 128-token prompt and two decodes of 8: 128 tokens is 8 × 16,
        // but [1, 128] is one sequence, not batch 8's.
        assert_eq!(infer(8, None, 0, &[fed(1, 128), fed(1, 128), fed(1, 128), fed(8, 1), fed(8, 1)]), None);
        // logs_128: decodes [128, 1] beside prefills [1, 128] (128 tokens each): the decodes are told apart.
        let w = infer(128, None, 0, &[fed(128, 1), fed(128, 1), fed(128, 1), fed(1, 128), fed(1, 128)]);
        assert_eq!(w.map(|w| (w.mode, w.agreeing)), Some((Mode::Decode, 3)));
        assert_eq!(
            infer(4, Some(Mode::Prefill), 0, &[fed(4, 128), fed(4, 128), fed(4, 1)]).map(|w| w.input_len),
            Some(128)
        );
    }
}
