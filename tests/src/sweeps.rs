//! Shared pieces of the sweep tests: the replay tree, the H200 sweep, and the comparison with
//! `coord ingest`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tracefleet_common::sweep::Mode;
use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{Point, ReplayBackend, SweepSpec};

use crate::{bin, fixture};

/// Copies the decode and prefill fixtures into `dir` (the replay source and the ingest root).
pub fn replay_tree(dir: &Path) -> PathBuf {
    let src = dir.join("replay");
    for mode in ["decode", "prefill"] {
        for e in walk(&fixture("h200-llama-1b").join(mode)) {
            let rel = e.strip_prefix(fixture("h200-llama-1b")).unwrap_or(&e);
            let dst = src.join(rel);
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).expect("mkdir");
            }
            std::fs::copy(&e, &dst).expect("copy");
        }
    }
    src
}

/// Files under a folder, sorted.
pub fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The H200 points: decode 1, 8, 32, 128 and prefill 1, 4, 16, input 128.
pub fn spec(replay: &Path, delay_ms: u32) -> SweepSpec {
    let mut points = Vec::new();
    for (mode, sizes) in [(Mode::Decode, &[1u32, 8, 32, 128][..]), (Mode::Prefill, &[1, 4, 16][..])] {
        for &bs in sizes {
            points.push(Point {
                point_id: format!("{mode}-bs{bs}"),
                mode: tracefleet_proto::v1::Mode::from(mode).into(),
                batch_size: bs,
                input_len: 128,
                output_len: 0,
                ..Default::default()
            });
        }
    }
    SweepSpec {
        name: "h200-replay".into(),
        points,
        profile_steps: 3,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Replay(ReplayBackend { dir: replay.display().to_string(), delay_ms })),
        ..Default::default()
    }
}

/// A replay tree in `dir` holding one large plain-JSON trace: `copies` copies of the 8-step decode
/// fixture (about 12.5 MB each) at `decode/logs_16/trace_0.json`. Returns (the tree, the trace).
pub fn large_replay(dir: &Path, copies: u64) -> (PathBuf, PathBuf) {
    let replay = dir.join("replay");
    let trace = replay.join("decode/logs_16/trace_0.json");
    std::fs::create_dir_all(trace.parent().expect("parent")).expect("mkdir");
    let o = Command::new(bin("make-large-trace"))
        .args(["--copies", &copies.to_string()])
        .arg(&trace)
        .output()
        .expect("generate");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (replay, trace)
}

/// A sweep named `name` of one decode point (`bs16`: batch 16, input 128) of `profile_steps` steps,
/// replaying `replay` (a [`large_replay`] tree).
pub fn one_point_spec(name: &str, replay: &Path, profile_steps: u32) -> SweepSpec {
    SweepSpec {
        name: name.into(),
        points: vec![Point {
            point_id: "bs16".into(),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: 16,
            input_len: 128,
            output_len: 0,
            ..Default::default()
        }],
        profile_steps,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Replay(ReplayBackend { dir: replay.display().to_string(), delay_ms: 0 })),
        ..Default::default()
    }
}

/// Rows of a table, header first and the rest sorted, with the host column (if any) blanked.
pub fn normalized(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let host_first = header.starts_with("host,");
    let mut rows: Vec<String> = lines
        .map(|l| if host_first { format!("-{}", &l[l.find(',').unwrap_or(0)..]) } else { l.to_string() })
        .collect();
    rows.sort();
    std::iter::once(header).chain(rows).collect()
}

/// Compares a sweep's results with `coord ingest` of `root`: the seed tables byte for byte, the full
/// tables after sorting rows, with the host column blanked (the sweep names each agent, the offline
/// ingest says "local").
pub fn assert_same_as_ingest(results: &Path, root: &Path) {
    let ingest = results.with_file_name("ingest");
    let o = Command::new(bin("coord"))
        .arg("ingest")
        .arg(root)
        .args(["--input-len", "128", "--out"])
        .arg(&ingest)
        .output()
        .expect("run ingest");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // With one mode the seed tables sit at the top; with several, in one folder per mode.
    let modes: Vec<&str> = ["decode", "prefill"].into_iter().filter(|m| root.join(m).exists()).collect();
    let subdirs: Vec<&str> = if modes.len() > 1 { modes } else { vec![""] };
    for sub in subdirs {
        for f in tracefleet_common::tables::SEED_FILES {
            let a = std::fs::read(results.join(sub).join(f)).expect(f);
            let b = std::fs::read(ingest.join(sub).join(f)).expect(f);
            assert!(a == b, "{sub}/{f} differs");
        }
    }
    for f in tracefleet_common::tables::FULL_FILES {
        assert_eq!(normalized(&results.join(f)), normalized(&ingest.join(f)), "{f}");
    }
}
