//! The `AgentControl` service: one long-lived stream per agent.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracefleet_proto::v1::agent_control_server::AgentControl;
use tracefleet_proto::v1::agent_message::Msg as In;
use tracefleet_proto::v1::coordinator_message::Msg as Out;
use tracefleet_proto::v1::{
    AgentMessage, CancelJob, CoordinatorMessage, JobFailed, SweepEvent, SweepEventKind, Welcome,
};

use super::internal;
use crate::parse::complete_if_done;
use crate::schedule::dispatch::send_assignments;
use crate::state::{AgentConn, Coordinator};
use crate::store::JobState;

/// The `AgentControl` service: one session per connected agent.
pub struct Control(pub Arc<Coordinator>);

type OutStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

/// Ends a job from an agent's report and publishes it; completes the sweep if that was the last.
fn end_job(coord: &Arc<Coordinator>, agent: &str, job_id: &str, state: JobState, point: &str, error: &str) {
    let job = match coord.store().job(job_id) {
        Ok(Some(j)) => j,
        _ => return,
    };
    if job.agent != agent {
        return;
    }
    let ended = matches!(coord.store().end_job(job_id, state, error), Ok(true));
    if ended {
        coord.publish(SweepEvent {
            sweep_id: job.sweep_id.clone(),
            kind: if state == JobState::Done { SweepEventKind::JobDone } else { SweepEventKind::JobFailed }.into(),
            agent: agent.to_string(),
            job_id: job_id.to_string(),
            point_id: point.to_string(),
            message: error.to_string(),
            ..Default::default()
        });
    }
    let freed = coord.agents().get_mut(agent).is_some_and(|c| {
        c.gpus.remove(job_id);
        c.running.remove(job_id)
    });
    if !ended && !freed {
        // A report of a job that had ended and held no place (every hello lists the agent's last 1000
        // finished jobs): nothing changed, so neither the agent's room nor the sweep's state did. Going on
        // would read the sweep's jobs and uploads once per listed job, per agent, at every reconnection.
        return;
    }
    // The agent has room again: its next queued job, if any.
    let _ = send_assignments(coord, agent);
    let c = coord.clone();
    let sweep = job.sweep_id;
    // Writing results reads and writes files: off the async runtime.
    tokio::task::spawn_blocking(move || {
        if let Err(e) = complete_if_done(&c, &sweep) {
            tracing::error!(sweep = %sweep, "writing the results: {e:#}");
        }
    });
}

/// A failure an agent reported (live, or listed again in its hello): a failed point is recorded and run
/// again ([`point_failed`]), a failed job (no point) ends. Only the job's own agent reports its failures;
/// one of a job that has ended changes nothing, and one already recorded is not counted again.
///
/// [`point_failed`]: crate::schedule::dispatch::point_failed
async fn job_failed(c: &Arc<Coordinator>, agent: &str, f: JobFailed) {
    let msg = if f.stderr_tail.is_empty() {
        f.error.clone()
    } else {
        format!("{}{}{}", f.error, crate::parse::outcome::STDERR_TAIL, f.stderr_tail)
    };
    // The store's guard is dropped here: it must not live across the await below.
    let job = c.store().job(&f.job_id).map(|j| j.filter(|j| j.agent == agent));
    if f.point_id.is_empty() {
        end_job(c, agent, &f.job_id, JobState::Failed, "", &msg);
    } else if let Ok(Some(job)) = job {
        // One point failed; the job goes on with the others. Handled before the agent's next message (its
        // job's end, say), so the retry exists first.
        let c2 = c.clone();
        let point = f.point_id;
        let handled =
            tokio::task::spawn_blocking(move || crate::schedule::dispatch::point_failed(&c2, &job, &point, &msg)).await;
        if let Err(e) = handled {
            tracing::error!(agent = %agent, "handling a point failure: {e}");
        }
    }
}

#[tonic::async_trait]
impl AgentControl for Control {
    type SessionStream = OutStream;

    async fn session(&self, req: Request<Streaming<AgentMessage>>) -> Result<Response<OutStream>, Status> {
        let coord = self.0.clone();
        let caller = super::auth::caller(&req);
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("empty control stream"))?;
        let Some(In::Hello(hello)) = first.msg else {
            return Err(Status::invalid_argument("the first control message must be hello"));
        };
        let inventory = hello.inventory.unwrap_or_default();
        // Inventories are stored and listed to every client: a bounded size keeps one agent from making
        // `ListAgents` answers (and the database) grow without end.
        let size = inventory.encoded_len();
        if size > crate::state::Config::MAX_INVENTORY_BYTES {
            return Err(Status::invalid_argument(format!(
                "the agent's inventory is {size} bytes; at most {} are accepted (fewer labels?)",
                crate::state::Config::MAX_INVENTORY_BYTES
            )));
        }
        let name = inventory.host.clone();
        // The name is the uploads' host too: the same rules as an upload id's fields.
        if name.len() > 253 {
            return Err(Status::invalid_argument(format!("invalid agent name {name:?}: longer than 253 bytes")));
        }
        super::upload::check_field("agent name", &name, false)?;
        // Under mutual TLS an agent is who its certificate says.
        super::auth::check_acts_as(caller.as_ref(), "agent name", &name)?;
        // Two processes with one name would report as one agent: the second is refused while the first is
        // connected (heard from within three heartbeats). The same process reconnecting is welcome.
        let alive = Duration::from_millis(3 * u64::from(coord.cfg.heartbeat_ms));
        let holder_seen = coord
            .agents()
            .get(&name)
            .filter(|other| other.instance != hello.instance)
            .map(|other| other.last_seen.elapsed());
        if let Some(seen) = holder_seen.filter(|seen| *seen < alive) {
            let mut refusal = Status::already_exists(format!(
                "agent name {name:?} is in use by another agent process connected to this coordinator; \
                 start this one with another --name (under mutual TLS, with that name's certificate)"
            ));
            // When the name is free unless its holder is heard from again: a process restarted after a
            // crash may find its predecessor not yet noticed gone (no FIN from a dead host, or its stream's
            // end not yet handled), and tries once more then.
            let free_in = (alive - seen).as_millis() + 50;
            if let Ok(v) = free_in.to_string().parse() {
                refusal.metadata_mut().insert("retry-after-ms", v);
            }
            return Err(refusal);
        }
        coord.store().upsert_agent(&name, &inventory.encode_to_vec()).map_err(internal)?;
        let (tx, rx) = mpsc::channel(256);
        let conn_id = coord.next_id();
        let _ = tx
            .send(CoordinatorMessage {
                msg: Some(Out::Welcome(Welcome {
                    agent_id: name.clone(),
                    heartbeat_interval_ms: coord.cfg.heartbeat_ms,
                })),
            })
            .await;
        // Jobs the agent still runs that are no longer its (moved while it was away, cancelled): it is
        // told to stop them; their uploads are refused as superseded.
        let mut running = std::collections::HashSet::new();
        for j in &hello.running_jobs {
            let row = coord.store().job(j).map_err(internal)?;
            match row {
                Some(r) if r.agent == name && r.state == JobState::Assigned => {
                    running.insert(j.clone());
                }
                other => {
                    let reason = match other {
                        Some(r) if r.state == JobState::Reassigned => {
                            format!("job {j} was reassigned while this agent was away ({})", r.error)
                        }
                        Some(r) => format!("job {j} has ended ({})", r.state),
                        None => format!("job {j} is unknown to this coordinator"),
                    };
                    tracing::info!(agent = %name, "telling the agent to stop: {reason}");
                    let cancel = CancelJob { job_id: j.clone(), reason };
                    // Not awaited: nobody reads the stream before this call returns (a full queue drops
                    // the message; the agent's uploads for the job are refused all the same).
                    let _ = tx.try_send(CoordinatorMessage { msg: Some(Out::Cancel(cancel)) });
                }
            }
        }
        // The open jobs of this agent that its hello reports ended (finished, failed) or with a failed
        // point hold their place as if running until their reports are handled: the assignments sent
        // meanwhile (a failed point's retry, another job's end) must not send them to the agent again, as
        // jobs it never ran.
        let mut reported = std::collections::HashSet::new();
        for j in hello.finished_jobs.iter().chain(hello.failures.iter().map(|f| &f.job_id)) {
            if running.contains(j) || reported.contains(j) {
                continue;
            }
            if coord.store().job(j).map_err(internal)?.is_some_and(|r| r.agent == name && r.state == JobState::Assigned)
            {
                reported.insert(j.clone());
            }
        }
        running.extend(reported.iter().cloned());
        coord.agents().insert(
            name.clone(),
            AgentConn {
                conn_id,
                tx,
                inventory,
                last_seen: Instant::now(),
                // The GPUs its running jobs hold, as it says (those of jobs no longer its are not counted).
                gpus: hello
                    .job_gpus
                    .into_iter()
                    .filter(|j| running.contains(&j.job_id))
                    .map(|j| (j.job_id, j.gpus))
                    .collect(),
                running,
                instance: hello.instance.clone(),
            },
        );
        // The failures the agent reported, again (one may have been lost with the stream), before its
        // finished jobs: a point's failure is a late report that changes nothing once its job has ended.
        // Those of jobs that are not this agent's open jobs any more change nothing: skipped here.
        for f in hello.failures {
            let open = coord.store().job(&f.job_id).map_err(internal)?;
            if open.is_some_and(|j| j.agent == name && j.state == JobState::Assigned) {
                job_failed(&coord, &name, f).await;
            }
        }
        for j in &hello.finished_jobs {
            end_job(&coord, &name, j, JobState::Done, "", "");
        }
        // A reported job that is still open (a point failed, and the agent neither runs nor finished it)
        // gives its place back: it is sent again below, as before.
        if let Some(c) = coord.agents().get_mut(&name).filter(|c| c.conn_id == conn_id) {
            c.running.retain(|j| !reported.contains(j));
        }
        send_assignments(&coord, &name)?;

        let c = coord.clone();
        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                };
                if let Some(a) = c.agents().get_mut(&name) {
                    a.last_seen = Instant::now();
                }
                match msg.msg {
                    Some(In::Heartbeat(_)) | Some(In::Hello(_)) | None => {}
                    Some(In::Progress(p)) => {
                        // Which GPUs the job holds, first said when it gets them: what the coordinator
                        // guessed for it may have left other GPUs counted as busy, so the agent may have room.
                        let learned = !p.gpus.is_empty()
                            && c.agents().get_mut(&name).is_some_and(|a| {
                                a.running.contains(&p.job_id)
                                    && a.gpus.insert(p.job_id.clone(), p.gpus.clone()).as_ref() != Some(&p.gpus)
                            });
                        if learned && let Err(e) = send_assignments(&c, &name) {
                            tracing::error!(agent = %name, "sending jobs: {e}");
                        }
                        let sweep_id = c.store().job(&p.job_id).ok().flatten().map(|j| j.sweep_id).unwrap_or_default();
                        c.publish(SweepEvent {
                            sweep_id,
                            kind: SweepEventKind::Progress.into(),
                            agent: name.clone(),
                            job_id: p.job_id,
                            point_id: p.point_id,
                            message: format!("{} produced, {} uploaded", p.traces_produced, p.traces_uploaded),
                            ..Default::default()
                        });
                    }
                    Some(In::Done(d)) => end_job(&c, &name, &d.job_id, JobState::Done, "", ""),
                    Some(In::Failed(f)) => job_failed(&c, &name, f).await,
                }
            }
            // Forget this connection (unless the agent already reconnected); its expiry counts from now.
            let _ = c.store().touch_agent(&name);
            let mut agents = c.agents();
            if agents.get(&name).is_some_and(|a| a.conn_id == conn_id) {
                agents.remove(&name);
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Status>))))
    }
}

/// Drops agents that stopped sending anything (no heartbeat for three intervals), and moves the work of
/// agents away longer than the grace period to others.
pub async fn watchdog(coord: Arc<Coordinator>) {
    let every = Duration::from_millis(u64::from(coord.cfg.heartbeat_ms.max(100)));
    let mut seen = std::collections::HashMap::new();
    loop {
        tokio::time::sleep(every).await;
        let limit = every * 3;
        coord.agents().retain(|_, a| a.last_seen.elapsed() < limit);
        let c = coord.clone();
        seen = tokio::task::spawn_blocking(move || {
            crate::schedule::dispatch::reassign_lost(&c, &mut seen);
            // Agents gone longer than the expiry are forgotten (their jobs and traces stay).
            let connected: std::collections::HashSet<String> = c.agents().keys().cloned().collect();
            let before = crate::store::now_ms()
                .saturating_sub(i64::try_from(c.cfg.agent_expiry.as_millis()).unwrap_or(i64::MAX));
            match c.store().expire_agents(before, &connected) {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!("forgot agents not heard from in {:?}: {gone:?}", c.cfg.agent_expiry)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("expiring agents: {e}"),
            }
            // Parses whose result could not be stored, and results that waited for disk space: again.
            c.parse_queue.release_due();
            for sweep in c.pending_results() {
                if let Err(e) = complete_if_done(&c, &sweep) {
                    tracing::warn!(sweep = %sweep, "writing the results: {e:#}");
                }
            }
            seen
        })
        .await
        .unwrap_or_default();
    }
}
