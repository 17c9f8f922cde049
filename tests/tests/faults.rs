//! Faults: an upload cut mid-stream resumes at the committed offset; a coordinator killed with SIGKILL
//! during a sweep restarts on its data dir and the sweep completes with the same outputs; an agent
//! partitioned past the reassign window comes back and is not counted twice; a link cut every 300 kB
//! still delivers every byte; a job that ends while its agent reconnects over a slow link is reported; a
//! point or a job that fails while its agent is cut off is reported when it is back, and a failure
//! reported twice counts once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tonic::transport::Channel;
use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_proto::v1::{Point, SweepRef, SweepSpec};
use tracefleet_tests::bin;
use tracefleet_tests::procs::{Coord, Proc, agent, agent_with, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::proxy::Proxy;
use tracefleet_tests::sweeps::{assert_same_as_ingest, large_replay, one_point_spec, replay_tree, spec};

/// Fetches a one-point sweep's results into `results`: its stored trace is `trace` bit for bit (SHA-256 in
/// the manifest), and `steps.csv` has each of its `steps` steps once.
async fn assert_stored_once(
    c: &mut tracefleet_proto::v1::sweeps_client::SweepsClient<tonic::transport::Channel>,
    id: &str,
    results: &Path,
    trace: &Path,
    steps: u64,
) {
    fetch(c, id, results).await.expect("fetch");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["points"][0]["files"][0]["sha256"].as_str(), Some(sha256_hex(trace).as_str()));
    let rows = std::fs::read_to_string(results.join("steps.csv")).expect("steps");
    assert_eq!(rows.lines().count() as u64 - 1, steps, "every step once");
}

fn sha256_hex(p: &Path) -> String {
    let bytes = std::fs::read(p).expect("read");
    tracefleet_common::wire::hex(&tracefleet_common::wire::sha256(&bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_upload_resumes_at_the_committed_offset() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A 50 MB trace (4 copies of the 8-step fixture): several commits' worth of chunks.
    let (replay, trace) = large_replay(tmp.path(), 4);
    let coord =
        Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--commit-every-bytes", "1048576"]).expect("coord");
    // Cut every connection once, 2 MB into the agent's traffic (chunk frames are ~100 KB each).
    let proxy = Proxy::start(&coord.addr, 2_000_000).expect("proxy");
    let _agent = agent(&proxy.addr, "agent-r", &tmp.path().join("spool")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent connects");
    let spec = one_point_spec("resume", &replay, 32);
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
    // 4 copies x 8 steps, once each.
    assert_stored_once(&mut c, &id, &tmp.path().join("results"), &trace, 32).await;

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

/// The decode half of the replay tree (4 points x 3 traces = 12), as its own ingest root.
fn decode_tree(dir: &Path) -> std::path::PathBuf {
    let all = replay_tree(dir);
    let _ = std::fs::remove_dir_all(all.join("prefill"));
    all
}

/// A sweep of one decode point (batch 1, 3 steps) run by a command.
fn one_command_point(name: &str, run: String) -> SweepSpec {
    SweepSpec {
        name: name.into(),
        points: vec![Point {
            point_id: "bs1".into(),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: 1,
            input_len: 128,
            ..Default::default()
        }],
        profile_steps: 3,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Command(tracefleet_proto::v1::CommandBackend { run })),
        ..Default::default()
    }
}

/// The decode points of the H200 spec.
fn decode_spec(replay: &Path, delay_ms: u32) -> SweepSpec {
    let mut s = spec(replay, delay_ms);
    s.points.retain(|p| p.mode() == tracefleet_proto::v1::Mode::Decode);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_partitioned_past_the_reassign_window_is_not_counted_twice() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = decode_tree(tmp.path());
    let coord =
        Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--reassign-after-ms", "1000"]).expect("coord");
    // agent-a reaches the coordinator through a link that will partition; agent-b directly.
    let link = Proxy::faithful(&coord.addr).expect("proxy");
    let _a = agent(&link.addr, "agent-a", &tmp.path().join("a")).expect("agent a");
    let _b = agent(&coord.addr, "agent-b", &tmp.path().join("b")).expect("agent b");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    // 4 points x 3 traces, 400 ms per trace: each agent's two points take 2.4 s.
    let id = submit(&mut c, decode_spec(&replay, 400)).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    link.partition(true);
    // Away past the reassign window: agent-a's unfinished points go to agent-b (which then has 4 points'
    // work, ~5 s); agent-a keeps producing traces into its spool meanwhile.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    link.partition(false);
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    // agent-a's late uploads are refused (its job was reassigned, or the sweep has ended by then).
    let t0 = std::time::Instant::now();
    let refused = || coord.metric("tracefleet_uploads_refused_total");
    while refused().is_nan() || refused() < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "agent-a's late uploads were never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = c.status(tracefleet_proto::v1::SweepRef { sweep_id: id.clone() }).await.expect("status").into_inner();
    assert_eq!((status.traces_uploaded, status.traces_parsed), (12, 12), "{status:?}");
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    assert_same_as_ingest(&results, &replay);
    let steps = std::fs::read_to_string(results.join("steps.csv")).expect("steps");
    assert_eq!(steps.lines().count() - 1, 12, "each point's 3 steps, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_every_300_kb_still_delivers_the_whole_sweep() {
    // 50 MB here; TRACEFLEET_FLAKY_MB=450 for the figure in docs/reliability.md.
    let mb: u64 = std::env::var("TRACEFLEET_FLAKY_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let copies = (mb * 4).div_ceil(50).max(1); // the 8-step fixture is ~12.5 MB
    let tmp = tempfile::tempdir().expect("tmp");
    let (replay, trace) = large_replay(tmp.path(), copies);
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let link = Proxy::flaky(&coord.addr, 300_000).expect("proxy");
    let _agent = agent(&link.addr, "agent-f", &tmp.path().join("spool")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent connects");
    let s = one_point_spec("h200-replay", &replay, u32::try_from(8 * copies).expect("steps"));
    let t0 = std::time::Instant::now();
    let id = submit(&mut c, s).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(900)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    let raw = std::fs::metadata(&trace).expect("trace").len();
    let cuts = link.cuts.load(std::sync::atomic::Ordering::SeqCst);
    let wire = coord.metric("tracefleet_upload_wire_bytes_total");
    eprintln!(
        "flaky link: {:.0} MB trace, {cuts} cuts, {:.1} MB on the wire, {} broken streams, {:.1} s",
        raw as f64 / 1e6,
        wire / 1e6,
        coord.metric("tracefleet_uploads_broken_total"),
        t0.elapsed().as_secs_f64()
    );
    assert!(cuts as f64 >= wire / 300_000.0 * 0.9, "the link was cut every 300 kB ({cuts} cuts)");
    assert!(coord.metric("tracefleet_uploads_broken_total") >= 1.0);
    // Bytes sent again after cuts stay a small share: each break commits what arrived.
    assert!(coord.metric("tracefleet_upload_raw_bytes_total") < raw as f64 * 1.5, "most bytes were sent once");
    assert_stored_once(&mut c, &id, &tmp.path().join("results"), &trace, 8 * copies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_sweep_follows_its_sweep_across_a_coordinator_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = decode_tree(tmp.path());
    let data = tmp.path().join("coord");
    let addr = free_port();
    let coord = Coord::start(&data, &addr, &[]).expect("coord");
    let _a = agent(&addr, "agent-a", &tmp.path().join("a")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    let file = tmp.path().join("s.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"restart\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = [1, 8, 32, 128]\n\
             input_len = 128\nprofile_steps = 3\n[replay]\ndir = \"{}\"\ndelay_ms = 250\n",
            replay.display()
        ),
    )
    .expect("write");
    // 12 traces at 250 ms: ~3 s. The coordinator is killed after 1 s and back 1 s later.
    let out_dir = tmp.path().join("out");
    let cli = std::process::Command::new(bin("coord"))
        .arg("sweep")
        .arg(&file)
        .args(["--coordinator", &addr, "--out"])
        .arg(&out_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("coord sweep");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(c);
    drop(coord); // SIGKILL
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _coord = Coord::start(&data, &addr, &[]).expect("restart");
    let o = tokio::task::spawn_blocking(move || cli.wait_with_output()).await.expect("join").expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{err}\n{stdout}");
    assert!(err.contains("lost the coordinator") && err.contains("reconnecting"), "{err}");
    assert!(stdout.contains("traces 12 uploaded, 12 read"), "{stdout}");
    assert_same_as_ingest(&out_dir, &replay);
}

/// A tmpfs of `mb` MiB mounted at `dir` for the test's life (unmounted on drop); `None` where mounting
/// is not allowed (not root).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mb: u32) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let o = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"]).arg(dir).output();
        match o {
            Ok(o) if o.status.success() => Some(Self(dir.to_path_buf())),
            other => {
                eprintln!("SKIPPED: mounting a {mb} MiB tmpfs needs root: {other:?}");
                None
            }
        }
    }

    /// Fills the disk with `name` until at most `leave` bytes are free; returns the file.
    fn fill(&self, name: &str, leave: u64) -> std::path::PathBuf {
        use std::io::Write;
        let p = self.0.join(name);
        let mut f = std::fs::File::create(&p).expect("filler");
        let free = || {
            let o = Command::new("df").args(["--output=avail", "-B1"]).arg(&self.0).output().expect("df");
            String::from_utf8_lossy(&o.stdout).lines().nth(1).and_then(|l| l.trim().parse::<u64>().ok()).unwrap_or(0)
        };
        let block = vec![0u8; 64 << 10];
        while free() > leave + block.len() as u64 && f.write_all(&block).is_ok() {}
        if leave == 0 {
            let mut one = [1u8; 1];
            while f.write_all(&block).is_ok() {}
            while f.write_all(&one).is_ok() {
                one[0] = 2;
            }
        }
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_a_sweep_without_loss_and_it_ends_once_there_is_room() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(disk) = SmallDisk::mount(&tmp.path().join("small"), 24) else { return };
    let replay = decode_tree(tmp.path());
    let coord = Coord::start(&disk.0.join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let _a = agent(&coord.addr, "agent-a", &tmp.path().join("a")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    let id = submit(&mut c, decode_spec(&replay, 300)).await.expect("submit");
    let sref = || tracefleet_proto::v1::SweepRef { sweep_id: id.clone() };
    // The disk is nearly full from the start; the moment the first trace is uploaded (its parse queued)
    // it fills up: its parse result, later uploads, commits and the results folder all meet ENOSPC.
    let mut events = c.watch(sref()).await.expect("watch").into_inner();
    let nearly = disk.fill("filler-1", 2 << 20);
    loop {
        let ev = events.message().await.expect("event").expect("stream");
        if ev.kind() == tracefleet_proto::v1::SweepEventKind::Trace {
            break;
        }
    }
    let filler = disk.fill("filler-2", 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stalled = c.status(sref()).await.expect("status while full").into_inner();
    assert_eq!(stalled.state(), tracefleet_proto::v1::SweepState::Running, "{stalled:?}");
    assert!(stalled.traces_parsed < 12, "the disk was full: {stalled:?}");
    // Room again: the sweep ends by itself, nothing lost, nothing counted twice.
    std::fs::remove_file(filler).expect("free the disk");
    std::fs::remove_file(nearly).expect("free the disk");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!((status.traces_uploaded, status.traces_parsed, status.traces_refused), (12, 12, 0), "{status:?}");
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    assert_same_as_ingest(&results, &replay);
    let retries = coord.metric("tracefleet_parse_store_retries_total");
    eprintln!("full disk: {retries} parse results stored again later");
    // A result is counted once it is stored, however many tries that took.
    assert_eq!(coord.metric("tracefleet_traces_parsed_total"), 12.0, "{retries} store retries");
    assert_eq!(coord.metric("tracefleet_parse_failures_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_mid_job_runs_its_points_again_and_one_run_is_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let spool = tmp.path().join("spool");
    let a = agent_with(&coord.addr, "agent-r", &spool, &["--allow-command"]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    // Each step's trace gets a name of its run (as vLLM's files carry a timestamp): two runs of the point
    // would be two sets of traces, both counted, if the second were not a new job.
    let src = tracefleet_tests::fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    let run =
        format!("for k in 1 2 3; do zstd -dq -f {} -o {{out_dir}}/trace_$$_$k.json; sleep 1; done", src.display());
    let spec = one_command_point("restart", run);
    let id = submit(&mut c, spec).await.expect("submit");
    let sref = || tracefleet_proto::v1::SweepRef { sweep_id: id.clone() };
    let t0 = std::time::Instant::now();
    while c.status(sref()).await.expect("status").into_inner().traces_uploaded < 1 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no trace arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a); // SIGKILL mid-job; the same agent comes back on the same spool
    let _a = agent_with(&coord.addr, "agent-r", &spool, &["--allow-command"]).expect("agent again");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!(status.traces_uploaded, 3, "one run's three traces: {status:?}");
    assert!(status.traces_set_aside >= 1, "the first run's traces are set aside: {status:?}");
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    let steps = std::fs::read_to_string(results.join("steps.csv")).expect("steps");
    assert_eq!(steps.lines().count() - 1, 3, "three steps, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_before_its_old_process_is_noticed_gone_waits_for_its_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = replay_tree(tmp.path());
    // Heartbeats of 1 s: the old process counts as connected for 3 s after it was last heard from.
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--heartbeat-ms", "1000"]).expect("coord");
    // The old process's link: when it dies, the coordinator hears nothing (a host that died without a FIN).
    let link = Proxy::faithful(&coord.addr).expect("proxy");
    link.silent_client_close(true);
    let old = agent(&link.addr, "agent-r", &tmp.path().join("a")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    drop(old); // SIGKILL; its connection stays open and silent
    // The new process is refused the name at first (its holder was heard from within 3 s), waits until the
    // name is free and connects: it does not exit (before, it exited at the first refusal).
    let _new = agent(&coord.addr, "agent-r", &tmp.path().join("b")).expect("agent again");
    let id = submit(&mut c, spec(&replay, 0)).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_runs_traces_are_not_counted_with_its_retry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "1"]).expect("coord");
    let _a = agent_with(&coord.addr, "agent-a", &tmp.path().join("a"), &["--allow-command"]).expect("agent a");
    let _b = agent_with(&coord.addr, "agent-b", &tmp.path().join("b"), &["--allow-command"]).expect("agent b");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 2).await.expect("agents");
    // The first run writes one trace and fails; the retry (on the other agent) writes all three.
    let src = tracefleet_tests::fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    let marker = tmp.path().join("failed-once");
    let run = format!(
        "if [ ! -e {m} ]; then touch {m}; zstd -dq -f {s} -o {{out_dir}}/trace_$$_1.json; sleep 1; exit 3; fi; \
         for k in 1 2 3; do zstd -dq -f {s} -o {{out_dir}}/trace_$$_$k.json; done",
        m = marker.display(),
        s = src.display()
    );
    let spec = one_command_point("retry", run);
    let id = submit(&mut c, spec).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(120)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!(status.traces_uploaded, 3, "the retry's three traces only: {status:?}");
    let results = tmp.path().join("results");
    fetch(&mut c, &id, &results).await.expect("fetch");
    let steps = std::fs::read_to_string(results.join("steps.csv")).expect("steps");
    assert_eq!(steps.lines().count() - 1, 3, "three steps, once each");
}

/// A command-running agent `name` that reaches `coord` through a proxy the test can cut, its spool
/// (`tmp/spool`), and a client, returned once the agent is connected.
async fn agent_behind_link(coord: &Coord, tmp: &Path, name: &str) -> (Proxy, PathBuf, Proc, SweepsClient<Channel>) {
    let link = Proxy::faithful(&coord.addr).expect("proxy");
    let spool = tmp.join("spool");
    let agent = agent_with(&link.addr, name, &spool, &["--allow-command"]).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    (link, spool, agent, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ends_while_its_agent_reconnects_is_reported() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let (link, spool, _a, mut c) = agent_behind_link(&coord, tmp.path(), "agent-h").await;
    // Three traces at once, then the workload goes on for a while before it ends (and the job with it).
    let src = tracefleet_tests::fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    let run = format!("for k in 1 2 3; do zstd -dq -f {} -o {{out_dir}}/trace_$k.json; done; sleep 3", src.display());
    let id = submit(&mut c, one_command_point("reconnect", run)).await.expect("submit");
    // Every trace acknowledged (the agent's queue empty) while the workload still runs.
    let entries = |d: &Path| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0);
    let (queue, work) = (spool.join("queue"), spool.join("work"));
    let t0 = std::time::Instant::now();
    while c.status(SweepRef { sweep_id: id.clone() }).await.expect("status").into_inner().traces_uploaded < 3
        || entries(&queue) > 0
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "the traces did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(entries(&work) > 0, "the job still runs");
    // The link breaks and is slow to come back: the agent's reconnection (its hello written) waits on
    // the link while the job ends; the job's end must reach the coordinator all the same.
    link.hold_new(true);
    link.cut_now();
    let t0 = std::time::Instant::now();
    while entries(&work) > 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the job did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The job's folder goes just before its end is reported.
    tokio::time::sleep(Duration::from_millis(500)).await;
    link.hold_new(false);
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(30)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!((status.traces_uploaded, status.traces_parsed), (3, 3), "{status:?}");
}

/// A sweep of decode points (batch 1, 3 steps) named `ids`, run by one command (`{point}` tells them
/// apart); on one agent, one job that runs them in the order of their names (they weigh the same).
fn command_points(name: &str, ids: &[&str], run: String) -> SweepSpec {
    let point = |id: &&str| Point {
        point_id: id.to_string(),
        mode: tracefleet_proto::v1::Mode::Decode.into(),
        batch_size: 1,
        input_len: 128,
        ..Default::default()
    };
    SweepSpec { points: ids.iter().map(point).collect(), ..one_command_point(name, run) }
}

/// The manifest's `point_status`: point -> (state, attempts, error).
async fn point_status(
    c: &mut tracefleet_proto::v1::sweeps_client::SweepsClient<tonic::transport::Channel>,
    id: &str,
    results: &Path,
) -> std::collections::BTreeMap<String, (String, u64, String)> {
    fetch(c, id, results).await.expect("fetch");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("manifest.json")).expect("manifest")).expect("json");
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    manifest["point_status"]
        .as_array()
        .expect("point_status")
        .iter()
        .map(|p| (s(&p["point"]), (s(&p["state"]), p["attempts"].as_u64().unwrap_or(0), s(&p["error"]))))
        .collect()
}

/// The points a command run log (one line per point run) lists, in order.
fn runs(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Waits until `n` traces of the sweep are uploaded and the agent's spool queue is empty (each one
/// acknowledged).
async fn wait_acknowledged(
    c: &mut tracefleet_proto::v1::sweeps_client::SweepsClient<tonic::transport::Channel>,
    id: &str,
    spool: &Path,
    n: u32,
) {
    let entries = |d: &Path| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0);
    let t0 = std::time::Instant::now();
    while c.status(SweepRef { sweep_id: id.to_string() }).await.expect("status").into_inner().traces_uploaded < n
        || entries(&spool.join("queue")) > 0
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "the traces did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the agent's job has ended (its work folder is removed just before its end is reported),
/// and a little more.
async fn wait_job_ended(spool: &Path) {
    let entries = |d: &Path| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0);
    let t0 = std::time::Instant::now();
    while entries(&spool.join("work")) > 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the job did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Waits until the agent is connected (`on`) or not.
async fn wait_connected(
    c: &mut tracefleet_proto::v1::sweeps_client::SweepsClient<tonic::transport::Channel>,
    on: bool,
) {
    let t0 = std::time::Instant::now();
    loop {
        let agents = c.list_agents(tracefleet_proto::v1::ListAgentsRequest {}).await.expect("agents").into_inner();
        if agents.agents.iter().any(|a| a.connected) == on {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the agent is still {}", if on { "away" } else { "connected" });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_that_fails_while_its_agent_is_cut_off_is_reported_failed_and_retried() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "1"]).expect("coord");
    let (link, spool, _a, mut c) = agent_behind_link(&coord, tmp.path(), "agent-f").await;
    // `a-good` writes its three traces; `b-bad` waits for the gate, then fails (every run).
    let src = tracefleet_tests::fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    let (gate, log) = (tmp.path().join("gate"), tmp.path().join("runs"));
    let run = format!(
        "echo {{point}} >> {log}; case {{point}} in \
         a-good) for k in 1 2 3; do zstd -dq -f {src} -o {{out_dir}}/trace_$k.json; done;; \
         b-bad) while [ ! -e {gate} ]; do sleep 0.05; done; echo 'CUDA error: out of memory' >&2; exit 7;; esac",
        log = log.display(),
        src = src.display(),
        gate = gate.display()
    );
    let id = submit(&mut c, command_points("cut-off", &["a-good", "b-bad"], run)).await.expect("submit");
    wait_acknowledged(&mut c, &id, &spool, 3).await;
    // The link goes down; then `b-bad` fails and the job ends: neither report can be sent now.
    link.partition(true);
    wait_connected(&mut c, false).await;
    std::fs::write(&gate, b"").expect("gate");
    wait_job_ended(&spool).await;
    link.partition(false);
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    let points = point_status(&mut c, &id, &tmp.path().join("results")).await;
    // Reported in the hello, before the job's end: recorded, and run again (before: "missing", never
    // run again, as if the point had written nothing).
    let (state, attempts, error) = &points["b-bad"];
    assert_eq!((state.as_str(), *attempts), ("failed", 2), "{points:?}");
    assert!(error.contains("command for b-bad exited") && error.contains("CUDA error: out of memory"), "{error}");
    assert_eq!(points["a-good"].0, "done", "{points:?}");
    assert_eq!(runs(&log), ["a-good", "b-bad", "b-bad"], "the job once, then the retry of b-bad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_while_its_agent_is_cut_off_is_reported_failed_and_not_run_again() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let (link, spool, _a, mut c) = agent_behind_link(&coord, tmp.path(), "agent-j").await;
    // `first` waits for the gate, then puts a file where the folder of `second` goes: the job cannot go on
    // and fails as a whole.
    let (gate, log) = (tmp.path().join("gate"), tmp.path().join("runs"));
    let run = format!(
        "echo {{point}} >> {log}; while [ ! -e {gate} ]; do sleep 0.05; done; touch {{out_dir}}/../../../second",
        log = log.display(),
        gate = gate.display()
    );
    let id = submit(&mut c, command_points("job-cut-off", &["first", "second"], run)).await.expect("submit");
    let t0 = std::time::Instant::now();
    while runs(&log).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the job did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    link.partition(true);
    wait_connected(&mut c, false).await;
    std::fs::write(&gate, b"").expect("gate");
    wait_job_ended(&spool).await;
    link.partition(false);
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Failed, "{status:?}");
    let points = point_status(&mut c, &id, &tmp.path().join("results")).await;
    for p in ["first", "second"] {
        let (state, _, error) = &points[p];
        assert_eq!(state, "failed", "{points:?}");
        assert!(error.starts_with("creating ") && error.contains("second"), "{error}");
    }
    // Reported in the hello, the job ended there (before: it was sent to the agent again, and ran again).
    assert_eq!(runs(&log), ["first"], "the job ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_failure_reported_and_listed_again_in_a_hello_counts_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "1"]).expect("coord");
    let (link, _spool, _a, mut c) = agent_behind_link(&coord, tmp.path(), "agent-o").await;
    // `flaky` fails its first run once the first gate is open, and writes its traces in its retry; `slow`
    // waits for the second gate.
    let src = tracefleet_tests::fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    let (gates, log, marker) = (tmp.path().join("gate"), tmp.path().join("runs"), tmp.path().join("failed-once"));
    let traces = format!("for k in 1 2 3; do zstd -dq -f {} -o {{out_dir}}/trace_$k.json; done", src.display());
    let run = format!(
        "echo {{point}} >> {log}; case {{point}} in \
         flaky) if [ ! -e {marker} ]; then touch {marker}; while [ ! -e {gates}1 ]; do sleep 0.05; done; \
         echo 'NCCL timeout' >&2; exit 7; fi; {traces};; \
         slow) while [ ! -e {gates}2 ]; do sleep 0.05; done; {traces};; esac",
        log = log.display(),
        marker = marker.display(),
        gates = gates.display()
    );
    let id = submit(&mut c, command_points("once", &["flaky", "slow"], run)).await.expect("submit");
    let mut watch = c.watch(SweepRef { sweep_id: id.clone() }).await.expect("watch").into_inner();
    // Watching (the first event is the status): the failure arrives as it happens, and its retry is made.
    let mut kinds = vec![watch.message().await.expect("event").expect("stream").kind()];
    std::fs::write(tmp.path().join("gate1"), b"").expect("gate");
    loop {
        let ev = watch.message().await.expect("event").expect("stream");
        kinds.push(ev.kind());
        if ev.kind() == tracefleet_proto::v1::SweepEventKind::PointRetry {
            assert_eq!(ev.point_id, "flaky");
            break;
        }
    }
    // The link breaks while the job runs: the agent's next hello lists the failure again.
    link.partition(true);
    wait_connected(&mut c, false).await;
    link.partition(false);
    wait_connected(&mut c, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(tmp.path().join("gate2"), b"").expect("gate");
    while let Ok(Some(ev)) = watch.message().await {
        kinds.push(ev.kind());
    }
    use tracefleet_proto::v1::SweepEventKind as Kind;
    let count = |k: Kind| kinds.iter().filter(|x| **x == k).count();
    assert_eq!((count(Kind::PointRetry), count(Kind::PointFailed)), (1, 0), "{kinds:?}");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(60)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    let points = point_status(&mut c, &id, &tmp.path().join("results")).await;
    // One failure, one retry, which wrote the traces (counted twice, the point would be "failed" after
    // two failed runs, and not run again).
    assert_eq!((points["flaky"].0.as_str(), points["flaky"].1), ("done", 1), "{points:?}");
    assert_eq!(points["slow"].0, "done", "{points:?}");
    assert_eq!(runs(&log), ["flaky", "slow", "flaky"], "the job once, then the retry of flaky");
}
