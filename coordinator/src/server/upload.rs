//! The `TraceUpload` service: resumable, verified, durable trace uploads.
//!
//! An upload is accepted only from the agent its job is assigned to, for that job's points, while the job
//! still runs them ([`check_binding`]). Each chunk is checked (bounded zstd decompression, length, CRC32C)
//! before its frame is appended to the trace's file; every `commit_every_bytes` or `commit_every` (and
//! when the stream ends, breaks, times out or finishes) the file is synced and then the committed offset
//! is written to the database. Bytes past the committed offset are
//! not acknowledged: after a crash they are cut off and the agent resends them.
//!
//! A stream that starts at offset 0 also hashes the raw bytes and hands them to a parse in memory
//! ([`StreamParse`]) as they are verified; on completion its result is stored and the file is not read
//! back. Otherwise (a resumed upload, no room for the parse) the trace is queued for the parse pool.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status, Streaming};
use tracefleet_common::wire::{self, Sha256, WireError};
use tracefleet_proto::decode_stored;
use tracefleet_proto::v1::trace_upload_server::TraceUpload;
use tracefleet_proto::v1::{
    AssignJob, SweepEvent, SweepEventKind, SweepState, UploadChunk, UploadId, WriteRequest, WriteResponse, WriteStatus,
};

use super::auth::{Caller, caller, check_acts_as};
use super::internal;
use crate::parse::stream::{StreamParse, within_ratio};
use crate::state::Coordinator;
use crate::store::{JobState, UploadKey};

/// The `TraceUpload` service: resumable, checksummed trace uploads.
pub struct Upload(pub Arc<Coordinator>);

/// Checks one id field: non-empty, bounded, and safe to use in a file name.
pub(crate) fn check_field(field: &str, v: &str, slash_ok: bool) -> Result<(), Status> {
    let bad = v.is_empty()
        || v.len() > 512
        || v.contains('\0')
        || v.contains('\\')
        || v.split('/').any(|p| p == ".." || p == "." || p.is_empty())
        || (!slash_ok && v.contains('/'));
    if bad {
        return Err(Status::invalid_argument(format!("invalid {field} {v:?}")));
    }
    Ok(())
}

/// The key of an upload id, validated.
pub(crate) fn key_of(id: Option<UploadId>) -> Result<UploadKey, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("missing upload id"))?;
    check_field("sweep_id", &id.sweep_id, false)?;
    check_field("point_id", &id.point_id, false)?;
    check_field("host", &id.host, false)?;
    check_field("trace_name", &id.trace_name, true)?;
    // Stored as one file name ("/" encoded): within the file system's 255 bytes, with room for a prefix.
    if crate::store::stored_file_name(&id.trace_name).len() > 250 {
        return Err(Status::invalid_argument(format!(
            "trace name {:?} is too long to store (at most about 240 bytes, a / counting 3)",
            id.trace_name
        )));
    }
    Ok(UploadKey { sweep_id: id.sweep_id, point_id: id.point_id, host: id.host, trace_name: id.trace_name })
}

/// Removes an upload from the active set when its stream ends, however it ends.
struct Active {
    coord: Arc<Coordinator>,
    key: UploadKey,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.coord.active_uploads().remove(&self.key);
    }
}

/// The file and offsets of one upload stream.
struct Writer {
    path: PathBuf,
    file: Option<File>,
    /// Raw bytes appended (verified), committed or not.
    received: u64,
    /// File bytes appended.
    stored: u64,
    committed_raw: u64,
    /// SHA-256 of the raw bytes, when this stream saw them all from offset 0.
    hasher: Option<Sha256>,
    /// The parse of the raw bytes as they arrive, when this stream started at offset 0 and the parse
    /// budget had room; dropped (the parse discarded) when the stream ends without completing the upload.
    parse: Option<StreamParse>,
    /// When the bytes were last committed (or the stream opened).
    last_commit: Instant,
}

fn io_status(what: &str, e: std::io::Error) -> Status {
    Status::internal(format!("{what}: {e}"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("worker failed: {e}")))
}

impl Writer {
    /// Opens the stored file, cutting off anything past the committed bytes (left by a crash).
    async fn open(path: PathBuf, stored: u64, committed_raw: u64) -> Result<Self, Status> {
        let p = path.clone();
        let file = blocking(move || -> std::io::Result<File> {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&p)?;
            f.set_len(stored)?;
            f.seek(SeekFrom::Start(stored))?;
            Ok(f)
        })
        .await?
        .map_err(|e| io_status("opening the trace file", e))?;
        Ok(Self {
            path,
            file: Some(file),
            received: committed_raw,
            stored,
            committed_raw,
            hasher: (committed_raw == 0).then(Sha256::default),
            parse: None,
            last_commit: Instant::now(),
        })
    }

    /// Syncs the file, then records the offset: only then is it acknowledged.
    async fn commit(&mut self, coord: &Coordinator, key: &UploadKey) -> Result<(), Status> {
        if self.received == self.committed_raw {
            return Ok(());
        }
        let file = self.file.take().ok_or_else(|| Status::internal("trace file lost"))?;
        let (file, r) = blocking(move || {
            let r = file.sync_data();
            (file, r)
        })
        .await?;
        self.file = Some(file);
        r.map_err(|e| io_status("syncing the trace file", e))?;
        coord.store().commit_upload(key, self.received, self.stored).map_err(internal)?;
        self.committed_raw = self.received;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Verifies and appends one chunk.
    async fn chunk(&mut self, coord: &Coordinator, raw_size: u64, c: UploadChunk) -> Result<(), Status> {
        let end = c.raw_offset.saturating_add(u64::from(c.raw_len));
        if end <= self.received && c.raw_len > 0 {
            return Ok(()); // a repeat of bytes already here: acknowledged and ignored
        }
        if c.raw_offset != self.received {
            return Err(Status::out_of_range(format!(
                "chunk {} starts at raw offset {}, expected {}; resume from the committed offset",
                c.seq, c.raw_offset, self.received
            )));
        }
        if end > raw_size {
            return Err(Status::invalid_argument(format!(
                "chunk {} ends at raw offset {end}, beyond the declared size {raw_size}",
                c.seq
            )));
        }
        let mut file = self.file.take().ok_or_else(|| Status::internal("trace file lost"))?;
        let mut hasher = self.hasher.take();
        let mut parse = self.parse.take();
        // The parse waits here when it is a few chunks behind: on this blocking thread, never on the
        // runtime's.
        let (file, hasher, parse, r) = blocking(move || {
            let r = wire::verify_chunk(c.seq, c.raw_len, c.crc32c, &c.zstd_frame).map(|raw| {
                if let Some(h) = hasher.as_mut() {
                    h.update(&raw);
                }
                let written = file.write_all(&c.zstd_frame);
                // Only bytes that are in the file go to the parse: it reads what the file holds.
                if written.is_ok()
                    && let Some(p) = parse.as_mut()
                {
                    p.feed(raw);
                }
                (written, c.zstd_frame.len() as u64)
            });
            (file, hasher, parse, r)
        })
        .await?;
        self.file = Some(file);
        self.hasher = hasher;
        self.parse = parse;
        let (written, frame_len) = r.map_err(|e| {
            coord.metrics.chunks_rejected.inc_by(1);
            match e {
                WireError::Crc { .. } => Status::data_loss(e.to_string()),
                _ => Status::invalid_argument(e.to_string()),
            }
        })?;
        written.map_err(|e| io_status("writing the trace file", e))?;
        self.received = end;
        self.stored += frame_len;
        if self.parse.is_some() && !within_ratio(self.received, self.stored) {
            // Near the reader's decompression-ratio limit: the parse from the file makes that call.
            self.parse = None;
        }
        coord.metrics.wire_bytes.inc_by(frame_len);
        coord.metrics.raw_bytes.inc_by(u64::from(c.raw_len));
        Ok(())
    }

    /// The SHA-256 of the committed raw bytes: from this stream's hasher, or by reading the file back
    /// (an upload resumed past offset 0).
    async fn digest(&mut self) -> Result<[u8; 32], Status> {
        if let Some(h) = self.hasher.take() {
            return Ok(h.finish());
        }
        let path = self.path.clone();
        blocking(move || -> std::io::Result<[u8; 32]> {
            let mut d = zstd::stream::read::Decoder::new(File::open(&path)?)?;
            let mut h = Sha256::default();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut d, &mut buf)?;
                if n == 0 {
                    return Ok(h.finish());
                }
                h.update(&buf[..n]);
            }
        })
        .await?
        .map_err(|e| io_status("reading the stored trace back", e))
    }
}

/// Why an upload is refused for its sender, as the agent reads it: `superseded` tells it that its job
/// no longer runs the point (stop it, drop its traces); the others are mistakes or forgeries.
pub const REFUSAL_METADATA: &str = "tracefleet-refusal";

fn superseded(msg: String) -> Status {
    let mut s = Status::failed_precondition(msg);
    s.metadata_mut().insert(REFUSAL_METADATA, tonic::metadata::MetadataValue::from_static("superseded"));
    s
}

/// Checks that `job_id` may upload `key`: a job of the key's sweep, assigned to the key's host, whose
/// points include the key's point, and still running it (not reassigned, not relieved of the point after
/// a failure). Refusals: PERMISSION_DENIED (not this job's trace), FAILED_PRECONDITION with
/// `tracefleet-refusal: superseded` (the point runs elsewhere now).
fn check_binding(coord: &Coordinator, key: &UploadKey, job_id: &str) -> Result<(), Status> {
    if job_id.is_empty() {
        return Err(Status::invalid_argument("missing job id: an upload names the job that made the trace"));
    }
    let store = coord.store();
    let sweep = store.sweep(&key.sweep_id).map_err(internal)?;
    let Some(sweep) = sweep else {
        return Err(Status::not_found(format!("unknown sweep {:?}", key.sweep_id)));
    };
    if sweep.state != SweepState::Running {
        return Err(superseded(format!(
            "sweep {} has ended ({}); this trace is not counted",
            key.sweep_id,
            sweep.state.name().unwrap_or("?")
        )));
    }
    let job = store.job(job_id).map_err(internal)?;
    let Some(job) = job.filter(|j| j.sweep_id == key.sweep_id) else {
        return Err(Status::permission_denied(format!("{job_id:?} is not a job of sweep {:?}", key.sweep_id)));
    };
    if job.agent != key.host {
        return Err(Status::permission_denied(format!(
            "job {job_id} is assigned to agent {:?}, not {:?}",
            job.agent, key.host
        )));
    }
    let points = decode_stored::<AssignJob>(&job.assign).map_err(|e| Status::internal(format!("job {job_id}: {e}")))?;
    if !points.points.iter().any(|p| p.point_id == key.point_id) {
        return Err(Status::permission_denied(format!("point {:?} is not part of job {job_id}", key.point_id)));
    }
    if job.state == JobState::Reassigned {
        return Err(superseded(format!(
            "job {job_id} was reassigned to another agent ({}); its traces are not counted, stop it",
            job.error
        )));
    }
    if store.point_superseded(&key.sweep_id, &key.point_id, job_id).map_err(internal)? {
        return Err(superseded(format!(
            "point {} of job {job_id} failed here and runs again as another job; this trace is not counted",
            key.point_id
        )));
    }
    Ok(())
}

/// Marks the key as being written by this stream. A stream whose link just broke may still be
/// committing (its task runs on after the client left): wait for it briefly before answering ABORTED.
async fn claim(coord: &Arc<Coordinator>, key: &UploadKey) -> Result<Active, Status> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if coord.active_uploads().insert(key.clone()) {
            return Ok(Active { coord: coord.clone(), key: key.clone() });
        }
        if Instant::now() >= deadline {
            return Err(Status::aborted(format!("{} is being uploaded by another stream", key.trace_name)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next message of an upload stream within `limit`: `Ok(None)` at the stream's end, `Err` when the
/// link broke or the peer went silent.
async fn next_message(
    stream: &mut Streaming<WriteRequest>,
    limit: Duration,
    what: &str,
) -> Result<Option<WriteRequest>, Status> {
    match tokio::time::timeout(limit, stream.message()).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!("no {what} within {} ms", limit.as_millis()))),
    }
}

/// One upload stream, start to end. Runs in a task of its own (see [`Upload::write`]).
async fn write_stream(
    coord: Arc<Coordinator>,
    caller: Option<Caller>,
    mut stream: Streaming<WriteRequest>,
) -> Result<WriteResponse, Status> {
    let first = next_message(&mut stream, coord.cfg.upload_first_message_timeout, "first message")
        .await?
        .ok_or_else(|| Status::invalid_argument("empty upload stream"))?;
    let open = first.open.clone().ok_or_else(|| Status::invalid_argument("the first request must carry open"))?;
    let id = open.id.clone().unwrap_or_default();
    let job_id = id.job_id.clone();
    let key = key_of(open.id)?;
    if let Err(s) = check_acts_as(caller.as_ref(), "upload host", &key.host) {
        coord.metrics.uploads_refused.inc_by(1);
        return Err(s);
    }
    // A trace already complete is answered as such whoever asks again (an agent that restarted before
    // it deleted its spooled copy, a sweep that has ended since): nothing is stored or counted.
    let existing = coord.store().upload(&key).map_err(internal)?;
    if let Some(r) = existing.filter(|r| r.complete && !r.superseded) {
        coord.metrics.uploads_duplicate.inc_by(1);
        return Ok(WriteResponse { committed_offset: r.raw_size, complete: true, duplicate: true });
    }
    if let Err(s) = check_binding(&coord, &key, &job_id) {
        coord.metrics.uploads_refused.inc_by(1);
        return Err(s);
    }
    let Some(_agent_slot) = coord.agent_upload_slot(&key.host) else {
        coord.metrics.uploads_rejected.inc_by(1);
        return Err(retry_later(format!(
            "agent {:?} has {} uploads in flight already; retry later",
            key.host, coord.cfg.max_uploads_per_agent
        )));
    };
    let Ok(_slot) = coord.upload_slots.clone().try_acquire_owned() else {
        coord.metrics.uploads_rejected.inc_by(1);
        return Err(retry_later("too many uploads in flight; retry later".into()));
    };
    let _active = claim(&coord, &key).await?;
    let telemetry = open.telemetry.as_ref().map(prost::Message::encode_to_vec);
    let row =
        coord.store().open_upload(&key, &job_id, open.raw_size, &open.gpu, telemetry.as_deref()).map_err(internal)?;
    if row.complete {
        coord.metrics.uploads_duplicate.inc_by(1);
        return Ok(WriteResponse { committed_offset: row.raw_size, complete: true, duplicate: true });
    }
    if open.raw_size != row.raw_size {
        return Err(Status::failed_precondition(format!(
            "raw size {} differs from the {} declared when the upload began",
            open.raw_size, row.raw_size
        )));
    }
    coord.metrics.uploads_started.inc_by(1);
    if row.committed_raw > 0 {
        coord.metrics.uploads_resumed.inc_by(1);
        coord.metrics.resumed_bytes.inc_by(row.committed_raw);
    }
    let path = coord.store().trace_path(&key).map_err(internal)?;
    let mut w = Writer::open(path.clone(), row.stored_bytes, row.committed_raw).await?;
    // Parsed as it arrives only when this stream sees every byte; a resumed upload is parsed from its file.
    if row.committed_raw == 0 {
        w.parse = StreamParse::start(&coord, &key, path, row.raw_size);
    }
    let mut next = Some(first);
    loop {
        let req = match next.take() {
            Some(r) => r,
            None => match next_message(&mut stream, coord.cfg.upload_idle_timeout, "message").await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    // The link broke, the agent went away or fell silent: what arrived intact is kept.
                    coord.metrics.uploads_broken.inc_by(1);
                    w.commit(&coord, &key).await?;
                    return Err(e);
                }
            },
        };
        if let Some(c) = req.chunk {
            if let Err(e) = w.chunk(&coord, row.raw_size, c).await {
                w.commit(&coord, &key).await?;
                return Err(e);
            }
            if w.received - w.committed_raw >= coord.cfg.commit_every_bytes
                || w.last_commit.elapsed() >= coord.cfg.commit_every
            {
                w.commit(&coord, &key).await?;
            }
        }
        if let Some(fin) = req.finish {
            let asked = Instant::now();
            w.commit(&coord, &key).await?;
            if w.received != row.raw_size {
                return Err(Status::failed_precondition(format!(
                    "finish after {} of {} raw bytes",
                    w.received, row.raw_size
                )));
            }
            // Every byte is in: the parse finishes while the digest is checked, and waits for the verdict.
            if let Some(p) = w.parse.as_mut() {
                p.end();
            }
            let digest = w.digest().await?;
            if fin.sha256 != digest {
                return Err(Status::data_loss(format!(
                    "SHA-256 mismatch: declared {}, received bytes hash to {}; the trace is not counted",
                    wire::hex(&fin.sha256),
                    wire::hex(&digest)
                )));
            }
            let sha256 = wire::hex(&digest);
            let fresh = coord.store().complete_upload(&key, &sha256).map_err(internal)?;
            if !fresh && !coord.store().upload(&key).map_err(internal)?.is_some_and(|r| r.complete) {
                // Its point moved, its job was reassigned or the sweep ended while it was uploading: not
                // counted (the bytes stay on disk, set aside).
                coord.metrics.uploads_refused.inc_by(1);
                return Err(superseded(format!(
                    "point {} of job {job_id} no longer runs here (moved, reassigned, or the sweep ended); \
                     this trace is not counted",
                    key.point_id
                )));
            }
            if fresh {
                coord.metrics.uploads_completed.inc_by(1);
                coord.publish(SweepEvent {
                    sweep_id: key.sweep_id.clone(),
                    kind: SweepEventKind::Trace.into(),
                    agent: key.host.clone(),
                    point_id: key.point_id.clone(),
                    message: key.trace_name.clone(),
                    bytes: row.raw_size,
                    ..Default::default()
                });
                // After the trace's event: a parse in memory may be done already, and what its result
                // brings (a refusal, the sweep's end) must not reach watchers before the trace itself.
                match w.parse.take() {
                    Some(p) => p.complete(&coord, key.clone(), sha256),
                    None => coord.parse_queue.push(key.clone()),
                }
            }
            coord.metrics.upload_ack_seconds.observe(asked.elapsed().as_secs_f64());
            return Ok(WriteResponse { committed_offset: w.received, complete: true, duplicate: !fresh });
        }
    }
    coord.metrics.uploads_broken.inc_by(1);
    w.commit(&coord, &key).await?;
    Ok(WriteResponse { committed_offset: w.committed_raw, complete: false, duplicate: false })
}

/// RESOURCE_EXHAUSTED with a `retry-after-ms` hint (the agent waits at least that long).
fn retry_later(msg: String) -> Status {
    let mut s = Status::resource_exhausted(msg);
    s.metadata_mut().insert("retry-after-ms", tonic::metadata::MetadataValue::from_static("500"));
    s
}

#[tonic::async_trait]
impl TraceUpload for Upload {
    async fn write(&self, req: Request<Streaming<WriteRequest>>) -> Result<Response<WriteResponse>, Status> {
        // tonic drops this future when the client goes away; the stream is handled in a task of its own
        // so that it runs on, sees the stream break and commits what arrived intact.
        let caller = caller(&req);
        let task = tokio::spawn(write_stream(self.0.clone(), caller, req.into_inner()));
        let resp = task.await.map_err(|e| Status::internal(format!("upload task failed: {e}")))?;
        // The coordinator's own failures (a full disk, the database) are its operator's to see; the agent
        // retries them.
        if let Err(s) = &resp
            && s.code() == tonic::Code::Internal
        {
            tracing::error!("an upload failed here: {}", s.message());
        }
        Ok(Response::new(resp?))
    }

    async fn query_write_status(&self, req: Request<UploadId>) -> Result<Response<WriteStatus>, Status> {
        let caller = caller(&req);
        let key = key_of(Some(req.into_inner()))?;
        if let Err(s) = check_acts_as(caller.as_ref(), "upload host", &key.host) {
            self.0.metrics.uploads_refused.inc_by(1);
            return Err(s);
        }
        let row = self.0.store().upload(&key).map_err(internal)?;
        Ok(Response::new(match row {
            // Set aside (an earlier run of the point): this run's upload starts over, at its open.
            Some(r) if r.superseded => WriteStatus { committed_offset: 0, complete: false },
            Some(r) if r.complete => WriteStatus { committed_offset: r.raw_size, complete: true },
            Some(r) => WriteStatus { committed_offset: r.committed_raw, complete: false },
            None => WriteStatus { committed_offset: 0, complete: false },
        }))
    }
}
