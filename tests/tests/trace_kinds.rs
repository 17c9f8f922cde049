//! Every kind of trace is read as torch reads it, or refused with the file and the reason: the cases from
//! public bug reports in `fixtures/cases/` (see its README), each against the value torch's rules give,
//! worked out by hand from the events.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tracefleet_tests::{bin, fixture};

fn case(name: &str) -> PathBuf {
    fixture(&format!("cases/{name}"))
}

fn coord(args: &[&str]) -> Output {
    Command::new(bin("coord")).args(args).output().expect("coord runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `coord analyze --json` rows by key: (count, cpu, self cpu, device, self device) in µs.
fn table(file: &Path) -> std::collections::BTreeMap<String, (u64, f64, f64, f64, f64)> {
    let o = coord(&["analyze", "--json", &file.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).expect("json");
    rows.iter()
        .map(|r| {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            let key = r["key"].as_str().unwrap_or_default().to_string();
            (
                key,
                (
                    r["count"].as_u64().unwrap_or(0),
                    f("cpu_time_total_us"),
                    f("self_cpu_time_total_us"),
                    f("device_time_total_us"),
                    f("self_device_time_total_us"),
                ),
            )
        })
        .collect()
}

#[test]
fn times_written_as_strings_are_read_as_numbers_c02() {
    let t = table(&case("C02_ascend133_ts_dur_as_strings.json"));
    // aten::mm ("ts": "1000.000") 50 µs with its 20 µs launch; aten::add ("dur": "40.500") with a 10 µs
    // launch; add_kernel ("ts": "1300.250") 5 µs.
    assert_eq!(t["aten::mm"], (1, 50.0, 30.0, 30.0, 30.0));
    assert_eq!(t["aten::add"], (1, 40.5, 30.5, 5.0, 5.0));
    assert_eq!(t["add_kernel"], (1, 0.0, 0.0, 5.0, 5.0));
}

#[test]
fn a_time_string_that_is_not_a_number_is_refused_with_its_place() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = tmp.path().join("t.json");
    std::fs::write(&f, r#"{"traceEvents":[{"ph":"X","cat":"cpu_op","name":"a","pid":1,"tid":1,"ts":"soon","dur":1}]}"#)
        .expect("write");
    let o = coord(&["analyze", &f.to_string_lossy()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("t.json at byte 73: time \"soon\" is not a number"), "{}", stderr(&o));
}

#[test]
fn other_accelerators_runtime_calls_are_host_calls_c05_c06() {
    // XPU: the runtime calls leave the ops' self CPU time (aten::copy_ 30 - 12, aten::mm 30 - 15) and
    // are rows of their own.
    let t = table(&case("C06_xpu_runtime_kernel_pvc.json"));
    assert_eq!(t["aten::copy_"], (1, 30.0, 18.0, 6.0, 6.0));
    assert_eq!(t["aten::to"], (1, 40.0, 10.0, 6.0, 0.0));
    assert_eq!(t["aten::mm"], (1, 30.0, 15.0, 25.0, 25.0));
    assert_eq!(t["urEnqueueKernelLaunch"], (1, 15.0, 15.0, 0.0, 0.0));
    assert_eq!(t["urQueueFinish"], (1, 20.0, 20.0, 0.0, 0.0));
    // MTIA: the runtime call inside the annotation (7.231 - 1.833), and the command processor's event as
    // a device row (no External id: attached to no host event, as torch links device rows by that id).
    let t = table(&case("C05_hta_mtia_inference_excerpt.json"));
    let a = t["Stage::updatePredictorExecutorContext"];
    assert_eq!((a.0, a.1), (1, 7.231));
    assert!((a.2 - 5.398).abs() < 1e-9, "{a:?}");
    assert_eq!(t["recordEvent"], (1, 1.833, 1.833, 0.0, 0.0));
    assert_eq!(t["event_record"], (1, 0.0, 0.0, 0.152, 0.152));
}

#[test]
fn stream_synchronizations_are_device_rows_of_the_op_that_waited_c11b() {
    let t = table(&case("C11b_cuda_sync_stream_sync_minimal.json"));
    assert_eq!(t["Stream Sync"], (1, 0.0, 0.0, 78.0, 78.0));
    // The op's device time: its 2 µs copy and the 78 µs it waited.
    assert_eq!(t["aten::_local_scalar_dense"], (1, 96.0, 6.0, 80.0, 80.0));
    assert_eq!(t["aten::item"], (1, 100.0, 4.0, 80.0, 0.0));
    // The wait is not GPU work: the step's GPU time is the copy alone.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("logs_1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(case("C11b_cuda_sync_stream_sync_minimal.json"), dir.join("trace_0.json")).expect("copy");
    let out = tmp.path().join("out");
    let o = coord(&["ingest", &tmp.path().to_string_lossy(), "--out", &out.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let steps = std::fs::read_to_string(out.join("steps.csv")).expect("steps");
    let header: Vec<&str> = steps.lines().next().unwrap_or_default().split(',').collect();
    let row: Vec<&str> = steps.lines().nth(1).unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).map(|i| row[i]);
    assert_eq!((col("gpu_time_us"), col("gpu_busy_us")), (Some("2.000"), Some("2.000")), "{steps}");
}

fn ingest(dir: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let out = dir.join("out");
    let mut args = vec!["ingest".to_string(), dir.to_string_lossy().into_owned(), "--out".into()];
    args.push(out.to_string_lossy().into_owned());
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (coord(&refs), out)
}

/// `steps.csv` rows as (mode, batch_size, input_len, step_name, gpu_time_us).
fn steps(out: &Path) -> Vec<(String, String, String, String, String)> {
    let text = std::fs::read_to_string(out.join("steps.csv")).expect("steps.csv");
    let mut r = csv_rows(&text);
    let header = r.remove(0);
    let col =
        |row: &[String], name: &str| header.iter().position(|h| h == name).map(|i| row[i].clone()).unwrap_or_default();
    r.iter()
        .map(|row| {
            (
                col(row, "mode"),
                col(row, "batch_size"),
                col(row, "input_len"),
                col(row, "step_name"),
                col(row, "gpu_time_us"),
            )
        })
        .collect()
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rd = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
    rd.records().map(|r| r.expect("csv row").iter().map(str::to_string).collect()).collect()
}

#[test]
fn a_vllm_step_inside_torchs_profiler_step_gives_the_batch_c13() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        case("C13_vllm_schedule_profilerstep_wraps_execute_context/worker_rank0.1.pt.trace.json"),
        tmp.path().join("worker_rank0.1.pt.trace.json"),
    )
    .expect("copy");
    let (o, out) = ingest(tmp.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = steps(&out);
    // ProfilerStep#3 holds a prefill of one 128-token prompt, ProfilerStep#4 one decode.
    let shape: Vec<_> = s.iter().map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str(), r.3.as_str())).collect();
    assert!(shape.contains(&("prefill", "1", "128", "ProfilerStep#3")), "{s:?}");
    assert!(shape.contains(&("decode", "1", "0", "ProfilerStep#4")), "{s:?}");
}

#[test]
fn a_step_without_gpu_activity_is_left_out_of_the_gpu_means_c14() {
    let both = tempfile::tempdir().expect("tmp");
    let src = case("C14_tritonbench459_trace_without_gpu_events");
    std::fs::create_dir_all(both.path().join("logs_1")).expect("mkdir");
    for f in ["trace_0.json", "trace_1.json"] {
        std::fs::copy(src.join("logs_1").join(f), both.path().join("logs_1").join(f)).expect("copy");
    }
    let one = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(one.path().join("logs_1")).expect("mkdir");
    std::fs::copy(src.join("logs_1/trace_0.json"), one.path().join("logs_1/trace_0.json")).expect("copy");
    let (o, out_both) = ingest(both.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 of 2 steps have no GPU activity"), "{}", stderr(&o));
    let (o1, out_one) = ingest(one.path(), &[]);
    assert!(o1.status.success(), "{}", stderr(&o1));
    for t in ["op_times.tsv", "op_times_detailed.tsv", "kernels.csv"] {
        assert_eq!(
            std::fs::read_to_string(out_both.join(t)).expect(t),
            std::fs::read_to_string(out_one.join(t)).expect(t),
            "{t}: the GPU statistics are those of the step with GPU work"
        );
    }
    // 60 µs of kernels in the one step: 0.06 ms per step, not 0.03.
    let op_times = std::fs::read_to_string(out_both.join("op_times.tsv")).expect("op_times");
    let row: Vec<f64> =
        op_times.lines().nth(1).unwrap_or_default().split('\t').skip(1).map(|v| v.parse().unwrap_or(0.0)).collect();
    assert!((row.iter().sum::<f64>() - 0.06).abs() < 1e-9, "{op_times}");
    assert_eq!(steps(&out_both).len(), 2, "both steps are listed");
}

#[test]
fn files_that_are_not_kineto_traces_are_refused_or_skipped_with_why_c15() {
    let et = case("C15_hta_execution_trace_et_not_kineto.json");
    let o = coord(&["analyze", &et.to_string_lossy()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a Kineto trace (no traceEvents): a PyTorch execution trace"), "{}", stderr(&o));
    let tmp = tempfile::tempdir().expect("tmp");
    let other = tmp.path().join("a.json");
    std::fs::write(&other, r#"{"a":1}"#).expect("write");
    let o = coord(&[
        "ingest",
        &other.to_string_lossy(),
        "--out",
        &tmp.path().join("o").to_string_lossy(),
        "--batch-size",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a.json: not a Kineto trace (no traceEvents): a JSON object with keys a"),
        "{}",
        stderr(&o)
    );
    // In a folder: a trace under any JSON name is read, other files are listed as skipped with why.
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(dir.join("logs_8")).expect("mkdir");
    std::fs::copy(fixture("h200-llama-1b/decode/logs_8/trace_0.json.zst"), dir.join("logs_8/profile.json.zst"))
        .expect("copy");
    std::fs::copy(&et, dir.join("logs_8/et.json")).expect("copy");
    std::fs::write(dir.join("logs_8/notes.txt"), "hello").expect("write");
    let (o, out) = ingest(&dir, &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("et.json: not a Kineto trace"), "{err}");
    assert!(err.contains("notes.txt: not a .json, .json.gz or .json.zst file"), "{err}");
    assert!(err.contains("ingested 1 traces"), "{err}");
    assert!(!steps(&out).is_empty());
    // Nothing but skipped files: an error, not empty tables.
    std::fs::remove_file(dir.join("logs_8/profile.json.zst")).expect("rm");
    let (o, _) = ingest(&dir, &[]);
    assert!(!o.status.success() && stderr(&o).contains("no Kineto trace under"), "{}", stderr(&o));
    assert!(stderr(&o).contains(" files skipped, listed above)"), "{}", stderr(&o));
    // Nothing at all: said plainly, the folder named as given.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let (o, _) = ingest(&empty, &[]);
    let want = format!("no Kineto trace under {} (no file there is a .json, .json.gz or .json.zst)", empty.display());
    assert!(!o.status.success() && stderr(&o).contains(&want), "{}", stderr(&o));
}

#[test]
fn torch_1_profiler_steps_recorded_as_operators_are_steps_c17() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("logs_32")).expect("mkdir");
    std::fs::copy(
        case("C17_torch19_operator_profilerstep/logs_32/worker0.pt.trace.json"),
        tmp.path().join("logs_32/worker0.pt.trace.json"),
    )
    .expect("copy");
    let (o, out) = ingest(tmp.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = steps(&out);
    let got: Vec<_> = s.iter().map(|r| (r.3.as_str(), r.4.as_str())).collect();
    // Two steps of 300 + 20 µs of kernels each, not one of 640.
    assert_eq!(got, [("ProfilerStep#5", "320.000"), ("ProfilerStep#6", "320.000")], "{s:?}");
    // torch 1.x wrote `external id` in lower case on runtime calls and kernels: the ops still get their
    // kernels' time (the convolution's 300 µs kernel in each step; before, 0).
    let ops = std::fs::read_to_string(out.join("ops.csv")).expect("ops.csv");
    let rows = csv_rows(&ops);
    let col = |name: &str| rows[0].iter().position(|h| h == name).expect(name);
    let conv = rows.iter().find(|r| r[col("name")] == "aten::cudnn_convolution").expect("the convolution's row");
    assert_eq!(conv[col("self_device_total_us")], "600.000", "{ops}");
    let analyze = coord(&["analyze", &tmp.path().join("logs_32/worker0.pt.trace.json").to_string_lossy()]);
    let table = String::from_utf8_lossy(&analyze.stdout);
    let line = table.lines().find(|l| l.starts_with("ProfilerStep#5")).expect("the step's row");
    assert!(line.trim_end().ends_with("320.000"), "the step's device total is its kernels': {table}");
}

#[test]
fn flags_that_would_misread_input_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("logs_8");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(fixture("h200-llama-1b/decode/logs_8/trace_0.json.zst"), dir.join("trace_0.json.zst")).expect("copy");
    let (o, _) = ingest(tmp.path(), &["--batch-size", "0"]);
    assert!(!o.status.success() && stderr(&o).contains("--batch-size"), "{}", stderr(&o));
    let (o, _) = ingest(tmp.path(), &["--mode", "foo"]);
    assert!(
        !o.status.success() && stderr(&o).contains("unknown mode `foo`; expected decode or prefill"),
        "{}",
        stderr(&o)
    );
    // A step pattern that matches nothing would read the trace's three steps as one.
    let vllm = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        fixture("h200-vllm-0.25/decode-eager/logs_32/rank0.1795978119558305470.pt.trace.json.zst"),
        vllm.path().join("rank0.pt.trace.json.zst"),
    )
    .expect("copy");
    let (o, _) = ingest(vllm.path(), &["--step-pattern", "Step*"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("no annotation matches the step patterns Step*; its annotations include "), "{err}");
    assert!(err.contains("execute_context_0(0)_generation_32(32)"), "{err}");
}

#[test]
fn keep_going_writes_the_tables_of_the_readable_traces_and_still_fails() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("logs_8");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(fixture("h200-llama-1b/decode/logs_8/trace_0.json.zst"), dir.join("trace_0.json.zst")).expect("copy");
    std::fs::write(dir.join("trace_1.json"), r#"{"traceEvents":[{"ph":"X","#).expect("write");
    let (o, out) = ingest(tmp.path(), &[]);
    assert!(!o.status.success() && stderr(&o).contains("1 of 2 traces could not be counted"), "{}", stderr(&o));
    assert!(!out.join("op_times.tsv").exists());
    let (o, out) = ingest(tmp.path(), &["--keep-going"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("trace_1.json at byte") && err.contains("the tables hold the other 1"), "{err}");
    assert!(out.join("op_times.tsv").exists());
}

#[test]
fn many_events_sharing_one_timestamp_fold_like_torch_in_linear_time() {
    // 50k ops of one name with the same start and duration on one thread nest into one chain (torch's
    // rule), and torch's _remove_dup_nodes folds a chain of same-name only children into one event. The
    // fold used to rescan every later event per fold (quadratic: 100k such events took 10 s); it is
    // linear now (docs/benchmarks.md: 1M events in under half a second in a release build).
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("same_ts.json");
    let n = 50_000;
    let mut text = String::from("{\"traceEvents\":[");
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            "{{\"ph\":\"X\",\"cat\":\"cpu_op\",\"name\":\"aten::add\",\"pid\":1,\"tid\":1,\"ts\":100,\"dur\":5,\"args\":{{\"External id\":{}}}}}",
            i + 1
        ));
    }
    text.push_str("]}");
    std::fs::write(&path, text).expect("write");
    let rows = table(&path);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (count, cpu, self_cpu, _, _) = rows["aten::add"];
    assert_eq!((count, cpu, self_cpu), (1, 5.0, 5.0));
}

#[test]
fn a_trace_given_twice_is_read_once() {
    // The folder twice and one of its files besides: 3 traces, each step counted once in every table
    // (before: "ingested 7 traces", ops.csv counting 7 steps where steps.csv listed 3).
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("decode/logs_1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..3 {
        let name = format!("trace_{i}.json.zst");
        std::fs::copy(fixture(&format!("h200-llama-1b/decode/logs_1/{name}")), dir.join(&name)).expect("copy");
    }
    let out = tmp.path().join("out");
    let (d, f) = (dir.to_string_lossy().to_string(), dir.join("trace_0.json.zst").to_string_lossy().to_string());
    let o = coord(&["ingest", &d, &d, &f, "--out", &out.to_string_lossy()]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // trace_0 is reached three times: listed and counted once among the files skipped.
    assert!(err.contains("ingested 3 traces, 3 steps (3 files skipped)"), "{err}");
    assert_eq!(err.matches(": the same file as ").count(), 3, "{err}");
    let ops = std::fs::read_to_string(out.join("ops.csv")).expect("ops.csv");
    let rows = csv_rows(&ops);
    let col = |name: &str| rows[0].iter().position(|h| h == name).expect(name);
    let mm = rows.iter().find(|r| r[col("name")] == "aten::mm").expect("aten::mm");
    assert_eq!(mm[col("steps")], "3", "{ops}");
}

/// A trace with one kernel of 30 µs without `dur` beside a kernel of 5 µs, and a range-profiler event.
const LEFT_OUT_TRACE: &str = r#"{"traceEvents": [
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 10, "tid": 10, "ts": 1000, "dur": 50, "args": {"External id": 7}},
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 10, "tid": 10, "ts": 1010, "dur": 20, "args": {"External id": 7, "correlation": 100}},
    {"ph": "X", "cat": "kernel", "name": "gemm_kernel", "pid": 0, "tid": 7, "ts": 1100, "args": {"External id": 7, "correlation": 100}},
    {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 10, "tid": 10, "ts": 1200, "dur": 40, "args": {"External id": 8}},
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 10, "tid": 10, "ts": 1210, "dur": 10, "args": {"External id": 8, "correlation": 101}},
    {"ph": "X", "cat": "kernel", "name": "add_kernel", "pid": 0, "tid": 7, "ts": 1300, "dur": 5, "args": {"External id": 8, "correlation": 101}},
    {"ph": "X", "cat": "cuda_profiler_range", "name": "range", "pid": 0, "tid": 7, "ts": 1000, "dur": 400}
]}"#;

#[test]
fn events_that_cannot_be_counted_are_left_out_and_said_with_their_number() {
    // Before: the kernel without a duration counted as a 0 µs kernel (kernel_count 2, gpu_time 5), and
    // the range-profiler event was dropped, without a word either time.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("logs_4");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("trace_0.json"), LEFT_OUT_TRACE).expect("write");
    let (o, out) = ingest(tmp.path(), &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(
            "trace_0.json: 1 event left out: 1 without a valid duration (dur missing, not a number or negative) (the \
             first: `gemm_kernel`); 1 complete event of categories not read: cuda_profiler_range (1)"
        ),
        "{err}"
    );
    assert!(err.contains("(1 of 1 traces have events left out of the tables, listed above)"), "{err}");
    let text = std::fs::read_to_string(out.join("steps.csv")).expect("steps.csv");
    let rows = csv_rows(&text);
    let col = |name: &str| rows[0].iter().position(|h| h == name).expect(name);
    assert_eq!((rows[1][col("kernel_count")].as_str(), rows[1][col("gpu_time_us")].as_str()), ("1", "5.000"));
    // `coord analyze` says the same.
    let a = coord(&["analyze", &dir.join("trace_0.json").to_string_lossy()]);
    assert!(stderr(&a).contains("1 event left out: 1 without a valid duration"), "{}", stderr(&a));
}

#[test]
fn a_prefill_curve_of_an_unknown_input_length_is_against_sequences_not_tokens() {
    // Without an input length, a prefill step's x is its batch size: labelled `tokens`, every per-token
    // slope of models.json read 128 times too large on these traces. The fixture's traces, recorded with
    // shapes, say their length by the tokens they fed to the model; the same traces without shapes do not.
    let tmp = tempfile::tempdir().expect("tmp");
    let src = fixture("h200-llama-1b/prefill");
    let shapeless = tmp.path().join("shapeless/prefill");
    for b in [1, 4, 16] {
        let dir = shapeless.join(format!("logs_{b}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for n in 0..2 {
            let zst = std::fs::read(src.join(format!("logs_{b}/trace_{n}.json.zst"))).expect("fixture");
            let text = String::from_utf8(zstd::decode_all(&zst[..]).expect("zstd")).expect("utf-8");
            let text = text.replace("\"Input Dims\"", "\"Input Dimensions\"");
            std::fs::write(dir.join(format!("trace_{n}.json")), text).expect("write");
        }
    }
    let x = |input: &Path, extra: &[&str], out: &str| -> Vec<String> {
        let out = tmp.path().join(out).to_string_lossy().to_string();
        let input = input.to_string_lossy().to_string();
        let mut args = vec!["ingest", input.as_str(), "--out", out.as_str()];
        args.extend(extra);
        let o = coord(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let m = tracefleet_tests::read_json(&Path::new(&out).join("models.json")).expect("models.json");
        m["curves"].as_array().expect("curves").iter().map(|c| c["x"].as_str().unwrap_or("").to_string()).collect()
    };
    assert_eq!(x(&shapeless, &[], "unknown"), ["sequences"]);
    assert_eq!(x(&shapeless, &["--input-len", "128"], "known"), ["tokens"]);
    assert_eq!(x(&src, &[], "from-tokens"), ["tokens"]);
}

/// Two trees each holding traces `trace_0..n` of the llama fixture's folder `from` in folder `into`: one
/// to add other steps to, one to compare it with.
fn two_trees(from: &str, into: &str, n: usize) -> (tempfile::TempDir, tempfile::TempDir) {
    let src = fixture("h200-llama-1b").join(from);
    let trees = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    for root in [trees.0.path(), trees.1.path()] {
        let dir = root.join(into);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..n {
            let f = format!("trace_{i}.json.zst");
            std::fs::copy(src.join(&f), dir.join(&f)).expect("copy");
        }
    }
    trees
}

/// The tables a step's series decides: seed, kernel and op tables and the curves.
const SERIES_TABLES: [&str; 6] =
    ["op_times.tsv", "op_times_detailed.tsv", "kernel_dat.csv", "kernels.csv", "ops.csv", "models.json"];

/// Asserts that the two outputs hold the same `files`.
fn assert_same_files(a: &Path, b: &Path, files: &[&str]) {
    for t in files {
        assert_eq!(std::fs::read_to_string(a.join(t)).expect(t), std::fs::read_to_string(b.join(t)).expect(t), "{t}");
    }
}

#[test]
fn a_folder_without_a_mode_takes_the_workload_most_of_its_steps_fed() {
    // The original experiment's logs_B folders, with no decode/ or prefill/ above them: the steady
    // decodes of B beside a prompt's prefill and a decode of the batch filling up. Nothing said the mode,
    // so nothing was checked and all five steps were averaged into batch 8's row.
    let src = fixture("h200-llama-1b");
    let (mixed, only) = two_trees("decode/logs_8", "results/logs_8", 3);
    let dir = mixed.path().join("results/logs_8");
    // A prefill of one 128-token prompt (128 = 8 × 16: a count a prefill of 8 could feed) and a decode of
    // one sequence.
    std::fs::copy(src.join("prefill/logs_1/trace_0.json.zst"), dir.join("trace_3.json.zst")).expect("copy");
    std::fs::copy(src.join("decode/logs_1/trace_0.json.zst"), dir.join("trace_4.json.zst")).expect("copy");
    let (o, out_mixed) = ingest(mixed.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(
        said.contains("note: the workload of 1 folder was read from the tokens most of its steps fed to the model")
            && said.contains("logs_8: 8 decodes (the mode read): 3 of 5 steps fed 8 tokens"),
        "{said}"
    );
    assert!(said.contains("2 of 5 steps ran another batch"), "{said}");
    assert!(!said.contains("could not be checked"), "{said}");
    let rows = steps(&out_mixed);
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.0 == "decode" && r.1 == "8"), "{rows:?}");
    // The tables are those of the three decodes, as when the mode is given and only they are there.
    let (o, out_only) = ingest(only.path(), &["--mode", "decode"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("the workload of"), "a given mode is not read from the tokens: {}", stderr(&o));
    assert_same_files(&out_mixed, &out_only, &SERIES_TABLES);
}

#[test]
fn a_prefill_folder_without_an_input_length_takes_the_length_most_of_its_steps_fed() {
    // prefill/logs_4 of 128-token prompts, with a prefill of one prompt among them (128 tokens, as four
    // prompts of 32 would feed).
    let src = fixture("h200-llama-1b");
    let (mixed, only) = two_trees("prefill/logs_4", "prefill/logs_4", 2);
    let dir = mixed.path().join("prefill/logs_4");
    std::fs::copy(src.join("prefill/logs_1/trace_0.json.zst"), dir.join("trace_2.json.zst")).expect("copy");
    let (o, out_mixed) = ingest(mixed.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(said.contains("logs_4: 4 prefills of 128 tokens (the length read): 2 of 3 steps fed 512 tokens"), "{said}");
    assert!(said.contains("1 of 3 steps ran another batch"), "{said}");
    let rows = steps(&out_mixed);
    assert!(rows.iter().all(|r| r.0 == "prefill" && r.1 == "4" && r.2 == "128"), "{rows:?}");
    let (o, out_only) = ingest(only.path(), &["--input-len", "128"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_files(&out_mixed, &out_only, &SERIES_TABLES);
}

#[test]
fn a_prefill_folder_of_mostly_decodes_is_not_taken_for_prefills_of_one_token() {
    // prefill/logs_1 where the server also recorded its decodes (one token each: what one decode feeds,
    // and what a prompt of one token would). Read as prefills of one token, the real prefill would be
    // left out and the decodes tabulated as prefills.
    let src = fixture("h200-llama-1b");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("prefill/logs_1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for n in 0..2 {
        std::fs::copy(src.join(format!("decode/logs_1/trace_{n}.json.zst")), dir.join(format!("trace_{n}.json.zst")))
            .expect("copy");
    }
    std::fs::copy(src.join("prefill/logs_1/trace_0.json.zst"), dir.join("trace_2.json.zst")).expect("copy");
    let (o, out) = ingest(tmp.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(!said.contains("the workload of"), "nothing read from the tokens: {said}");
    // No length is the folder's; the real prefill says its own, the decodes' one token says none (they
    // stay of an unknown length, unchecked).
    assert!(said.contains("each step's workload was read from its own count"), "{said}");
    assert!(said.contains("note: 2 of 3 steps could not be checked"), "{said}");
    let mut lengths: Vec<(String, String)> = steps(&out).into_iter().map(|r| (r.0, r.2)).collect();
    lengths.sort();
    let want = [("prefill", "0"), ("prefill", "0"), ("prefill", "128")];
    assert_eq!(lengths, want.map(|(m, l)| (m.to_string(), l.to_string())));
}

#[test]
fn a_prompt_prefilled_alone_is_told_from_a_batch_by_its_sequences() {
    // One 128-token prompt feeds the model [1, 128]: as many tokens as 128 decodes ([128, 1]) and as
    // eight prompts of 16. The totals alone took it for a decode in logs_128 and for 8 prefills of 16 in
    // logs_8; the embedding's two-dimensional input says it is one sequence.
    let src = fixture("h200-llama-1b");
    let (mixed, only) = two_trees("decode/logs_128", "results/logs_128", 3);
    let copy_prefills = |dir: &Path, first: usize| {
        for n in 0..2 {
            let to = dir.join(format!("trace_{}.json.zst", first + n));
            std::fs::copy(src.join(format!("prefill/logs_1/trace_{n}.json.zst")), to).expect("copy");
        }
    };
    copy_prefills(&mixed.path().join("results/logs_128"), 3);
    let (o, out_mixed) = ingest(mixed.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(said.contains("logs_128: 128 decodes (the mode read): 3 of 5 steps fed 128 tokens"), "{said}");
    assert!(said.contains("2 of 5 steps ran another batch"), "{said}");
    assert!(said.contains("fed the model 1 × 128 tokens (its embedding's input: 1 sequence)"), "{said}");
    let (o, out_only) = ingest(only.path(), &["--mode", "decode"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_files(&out_mixed, &out_only, &SERIES_TABLES);

    // logs_8 where the single prompts are most of the steps: no workload is the folder's (they are not
    // batch 8's), so each step's own count says it: the prompts are left out, the decode is batch 8's.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("results/logs_8");
    std::fs::create_dir_all(&dir).expect("mkdir");
    copy_prefills(&dir, 0);
    std::fs::copy(src.join("decode/logs_8/trace_0.json.zst"), dir.join("trace_2.json.zst")).expect("copy");
    let (o, out) = ingest(tmp.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(!said.contains("the workload of"), "{said}");
    assert!(said.contains("each step's workload was read from its own count"), "{said}");
    assert!(said.contains("unknown batch 8 (local, NVIDIA H200): 2 of 2 steps ran another batch"), "{said}");
    assert!(!said.contains("could not be checked"), "{said}");
    let rows = steps(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().filter(|r| r.0 == "decode").count(), 1, "{rows:?}");
}

#[test]
fn the_ranks_of_a_tensor_parallel_folder_take_one_workload() {
    // Two ranks' traces in one logs_8 folder (torch traces, no vLLM step names): one workload, read once
    // from both ranks' steps, so that the ranks land in one series and merge.
    let src = fixture("h200-llama-1b/decode/logs_8");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("results/logs_8");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for rank in 0..2 {
        let zst = std::fs::read(src.join("trace_0.json.zst")).expect("fixture");
        let text = String::from_utf8(zstd::decode_all(&zst[..]).expect("zstd")).expect("utf-8");
        let info = format!("{{\"distributedInfo\": {{\"backend\": \"nccl\", \"rank\": {rank}, \"world_size\": 2}}, ");
        let text = text.replacen('{', &info, 1);
        std::fs::write(dir.join(format!("rank{rank}.pt.trace.json")), text).expect("write");
    }
    let (o, out) = ingest(tmp.path(), &[]);
    let said = stderr(&o);
    // The two "ranks" are one GPU's trace twice and ran no collective: read as one workload, merged, and
    // then left out as no tensor-parallel step (so the command fails: nothing is in the seed tables).
    assert!(!o.status.success() && said.contains("no rank ran a collective kernel"), "{said}");
    assert!(said.contains("note: the workload of 1 folder was read"), "{said}");
    let listed = said.lines().filter(|l| l.contains("logs_8: 8 decodes (the mode read)")).count();
    assert_eq!(listed, 1, "{said}");
    let rows = steps(&out);
    assert!(!rows.is_empty() && rows.iter().all(|r| r.0 == "decode" && r.1 == "8"), "{rows:?}");
}

#[test]
fn steps_that_fed_the_model_another_batch_are_left_out_of_the_seed_tables() {
    // The original experiment's server wrote every step of its life into logs_B: the prompts' prefills
    // and the decodes while the batch filled up, beside the steady decodes of batch B. Its traces carry
    // no vLLM annotation; the tokens each step's embedding looked up tell them apart.
    let src = fixture("h200-llama-1b");
    let (mixed, only) = two_trees("decode/logs_8", "decode/logs_8", 3);
    let dir = mixed.path().join("decode/logs_8");
    // A prefill of one 128-token prompt and a decode of one sequence.
    std::fs::copy(src.join("prefill/logs_1/trace_0.json.zst"), dir.join("trace_3.json.zst")).expect("copy");
    std::fs::copy(src.join("decode/logs_1/trace_0.json.zst"), dir.join("trace_4.json.zst")).expect("copy");
    let (o, out_mixed) = ingest(mixed.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let warned = stderr(&o);
    assert!(warned.contains("2 of 5 steps ran another batch"), "{warned}");
    // transformers' [sequences, tokens] input says the sequences: one, not batch 8's.
    assert!(
        warned.contains("fed the model 1 × 128 tokens") || warned.contains("fed the model 1 × 1 tokens"),
        "{warned}"
    );
    let (o, out_only) = ingest(only.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("another batch"), "{}", stderr(&o));
    // The seed, kernel and op tables, and what is made from the step rows (curves, Vidur tables), are
    // those of the three decode steps of batch 8.
    assert_same_files(&out_mixed, &out_only, &SERIES_TABLES);
    assert_same_files(&out_mixed, &out_only, &["roofline.csv", "vidur/mlp.csv", "vidur/attention.csv"]);
    // Every step is listed, with the tokens it fed to the model and whether it counts.
    let text = std::fs::read_to_string(out_mixed.join("steps.csv")).expect("steps.csv");
    let mut rows = csv_rows(&text);
    let header = rows.remove(0);
    let at = |name: &str| header.iter().position(|h| h == name).expect(name);
    let mut listed: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let trace = r[at("trace")].rsplit('/').next().unwrap_or_default().to_string();
            (trace, r[at("model_tokens")].clone(), r[at("left_out")].clone())
        })
        .collect();
    listed.sort();
    let listed: Vec<(&str, &str, &str)> = listed.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
    assert_eq!(
        listed,
        [
            ("trace_0.json.zst", "8", ""),
            ("trace_1.json.zst", "8", ""),
            ("trace_2.json.zst", "8", ""),
            ("trace_3.json.zst", "128", "batch_mismatch"),
            ("trace_4.json.zst", "1", "batch_mismatch")
        ],
        "{text}"
    );
}

#[test]
fn steps_whose_batch_nothing_checks_are_counted_in_a_note() {
    // The decode fixture recorded without shapes (its `Input Dims` renamed): no annotation, no tokens.
    let src = fixture("h200-llama-1b/decode/logs_8/trace_0.json.zst");
    let text = zstd::decode_all(&std::fs::read(src).expect("fixture")[..]).expect("zstd");
    let text = String::from_utf8(text).expect("utf-8").replace("\"Input Dims\"", "\"Input Dimensions\"");
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("decode/logs_8")).expect("mkdir");
    std::fs::write(tmp.path().join("decode/logs_8/trace_0.json"), text).expect("write");
    let (o, out) = ingest(tmp.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("note: 1 of 1 steps could not be checked for their folder's batch"), "{}", stderr(&o));
    let steps = std::fs::read_to_string(out.join("steps.csv")).expect("steps.csv");
    let rows = csv_rows(&steps);
    let at = rows[0].iter().position(|h| h == "model_tokens").expect("model_tokens");
    assert_eq!(rows[1][at], "", "{steps}");
    // With its shapes, the same step is checked: no note.
    std::fs::copy(
        fixture("h200-llama-1b/decode/logs_8/trace_0.json.zst"),
        tmp.path().join("decode/logs_8/trace_0.json.zst"),
    )
    .expect("copy");
    std::fs::remove_file(tmp.path().join("decode/logs_8/trace_0.json")).expect("rm");
    let (o, _) = ingest(tmp.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("could not be checked"), "{}", stderr(&o));
}

/// `steps.csv` rows keyed by step name: (model_tokens, left_out, attention_us, linear_us, others_us).
fn step_rows(out: &Path) -> std::collections::BTreeMap<String, (String, String, f64, f64, f64)> {
    let text = std::fs::read_to_string(out.join("steps.csv")).expect("steps.csv");
    let mut rows = csv_rows(&text);
    let header = rows.remove(0);
    let at = |name: &str| header.iter().position(|h| h == name).expect(name);
    let us = |r: &[String], name: &str| r[at(name)].parse::<f64>().expect(name);
    rows.iter()
        .map(|r| {
            let times = (us(r, "attention_us"), us(r, "linear_us"), us(r, "others_us"));
            (
                r[at("step_name")].clone(),
                (r[at("model_tokens")].clone(), r[at("left_out")].clone(), times.0, times.1, times.2),
            )
        })
        .collect()
}

#[test]
fn a_step_that_folds_in_the_forward_passes_of_unmatched_steps_is_left_out() {
    // A step pattern that matches only some of a trace's steps: the work of the unmatched steps before
    // the first match goes to it (four whole forward passes of batch 16). Its embedding ran five times:
    // it fed the model 80 tokens, not 16, and must not be averaged into batch 16's row.
    let dir = tempfile::tempdir().expect("tmp");
    let name = "decode_bs16_8steps.pt.trace.json.zst";
    std::fs::copy(fixture("h200-llama-1b/multistep").join(name), dir.path().join(name)).expect("copy");
    let (o, all) = ingest(dir.path(), &["--batch-size", "16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let every_step = step_rows(&all);
    std::fs::remove_dir_all(&all).expect("rm");

    let (o, out) = ingest(dir.path(), &["--batch-size", "16", "--step-pattern", "execute_model_step_[4-7]"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 of 4 steps ran another batch"), "{}", stderr(&o));
    let rows = step_rows(&out);
    let listed: Vec<(&str, &str, &str)> = rows.iter().map(|(k, v)| (k.as_str(), v.0.as_str(), v.1.as_str())).collect();
    assert_eq!(
        listed,
        [
            ("execute_model_step_4", "80", "batch_mismatch"),
            ("execute_model_step_5", "16", ""),
            ("execute_model_step_6", "16", ""),
            ("execute_model_step_7", "16", ""),
        ]
    );
    // Batch 16's row is the mean of steps 5 to 7, as they are when every step is matched.
    let kept = ["execute_model_step_5", "execute_model_step_6", "execute_model_step_7"];
    let mean =
        |f: fn(&(String, String, f64, f64, f64)) -> f64| kept.iter().map(|k| f(&every_step[*k])).sum::<f64>() / 3.0;
    let want = [mean(|r| r.2), mean(|r| r.3), mean(|r| r.4)];
    let text = std::fs::read_to_string(out.join("op_times.tsv")).expect("op_times.tsv");
    let row: Vec<f64> = text.lines().nth(1).expect("a row").split('\t').map(|v| v.parse().expect("number")).collect();
    assert_eq!(row[0], 16.0, "{text}");
    for (got, us) in row[1..].iter().zip(want) {
        assert!((got - us / 1000.0).abs() < 2e-6, "{text}: want {want:?} µs");
    }
}

#[test]
fn one_recording_in_several_files_is_counted_once() {
    // A trace beside its decompressed copy, a gzip copy and a hard link to that copy: one recording,
    // counted once (before: "ingested 5 traces, 5 steps", three identical rows in steps.csv).
    let (copies, only) = two_trees("decode/logs_8", "decode/logs_8", 3);
    let dir = copies.path().join("decode/logs_8");
    let zst = std::fs::read(dir.join("trace_0.json.zst")).expect("read");
    let json = zstd::decode_all(zst.as_slice()).expect("zstd");
    std::fs::write(dir.join("trace_0.json"), &json).expect("write");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &json).expect("gzip");
    std::fs::write(dir.join("trace_0_copy.json.gz"), gz.finish().expect("gzip")).expect("write");
    std::fs::hard_link(dir.join("trace_0.json"), dir.join("trace_9.json")).expect("link");
    let (o, out_copies) = ingest(copies.path(), &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("ingested 3 traces, 3 steps (3 files skipped)"), "{err}");
    assert_eq!(err.matches("(the same events, step starts and GPU times): counted once").count(), 3, "{err}");
    let (o, out_only) = ingest(only.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_files(&out_copies, &out_only, &SERIES_TABLES);
    // One row per recording (the first file of each by path names it).
    let rows = |out: &Path| csv_rows(&std::fs::read_to_string(out.join("steps.csv")).expect("steps.csv")).len();
    assert_eq!(rows(&out_copies), rows(&out_only));
}

#[test]
fn times_past_what_the_sums_hold_are_refused_naming_the_events() {
    // Each value fits in 64 bits of nanoseconds, but their sums would not: three kernels of 7e15 µs
    // wrapped the op's device time around to 2.55e15 µs without a word, and starts 1.8e19 ns apart gave a
    // negative wall span.
    let dir = tempfile::tempdir().expect("tmp");
    let kernel = |name: &str, ts: &str, dur: &str| {
        format!(
            r#"{{"ph":"X","cat":"kernel","name":"{name}","pid":0,"tid":7,"ts":{ts},"dur":{dur},"args":{{"correlation":1}}}}"#
        )
    };
    let cases = [
        (
            "wrap.json",
            vec![kernel("k", "10", "7e15"), kernel("k", "10", "7e15"), kernel("k", "10", "7e15")],
            "its events span",
        ),
        (
            "span.json",
            vec![kernel("early", "-9e15", "1"), kernel("late", "9e15", "1")],
            "from the start of `early` to the end of `late`",
        ),
        (
            "sum.json",
            vec![kernel("k", "10", "5e14"), kernel("k", "10", "5e14"), kernel("k", "10", "5e14")],
            "durations add up to 1500000000000000000 ns",
        ),
    ];
    for (file, events, said) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, format!(r#"{{"traceEvents":[{}]}}"#, events.join(","))).expect("write");
        let o = coord(&["analyze", &path.to_string_lossy()]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{file}: {}", String::from_utf8_lossy(&o.stdout));
        assert!(err.contains(file) && err.contains(said) && err.contains("past 2^60 ns"), "{file}: {err}");
    }
    // Times of a real profile pass: a wall clock of 2026 in nanoseconds is near 2^61, its spans are short.
    let ok = dir.path().join("ok.json");
    std::fs::write(&ok, format!(r#"{{"traceEvents":[{}]}}"#, kernel("k", "1795978119558.305", "12.5"))).expect("write");
    let o = coord(&["analyze", &ok.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_folder_of_as_many_decodes_as_prefills_reads_each_steps_workload_from_its_own_count() {
    // logs_1 with no mode above it, holding two prefills of a 128-token prompt and two decodes: no count is
    // most steps', and the four were averaged into one batch-1 row (a blend of 2.5 ms prefills and 1.9 ms
    // decodes) under a note that said they could not be checked.
    let src = fixture("h200-llama-1b");
    let (mixed, apart) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let logs = mixed.path().join("results/logs_1");
    std::fs::create_dir_all(&logs).expect("mkdir");
    for (mode, i) in [("prefill", 0), ("prefill", 1), ("decode", 0), ("decode", 1)] {
        let name = format!("trace_{i}.json.zst");
        // Named so that nothing in the path says the mode.
        let copy = format!("trace_{}{i}.json.zst", if mode == "prefill" { "p" } else { "q" });
        std::fs::copy(src.join(format!("{mode}/logs_1/{name}")), logs.join(copy)).expect("copy");
        let dir = apart.path().join(format!("{mode}/logs_1"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(src.join(format!("{mode}/logs_1/{name}")), dir.join(&name)).expect("copy");
    }
    let (o, out_mixed) = ingest(mixed.path(), &[]);
    let said = stderr(&o);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("each step's workload was read from its own count")
            && said.contains("logs_1: 2 steps fed 1 × 1 tokens, 2 steps fed 1 × 128 tokens"),
        "{said}"
    );
    assert!(!said.contains("could not be checked"), "{said}");
    let mut modes: Vec<(String, String)> = steps(&out_mixed).into_iter().map(|r| (r.0, r.2)).collect();
    modes.sort();
    let want = [("decode", "0"), ("decode", "0"), ("prefill", "128"), ("prefill", "128")];
    assert_eq!(modes, want.map(|(m, l)| (m.to_string(), l.to_string())));
    // The tables are those of the same traces in decode/ and prefill/ folders.
    let (o, out_apart) = ingest(apart.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for mode in ["decode", "prefill"] {
        assert_same_files(&out_mixed.join(mode), &out_apart.join(mode), &["op_times.tsv", "op_times_detailed.tsv"]);
    }
    assert_same_files(&out_mixed, &out_apart, &["kernels.csv", "ops.csv"]);
}

#[test]
fn a_trace_that_recorded_no_event_is_refused_not_counted() {
    // {"traceEvents": []}: `coord analyze` refused it, `coord ingest` counted it as a step without GPU
    // activity in a series of its own (GPU unknown).
    let (tree, _) = two_trees("decode/logs_8", "decode/logs_8", 1);
    let dir = tree.path().join("decode/logs_8");
    std::fs::write(dir.join("trace_9.json"), r#"{"traceEvents": []}"#).expect("write");
    let (o, _) = ingest(tree.path(), &[]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("1 of 2 traces could not be counted"), "{err}");
    assert!(err.contains("trace_9.json: the trace holds no events (traceEvents is empty): nothing to count"), "{err}");
    let (o, out) = ingest(tree.path(), &["--keep-going"]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert_eq!(steps(&out).len(), 1, "only the real trace's step is listed");
}
