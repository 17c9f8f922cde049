//! vLLM without a GPU: the real vLLM 0.25.0 traces of `fixtures/h200-vllm-0.25` (eager decode, prefill,
//! CUDA graphs) are classified as vLLM's decoder layers are built, `coord analyze` agrees with vLLM's own
//! key_averages() printout of each window, the driver's per-step batch check reads their annotations, and
//! what cannot be attributed is said, not hidden.

use std::path::{Path, PathBuf};
use std::process::Command;

use tracefleet_common::classify::Detail;
use tracefleet_common::classify::graphs::UNATTRIBUTED_OP;
use tracefleet_common::summary::{AnalyzeOptions, StepSummary, summarize};
use tracefleet_common::trace::Trace;
use tracefleet_tests::{bin, fixture, workspace};

const DECODE: &str = "h200-vllm-0.25/decode-eager/logs_32";
const PREFILL: &str = "h200-vllm-0.25/prefill-eager/logs_8";
const GRAPHS: &str = "h200-vllm-0.25/decode-cudagraph/logs_32";

/// The one trace file of a fixture folder.
fn trace_in(dir: &str) -> PathBuf {
    let d = fixture(dir);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".pt.trace.json.zst"))
        .collect();
    assert_eq!(found.len(), 1, "{}", d.display());
    found.remove(0)
}

fn steps(dir: &str) -> Vec<StepSummary> {
    let t = Trace::open(&trace_in(dir), &Default::default()).expect("fixture parses");
    summarize(&t, &AnalyzeOptions::default()).steps
}

/// Kernels of a category in a step that are GEMMs (cuBLAS's split-K reductions and workspace memsets are
/// counted with their GEMM, but are not GEMMs).
fn gemms(s: &StepSummary, d: Detail) -> u64 {
    s.kernels
        .iter()
        .filter(|k| k.category == d && !k.name.contains("splitKreduce") && !k.name.starts_with("Memset"))
        .map(|k| k.calls)
        .sum()
}

#[test]
fn eager_decode_steps_hold_vllm_layers() {
    let steps = steps(DECODE);
    assert_eq!(steps.len(), 3, "three annotated decode steps");
    for s in &steps {
        assert_eq!(s.name, "execute_context_0(0)_generation_32(32)");
        assert_eq!(s.layers, 16);
        // Fused qkv_proj | o_proj | fused gate_up_proj | down_proj per layer, and the LM head outside them.
        assert_eq!(s.linear_ops, [16, 0, 0, 16, 16, 16, 1]);
        for d in [Detail::KqvProj, Detail::OProj, Detail::GatedUpProj, Detail::DownProj] {
            assert_eq!(gemms(s, d), 16, "{d:?}");
        }
        // cuBLASLt's split-K reduction after each down_proj GEMM counts with it.
        let split_k: u64 = s.kernels.iter().filter(|k| k.name.contains("splitKreduce")).map(|k| k.calls).sum();
        assert_eq!(split_k, 16);
        assert!(s.kernels.iter().any(|k| k.name.contains("splitKreduce") && k.category == Detail::DownProj));
        // Attention: FA3's kernel and vLLM's KV-cache write, one each per layer; FA3's per-step scheduler
        // metadata is not attention.
        let in_cat = |needle: &str, d: Detail| {
            s.kernels.iter().filter(|k| k.name.contains(needle) && k.category == d).map(|k| k.calls).sum::<u64>()
        };
        assert_eq!(in_cat("FlashAttnFwdSm90", Detail::PagedAttention), 16);
        assert_eq!(in_cat("reshape_and_cache_flash", Detail::PagedAttention), 16);
        assert_eq!(in_cat("prepare_varlen_num_blocks", Detail::Others), 1);
        assert_eq!(in_cat("rotary_embedding", Detail::Rope), 16);
        let (attention, linear) = (
            s.detail[Detail::PagedAttention.index()],
            [Detail::KqvProj, Detail::OProj, Detail::GatedUpProj, Detail::DownProj]
                .iter()
                .map(|d| s.detail[d.index()])
                .sum::<i64>(),
        );
        assert!(attention > 0 && linear > 0);
        assert_eq!(s.detail.iter().sum::<i64>(), s.gpu_time);
        assert_eq!(s.graph_activities, 0);
        // The LM head and the sampling run after vLLM's step annotation and still belong to the step:
        // every kernel of the profiling window is in one of its three steps.
        assert_eq!(s.kernel_count, 213);
        // What `others` holds is listed by op: the LM head (a linear op outside the layers), then the norms.
        let mut by_time: Vec<(&str, i64)> = s.others_ops.iter().map(|o| (o.op.as_str(), o.total)).collect();
        by_time.sort_by_key(|(_, t)| -t);
        assert_eq!(by_time[0].0, "aten::linear");
        assert_eq!(by_time[1].0, "_C::fused_add_rms_norm");
    }
}

#[test]
fn eager_prefill_step_holds_vllm_layers() {
    let steps = steps(PREFILL);
    assert_eq!(steps.len(), 1);
    let s = &steps[0];
    assert_eq!(s.name, "execute_context_8(4096)_generation_0(0)");
    assert_eq!((s.layers, s.linear_ops), (16, [16, 0, 0, 16, 16, 16, 1]));
    for d in [Detail::KqvProj, Detail::OProj, Detail::GatedUpProj, Detail::DownProj] {
        assert_eq!(gemms(s, d), 16, "{d:?}");
    }
    assert!(s.detail[Detail::PagedAttention.index()] > 0);
}

#[test]
fn graph_replays_are_counted_and_not_attributed() {
    for s in steps(GRAPHS) {
        // Every kernel of the step but a few host-launched ones is replayed by the graph launch; none of
        // them can be attributed from this trace, so no layer is found and nothing is guessed.
        // 588 kernels of the file carry the correlation of one of its 3 cudaGraphLaunch calls.
        assert_eq!(s.graph_activities, 196);
        assert!(s.graph_time * 10 > s.gpu_time * 8, "graph replays hold most of the step");
        assert_eq!(s.layers, 0);
        assert_eq!(s.detail[Detail::Others.index()], s.gpu_time);
    }
    assert!(steps(DECODE).iter().all(|s| s.graph_activities == 0 && s.graph_time == 0));
}

fn ingest(dir: &str, out: &Path) -> String {
    let o =
        Command::new(bin("coord")).arg("ingest").arg(fixture(dir)).arg("--out").arg(out).output().expect("run coord");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "coord ingest failed: {stderr}");
    stderr
}

#[test]
fn ingest_warns_where_others_dominates_and_reads_the_prefill_length() {
    let tmp = tempfile::tempdir().expect("tmp");
    let graphs = ingest(GRAPHS, &tmp.path().join("g"));
    assert!(
        graphs.contains(
            "warning: decode batch 32 (local, NVIDIA H200): in 3 of 3 steps `others` holds 100% of the GPU time \
             while attention or linear is 0"
        ),
        "{graphs}"
    );
    assert!(
        graphs.contains("kernels under graph replays: not attributed (3 of 3 steps, 83% of their GPU time"),
        "{graphs}"
    );
    // Decode traces do not say their prompt length: said, not silently 0.
    assert!(graphs.contains("note: 3 of 3 steps have no input length"), "{graphs}");

    let eager = ingest(DECODE, &tmp.path().join("d"));
    assert!(!eager.contains("warning"), "{eager}");
    // A prefill step says its prompt length: 4096 tokens over 8 requests.
    let prefill = ingest(PREFILL, &tmp.path().join("p"));
    assert!(!prefill.contains("warning") && !prefill.contains("no input length"), "{prefill}");
    let steps = std::fs::read_to_string(tmp.path().join("p/steps.csv")).expect("steps.csv");
    let row = steps.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("local,NVIDIA H200,prefill,8,512,"), "{row}");

    // The step checks of the GPU run pass on the fixtures' tables (16 GEMMs per projection, annotations
    // of the series' batch, attention and linear in every step).
    for (dir, out) in [(DECODE, "d"), (PREFILL, "p")] {
        let o = Command::new("python3")
            .arg(workspace().join("tests/gpu/check_vllm_results.py"))
            .arg(tmp.path().join(out))
            .args(["--layers", "16"])
            .output()
            .expect("python3");
        assert!(o.status.success(), "{dir}: {}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn coord_analyze_agrees_with_vllms_printout_of_every_window() {
    let mut args = Vec::new();
    for dir in [DECODE, PREFILL, GRAPHS] {
        args.push(fixture(dir).join("vllm_key_averages.txt"));
        args.push(trace_in(dir));
    }
    let o = Command::new("python3")
        .arg(workspace().join("tests/gpu/compare_vllm_printout.py"))
        .arg("--coord")
        .arg(bin("coord"))
        .args(&args)
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON summary");
    assert_eq!(v["windows"], 3);
    assert_eq!(v["mismatched_rows"], 0);
    // 97 + 100 + 88 printed rows (the printout stops at 100).
    assert_eq!(v["rows"], 285);
}

/// A fixture's trace, decompressed (the driver reads plain or gzip JSON, as vLLM writes it).
fn plain_trace(dir: &str, tmp: &Path) -> PathBuf {
    let src = trace_in(dir);
    let bytes = zstd::decode_all(&std::fs::read(&src).expect("read")[..]).expect("zstd");
    let name = src.file_name().map(|n| n.to_string_lossy().trim_end_matches(".zst").to_string()).unwrap_or_default();
    let dst = tmp.join(name);
    std::fs::write(&dst, bytes).expect("write");
    dst
}

fn verify(trace: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new("python3")
        .arg(workspace().join("agent/drivers/vllm_driver.py"))
        .arg("--verify-trace")
        .arg(trace)
        .args(args)
        .output()
        .expect("python3");
    (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout))
}

#[test]
fn the_driver_checks_every_profiled_step_on_vllms_annotations() {
    let tmp = tempfile::tempdir().expect("tmp");
    let decode = plain_trace(DECODE, tmp.path());
    let prefill = plain_trace(PREFILL, tmp.path());
    let (code, out) = verify(&decode, &["--mode", "decode", "--batch-size", "32", "--steps", "3"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 steps of execute_context_0(0)_generation_32(32)"), "{out}");
    let (code, _) = verify(&prefill, &["--mode", "prefill", "--batch-size", "8", "--input-len", "512", "--steps", "1"]);
    assert_eq!(code, Some(0));
    // Another batch, another prompt length, another number of steps: refused, saying what ran.
    let (code, out) = verify(&decode, &["--mode", "decode", "--batch-size", "16", "--steps", "3"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains(
            "profiled step 1 of 3 ran execute_context_0(0)_generation_32(32), not 16 decodes \
             (execute_context_0(0)_generation_16(16))"
        ),
        "{out}"
    );
    let (code, out) =
        verify(&prefill, &["--mode", "prefill", "--batch-size", "8", "--input-len", "256", "--steps", "1"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("not 8 prefills of 256 tokens"), "{out}");
    let (code, out) = verify(&decode, &["--mode", "decode", "--batch-size", "32", "--steps", "4"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("the trace holds 3 annotated steps, not the 4 profiled"), "{out}");
    // A prefill check without the prompt length is an argument error.
    let (code, _) = verify(&prefill, &["--mode", "prefill", "--batch-size", "8", "--steps", "1"]);
    assert_eq!(code, Some(2));
}

#[test]
fn the_vllm_driver_refuses_bad_job_files_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tmp");
    let check = |name: &str, job: &str| -> (Option<i32>, String) {
        let p = tmp.path().join(name);
        std::fs::write(&p, job).expect("write");
        let o = Command::new("python3")
            .arg(workspace().join("agent/drivers/vllm_driver.py"))
            .arg("--job")
            .arg(&p)
            .arg("--check")
            .output()
            .expect("python3");
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout))
    };
    let point =
        r#"{"point_id": "decode-bs8-in128", "mode": "decode", "batch_size": 8, "input_len": 128, "output_len": 16}"#;
    let job = |extra: &str, point: &str| {
        format!(
            r#"{{"model": "llama-3.2-1b", "out_dir": "/tmp/x", "warmup_steps": 5, "profile_steps": 3{extra}, "points": [{point}]}}"#
        )
    };
    let (code, out) = check("ok.json", &job(r#", "dtype": "bfloat16", "gpu_memory_utilization": 0.8"#, point));
    assert_eq!(code, Some(0), "{out}");
    let cases = [
        (
            job("", &point.replace("\"output_len\": 16", "\"output_len\": 8")),
            "output_len 8 does not cover the prefill token, 5 warm-up and 3 profiled steps (needs at least 9)",
        ),
        (job(r#", "dtype": "float32""#, point), "'dtype' must be one of auto, bfloat16, float16"),
        (job(r#", "gpu_memory_utilization": 1.5"#, point), "'gpu_memory_utilization' must be in (0, 1]"),
        (
            job(r#", "max_model_len": 100"#, point),
            "'max_model_len' 100 is shorter than the job's longest sequence (144 tokens",
        ),
        (
            job("", &point.replace("\"batch_size\": 8", "\"batch_size\": 0")),
            "point decode-bs8-in128: batch_size must be an integer >= 1, not 0",
        ),
        (
            job("", point).replace("llama-3.2-1b", "gpt-7"),
            "unknown model 'gpt-7': a local model folder or one of llama-3.1-8b, llama-3.2-1b, qwen2.5-1.5b",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let (code, out) = check(&format!("bad{i}.json"), text);
        assert_eq!(code, Some(2), "{want}: {out}");
        assert!(out.contains(want), "expected {want:?} in {out}");
    }
}

/// `coord sweep --local` of a sweep file; returns (stdout, manifest).
fn local_sweep(tmp: &Path, toml: &str) -> (String, serde_json::Value) {
    let f = tmp.join("sweep.toml");
    std::fs::write(&f, toml).expect("write");
    let out = tmp.join("out");
    let o = Command::new(bin("coord"))
        .current_dir(workspace())
        .arg("sweep")
        .arg(&f)
        .args(["--local", "--data-dir"])
        .arg(tmp.join("state"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    let manifest = tracefleet_tests::read_json(&out.join("manifest.json")).expect("manifest");
    (stdout, manifest)
}

#[test]
fn a_sweep_says_what_it_could_not_attribute_and_which_steps_ran_another_batch() {
    // The CUDA-graph traces replayed as a sweep: the summary warns, the manifest lists what `others` holds.
    let tmp = tempfile::tempdir().expect("tmp");
    let (stdout, m) = local_sweep(
        tmp.path(),
        &format!(
            "name = \"g\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = [32]\ninput_len = 256\n\
             [replay]\ndir = \"{}\"\n",
            fixture("h200-vllm-0.25/decode-cudagraph").display()
        ),
    );
    // (the series names the local agent's host)
    assert!(stdout.contains("warning: decode batch 32, input 256 ("), "{stdout}");
    assert!(
        stdout.contains(
            "NVIDIA H200): kernels under graph replays: not attributed (3 of 3 steps, 83% of their GPU time, \
             counted in `others`; e.g. logs_32/rank0.1795978179198830137.pt.trace.json.zst step 0: 196 replayed \
             kernels and no eager reference step of its shape"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("`others` holds 100% of the GPU time while attention or linear is 0"), "{stdout}");
    let kinds: Vec<&str> = m["warnings"].as_array().into_iter().flatten().filter_map(|w| w["kind"].as_str()).collect();
    assert_eq!(kinds, ["others_dominant", "graph_replays"]);
    let others = &m["others"][0];
    assert_eq!(others["series"]["batch_size"], 32);
    assert_eq!(others["others_share"], 1.0);
    // The step annotation around the graph launch holds most of it; the listing names it.
    assert_eq!(others["top_ops"][0]["name"], "execute_context_0(0)_generation_32(32)");
    assert_eq!(others["top_kernels"].as_array().map(Vec::len), Some(10));

    // The bs-32 eager trace delivered as a batch-16 point: the annotation says 32 decodes, and so does
    // the warning.
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("replay/logs_16");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let src = trace_in(DECODE);
    std::fs::copy(&src, logs.join(src.file_name().expect("name"))).expect("copy");
    let (stdout, m) = local_sweep(
        tmp.path(),
        &format!(
            "name = \"b\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = [16]\n[replay]\ndir = \"{}\"\n",
            tmp.path().join("replay").display()
        ),
    );
    assert!(stdout.contains("warning: decode batch 16, input 128 ("), "{stdout}");
    assert!(stdout.contains("NVIDIA H200): 3 of 3 steps ran another batch than the series'"), "{stdout}");
    assert!(stdout.contains("step execute_context_0(0)_generation_32(32) is not 16 decodes"), "{stdout}");
    assert_eq!(m["warnings"][0]["kind"], "batch_mismatch");
    // Its times are batch 32's: left out of batch 16's seed row (before: written there as batch 16's).
    assert!(
        stdout.contains("left out of the series' statistics (op_times, kernel_dat, kernels, ops, models)"),
        "{stdout}"
    );
    let op_times = std::fs::read_to_string(tmp.path().join("out/op_times.tsv")).expect("op_times.tsv");
    assert_eq!(op_times.lines().count(), 1, "no row for batch 16: {op_times}");
}

#[test]
fn attention_stays_attention_when_the_projections_are_replayed_by_graphs() {
    // vLLM's piecewise CUDA graphs replay the projections and leave attention eager: take the eager
    // decode trace without the projection ops inside its steps (the LM head, after each step's annotation,
    // stays). Attention ops then come before the step's only linear op, and are still attention: the
    // "metadata before the first projection" rule applies only to steps that show their layers.
    let mut t = Trace::open(&trace_in(DECODE), &Default::default()).expect("fixture parses");
    let annotations: Vec<(i64, i64)> = t
        .events
        .iter()
        .filter(|e| t.name(e.name).starts_with("execute_context_"))
        .map(|e| (e.ts, e.ts + e.dur))
        .collect();
    let hidden = ["aten::linear", "aten::matmul", "aten::mm", "aten::t", "aten::transpose"];
    let names = t.names.clone();
    t.events.retain(|e| {
        let inside = annotations.iter().any(|&(a, b)| e.ts >= a && e.ts < b);
        !(inside && hidden.contains(&&*names[e.name as usize]))
    });
    for s in summarize(&t, &AnalyzeOptions::default()).steps {
        assert_eq!(s.linear_ops[Detail::Others.index()], 1, "the LM head is the step's one linear op");
        let attention: u64 = s.kernels.iter().filter(|k| k.category == Detail::PagedAttention).map(|k| k.calls).sum();
        assert_eq!(attention, 48, "FA3 kernel, its fill and the KV-cache write of 16 layers");
        assert_eq!(s.layers, 16);
    }
}

/// The graph fixture attributed through the eager fixture (same model, batch and shape) as reference.
fn graph_steps_with_eager_reference() -> Vec<StepSummary> {
    let opts = AnalyzeOptions::default();
    let reference = tracefleet_common::summary::graph_reference_from_file(&trace_in(DECODE), &opts)
        .expect("the eager fixture has eager steps");
    let opts = AnalyzeOptions { graph_reference: Some(std::sync::Arc::new(reference)), ..opts };
    let t = Trace::open(&trace_in(GRAPHS), &opts.limits).expect("fixture parses");
    summarize(&t, &opts).steps
}

#[test]
fn graph_replays_take_the_ops_of_an_eager_reference_step() {
    let eager = steps(DECODE);
    let graphs = graph_steps_with_eager_reference();
    assert_eq!(graphs.len(), 3);
    for (g, e) in graphs.iter().zip(&eager) {
        // Every replayed kernel but one maps: 163 by name in place, 32 by the gap rule (FlashAttention's
        // split-KV kernel and its combine kernel, in place of the eager run's unsplit kernel and its fill,
        // both launched by the attention op), and the graph's own output copy (memcpy32_post) has no
        // counterpart in an eager step: unattributed, in `others`.
        assert_eq!((g.graph_activities, g.graph_exact, g.graph_inferred, g.graph_unattributed), (196, 163, 32, 1));
        assert!(g.graph_reference.ends_with(".pt.trace.json.zst"), "{}", g.graph_reference);
        // Per category of the decoder layers, the same kernel counts as the eager step of the same batch.
        for d in Detail::ALL.into_iter().filter(|&d| d != Detail::Others) {
            assert_eq!(g.detail_activities[d.index()], e.detail_activities[d.index()], "{d:?}");
        }
        assert_eq!(&g.detail_activities[..6], &[16, 16, 48, 16, 16, 32]);
        // `others` differs by what the two steps do not share: the graph step launches 220 activities,
        // the eager one 217 (its output copy, and host-side input preparation of its own).
        let total = |s: &StepSummary| s.detail_activities.iter().sum::<u32>();
        assert_eq!((total(g), total(e)), (220, 217));
        assert_eq!(
            g.detail_activities[Detail::Others.index()] - e.detail_activities[Detail::Others.index()],
            total(g) - total(e)
        );
        assert!(g.detail[Detail::PagedAttention.index()] > 0 && g.detail[Detail::KqvProj.index()] > 0);
        assert_eq!(g.layers, 16, "the reference's layers, every one of their kernels found");
        // Four projections per layer and the LM head (eager, after the graph).
        assert_eq!(g.linear_ops, [16, 0, 0, 16, 16, 16, 1]);
        // Nothing is counted twice: the categories add up to the step's GPU time.
        assert_eq!(g.detail.iter().sum::<i64>(), g.gpu_time);
        let unattributed: Vec<_> = g.others_ops.iter().filter(|o| o.op == UNATTRIBUTED_OP).collect();
        assert_eq!(unattributed.len(), 1);
        assert_eq!((unattributed[0].activities, unattributed[0].total), (1, g.graph_unattributed_time));
    }
}

/// `coord ingest INPUT --graph-reference` the eager decode trace `--out OUT`, which must succeed; its stderr.
/// `coord ingest INPUT --graph-reference (the eager trace) --out OUT`, which must succeed (`ok`) or fail;
/// its stderr.
fn ingest_with_eager_reference(input: &Path, out: &Path, ok: bool) -> String {
    let o = Command::new(bin("coord"))
        .arg("ingest")
        .arg(input)
        .arg("--graph-reference")
        .arg(trace_in(DECODE))
        .arg("--out")
        .arg(out)
        .output()
        .expect("run coord");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.success(), ok, "{stderr}");
    stderr
}

#[test]
fn ingest_with_a_graph_reference_reports_graph_against_eager_per_category() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("g");
    let stderr = ingest_with_eager_reference(&fixture(GRAPHS), &out, true);
    // One replayed kernel of 196 per step is unattributed, and that is said.
    assert!(
        stderr.contains("kernels under graph replays: not attributed (3 of 3 steps, 0% of their GPU time"),
        "{stderr}"
    );
    assert!(!stderr.contains("`others` holds"), "{stderr}");
    let table = std::fs::read_to_string(out.join("graph_reference.csv")).expect("graph_reference.csv");
    let mut rdr = csv::Reader::from_reader(table.as_bytes());
    let header = rdr.headers().expect("header").clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name} in {header:?}"));
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 7, "one row per category");
    for r in &rows {
        let num = |c: &str| r[col(c)].parse::<f64>().unwrap_or_else(|_| panic!("{c}: {:?}", &r[col(c)]));
        assert_eq!((num("graph_steps"), num("reference_steps")), (3.0, 3.0));
        assert!((num("graph_us") - num("eager_us") - num("difference_us")).abs() < 0.002, "{r:?}");
        if &r[col("category")] != "others" {
            assert_eq!(num("graph_kernels"), num("eager_kernels"), "{r:?}");
        }
    }
    // FlashAttention's split-KV kernel plus its combine under graphs cost more than the unsplit one eager.
    let attention = rows.iter().find(|r| &r[col("category")] == "paged_attention").expect("row");
    assert!(attention[col("difference_us")].parse::<f64>().expect("number") > 0.0, "{attention:?}");
    // The tables count the graph steps only (3), never the reference steps.
    let steps = std::fs::read_to_string(out.join("steps.csv")).expect("steps.csv");
    assert_eq!(steps.lines().count(), 4);
}

#[test]
fn piecewise_graph_replays_between_eager_attention_map_onto_the_reference() {
    // vLLM's piecewise CUDA graphs replay the layers' work and leave attention eager between the graph
    // pieces. Made from the eager decode trace: every kernel of the projections and rope is turned into a
    // replay of its step's `cudaGraphLaunch` (its correlation, no External id); attention stays eager
    // between them. The eager trace itself is the reference.
    let eager = steps(DECODE);
    let mut t = Trace::open(&trace_in(DECODE), &Default::default()).expect("fixture parses");
    let replayed_kinds: std::collections::HashSet<String> = eager[0]
        .kernels
        .iter()
        .filter(|k| !matches!(k.category, Detail::PagedAttention | Detail::Others))
        .map(|k| k.name.clone())
        .collect();
    let launch_name = t.names.len() as u32;
    t.names.push("cudaGraphLaunch".into());
    // One graph launch per step, right after the step's annotation starts; a kernel is that step's replay
    // when it ran after the annotation's start and before the next one's.
    let mut steps_at: Vec<(i64, u32)> =
        t.events.iter().filter(|e| t.name(e.name).starts_with("execute_context_")).map(|e| (e.ts, e.thread)).collect();
    steps_at.sort_unstable();
    let launch = |k: usize| 0x7fff_0000 + k as u32;
    let mut replayed = 0;
    for e in t.events.iter_mut() {
        if e.cat == tracefleet_common::trace::Category::Kernel && replayed_kinds.contains(&*t.names[e.name as usize]) {
            let k = steps_at.partition_point(|&(s, _)| s <= e.ts);
            assert!(k > 0, "a layer kernel before the first step");
            e.correlation = launch(k - 1);
            e.external_id = 0;
            replayed += 1;
        }
    }
    assert!(replayed > 0);
    for (k, &(ts, thread)) in steps_at.iter().enumerate() {
        t.events.push(tracefleet_common::trace::Event {
            ts: ts + 1,
            dur: 1,
            external_id: 0,
            correlation: launch(k),
            name: launch_name,
            thread,
            kernel: u32::MAX,
            cat: tracefleet_common::trace::Category::Runtime,
        });
    }
    let opts = AnalyzeOptions::default();
    let reference = tracefleet_common::summary::graph_reference_from_file(&trace_in(DECODE), &opts).expect("eager");
    let opts = AnalyzeOptions { graph_reference: Some(std::sync::Arc::new(reference)), ..opts };
    let graphs = summarize(&t, &opts).steps;
    for (g, e) in graphs.iter().zip(&eager) {
        // Per layer: qkv, rope, o_proj, gate_up and down_proj with its split-K reduction.
        assert_eq!(g.graph_activities, 16 * 6);
        assert_eq!((g.graph_exact, g.graph_inferred, g.graph_unattributed), (g.graph_activities, 0, 0));
        assert_eq!(g.detail_activities, e.detail_activities, "every category as in the eager step");
        assert_eq!(g.detail, e.detail, "and the same time: these are the same kernels");
        assert_eq!(g.layers, 16);
    }
}

#[test]
fn a_graph_reference_that_does_not_fit_is_said_and_one_among_the_inputs_is_not_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = |args: &[&std::ffi::OsStr]| {
        let o = Command::new(bin("coord")).arg("ingest").args(args).output().expect("coord");
        (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    // A prefill trace as the reference of decode graph steps: no shape fits, and the warning says what it holds.
    let (ok, err) = run(&[
        fixture(GRAPHS).as_os_str(),
        "--graph-reference".as_ref(),
        trace_in(PREFILL).as_os_str(),
        "--out".as_ref(),
        tmp.path().join("a").as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "3 steps with CUDA-graph replays found no eager step of their shape (or rank) there; it holds \
                      execute_context_8(4096)_generation_0(0)"
        ),
        "{err}"
    );
    assert!(
        err.contains("kernels replayed by CUDA graphs are not attributed (see the graph_replays warning)"),
        "{err}"
    );
    // A graph trace as its own reference: refused, once, with the file.
    let (ok, err) = run(&[
        fixture(GRAPHS).as_os_str(),
        "--graph-reference".as_ref(),
        trace_in(GRAPHS).as_os_str(),
        "--out".as_ref(),
        tmp.path().join("b").as_os_str(),
    ]);
    assert!(!ok);
    assert!(err.contains("--graph-reference: ") && err.contains("no eager step to use as a reference"), "{err}");
    assert_eq!(err.matches(".pt.trace.json.zst").count(), 1, "the file named once: {err}");
    // The reference in the same folder as the graph trace: skipped as an input, used as the reference.
    let both = tmp.path().join("both/logs_32");
    std::fs::create_dir_all(&both).expect("mkdir");
    for f in [trace_in(GRAPHS), trace_in(DECODE)] {
        std::fs::copy(&f, both.join(f.file_name().expect("name"))).expect("copy");
    }
    let reference = both.join(trace_in(DECODE).file_name().expect("name"));
    let out = tmp.path().join("c");
    let (ok, err) = run(&[
        tmp.path().join("both").as_os_str(),
        "--graph-reference".as_ref(),
        reference.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("the --graph-reference trace: reported in graph_reference.csv, not counted"), "{err}");
    let steps = std::fs::read_to_string(out.join("steps.csv")).expect("steps.csv");
    assert_eq!(steps.lines().count(), 4, "the 3 graph steps only: {steps}");
}

#[test]
fn steps_of_another_batch_get_that_warning_only_and_no_graph_comparison() {
    // The CUDA-graph decode trace of batch 32 delivered as batch 16 (its annotations say 32 decodes), with
    // the eager trace as its reference: every step is left out of batch 16's statistics, so neither the
    // warnings about what `others` holds nor graph_reference.csv speak of them.
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("in/logs_16");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let src = trace_in(GRAPHS);
    std::fs::copy(&src, logs.join(src.file_name().expect("name"))).expect("copy");
    let out = tmp.path().join("out");
    // Every step left out: the tables are written and the command fails, saying so.
    let stderr = ingest_with_eager_reference(&tmp.path().join("in"), &out, false);
    assert!(stderr.contains("the seed tables") && stderr.contains("hold no row"), "{stderr}");
    assert!(stderr.contains("3 of 3 steps ran another batch than the series'"), "{stderr}");
    assert!(!stderr.contains("not attributed"), "{stderr}");
    assert!(!stderr.contains("`others` holds"), "{stderr}");
    let table = std::fs::read_to_string(out.join("graph_reference.csv")).unwrap_or_default();
    assert!(table.lines().count() <= 1, "no graph step to compare: {table}");
    let steps = std::fs::read_to_string(out.join("steps.csv")).expect("steps.csv");
    assert_eq!(steps.matches(",batch_mismatch,").count(), 3, "{steps}");
}
