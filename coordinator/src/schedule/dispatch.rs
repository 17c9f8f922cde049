//! Handing jobs to agents as they have room, retrying failed points, and moving the work of agents that
//! went away to the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tracefleet_common::sweep::Placement;
use tracefleet_proto::decode_stored;
use tracefleet_proto::v1::coordinator_message::Msg as Out;
use tracefleet_proto::v1::sweep_spec::Backend as SpecBackend;
use tracefleet_proto::v1::{AssignJob, CoordinatorMessage, SweepEvent, SweepEventKind, SweepSpec};

use super::ScheduleError;
use super::capacity::Capacity;
use crate::state::Coordinator;
use crate::store::{JobRow, JobState};

/// The names of an agent's GPUs that a sweep's GPU selector matches (all without a selector).
fn matching_names<'a>(spec: &SweepSpec, conn: &'a crate::state::AgentConn) -> Vec<&'a str> {
    conn.inventory
        .gpus
        .iter()
        .filter(|g| tracefleet_common::glob::selects_gpu(&spec.gpu_glob, &g.name).unwrap_or(false))
        .map(|g| g.name.as_str())
        .collect()
}

/// How many jobs of a sweep an agent runs at once: its GPUs the sweep's selector matches, over the GPUs
/// a job holds, a job's GPUs all of one kind ([`tracefleet_common::gpus`]); 0 when it cannot run one.
pub fn job_slots(spec: &SweepSpec, conn: &crate::state::AgentConn) -> usize {
    tracefleet_common::gpus::jobs_of_one_kind(matching_names(spec, conn), super::gpus_per_job(spec))
}

/// Whether the sweep's backend runs on a GPU (torch, vLLM): then only agents with one can run its jobs.
pub fn needs_gpu(spec: &SweepSpec) -> bool {
    matches!(spec.backend, Some(SpecBackend::Torch(_) | SpecBackend::Vllm(_)))
}

/// Connected agents that can run a sweep's jobs, sorted: they match its selector, and have a GPU where
/// its backend needs one. A sweep whose jobs hold several GPUs (tensor parallelism) matches only agents
/// with that many matching GPUs of one kind. Used at submission, for retries and for moving a lost agent's
/// work alike, so that none of them lands where it can only fail.
pub fn matching_agents(coord: &Coordinator, spec: &SweepSpec) -> Vec<String> {
    let mut v = selected_agents(coord, spec);
    if needs_gpu(spec) {
        let agents = coord.agents();
        v.retain(|a| agents.get(a).is_some_and(|c| !c.inventory.gpus.is_empty()));
    }
    v
}

/// Connected agents that match a sweep's selector (hosts, GPU glob, labels, GPUs per job), sorted,
/// whether or not they have the GPU its backend needs.
pub fn selected_agents(coord: &Coordinator, spec: &SweepSpec) -> Vec<String> {
    let per_job = super::gpus_per_job(spec);
    let mut v: Vec<String> = coord
        .agents()
        .iter()
        .filter(|(name, a)| {
            (spec.agents.is_empty() || spec.agents.contains(name))
                // A GPU selector or jobs of several GPUs: room for at least one job on matching GPUs.
                && ((spec.gpu_glob.is_empty() && per_job == 1) || job_slots(spec, a) > 0)
                && spec.labels.iter().all(|(k, v)| a.inventory.labels.get(k) == Some(v))
        })
        .map(|(n, _)| n.clone())
        .collect();
    v.sort();
    v
}

/// Sends an agent its next jobs while it has free GPUs of the kind each selects (a job holds one, or its
/// tensor-parallel size; an agent without GPUs runs one job at a time), oldest sweep first, so several
/// sweeps queue up instead of sharing a GPU; a job waits only behind earlier jobs for the same GPUs
/// ([`Capacity`]). A job that was sent to an earlier process of this agent (it restarted, and does not run
/// the job any more) is not sent again: its unfinished points become a new job for this agent
/// ([`rerun_after_restart`]), so that the traces of two runs of a point are never counted together.
pub fn send_assignments(coord: &Arc<Coordinator>, agent: &str) -> Result<(), ScheduleError> {
    let jobs = coord.store().open_jobs_of_agent(agent)?;
    let mut restarted = Vec::new();
    {
        let mut agents = coord.agents();
        let Some(conn) = agents.get_mut(agent) else { return Ok(()) };
        // Every job the agent still runs holds its GPUs, including one cancelled or moved here that has
        // not ended there yet (its row is no longer open; a row gone holds a GPU of any kind).
        let mut gpus = Capacity::of(&conn.inventory);
        let mut globs = SweepGlobs::default();
        let mut unreported = Vec::new();
        for id in &conn.running {
            match conn.gpus.get(id) {
                Some(held) => gpus.hold_reported(held),
                None => unreported.push(id),
            }
        }
        for id in unreported {
            let row = coord.store().job(id)?;
            let assign = row.and_then(|row| {
                let assign = decode_stored::<AssignJob>(&row.assign).ok()?;
                Some(globs.fill(coord, &row.sweep_id, assign))
            });
            gpus.hold(&assign.unwrap_or_default());
        }
        let mut waiting = Vec::new();
        for j in jobs {
            if conn.running.contains(&j.id) {
                continue;
            }
            let sent_to = coord.store().job_sent_to(&j.id)?;
            if !sent_to.is_empty() && !conn.instance.is_empty() && sent_to != conn.instance {
                restarted.push(j);
                continue;
            }
            let assign = globs.fill(coord, &j.sweep_id, decode_stored(&j.assign)?);
            waiting.push((j.id, assign));
        }
        for (id, assign) in waiting {
            if !gpus.take(&assign) {
                continue;
            }
            // A full queue means the agent is not reading; the stream's end will bring it back.
            if conn.tx.try_send(CoordinatorMessage { msg: Some(Out::Assign(assign)) }).is_ok() {
                coord.store().mark_sent(&id, &conn.instance)?;
                conn.running.insert(id);
            }
        }
    }
    if !restarted.is_empty() {
        for j in &restarted {
            rerun_after_restart(coord, j)?;
        }
        // The new jobs (never sent) go out now.
        return send_assignments(coord, agent);
    }
    Ok(())
}

/// The GPU selectors of sweeps, looked up once per dispatch.
#[derive(Default)]
struct SweepGlobs(HashMap<String, String>);

impl SweepGlobs {
    /// `assign` with its sweep's GPU selector: a job stored by a coordinator older than the selector in
    /// assignments has none, and would run on any kind of GPU (the agent takes the selector from it).
    fn fill(&mut self, coord: &Coordinator, sweep_id: &str, mut assign: AssignJob) -> AssignJob {
        if assign.gpu_glob.is_empty() {
            let glob = self
                .0
                .entry(sweep_id.to_string())
                .or_insert_with(|| spec_of(coord, sweep_id).map(|s| s.gpu_glob).unwrap_or_default());
            assign.gpu_glob = glob.clone();
        }
        assign
    }
}

/// The points of a job with fewer complete traces from its agent than a point gives ([`crate::parse::outcome::traces_per_point`]).
/// Before, vLLM's points were judged by their profile steps: with 4 ranks and 3 steps, a point whose
/// fourth rank was still uploading counted as finished, and that trace was then refused.
fn unfinished_points(coord: &Coordinator, job: &JobRow, assign: &AssignJob) -> Vec<tracefleet_proto::v1::Point> {
    let want = crate::parse::outcome::traces_per_point(spec_of(coord, &job.sweep_id).as_ref(), assign.profile_steps)
        .unwrap_or(assign.profile_steps.max(1));
    assign
        .points
        .iter()
        .filter(|p| coord.store().complete_traces(&job.sweep_id, &p.point_id, &job.agent).unwrap_or(0) < want)
        .cloned()
        .collect()
}

/// A job whose agent restarted while running it: its unfinished points ([`unfinished_points`]) become a new job for the same agent, and the old job ends as reassigned, its traces of
/// those points set aside and its further uploads refused (the restarted agent may still upload what the
/// earlier process left in its spool).
fn rerun_after_restart(coord: &Arc<Coordinator>, job: &JobRow) -> Result<(), ScheduleError> {
    let assign: AssignJob = decode_stored(&job.assign)?;
    let remaining = unfinished_points(coord, job, &assign);
    let reason = format!("agent {} restarted while running it; {} points run again", job.agent, remaining.len());
    let ids: Vec<String> = remaining.iter().map(|p| p.point_id.clone()).collect();
    let make = |n: usize| Some(new_job(&assign, n, remaining, &job.agent));
    let (moved, new) = coord.store().move_job(&job.id, &job.sweep_id, &job.agent, &ids, &reason, make)?;
    if moved && new.is_none() {
        // Every point had its traces: nothing runs again, and the sweep may be complete now (off the
        // caller's thread: writing results reads and writes files).
        let (c, sweep) = (coord.clone(), job.sweep_id.clone());
        let finish = move || {
            if let Err(e) = crate::parse::complete_if_done(&c, &sweep) {
                tracing::error!(sweep = %sweep, "writing the results: {e:#}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(finish)),
            Err(_) => finish(),
        }
    }
    if moved {
        tracing::warn!(job = %job.id, "{reason}");
        coord.publish(SweepEvent {
            sweep_id: job.sweep_id.clone(),
            kind: SweepEventKind::Reassigned.into(),
            agent: job.agent.clone(),
            job_id: new.map(|n| n.id).unwrap_or_default(),
            message: reason,
            ..Default::default()
        });
    }
    Ok(())
}

fn spec_of(coord: &Coordinator, sweep_id: &str) -> Option<SweepSpec> {
    let row = coord.store().sweep(sweep_id).ok().flatten()?;
    decode_stored(&row.spec).ok()
}

/// The matching agent with the fewest open jobs (ties: by name), other than `not`.
fn least_loaded(coord: &Coordinator, spec: &SweepSpec, not: Option<&str>) -> Option<String> {
    let open = coord.store().open_jobs().unwrap_or_default();
    let mut load: HashMap<&str, usize> = HashMap::new();
    for j in &open {
        *load.entry(j.agent.as_str()).or_default() += 1;
    }
    matching_agents(coord, spec)
        .into_iter()
        .filter(|a| Some(a.as_str()) != not)
        .min_by_key(|a| (load.get(a.as_str()).copied().unwrap_or(0), a.clone()))
}

/// The job `{sweep}-j{n}` running `points` of `template` on `agent`.
fn new_job(template: &AssignJob, n: usize, points: Vec<tracefleet_proto::v1::Point>, agent: &str) -> JobRow {
    let job_id = format!("{}-j{n}", template.sweep_id);
    let assign = AssignJob { job_id: job_id.clone(), points, ..template.clone() };
    JobRow {
        id: job_id,
        sweep_id: template.sweep_id.clone(),
        agent: agent.to_string(),
        assign: assign.encode_to_vec(),
        state: JobState::Assigned,
        error: String::new(),
    }
}

/// A point failed on `agent`: run it again (on the least-loaded matching agent, another one if there is
/// one; on the same agent for an `each` sweep) until it has failed `1 + point_retries` times (there); then it is reported as failed and the sweep goes on.
/// The failure and its retry job are stored in one transaction ([`Store::fail_point`]); the caller
/// handles the agent's next message only after this returns, so the job's end cannot complete the sweep
/// between the two.
///
/// [`Store::fail_point`]: crate::store::Store::fail_point
pub fn point_failed(coord: &Arc<Coordinator>, job: &JobRow, point_id: &str, error: &str) {
    let spec = spec_of(coord, &job.sweep_id);
    let template: Option<AssignJob> = decode_stored(&job.assign).ok();
    let point = template.as_ref().and_then(|t| t.points.iter().find(|p| p.point_id == point_id).cloned());
    if point.is_none() {
        tracing::warn!(job = %job.id, "ignoring a failure of {point_id:?}, which is not a point of the job");
        return;
    }
    // An `each` sweep's point belongs to its host (every host runs every point, for a series of its own):
    // it runs again there, and its failures there are counted apart from other hosts'. A spread sweep's
    // point runs again on another agent where there is one.
    let each = spec.as_ref().is_some_and(|s| Placement::from(s.placement()) == Placement::Each);
    let target = if each {
        Some(job.agent.clone())
    } else {
        spec.as_ref().and_then(|s| least_loaded(coord, s, Some(&job.agent)).or_else(|| least_loaded(coord, s, None)))
    };
    let retry = |n: usize| Some(new_job(template.as_ref()?, n, vec![point.clone()?], target.as_ref()?));
    let recorded = coord.store().fail_point(job, point_id, error, coord.cfg.point_retries, each, retry);
    let (attempts, retried) = match recorded {
        // The job had ended (reassigned, cancelled): its point runs elsewhere already. Or this failure was
        // recorded already (its agent listed it again in a hello): it counts once.
        Ok((0, _)) => return,
        Ok(r) => r,
        Err(e) => {
            tracing::error!(sweep = %job.sweep_id, "recording a failure of {point_id}: {e}");
            return;
        }
    };
    let kind = if retried.is_some() { SweepEventKind::PointRetry } else { SweepEventKind::PointFailed };
    coord.publish(SweepEvent {
        sweep_id: job.sweep_id.clone(),
        kind: kind.into(),
        agent: job.agent.clone(),
        job_id: job.id.clone(),
        point_id: point_id.to_string(),
        message: format!("attempt {attempts}: {error}"),
        ..Default::default()
    });
    if let Some(r) = retried
        && let Err(e) = send_assignments(coord, &r.agent)
    {
        tracing::error!(sweep = %job.sweep_id, "sending the retry of {point_id}: {e}");
    }
}

/// Moves the unfinished points of agents that have been away longer than the grace period to other
/// matching agents (spread sweeps; an `each` sweep waits for its agent, since its points belong to it).
pub fn reassign_lost(coord: &Arc<Coordinator>, seen: &mut HashMap<String, Instant>) {
    let Ok(open) = coord.store().open_jobs() else { return };
    let grace = std::time::Duration::from_millis(coord.cfg.reassign_after_ms);
    for job in open {
        if coord.agents().contains_key(&job.agent) {
            seen.insert(job.agent.clone(), Instant::now());
            continue;
        }
        let since = *seen.entry(job.agent.clone()).or_insert_with(Instant::now);
        if since.elapsed() < grace {
            continue;
        }
        let (Some(spec), Ok(assign)) = (spec_of(coord, &job.sweep_id), decode_stored::<AssignJob>(&job.assign)) else {
            continue;
        };
        if Placement::from(spec.placement()) == Placement::Each {
            continue;
        }
        let Some(target) = least_loaded(coord, &spec, Some(&job.agent)) else { continue };
        let remaining = unfinished_points(coord, &job, &assign);
        let reason = format!(
            "agent {} lost for {} ms; {} points moved to {target}",
            job.agent,
            grace.as_millis(),
            remaining.len()
        );
        let ids: Vec<String> = remaining.iter().map(|p| p.point_id.clone()).collect();
        let make = |n: usize| Some(new_job(&assign, n, remaining, &target));
        let moved = coord.store().move_job(&job.id, &job.sweep_id, &job.agent, &ids, &reason, make);
        match moved {
            Ok((false, _)) => continue,
            Ok((true, new)) => {
                tracing::warn!(job = %job.id, "{reason}");
                if let Some(new) = new {
                    if let Err(e) = send_assignments(coord, &target) {
                        tracing::error!(job = %new.id, "sending a moved job: {e}");
                    }
                    coord.publish(SweepEvent {
                        sweep_id: job.sweep_id.clone(),
                        kind: SweepEventKind::Reassigned.into(),
                        agent: target.clone(),
                        job_id: new.id,
                        message: reason,
                        ..Default::default()
                    });
                }
            }
            Err(e) => {
                tracing::error!(job = %job.id, "reassigning: {e}");
                continue;
            }
        }
        if let Err(e) = crate::parse::complete_if_done(coord, &job.sweep_id) {
            tracing::error!(sweep = %job.sweep_id, "writing the results: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobState, SweepRow};
    use tracefleet_proto::v1::{GpuInfo, HostInventory};

    #[test]
    fn a_job_stored_without_its_sweeps_gpu_selector_is_sent_with_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let coord = Coordinator::open(crate::state::Config::new(dir.path().to_path_buf())).expect("coordinator");
        let spec = SweepSpec { gpu_glob: "*H100*".into(), ..Default::default() };
        let sweep = SweepRow::running("s", spec.encode_to_vec());
        // As a coordinator before the selector was part of assignments stored it: none.
        let assign = AssignJob { job_id: "s-j0".into(), sweep_id: "s".into(), ..Default::default() };
        let job = JobRow {
            id: "s-j0".into(),
            sweep_id: "s".into(),
            agent: "mixed".into(),
            assign: assign.encode_to_vec(),
            state: JobState::Assigned,
            error: String::new(),
        };
        coord.store().insert_sweep(&sweep, &[job]).expect("insert");
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let gpus = ["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"]
            .iter()
            .zip(0..)
            .map(|(name, index)| GpuInfo { index, name: (*name).to_string(), ..Default::default() })
            .collect();
        coord.agents().insert(
            "mixed".into(),
            crate::state::AgentConn {
                conn_id: 1,
                tx,
                inventory: HostInventory { host: "mixed".into(), gpus, ..Default::default() },
                last_seen: std::time::Instant::now(),
                running: Default::default(),
                gpus: Default::default(),
                instance: "i".into(),
            },
        );
        send_assignments(&coord, "mixed").expect("send");
        let Some(Out::Assign(sent)) = rx.try_recv().expect("an assignment").msg else { panic!("not an assignment") };
        assert_eq!((sent.job_id.as_str(), sent.gpu_glob.as_str()), ("s-j0", "*H100*"));
    }
}
