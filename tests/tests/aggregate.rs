//! Statistics merge across traces in any order, and across partial aggregates, with the same result.

use tracefleet_common::aggregate::{Aggregate, SeriesKey};
use tracefleet_common::summary::{AnalyzeOptions, TraceSummary, summarize_file};
use tracefleet_common::tables::write_results;
use tracefleet_tests::fixture;

fn summaries() -> Vec<(SeriesKey, String, TraceSummary)> {
    let opts = AnalyzeOptions::default();
    let mut out = Vec::new();
    for bs in [1u32, 8, 32, 128] {
        for step in 0..3 {
            let rel = format!("h200-llama-1b/decode/logs_{bs}/trace_{step}.json.zst");
            let s = summarize_file(&fixture(&rel), &opts).expect("fixture");
            let key = SeriesKey {
                host: format!("host{}", step % 2),
                gpu: s.gpu.clone(),
                mode: Some(tracefleet_common::sweep::Mode::Decode),
                batch_size: bs,
                input_len: 128,
                tp: 1,
                rank: 0,
            };
            out.push((key, rel, s));
        }
    }
    out
}

fn add_all<'a>(items: impl Iterator<Item = &'a (SeriesKey, String, TraceSummary)>) -> Aggregate {
    let mut agg = Aggregate::default();
    for (k, name, s) in items {
        for st in &s.steps {
            agg.add_step(k, name, st);
        }
    }
    agg
}

#[test]
fn order_does_not_matter() {
    let items = summaries();
    let forward = add_all(items.iter());
    let backward = add_all(items.iter().rev());
    let interleaved = add_all(items.iter().step_by(2).chain(items.iter().skip(1).step_by(2)));
    assert_eq!(forward, backward);
    assert_eq!(forward, interleaved);

    // Partial aggregates (as separate workers or machines would build them), merged in two orders.
    let (a, b) = items.split_at(5);
    let (pa, pb) = (add_all(a.iter()), add_all(b.iter()));
    let mut ab = Aggregate::default();
    ab.merge(&pa);
    ab.merge(&pb);
    let mut ba = Aggregate::default();
    ba.merge(&pb);
    ba.merge(&pa);
    assert_eq!(ab, forward);
    assert_eq!(ba, forward);

    // And the written tables are byte-identical.
    let (d1, d2) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    write_results(d1.path(), &forward, Default::default()).expect("write");
    write_results(d2.path(), &ba, Default::default()).expect("write");
    for f in ["op_times.tsv", "op_times_detailed.tsv", "kernel_dat.csv", "ops.csv", "kernels.csv", "steps.csv"] {
        let x = std::fs::read(d1.path().join(f)).expect(f);
        let y = std::fs::read(d2.path().join(f)).expect(f);
        assert_eq!(x, y, "{f}");
    }
    // Two hosts are two series in the full tables.
    let ops = std::fs::read_to_string(d1.path().join("ops.csv")).expect("ops");
    assert!(ops.lines().any(|l| l.starts_with("host0,")) && ops.lines().any(|l| l.starts_with("host1,")));
}
