//! Workload backends without a GPU: the command backend end to end (a real agent runs a real command
//! that writes trace files), and the Python drivers' argument and job-file handling.

use std::process::Command;
use std::time::Duration;

use tonic::transport::Channel;
use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_proto::v1::{CommandBackend, GpuSettings, Point, SweepSpec, TorchBackend};
use tracefleet_tests::procs::{Coord, Proc, agent_with, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::{fixture, read_json, workspace};

/// A coordinator (points are not retried) with one connected agent, and a client.
async fn start(tmp: &std::path::Path, agent_name: &str) -> (Coord, Proc, SweepsClient<Channel>) {
    let coord = Coord::start(&tmp.join("coord"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    // This agent runs sweeps' commands (a real agent only with the flag; see agent_policy.rs).
    let a = agent_with(&coord.addr, agent_name, &tmp.join("spool"), &["--allow-command"]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    (coord, a, c)
}

/// Decode point `decode-bs{bs}-in128`.
fn decode_point(bs: u32) -> Point {
    Point {
        point_id: format!("decode-bs{bs}-in128"),
        mode: tracefleet_proto::v1::Mode::Decode.into(),
        batch_size: bs,
        input_len: 128,
        output_len: 0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_backend_collects_the_traces_a_command_writes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (coord, _a, mut c) = start(tmp.path(), "agent-c").await;
    let src = fixture("h200-llama-1b/decode");
    // A stand-in for the original experiment's scripts: writes {profile_steps} traces of the batch size
    // into {out_dir}; batch 7 has none, so its command fails.
    // Each file is announced on stdout after a pause, by which time the watcher has seen it already:
    // both ways of learning of a file must count it once.
    let run = format!(
        "test -d {src}/logs_{{batch_size}} && for s in $(seq 0 $(({{profile_steps}} - 1))); do \
         zstd -dq -f {src}/logs_{{batch_size}}/trace_$s.json.zst -o {{out_dir}}/trace_$s.json; sleep 0.3; \
         echo '{{\"event\": \"trace\", \"point\": \"{{point}}\", \"path\": \"'{{out_dir}}/trace_$s.json'\"}}'; done",
        src = src.display()
    );
    let points = [1u32, 8, 7].iter().map(|&bs| decode_point(bs)).collect();
    let spec = SweepSpec {
        name: "cmd".into(),
        points,
        profile_steps: 3,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Command(CommandBackend { run })),
        ..Default::default()
    };
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!(status.traces_parsed, 6);
    let out = tmp.path().join("out");
    fetch(&mut c, &id, &out).await.expect("fetch");
    let steps = std::fs::read_to_string(out.join("steps.csv")).expect("steps");
    assert_eq!(steps.lines().count(), 7, "{steps}");
    assert!(steps.contains(",decode/logs_8/trace_2.json,"), "trace names keep the original layout: {steps}");
    let manifest = read_json(&out.join("manifest.json")).expect("manifest");
    let f = &manifest["point_failures"][0];
    assert_eq!(f["point"].as_str(), Some("decode-bs7-in128"));
    assert!(f["error"].as_str().unwrap_or_default().contains("exited with exit status: 1"), "{f}");

    // GPU telemetry: columns in steps.csv and an entry per trace in the manifest. Without a GPU (CI) they
    // are empty; with one, every trace has readings of the GPU the command ran on.
    let header: Vec<&str> = steps.lines().next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} column"));
    let (samples, sm, throttled) = (col("telemetry_samples"), col("sm_clock_mhz_min"), col("throttled"));
    assert_eq!(header.last(), Some(&"telemetry_samples"));
    let has_gpu = !tracefleet_agent::gpu::inventory(None).0.is_empty();
    for row in steps.lines().skip(1) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{row}");
        if has_gpu {
            assert!(cells[samples].parse::<u32>().is_ok_and(|n| n >= 1), "{row}");
            assert!(cells[sm].parse::<u32>().is_ok_and(|mhz| mhz > 0), "{row}");
            assert!(cells[throttled] == "0" || cells[throttled] == "1", "{row}");
        } else {
            assert!(cells[sm..].iter().all(|c| c.is_empty()), "no GPU, no readings: {row}");
        }
    }
    let files: Vec<&serde_json::Value> = manifest["points"]
        .as_array()
        .expect("points")
        .iter()
        .flat_map(|p| p["files"].as_array().expect("files").iter())
        .collect();
    assert_eq!(files.len(), 6);
    assert!(files.iter().all(|f| f["telemetry"].is_null() != has_gpu), "{files:?}");
    assert!(manifest["throttled_traces"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_locking_is_refused_unless_the_agent_allows_it() {
    // [gpu] lock_clocks_mhz asks the agent to change a GPU setting; an agent started without
    // --allow-clock-locking refuses the job with a message saying why, and the sweep reports it. (Never
    // exercised with permission in tests: test machines are shared.)
    let tmp = tempfile::tempdir().expect("tmp");
    let (coord, _a, mut c) = start(tmp.path(), "agent-l").await;
    let spec = SweepSpec {
        name: "locked".into(),
        points: vec![decode_point(1)],
        profile_steps: 1,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        gpu: Some(GpuSettings { lock_clocks_mhz: 1500 }),
        backend: Some(Backend::Command(CommandBackend { run: "touch {out_dir}/ran".into() })),
        ..Default::default()
    };
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!(status.traces_parsed, 0, "{status:?}");
    let out = tmp.path().join("out");
    fetch(&mut c, &id, &out).await.expect("fetch");
    let manifest = read_json(&out.join("manifest.json")).expect("manifest");
    let job = &manifest["jobs"][0];
    assert_eq!(job["state"].as_str(), Some("failed"), "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("lock GPU clocks at 1500 MHz") && error.contains("--allow-clock-locking"), "{error}");
}

/// A stand-in for Python that speaks the driver protocol without torch: it reads the job file the agent
/// wrote, writes each point's traces (real H200 fixtures) and announces them one second late, checking
/// that the agent left them alone until then; one trace per job it never announces.
const FAKE_DRIVER: &str = r#"
import json, os, subprocess, sys, time
job = json.load(open(sys.argv[sys.argv.index("--job") + 1]))
src = "@FIXTURES@"
def emit(**kw):
    print(json.dumps(kw), flush=True)
for i, p in enumerate(job["points"]):
    bs = p["batch_size"]
    emit(event="point_started", point=p["point_id"])
    folder = os.path.join(job["out_dir"], p["point_id"], p["mode"], f"logs_{bs}")
    os.makedirs(folder, exist_ok=True)
    for s in range(job["profile_steps"]):
        path = os.path.join(folder, f"trace_{s}.json")
        start = time.time()
        subprocess.run(["zstd", "-dqf", f"{src}/logs_{bs}/trace_{s}.json.zst", "-o", path], check=True)
        end = time.time()
        if s == 2 and i == 0:
            continue  # never announced: the agent finds it when the driver has ended
        time.sleep(1.0)
        if not os.path.exists(path):
            emit(event="point_failed", point=p["point_id"], error=f"{path} was taken before it was announced")
        emit(event="trace", point=p["point_id"], path=path, step=s, start=start, end=end)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_traces_are_taken_when_announced() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fake = tmp.path().join("fake_driver.py");
    let src = fixture("h200-llama-1b/decode");
    std::fs::write(&fake, FAKE_DRIVER.replace("@FIXTURES@", &src.display().to_string())).expect("fake driver");
    // The "interpreter": ignores the embedded driver and runs the fake with the same arguments.
    let python = tmp.path().join("python");
    std::fs::write(&python, format!("#!/bin/sh\nexec python3 {} \"$@\"\n", fake.display())).expect("python");
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    // GPU backends are scheduled only on agents with a GPU: this host's is assumed.
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    let allow = python.display().to_string();
    let _a = agent_with(
        &coord.addr,
        "agent-d",
        &tmp.path().join("spool"),
        &["--assume-gpu", "Test GPU", "--allow-python", &allow],
    )
    .expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    let points = [1u32, 8].iter().map(|&bs| decode_point(bs)).collect();
    let spec = SweepSpec {
        name: "announced".into(),
        points,
        profile_steps: 3,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Torch(TorchBackend {
            model: "llama-3.2-1b".into(),
            python: python.display().to_string(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(90)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!((status.traces_parsed, status.jobs_failed), (6, 0), "{status:?}");
    let out = tmp.path().join("out");
    fetch(&mut c, &id, &out).await.expect("fetch");
    let steps = std::fs::read_to_string(out.join("steps.csv")).expect("steps");
    assert_eq!(steps.lines().count(), 7, "{steps}");
    assert!(steps.contains(",decode/logs_1/trace_2.json,"), "the unannounced trace is collected: {steps}");
    let manifest = read_json(&out.join("manifest.json")).expect("manifest");
    assert_eq!(manifest["point_failures"].as_array().map(Vec::len), Some(0), "no trace taken early: {manifest}");
}

fn driver(name: &str) -> std::path::PathBuf {
    workspace().join("agent/drivers").join(name)
}

#[test]
fn python_drivers_check_their_job_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = tmp.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"model": "llama-3.2-1b", "out_dir": "/tmp/x", "profile_steps": 3,
            "points": [{"point_id": "decode-bs8-in128", "mode": "decode", "batch_size": 8, "input_len": 128}]}"#,
    )
    .expect("write");
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"model": "gpt-7", "out_dir": "/tmp/x", "points": [{"point_id": "p", "mode": "decode", "batch_size": 1, "input_len": 1}]}"#)
        .expect("write");
    let bad_mode = tmp.path().join("bad_mode.json");
    std::fs::write(&bad_mode, r#"{"model": "m", "out_dir": "/x", "points": [{"point_id": "p", "mode": "train", "batch_size": 1, "input_len": 1}]}"#)
        .expect("write");
    for d in ["torch_driver.py", "vllm_driver.py"] {
        let o =
            Command::new("python3").arg(driver(d)).arg("--job").arg(&good).arg("--check").output().expect("python3");
        assert!(o.status.success(), "{d}: {}", String::from_utf8_lossy(&o.stderr));
        let line = String::from_utf8_lossy(&o.stdout);
        assert!(line.contains(r#""event": "log""#) && line.contains("job file ok: 1 points"), "{d}: {line}");
        let o = Command::new("python3")
            .arg(driver(d))
            .arg("--job")
            .arg(&bad_mode)
            .arg("--check")
            .output()
            .expect("python3");
        assert_eq!(o.status.code(), Some(2), "{d}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("bad job file"), "{d}");
        let o = Command::new("python3").arg(driver(d)).output().expect("python3");
        assert_eq!(o.status.code(), Some(2), "{d}: --job is required");
    }
    let o = Command::new("python3")
        .arg(driver("torch_driver.py"))
        .arg("--job")
        .arg(&bad)
        .arg("--check")
        .output()
        .expect("python3");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown model 'gpt-7'"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_kills_its_workload_and_exits_cleanly() {
    // SIGTERM (how Kubernetes stops a pod) while a workload runs: the agent kills the workload, resets
    // anything it locked, and exits with status 0 instead of waiting for the workload to finish.
    let tmp = tempfile::tempdir().expect("tmp");
    let (_coord, mut a, mut c) = start(tmp.path(), "agent-s").await;
    let pid_file = tmp.path().join("workload.pid");
    let spec = SweepSpec {
        name: "long".into(),
        points: vec![decode_point(1)],
        profile_steps: 1,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Command(CommandBackend {
            run: format!("echo $$ > {}; exec sleep 600", pid_file.display()),
        })),
        ..Default::default()
    };
    submit(&mut c, spec).await.expect("submit");
    let t0 = std::time::Instant::now();
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            break p;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the workload did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let alive = |pid: u32| Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(alive(pid));
    let term = Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = a.child.try_wait().expect("wait") {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the agent did not stop within 10 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let t0 = std::time::Instant::now();
    while alive(pid) {
        assert!(t0.elapsed() < Duration::from_secs(5), "the workload outlived the agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
