//! One trace read in pieces on several threads gives exactly the model one thread gives: plain JSON,
//! zstd in frames (as the coordinator stores uploads), documents whose cuts are not at events (they are
//! read again in one piece), and broken documents (the same error).

use std::path::{Path, PathBuf};

use tracefleet_common::trace::parallel::open_pieces;
use tracefleet_common::trace::{ReadLimits, Trace};
use tracefleet_tests::fixture;

/// The fixture's JSON text (14.3 MiB, 8 decode steps of a Llama-shaped model, every event kind).
fn multistep() -> Vec<u8> {
    let z = std::fs::read(fixture("h200-llama-1b/multistep/decode_bs16_8steps.pt.trace.json.zst")).expect("fixture");
    zstd::decode_all(&z[..]).expect("zstd")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

/// Every part of the two models, compared.
fn assert_same(a: &Trace, b: &Trace, what: &str) {
    assert_eq!(a.events.len(), b.events.len(), "{what}: events");
    assert!(a.events == b.events, "{what}: events differ");
    assert_eq!(a.names, b.names, "{what}: names");
    assert_eq!(a.threads, b.threads, "{what}: threads");
    assert!(a.kernels == b.kernels, "{what}: kernels");
    assert_eq!(a.meta, b.meta, "{what}: meta");
    assert_eq!((a.flow_events, &a.left_out), (b.flow_events, &b.left_out), "{what}: counts");
    let work = |t: &Trace| {
        let mut w: Vec<String> = t.work.iter().map(|(k, v)| format!("{k}:{v:?}")).collect();
        w.sort();
        w
    };
    assert_eq!(work(a), work(b), "{what}: work");
    assert_eq!(a.lookups, b.lookups, "{what}: embedding lookups");
}

/// Reads `path` in 2, 3 and 7 pieces; returns how many pieces each read used.
fn check(path: &Path, what: &str) -> Vec<usize> {
    let limits = ReadLimits::default();
    let one = Trace::open(path, &limits).expect("one piece");
    [2, 3, 7]
        .into_iter()
        .map(|jobs| {
            let (many, used) = open_pieces(path, &limits, jobs, 256 << 10).expect("pieces");
            assert_same(&one, &many, &format!("{what}, {jobs} jobs"));
            used
        })
        .collect()
}

#[test]
fn pieces_of_a_plain_trace_give_the_one_piece_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = write(tmp.path(), "t.json", &multistep());
    assert_eq!(check(&path, "plain"), [2, 3, 7], "read in pieces");
    // Each of the 8 decode steps of batch 16 looks its 16 tokens up once, in every piece.
    let lookups = Trace::open(&path, &ReadLimits::default()).expect("trace").lookups;
    assert_eq!(lookups.iter().map(|l| (l.indices, l.rows)).collect::<Vec<_>>(), [(16, 128256); 8]);
}

#[test]
fn pieces_of_zstd_frames_give_the_one_piece_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    // One frame per 1 MiB, each declaring its size, as the agent's upload chunks are stored.
    let text = multistep();
    let mut z = Vec::new();
    for chunk in text.chunks(1 << 20) {
        z.extend(zstd::bulk::compress(chunk, 3).expect("compress"));
    }
    assert_eq!(check(&write(tmp.path(), "t.json.zst", &z), "zstd frames"), [2, 3, 7], "read in pieces");
    // One frame (what the zstd command writes): nothing to cut at, read in one piece.
    let one = zstd::bulk::compress(&text, 3).expect("compress");
    assert_eq!(check(&write(tmp.path(), "one.json.zst", &one), "one frame"), [1, 1, 1]);
}

#[test]
fn the_reader_limits_hold_in_pieces() {
    let tmp = tempfile::tempdir().expect("tmp");
    let text = multistep();
    let plain = write(tmp.path(), "t.json", &text);
    let mut z = Vec::new();
    for chunk in text.chunks(1 << 20) {
        z.extend(zstd::bulk::compress(chunk, 3).expect("compress"));
    }
    let frames = write(tmp.path(), "t.json.zst", &z);
    // A size limit below the trace, and a ratio limit below its compression ratio (past a small grace).
    let small = ReadLimits { max_decompressed_bytes: (text.len() / 2) as u64, ..ReadLimits::default() };
    let ratio = ReadLimits { max_ratio: 2, ratio_grace_bytes: 1 << 20, ..ReadLimits::default() };
    for (path, limits) in [(&plain, small), (&frames, small), (&frames, ratio)] {
        let one = Trace::open(path, &limits).map(|_| ()).expect_err("over the limit").to_string();
        let many = open_pieces(path, &limits, 4, 256 << 10).map(|_| ()).expect_err("over the limit").to_string();
        assert_eq!(one, many, "{}", path.display());
    }
}

#[test]
fn cuts_inside_events_and_odd_documents_fall_back_to_one_piece() {
    let tmp = tempfile::tempdir().expect("tmp");
    let v: serde_json::Value = serde_json::from_slice(&multistep()).expect("json");
    // Pretty-printed: `},\n {` also appears inside events (args arrays of objects, deviceProperties).
    let mut pretty = serde_json::to_vec_pretty(&v).expect("pretty");
    check(&write(tmp.path(), "pretty.json", &pretty), "pretty-printed");
    // Arrays of objects in `args`, one object per line: most cuts land inside an event, which the piece
    // before finds out; the trace is then read in one piece.
    let mut odd = v.clone();
    for e in odd["traceEvents"].as_array_mut().expect("events") {
        let objs: Vec<serde_json::Value> = (0..30).map(|k| serde_json::json!({ "k": k })).collect();
        e["args"]["objs"] = serde_json::Value::Array(objs);
    }
    let odd = serde_json::to_vec_pretty(&odd).expect("pretty");
    let used = check(&write(tmp.path(), "odd.json", &odd), "cuts inside events");
    assert!(used.contains(&1), "a cut inside an event was noticed: {used:?}");
    // A top-level array of events.
    let events = serde_json::to_vec(&v["traceEvents"]).expect("events");
    let lines: Vec<u8> = String::from_utf8(events).expect("utf8").replace("},{", "},\n{").into_bytes();
    assert_eq!(check(&write(tmp.path(), "array.json", &lines), "top-level array"), [2, 3, 7]);
    // Broken in the middle: the same error as one piece gives.
    pretty.truncate(pretty.len() * 2 / 3);
    let cut = write(tmp.path(), "cut.json", &pretty);
    let one = Trace::open(&cut, &ReadLimits::default()).expect_err("truncated").to_string();
    let many = open_pieces(&cut, &ReadLimits::default(), 4, 256 << 10).map(|_| ()).expect_err("truncated").to_string();
    assert_eq!(one, many);
    // A stray byte between two events, after a cut point: refused with its offset, as one piece refuses it.
    let mut text = multistep();
    let at = text.len() / 2 + memchr::memmem::find(&text[text.len() / 2..], b"},\n").expect("an event end") + 1;
    text.insert(at, b'x');
    let bad = write(tmp.path(), "bad.json", &text);
    let one = Trace::open(&bad, &ReadLimits::default()).expect_err("bad").to_string();
    let many = open_pieces(&bad, &ReadLimits::default(), 4, 256 << 10).map(|_| ()).expect_err("bad").to_string();
    assert_eq!(one, many);
    assert!(one.contains(&format!("at byte {at}")), "{one}");
}
