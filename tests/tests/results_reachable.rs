//! A finished sweep's results are reachable from any machine, by id or name: `coord fetch` (with
//! `--traces`, the raw traces as gzip JSON that Perfetto, HTA and `coord analyze` open), `coord sweeps`
//! lists, `coord rm` deletes and says what it freed.

use std::process::{Command, Output};
use std::time::Duration;

use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{Mode, Placement, Point, ReplayBackend, SweepSpec, SweepState};
use tracefleet_tests::procs::{Coord, agent, submit, wait_agents, wait_sweep};
use tracefleet_tests::{bin, fixture};

fn coord(args: &[&str]) -> Output {
    Command::new(bin("coord")).args(args).output().expect("coord runs")
}

fn ok(o: &Output) -> String {
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{all}");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_list_and_remove_a_sweep_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("coord");
    let server = Coord::start(&data, "127.0.0.1:0", &[]).expect("coord");
    let _a = agent(&server.addr, "agent-a", &tmp.path().join("a")).expect("agent");
    let mut c = server.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    let spec = SweepSpec {
        name: "reachable".into(),
        points: [1u32, 8]
            .map(|bs| Point {
                point_id: format!("decode-bs{bs}"),
                mode: Mode::Decode.into(),
                batch_size: bs,
                input_len: 128,
                ..Default::default()
            })
            .to_vec(),
        profile_steps: 3,
        placement: Placement::Spread.into(),
        backend: Some(Backend::Replay(ReplayBackend {
            dir: fixture("h200-llama-1b").display().to_string(),
            delay_ms: 0,
        })),
        ..Default::default()
    };
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&server.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!(status.state(), SweepState::Completed);
    let addr = server.addr.as_str();

    let out = tmp.path().join("fetched");
    let out_s = out.to_string_lossy().into_owned();
    let said = ok(&coord(&["fetch", "reachable", "--traces", "--out", &out_s, "--coordinator", addr]));
    assert!(said.contains("points 2/2 done"), "{said}");
    assert!(out.join("op_times.tsv").exists() && out.join("manifest.json").exists());
    for bs in [1, 8] {
        for s in 0..3 {
            let got = out.join(format!("traces/decode-bs{bs}/agent-a/decode/logs_{bs}/trace_{s}.json.gz"));
            // Valid gzip JSON ...
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(std::fs::File::open(&got).expect("trace")),
                &mut text,
            )
            .expect("gzip");
            let _: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            // ... that reads back as the original.
            let original = fixture(&format!("h200-llama-1b/decode/logs_{bs}/trace_{s}.json.zst"));
            let a = ok(&coord(&["analyze", "--json", &got.to_string_lossy()]));
            let b = ok(&coord(&["analyze", "--json", &original.to_string_lossy()]));
            assert_eq!(a, b, "{}", got.display());
        }
    }

    let listed = ok(&coord(&["sweeps", "--coordinator", addr]));
    assert!(listed.contains(&id) && listed.contains("reachable"), "{listed}");
    let one = ok(&coord(&["status", "reachable", "--coordinator", addr]));
    assert!(one.contains(&id), "{one}");

    let removed = ok(&coord(&["rm", "reachable", "--coordinator", addr]));
    assert!(
        removed.contains(&format!("removed sweep {id}: 6 stored traces, ")) && removed.contains("MB freed"),
        "{removed}"
    );
    assert!(!data.join("traces").join(&id).exists() && !data.join("results").join(&id).exists());
    let gone = coord(&["status", "reachable", "--coordinator", addr]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no sweep with id or name \"reachable\""));
}
