//! Traces parsed in memory as their upload arrives give what `coord ingest` gives, and a trace whose upload
//! was cut and resumed is parsed from its file instead: each trace is parsed into the results once,
//! whichever way (`tracefleet_parses_stored_total{source=...}`).

use std::time::Duration;

use tracefleet_proto::v1::{SweepRef, SweepState};
use tracefleet_tests::procs::{Coord, agent, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::proxy::Proxy;
use tracefleet_tests::sweeps::{assert_same_as_ingest, large_replay, one_point_spec, replay_tree, spec};

const IN_MEMORY: &str = "tracefleet_parses_stored_total{source=\"memory\"}";
const FROM_FILE: &str = "tracefleet_parses_stored_total{source=\"file\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_parsed_in_memory_give_what_ingest_gives() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = replay_tree(tmp.path());
    // Room for all 18 parses in memory at once: uploads of these small traces finish well before their
    // parses on a 2-core machine, so parses pile up beyond the uploads in flight.
    let room = ["--parse-workers", "18", "--parse-memory-mb", "1024"];
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &room).expect("coord");
    let _agents: Vec<_> =
        ["agent-a", "agent-b"].iter().map(|n| agent(&coord.addr, n, &tmp.path().join(n)).expect("agent")).collect();
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    let id = submit(&mut c, spec(&replay, 0)).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), SweepState::Completed, "{status:?}");
    assert_eq!((status.traces_uploaded, status.traces_parsed, status.traces_refused), (18, 18, 0), "{status:?}");
    let metrics = coord.metrics_text().unwrap_or_default();
    assert_eq!(coord.metric(IN_MEMORY), 18.0, "every trace parsed as it arrived:\n{metrics}");
    assert_eq!(coord.metric(FROM_FILE), 0.0, "none read back from its file:\n{metrics}");
    assert_eq!(coord.metric("tracefleet_traces_parsed_total"), 18.0);
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    assert_same_as_ingest(&results, &replay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_and_resumed_is_parsed_from_its_file_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A 25 MB plain-JSON trace (2 copies of the 8-step fixture), about 2.5 MB of frames on the wire.
    let (replay, _) = large_replay(tmp.path(), 2);
    let coord =
        Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--commit-every-bytes", "1048576"]).expect("coord");
    // Cut every connection once, 1 MB into the agent's traffic: the first stream, parsed in memory from
    // offset 0, breaks partway; the agent resumes past offset 0.
    let proxy = Proxy::start(&coord.addr, 1_000_000).expect("proxy");
    let _agent = agent(&proxy.addr, "agent-r", &tmp.path().join("spool")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent connects");
    let spec = one_point_spec("resume", &replay, 16);
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(180)).await.expect("sweep");
    assert_eq!(status.state(), SweepState::Completed, "{status:?}");
    assert!(proxy.cut.load(std::sync::atomic::Ordering::SeqCst), "the link was cut");
    let metrics = coord.metrics_text().unwrap_or_default();
    assert!(coord.metric("tracefleet_uploads_resumed_total") >= 1.0, "{metrics}");
    assert!(coord.metric("tracefleet_upload_resumed_bytes_total") >= 1_048_576.0, "{metrics}");

    // The broken stream's parse was dropped; the file's parse is the only one stored.
    assert_eq!(coord.metric(IN_MEMORY), 0.0, "{metrics}");
    assert_eq!(coord.metric(FROM_FILE), 1.0, "{metrics}");
    assert_eq!(coord.metric("tracefleet_traces_parsed_total"), 1.0, "{metrics}");
    let st = c.status(SweepRef { sweep_id: id.clone() }).await.expect("status").into_inner();
    assert_eq!((st.traces_uploaded, st.traces_parsed, st.traces_refused), (1, 1, 0), "{st:?}");

    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    let steps = std::fs::read_to_string(results.join("steps.csv")).expect("steps");
    assert_eq!(steps.lines().count() - 1, 16, "2 copies x 8 steps, once each");
    assert_same_as_ingest(&results, &replay);
}
