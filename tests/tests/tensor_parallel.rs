//! Tensor parallelism on the real two-rank vLLM traces of `fixtures/h200-vllm-0.25/tp2-*` (two H200s of
//! one host, vLLM's custom all-reduce): each rank's trace is read with its rank, the ranks are merged per
//! step (the slowest rank's view), every collective's time is split into waiting for the other rank and
//! the transfer, and nothing is counted twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::{Point, SweepSpec, VllmBackend};
use tracefleet_tests::procs::{Coord, agent_with, fetch, submit, wait_agents, wait_sweep};
use tracefleet_tests::{bin, fixture};

const EAGER: &str = "h200-vllm-0.25/tp2-decode-eager/logs_32";
const PREFILL: &str = "h200-vllm-0.25/tp2-prefill-eager/logs_8";

/// `coord ingest FIXTURE --out OUT`; returns stderr.
fn ingest(dir: &str, out: &Path) -> String {
    ingest_path(&fixture(dir), out)
}

/// `coord ingest PATH --out OUT`; returns stderr.
fn ingest_path(path: &Path, out: &Path) -> String {
    let o = Command::new(bin("coord")).arg("ingest").arg(path).arg("--out").arg(out).output().expect("coord");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "coord ingest failed: {stderr}");
    stderr
}

/// `coord ingest PATH --out OUT` that must fail (every step left out); its stderr.
fn ingest_path_failing(path: &Path, out: &Path) -> String {
    let o = Command::new(bin("coord")).arg("ingest").arg(path).arg("--out").arg(out).output().expect("coord");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "coord ingest succeeded: {stderr}");
    stderr
}

/// One CSV row: column -> value.
type Row = BTreeMap<String, String>;

/// Rows of a CSV file as maps from column to value.
fn rows(path: &Path) -> Vec<Row> {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = r.headers().expect("header").iter().map(String::from).collect();
    r.records().map(|rec| header.iter().cloned().zip(rec.expect("row").iter().map(String::from)).collect()).collect()
}

fn num(row: &Row, col: &str) -> f64 {
    row.get(col).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{col} in {row:?}"))
}

/// Checks the merged view of one two-rank fixture; returns (per-rank rows, merged rows).
fn check_merge(dir: &str, steps: usize) -> (Vec<Row>, Vec<Row>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let stderr = ingest(dir, &out);
    assert!(!stderr.contains("ranks not merged") && !stderr.contains("not split"), "{stderr}");
    let all = rows(&out.join("steps.csv"));
    let (merged, ranks): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r["rank"] == "merged");
    assert_eq!(ranks.len(), 2 * steps, "one row per rank and step");
    assert_eq!(merged.len(), steps, "one merged row per step");
    for r in &ranks {
        assert_eq!(r["tp"], "2");
        // Nothing double-counted: each rank's categories add up to its GPU time, and its collective time
        // is exactly its wait plus its transfer.
        let cats: f64 = ["attention_us", "linear_us", "others_us"].iter().map(|c| num(r, c)).sum();
        assert!((cats - num(r, "gpu_time_us")).abs() < 0.01, "{r:?}");
        let split = num(r, "collective_wait_us") + num(r, "collective_transfer_us");
        assert!((split - num(r, "collective_us")).abs() < 0.01, "{r:?}");
        assert!(num(r, "collective_activities") > 0.0);
    }
    for m in &merged {
        // The two ranks' rows of this step (the fixtures' ranks hold their steps at the same indexes).
        let of_step: Vec<&Row> = ranks.iter().filter(|r| r["step"] == m["step"]).collect();
        assert_eq!(of_step.len(), 2);
        let slowest = of_step.iter().find(|r| r["rank"] == m["slowest_rank"]).expect("the slowest rank's row");
        assert_eq!(slowest["trace"], m["trace"]);
        // The step's time is the slowest rank's: the most GPU time net of waiting for the other.
        let net = |r: &Row| num(r, "gpu_time_us") - num(r, "collective_wait_us");
        assert!(of_step.iter().all(|r| net(r) <= net(slowest)), "{of_step:?}");
        assert!((num(m, "gpu_time_us") - net(slowest)).abs() < 0.01, "{m:?}");
        let cats: f64 = ["attention_us", "linear_us", "others_us"].iter().map(|c| num(m, c)).sum();
        assert!((cats - num(m, "gpu_time_us")).abs() < 0.01, "the merged categories add up: {m:?}");
        // The merged view leaves the wait out of `others` and keeps the transfer.
        assert!((num(m, "others_us") - (num(slowest, "others_us") - num(slowest, "collective_wait_us"))).abs() < 0.01);
        assert!((num(m, "collective_wait_us") - num(slowest, "collective_wait_us")).abs() < 0.01);
        // One host, one clock: the ranks' end times of each collective agree within a few microseconds.
        assert!(num(m, "rank_end_skew_us") < 20.0, "{m:?}");
    }
    (ranks, merged)
}

#[test]
fn kernels_launched_outside_every_op_belong_to_the_step_that_launched_them() {
    // vLLM launches its sampling kernels (`_gumbel_sample_kernel`, ...) from bare `cuLaunchKernelEx` calls
    // after the step's annotation; on rank 0 of this fixture the GPU runs them ~2 ms into the next step.
    // Each step launches 249 kernels; the GPU times were computed apart from the trace (launch by
    // External id, else by the runtime call's correlation; each launch's step by its start).
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    ingest(EAGER, &out);
    let rank0: Vec<(String, f64, f64)> = rows(&out.join("steps.csv"))
        .into_iter()
        .filter(|r| r["rank"] == "0")
        .map(|r| (r["step"].clone(), num(&r, "kernel_count"), num(&r, "gpu_time_us")))
        .collect();
    let want = [("1", 249.0, 14131.117), ("2", 249.0, 23693.364)];
    for (step, kernels, us) in want {
        let got = rank0.iter().find(|r| r.0 == step).unwrap_or_else(|| panic!("step {step}: {rank0:?}"));
        assert_eq!(got.1, kernels, "{rank0:?}");
        assert!((got.2 - us).abs() < 0.001, "{rank0:?}");
    }
    // One sampling per step: the sampling kernel is called once in each of the three steps.
    let kernels = rows(&out.join("kernels.csv"));
    let gumbel: Vec<&Row> =
        kernels.iter().filter(|r| r["kernel"].starts_with("_gumbel_sample_kernel") && r["rank"] == "0").collect();
    assert!(!gumbel.is_empty(), "no sampling kernel row");
    for r in gumbel {
        assert_eq!((num(r, "steps"), num(r, "calls")), (3.0, 3.0), "{r:?}");
    }
}

#[test]
fn eager_decode_ranks_merge_per_step_with_the_wait_apart() {
    let (ranks, merged) = check_merge(EAGER, 3);
    // 16 layers x 2 all-reduces plus the embedding's (a copy into the shared buffer and a kernel each),
    // and the LM head's all-gather (NCCL), per step.
    for r in &ranks {
        assert_eq!(num(r, "collective_activities"), 68.0, "{r:?}");
    }
    // vLLM's printout for rank 0 put 89% of the window's GPU time in the all-reduce: almost all of it is
    // waiting for the other rank, which the merged view reports apart.
    let wait: f64 = ranks.iter().map(|r| num(r, "collective_wait_us")).sum();
    let transfer: f64 = ranks.iter().map(|r| num(r, "collective_transfer_us")).sum();
    assert!(wait > 10.0 * transfer, "wait {wait} transfer {transfer}");
    for m in &merged {
        assert!(num(m, "others_us") < num(m, "gpu_time_us") * 0.5, "{m:?}");
        assert!(num(m, "attention_us") > 0.0 && num(m, "linear_us") > 0.0);
    }
}

#[test]
fn prefill_ranks_merge_and_the_seed_tables_use_the_merged_steps() {
    let (_, merged) = check_merge(PREFILL, 1);
    let tmp = tempfile::tempdir().expect("tmp");
    ingest(PREFILL, &tmp.path().join("o"));
    let text = std::fs::read_to_string(tmp.path().join("o/op_times.tsv")).expect("op_times.tsv");
    let line: Vec<f64> = text.lines().nth(1).expect("a row").split('\t').map(|v| v.parse().expect("number")).collect();
    // batch 8; attention, linear, others in ms: the merged step's (µs in steps.csv).
    assert_eq!(line[0], 8.0);
    for (k, col) in ["attention_us", "linear_us", "others_us"].iter().enumerate() {
        assert!((line[k + 1] * 1000.0 - num(&merged[0], col)).abs() < 0.01, "{col}: {line:?} {:?}", merged[0]);
    }
}

/// A stand-in for the vLLM driver that checks what a tensor-parallel job is given (its GPUs, its
/// tensor_parallel) and writes, per point, the two ranks' traces of the real two-GPU fixture.
const FAKE_TP_DRIVER: &str = r#"
import json, os, subprocess, sys, time
job = json.load(open(sys.argv[sys.argv.index("--job") + 1]))
src = "@FIXTURES@"
def emit(**kw):
    print(json.dumps(kw), flush=True)
for p in job["points"]:
    emit(event="point_started", point=p["point_id"])
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    if job.get("tensor_parallel") != 2 or gpus != "0,1":
        emit(event="point_failed", point=p["point_id"], error=f"tensor_parallel {job.get('tensor_parallel')}, GPUs {gpus}")
        continue
    folder = os.path.join(job["out_dir"], p["point_id"], p["mode"], f"logs_{p['batch_size']}")
    os.makedirs(folder, exist_ok=True)
    for f in sorted(os.listdir(src)):
        path = os.path.join(folder, f[:-len(".zst")])
        start = time.time()
        subprocess.run(["zstd", "-dqf", os.path.join(src, f), "-o", path], check=True)
        emit(event="trace", point=p["point_id"], path=path, step=0, start=start, end=time.time())
"#;

fn vllm_spec(python: &Path, tp: u32) -> SweepSpec {
    SweepSpec {
        name: "tp".into(),
        points: vec![Point {
            point_id: "decode-bs32".into(),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: 32,
            input_len: 256,
            ..Default::default()
        }],
        profile_steps: 3,
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Vllm(VllmBackend {
            model: "llama-3.2-1b".into(),
            python: python.display().to_string(),
            tensor_parallel: tp,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tensor_parallel_sweep_holds_two_gpus_per_job_and_merges_its_ranks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fake = tmp.path().join("fake_driver.py");
    std::fs::write(&fake, FAKE_TP_DRIVER.replace("@FIXTURES@", &fixture(EAGER).display().to_string())).expect("fake");
    let python = tmp.path().join("python");
    std::fs::write(&python, format!("#!/bin/sh\nexec python3 {} \"$@\"\n", fake.display())).expect("python");
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--point-retries", "0"]).expect("coord");
    let mut c = coord.client().await.expect("client");

    // One GPU: a sweep of tensor_parallel = 2 is refused at submission, and says why.
    let one = agent_with(&coord.addr, "one-gpu", &tmp.path().join("s1"), &["--assume-gpu", "Test GPU"]).expect("agent");
    wait_agents(&mut c, 1).await.expect("agent");
    let refused = submit(&mut c, vllm_spec(&python, 2)).await.expect_err("refused");
    let msg = format!("{refused:#}");
    assert!(
        msg.contains("(2 GPUs of one kind for one job (tensor_parallel = 2))") && msg.contains("one-gpu (Test GPU)"),
        "{msg}"
    );
    drop(one);

    // Two GPUs: the job holds both, and both ranks' traces are uploaded and merged per step.
    let _two = agent_with(
        &coord.addr,
        "two-gpus",
        &tmp.path().join("s2"),
        &[
            "--assume-gpu",
            "NVIDIA H200",
            "--assume-gpu",
            "NVIDIA H200",
            "--allow-python",
            &python.display().to_string(),
        ],
    )
    .expect("agent");
    let mut found = false;
    for _ in 0..100 {
        let agents = c.list_agents(tracefleet_proto::v1::ListAgentsRequest {}).await.expect("agents").into_inner();
        let up = |name: &str| {
            agents.agents.iter().any(|a| a.connected && a.inventory.as_ref().is_some_and(|i| i.host == name))
        };
        if up("two-gpus") && !up("one-gpu") {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the two-GPU agent is connected and the one-GPU agent gone");
    let id = submit(&mut c, vllm_spec(&python, 2)).await.expect("submit");
    let status = wait_sweep(&coord.addr, &id, Duration::from_secs(90)).await.expect("sweep");
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!((status.traces_parsed, status.points_failed), (2, 0), "{status:?}");
    let out = tmp.path().join("out");
    fetch(&mut c, &id, &out).await.expect("fetch");
    let all = rows(&out.join("steps.csv"));
    let count = |rank: &str| all.iter().filter(|r| r["rank"] == rank).count();
    assert_eq!((count("0"), count("1"), count("merged")), (3, 3, 3), "{all:?}");
    assert!(all.iter().all(|r| r["tp"] == "2" && r["host"] == "two-gpus"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["sweep"]["backend_settings"]["tensor_parallel"], 2, "{manifest}");
}

#[test]
fn graph_steps_of_both_ranks_map_onto_their_reference_steps_and_merge() {
    // tracefleet's own vLLM driver, two H200s, full CUDA graphs: each rank's window starts with the eager
    // reference step, which attributes that rank's replayed kernels and is left out of the tables.
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let stderr = ingest("h200-vllm-0.25/tracefleet-tp2-decode-graphs/logs_32", &out);
    assert!(!stderr.contains("ranks not merged") && !stderr.contains("not split"), "{stderr}");
    let all = rows(&out.join("steps.csv"));
    let count = |rank: &str| all.iter().filter(|r| r["rank"] == rank).count();
    assert_eq!((count("0"), count("1"), count("merged")), (3, 3, 3), "the reference steps are not counted");
    for r in &all {
        // 230 replayed kernels per step: all but the graph's own output copy map onto the reference step.
        assert_eq!(
            (num(r, "graph_replayed"), num(r, "graph_exact"), num(r, "graph_unattributed")),
            (230.0, 229.0, 1.0)
        );
        assert_eq!(r["graph_reference"], "step 0 of this trace");
        assert_eq!(num(r, "layers"), 16.0);
        assert!(num(r, "attention_us") > 0.0 && num(r, "linear_us") > 0.0);
    }
    let reference = rows(&out.join("graph_reference.csv"));
    assert_eq!(reference.len(), 2 * 7, "one row per rank and category");
    assert!(reference.iter().all(|r| r["reference_steps"] == "1" && r["graph_steps"] == "3"));
}

#[test]
fn ranks_of_two_runs_in_one_folder_are_not_merged_and_stay_out_of_the_seed_tables() {
    // Rank 0 of the eager run and rank 1 of the CUDA-graph run: same series, steps 43 s apart.
    let tmp = tempfile::tempdir().expect("tmp");
    let mixed = tmp.path().join("mixed/logs_32");
    std::fs::create_dir_all(&mixed).expect("mkdir");
    for (dir, rank) in [(EAGER, "rank0"), ("h200-vllm-0.25/tp2-decode-cudagraph/logs_32", "rank1")] {
        let f = std::fs::read_dir(fixture(dir))
            .expect("fixture")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(rank)))
            .expect("the rank's trace");
        std::fs::copy(&f, mixed.join(f.file_name().expect("name"))).expect("copy");
    }
    let out = tmp.path().join("out");
    // Every step is left out: the tables are written (steps.csv says why for each), and the command fails.
    let stderr = ingest_path_failing(&tmp.path().join("mixed"), &out);
    assert!(stderr.contains("the seed tables") && stderr.contains("hold no row"), "{stderr}");
    assert!(
        stderr.contains("starts") && stderr.contains("s apart on the ranks (over 1 s): not one job's steps"),
        "{stderr}"
    );
    assert!(stderr.contains("folder logs_32"), "{stderr}");
    let all = rows(&out.join("steps.csv"));
    assert!(all.iter().all(|r| r["rank"] != "merged"), "no merged row");
    let seed = std::fs::read_to_string(out.join("op_times.tsv")).expect("op_times.tsv");
    assert_eq!(seed.lines().count(), 1, "only the header: {seed}");

    // One rank alone: said, with the trace's name.
    let one = tmp.path().join("one/logs_32");
    std::fs::create_dir_all(&one).expect("mkdir");
    for e in std::fs::read_dir(&mixed).expect("dir").filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with("rank0") {
            std::fs::copy(e.path(), one.join(e.file_name())).expect("copy");
        }
    }
    let stderr = ingest_path_failing(&one, &tmp.path().join("out1"));
    assert!(stderr.contains("no trace of rank(s) [1] of 2") && stderr.contains("rank0."), "{stderr}");
}
