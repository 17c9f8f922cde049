//! Fuzzing, on stable Rust with `arbtest` (random and mutated inputs for a bounded time), of the two
//! parsers that take bytes from outside the process: the trace scanner (Chrome-trace JSON, plain, gzip or
//! zstd) and the upload chunk decoder. Neither may panic; a trace error names its file; a chunk decodes
//! only when its length and CRC32C match, and never inflates past its declared length.
//!
//! Each target runs `TRACEFLEET_FUZZ_MS` milliseconds (default 5000 here; `tests/fuzz/nightly.sh` runs
//! them for an hour). The inputs under `tests/fuzz/corpus/` once failed (or once took quadratic time);
//! each is replayed first, and new failures belong there. A failure prints the seed that reproduces it:
//! `TRACEFLEET_FUZZ_SEED=0x... cargo test --test fuzz`.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use arbtest::arbitrary::Unstructured;
use tracefleet_common::summary::{AnalyzeOptions, summarize};
use tracefleet_common::trace::reader::TraceReader;
use tracefleet_common::trace::{Links, ReadLimits, Trace, key_averages};
use tracefleet_common::wire::{self, CHUNK_RAW_BYTES};
use tracefleet_tests::{fixture, workspace};

fn budget_ms() -> u64 {
    std::env::var("TRACEFLEET_FUZZ_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000)
}

fn seed() -> Option<u64> {
    let s = std::env::var("TRACEFLEET_FUZZ_SEED").ok()?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Small limits, so that a fuzzed input cannot take the test's memory.
fn limits() -> ReadLimits {
    ReadLimits { max_decompressed_bytes: 64 << 20, max_value_bytes: 1 << 20, ..ReadLimits::default() }
}

/// Parses `bytes` as a trace named `fuzz.json` and, when it parses, summarizes it and folds its
/// `key_averages()`; an error must name the file.
fn check_trace(bytes: Vec<u8>) {
    let name = Path::new("fuzz.json");
    let limits = limits();
    let parsed =
        TraceReader::from_reader(Cursor::new(bytes), name, limits).and_then(|mut r| Trace::read(&mut r, &limits));
    match parsed {
        Ok(t) => {
            let _ = summarize(&t, &AnalyzeOptions::default());
            let _ = key_averages(&t, &Links::new(&t));
        }
        Err(e) => assert!(e.to_string().contains("fuzz.json"), "the error does not name the file: {e}"),
    }
}

/// A small real trace (the first 400 events of a decode step): mutations of it reach deep into the
/// scanner, past what random bytes would.
fn base_trace() -> Vec<u8> {
    let raw =
        zstd::decode_all(&std::fs::read(fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst")).expect("fixture")[..])
            .expect("zstd");
    let mut v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    if let Some(events) = v.get_mut("traceEvents").and_then(|e| e.as_array_mut()) {
        events.truncate(400);
    }
    serde_json::to_vec(&v).expect("serialize")
}

/// One mutation of `base`, chosen by `u`.
fn mutate(u: &mut Unstructured<'_>, base: &[u8]) -> arbtest::arbitrary::Result<Vec<u8>> {
    let mut b = base.to_vec();
    for _ in 0..u.int_in_range(1..=8)? {
        if b.is_empty() {
            break;
        }
        let at = u.choose_index(b.len())?;
        match u.int_in_range(0..=7)? {
            0 => b[at] = u.arbitrary()?,
            1 => b.truncate(at),
            2 => {
                let junk: Vec<u8> = u.arbitrary()?;
                b.splice(at..at, junk);
            }
            3 => {
                let end = (at + u.int_in_range(1..=64)?).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
            4 => {
                let end = (at + u.int_in_range(1..=64)?).min(b.len());
                b.drain(at..end);
            }
            5 => {
                let token: &[u8] = u.choose(&[
                    b"99999999999999999999999".as_slice(),
                    b"-1",
                    b"1e308",
                    b"null",
                    b"\"\\ud800\"",
                    b"[[[[[[[[",
                    b"}}}}",
                    b"\"ts\": 0",
                    b"\"dur\": -5",
                    b"\"ph\": \"X\"",
                    b"\"ph\": \"B\"",
                    b"\"ph\": \"E\"",
                    b"\"external id\": 1",
                    b"\"correlation\": 1",
                ])?;
                b.splice(at..at, token.iter().copied());
            }
            6 => b[at] = b'"',
            _ => b[at] = b'\\',
        }
    }
    Ok(b)
}

#[test]
fn the_trace_scanner_never_panics_and_names_the_file() {
    for f in corpus("trace") {
        check_trace(std::fs::read(&f).expect("corpus"));
    }
    let base = base_trace();
    let run = arbtest::arbtest(|u| {
        let bytes = match u.int_in_range(0..=9)? {
            0 => u.arbitrary::<Vec<u8>>()?,
            _ => mutate(u, &base)?,
        };
        // Some inputs compressed, so the readers' framing is fuzzed too (the sniffing picks the format).
        let bytes = match u.int_in_range(0..=5)? {
            0 => zstd::encode_all(&bytes[..], 1).expect("zstd"),
            1 => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&bytes).expect("gzip");
                gz.finish().expect("gzip")
            }
            _ => bytes,
        };
        check_trace(bytes);
        Ok(())
    })
    .budget_ms(budget_ms());
    match seed() {
        Some(s) => run.seed(s).run(),
        None => run.run(),
    }
}

#[test]
fn the_chunk_decoder_never_panics_nor_inflates_past_the_declared_length() {
    for f in corpus("chunk") {
        // A corpus chunk: 4 bytes raw_len, 4 bytes CRC32C (little endian), then the frame.
        let b = std::fs::read(&f).expect("corpus");
        if b.len() >= 8 {
            let raw_len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            if let Ok(raw) = wire::verify_chunk(0, raw_len, crc, &b[8..]) {
                assert_eq!(raw.len(), raw_len as usize);
            }
        }
    }
    let run = arbtest::arbtest(|u| {
        let raw: Vec<u8> = u.arbitrary()?;
        let good = wire::compress_chunk(7, 0, &raw).expect("compress");
        let (mut raw_len, mut crc, mut frame) = (good.raw_len, good.crc32c, good.frame);
        match u.int_in_range(0..=6)? {
            0 => {}
            1 => raw_len = u.arbitrary()?,
            2 => crc = u.arbitrary()?,
            3 => frame = u.arbitrary()?,
            4 => {
                if !frame.is_empty() {
                    let at = u.choose_index(frame.len())?;
                    frame[at] ^= u.int_in_range(1..=255)?;
                }
            }
            5 => {
                // A small frame of a big run of zeros (a bomb) declared small.
                let n = u.int_in_range(1..=CHUNK_RAW_BYTES * 4)?;
                frame = zstd::bulk::compress(&vec![0u8; n], 3).expect("compress");
                raw_len = u.int_in_range(0..=64)?;
            }
            _ => frame.truncate(frame.len() / 2),
        }
        match wire::verify_chunk(7, raw_len, crc, &frame) {
            Ok(back) => {
                assert_eq!(back.len(), raw_len as usize, "length checked");
                assert_eq!(crc32c::crc32c(&back), crc, "CRC32C checked");
            }
            Err(e) => assert!(e.to_string().contains("chunk 7"), "the error names the chunk: {e}"),
        }
        Ok(())
    })
    .budget_ms(budget_ms());
    match seed() {
        Some(s) => run.seed(s).run(),
        None => run.run(),
    }
}

/// The corpus files of a target.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = workspace().join("tests/fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}
