//! `coord serve` and three agents as separate processes on loopback run a replay sweep of the H200
//! fixtures, split across the agents; the merged outputs equal `coord ingest` of the same traces on one
//! machine (byte for byte for the seed tables; the full tables after sorting rows, with the host column
//! naming the agent instead of "local").

use std::collections::BTreeMap;
use std::time::Duration;

use tracefleet_tests::procs::{Coord, agent, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::sweeps::{assert_same_as_ingest, replay_tree, spec};

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
    let id = submit(&mut c, spec(&replay, 50)).await.expect("submit");
    // Watch streams progress until the sweep ends.
    let mut watch = c.watch(tracefleet_proto::v1::SweepRef { sweep_id: id.clone() }).await.expect("watch").into_inner();
    let mut kinds = Vec::new();
    while let Ok(Some(ev)) = watch.message().await {
        kinds.push(ev.kind());
    }
    use tracefleet_proto::v1::SweepEventKind as Kind;
    assert_eq!(kinds.first(), Some(&Kind::Status));
    assert_eq!(kinds.last(), Some(&Kind::Completed), "{kinds:?}");
    assert!(kinds.iter().filter(|k| **k == Kind::Trace).count() >= 10, "{kinds:?}");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
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
