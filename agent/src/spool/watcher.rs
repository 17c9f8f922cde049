//! Finds finished JSON files (any `.json`, `.json.gz`, `.json.zst`: the coordinator tells traces from other
//! files by their content) in a workload's output folder: a file is finished when the workload says
//! so, or when it has stopped growing and (for plain JSON) its text is complete.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tracefleet_common::layout::is_json_file;

/// Polls a folder tree.
#[derive(Debug, Default)]
pub struct Watcher {
    /// Size seen at the last poll, per file not yet finished.
    sizes: HashMap<PathBuf, u64>,
    done: HashSet<PathBuf>,
}

/// Whether a plain JSON file ends its top-level value (last non-blank byte is `}` or `]`).
fn json_complete(p: &Path, len: u64) -> bool {
    let Ok(mut f) = std::fs::File::open(p) else { return false };
    let back = len.min(64);
    if f.seek(SeekFrom::Start(len - back)).is_err() {
        return false;
    }
    let mut tail = Vec::new();
    if f.read_to_end(&mut tail).is_err() {
        return false;
    }
    tail.iter().rev().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b == b'}' || b == b']')
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(is_json_file) => out.push(p),
            _ => {}
        }
    }
}

impl Watcher {
    /// Files seen and not yet finished (still growing, or not yet seen twice at one size).
    pub fn pending(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.sizes.keys().cloned().collect();
        v.sort();
        v
    }

    /// Records a file the workload announced as finished, so polls do not report it again; false when a
    /// poll already reported it (the announcement came late).
    pub fn mark_done(&mut self, p: PathBuf) -> bool {
        self.sizes.remove(&p);
        self.done.insert(p)
    }

    /// Files under `dir` that are finished since the last poll. With `workload_done`, a file that is
    /// complete or has stopped growing (the same size as at the last poll) counts, whole or cut: a cut file
    /// goes to the coordinator, which refuses it saying where it ends, rather than being left behind
    /// without a word. One that still grows (a process the workload left behind writes it) stays
    /// [`Self::pending`].
    pub fn poll(&mut self, dir: &Path, workload_done: bool) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk(dir, &mut files);
        files.sort();
        let mut ready = Vec::new();
        for p in files {
            if self.done.contains(&p) {
                continue;
            }
            let Ok(len) = std::fs::metadata(&p).map(|m| m.len()) else { continue };
            let same = self.sizes.get(&p) == Some(&len);
            let stable = same && len > 0;
            let plain = p.extension().is_some_and(|e| e == "json");
            let complete = if plain { json_complete(&p, len) } else { true };
            // Once the workload has ended, an empty file that stays empty is taken too: the coordinator
            // refuses it by name, rather than the point waiting for it and calling it still written.
            if (stable && complete) || (workload_done && ((len > 0 && complete) || same)) {
                self.sizes.remove(&p);
                self.done.insert(p.clone());
                ready.push(p);
            } else {
                self.sizes.insert(p, len);
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_finished_when_complete_and_stable() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("logs_1").join("trace_0.json");
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, b"{\"traceEvents\": [").expect("write");
        let mut w = Watcher::default();
        assert!(w.poll(d.path(), false).is_empty());
        assert!(w.poll(d.path(), false).is_empty(), "stable but incomplete JSON");
        std::fs::write(&p, b"{\"traceEvents\": []}\n").expect("write");
        assert!(w.poll(d.path(), false).is_empty(), "grew since the last poll");
        assert_eq!(w.poll(d.path(), false), vec![p.clone()]);
        assert!(w.poll(d.path(), false).is_empty(), "reported once");
        // Any JSON file may be a trace (a command workload names its own); the coordinator reads its content.
        std::fs::write(d.path().join("profile.json"), b"{\"traceEvents\": []}").expect("write");
        std::fs::write(d.path().join("notes.txt"), b"x").expect("write");
        assert_eq!(w.poll(d.path(), true), vec![d.path().join("profile.json")], "JSON files only");
        // A file cut short and seen for the first time after the workload ended is taken once it has not
        // grown between two polls; until then it is pending.
        let cut = d.path().join("cut.json");
        std::fs::write(&cut, b"{\"traceEvents\": [{").expect("write");
        assert!(w.poll(d.path(), true).is_empty());
        assert_eq!(w.pending(), vec![cut.clone()]);
        assert_eq!(w.poll(d.path(), true), vec![cut]);
        assert!(w.pending().is_empty());
        // One that keeps growing (a process left behind writes it) stays pending.
        let growing = d.path().join("growing.json");
        for n in 1..4 {
            std::fs::write(&growing, vec![b'['; n]).expect("write");
            assert!(w.poll(d.path(), true).is_empty());
        }
        assert_eq!(w.pending(), vec![growing.clone()]);
        std::fs::remove_file(&growing).expect("rm");
        // An empty file: pending while the workload runs; once it has ended, taken when still empty at
        // the next poll.
        let empty = d.path().join("empty.json");
        std::fs::write(&empty, b"").expect("write");
        assert!(w.poll(d.path(), false).is_empty());
        assert!(w.poll(d.path(), false).is_empty(), "may still be written");
        assert_eq!(w.poll(d.path(), true), vec![empty]);
    }
}
