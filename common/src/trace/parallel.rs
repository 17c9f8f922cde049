//! Parallel parsing of one large trace: its events split into pieces at event boundaries, each piece
//! scanned on its own thread, the pieces' models merged in file order.
//!
//! Splitting: for `n` pieces, the text is cut near `k·size/n`. A raw newline can never be inside a JSON
//! string, so the first `{` that follows a `,`, a newline and blanks is outside any string: a *candidate*
//! event start (the profiler writes one event per line or per block of lines, each after `,\n`). Whether it
//! really starts an event of the `traceEvents` array is not assumed: the piece before it is scanned from a
//! known position (the document's start, or a verified cut) and must arrive at an event of the array that
//! starts exactly there (`PartEnd::Boundary`); then the piece after it, which started there, reads
//! exactly what a scan of the whole document would. If any cut is not verified, or any piece fails, the
//! trace is read again in one piece, which gives the authoritative result or error. Documents without
//! newlines between events (minified JSON) are not split.
//!
//! Sources: plain JSON files (the pieces seek to their start), and zstd files of several frames with their
//! content sizes (the coordinator's stored uploads: one frame per uploaded chunk), where a piece starts
//! decompressing at the frame that holds its first byte. gzip has no such entry points: one piece.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::error::TraceError;
use super::model::Trace;
use super::reader::{Compression, ReadLimits, TraceReader};
use super::scan::{Part, PartEnd, check_document};

/// Smallest piece worth a thread of its own, in bytes of JSON text.
pub const MIN_PIECE_BYTES: u64 = 16 << 20;

/// The largest compressed zstd frame looked for; a file whose frames are larger is read in one piece.
const MAX_FRAME_SEARCH: usize = 64 << 20;

/// How far past a cut the search for a candidate event start looks before giving that cut up.
const SEARCH_WINDOW: usize = 4 << 20;

/// A file whose text can be read from any offset.
enum Source {
    /// Plain JSON of this many bytes.
    Plain(u64),
    /// zstd frames: (compressed offset, decompressed offset) of each, and the total decompressed size.
    Frames(Vec<(u64, u64)>, u64),
}

impl Source {
    /// The source of `path`, or `None` when it cannot be read from an offset (gzip, zstd frames without
    /// content sizes, a compressed trace inside).
    fn of(path: &Path, limits: &ReadLimits) -> Result<Option<Self>, TraceError> {
        let io_err = |source| TraceError::Io { file: path.to_path_buf(), source };
        let mut f = File::open(path).map_err(io_err)?;
        let mut head = [0u8; 4];
        let n = f.read(&mut head).map_err(io_err)?;
        let len = f.metadata().map_err(io_err)?.len();
        match Compression::sniff(&head[..n]) {
            // Over the size limit: read in one piece, which refuses it with the usual message.
            Compression::None => Ok((len <= limits.max_decompressed_bytes).then_some(Source::Plain(len))),
            Compression::Gzip => Ok(None),
            Compression::Zstd => {
                f.seek(SeekFrom::Start(0)).map_err(io_err)?;
                let frames = match zstd_frames(BufReader::new(f), len).map_err(io_err)? {
                    Some(frames) => frames,
                    None => return Ok(None),
                };
                let total = frames.last().map_or(0, |&(_, raw, n)| raw + n);
                // Over the size or ratio limit (the pieces read decompressed text, so their readers
                // cannot check the ratio), or one frame (nothing to cut at): read in one piece, which
                // refuses what it must with the usual message.
                let ratio_exceeded = total > limits.ratio_grace_bytes && total / len.max(1) > limits.max_ratio;
                if total > limits.max_decompressed_bytes || ratio_exceeded || frames.len() < 2 {
                    return Ok(None);
                }
                let s = Source::Frames(frames.into_iter().map(|(c, r, _)| (c, r)).collect(), total);
                // A compressed trace stored in zstd frames (an uploaded .json.gz): not split.
                let mut first = [0u8; 4];
                let n = s.open_at(path, 0)?.read(&mut first).map_err(io_err)?;
                Ok((Compression::sniff(&first[..n]) == Compression::None).then_some(s))
            }
        }
    }

    /// Bytes of JSON text.
    fn len(&self) -> u64 {
        match self {
            Source::Plain(n) | Source::Frames(_, n) => *n,
        }
    }

    /// The text from byte `offset` on.
    fn open_at(&self, path: &Path, offset: u64) -> Result<Box<dyn Read>, TraceError> {
        let io_err = |source| TraceError::Io { file: path.to_path_buf(), source };
        let mut f = File::open(path).map_err(io_err)?;
        match self {
            Source::Plain(_) => {
                f.seek(SeekFrom::Start(offset)).map_err(io_err)?;
                Ok(Box::new(f))
            }
            Source::Frames(frames, _) => {
                // The last frame starting at or before the offset.
                let i = frames.partition_point(|&(_, raw)| raw <= offset).saturating_sub(1);
                let (comp, raw) = frames.get(i).copied().unwrap_or((0, 0));
                f.seek(SeekFrom::Start(comp)).map_err(io_err)?;
                let corrupt = |e: io::Error| TraceError::Decompress {
                    file: path.to_path_buf(),
                    format: "zstd",
                    offset: raw,
                    message: e.to_string(),
                };
                let mut d = zstd::stream::read::Decoder::new(f).map_err(corrupt)?;
                io::copy(&mut (&mut d).take(offset - raw), &mut io::sink()).map_err(corrupt)?;
                Ok(Box::new(d))
            }
        }
    }
}

/// The frames of a zstd file: (compressed offset, decompressed offset, decompressed size) of each;
/// `None` when a frame does not declare its size or is not a plain zstd frame (skippable frames and
/// corrupt data are left to the one-piece read, which reports them).
fn zstd_frames(mut r: impl Read, len: u64) -> io::Result<Option<Vec<(u64, u64, u64)>>> {
    let mut frames = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let (mut comp, mut raw) = (0u64, 0u64);
    let mut eof = false;
    while comp < len {
        // Enough of the file in `buf` to hold the next frame whole (frames are one uploaded chunk).
        let frame_len = loop {
            if let Ok(n) = zstd::zstd_safe::find_frame_compressed_size(&buf) {
                break n;
            }
            // No frame end within this much: frames this large (a file compressed in one frame) leave
            // nothing to cut at.
            if eof || buf.len() >= MAX_FRAME_SEARCH {
                return Ok(None);
            }
            let had = buf.len();
            buf.resize(had + (1 << 20), 0);
            let n = r.read(&mut buf[had..])?;
            buf.truncate(had + n);
            eof = n == 0;
        };
        let size = match zstd::zstd_safe::get_frame_content_size(&buf) {
            Ok(Some(n)) => n,
            _ => return Ok(None),
        };
        frames.push((comp, raw, size));
        comp += frame_len as u64;
        raw += size;
        buf.drain(..frame_len);
    }
    Ok(Some(frames))
}

/// The offset of the first candidate event start (see the module docs) in `window`, which begins at an
/// arbitrary byte of the text.
fn candidate(window: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(nl) = memchr::memchr(b'\n', &window[from..]).map(|p| from + p) {
        from = nl + 1;
        let before = window[..nl].iter().rposition(|c| !matches!(c, b' ' | b'\t' | b'\r'));
        if before.is_none_or(|p| window[p] != b',') {
            continue;
        }
        let after = window[nl + 1..].iter().position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'));
        match after.map(|p| nl + 1 + p) {
            Some(p) if window[p] == b'{' => return Some(p),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// Cut points (offsets of candidate event starts, ascending) for `pieces` pieces. Each search reads a
/// small window first (events are a few hundred bytes) and widens it up to [`SEARCH_WINDOW`]: the
/// search runs before any thread starts, so its reads are time the pieces wait for.
fn cuts(source: &Source, path: &Path, pieces: u64) -> Result<Vec<u64>, TraceError> {
    let len = source.len();
    let mut out: Vec<u64> = Vec::new();
    for k in 1..pieces {
        let guess = k * len / pieces;
        if out.last().is_some_and(|&c| c >= guess) {
            continue;
        }
        let mut reader = source.open_at(path, guess)?;
        let mut window = Vec::new();
        let mut want = 64 << 10;
        loop {
            let had = window.len() as u64;
            (&mut reader)
                .take(want - had)
                .read_to_end(&mut window)
                .map_err(|source| TraceError::Io { file: path.to_path_buf(), source })?;
            if let Some(p) = candidate(&window) {
                out.push(guess + p as u64);
                break;
            }
            // The end of the text, or no candidate within the largest window: no cut here.
            if (window.len() as u64) < want || want >= SEARCH_WINDOW as u64 {
                break;
            }
            want = (want * 4).min(SEARCH_WINDOW as u64);
        }
    }
    Ok(out)
}

/// Reads a trace on up to `jobs` threads (see the module docs); one thread for small, gzip or minified
/// traces. The result is the one [`Trace::open`] gives, events in file order.
///
/// # Errors
/// As [`Trace::open`]: the one-piece read reports any problem.
pub fn open(path: &Path, limits: &ReadLimits, jobs: usize) -> Result<Trace, TraceError> {
    open_pieces(path, limits, jobs, MIN_PIECE_BYTES).map(|(t, _)| t)
}

/// [`open`] with pieces of at least `min_piece` bytes (tests split small traces with it); also returns
/// how many pieces were read at once (1: read in one piece, from the start or after a cut that was not
/// at an event).
///
/// # Errors
/// As [`Trace::open`].
pub fn open_pieces(
    path: &Path,
    limits: &ReadLimits,
    jobs: usize,
    min_piece: u64,
) -> Result<(Trace, usize), TraceError> {
    let one = || Trace::open(path, limits).map(|t| (t, 1));
    let started = std::time::Instant::now();
    if jobs <= 1 {
        return one();
    }
    // Any problem while planning the pieces (an unreadable or corrupt file) is left to the one-piece
    // read, which reports it with its usual message and offset.
    let min_piece = min_piece.max(1);
    let source = match Source::of(path, limits) {
        Ok(Some(s)) if s.len() >= 2 * min_piece => s,
        _ => return one(),
    };
    let pieces = (jobs as u64).min(source.len() / min_piece).max(1);
    let cuts = match cuts(&source, path, pieces) {
        Ok(c) if !c.is_empty() => c,
        _ => return one(),
    };
    let mut head = [0u8; 256];
    let Ok(n) = source
        .open_at(path, 0)
        .and_then(|mut r| r.read(&mut head).map_err(|source| TraceError::Io { file: path.to_path_buf(), source }))
    else {
        return one();
    };
    let top_array = head[..n].iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'[');
    let starts: Vec<u64> = std::iter::once(0).chain(cuts.iter().copied()).collect();
    let read_piece = |k: usize| -> Result<(Trace, super::scan::Scanned), TraceError> {
        let from = starts[k];
        let part = Part { inside_events: k > 0, top_array, stop_at: starts.get(k + 1).map(|&next| next - from) };
        let mut reader = TraceReader::from_reader(source.open_at(path, from)?, path, *limits)?;
        Trace::read_part(&mut reader, limits, part)
    };
    let planned = started.elapsed();
    let results: Vec<Result<(Trace, super::scan::Scanned), TraceError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..starts.len()).map(|k| s.spawn(move || read_piece(k))).collect();
        let first = read_piece(0);
        std::iter::once(first)
            .chain(handles.into_iter().map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(TraceError::Io {
                        file: path.to_path_buf(),
                        source: io::Error::other("a parse thread panicked"),
                    })
                })
            }))
            .collect()
    });
    let last = results.len() - 1;
    let sound = results.iter().enumerate().all(|(k, r)| {
        r.as_ref().is_ok_and(|(_, s)| s.end == if k == last { PartEnd::Document } else { PartEnd::Boundary })
    });
    if !sound {
        tracing::debug!(file = %path.display(), "a cut was not at an event of the array; reading in one piece");
        return one();
    }
    let used = results.len();
    let read = started.elapsed();
    let mut phased = false;
    let mut first = None;
    let mut traces = Vec::with_capacity(used);
    for (t, s) in results.into_iter().filter_map(Result::ok) {
        phased |= s.phased;
        first.get_or_insert(s);
        traces.push(t);
    }
    let Some(first) = first else { return one() };
    // The pieces' events are joined on a pool of `jobs` threads (rayon's global pool if it cannot be
    // started: the result is the same, only the threads differ).
    let mut trace = match rayon::ThreadPoolBuilder::new().num_threads(jobs).build() {
        Ok(pool) => pool.install(|| Trace::concat(traces)),
        Err(_) => Trace::concat(traces),
    };
    let check = super::scan::Scanned { phased, ..first };
    check_document(path, &check, trace.meta.event_count)?;
    super::model::check_times(path, &trace)?;
    trace.meta.bytes = source.len();
    trace.meta.in_top_array = top_array;
    // Where the time went (`RUST_LOG=debug`): what runs before and after the threads is what limits the
    // speed-up on many cores.
    tracing::debug!(
        file = %path.display(),
        pieces = used,
        plan_s = planned.as_secs_f64(),
        pieces_s = (read - planned).as_secs_f64(),
        join_s = (started.elapsed() - read).as_secs_f64(),
        "read in pieces"
    );
    Ok((trace, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_a_comma_and_a_newline() {
        assert_eq!(candidate(b"x\": 1},\n  {\"ph\":"), Some(10));
        assert_eq!(candidate(b"ab\n{\"a\":1},\r\n\t{"), Some(14));
        // A `{` after `:` and a newline (pretty-printed args) is no candidate; neither is one on the same line.
        assert_eq!(candidate(b"\"args\":\n {\"a\": [1, {\"b\": 2}]},{"), None);
        assert_eq!(candidate(b"no newline at all, {"), None);
    }
}
