//! What an agent runs is its owner's decision: a sweep's `command` backend runs only on an agent started
//! with `--allow-command`, and a Python driver under another interpreter than the agent's own only when
//! `--allow-python` lists it. A refusal reaches the sweep as the point's failure, naming the flag.

use std::time::Duration;

use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{CommandBackend, Point, SweepSpec, SweepState, TorchBackend};
use tracefleet_tests::procs::{Coord, agent_with, fetch, submit, wait_agents, wait_sweep};

fn one_point(backend: Backend) -> SweepSpec {
    SweepSpec {
        name: "policy".into(),
        points: vec![Point {
            point_id: "p".into(),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: 1,
            input_len: 8,
            output_len: 0,
            ..Default::default()
        }],
        profile_steps: 1,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(backend),
        ..Default::default()
    }
}

/// A coordinator and one agent on a host with an A100 (GPU 0) and an H100 (GPU 1) that runs commands.
async fn mixed_host(
    dir: &std::path::Path,
) -> (Coord, tracefleet_tests::procs::Proc, tracefleet_proto::v1::sweeps_client::SweepsClient<tonic::transport::Channel>)
{
    let coord = Coord::start(&dir.join("coord"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    let gpus = ["--assume-gpu", "NVIDIA A100-SXM4-80GB", "--assume-gpu", "NVIDIA H100 80GB HBM3", "--allow-command"];
    let agent = agent_with(&coord.addr, "mixed", &dir.join("spool"), &gpus).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    (coord, agent, c)
}

/// A one-point sweep running `run` on the GPUs `glob` selects.
fn command_on(glob: &str, run: String) -> SweepSpec {
    SweepSpec { gpu_glob: glob.into(), ..one_point(Backend::Command(CommandBackend { run })) }
}

/// Runs `spec` to its end; returns the final state and the point's error from the manifest.
async fn outcome(coord: &Coord, spec: SweepSpec, results: &std::path::Path) -> (SweepState, String) {
    let mut c = coord.client().await.expect("client");
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    fetch(&mut c, &id, results).await.expect("fetch");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("manifest.json")).expect("manifest")).expect("json");
    let error = manifest["point_status"][0]["error"].as_str().unwrap_or_default().to_string();
    (status.state(), error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_commands_and_other_interpreters_only_when_its_owner_allows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    // A GPU is assumed so that the torch sweep is scheduled here (it is refused before anything runs).
    let _agent =
        agent_with(&coord.addr, "plain", &tmp.path().join("spool"), &["--assume-gpu", "Test GPU"]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");

    let marker = tmp.path().join("ran");
    let cmd = Backend::Command(CommandBackend { run: format!("touch {}", marker.display()) });
    let (state, error) = outcome(&coord, one_point(cmd), &tmp.path().join("r1")).await;
    assert_eq!(state, SweepState::Failed);
    assert!(error.contains("does not run `command` backends") && error.contains("--allow-command"), "{error}");
    assert!(!marker.exists(), "the command must not have run");

    let torch = Backend::Torch(TorchBackend {
        model: "llama-3.2-1b".into(),
        python: "/opt/elsewhere/bin/python3".into(),
        ..Default::default()
    });
    let (state, error) = outcome(&coord, one_point(torch), &tmp.path().join("r2")).await;
    assert_eq!(state, SweepState::Failed);
    assert!(
        error.contains("will not run the sweep's python \"/opt/elsewhere/bin/python3\"")
            && error.contains("--allow-python /opt/elsewhere/bin/python3"),
        "{error}"
    );

    // The owner allows commands: the same sweep runs.
    let coord2 = Coord::start(&tmp.path().join("coord2"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    let _allowed =
        agent_with(&coord2.addr, "allowed", &tmp.path().join("spool2"), &["--allow-command"]).expect("agent");
    let mut c2 = coord2.client().await.expect("client");
    wait_agents(&mut c2, 1).await.expect("agent");
    let cmd = Backend::Command(CommandBackend { run: format!("touch {}", marker.display()) });
    let _ = outcome(&coord2, one_point(cmd), &tmp.path().join("r3")).await;
    assert!(marker.exists(), "an allowed command runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_sweep_names_the_refused_job_and_the_flag() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    let _agent = agent_with(&coord.addr, "plain", &tmp.path().join("spool"), &[]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    // The agent is busy for ~2 s with another sweep, so that the command sweep's job is refused after
    // `coord sweep` follows it (a refusal at once could end the sweep before its progress stream opens).
    let replay = tracefleet_tests::sweeps::replay_tree(tmp.path());
    let mut busy = one_point(Backend::Replay(tracefleet_proto::v1::ReplayBackend {
        dir: replay.display().to_string(),
        delay_ms: 700,
    }));
    busy.profile_steps = 3;
    submit(&mut c, busy).await.expect("busy sweep");
    let file = tmp.path().join("cmd.toml");
    std::fs::write(
        &file,
        "name = \"cmd\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [1, 2]\ninput_len = 8\nprofile_steps = 1\n\
         [command]\nrun = \"true\"\n",
    )
    .expect("write");
    let o = std::process::Command::new(tracefleet_tests::bin("coord"))
        .arg("sweep")
        .arg(&file)
        .args(["--coordinator", &coord.addr, "--out"])
        .arg(tmp.path().join("out"))
        .output()
        .expect("coord sweep");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("failure on plain ")).unwrap_or_default();
    assert!(line.contains(" job ") && line.contains("--allow-command"), "{err}");
}

/// `--spool-max-mb`: an agent whose spool holds more than its cap (traces the coordinator has not taken)
/// starts no job; the point fails saying why, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_over_its_cap_starts_no_job() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    // 2 MiB already waiting in the spool (a refused trace kept for inspection), against a 1 MiB cap.
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(spool.join("failed")).expect("spool");
    std::fs::write(spool.join("failed").join("old.json.zst"), vec![7u8; 2 << 20]).expect("fill");
    let _agent = agent_with(&coord.addr, "full", &spool, &["--spool-max-mb", "1", "--allow-command"]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    let marker = tmp.path().join("ran");
    let cmd = Backend::Command(CommandBackend { run: format!("touch {}", marker.display()) });
    let (state, error) = outcome(&coord, one_point(cmd), &tmp.path().join("r")).await;
    assert_eq!(state, SweepState::Failed);
    assert!(error.contains("spool holds 2 MB") && error.contains("--spool-max-mb 1"), "{error}");
    assert!(!marker.exists(), "the job must not have run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_gpus_of_two_kinds_runs_a_sweep_on_the_kind_it_selects() {
    // GPU 0 is an A100, GPU 1 an H100: a sweep for H100s must run on GPU 1, though GPU 0 is free and first.
    let tmp = tempfile::tempdir().expect("tmp");
    let (coord, _agent, mut c) = mixed_host(tmp.path()).await;
    let seen = tmp.path().join("visible");
    let run = format!("printf %s \"$CUDA_VISIBLE_DEVICES\" > {}", seen.display());
    let spec = command_on("*H100*", run.clone());
    let _ = outcome(&coord, spec, &tmp.path().join("r1")).await;
    assert_eq!(std::fs::read_to_string(&seen).expect("the command ran"), "1", "the H100's index");

    // A sweep for a kind the host does not have is not given to it (refused at submission, saying why).
    let spec = command_on("*H200*", run);
    let refused = submit(&mut c, spec).await.expect_err("no H200 here");
    assert!(format!("{refused:#}").contains("H200"), "{refused:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_for_a_free_kind_of_gpu_starts_while_sweeps_for_a_busy_kind_wait() {
    // GPU 0 is an A100, GPU 1 an H100. Two sweeps for the H100 come first: the second waits for the first.
    // A sweep for the A100 must start at once, not wait behind them as if the host were full.
    let tmp = tempfile::tempdir().expect("tmp");
    let (coord, _agent, mut c) = mixed_host(tmp.path()).await;
    let gate = tmp.path().join("gate");
    let first = command_on("*H100*", format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display()));
    let first = submit(&mut c, first).await.expect("first H100 sweep");
    let second = tmp.path().join("second-ran");
    let second = submit(&mut c, command_on("*H100*", format!("touch {}", second.display()))).await.expect("second");
    let a100 = tmp.path().join("a100-ran");
    let a100_id =
        submit(&mut c, command_on("*A100*", format!("printf %s \"$CUDA_VISIBLE_DEVICES\" > {}", a100.display())))
            .await
            .expect("A100 sweep");
    // The A100 sweep ends while the first H100 sweep still holds its GPU.
    let status = wait_sweep(&coord.addr, &a100_id, Duration::from_secs(30)).await;
    assert!(status.is_ok(), "the A100 sweep did not end while the H100 was busy: {status:?}");
    assert_eq!(std::fs::read_to_string(&a100).expect("the A100 command ran"), "0");
    assert!(!tmp.path().join("second-ran").exists(), "the second H100 sweep must wait for the first");
    std::fs::write(&gate, b"").expect("open the gate");
    for id in [first, second] {
        wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("H100 sweeps end");
    }
    assert!(tmp.path().join("second-ran").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_counts_the_gpus_a_job_holds_as_its_agent_reports_them() {
    // GPU 0 is an A100, GPU 1 an H100. A sweep for any GPU starts while the A100 is busy, so it runs on the
    // H100. Once the A100 is free again, a sweep for it must start there at once: the coordinator knows
    // which GPU the first job holds (its agent said so), and does not take it for the A100.
    let tmp = tempfile::tempdir().expect("tmp");
    let (coord, _agent, mut c) = mixed_host(tmp.path()).await;
    // Runs, saying on which GPU, until its gate opens.
    let gated = |name: &str| {
        let (gate, on) = (tmp.path().join(format!("{name}-gate")), tmp.path().join(format!("{name}-on")));
        let run = format!(
            "printf %s \"$CUDA_VISIBLE_DEVICES\" > {on}.tmp && mv {on}.tmp {on}; while [ ! -e {gate} ]; do sleep 0.05; done",
            on = on.display(),
            gate = gate.display()
        );
        (run, gate, on)
    };
    let started = |on: &std::path::Path| {
        let on = on.to_path_buf();
        async move {
            for _ in 0..600 {
                if let Ok(s) = std::fs::read_to_string(&on) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{} never started", on.display());
        }
    };
    let (run, a100_gate, a100_on) = gated("a100");
    let a100 = submit(&mut c, command_on("*A100*", run)).await.expect("A100 sweep");
    assert_eq!(started(&a100_on).await, "0");
    let (run, any_gate, any_on) = gated("any");
    let any = submit(&mut c, command_on("", run)).await.expect("sweep for any GPU");
    assert_eq!(started(&any_on).await, "1", "the only free GPU");
    std::fs::write(&a100_gate, b"").expect("open");
    wait_sweep(&coord.addr, &a100, Duration::from_secs(60)).await.expect("the first A100 sweep ends");

    let seen = tmp.path().join("second-a100");
    let second = command_on("*A100*", format!("printf %s \"$CUDA_VISIBLE_DEVICES\" > {}", seen.display()));
    let second = submit(&mut c, second).await.expect("second A100 sweep");
    let status = wait_sweep(&coord.addr, &second, Duration::from_secs(30)).await;
    assert!(status.is_ok(), "the A100 is free, yet its sweep did not run while the H100 was busy: {status:?}");
    assert_eq!(std::fs::read_to_string(&seen).expect("ran"), "0");
    std::fs::write(&any_gate, b"").expect("open");
    wait_sweep(&coord.addr, &any, Duration::from_secs(60)).await.expect("the sweep for any GPU ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_for_a_gpu_backend_goes_only_to_the_matching_agents_that_have_a_gpu() {
    // Two agents match (no selector), one without a GPU: an `each` torch sweep runs on the other only,
    // rather than failing every point on the host that has none.
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    let _gpu =
        agent_with(&coord.addr, "gpu-host", &tmp.path().join("s1"), &["--assume-gpu", "Test GPU"]).expect("agent");
    let _cpu = agent_with(&coord.addr, "cpu-host", &tmp.path().join("s2"), &[]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    // An interpreter the agent does not allow: the point fails at once, where it runs.
    let torch = Backend::Torch(TorchBackend {
        model: "llama-3.2-1b".into(),
        python: "/opt/elsewhere/bin/python3".into(),
        ..Default::default()
    });
    let spec = SweepSpec { placement: tracefleet_proto::v1::Placement::Each.into(), ..one_point(torch.clone()) };
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!((status.jobs_total, status.points_total), (1, 1), "{status:?}");
    // Named by the sweep, a host without a GPU is not left out without a word: refused, saying which.
    let spec = SweepSpec {
        placement: tracefleet_proto::v1::Placement::Each.into(),
        agents: vec!["gpu-host".into(), "cpu-host".into()],
        ..one_point(torch.clone())
    };
    let refused = format!("{:#}", submit(&mut c, spec).await.expect_err("cpu-host has no GPU"));
    assert!(
        refused.contains("the torch backend needs a GPU, and the sweep names hosts that report none (cpu-host)"),
        "{refused}"
    );

    // A retry goes to an agent with a GPU too: the host without one would be the least loaded. The
    // "interpreter" reports the point failed, as a driver does when its model fails to load.
    let python = tmp.path().join("failing-python");
    std::fs::write(&python, "#!/bin/sh\necho '{\"event\": \"point_failed\", \"point\": \"p\", \"error\": \"boom\"}'\n")
        .expect("write");
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let torch = Backend::Torch(TorchBackend {
        model: "llama-3.2-1b".into(),
        python: python.display().to_string(),
        ..Default::default()
    });
    let coord = Coord::start(&tmp.path().join("coord2"), "127.0.0.1:0", &["--point-retries", "1"]).expect("coord");
    let allow = ["--assume-gpu", "Test GPU", "--allow-python", &python.display().to_string(), "--no-warm-driver"];
    let _gpu = agent_with(&coord.addr, "gpu-host", &tmp.path().join("s3"), &allow).expect("agent");
    let _cpu = agent_with(&coord.addr, "cpu-host", &tmp.path().join("s4"), &allow[2..]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    let (state, _) = outcome(&coord, one_point(torch), &tmp.path().join("r")).await;
    assert_eq!(state, SweepState::Failed);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("r/manifest.json")).expect("manifest")).expect("json");
    let p = &manifest["point_status"][0];
    assert_eq!((p["agent"].as_str(), p["attempts"].as_u64()), (Some("gpu-host"), Some(2)), "{manifest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_each_sweeps_point_that_fails_on_one_host_runs_again_there_and_only_there() {
    // `each`: both hosts run the point, for a series each. It fails on host-a at every run; host-b's run
    // succeeds. host-a's retries stay on host-a (before, they went to host-b, which then ran its point
    // twice), and host-a's failures are not counted against host-b's point.
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "2"]).expect("coord");
    let _a = agent_with(&coord.addr, "host-a", &tmp.path().join("spool-a"), &["--allow-command"]).expect("agent");
    let _b = agent_with(&coord.addr, "host-b", &tmp.path().join("spool-b"), &["--allow-command"]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    let trace = tracefleet_tests::fixture("h200-llama-1b/decode/logs_8/trace_0.json.zst");
    let runs = tmp.path().join("runs.log");
    // Each run notes where it ran (the output folder is under the agent's spool), then fails on host-a.
    let run = format!(
        "echo {{out_dir}} >> {runs}; case {{out_dir}} in *spool-a*) echo 'out of memory' >&2; exit 1;; esac; \
         cp {trace} {{out_dir}}/trace_0.json.zst",
        runs = runs.display(),
        trace = trace.display()
    );
    let spec = SweepSpec {
        placement: tracefleet_proto::v1::Placement::Each.into(),
        ..one_point(Backend::Command(CommandBackend { run }))
    };
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(90)).await.expect("sweep");
    assert_eq!((status.points_done, status.points_failed), (1, 1), "{status:?}");
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("manifest.json")).expect("manifest")).expect("json");
    let points: Vec<(String, String, u64, u64)> = manifest["point_status"]
        .as_array()
        .expect("point_status")
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("agent"), s("state"), p["attempts"].as_u64().unwrap_or(99), p["traces"].as_u64().unwrap_or(99))
        })
        .collect();
    let want = [("host-a", "failed", 3, 0), ("host-b", "done", 0, 1)];
    assert_eq!(points, want.map(|(a, s, n, t)| (a.to_string(), s.to_string(), n, t)), "{manifest}");
    let log = std::fs::read_to_string(&runs).expect("runs");
    let on = |spool: &str| log.lines().filter(|l| l.contains(spool)).count();
    assert_eq!((on("spool-a"), on("spool-b")), (3, 1), "three runs on host-a, one on host-b:\n{log}");
}
