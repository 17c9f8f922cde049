//! `coord sweep` as users run it: `--local` writes every result file; an invalid file gets every error at
//! once; a selector that matches no agent is refused with the list of agents.

use std::process::Command;
use std::time::Duration;

use tracefleet_tests::procs::{Coord, agent, wait_agents};
use tracefleet_tests::{bin, workspace};

#[test]
fn local_sweep_writes_every_result_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o = Command::new(bin("coord"))
        .current_dir(workspace())
        .args(["sweep", "examples/replay.toml", "--local", "--data-dir"])
        .arg(tmp.path().join("state"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("completed") && stdout.contains("traces 12 uploaded, 12 read"), "{stdout}");
    for f in [
        "op_times.tsv",
        "op_times_detailed.tsv",
        "kernel_dat.csv",
        "ops.csv",
        "kernels.csv",
        "steps.csv",
        "manifest.json",
    ] {
        let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    let op_times = std::fs::read_to_string(out.join("op_times.tsv")).expect("op_times");
    assert_eq!(op_times.lines().count(), 5, "{op_times}");
    // What the tables give besides: Parquet, the roofline (the fixtures recorded shapes), the latency
    // models, Vidur's profiles and the report.
    for f in [
        "ops.parquet",
        "kernels.parquet",
        "steps.parquet",
        "roofline.csv",
        "models.json",
        "vidur/mlp.csv",
        "vidur/attention.csv",
        "report.html",
    ] {
        let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    // Vidur's times are per decoder layer: every step of the fixtures has its 16 layers.
    let mut vidur = csv::Reader::from_path(out.join("vidur/mlp.csv")).expect("mlp.csv");
    let col = vidur.headers().expect("header").iter().position(|h| h == "num_layers").expect("num_layers");
    let rows: Vec<csv::StringRecord> = vidur.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 4, "one row per batch size");
    assert!(rows.iter().all(|r| &r[col] == "16"), "per-layer times: {rows:?}");
    let models = tracefleet_tests::read_json(&out.join("models.json")).expect("models.json");
    let curves = models["curves"].as_array().expect("curves");
    assert_eq!(curves.len(), 1, "{models}");
    let fitted = curves[0]["models"].as_array().expect("models").iter().filter(|m| !m["fit"].is_null()).count();
    assert!(fitted >= 11, "every category, coarse category and the whole step is fitted: {models}");
    // The report of the README's example: one self-contained page with every plot.
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    let external = tracefleet_common::html::external_references(&html);
    assert!(external.is_empty(), "external references: {external:?}");
    assert!(!html.contains("plot failed"), "a plot failed");
    let section = |id: &str| {
        let start = html.find(&format!("<h2 id=\"{id}\"")).unwrap_or_else(|| panic!("no section {id}"));
        let rest = &html[start + 4..];
        rest[..rest.find("<h2 ").unwrap_or(rest.len())].to_string()
    };
    let svgs = |id: &str| section(id).matches("<svg").count();
    // 11 latency plots: the whole step, 7 detailed and 3 coarse categories, each with its fit.
    assert_eq!(svgs("latency"), 11);
    for d in tracefleet_common::classify::Detail::ALL {
        assert!(section("latency").contains(&format!("<figcaption>{}", d.name())), "no plot of {}", d.name());
    }
    assert!(section("latency").contains("R²"), "the fits' R² in the captions");
    assert!(svgs("breakdown") >= 1 && svgs("kernels") >= 1 && svgs("spread") >= 1);
    // The fixtures' shapes give a roofline plot per plotted batch size.
    assert!(svgs("roofline") >= 1, "roofline plots");
}

#[test]
fn invalid_sweep_file_lists_every_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = tmp.path().join("bad.toml");
    std::fs::write(&f, "name = \"bad\"\nmode = \"prefil\"\nbackend = \"replay\"\nbatch_sizes = []\n").expect("write");
    let o = Command::new(bin("coord")).arg("sweep").arg(&f).arg("--local").output().expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml has 3 errors"), "{err}");
    assert!(
        err.contains("bad.toml:2:8: unknown mode `prefil`; expected decode or prefill (hint: did you mean `prefill`?)"),
        "{err}"
    );
    assert!(err.contains("bad.toml:4:15: `batch_sizes` is empty"), "{err}");
    assert!(err.contains("backend `replay` needs a [replay] table"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_matching_no_agent_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let _a = agent(&coord.addr, "cpu-box", &tmp.path().join("spool")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    let f = tmp.path().join("h200.toml");
    std::fs::write(
        &f,
        "name = \"h200\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = [1]\n[agents]\ngpu = \"NVIDIA H200*\"\n[replay]\ndir = \"x\"\n",
    )
    .expect("write");
    let o = Command::new(bin("coord")).arg("sweep").arg(&f).args(["--coordinator", &coord.addr]).output().expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no connected agent has what the sweep asks for (gpu \"NVIDIA H200*\")"), "{err}");
    assert!(err.contains("cpu-box (no GPU)"), "{err}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_sweep_and_keeps_what_was_parsed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let replay = tracefleet_tests::sweeps::replay_tree(tmp.path());
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let _a = agent(&coord.addr, "agent-a", &tmp.path().join("spool")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    // 18 traces at 300 ms each: about 5 s; cancel after 1 s.
    let id =
        tracefleet_tests::procs::submit(&mut c, tracefleet_tests::sweeps::spec(&replay, 300)).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let o = Command::new(bin("coord")).args(["cancel", &id, "--coordinator", &coord.addr]).output().expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("cancelled"), "{stdout}");
    let s = c.status(tracefleet_proto::v1::SweepRef { sweep_id: id.clone() }).await.expect("status").into_inner();
    assert_eq!(s.state(), tracefleet_proto::v1::SweepState::Cancelled);
    assert!(s.traces_parsed > 0 && s.traces_parsed < 18, "{s:?}");
    // `coord status` lists it with the agent.
    let o = Command::new(bin("coord")).args(["status", "--coordinator", &coord.addr]).output().expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&id) && stdout.contains("cancelled") && stdout.contains("agent-a"), "{stdout}");
    // Again: nothing changes, and that is no error.
    let o = Command::new(bin("coord")).args(["cancel", &id, "--coordinator", &coord.addr]).output().expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A sweep that ended on its own is not cancelled, and the command says so.
    let done =
        tracefleet_tests::procs::submit(&mut c, tracefleet_tests::sweeps::spec(&replay, 0)).await.expect("submit");
    let s = tracefleet_tests::procs::wait_sweep(&coord.addr, &done, Duration::from_secs(60)).await.expect("ends");
    assert_eq!(s.state(), tracefleet_proto::v1::SweepState::Completed);
    let o = Command::new(bin("coord")).args(["cancel", &done, "--coordinator", &coord.addr]).output().expect("run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("sweep {done} has already ended (completed): nothing to cancel")), "{stderr}");
}

#[test]
fn every_example_sweep_file_is_valid_and_the_replay_ones_have_their_traces() {
    let dir = workspace().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).expect("read");
        let s = tracefleet_common::sweep::parse(&text, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // A replay example plays the shipped fixtures back: every point it lists must be there, or the
        // example a reader runs first ends in failures.
        if let Some(replay) = &s.replay {
            for p in s.points() {
                let logs = workspace().join(&replay.dir).join(p.mode.name()).join(format!("logs_{}", p.batch_size));
                assert!(logs.is_dir(), "{}: point {} has no traces at {}", path.display(), p.id, logs.display());
            }
        }
    }
    assert!(seen >= 5, "only {seen} examples");
}
