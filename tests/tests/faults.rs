//! Faults: an upload cut mid-stream resumes at the committed offset; a coordinator killed with SIGKILL
//! during a sweep restarts on its data dir and the sweep completes with the same outputs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{Point, ReplayBackend, SweepSpec};
use tracefleet_tests::bin;
use tracefleet_tests::procs::{Coord, agent, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::proxy::Proxy;
use tracefleet_tests::sweeps::{assert_same_as_ingest, replay_tree, spec};

fn sha256_hex(p: &Path) -> String {
    let bytes = std::fs::read(p).expect("read");
    tracefleet_common::wire::hex(&tracefleet_common::wire::sha256(&bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_upload_resumes_at_the_committed_offset() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A 50 MB trace (4 copies of the 8-step fixture): several commits' worth of chunks.
    let replay = tmp.path().join("replay");
    let trace = replay.join("decode/logs_16/trace_0.json");
    std::fs::create_dir_all(trace.parent().expect("parent")).expect("mkdir");
    let o = Command::new(bin("make-large-trace")).args(["--copies", "4"]).arg(&trace).output().expect("generate");
    assert!(o.status.success());
    let coord =
        Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--commit-every-bytes", "1048576"]).expect("coord");
    // Cut every connection once, 2 MB into the agent's traffic (chunk frames are ~100 KB each).
    let proxy = Proxy::start(&coord.addr, 2_000_000).expect("proxy");
    let _agent = agent(&proxy.addr, "agent-r", &tmp.path().join("spool")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent connects");
    let spec = SweepSpec {
        name: "resume".into(),
        points: vec![Point {
            point_id: "bs16".into(),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: 16,
            input_len: 128,
            output_len: 0,
            ..Default::default()
        }],
        profile_steps: 32,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Replay(ReplayBackend { dir: replay.display().to_string(), delay_ms: 0 })),
        ..Default::default()
    };
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert!(proxy.cut.load(std::sync::atomic::Ordering::SeqCst), "the link was cut");

    // Resumed past offset 0, without resending what was committed.
    assert!(coord.metric("tracefleet_uploads_resumed_total") >= 1.0, "{}", coord.metrics_text().unwrap_or_default());
    assert!(coord.metric("tracefleet_upload_resumed_bytes_total") >= 1_048_576.0);
    let raw = std::fs::metadata(&trace).expect("trace").len() as f64;
    assert!(coord.metric("tracefleet_upload_raw_bytes_total") < raw * 1.5, "most bytes were sent once");

    // The stored trace is the file, bit for bit, and counts once.
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["points"][0]["files"][0]["sha256"].as_str(), Some(sha256_hex(&trace).as_str()));
    let steps = std::fs::read_to_string(results.join("steps.csv")).expect("steps");
    assert_eq!(steps.lines().count() - 1, 32, "4 copies x 8 steps, once each");

    // Uploading the finished trace again is answered "complete" and counted once.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", coord.addr)).expect("url").connect_lazy();
    let up = tracefleet_agent::spool::Uploader::new(channel, 1);
    let meta = tracefleet_agent::spool::EntryMeta {
        sweep_id: id.clone(),
        job_id: String::new(),
        point_id: "bs16".into(),
        trace_name: "decode/logs_16/trace_0.json".into(),
        host: "agent-r".into(),
        gpu: String::new(),
        telemetry: None,
    };
    assert_eq!(up.upload(&trace, &meta).await, tracefleet_agent::spool::UploadOutcome::Complete { duplicate: true });
    let st = c.status(tracefleet_proto::v1::SweepRef { sweep_id: id }).await.expect("status").into_inner();
    assert_eq!(st.traces_uploaded, 1);
}

/// A free loopback port (for a coordinator that must come back on the same address).
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_mid_sweep_restarts_and_completes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = replay_tree(tmp.path());
    let data = tmp.path().join("coord");
    let addr = free_port();
    let coord = Coord::start(&data, &addr, &["--commit-every-bytes", "1048576"]).expect("coord");
    let _agents: Vec<_> =
        ["agent-a", "agent-b"].iter().map(|n| agent(&addr, n, &tmp.path().join(n)).expect("agent")).collect();
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    // 150 ms between files: the sweep takes about 1.5 s; kill the coordinator in the middle.
    let id = submit(&mut c, spec(&replay, 150)).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = c.status(tracefleet_proto::v1::SweepRef { sweep_id: id.clone() }).await.expect("status").into_inner();
    assert_eq!(before.state(), tracefleet_proto::v1::SweepState::Running);
    assert!(before.traces_uploaded > 0 && before.traces_uploaded < 18, "{before:?}");
    drop(c);
    drop(coord); // SIGKILL
    tokio::time::sleep(Duration::from_millis(300)).await;
    let coord = Coord::start(&data, &addr, &["--commit-every-bytes", "1048576"]).expect("restart");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!((status.traces_uploaded, status.traces_parsed), (18, 18));
    let mut c = coord.client().await.expect("client");
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    assert_same_as_ingest(&results, &replay);
}
