//! Opening trace files: plain JSON, gzip or zstd (detected by magic bytes, not by name), with limits on
//! the decompressed size and the compression ratio so that a decompression bomb is refused early.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::error::TraceError;

/// Limits applied while reading one trace. Every limit of the reader lives here, with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most decompressed bytes one trace may have (default 16 GiB).
    pub max_decompressed_bytes: u64,
    /// Most decompressed-to-compressed ratio; checked once [`Self::ratio_grace_bytes`] were produced
    /// (default 1000: real Kineto traces compress 5-30x with gzip, 10-60x with zstd).
    pub max_ratio: u64,
    /// Decompressed bytes before the ratio check starts (default 64 MiB).
    pub ratio_grace_bytes: u64,
    /// Largest single JSON value (one event, or one top-level field) kept whole in memory (default 64 MiB).
    pub max_value_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 16 << 30,
            max_ratio: 1000,
            ratio_grace_bytes: 64 << 20,
            max_value_bytes: 64 << 20,
        }
    }
}

/// The compression of a trace file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain JSON text.
    None,
    /// gzip (`.json.gz`).
    Gzip,
    /// zstd (`.json.zst`).
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a file.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "plain",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Looks at the first bytes a decoder produces and adds a second decoder when they are compressed too.
fn nested(decoded: Box<dyn Read>) -> io::Result<Box<dyn Read>> {
    let mut b = BufReader::with_capacity(256 << 10, decoded);
    let head = io::BufRead::fill_buf(&mut b)?;
    Ok(match Compression::sniff(head) {
        Compression::None => Box::new(b),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(b)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(b)?),
    })
}

/// Counts the compressed bytes consumed by a decoder.
struct CountingReader<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
    /// Set when the source itself failed (not the decoder above it): its error is then a read error of
    /// the file (EIO, a file gone), not a corrupt stream.
    failed: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed.set(true);
            }
        })?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// A decompressing reader that enforces [`ReadLimits`] and turns decoder failures into [`TraceError`].
pub struct TraceReader {
    inner: Box<dyn Read>,
    compression: Compression,
    compressed: std::rc::Rc<std::cell::Cell<u64>>,
    /// Whether the source failed ([`CountingReader::failed`]).
    source_failed: std::rc::Rc<std::cell::Cell<bool>>,
    produced: u64,
    limits: ReadLimits,
    file: PathBuf,
    /// An error met by [`Self::fill`] after it had read some bytes: returned by the next read, so that the
    /// caller parses those bytes first (a syntax error before the failure point is reported as such).
    pending: Option<TraceError>,
}

impl TraceReader {
    /// Opens a trace file.
    pub fn open(path: &Path, limits: ReadLimits) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|source| TraceError::Io { file: path.to_path_buf(), source })?;
        Self::from_reader(file, path, limits)
    }

    /// Wraps any byte source (a file, a socket, an in-memory buffer); `name` is used in errors.
    pub fn from_reader<R: Read + 'static>(source: R, name: &Path, limits: ReadLimits) -> Result<Self, TraceError> {
        let io_err = |source| TraceError::Io { file: name.to_path_buf(), source };
        // Buffered only to sniff the head. Small, so that the scanner's refills (64 KiB and more) bypass
        // it and a plain file's bytes are copied once, not through this buffer.
        let mut buffered = BufReader::with_capacity(16 << 10, source);
        let head = io::BufRead::fill_buf(&mut buffered).map_err(io_err)?;
        let compression = Compression::sniff(head);
        let corrupt = |e: io::Error| TraceError::Decompress {
            file: name.to_path_buf(),
            format: compression.name(),
            offset: 0,
            message: e.to_string(),
        };
        let count = std::rc::Rc::new(std::cell::Cell::new(0));
        let failed = std::rc::Rc::new(std::cell::Cell::new(false));
        let counted = CountingReader { inner: buffered, count: count.clone(), failed: failed.clone() };
        let inner: Box<dyn Read> = match compression {
            Compression::None => Box::new(counted),
            // A compressed trace stored compressed again (an uploaded `.json.gz` kept as zstd frames) is
            // unwrapped once more: the inner layer is sniffed like a file.
            Compression::Gzip => nested(Box::new(flate2::read::MultiGzDecoder::new(counted))).map_err(corrupt)?,
            Compression::Zstd => {
                let d = zstd::stream::read::Decoder::with_buffer(BufReader::new(counted)).map_err(corrupt)?;
                nested(Box::new(d)).map_err(corrupt)?
            }
        };
        Ok(Self {
            inner,
            compression,
            compressed: count,
            source_failed: failed,
            produced: 0,
            limits,
            file: name.to_path_buf(),
            pending: None,
        })
    }

    /// The detected compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The file name used in errors.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Decompressed bytes produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Compressed (on-disk) bytes consumed so far.
    pub fn consumed(&self) -> u64 {
        self.compressed.get()
    }

    /// Reads until `buf` is full or the input ends; `Ok(0)` only at the end. Decoders and pipes return
    /// a few KiB per read: the scanner re-reads a partly read event from its start after each refill, so
    /// refills that return little would make one huge event cost quadratic time; a full buffer (which
    /// the scanner doubles when one value fills it) keeps the re-reads to a logarithmic number per event.
    /// An error after some bytes were read is returned by the next call, after the caller used them.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<usize, TraceError> {
        let mut n = 0;
        while n < buf.len() {
            match self.read_chunk(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if n > 0 => {
                    self.pending = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Reads up to `buf.len()` bytes (one read of the source); `Ok(0)` at the end.
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, TraceError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n,
                // A signal interrupted the read before any byte: not the end of the input.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A failure of the file under a decoder is the file's read error, not a corrupt stream
                    // (the coordinator reads its stored copies through zstd, and tries such reads again).
                    return Err(match self.compression {
                        _ if self.source_failed.get() => TraceError::Io { file: self.file.clone(), source: e },
                        Compression::None => TraceError::Io { file: self.file.clone(), source: e },
                        c => TraceError::Decompress {
                            file: self.file.clone(),
                            format: c.name(),
                            offset: self.produced,
                            message: e.to_string(),
                        },
                    });
                }
            }
        };
        self.produced += n as u64;
        let consumed = self.compressed.get().max(1);
        if self.produced > self.limits.max_decompressed_bytes {
            return Err(TraceError::TooLarge {
                file: self.file.clone(),
                limit: self.limits.max_decompressed_bytes,
                ratio: self.produced / consumed,
            });
        }
        if self.compression != Compression::None
            && self.produced > self.limits.ratio_grace_bytes
            && self.produced / consumed > self.limits.max_ratio
        {
            return Err(TraceError::Bomb {
                file: self.file.clone(),
                offset: self.produced,
                max_ratio: self.limits.max_ratio,
            });
        }
        Ok(n)
    }
}
