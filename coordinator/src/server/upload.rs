//! The `TraceUpload` service: resumable, verified, durable trace uploads.
//!
//! Each chunk is checked (bounded zstd decompression, length, CRC32C) before its frame is appended to the
//! trace's file; every `commit_every_bytes` (and when the stream ends, breaks or finishes) the file is
//! synced and then the committed offset is written to the database. Bytes past the committed offset are
//! not acknowledged: after a crash they are cut off and the agent resends them.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};
use tracefleet_common::wire::{self, Sha256, WireError};
use tracefleet_proto::v1::trace_upload_server::TraceUpload;
use tracefleet_proto::v1::{
    SweepEvent, SweepEventKind, UploadChunk, UploadId, WriteRequest, WriteResponse, WriteStatus,
};

use super::internal;
use crate::state::Coordinator;
use crate::store::UploadKey;

/// The `TraceUpload` service: resumable, checksummed trace uploads.
pub struct Upload(pub Arc<Coordinator>);

/// Checks one id field: non-empty, bounded, and safe to use in a file name.
fn check_field(field: &str, v: &str, slash_ok: bool) -> Result<(), Status> {
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
        let (file, hasher, r) = blocking(move || {
            let r = wire::verify_chunk(c.seq, c.raw_len, c.crc32c, &c.zstd_frame).map(|raw| {
                if let Some(h) = hasher.as_mut() {
                    h.update(&raw);
                }
                (file.write_all(&c.zstd_frame), c.zstd_frame.len() as u64)
            });
            (file, hasher, r)
        })
        .await?;
        self.file = Some(file);
        self.hasher = hasher;
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

#[tonic::async_trait]
impl TraceUpload for Upload {
    async fn write(&self, req: Request<Streaming<WriteRequest>>) -> Result<Response<WriteResponse>, Status> {
        let coord = &self.0;
        let Ok(_slot) = coord.upload_slots.clone().try_acquire_owned() else {
            coord.metrics.uploads_rejected.inc_by(1);
            let mut s = Status::resource_exhausted("too many uploads in flight; retry later");
            s.metadata_mut().insert("retry-after-ms", tonic::metadata::MetadataValue::from_static("500"));
            return Err(s);
        };
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty upload stream"))?;
        let open = first.open.clone().ok_or_else(|| Status::invalid_argument("the first request must carry open"))?;
        let key = key_of(open.id)?;
        if coord.store().sweep(&key.sweep_id).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!("unknown sweep {:?}", key.sweep_id)));
        }
        if !coord.active_uploads().insert(key.clone()) {
            return Err(Status::aborted(format!("{} is being uploaded by another stream", key.trace_name)));
        }
        let _active = Active { coord: coord.clone(), key: key.clone() };
        let telemetry = open.telemetry.as_ref().map(prost::Message::encode_to_vec);
        let row = coord.store().open_upload(&key, open.raw_size, &open.gpu, telemetry.as_deref()).map_err(internal)?;
        if row.complete {
            coord.metrics.uploads_duplicate.inc_by(1);
            return Ok(Response::new(WriteResponse {
                committed_offset: row.raw_size,
                complete: true,
                duplicate: true,
            }));
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
        let path = coord.store().trace_path(&key);
        let mut w = Writer::open(path, row.stored_bytes, row.committed_raw).await?;
        let mut next = Some(first);
        loop {
            let req = match next.take() {
                Some(r) => r,
                None => match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        // The agent went away: what arrived intact is kept and committed.
                        w.commit(coord, &key).await?;
                        return Err(e);
                    }
                },
            };
            if let Some(c) = req.chunk {
                if let Err(e) = w.chunk(coord, row.raw_size, c).await {
                    w.commit(coord, &key).await?;
                    return Err(e);
                }
                if w.received - w.committed_raw >= coord.cfg.commit_every_bytes {
                    w.commit(coord, &key).await?;
                }
            }
            if let Some(fin) = req.finish {
                let asked = std::time::Instant::now();
                w.commit(coord, &key).await?;
                if w.received != row.raw_size {
                    return Err(Status::failed_precondition(format!(
                        "finish after {} of {} raw bytes",
                        w.received, row.raw_size
                    )));
                }
                let digest = w.digest().await?;
                if fin.sha256 != digest {
                    return Err(Status::data_loss(format!(
                        "SHA-256 mismatch: declared {}, received bytes hash to {}; the trace is not counted",
                        wire::hex(&fin.sha256),
                        wire::hex(&digest)
                    )));
                }
                let fresh = coord.store().complete_upload(&key, &wire::hex(&digest)).map_err(internal)?;
                if fresh {
                    coord.metrics.uploads_completed.inc_by(1);
                    coord.parse_queue.push(key.clone());
                    coord.publish(SweepEvent {
                        sweep_id: key.sweep_id.clone(),
                        kind: SweepEventKind::Trace.into(),
                        agent: key.host.clone(),
                        point_id: key.point_id.clone(),
                        message: key.trace_name.clone(),
                        bytes: row.raw_size,
                        ..Default::default()
                    });
                }
                coord.metrics.upload_ack_seconds.observe(asked.elapsed().as_secs_f64());
                return Ok(Response::new(WriteResponse {
                    committed_offset: w.received,
                    complete: true,
                    duplicate: !fresh,
                }));
            }
        }
        w.commit(coord, &key).await?;
        Ok(Response::new(WriteResponse { committed_offset: w.committed_raw, complete: false, duplicate: false }))
    }

    async fn query_write_status(&self, req: Request<UploadId>) -> Result<Response<WriteStatus>, Status> {
        let key = key_of(Some(req.into_inner()))?;
        let row = self.0.store().upload(&key).map_err(internal)?;
        Ok(Response::new(match row {
            Some(r) if r.complete => WriteStatus { committed_offset: r.raw_size, complete: true },
            Some(r) => WriteStatus { committed_offset: r.committed_raw, complete: false },
            None => WriteStatus { committed_offset: 0, complete: false },
        }))
    }
}
