//! Many points failing at once, on two agents: every failure is recorded with its retry in one
//! transaction and handled before the agent's next message, so every point is run again or reported as
//! failed exactly once, and the sweep ends only after the last of them. (Before, a retry's job id could
//! collide with a concurrent one, and a job's end could complete the sweep between a failure and its retry:
//! points ended neither retried nor reported.) Twenty sweeps in a row, each bounded.

use std::time::Duration;

use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{CommandBackend, Mode, Placement, Point, SweepEventKind, SweepRef, SweepSpec, SweepState};
use tracefleet_tests::procs::{Coord, agent_with, fetch, submit, wait_agents, wait_sweep};

const POINTS: u32 = 16;
const SWEEPS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_point_failures_are_each_retried_or_reported_exactly_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "1"]).expect("coord");
    let _a = agent_with(&coord.addr, "agent-a", &tmp.path().join("a"), &["--allow-command"]).expect("agent a");
    let _b = agent_with(&coord.addr, "agent-b", &tmp.path().join("b"), &["--allow-command"]).expect("agent b");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    for round in 0..SWEEPS {
        let spec = SweepSpec {
            name: format!("fail-{round}"),
            points: (1..=POINTS)
                .map(|bs| Point {
                    point_id: format!("p{bs}"),
                    mode: Mode::Decode.into(),
                    batch_size: bs,
                    input_len: 8,
                    ..Default::default()
                })
                .collect(),
            profile_steps: 1,
            placement: Placement::Spread.into(),
            backend: Some(Backend::Command(CommandBackend { run: "exit 1".into() })),
            ..Default::default()
        };
        let id = submit(&mut c, spec).await.expect("submit");
        let mut watch = c.watch(SweepRef { sweep_id: id.clone() }).await.expect("watch").into_inner();
        let (mut retries, mut failed) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
        let events = async {
            while let Ok(Some(ev)) = watch.message().await {
                match ev.kind() {
                    SweepEventKind::PointRetry => *retries.entry(ev.point_id).or_insert(0) += 1,
                    SweepEventKind::PointFailed => *failed.entry(ev.point_id).or_insert(0) += 1,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), events).await.expect("the sweep ends within a minute");
        let status = wait_sweep(&coord.addr, &id, Duration::from_secs(10)).await.expect("status");
        assert_eq!(status.state(), SweepState::Failed, "round {round}: no point gave data: {status:?}");
        assert_eq!((status.points_total, status.points_failed), (POINTS, POINTS), "round {round}: {status:?}");
        let want: std::collections::BTreeMap<String, i32> = (1..=POINTS).map(|bs| (format!("p{bs}"), 1)).collect();
        assert_eq!(retries, want, "round {round}: every point retried once");
        assert_eq!(failed, want, "round {round}: every point reported failed once");
        let out = tmp.path().join(format!("out-{round}"));
        fetch(&mut c, &id, &out).await.expect("fetch");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest")).expect("json");
        let attempts: Vec<u64> = manifest["point_failures"]
            .as_array()
            .expect("failures")
            .iter()
            .map(|f| f["attempts"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(attempts, vec![2; POINTS as usize], "round {round}");
        // 1 + 1 jobs per point at most, ids unique (the store's primary key would refuse a repeat).
        let jobs = manifest["jobs"].as_array().expect("jobs").len();
        assert!(jobs <= 2 + POINTS as usize, "round {round}: {jobs} jobs");
    }
}
