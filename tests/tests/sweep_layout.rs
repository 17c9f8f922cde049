//! Seed tables are keyed by batch size alone, so a sweep writes one set per (mode, input length) and, under
//! `placement = "each"`, per machine: rows of different experiments are never averaged into one. Each set
//! equals `coord ingest` of the same traces.

use std::time::Duration;

use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{Mode, Placement, Point, ReplayBackend, SweepSpec, SweepState};
use tracefleet_tests::procs::{Coord, agent, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::{bin, fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_input_lengths_on_two_machines_get_four_sets_of_seed_tables() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let _a = agent(&coord.addr, "agent-a", &tmp.path().join("a")).expect("agent a");
    let _b = agent(&coord.addr, "agent-b", &tmp.path().join("b")).expect("agent b");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    // The replayed folder holds one length (128); both lengths replay it, so each set must equal ingest.
    let points = [(1u32, 128u32), (8, 128), (1, 2048), (8, 2048)]
        .map(|(bs, len)| Point {
            point_id: format!("decode-bs{bs}-in{len}"),
            mode: Mode::Decode.into(),
            batch_size: bs,
            input_len: len,
            ..Default::default()
        })
        .to_vec();
    let spec = SweepSpec {
        name: "layout".into(),
        points,
        profile_steps: 3,
        placement: Placement::Each.into(),
        mode: Mode::Decode.into(),
        backend: Some(Backend::Replay(ReplayBackend {
            dir: fixture("h200-llama-1b").display().to_string(),
            delay_ms: 0,
        })),
        ..Default::default()
    };
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), SweepState::Completed, "{status:?}");
    assert_eq!((status.points_total, status.points_done), (8, 8), "{status:?}");
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");

    // coord ingest of the replayed traces, batch 1 and 8.
    let src = tmp.path().join("src");
    for bs in [1, 8] {
        let d = src.join(format!("logs_{bs}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        for s in 0..3 {
            let f = format!("trace_{s}.json.zst");
            std::fs::copy(fixture(&format!("h200-llama-1b/decode/logs_{bs}/{f}")), d.join(&f)).expect("copy");
        }
    }
    let ingest = tmp.path().join("ingest");
    let o = std::process::Command::new(bin("coord"))
        .arg("ingest")
        .arg(&src)
        .args(["--input-len", "128", "--out"])
        .arg(&ingest)
        .output()
        .expect("ingest");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for len in ["in128", "in2048"] {
        for host in ["agent-a", "agent-b"] {
            for f in tracefleet_common::tables::SEED_FILES {
                let got = std::fs::read_to_string(results.join(len).join(host).join(f)).expect(f);
                let want = std::fs::read_to_string(ingest.join(f)).expect(f);
                assert_eq!(got, want, "{len}/{host}/{f}");
            }
        }
    }
    assert!(!results.join("op_times.tsv").exists(), "no merged seed table at the top");
    // The full tables hold every series once, at the top.
    let steps = std::fs::read_to_string(results.join("steps.csv")).expect("steps");
    assert_eq!(steps.lines().count(), 1 + 2 * 2 * 2 * 3, "{steps}");
}
