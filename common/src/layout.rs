//! The layout of a results tree: which files are traces, and what the path says about them.
//!
//! The original experiment writes `.../decode/logs_{batch_size}/trace_{step}.json`; vLLM's profiler writes
//! `*.pt.trace.json[.gz]`. The batch size comes from a `logs_N` (or `bs_N`, `bsN`, `batch_N`) path
//! component, the mode from a `decode` or `prefill` component or file-name part.

use std::path::{Path, PathBuf};

use crate::sweep::Mode;

/// File names that are traces: `trace*.json*` (original layout) and `*.pt.trace.json*` (vLLM, torch's
/// `tensorboard_trace_handler`), plain, `.gz` or `.zst`.
pub fn is_trace_file(name: &str) -> bool {
    let base = name.strip_suffix(".gz").or_else(|| name.strip_suffix(".zst")).unwrap_or(name);
    base.ends_with(".json") && (base.starts_with("trace") || base.ends_with(".pt.trace.json"))
}

/// JSON files, plain, `.gz` or `.zst`: the files that may be traces (whether one is, its content says).
pub fn is_json_file(name: &str) -> bool {
    let base = name.strip_suffix(".gz").or_else(|| name.strip_suffix(".zst")).unwrap_or(name);
    base.ends_with(".json")
}

/// The files under a folder that may be traces, and the others with why they were passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// JSON files (plain, `.gz`, `.zst`), sorted.
    pub files: Vec<PathBuf>,
    /// Every other file, sorted, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Every JSON file under `root` (or `root` itself when it is a file, whatever its name), and the files
/// passed over. With `names_only`, only files named as traces ([`is_trace_file`]) count, as a replayed
/// results folder (which also holds oracles and notes) needs.
///
/// # Errors
/// A folder that cannot be read.
pub fn find_traces(root: &Path, names_only: bool) -> std::io::Result<Found> {
    let mut out = Found::default();
    if root.is_file() {
        out.files.push(root.to_path_buf());
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if ty.is_dir() {
                stack.push(path);
            } else if !ty.is_file() {
                out.skipped.push((path, "not a regular file".into()));
            } else if names_only && is_trace_file(name) || !names_only && is_json_file(name) {
                out.files.push(path);
            } else if names_only {
                out.skipped.push((path, "not named as a trace (trace*.json*, *.pt.trace.json*)".into()));
            } else {
                out.skipped.push((path, "not a .json, .json.gz or .json.zst file".into()));
            }
        }
    }
    out.files.sort();
    out.skipped.sort();
    Ok(out)
}

/// A number after one of the prefixes, as a whole `_`/`-`/`.`-separated token of `s`: `logs_32` -> 32,
/// `decode_bs16_8steps` -> 16.
fn number_after(s: &str, prefixes: &[&str]) -> Option<u32> {
    for token in s.split(['_', '-', '.']).collect::<Vec<_>>().windows(2) {
        if prefixes.contains(&token[0])
            && let Ok(n) = token[1].parse()
        {
            return Some(n);
        }
    }
    for token in s.split(['_', '-', '.']) {
        for p in prefixes {
            if let Some(rest) = token.strip_prefix(p)
                && !rest.is_empty()
                && let Ok(n) = rest.parse()
            {
                return Some(n);
            }
        }
    }
    None
}

/// What a trace's path says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathHints {
    /// Batch size from the innermost `logs_N` / `bs_N` / `bsN` / `batch_N` component.
    pub batch_size: Option<u32>,
    /// From the innermost path component that is, or has a `_`/`-`/`.`-separated word that is, `decode` or
    /// `prefill` (one of them: a component with both says neither).
    pub mode: Option<Mode>,
    /// Input length from `ilen_N` / `input_N` / `isl_N` / `in_N` (`inN`, as in the point ids
    /// `decode-bs8-in128`).
    pub input_len: Option<u32>,
}

/// Reads the hints of `path` relative to the tree root `root`.
pub fn hints(root: &Path, path: &Path) -> PathHints {
    let rel = path.strip_prefix(root).unwrap_or(path);
    // Components from the innermost outwards; the root's own name counts too.
    let mut parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if let Some(name) = root.file_name() {
        parts.insert(0, name.to_string_lossy().into_owned());
    }
    parts.reverse();
    let mut h = PathHints::default();
    for p in &parts {
        if h.batch_size.is_none() {
            h.batch_size = number_after(p, &["logs", "bs", "batch", "bsize"]);
        }
        if h.input_len.is_none() {
            h.input_len = number_after(p, &["ilen", "input", "isl", "in"]);
        }
        if h.mode.is_none() {
            let lower = p.to_ascii_lowercase();
            let mut named = Mode::ALL.into_iter().filter(|m| lower.split(['_', '-', '.']).any(|t| t == m.name()));
            // A component naming both (`prefill_then_decode`) says neither.
            h.mode = match (named.next(), named.next()) {
                (Some(m), None) => Some(m),
                _ => None,
            };
        }
    }
    h
}

/// The rank a trace's file name gives (`rank1.1796006197748389129.pt.trace.json`, `worker_rank0.json`), for
/// traces without `distributedInfo`: the digits after the last `rank` in the name, when a non-digit or the
/// end follows them.
pub fn rank_hint(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, after) = name.rsplit_once("rank")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn rank_from_the_file_name() {
        assert_eq!(rank_hint("d/logs_8/rank1.1796006197748389129.pt.trace.json.zst"), Some(1));
        assert_eq!(rank_hint("worker_rank12.json"), Some(12));
        assert_eq!(rank_hint("d/rank3/trace.json"), None);
        assert_eq!(rank_hint("trace_0.json"), None);
    }

    use super::*;

    #[test]
    fn trace_names() {
        assert!(is_trace_file("trace_50.json"));
        assert!(is_trace_file("trace_0.json.gz"));
        assert!(is_trace_file("host_123.1700000.pt.trace.json.gz"));
        assert!(is_trace_file("x.pt.trace.json.zst"));
        assert!(!is_trace_file("oracle_0.json"));
        assert!(!is_trace_file("meta.json"));
    }

    #[test]
    fn path_hints() {
        let h = hints(Path::new("/r"), Path::new("/r/decode/logs_32/trace_1.json"));
        assert_eq!(h.batch_size, Some(32));
        assert_eq!(h.mode, Some(Mode::Decode));
        let h = hints(Path::new("/r/multistep"), Path::new("/r/multistep/decode_bs16_8steps.pt.trace.json"));
        assert_eq!(h.batch_size, Some(16));
        assert_eq!(h.mode, Some(Mode::Decode));
        let h = hints(Path::new("/r"), Path::new("/r/decode/prefill_then_decode/logs_8/trace_0.json"));
        assert_eq!(h.mode, Some(Mode::Decode), "the ambiguous folder says nothing; the one above does");
        let h = hints(Path::new("/r"), Path::new("/r/prefill_then_decode/logs_8/trace_0.json"));
        assert_eq!(h.mode, None);
        let h = hints(Path::new("/x/prefill"), Path::new("/x/prefill/logs_4/trace_0.json"));
        assert_eq!((h.batch_size, h.mode), (Some(4), Some(Mode::Prefill)));
        assert_eq!(hints(Path::new("/x"), Path::new("/x/ilen_128/logs_2/trace_0.json")).input_len, Some(128));
        // A sweep's point folders: decode-bs8-in256/decode/logs_8/...
        let h = hints(Path::new("/w"), Path::new("/w/decode-bs8-in256/decode/logs_8/rank0.1.pt.trace.json"));
        assert_eq!((h.batch_size, h.input_len), (Some(8), Some(256)));
        assert_eq!(hints(Path::new("/x"), Path::new("/x/int8/logs_2/trace_0.json")).input_len, None);
    }
}
