//! Linking and the table on several threads give exactly what one thread gives: every link, every
//! per-event time, every row in the same order with the same bits, on every fixture kind (Llama steps,
//! vLLM eager, CUDA graphs and tensor parallel ranks, and the external traces).

use std::path::{Path, PathBuf};

use tracefleet_common::trace::key_averages::{
    EventTimes, KeyAverage, event_times_with_jobs_min, key_averages_with_jobs_min,
};
use tracefleet_common::trace::{Links, ReadLimits, Trace};
use tracefleet_tests::fixture;

/// The files under `dir`, at any depth, whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("fixture dir").filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn llama() -> PathBuf {
    fixture("h200-llama-1b/multistep/decode_bs16_8steps.pt.trace.json.zst")
}

fn assert_same_links(a: &Links, b: &Links, what: &str) {
    assert!(a.parent == b.parent, "{what}: parent");
    assert!(a.launcher == b.launcher, "{what}: launcher");
    assert!(a.module == b.module, "{what}: module");
    assert!(a.host_order == b.host_order, "{what}: host_order");
    assert_eq!(a.overhead_op, b.overhead_op, "{what}: overhead_op");
    assert_eq!(a.graph_replayed, b.graph_replayed, "{what}: graph_replayed");
}

fn assert_same_times(a: &EventTimes, b: &EventTimes, what: &str) {
    assert!(a.counted == b.counted, "{what}: counted");
    assert!(a.self_cpu == b.self_cpu, "{what}: self_cpu");
    assert!(a.device == b.device, "{what}: device");
    assert!(a.self_device == b.self_device, "{what}: self_device");
}

/// A row with its floats as bits: equal means identical, not merely close.
fn bits(rows: &[KeyAverage]) -> Vec<(String, u64, [u64; 4])> {
    rows.iter()
        .map(|r| {
            let f =
                [r.cpu_time_total_us, r.self_cpu_time_total_us, r.device_time_total_us, r.self_device_time_total_us];
            (r.key.clone(), r.count, f.map(f64::to_bits))
        })
        .collect()
}

fn check(path: &Path) {
    let t = Trace::open(path, &ReadLimits::default()).expect("fixture parses");
    let what = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    // A threshold of 0 events sends even these small traces through the threaded code.
    let one = Links::with_jobs_min(&t, 1, 0);
    let one_times = event_times_with_jobs_min(&t, &one, 1, 0);
    let one_rows = bits(&key_averages_with_jobs_min(&t, &one, 1, 0));
    assert!(!one_rows.is_empty(), "{what}: empty table");
    for jobs in [2, 3, 8] {
        let what = format!("{what}, {jobs} jobs");
        let many = Links::with_jobs_min(&t, jobs, 0);
        assert_same_links(&one, &many, &what);
        assert_same_times(&one_times, &event_times_with_jobs_min(&t, &one, jobs, 0), &what);
        assert_eq!(one_rows, bits(&key_averages_with_jobs_min(&t, &one, jobs, 0)), "{what}: table");
    }
}

#[test]
fn threads_link_and_table_the_llama_trace_as_one_does() {
    check(&llama());
}

#[test]
fn threads_link_and_table_every_vllm_rank_as_one_does() {
    let ranks = files(&fixture("h200-vllm-0.25"), ".pt.trace.json.zst");
    assert!(ranks.len() >= 11, "vLLM ranks: {}", ranks.len());
    for p in &ranks {
        check(p);
    }
}

#[test]
fn threads_link_and_table_every_external_trace_as_one_does() {
    let ext = files(&fixture("external"), ".json.gz");
    assert_eq!(ext.len(), 11);
    for p in &ext {
        check(p);
    }
}

#[test]
fn small_traces_and_one_job_stay_on_one_thread() {
    // Below the threshold the threaded code is not used; the results are the one-thread ones all the same.
    let t = Trace::open(&llama(), &ReadLimits::default()).expect("fixture parses");
    assert!(t.events.len() < tracefleet_common::trace::link::PARALLEL_MIN_EVENTS);
    assert_same_links(&Links::new(&t), &Links::with_jobs(&t, 8), "default threshold");
}

#[test]
fn a_large_trace_summarized_on_several_threads_gives_the_one_thread_summary() {
    // The coordinator's parse pool summarizes large traces with `parse_jobs` threads: links and times on
    // the pool, steps and tables as before. Four copies of the 8-step fixture pass the event threshold.
    let z = std::fs::read(llama()).expect("fixture");
    let mut doc: serde_json::Value = serde_json::from_slice(&zstd::decode_all(&z[..]).expect("zstd")).expect("json");
    let events = doc["traceEvents"].as_array_mut().expect("traceEvents");
    let one_copy = events.clone();
    for _ in 0..3 {
        events.extend(one_copy.iter().cloned());
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("four.json");
    std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write");
    let t = Trace::open(&path, &ReadLimits::default()).expect("parses");
    assert!(t.events.len() >= tracefleet_common::trace::link::PARALLEL_MIN_EVENTS, "{} events", t.events.len());
    let summary = |jobs| {
        let opts = tracefleet_common::summary::AnalyzeOptions { parse_jobs: jobs, ..Default::default() };
        serde_json::to_string(&tracefleet_common::summary::summarize(&t, &opts)).expect("json")
    };
    let one = summary(1);
    assert!(one.contains("\"steps\":[{"), "steps found");
    assert_eq!(one, summary(3), "3 jobs");
}
