//! Resumable upload of one spooled trace: ask the coordinator where the trace stands, then stream the
//! rest as ~1 MiB chunks, each an independent zstd frame with its CRC32C, and finish with the SHA-256.
//! Memory is a few chunks whatever the trace size; the file is read once (twice for the prefix of an
//! upload resumed by a later agent process, to hash it: an attempt resumed by the same upload starts
//! from the hash state it reached at the committed offset). Every attempt is logged when it fails.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
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

/// How long the coordinator may take to say where an upload stands. The answer is small; without a
/// deadline a query on a link that went silent would wait for the connection's keep-alive to give up.
const QUERY_DEADLINE: Duration = Duration::from_secs(15);

/// Waits between attempts: from 100 ms, doubling up to 5 s.
fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// SHA-256 states of a trace's first bytes, by their length (chunk boundaries that an attempt passed):
/// an attempt resumed at one of them hashes nothing again.
type Prefixes = BTreeMap<u64, Sha256>;

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
        let id = UploadId {
            sweep_id: meta.sweep_id.clone(),
            point_id: meta.point_id.clone(),
            host: meta.host.clone(),
            trace_name: meta.trace_name.clone(),
            job_id: meta.job_id.clone(),
        };
        let mut backoff = retry_backoff();
        let mut preconditions = 0;
        let mut prefixes = Prefixes::new();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (result, from) = self.attempt(path, &id, meta, &mut prefixes).await;
            let s = match result {
                Ok(o) => {
                    if attempts > 1 {
                        tracing::info!(trace = %meta.trace_name, "upload ended after {attempts} attempts: {o:?}");
                    }
                    return o;
                }
                Err(s) => s,
            };
            if superseded(&s) {
                return UploadOutcome::Superseded(s.message().to_string());
            }
            if !transient(&s) {
                return UploadOutcome::Refused(format!("{:?}: {}", s.code(), s.message()));
            }
            if s.code() == Code::FailedPrecondition {
                preconditions += 1;
                if preconditions >= 3 {
                    return UploadOutcome::Refused(s.message().to_string());
                }
            }
            // Whether this attempt moved the committed offset, asked now: the wait before the next one
            // depends on it (the next attempt's own query would tell only after that wait).
            let now = match from {
                Some(_) => self.status(&id).await.ok().map(|st| st.committed_offset),
                None => None,
            };
            let progress = match (from, now) {
                (Some(from), Some(now)) if now > from => {
                    backoff.reset();
                    format!("committed {from} -> {now} bytes; ")
                }
                (_, Some(now)) => format!("committed {now} bytes; "),
                _ => String::new(),
            };
            let hint = s
                .metadata()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis);
            let wait = hint.unwrap_or_default().max(backoff.next_delay());
            tracing::warn!(
                trace = %meta.trace_name,
                "upload attempt {attempts} failed ({:?}: {}); {progress}retrying in {:.2} s",
                s.code(),
                s.message(),
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Where the coordinator has the upload, within [`QUERY_DEADLINE`].
    async fn status(&self, id: &UploadId) -> Result<WriteStatus, Status> {
        match tokio::time::timeout(QUERY_DEADLINE, self.client().query_write_status(id.clone())).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the coordinator did not say where the upload stands within {} s",
                QUERY_DEADLINE.as_secs()
            ))),
        }
    }

    /// One attempt, and the committed offset it started from (`None` when the coordinator could not
    /// say).
    async fn attempt(
        &self,
        path: &Path,
        id: &UploadId,
        meta: &EntryMeta,
        prefixes: &mut Prefixes,
    ) -> (Result<UploadOutcome, Status>, Option<u64>) {
        let st = match self.status(id).await {
            Ok(st) => st,
            Err(s) => return (Err(s), None),
        };
        (self.stream(path, id.clone(), meta, &st, prefixes).await, Some(st.committed_offset))
    }

    /// Streams the trace from where `st` says the coordinator stands.
    async fn stream(
        &self,
        path: &Path,
        id: UploadId,
        meta: &EntryMeta,
        st: &WriteStatus,
        prefixes: &mut Prefixes,
    ) -> Result<UploadOutcome, Status> {
        if st.complete {
            return Ok(UploadOutcome::Complete { duplicate: true });
        }
        let raw_size = std::fs::metadata(path).map_err(|e| Status::internal(format!("{}: {e}", path.display())))?.len();
        let start = st.committed_offset.min(raw_size);
        if start > 0 {
            tracing::info!(trace = %meta.trace_name, "resuming the upload at byte {start} of {raw_size}");
        }
        let (tx, rx) = mpsc::channel::<WriteRequest>(4);
        let open = UploadOpen {
            id: Some(id),
            raw_size,
            gpu: meta.gpu.clone(),
            telemetry: meta.telemetry.as_ref().map(Into::into),
        };
        // The open goes first, before the file is read: the coordinator hears from the stream at once,
        // however long the compression thread takes to get to the first chunk.
        tx.try_send(WriteRequest { open: Some(open), chunk: None, finish: None })
            .map_err(|e| Status::internal(format!("queueing the upload's open: {e}")))?;
        let (stop, stopped) = watch::channel(false);
        let p = path.to_path_buf();
        let known = std::mem::take(prefixes);
        // Reading, hashing and compressing run on one thread per upload, at low priority.
        let producer = spawn_low_priority("upload-compress", move || produce(&p, start, known, &tx, stopped))
            .map_err(|e| Status::internal(format!("starting the compression thread: {e}")))?;
        let resp = self.client().write(ReceiverStream::new(rx)).await;
        // However the stream ended, the producer stops: it does not wait on a stream nobody reads.
        let _ = stop.send(true);
        let (known, produced) =
            producer.await.map_err(|_| Status::internal("the compression thread stopped without a result"))?;
        *prefixes = known;
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

/// Runs `f` on a thread of its own at nice 19 ([`lower_thread_priority`]), inside the current runtime's
/// context; its result comes through the receiver (an error there: the thread panicked). Not on tokio's
/// blocking pool: a pool thread keeps its niceness for the blocking work it runs next (the output
/// folder's polls, NVML calls), and an unprivileged process cannot raise it back.
///
/// # Errors
/// The thread cannot be started.
fn spawn_low_priority<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<oneshot::Receiver<T>> {
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new().name(name.to_string()).spawn(move || {
        let _in_runtime = rt.enter();
        lower_thread_priority();
        let _ = tx.send(f());
    })?;
    Ok(rx)
}

/// Hands one request to the stream; false once the stream has ended (its response says why).
fn hand_over(
    rt: &tokio::runtime::Handle,
    tx: &mpsc::Sender<WriteRequest>,
    stopped: &mut watch::Receiver<bool>,
    req: WriteRequest,
) -> bool {
    rt.block_on(async {
        tokio::select! {
            sent = tx.send(req) => sent.is_ok(),
            _ = stopped.wait_for(|s| *s) => false,
        }
    })
}

/// Streams the chunks from `start`, and the finish with the SHA-256 of the whole file; returns the
/// prefix states it knows (`known`, with those of the chunks it passed) for a later attempt.
fn produce(
    path: &Path,
    start: u64,
    mut known: Prefixes,
    tx: &mpsc::Sender<WriteRequest>,
    stopped: watch::Receiver<bool>,
) -> (Prefixes, std::io::Result<()>) {
    let r = produce_from(path, start, &mut known, tx, stopped);
    (known, r)
}

fn produce_from(
    path: &Path,
    start: u64,
    known: &mut Prefixes,
    tx: &mpsc::Sender<WriteRequest>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Handle::current();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; CHUNK_RAW_BYTES];
    // The prefix the coordinator already has is hashed, not sent: from the longest prefix an earlier
    // attempt hashed (all of it, when this attempt resumes where one of them passed).
    let (mut hashed, mut hasher) =
        known.range(..=start).next_back().map_or((0, Sha256::default()), |(o, h)| (*o, h.clone()));
    // The committed offset does not go back: shorter prefixes are not needed again.
    known.retain(|&o, _| o >= start);
    f.seek(SeekFrom::Start(hashed))?;
    while hashed < start {
        if *stopped.borrow() {
            return Ok(());
        }
        let n = f.read(&mut buf[..(start - hashed).min(CHUNK_RAW_BYTES as u64) as usize])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        hashed += n as u64;
    }
    f.seek(SeekFrom::Start(start))?;
    let mut offset = start;
    let mut seq = start / CHUNK_RAW_BYTES as u64;
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        let raw = &buf[..n];
        hasher.update(raw);
        let c = wire::compress_chunk(seq, offset, raw)?;
        let req = WriteRequest {
            open: None,
            chunk: Some(UploadChunk {
                seq,
                raw_offset: offset,
                raw_len: c.raw_len,
                crc32c: c.crc32c,
                zstd_frame: c.frame,
            }),
            finish: None,
        };
        if !hand_over(&rt, tx, &mut stopped, req) {
            return Ok(()); // the stream ended early; the response says why
        }
        offset += n as u64;
        seq += 1;
        known.insert(offset, hasher.clone());
    }
    let fin = WriteRequest { open: None, chunk: None, finish: Some(UploadFinish { sha256: hasher.finish().to_vec() }) };
    hand_over(&rt, tx, &mut stopped, fin);
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
    use super::*;

    /// Runs `produce` from `start` on a blocking thread; the chunks' offsets, the finish's SHA-256, and the
    /// prefix states it returns.
    async fn run(path: &Path, start: u64, known: Prefixes) -> (Vec<u64>, Vec<u8>, Prefixes) {
        let (tx, mut rx) = mpsc::channel(4);
        let (_stop, stopped) = watch::channel(false);
        let p = path.to_path_buf();
        let producer = tokio::task::spawn_blocking(move || produce(&p, start, known, &tx, stopped));
        let (mut offsets, mut sha) = (Vec::new(), Vec::new());
        while let Some(req) = rx.recv().await {
            offsets.extend(req.chunk.map(|c| c.raw_offset));
            sha = req.finish.map(|f| f.sha256).unwrap_or(sha);
        }
        let (known, r) = producer.await.expect("producer");
        r.expect("produced");
        (offsets, sha, known)
    }

    #[tokio::test]
    async fn a_resumed_attempt_hashes_from_the_state_at_its_offset() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.json");
        let bytes: Vec<u8> = (0..(3 * CHUNK_RAW_BYTES + 1000)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let whole = wire::sha256(&bytes).to_vec();
        let chunk = CHUNK_RAW_BYTES as u64;
        let (offsets, sha, known) = run(&path, 0, Prefixes::new()).await;
        assert_eq!(offsets, vec![0, chunk, 2 * chunk, 3 * chunk]);
        assert_eq!(sha, whole);
        assert_eq!(known.keys().copied().collect::<Vec<_>>(), vec![chunk, 2 * chunk, 3 * chunk, bytes.len() as u64]);
        // Resumed at a boundary an attempt passed, or with nothing known (a later agent process): the same
        // chunks from there, the whole file's SHA-256.
        let (offsets, sha, rest) = run(&path, 2 * chunk, known).await;
        assert_eq!((offsets, sha), (vec![2 * chunk, 3 * chunk], whole.clone()));
        assert!(rest.keys().all(|&o| o >= 2 * chunk), "shorter prefixes dropped");
        let (offsets, sha, _) = run(&path, 2 * chunk, Prefixes::new()).await;
        assert_eq!((offsets, sha), (vec![2 * chunk, 3 * chunk], whole));
    }

    /// This thread's nice value: field 19 of /proc/thread-self/stat.
    fn nice() -> Option<i32> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        stat.rsplit(')').next().unwrap_or_default().split_whitespace().nth(16).and_then(|v| v.parse::<i32>().ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn compression_runs_at_low_priority_on_a_thread_of_its_own() {
        let seen = spawn_low_priority("upload-compress", || {
            (nice(), std::thread::current().name().map(str::to_string), tokio::runtime::Handle::try_current().is_ok())
        })
        .expect("thread")
        .await
        .expect("result");
        assert_eq!(seen, (Some(19), Some("upload-compress".to_string()), true));
        // The niceness stayed on that thread: the runtime's threads keep the process's priority.
        let base = nice();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::task::spawn_blocking(nice));
        }
        for t in tasks {
            assert_eq!(t.await.expect("blocking task"), base);
        }
    }
}
