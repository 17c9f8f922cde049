//! A sweep never reports failure as success: every point that gave no data is listed at the end (point,
//! agent, attempts, the error in one line: its first line and the last line of the workload's stderr), the manifest has every point's status, and `coord sweep`
//! fails unless `--allow-failures`; a workload's traces count whatever their file name.

use std::path::Path;
use std::process::{Command, Output};

use tracefleet_tests::{bin, fixture};

fn sweep(dir: &Path, toml: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let f = dir.join("sweep.toml");
    std::fs::write(&f, toml).expect("write");
    let out = dir.join("out");
    let o = Command::new(bin("coord"))
        .arg("sweep")
        .arg(&f)
        .args(["--local", "--data-dir"])
        .arg(dir.join("state"))
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .expect("run");
    let manifest = std::fs::read(out.join("manifest.json"))
        .ok()
        .and_then(|m| serde_json::from_slice(&m).ok())
        .unwrap_or(serde_json::Value::Null);
    (o, manifest)
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn replay(batch_sizes: &str) -> String {
    format!(
        "name = \"partial\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = {batch_sizes}\ninput_len = 128\n\
         profile_steps = 3\n[replay]\ndir = \"{}\"\n",
        fixture("h200-llama-1b").display()
    )
}

#[test]
fn points_without_data_are_listed_and_fail_the_command() {
    // The fixtures hold batch 1 and 8, not 2 (as a range over 1..255 would meet 124 times).
    let tmp = tempfile::tempdir().expect("tmp");
    let (o, manifest) = sweep(tmp.path(), &replay("[1, 2, 8]"), &[]);
    let all = text(&o);
    assert!(!o.status.success(), "{all}");
    assert!(all.contains("points 2/3 done, 1 failed"), "{all}");
    assert!(
        all.contains("point decode-bs2-in128 on ")
            && all.contains(": failed after 3 failed runs: no traces for decode batch 2"),
        "{all}"
    );
    assert!(all.contains("1 of 3 points gave no data"), "{all}");
    assert!(all.contains("; results of 2 of 3 points in "), "the tables are partial: {all}");
    let states: Vec<(String, String)> = manifest["point_status"]
        .as_array()
        .expect("point_status")
        .iter()
        .map(|p| (p["point"].as_str().unwrap_or("").to_string(), p["state"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        states,
        [("decode-bs1-in128", "done"), ("decode-bs2-in128", "failed"), ("decode-bs8-in128", "done")]
            .map(|(p, s)| (p.to_string(), s.to_string()))
    );
    // Accepted on request: the same listing, success.
    let tmp = tempfile::tempdir().expect("tmp");
    let (o, _) = sweep(tmp.path(), &replay("[1, 2, 8]"), &["--allow-failures"]);
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    assert!(all.contains("point decode-bs2-in128 on "), "{all}");
}

#[test]
fn a_command_whose_every_point_fails_fails_the_sweep() {
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = "name = \"broken\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [1, 2]\ninput_len = 8\n\
                profile_steps = 1\n[command]\nrun = \"echo 'model not found' >&2; exit 1\"\n";
    let (o, manifest) = sweep(tmp.path(), toml, &["--allow-failures"]);
    let all = text(&o);
    assert!(!o.status.success(), "no point gave data: not a success even with --allow-failures\n{all}");
    assert!(all.contains("ended failed"), "{all}");
    assert!(all.contains("; no trace was read, so the tables in ") && !all.contains("results in"), "{all}");
    // Each listed failure says why in its one line: the last line of the workload's stderr.
    assert!(all.contains("exited with exit status: 1: model not found"), "{all}");
    let failed: Vec<&serde_json::Value> =
        manifest["point_status"].as_array().into_iter().flatten().filter(|p| p["state"] == "failed").collect();
    assert_eq!(failed.len(), 2, "{manifest}");
}

#[test]
fn a_command_workload_may_name_its_trace_files_as_it_likes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = fixture("h200-llama-1b/decode/logs_8/trace_0.json.zst");
    let toml = format!(
        "name = \"named\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [8]\ninput_len = 128\n\
         profile_steps = 1\n[command]\nrun = \"cp {} {{out_dir}}/profile.json.zst; echo notes > {{out_dir}}/notes.txt\"\n",
        src.display()
    );
    let (o, manifest) = sweep(tmp.path(), &toml, &[]);
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    assert!(all.contains("points 1/1 done"), "{all}");
    assert_eq!(manifest["point_status"][0]["traces"], 1, "{manifest}");
}

#[test]
fn a_gpu_backend_is_refused_when_no_matching_agent_has_a_gpu() {
    if std::process::Command::new("nvidia-smi").output().is_ok_and(|o| o.status.success()) {
        return; // this host has a GPU: the embedded agent reports it
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = "name = \"needs-gpu\"\nmode = \"decode\"\nbackend = \"vllm\"\nmodel = \"llama-3.2-1b\"\n\
                batch_sizes = [1]\ninput_len = 8\noutput_len = 16\n";
    let (o, _) = sweep(tmp.path(), toml, &[]);
    let all = text(&o);
    assert!(!o.status.success(), "{all}");
    assert!(all.contains("the vllm backend needs a GPU, and no matching agent reports one"), "{all}");
}

#[test]
fn off_a_terminal_progress_is_a_line_every_few_seconds() {
    // 6 traces at 1.2 s each: about 7 s, past the first 5 s line. stderr is a pipe here.
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = replay("[1, 8]").replace("[replay]\n", "[replay]\ndelay_ms = 1200\n");
    let (o, _) = sweep(tmp.path(), &toml, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.lines().any(|l| l.starts_with("progress: ") && l.contains("/6 traces, 0 failures")), "{err}");
}

#[test]
fn ctrl_c_on_a_local_sweep_stops_at_once_and_says_how_to_resume() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = tmp.path().join("slow.toml");
    std::fs::write(
        &f,
        "name = \"slow\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [1]\ninput_len = 8\nprofile_steps = 1\n\
         [command]\nrun = \"sleep 60\"\n",
    )
    .expect("write");
    let mut child = Command::new(bin("coord"))
        .arg("sweep")
        .arg(&f)
        .args(["--local", "--data-dir"])
        .arg(tmp.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("1 points, submitted")) {
        seen.push(rx.recv_timeout(std::time::Duration::from_secs(30)).expect("submitted"));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "still running 10 s after Ctrl-C");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // The 3 s wait for a second Ctrl-C, not the workload's 60 s.
    assert!(t0.elapsed() < std::time::Duration::from_secs(8));
    seen.extend(rx.try_iter());
    let err = seen.join("\n");
    // Not a success: the sweep has not ended, and no results were written (a shell's code for SIGINT).
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopped; the sweep's state is kept in") && err.contains("Ctrl-C again within 3 s cancels"),
        "{err}"
    );
    assert!(err.contains("interrupted before sweep") && err.contains("no results written"), "{err}");
}

#[test]
fn a_refused_trace_is_named_as_its_agent_wrote_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = "name = \"cut\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [8]\ninput_len = 128\n\
                profile_steps = 1\n[command]\nrun = \"mkdir -p {out_dir}/logs && printf '{\\\"traceEvents\\\": [{\\\"ph\\\": \\\"X\\\"' > {out_dir}/logs/cut.json\"\n";
    let (o, manifest) = sweep(tmp.path(), toml, &["--allow-failures"]);
    let all = text(&o);
    let error = manifest["point_status"][0]["error"].as_str().unwrap_or_default().to_string();
    // The agent's name and the file's path under the workload's folder, not the coordinator's copy.
    assert!(
        error.starts_with("every trace was refused: ")
            && error.contains(":decode/logs_8/logs/cut.json at byte 27: unexpected end of file"),
        "{error}\n{all}"
    );
    assert!(!error.contains("traces/") && !error.contains("%2F"), "{error}");
    assert!(all.contains(":decode/logs_8/logs/cut.json at byte 27"), "{all}");
}

#[test]
fn an_empty_trace_file_is_refused_by_name_at_once() {
    // The workload leaves an empty trace file: uploaded and refused with its name, the point failed
    // without data, without waiting (before: never uploaded, and after 30 s reported as "still being
    // written").
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = "name = \"empty\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [1]\ninput_len = 8\n\
                profile_steps = 1\n[command]\nrun = \"touch {out_dir}/trace_0.json\"\n";
    let (o, manifest) = sweep(tmp.path(), toml, &[]);
    let all = text(&o);
    assert!(!o.status.success(), "{all}");
    let error = manifest["point_status"][0]["error"].as_str().unwrap_or_default();
    eprintln!("{error}");
    assert!(error.contains("every trace was refused: ") && error.contains("trace_0.json"), "{manifest}");
    assert!(!error.contains("still being written"), "{manifest}");
    // The manifest's listing counts it as refused, not read, and says why.
    let point = &manifest["points"][0];
    assert_eq!((point["traces"].as_u64(), point["refused"].as_u64()), (Some(0), Some(1)), "{manifest}");
    assert!(point["files"][0]["refused"].as_str().is_some_and(|r| r.contains("empty file")), "{manifest}");
}

#[test]
fn a_sweep_says_which_traces_had_events_left_out() {
    // A kernel without a duration: left out of the tables, and the sweep's summary and manifest say so.
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src.json");
    std::fs::write(
        &src,
        r#"{"traceEvents": [
            {"ph": "X", "cat": "kernel", "name": "gemm_kernel", "pid": 0, "tid": 7, "ts": 1100},
            {"ph": "X", "cat": "kernel", "name": "add_kernel", "pid": 0, "tid": 7, "ts": 1300, "dur": 5}
        ]}"#,
    )
    .expect("write");
    let toml = format!(
        "name = \"left-out\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [1]\ninput_len = 8\n\
         profile_steps = 1\n[command]\nrun = \"cp {} {{out_dir}}/trace_0.json\"\n",
        src.display()
    );
    let (o, manifest) = sweep(tmp.path(), &toml, &[]);
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    assert!(
        all.contains("warning: ") && all.contains("trace_0.json: 1 event left out: 1 without a valid duration"),
        "{all}"
    );
    let warnings = manifest["warnings"].as_array().expect("warnings");
    assert!(warnings.iter().any(|w| w["kind"] == "left_out" && w["point"] == "decode-bs1-in8"), "{manifest}");
    assert_eq!(manifest["points"][0]["files"][0]["left_out"]["no_duration"], 1, "{manifest}");
}

#[test]
fn results_replace_an_earlier_runs_files_and_leave_other_files_alone() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = fixture("h200-llama-1b/decode/logs_8/trace_0.json.zst");
    let toml = format!(
        "name = \"again\"\nmode = \"decode\"\nbackend = \"command\"\nbatch_sizes = [8]\ninput_len = 128\n\
         profile_steps = 1\n[command]\nrun = \"cp {} {{out_dir}}/trace_0.json.zst\"\n",
        src.display()
    );
    let out = tmp.path().join("out");
    let (o, _) = sweep(tmp.path(), &toml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let listing = std::fs::read_to_string(out.join(".tracefleet-results")).expect("the listing");
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
    // A file the earlier run wrote that this run does not (before: left beside the new tables), and a
    // file of the user's own.
    std::fs::create_dir_all(out.join("old")).expect("mkdir");
    std::fs::write(out.join("old/stale.csv"), "old").expect("write");
    std::fs::write(out.join(".tracefleet-results"), format!("{listing}old/stale.csv\n")).expect("write");
    std::fs::write(out.join("notes.md"), "mine").expect("write");
    let (o, manifest) = sweep(tmp.path(), &toml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!out.join("old").exists(), "the earlier run's file (and its emptied folder) is gone");
    assert_eq!(std::fs::read_to_string(out.join("notes.md")).expect("notes"), "mine", "the user's file stays");
    assert_eq!(manifest["point_status"][0]["state"], "done", "{manifest}");
    assert!(
        !std::fs::read_dir(&out).expect("out").flatten().any(|e| e.file_name().to_string_lossy().contains("partial"))
    );
    // A file where the folder should be is refused before the sweep runs.
    let other = tempfile::tempdir().expect("tmp");
    std::fs::write(other.path().join("out"), "a file").expect("write");
    let (o, _) = sweep(other.path(), &toml, &[]);
    let all = text(&o);
    assert!(!o.status.success() && all.contains("is a file, not a folder for results"), "{all}");
    assert!(!all.contains("submitted"), "refused before the sweep ran: {all}");
}
