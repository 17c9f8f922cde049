//! Classification from module frames (with_modules=True) agrees with classification from attention
//! anchors on the same step, and both find the Llama layer structure.

use tracefleet_common::classify::Detail;
use tracefleet_common::summary::{AnalyzeOptions, summarize};
use tracefleet_common::trace::{Category, Trace};
use tracefleet_tests::fixture;

fn load(rel: &str) -> Trace {
    Trace::open(&fixture(rel), &Default::default()).expect("fixture parses")
}

#[test]
fn module_frames_and_anchors_agree() {
    let with = load("h200-llama-1b/modules/decode_bs8_with_stack.json.zst");
    assert!(with.events.iter().any(|e| e.cat == Category::Module), "fixture has module frames");
    let mut without = with.clone();
    without.events.retain(|e| e.cat != Category::Module);

    let opts = AnalyzeOptions::default();
    let a = summarize(&with, &opts);
    let b = summarize(&without, &opts);
    assert_eq!(a.steps.len(), 1);
    let (sa, sb) = (&a.steps[0], &b.steps[0]);
    assert_eq!(sa.layers, 16);
    assert_eq!(sb.layers, 16);
    // q,k,v | o | gate,up | down per layer, and the LM head outside the layers.
    assert_eq!(sa.linear_ops, [48, 0, 0, 16, 32, 16, 1]);
    assert_eq!(sa.linear_ops, sb.linear_ops);
    // Only the rotary cos/sin table differs: its module makes it rope; without modules it is "others".
    let idx = |d: Detail| Detail::ALL.iter().position(|x| *x == d).unwrap_or(6);
    for d in [Detail::KqvProj, Detail::PagedAttention, Detail::OProj, Detail::GatedUpProj, Detail::DownProj] {
        assert_eq!(sa.detail[idx(d)], sb.detail[idx(d)], "{d:?}");
        assert_eq!(sa.detail_activities[idx(d)], sb.detail_activities[idx(d)], "{d:?}");
    }
    assert!(sa.detail[idx(Detail::Rope)] > sb.detail[idx(Detail::Rope)]);
    assert_eq!(sa.gpu_time, sb.gpu_time);
}

#[test]
fn kernel_names_alone_would_miss_hopper_kernels() {
    // The original regexes (attention; cutlass|gemv|gemm) classify almost nothing on an H200 trace;
    // attribution classifies the GEMMs and attention by the ops that launched them.
    let t = load("h200-llama-1b/decode/logs_32/trace_0.json.zst");
    let s = &summarize(&t, &AnalyzeOptions::default()).steps[0];
    let by_regex: i64 = t
        .events
        .iter()
        .filter(|e| e.cat == Category::Kernel)
        .filter(|e| {
            let n = t.name(e.name);
            n.contains("attention") || n.contains("cutlass") || n.contains("gemm") || n.contains("gemv")
        })
        .map(|e| e.dur)
        .sum();
    let linear: i64 = s.detail[0] + s.detail[3] + s.detail[4] + s.detail[5];
    assert!(by_regex * 20 < linear, "regex {by_regex} ns vs attributed linear {linear} ns");
    assert!(s.detail[2] > 0, "attention found");
}

#[test]
fn custom_rules_change_the_classification() {
    // A rule file without any attention op: no layers, so no projections; everything still adds up.
    let t = load("h200-llama-1b/decode/logs_1/trace_0.json.zst");
    let rules = tracefleet_common::classify::Rules::parse(
        "[ops]\nattention = [\"no_such_op\"]\nlinear = [\"aten::linear\"]\n",
        "test.toml",
    )
    .expect("rules");
    let opts = AnalyzeOptions { rules, ..Default::default() };
    let s = &summarize(&t, &opts).steps[0];
    assert_eq!(s.layers, 0);
    assert_eq!(s.linear_ops, [0, 0, 0, 0, 0, 0, 113]);
    assert_eq!(s.detail.iter().sum::<i64>(), s.gpu_time);
}
