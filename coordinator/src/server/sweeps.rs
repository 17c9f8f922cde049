//! The `Sweeps` service: submit, watch, status, agents, results.

use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracefleet_proto::decode_stored;
use tracefleet_proto::v1::sweeps_server::Sweeps;
use tracefleet_proto::v1::{
    AgentInfo, DeleteSweepResponse, ListAgentsRequest, ListAgentsResponse, Placement, ResultChunk, SubmitResponse,
    SweepEvent, SweepEventKind, SweepRef, SweepSpec, SweepState, SweepStatus,
};

use super::internal;
use crate::parse::outcome::{self, PointState};
use crate::schedule;
use crate::state::Coordinator;
use crate::store::{JobState, now_ms};

/// The `Sweeps` service: what users submit and watch.
pub struct SweepService(pub Arc<Coordinator>);

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A sweep's status from the database.
pub(crate) fn status_of(coord: &Coordinator, id: &str) -> Result<SweepStatus, Status> {
    let s = coord.store();
    let sweep = s.sweep(id).map_err(internal)?.ok_or_else(|| Status::not_found(format!("unknown sweep {id:?}")))?;
    let jobs = s.jobs_of_sweep(id).map_err(internal)?;
    let uploads = s.uploads_of_sweep(id).map_err(internal)?;
    let failures = s.point_failures(id).map_err(internal)?;
    let each = decode_stored::<SweepSpec>(&sweep.spec).is_ok_and(|sp| sp.placement() == Placement::Each);
    let spec = decode_stored::<SweepSpec>(&sweep.spec).ok();
    let per_point = outcome::traces_per_point(spec.as_ref(), spec.as_ref().map_or(1, |s| s.profile_steps));
    let points = outcome::outcomes(&jobs, &uploads, &failures, coord.cfg.point_retries, each, per_point);
    let count = |st: PointState| points.iter().filter(|p| p.state == st).count() as u32;
    Ok(SweepStatus {
        points_total: points.len() as u32,
        points_done: count(PointState::Done),
        points_failed: count(PointState::Failed),
        points_missing: count(PointState::Missing),
        traces_refused: uploads.iter().filter(|u| !u.parse_error.is_empty() && !u.superseded).count() as u32,
        sweep_id: sweep.id,
        name: sweep.name,
        state: sweep.state.into(),
        jobs_total: jobs.len() as u32,
        jobs_done: jobs.iter().filter(|j| j.state == JobState::Done).count() as u32,
        jobs_failed: jobs.iter().filter(|j| j.state == JobState::Failed).count() as u32,
        traces_uploaded: uploads.iter().filter(|u| u.complete && !u.superseded).count() as u32,
        traces_parsed: uploads.iter().filter(|u| u.parsed && !u.superseded).count() as u32,
        raw_bytes: uploads.iter().filter(|u| u.complete && !u.superseded).map(|u| u.raw_size).sum(),
        traces_set_aside: uploads.iter().filter(|u| u.complete && u.superseded).count() as u32,
    })
}

#[tonic::async_trait]
impl Sweeps for SweepService {
    async fn submit(&self, req: Request<SweepSpec>) -> Result<Response<SubmitResponse>, Status> {
        let sweep_id = schedule::submit(&self.0, req.into_inner())?;
        Ok(Response::new(SubmitResponse { sweep_id }))
    }

    type WatchStream = Boxed<SweepEvent>;

    async fn watch(&self, req: Request<SweepRef>) -> Result<Response<Self::WatchStream>, Status> {
        let coord = self.0.clone();
        let id = req.into_inner().sweep_id;
        let mut rx = coord.events.subscribe();
        let status = status_of(&coord, &id)?;
        let (tx, out) = mpsc::channel(256);
        tokio::spawn(async move {
            let first = SweepEvent {
                sweep_id: id.clone(),
                kind: SweepEventKind::Status.into(),
                status: Some(status.clone()),
                ..Default::default()
            };
            if tx.send(Ok(first)).await.is_err() || status.state() != SweepState::Running {
                return;
            }
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    // This watcher fell behind (its client reads slowly while other sweeps publish): events
                    // were dropped, the sweep's end perhaps among them. The status says where it stands
                    // now, and ends the stream if the sweep has ended (before, the client waited for ever).
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let Ok(status) = status_of(&coord, &id) else { return };
                        let ended = status.state() != SweepState::Running;
                        let ev = SweepEvent {
                            sweep_id: id.clone(),
                            kind: SweepEventKind::Status.into(),
                            status: Some(status),
                            ..Default::default()
                        };
                        if tx.send(Ok(ev)).await.is_err() || ended {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                };
                if ev.sweep_id != id {
                    continue;
                }
                let end = ev.kind().ends_sweep();
                let mut ev = ev;
                if end {
                    ev.status = status_of(&coord, &id).ok();
                }
                if tx.send(Ok(ev)).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn cancel(&self, req: Request<SweepRef>) -> Result<Response<SweepStatus>, Status> {
        let coord = self.0.clone();
        let id = req.into_inner().sweep_id;
        schedule::cancel(&coord, &id)?;
        // The sweep ends once the traces that were already uploaded are parsed (a moment): wait for it,
        // so the answer says "cancelled" and the results are there.
        for _ in 0..100 {
            let c = coord.clone();
            let sid = id.clone();
            tokio::task::spawn_blocking(move || crate::parse::complete_if_done(&c, &sid))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::internal(format!("{e:#}")))?;
            if status_of(&coord, &id)?.state() != SweepState::Running {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(Response::new(status_of(&coord, &id)?))
    }

    async fn list_sweeps(
        &self,
        _req: Request<tracefleet_proto::v1::ListSweepsRequest>,
    ) -> Result<Response<tracefleet_proto::v1::ListSweepsResponse>, Status> {
        let ids = self.0.store().sweep_ids().map_err(internal)?;
        let sweeps = ids.iter().map(|id| status_of(&self.0, id)).collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(tracefleet_proto::v1::ListSweepsResponse { sweeps }))
    }

    async fn status(&self, req: Request<SweepRef>) -> Result<Response<SweepStatus>, Status> {
        Ok(Response::new(status_of(&self.0, &req.into_inner().sweep_id)?))
    }

    async fn list_agents(&self, _req: Request<ListAgentsRequest>) -> Result<Response<ListAgentsResponse>, Status> {
        let coord = &self.0;
        let known = coord.store().agents().map_err(internal)?;
        let now = now_ms();
        let connected = coord.agents();
        let agents =
            known
                .into_iter()
                .map(|(name, inv, last)| {
                    let conn = connected.get(&name);
                    AgentInfo {
                        inventory: Some(conn.map(|c| c.inventory.clone()).unwrap_or_else(|| {
                            tracefleet_proto::v1::HostInventory::decode(&inv[..]).unwrap_or_default()
                        })),
                        connected: conn.is_some(),
                        last_seen_ms_ago: conn
                            .map(|c| c.last_seen.elapsed().as_millis() as u64)
                            .unwrap_or_else(|| (now - last).max(0) as u64),
                        running_jobs: conn.map(|c| c.running.iter().cloned().collect()).unwrap_or_default(),
                    }
                })
                .collect();
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    type FetchResultsStream = Boxed<ResultChunk>;

    async fn fetch_results(&self, req: Request<SweepRef>) -> Result<Response<Self::FetchResultsStream>, Status> {
        let id = req.into_inner().sweep_id;
        ended(&self.0, &id)?;
        let dir = self.0.store().results_dir(&id);
        let mut files = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let name = p.strip_prefix(&dir).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
                    files.push((p, name));
                }
            }
        }
        files.sort();
        Ok(Response::new(stream_files(files)))
    }

    type FetchTracesStream = Boxed<ResultChunk>;

    async fn fetch_traces(&self, req: Request<SweepRef>) -> Result<Response<Self::FetchTracesStream>, Status> {
        let id = req.into_inner().sweep_id;
        ended(&self.0, &id)?;
        let store = self.0.store();
        let uploads = store.uploads_of_sweep(&id).map_err(internal)?;
        let files = uploads
            .iter()
            .filter(|u| u.complete && !u.superseded)
            .map(|u| {
                let k = &u.key;
                Ok((store.trace_path(k)?, format!("{}/{}/{}.zst", k.point_id, k.host, k.trace_name)))
            })
            .collect::<Result<_, crate::store::StoreError>>()
            .map_err(internal)?;
        drop(store);
        Ok(Response::new(stream_files(files)))
    }

    async fn delete_sweep(&self, req: Request<SweepRef>) -> Result<Response<DeleteSweepResponse>, Status> {
        let id = req.into_inner().sweep_id;
        ended(&self.0, &id)?;
        let coord = self.0.clone();
        let removed = tokio::task::spawn_blocking(move || -> Result<DeleteSweepResponse, Status> {
            let (traces_dir, results_dir, traces) = {
                let s = coord.store();
                let traces = s.uploads_of_sweep(&id).map_err(internal)?.len() as u32;
                (s.traces_dir(&id), s.results_dir(&id), traces)
            };
            let mut freed_bytes = 0;
            for d in [&traces_dir, &results_dir, &results_dir.with_extension("partial")] {
                freed_bytes += dir_bytes(d);
                match std::fs::remove_dir_all(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Status::internal(format!("removing {}: {e}", d.display()))),
                }
            }
            // Files first, then the records: a failure half way leaves records that say what is left.
            coord.store().delete_sweep(&id).map_err(internal)?;
            Ok(DeleteSweepResponse { freed_bytes, traces })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(removed))
    }
}

/// Refuses a sweep that is still running (its files are still being written).
fn ended(coord: &Coordinator, id: &str) -> Result<(), Status> {
    if status_of(coord, id)?.state() == SweepState::Running {
        return Err(Status::failed_precondition(format!("sweep {id} is still running (coord cancel stops it)")));
    }
    Ok(())
}

/// Bytes of the files under `dir` (0 when it does not exist).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Streams `(path, name)` files in pieces of at most 1 MiB, read as they are sent (a stored trace can be
/// hundreds of MB); an unreadable file ends the stream with an error naming it.
fn stream_files(files: Vec<(std::path::PathBuf, String)>) -> Boxed<ResultChunk> {
    let (tx, out) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        for (path, name) in files {
            let fail = |e: std::io::Error| Status::internal(format!("{}: {e}", path.display()));
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(fail(e)));
                    return;
                }
            };
            let mut offset = 0u64;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0;
                // Fill the piece (a read may return less).
                while n < buf.len() {
                    match f.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(fail(e)));
                            return;
                        }
                    }
                }
                buf.truncate(n);
                let last = n < 1 << 20;
                let chunk = ResultChunk { file: name.clone(), offset, data: buf, last };
                offset += n as u64;
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
                if last {
                    break;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(out))
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;
    use tracefleet_proto::v1::sweeps_server::Sweeps;
    use tracefleet_proto::v1::{SweepEvent, SweepEventKind, SweepRef, SweepState};

    use super::SweepService;
    use crate::state::{Config, Coordinator};
    use crate::store::SweepRow;

    #[tokio::test]
    async fn a_watcher_that_fell_behind_still_learns_that_its_sweep_ended() {
        let dir = tempfile::tempdir().expect("tmp");
        let coord = Coordinator::open(Config::new(dir.path().to_path_buf())).expect("coordinator");
        let sweep = SweepRow::running("s", Vec::new());
        coord.store().insert_sweep(&sweep, &[]).expect("sweep");
        let service = SweepService(coord.clone());
        let mut stream =
            service.watch(tonic::Request::new(SweepRef { sweep_id: "s".into() })).await.expect("watch").into_inner();
        let first = stream.next().await.expect("first").expect("the first event");
        assert_eq!(first.kind(), SweepEventKind::Status);
        // The client reads nothing while other sweeps publish more than the channel keeps; meanwhile
        // this sweep ends and its end event is published among them.
        let other = |n: u64| SweepEvent { sweep_id: "other".into(), bytes: n, ..Default::default() };
        for n in 0..5000 {
            coord.publish(other(n));
            if n % 512 == 0 {
                tokio::task::yield_now().await;
            }
        }
        coord.store().finish_sweep("s", SweepState::Completed).expect("finish");
        coord.publish(SweepEvent {
            sweep_id: "s".into(),
            kind: SweepEventKind::Completed.into(),
            ..Default::default()
        });
        for n in 0..5000 {
            coord.publish(other(n));
        }
        let last = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut last = None;
            while let Some(ev) = stream.next().await {
                last = Some(ev.expect("event"));
            }
            last
        })
        .await
        .expect("the stream ends")
        .expect("an event");
        let ended =
            last.kind().ends_sweep() || last.status.as_ref().is_some_and(|s| s.state() == SweepState::Completed);
        assert!(ended, "{last:?}");
    }
}
