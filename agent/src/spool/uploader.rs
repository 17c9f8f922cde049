//! Resumable upload of one spooled trace: ask the coordinator where the trace stands, then stream the
//! rest as ~1 MiB chunks, each an independent zstd frame with its CRC32C, and finish with the SHA-256.
//! Memory is a few chunks whatever the trace size; the file is read once (twice for the prefix of a
//! resumed upload, to hash it).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracefleet_common::wire::{self, CHUNK_RAW_BYTES, MAX_MESSAGE_BYTES, Sha256};
use tracefleet_proto::v1::trace_upload_client::TraceUploadClient;
use tracefleet_proto::v1::{UploadChunk, UploadFinish, UploadId, UploadOpen, WriteRequest, WriteStatus};

use super::EntryMeta;
use crate::backoff::Backoff;

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The coordinator has the whole trace (now, or already before: `duplicate`).
    Complete {
        /// It was complete before this upload.
        duplicate: bool,
    },
    /// The coordinator refused it for good (bad data, unknown sweep, ...).
    Refused(String),
    /// Its job no longer runs its point (reassigned while this agent was away, or the point failed here
    /// and runs again elsewhere): the trace is not counted, and the job should stop.
    Superseded(String),
}

/// Uploads spooled traces over one gRPC channel, on a bounded number of compression threads.
#[derive(Clone)]
pub struct Uploader {
    channel: Channel,
    threads: Arc<Semaphore>,
}

/// Whether the coordinator refused the upload because its job no longer runs the point (the
/// `tracefleet-refusal: superseded` metadata of its FAILED_PRECONDITION).
fn superseded(s: &Status) -> bool {
    s.code() == Code::FailedPrecondition
        && s.metadata().get("tracefleet-refusal").and_then(|v| v.to_str().ok()) == Some("superseded")
}

/// Whether a status is worth retrying.
fn transient(s: &Status) -> bool {
    !matches!(
        s.code(),
        Code::InvalidArgument
            | Code::DataLoss
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::Unauthenticated
    )
}

impl Uploader {
    /// An uploader; `threads` bounds the uploads (each one compression thread) running at once.
    pub fn new(channel: Channel, threads: usize) -> Self {
        Self { channel, threads: Arc::new(Semaphore::new(threads.max(1))) }
    }

    fn client(&self) -> TraceUploadClient<Channel> {
        TraceUploadClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Uploads until the coordinator has the trace, retrying transient failures with backoff (and
    /// resuming at the committed offset each time). Gives up only on a permanent refusal.
    /// The backoff starts over whenever an attempt moved the committed offset: a link that breaks often
    /// but lets bytes through makes steady progress instead of waiting longer each time.
    pub async fn upload(&self, path: &Path, meta: &EntryMeta) -> UploadOutcome {
        let _slot = self.threads.acquire().await;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut preconditions = 0;
        let mut committed = None;
        loop {
            match self.attempt(path, meta, &mut committed).await {
                Ok(o) => return o,
                Err((s, _)) if superseded(&s) => return UploadOutcome::Superseded(s.message().to_string()),
                Err((s, _)) if !transient(&s) => {
                    return UploadOutcome::Refused(format!("{:?}: {}", s.code(), s.message()));
                }
                Err((s, progressed)) => {
                    if progressed {
                        backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
                    }
                    if s.code() == Code::FailedPrecondition {
                        preconditions += 1;
                        if preconditions >= 3 {
                            return UploadOutcome::Refused(s.message().to_string());
                        }
                    }
                    let hint = s
                        .metadata()
                        .get("retry-after-ms")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_millis);
                    let wait = hint.unwrap_or_default().max(backoff.next_delay());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One attempt; on failure, also whether the committed offset moved since the last attempt
    /// (`committed` carries it from one attempt to the next).
    async fn attempt(
        &self,
        path: &Path,
        meta: &EntryMeta,
        committed: &mut Option<u64>,
    ) -> Result<UploadOutcome, (Status, bool)> {
        let id = UploadId {
            sweep_id: meta.sweep_id.clone(),
            point_id: meta.point_id.clone(),
            host: meta.host.clone(),
            trace_name: meta.trace_name.clone(),
            job_id: meta.job_id.clone(),
        };
        let mut client = self.client();
        let st = client.query_write_status(id.clone()).await.map_err(|s| (s, false))?.into_inner();
        let progressed = committed.is_some_and(|c| st.committed_offset > c);
        *committed = Some(st.committed_offset);
        Self::stream(&mut client, path, id, meta, &st).await.map_err(|s| (s, progressed))
    }

    /// Streams the trace from where `st` says the coordinator stands.
    async fn stream(
        client: &mut TraceUploadClient<Channel>,
        path: &Path,
        id: UploadId,
        meta: &EntryMeta,
        st: &WriteStatus,
    ) -> Result<UploadOutcome, Status> {
        if st.complete {
            return Ok(UploadOutcome::Complete { duplicate: true });
        }
        let raw_size = std::fs::metadata(path).map_err(|e| Status::internal(format!("{}: {e}", path.display())))?.len();
        let start = st.committed_offset.min(raw_size);
        let (tx, rx) = mpsc::channel::<WriteRequest>(4);
        let open = UploadOpen {
            id: Some(id),
            raw_size,
            gpu: meta.gpu.clone(),
            telemetry: meta.telemetry.as_ref().map(Into::into),
        };
        let p = path.to_path_buf();
        // Reading, hashing and compressing run on one blocking thread per upload.
        let producer = tokio::task::spawn_blocking(move || produce(&p, start, open, &tx));
        let resp = client.write(ReceiverStream::new(rx)).await;
        let produced = producer.await.map_err(|e| Status::internal(e.to_string()))?;
        produced.map_err(|e| Status::internal(format!("reading {}: {e}", path.display())))?;
        let resp = resp?.into_inner();
        if resp.complete {
            Ok(UploadOutcome::Complete { duplicate: resp.duplicate })
        } else {
            Err(Status::unavailable(format!("upload stopped at {} of {raw_size} bytes", resp.committed_offset)))
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 19): compression must not take CPU from the GPU
/// workload's host threads. Raising niceness needs no privilege; a failure leaves the priority as it was.
pub fn lower_thread_priority() {
    let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
}

/// Streams `open`, the chunks from `start`, and the finish with the SHA-256 of the whole file.
fn produce(path: &Path, start: u64, open: UploadOpen, tx: &mpsc::Sender<WriteRequest>) -> std::io::Result<()> {
    lower_thread_priority();
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::default();
    let mut buf = vec![0u8; CHUNK_RAW_BYTES];
    // The prefix the coordinator already has is hashed, not sent.
    let mut left = start;
    while left > 0 {
        let n = f.read(&mut buf[..left.min(CHUNK_RAW_BYTES as u64) as usize])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    f.seek(SeekFrom::Start(start))?;
    let mut offset = start;
    let mut seq = start / CHUNK_RAW_BYTES as u64;
    let mut open = Some(open);
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        let raw = &buf[..n];
        hasher.update(raw);
        let c = wire::compress_chunk(seq, offset, raw)?;
        let req = WriteRequest {
            open: open.take(),
            chunk: Some(UploadChunk {
                seq,
                raw_offset: offset,
                raw_len: c.raw_len,
                crc32c: c.crc32c,
                zstd_frame: c.frame,
            }),
            finish: None,
        };
        if tx.blocking_send(req).is_err() {
            return Ok(()); // the stream ended early; the response says why
        }
        offset += n as u64;
        seq += 1;
    }
    let fin = WriteRequest {
        open: open.take(),
        chunk: None,
        finish: Some(UploadFinish { sha256: hasher.finish().to_vec() }),
    };
    let _ = tx.blocking_send(fin);
    Ok(())
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn compression_threads_run_at_low_priority() {
        let nice = std::thread::spawn(|| {
            super::lower_thread_priority();
            // Field 19 of /proc/thread-self/stat is the nice value.
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
            stat.rsplit(')').next().unwrap_or_default().split_whitespace().nth(16).and_then(|v| v.parse::<i32>().ok())
        })
        .join()
        .ok()
        .flatten();
        assert_eq!(nice, Some(19));
    }
}
