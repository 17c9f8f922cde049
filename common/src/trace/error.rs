//! Errors of the trace engine: every one names the file and, where it applies, the byte offset.

use std::path::PathBuf;

/// Where in a trace something went wrong: the file and the byte offset in its (decompressed) JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The trace file, or `-` for a stream without a name.
    pub file: PathBuf,
    /// Byte offset in the decompressed JSON text.
    pub offset: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.file.display(), self.offset)
    }
}

/// Everything that can go wrong while reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The gzip or zstd stream is corrupt.
    #[error("{file}: corrupt {format} stream after {offset} decompressed bytes: {message}")]
    Decompress {
        /// The file.
        file: PathBuf,
        /// `gzip` or `zstd`.
        format: &'static str,
        /// Decompressed bytes read before the failure.
        offset: u64,
        /// What the decoder said.
        message: String,
    },
    /// Decompression produced more than the configured limit (a decompression bomb or a trace too large).
    #[error(
        "{file}: decompressed size exceeds the limit of {limit} bytes (ratio {ratio}:1 to the compressed input); raise --max-decompressed-bytes if the trace is genuine"
    )]
    TooLarge {
        /// The file.
        file: PathBuf,
        /// The limit in bytes.
        limit: u64,
        /// Decompressed to compressed ratio at the moment the limit was hit.
        ratio: u64,
    },
    /// Decompression ratio beyond the configured maximum: almost certainly a decompression bomb.
    #[error(
        "{file}: decompression ratio above {max_ratio}:1 after {offset} bytes; this is not a trace (raise --max-decompression-ratio if it is)"
    )]
    Bomb {
        /// The file.
        file: PathBuf,
        /// Decompressed bytes at detection.
        offset: u64,
        /// The configured maximum ratio.
        max_ratio: u64,
    },
    /// Valid JSON, but not a Kineto trace (no `traceEvents`): another tool's file, read by mistake.
    #[error("{file}: not a Kineto trace (no traceEvents): {what}")]
    NotATrace {
        /// The file.
        file: PathBuf,
        /// What the file looks like instead.
        what: String,
    },
    /// A trace given as the eager reference for CUDA-graph steps holds no eager step.
    #[error("{file}: no eager step to use as a reference (every step replays CUDA graphs or has no GPU activity)")]
    NoEagerSteps {
        /// The file.
        file: PathBuf,
    },
    /// Step patterns were given and no annotation of the trace matches them: reading the trace as one
    /// step would merge its steps into one (times N).
    #[error("{file}: no annotation matches the step patterns {patterns}; its annotations include {seen}")]
    NoSteps {
        /// The file.
        file: PathBuf,
        /// The patterns, as given.
        patterns: String,
        /// A few annotation names of the trace (`none` when it has none).
        seen: String,
    },
    /// Event times past what the engine's sums hold ([`crate::trace::model::TIME_LIMIT_NS`]): not the
    /// times of a profile (a corrupt or hand-made file).
    #[error(
        "{file}: {what}: past 2^60 ns (36 years), beyond which the engine's 64-bit sums of nanoseconds could \
         overflow; these are not a profile's times"
    )]
    Times {
        /// The file.
        file: PathBuf,
        /// Which times, with the events that hold them.
        what: String,
    },
    /// The JSON text is malformed or not a Chrome trace.
    #[error("{location}: {message}")]
    Syntax {
        /// Where.
        location: Location,
        /// What was expected or found.
        message: String,
    },
}

impl TraceError {
    /// The same error naming `name` as the file: the coordinator reads its stored copy of a trace, and
    /// names the trace as its agent uploaded it, not by where the coordinator keeps it.
    pub fn naming(mut self, name: PathBuf) -> Self {
        match &mut self {
            TraceError::Io { file, .. }
            | TraceError::Decompress { file, .. }
            | TraceError::TooLarge { file, .. }
            | TraceError::Bomb { file, .. }
            | TraceError::NotATrace { file, .. }
            | TraceError::NoEagerSteps { file }
            | TraceError::NoSteps { file, .. }
            | TraceError::Times { file, .. } => *file = name,
            TraceError::Syntax { location, .. } => location.file = name,
        }
        self
    }

    /// The byte offset in the decompressed text, where the error has one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            TraceError::Syntax { location, .. } => Some(location.offset),
            TraceError::Decompress { offset, .. } | TraceError::Bomb { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}
