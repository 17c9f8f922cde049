//! Parsing an upload as its verified chunks arrive. The upload stream decompresses every chunk to check
//! its length and CRC32C anyway; handing those raw bytes to a parse on a thread of its own saves reading
//! the stored file back and decompressing it a second time once the upload completes.
//!
//! Only an upload sent whole in one stream is parsed so: a stream resumed past offset 0 no longer has
//! the earlier bytes, and a parse that cannot start at once (the parse memory budget is taken, or
//! `parse_workers` such parses run already) is not waited for. Those traces are queued when complete
//! and parsed from the file, as every trace was before. Either way one result is stored, by
//! [`super::store_result`].

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use tracefleet_common::summary::{AnalyzeOptions, TraceSummary, summarize_reader};
use tracefleet_common::trace::{ReadLimits, TraceError};

use super::{retry_later, store_result};
use crate::state::{Coordinator, ParseSource, parse_cost};
use crate::store::UploadKey;

/// Raw chunks (1 MiB each) that may wait between the upload stream and its parse. A parse slower than
/// the upload holds the stream back once they are queued, so memory stays bounded.
const DEPTH: usize = 4;

/// What the upload stream and its parse thread share.
#[derive(Default)]
struct Shared {
    /// Set before the stream lets go of the channel when every byte was sent: the channel's end is then
    /// the trace's end. Without it the end is a break, read as an error.
    ended: AtomicBool,
    /// Set by the reader when the channel ended without `ended`: the parse did not see the whole trace.
    cut: AtomicBool,
    /// Nanoseconds the parse spent waiting for chunks (not parsing).
    waited_ns: AtomicU64,
}

/// The parse of one upload stream, from its upload's side.
pub struct StreamParse {
    /// Raw bytes of verified chunks, in order; `None` once the parse has stopped reading or every byte
    /// was sent.
    chunks: Option<SyncSender<Vec<u8>>>,
    /// The SHA-256 (hex) of the completed upload; dropped unsent when it does not complete in this
    /// stream, and the parse's result is then discarded.
    verdict: SyncSender<String>,
    shared: Arc<Shared>,
}

impl StreamParse {
    /// Starts parsing the upload of `key` (`raw_size` bytes, stored at `path`, whose name its errors
    /// carry) on a thread of its own, if that can be done now: at most `parse_workers` such parses at
    /// once, and their memory admitted against the parse budget as the parse pool's is. `None` leaves the
    /// trace to the parse queue.
    pub fn start(coord: &Arc<Coordinator>, key: &UploadKey, path: PathBuf, raw_size: u64) -> Option<Self> {
        let budget = coord.cfg.parse_memory_bytes;
        let workers = coord.cfg.parse_workers.max(1);
        let Some(cost) = coord.parse_queue.try_admit_streaming(parse_cost(raw_size), budget, workers) else {
            log_fallback(key, "the parse budget is in use");
            return None;
        };
        let admission = Admission { coord: coord.clone(), cost };
        let (tx, rx) = sync_channel(DEPTH);
        let (verdict_tx, verdict_rx) = sync_channel(1);
        let shared = Arc::new(Shared::default());
        let job = Job {
            coord: coord.clone(),
            key: key.clone(),
            path,
            reader: Chunks { rx, cur: Vec::new(), pos: 0, shared: shared.clone() },
            verdict: verdict_rx,
            admission,
        };
        // A thread that cannot start drops the job, and with it the admission.
        match std::thread::Builder::new().name("parse-upload".into()).spawn(move || job.run()) {
            Ok(_) => Some(Self { chunks: Some(tx), verdict: verdict_tx, shared }),
            Err(e) => {
                log_fallback(key, &format!("no thread for it ({e})"));
                None
            }
        }
    }

    /// Hands the parse one verified chunk's raw bytes, in order, waiting while the channel is full: call
    /// it on a blocking thread. A parse that stopped reading (its trace refused partway) is sent no more.
    pub fn feed(&mut self, raw: Vec<u8>) {
        if let Some(tx) = &self.chunks
            && tx.send(raw).is_err()
        {
            self.chunks = None;
        }
    }

    /// Every byte was fed: the parse reads to the end and waits for [`StreamParse::complete`].
    pub fn end(&mut self) {
        self.shared.ended.store(true, Ordering::SeqCst);
        self.chunks = None;
    }

    /// The upload is complete (its SHA-256 checked, recorded as complete): its parse's result is stored,
    /// or, when the parse cannot give one the file would give, the trace is parsed from its file.
    pub fn complete(self, coord: &Coordinator, key: UploadKey, sha256: String) {
        if self.verdict.send(sha256).is_err() {
            // The parse thread is gone (it panicked): the file is parsed instead.
            coord.parse_queue.push(key);
        }
    }
}

/// Whether an upload of `raw` bytes stored in `stored` file bytes is still well within the reader's
/// ratio limit. A parse from the file refuses a trace whose frames inflate past `max_ratio` (a
/// decompression bomb); the raw bytes in memory are not checked so, so a parse in memory stops well short
/// of that and leaves the call to the file.
pub fn within_ratio(raw: u64, stored: u64) -> bool {
    let limits = ReadLimits::default();
    raw <= limits.ratio_grace_bytes / 2 || raw / stored.max(1) <= limits.max_ratio / 2
}

fn log_fallback(key: &UploadKey, why: &str) {
    tracing::debug!(
        sweep = %key.sweep_id, point = %key.point_id, host = %key.host, trace = %key.trace_name,
        "parsing from the file once uploaded: {why}"
    );
}

/// The parse memory and the place taken by a parse in memory, given back when dropped.
struct Admission {
    coord: Arc<Coordinator>,
    cost: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.coord.parse_queue.release_streaming(self.cost);
    }
}

/// The parse thread's part.
struct Job {
    coord: Arc<Coordinator>,
    key: UploadKey,
    path: PathBuf,
    reader: Chunks,
    verdict: Receiver<String>,
    admission: Admission,
}

impl Job {
    fn run(self) {
        let Job { coord, key, path, reader, verdict, admission } = self;
        let shared = reader.shared.clone();
        let t0 = Instant::now();
        let result = summarize_reader(reader, &path, &AnalyzeOptions::default());
        let waited = Duration::from_nanos(shared.waited_ns.load(Ordering::SeqCst));
        let secs = t0.elapsed().saturating_sub(waited).as_secs_f64();
        // The trace's model is gone: its memory goes back to the budget before the verdict is awaited.
        drop(admission);
        let Ok(sha256) = verdict.recv() else {
            tracing::debug!(
                sweep = %key.sweep_id, point = %key.point_id, host = %key.host, trace = %key.trace_name,
                "parse in memory discarded: the upload did not complete in its stream"
            );
            return;
        };
        if shared.cut.load(Ordering::SeqCst) || result.as_ref().is_err_and(read_dependent) {
            log_fallback(&key, "the parse in memory could not decide");
            coord.parse_queue.push(key);
            return;
        }
        store_checked(&coord, key, &sha256, result, secs);
    }
}

/// Stores a parse in memory's result if the upload's row still holds the bytes it read (complete, with
/// their SHA-256): a trace set aside and uploaded again since then is parsed from its new bytes.
fn store_checked(
    coord: &Arc<Coordinator>,
    key: UploadKey,
    sha256: &str,
    result: Result<TraceSummary, TraceError>,
    secs: f64,
) {
    let row = coord.store().upload(&key);
    match row {
        Ok(Some(r)) if r.complete && r.sha256 == sha256 => {
            store_result(coord, key, sha256, result, secs, ParseSource::Memory)
        }
        Ok(_) => log_fallback(&key, "uploaded again since; its new bytes are parsed on their own"),
        Err(e) => retry_later(coord, key, &e.to_string()),
    }
}

/// Whether a refusal depends on how the bytes were read (their compression layers, the ratio to the
/// stored frames) rather than on the trace's text: the file's parse words those as it always has.
fn read_dependent(e: &TraceError) -> bool {
    matches!(
        e,
        TraceError::Io { .. } | TraceError::Decompress { .. } | TraceError::TooLarge { .. } | TraceError::Bomb { .. }
    )
}

/// The raw bytes of an upload's chunks, as a reader: the end of the channel is the end of the trace only
/// when the stream said so ([`Shared::ended`]); otherwise it is an error, so that a broken upload never
/// parses as a shorter trace.
struct Chunks {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    shared: Arc<Shared>,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.cur.len() {
            let t = Instant::now();
            let next = self.rx.recv();
            let waited = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared.waited_ns.fetch_add(waited, Ordering::SeqCst);
            match next {
                Ok(chunk) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Err(_) if self.shared.ended.load(Ordering::SeqCst) => return Ok(0),
                Err(_) => {
                    self.shared.cut.store(true, Ordering::SeqCst);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upload stream ended before its last chunk",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> (SyncSender<Vec<u8>>, Chunks) {
        let (tx, rx) = sync_channel(DEPTH);
        (tx, Chunks { rx, cur: Vec::new(), pos: 0, shared: Arc::default() })
    }

    #[test]
    fn a_stream_that_ended_reads_to_a_clean_end() {
        let (tx, mut r) = reader();
        let shared = r.shared.clone();
        let feeder = std::thread::spawn(move || {
            for piece in [&b"ab"[..], b"", b"cde"] {
                tx.send(piece.to_vec()).expect("send");
            }
            shared.ended.store(true, Ordering::SeqCst);
        });
        let mut all = Vec::new();
        r.read_to_end(&mut all).expect("a clean end");
        feeder.join().expect("feeder");
        assert_eq!(all, b"abcde");
        assert!(!r.shared.cut.load(Ordering::SeqCst));
    }

    #[test]
    fn a_broken_stream_is_an_error_not_an_end() {
        let (tx, mut r) = reader();
        tx.send(b"{\"traceEvents\": [".to_vec()).expect("send");
        drop(tx);
        let mut all = Vec::new();
        let e = r.read_to_end(&mut all).expect_err("broken");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(r.shared.cut.load(Ordering::SeqCst));
    }

    #[test]
    fn chunks_in_memory_summarize_as_the_file_does() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/h200-llama-1b/decode/logs_8/trace_0.json.zst");
        let bytes = std::fs::read(&fixture).expect("fixture");
        let opts = AnalyzeOptions::default();
        let want = tracefleet_common::summary::summarize_file(&fixture, &opts).expect("file");
        let (tx, r) = reader();
        let shared = r.shared.clone();
        let feeder = std::thread::spawn(move || {
            for piece in bytes.chunks(64 << 10) {
                tx.send(piece.to_vec()).expect("send");
            }
            shared.ended.store(true, Ordering::SeqCst);
        });
        let got = summarize_reader(r, &fixture, &opts).expect("memory");
        feeder.join().expect("feeder");
        assert_eq!(got, want);
    }

    #[test]
    fn only_traces_well_within_the_ratio_limit_stay_in_memory() {
        assert!(within_ratio(10 << 20, 1), "below the grace bytes");
        assert!(within_ratio(1 << 30, 20 << 20), "a real trace's ratio");
        assert!(!within_ratio(1 << 30, 2 << 20), "500:1 is near the limit");
    }
}
