//! Scheduling with real processes: an agent killed mid-job has its unfinished points run elsewhere; a
//! failing point is retried, then reported, while the others complete; sweeps queue on a busy agent.

use std::time::{Duration, Instant};

use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{Point, ReplayBackend, SweepRef, SweepSpec};
use tracefleet_tests::procs::{Coord, agent, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::sweeps::{assert_same_as_ingest, replay_tree, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_points_are_reassigned() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = replay_tree(tmp.path());
    std::fs::remove_dir_all(replay.join("prefill")).expect("decode only");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--reassign-after-ms", "500"]).expect("coord");
    let mut doomed = Some(agent(&coord.addr, "agent-a", &tmp.path().join("a")).expect("agent a"));
    let _b = agent(&coord.addr, "agent-b", &tmp.path().join("b")).expect("agent b");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    // Decode points only; spread gives agent-a batch 128 (the largest) and agent-b the rest. At 200 ms
    // per file agent-a needs 600 ms for its 3 traces: it dies after 300 ms, mid-job.
    let mut s = spec(&replay, 200);
    s.points.retain(|p| p.mode() == tracefleet_proto::v1::Mode::Decode);
    let id = submit(&mut c, s).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(doomed.take()); // SIGKILL
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!((status.points_total, status.points_done), (4, 4), "the moved point counts once: {status:?}");
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    // Every point once: the same tables as one machine reading the same traces.
    assert_same_as_ingest(&results, &replay);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("manifest.json")).expect("manifest")).expect("json");
    let jobs = manifest["jobs"].as_array().expect("jobs");
    assert!(jobs.iter().any(|j| j["state"] == "reassigned" && j["agent"] == "agent-a"), "{jobs:?}");
    assert!(jobs.iter().any(|j| j["state"] == "done" && j["agent"] == "agent-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_point_is_retried_then_reported() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = replay_tree(tmp.path());
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "2"]).expect("coord");
    let _a = agent(&coord.addr, "agent-a", &tmp.path().join("a")).expect("agent");
    let _b = agent(&coord.addr, "agent-b", &tmp.path().join("b")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    let mut s = spec(&replay, 0);
    // No traces for batch 64 in the replay folder: that point fails every time.
    s.points.push(Point {
        point_id: "decode-bs64".into(),
        mode: tracefleet_proto::v1::Mode::Decode.into(),
        batch_size: 64,
        input_len: 128,
        output_len: 0,
        ..Default::default()
    });
    let id = submit(&mut c, s).await.expect("submit");
    let mut watch = c.watch(SweepRef { sweep_id: id.clone() }).await.expect("watch").into_inner();
    let mut kinds = Vec::new();
    while let Ok(Some(ev)) = watch.message().await {
        kinds.push(ev.kind());
    }
    use tracefleet_proto::v1::SweepEventKind as Kind;
    let count = |k: Kind| kinds.iter().filter(|x| **x == k).count();
    assert_eq!((count(Kind::PointRetry), count(Kind::PointFailed)), (2, 1), "{kinds:?}");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "the other points complete: {status:?}");
    assert_eq!(status.traces_parsed, 18);
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("manifest.json")).expect("manifest")).expect("json");
    let f = &manifest["point_failures"][0];
    assert_eq!(
        (f["point"].as_str(), f["attempts"].as_u64(), f["failed"].as_bool()),
        (Some("decode-bs64"), Some(3), Some(true))
    );
    assert!(f["error"].as_str().unwrap_or_default().contains("no traces for decode batch 64"), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_queue_on_a_busy_agent() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = replay_tree(tmp.path());
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let _a = agent(&coord.addr, "agent-a", &tmp.path().join("a")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    let one_point = |name: &str, bs: u32| SweepSpec {
        name: name.into(),
        points: vec![Point {
            point_id: format!("bs{bs}"),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: bs,
            input_len: 128,
            output_len: 0,
            ..Default::default()
        }],
        profile_steps: 3,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Replay(ReplayBackend { dir: replay.display().to_string(), delay_ms: 300 })),
        ..Default::default()
    };
    let first = submit(&mut c, one_point("first", 1)).await.expect("submit");
    let second = submit(&mut c, one_point("second", 8)).await.expect("submit");
    // Follow both; record when each sweep's traces arrive.
    let t0 = Instant::now();
    use tracefleet_proto::v1::SweepEventKind as Kind;
    let mut times: Vec<(String, Kind, Duration)> = Vec::new();
    let mut w1 = c.watch(SweepRef { sweep_id: first.clone() }).await.expect("watch").into_inner();
    let mut w2 = c.watch(SweepRef { sweep_id: second.clone() }).await.expect("watch").into_inner();
    let (mut d1, mut d2) = (false, false);
    while !(d1 && d2) {
        tokio::select! {
            ev = w1.message(), if !d1 => match ev { Ok(Some(e)) => times.push((first.clone(), e.kind(), t0.elapsed())), _ => d1 = true },
            ev = w2.message(), if !d2 => match ev { Ok(Some(e)) => times.push((second.clone(), e.kind(), t0.elapsed())), _ => d2 = true },
        }
    }
    let at = |s: &str, k: Kind| times.iter().filter(|(x, y, _)| x == s && *y == k).map(|t| t.2).collect::<Vec<_>>();
    let first_done = at(&first, Kind::JobDone);
    let second_traces = at(&second, Kind::Trace);
    assert_eq!(first_done.len(), 1, "{times:?}");
    assert_eq!(second_traces.len(), 3, "{times:?}");
    assert!(second_traces.iter().all(|t| *t > first_done[0]), "the second sweep waited: {times:?}");
}
