//! Bad input gets a clear error naming the file and the byte offset, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tracefleet_common::trace::{ReadLimits, Trace, TraceError};
use tracefleet_tests::{bin, fixture};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

fn err(path: &Path, limits: ReadLimits) -> TraceError {
    match Trace::open(path, &limits) {
        Ok(t) => panic!("{} parsed ({} events)", path.display(), t.events.len()),
        Err(e) => e,
    }
}

/// The error of `coord analyze` on this file: non-zero exit, and the message.
fn cli_err(path: &Path, extra: &[&str]) -> String {
    let o = Command::new(bin("coord")).arg("analyze").args(extra).arg(path).output().expect("run coord");
    assert!(!o.status.success(), "{} was accepted", path.display());
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "error does not name the file: {stderr}");
    stderr
}

fn syntax(e: &TraceError) -> (u64, String) {
    match e {
        TraceError::Syntax { location, message } => (location.offset, message.clone()),
        other => panic!("expected a syntax error, got {other}"),
    }
}

#[test]
fn empty_file() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "empty.json", b"");
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off, 0);
    assert!(msg.contains("empty file"), "{msg}");
    assert!(cli_err(&p, &[]).contains("at byte 0"));
}

#[test]
fn a_trace_without_events_is_not_an_empty_table() {
    let d = tempfile::tempdir().expect("tmp");
    for (name, text) in [("object.json", &br#"{"traceEvents": []}"#[..]), ("array.json", b"[]")] {
        let p = write(d.path(), name, text);
        assert!(cli_err(&p, &[]).contains("the trace holds no events (traceEvents is empty)"));
    }
    // Events, none of them an op or GPU activity: the table is empty, and said to be.
    let p = write(d.path(), "meta.json", br#"{"traceEvents": [{"ph": "M", "name": "process_name", "pid": 1}]}"#);
    let o = Command::new(bin("coord")).arg("analyze").arg(&p).output().expect("run coord");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("meta.json: none of its 1 events is an op or a GPU activity: the table is empty"),
        "{stderr}"
    );
}

#[test]
fn truncated_json() {
    let d = tempfile::tempdir().expect("tmp");
    let full =
        zstd::decode_all(&std::fs::read(fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst")).expect("read")[..])
            .expect("zstd");
    let cut = 1_234_567;
    let p = write(d.path(), "trace_0.json", &full[..cut]);
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off, cut as u64);
    assert!(msg.contains("truncated"), "{msg}");
    assert!(cli_err(&p, &[]).contains(&format!("at byte {cut}")));
}

#[test]
fn wrong_top_level_type() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "t.json", b"  \"not a trace\"");
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off, 2);
    assert!(msg.contains("must be a JSON object") && msg.contains("a string"), "{msg}");
    cli_err(&p, &[]);
}

#[test]
fn trace_events_not_an_array() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "t.json", br#"{"schemaVersion": 1, "traceEvents": {"ph": "X"}}"#);
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off, 36);
    assert!(msg.contains("traceEvents must be an array") && msg.contains("an object"), "{msg}");
    cli_err(&p, &[]);
}

#[test]
fn event_not_an_object_and_bad_syntax() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "t.json", br#"{"traceEvents": [{"ph": "X"}, 42]}"#);
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!((off, msg.contains("must be an object")), (30, true), "{msg}");
    let p = write(d.path(), "u.json", br#"{"traceEvents": [{"ph" "X"}]}"#);
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off, 23, "{msg}");
    let p = write(d.path(), "v.json", br#"{"traceEvents": []} trailing"#);
    let (off, _) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off, 20);
}

#[test]
fn non_utf8_bytes() {
    let d = tempfile::tempdir().expect("tmp");
    let mut bytes = br#"{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "aten::mm"#.to_vec();
    let at = bytes.len();
    bytes.extend_from_slice(b"\xff\xfe\", \"ts\": 1, \"dur\": 2}]}");
    let p = write(d.path(), "t.json", &bytes);
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off, at as u64);
    assert!(msg.contains("UTF-8"), "{msg}");
    // Also inside a field that is skipped (args of a CPU op).
    let mut bytes = br#"{"traceEvents": [{"ph": "X", "args": {"Input type": ["#.to_vec();
    let at2 = bytes.len() + 1;
    bytes.extend_from_slice(b"\"\xc3\x28\"]}, \"ts\": 1}]}");
    let p = write(d.path(), "u.json", &bytes);
    let (off, _) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off, at2 as u64);
    assert!(cli_err(&p, &[]).contains("UTF-8"));
}

#[test]
fn raw_control_bytes_inside_strings_are_refused_whichever_way_the_string_is_read() {
    let d = tempfile::tempdir().expect("tmp");
    let head = br#"{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "gemm"#;
    // A name read as it stands (no escape), one read through the unescaping path, a string skipped in
    // `args`, and a key: the same refusal at the byte, whichever path read it.
    let cases: [(&[u8], &[u8]); 4] = [
        (head, b"\t64\", \"ts\": 1, \"dur\": 2}]}"),
        (head, b"\\u0020\n\", \"ts\": 1, \"dur\": 2}]}"),
        (br#"{"traceEvents": [{"ph": "X", "args": {"Input type": ["x"#, b"\x01\"]}, \"ts\": 1}]}"),
        (br#"{"traceEvents": [{"ph": "X", "na"#, b"\x1fme\": \"a\", \"ts\": 1}]}"),
    ];
    for (k, (before, after)) in cases.iter().enumerate() {
        let mut bytes = before.to_vec();
        // The control byte's offset: after the escape in the second case.
        let at = bytes.len() + if k == 1 { 6 } else { 0 };
        bytes.extend_from_slice(after);
        assert!(bytes[at] < 0x20, "case {k}");
        let p = write(d.path(), &format!("c{k}.json"), &bytes);
        let (off, msg) = syntax(&err(&p, ReadLimits::default()));
        assert_eq!(off, at as u64, "case {k}: {msg}");
        assert!(msg.contains(&format!("control character 0x{:02x} inside a string", bytes[at])), "case {k}: {msg}");
        assert!(cli_err(&p, &[]).contains("inside a string"), "case {k}");
    }
    // Blanks between tokens, and escaped control characters, are JSON.
    let ok = b"{\n\t\"traceEvents\":\t[\r\n{\"ph\": \"X\", \"cat\": \"kernel\", \"name\": \"a\\tb\\n\", \"pid\": 0, \"tid\": 7, \"ts\": 1, \"dur\": 2}\n]}\n";
    let p = write(d.path(), "ok.json", ok);
    let t = Trace::open(&p, &ReadLimits::default()).expect("valid JSON");
    assert_eq!(t.meta.event_count, 1);
    assert!(t.names.iter().any(|n| &**n == "a\tb\n"), "{:?}", t.names);
}

#[test]
fn integers_beyond_i64() {
    let d = tempfile::tempdir().expect("tmp");
    let text = r#"{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 1, "args": {"External id": 99999999999999999999}}]}"#;
    let p = write(d.path(), "t.json", text.as_bytes());
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off as usize, text.find("9999").unwrap_or(0));
    assert!(msg.contains("out of range"), "{msg}");
    let text = r#"{"traceEvents": [{"ph": "X", "ts": 9999999999999999999.5, "dur": 1}]}"#;
    let p = write(d.path(), "u.json", text.as_bytes());
    let (off, msg) = syntax(&err(&p, ReadLimits::default()));
    assert_eq!(off as usize, text.find("9999").unwrap_or(0));
    assert!(msg.contains("out of range"), "{msg}");
    cli_err(&p, &[]);
}

/// A valid trace followed by `pad` bytes of blanks: legal JSON that decompresses to far more than it is.
fn bomb_text(pad: usize) -> Vec<u8> {
    let mut v = br#"{"traceEvents": []"#.to_vec();
    v.resize(v.len() + pad, b' ');
    v.push(b'}');
    v
}

#[test]
fn gzip_bomb_hits_the_size_cap() {
    let d = tempfile::tempdir().expect("tmp");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&bomb_text(50 << 20)).expect("gzip");
    let p = write(d.path(), "bomb.json.gz", &gz.finish().expect("gzip"));
    let limits = ReadLimits { max_decompressed_bytes: 10 << 20, ..ReadLimits::default() };
    match err(&p, limits) {
        TraceError::TooLarge { limit, .. } => assert_eq!(limit, 10 << 20),
        other => panic!("{other}"),
    }
    let msg = cli_err(&p, &["--max-decompressed-bytes", "10485760"]);
    assert!(msg.contains("exceeds the limit of 10485760 bytes"), "{msg}");
}

#[test]
fn zstd_bomb_hits_the_ratio_cap() {
    let d = tempfile::tempdir().expect("tmp");
    let z = zstd::encode_all(&bomb_text(200 << 20)[..], 3).expect("zstd");
    let p = write(d.path(), "bomb.json.zst", &z);
    match err(&p, ReadLimits::default()) {
        TraceError::Bomb { max_ratio, offset, .. } => {
            assert_eq!(max_ratio, 1000);
            assert!(offset < 100 << 20, "stopped early, at {offset}");
        }
        other => panic!("{other}"),
    }
    assert!(cli_err(&p, &[]).contains("decompression ratio"));
}

#[test]
fn corrupt_compressed_stream() {
    let d = tempfile::tempdir().expect("tmp");
    let mut z = zstd::encode_all(&bomb_text(1000)[..], 3).expect("zstd");
    let n = z.len();
    z.truncate(n - 5);
    z.extend_from_slice(b"\x00\x01\x02\x03\x04\x05");
    let p = write(d.path(), "bad.json.zst", &z);
    match err(&p, ReadLimits::default()) {
        TraceError::Decompress { format, .. } => assert_eq!(format, "zstd"),
        other => panic!("{other}"),
    }
    cli_err(&p, &[]);
}

#[test]
fn missing_file() {
    let p = PathBuf::from("/nonexistent/trace_0.json");
    assert!(matches!(err(&p, ReadLimits::default()), TraceError::Io { .. }));
    cli_err(&p, &[]);
}

#[test]
fn malformed_args_are_refused_whatever_the_event_and_the_key_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A missing comma between two ids of a host op's args, with `args` before and after `name`; a bad
    // literal in the args of a flow event, whose args the engine does not use.
    let cases: [(&str, &str); 4] = [
        (
            r#"{"ph":"X","cat":"cpu_op","name":"aten::mm","ts":1,"dur":2,"pid":1,"tid":1,"args":{"External id": 5 "correlation": 7}}"#,
            "expected ',' or '}'",
        ),
        (
            r#"{"args":{"External id": 5 "correlation": 7},"ph":"X","cat":"cpu_op","name":"aten::mm","ts":1,"dur":2,"pid":1,"tid":1}"#,
            "expected ',' or '}'",
        ),
        (r#"{"ph":"s","cat":"ac2g","name":"flow","ts":1,"pid":1,"tid":1,"id":3,"args":{"a":tru}}"#, "invalid literal"),
        // A sign without digits is no time (it was read as 0).
        (r#"{"ph":"X","cat":"cpu_op","name":"aten::mm","ts":-,"dur":2,"pid":1,"tid":1}"#, "invalid number -"),
    ];
    for (i, (event, message)) in cases.iter().enumerate() {
        let text = format!("{{\"traceEvents\":[{event}]}}");
        let path = write(tmp.path(), &format!("bad{i}.json"), text.as_bytes());
        let (offset, got) = syntax(&err(&path, ReadLimits::default()));
        assert!(got.contains(message), "{event}: {got}");
        assert!(offset > 16 && (offset as usize) < text.len(), "{event}: offset {offset}");
    }
}
