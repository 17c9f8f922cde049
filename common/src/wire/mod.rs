//! Chunk framing shared by the agent and the coordinator: a trace travels as chunks of about 1 MiB of raw
//! bytes, each one independent zstd frame with the CRC32C of its raw bytes; the whole trace is checked
//! with SHA-256 at the end. Every limit of the upload path is a constant here.

use sha2::Digest;

/// Raw bytes per chunk.
pub const CHUNK_RAW_BYTES: usize = 1 << 20;
/// Largest gRPC message either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// zstd level agents use for chunks: the fastest standard level (the agent must not disturb the GPU
/// host); Kineto JSON still compresses about 10x.
pub const CHUNK_ZSTD_LEVEL: i32 = 1;

/// A chunk that failed its checks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The frame is not valid zstd, or it decompresses to more than the declared size.
    #[error("chunk {seq}: zstd frame does not decompress within its declared {raw_len} bytes: {message}")]
    Frame {
        /// Chunk number.
        seq: u64,
        /// Declared raw length.
        raw_len: u32,
        /// What the decoder said.
        message: String,
    },
    /// The frame decompressed to a different length than declared.
    #[error("chunk {seq}: declared {declared} raw bytes, frame holds {actual}")]
    Length {
        /// Chunk number.
        seq: u64,
        /// Declared raw length.
        declared: u32,
        /// Actual decompressed length.
        actual: usize,
    },
    /// CRC32C mismatch.
    #[error("chunk {seq}: CRC32C mismatch (declared {declared:08x}, computed {actual:08x})")]
    Crc {
        /// Chunk number.
        seq: u64,
        /// Declared CRC.
        declared: u32,
        /// Computed CRC.
        actual: u32,
    },
    /// Declared raw length above [`CHUNK_RAW_BYTES`].
    #[error("chunk {seq}: raw length {raw_len} exceeds the limit of {CHUNK_RAW_BYTES} bytes")]
    TooLarge {
        /// Chunk number.
        seq: u64,
        /// Declared raw length.
        raw_len: u32,
    },
}

/// One compressed chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// 0, 1, 2, ... within the trace.
    pub seq: u64,
    /// Offset of the raw bytes in the trace.
    pub raw_offset: u64,
    /// Raw length.
    pub raw_len: u32,
    /// CRC32C of the raw bytes.
    pub crc32c: u32,
    /// The zstd frame.
    pub frame: Vec<u8>,
}

/// Compresses one chunk of raw bytes.
pub fn compress_chunk(seq: u64, raw_offset: u64, raw: &[u8]) -> std::io::Result<Chunk> {
    Ok(Chunk {
        seq,
        raw_offset,
        raw_len: raw.len() as u32,
        crc32c: crc32c::crc32c(raw),
        frame: zstd::bulk::compress(raw, CHUNK_ZSTD_LEVEL)?,
    })
}

/// Decompresses and checks a chunk: bounded by its declared length (a frame that would inflate beyond it
/// is refused without allocating more), then the length and CRC32C. Returns the raw bytes.
pub fn verify_chunk(seq: u64, raw_len: u32, crc: u32, frame: &[u8]) -> Result<Vec<u8>, WireError> {
    if raw_len as usize > CHUNK_RAW_BYTES {
        return Err(WireError::TooLarge { seq, raw_len });
    }
    let raw = zstd::bulk::decompress(frame, raw_len as usize).map_err(|e| WireError::Frame {
        seq,
        raw_len,
        message: e.to_string(),
    })?;
    if raw.len() != raw_len as usize {
        return Err(WireError::Length { seq, declared: raw_len, actual: raw.len() });
    }
    let actual = crc32c::crc32c(&raw);
    if actual != crc {
        return Err(WireError::Crc { seq, declared: crc, actual });
    }
    Ok(raw)
}

/// SHA-256 of a byte stream, fed in pieces.
#[derive(Debug, Clone, Default)]
pub struct Sha256(sha2::Sha256);

impl Sha256 {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// SHA-256 of a byte slice.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::default();
    h.update(bytes);
    h.finish()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let raw: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let raw = &raw[..CHUNK_RAW_BYTES.min(raw.len())];
        let c = compress_chunk(7, 1 << 20, raw).expect("compress");
        assert!(c.frame.len() < raw.len());
        assert_eq!(verify_chunk(7, c.raw_len, c.crc32c, &c.frame).as_deref(), Ok(raw));
        assert!(matches!(verify_chunk(7, c.raw_len, c.crc32c ^ 1, &c.frame), Err(WireError::Crc { .. })));
        // Declaring fewer bytes than the frame holds: refused while decompressing.
        assert!(matches!(verify_chunk(7, c.raw_len - 1, c.crc32c, &c.frame), Err(WireError::Frame { .. })));
        assert!(matches!(verify_chunk(7, c.raw_len, c.crc32c, b"not zstd"), Err(WireError::Frame { .. })));
        assert!(matches!(verify_chunk(7, u32::MAX, 0, &c.frame), Err(WireError::TooLarge { .. })));
        assert_eq!(hex(&sha256(b"abc"))[..16], *"ba7816bf8f01cfea");
    }
}
