//! `coord serve` and three agents as separate processes on loopback run a replay sweep of the H200
//! fixtures, split across the agents; the merged outputs equal `coord ingest` of the same traces on one
//! machine (byte for byte for the seed tables; the full tables after sorting rows, with the host column
//! naming the agent instead of "local").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{Point, ReplayBackend, SweepSpec};
use tracefleet_tests::procs::{Coord, agent, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::{bin, fixture};

/// Copies the decode and prefill fixtures into `dir` (the replay source and the ingest root).
pub fn replay_tree(dir: &Path) -> PathBuf {
    let src = dir.join("replay");
    for mode in ["decode", "prefill"] {
        for e in walk(&fixture("h200-llama-1b").join(mode)) {
            let rel = e.strip_prefix(fixture("h200-llama-1b")).expect("under fixtures");
            let dst = src.join(rel);
            std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&e, &dst).expect("copy");
        }
    }
    src
}

fn walk(d: &Path) -> Vec<PathBuf> {
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
    for (mode, sizes) in [("decode", &[1u32, 8, 32, 128][..]), ("prefill", &[1, 4, 16][..])] {
        for &bs in sizes {
            points.push(Point {
                point_id: format!("{mode}-bs{bs}"),
                mode: mode.into(),
                batch_size: bs,
                input_len: 128,
                output_len: 0,
            });
        }
    }
    SweepSpec {
        name: "h200-replay".into(),
        points,
        profile_steps: 3,
        placement: "spread".into(),
        backend: Some(Backend::Replay(ReplayBackend { dir: replay.display().to_string(), delay_ms })),
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

/// Compares a sweep's results with `coord ingest` of `root`.
pub fn assert_same_as_ingest(results: &Path, root: &Path) {
    let ingest = results.with_file_name("ingest");
    let o = Command::new(bin("coord"))
        .arg("ingest")
        .arg(root.join("decode"))
        .arg(root.join("prefill"))
        .args(["--input-len", "128", "--out"])
        .arg(&ingest)
        .output()
        .expect("run ingest");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // ingest of two roots names traces relative to each root; the sweep relative to the replay folder.
    for mode in ["decode", "prefill"] {
        for f in ["op_times.tsv", "op_times_detailed.tsv", "kernel_dat.csv"] {
            let a = std::fs::read(results.join(mode).join(f)).expect(f);
            let b = std::fs::read(ingest.join(mode).join(f)).expect(f);
            assert!(a == b, "{mode}/{f} differs");
        }
    }
    for f in ["ops.csv", "kernels.csv"] {
        assert_eq!(normalized(&results.join(f)), normalized(&ingest.join(f)), "{f}");
    }
    let strip_mode = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter().map(|r| r.replace(",decode/logs_", ",logs_").replace(",prefill/logs_", ",logs_")).collect()
    };
    let mut a = strip_mode(normalized(&results.join("steps.csv")));
    let mut b = strip_mode(normalized(&ingest.join("steps.csv")));
    a.sort();
    b.sort();
    assert_eq!(a, b, "steps.csv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_equal_one_machine() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = replay_tree(tmp.path());
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--parse-workers", "2"]).expect("coord");
    let _agents: Vec<_> = ["agent-a", "agent-b", "agent-c"]
        .iter()
        .map(|n| agent(&coord.addr, n, &tmp.path().join(n)).expect("agent"))
        .collect();
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 3).await.expect("agents");
    let id = submit(&mut c, spec(&replay, 0)).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state, "completed", "{status:?}");
    assert_eq!((status.jobs_total, status.jobs_done), (3, 3));
    assert_eq!(status.traces_uploaded, 18);
    assert_eq!(status.traces_parsed, 18);

    let results = tmp.path().join("results");
    let files = fetch(&mut c, &id, &results).await.expect("fetch");
    assert!(files.len() >= 10, "{files:?}");
    assert_same_as_ingest(&results, &replay);

    // Three hosts took part, each point once.
    let steps = std::fs::read_to_string(results.join("steps.csv")).expect("steps");
    let hosts: std::collections::BTreeSet<&str> = steps.lines().skip(1).filter_map(|l| l.split(',').next()).collect();
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["agents"].as_array().map(Vec::len), Some(3));
    let mut traces: BTreeMap<String, u64> = BTreeMap::new();
    for p in manifest["points"].as_array().expect("points") {
        traces.insert(p["point"].as_str().unwrap_or_default().into(), p["traces"].as_u64().unwrap_or(0));
        for f in p["files"].as_array().expect("files") {
            assert_eq!(f["sha256"].as_str().map(str::len), Some(64));
        }
    }
    assert_eq!(traces.len(), 7);
    assert_eq!(traces["decode-bs1"], 3);
    assert_eq!(traces["prefill-bs16"], 2);
}
