//! Submitting and cancelling sweeps: the checks a sweep must pass, its plan into jobs, storing it, and
//! telling the agents (the `Sweeps` service only adapts these to gRPC).

use prost::Message;
use tracefleet_common::sweep::Placement;
use tracefleet_proto::v1::sweep_spec::Backend as SpecBackend;
use tracefleet_proto::v1::{Mode, SweepEvent, SweepEventKind, SweepSpec, SweepState};

use super::{ScheduleError, dispatch};
use crate::state::Coordinator;
use crate::store::{JobRow, JobState, SweepRow, now_ms};

/// Checks, plans and stores a sweep, and sends the agents their first jobs; returns the sweep's id.
///
/// Errors: `Invalid` for a spec that cannot run (no points, no backend, bad or repeated point ids, an
/// unknown placement), `NoAgent` when no connected agent matches its selector (with the agents there
/// are), `Store` when the state store fails.
pub fn submit(coord: &std::sync::Arc<Coordinator>, spec: SweepSpec) -> Result<String, ScheduleError> {
    if spec.points.is_empty() {
        return Err(ScheduleError::Invalid("a sweep needs at least one point".into()));
    }
    if spec.backend.is_none() {
        return Err(ScheduleError::Invalid("a sweep needs a backend".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &spec.points {
        if p.point_id.is_empty() || p.point_id.contains('/') || !seen.insert(p.point_id.clone()) {
            return Err(ScheduleError::Invalid(format!("invalid or repeated point id {:?}", p.point_id)));
        }
    }
    if spec.points.iter().any(|p| p.mode() == Mode::Unspecified) {
        return Err(ScheduleError::Invalid("every point needs a mode (decode or prefill)".into()));
    }
    if !spec.gpu_glob.is_empty() {
        tracefleet_common::glob::Patterns::new(&[&spec.gpu_glob])
            .map_err(|e| ScheduleError::Invalid(format!("the GPU selector: {e}")))?;
    }
    let placement = Placement::from(spec.placement());
    let agents = dispatch::selected_agents(coord, &spec);
    let per_job = super::gpus_per_job(&spec);
    let described = {
        let conns = coord.agents();
        let mut described: Vec<String> = conns
            .iter()
            .map(|(n, a)| {
                let gpus: Vec<&str> = a.inventory.gpus.iter().map(|g| g.name.as_str()).collect();
                let gpus = if gpus.is_empty() { "no GPU".to_string() } else { gpus.join(", ") };
                let labels: Vec<String> = a.inventory.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{n} ({gpus}{}{})", if labels.is_empty() { "" } else { "; " }, labels.join(","))
            })
            .collect();
        described.sort();
        described
    };
    if agents.is_empty() {
        if described.is_empty() {
            return Err(ScheduleError::NoAgent(
                "no agent is connected to this coordinator (start one: agent --coordinator HOST:PORT)".into(),
            ));
        }
        // What the sweep asks of an agent, as its sweep file says it.
        let mut wanted = Vec::new();
        if !spec.agents.is_empty() {
            wanted.push(format!("hosts {:?}", spec.agents));
        }
        if !spec.gpu_glob.is_empty() {
            wanted.push(format!("gpu {:?}", spec.gpu_glob));
        }
        if !spec.labels.is_empty() {
            let mut labels: Vec<String> = spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            wanted.push(format!("labels {}", labels.join(",")));
        }
        // A tensor-parallel job holds that many GPUs of one agent.
        if per_job > 1 {
            wanted.push(format!("{per_job} GPUs of one kind for one job (tensor_parallel = {per_job})"));
        }
        if wanted.is_empty() {
            wanted.push("any agent".into());
        }
        return Err(ScheduleError::NoAgent(format!(
            "no connected agent has what the sweep asks for ({}); connected agents: {}",
            wanted.join("; "),
            described.join("; ")
        )));
    }
    // The torch and vLLM backends run on a GPU: they go to the matching agents that have one (every point
    // would fail on the others), and are refused now where none has, or where the sweep names a host by
    // name that has none (it asked for that host: leaving it out without a word would run less than asked).
    let selected = agents;
    let agents = dispatch::matching_agents(coord, &spec);
    if let Some(b @ (SpecBackend::Torch(_) | SpecBackend::Vllm(_))) = &spec.backend {
        let name = if matches!(b, SpecBackend::Torch(_)) { "torch" } else { "vllm" };
        if agents.is_empty() {
            return Err(ScheduleError::NoAgent(format!(
                "the {name} backend needs a GPU, and no matching agent reports one; connected agents: {}",
                described.join("; ")
            )));
        }
        let named_without: Vec<&str> =
            selected.iter().filter(|a| !spec.agents.is_empty() && !agents.contains(a)).map(String::as_str).collect();
        if !named_without.is_empty() {
            return Err(ScheduleError::NoAgent(format!(
                "the {name} backend needs a GPU, and the sweep names hosts that report none ({}); take them out \
                 of [agents] hosts; connected agents: {}",
                named_without.join(", "),
                described.join("; ")
            )));
        }
    }
    let id = format!("sw{:x}{:02}", now_ms(), coord.next_id() % 100);
    // Each agent runs one job per GPU (per `tensor_parallel` GPUs; at least one): a sweep uses all of a
    // host's GPUs that its selector matches.
    let slots: Vec<(String, usize)> = {
        let conns = coord.agents();
        let slots_of = |c: &crate::state::AgentConn| dispatch::job_slots(&spec, c).max(1);
        agents.iter().map(|a| (a.clone(), conns.get(a).map_or(1, slots_of))).collect()
    };
    let jobs = super::plan(&id, &spec, &slots, placement);
    let rows: Vec<JobRow> = jobs
        .iter()
        .map(|(agent, assign)| JobRow {
            id: assign.job_id.clone(),
            sweep_id: id.clone(),
            agent: agent.clone(),
            assign: assign.encode_to_vec(),
            state: JobState::Assigned,
            error: String::new(),
        })
        .collect();
    let sweep = SweepRow {
        id: id.clone(),
        name: spec.name.clone(),
        spec: spec.encode_to_vec(),
        state: SweepState::Running,
        created_ms: now_ms(),
        finished_ms: 0,
    };
    coord.store().insert_sweep(&sweep, &rows)?;
    for (agent, assign) in &jobs {
        coord.publish(SweepEvent {
            sweep_id: id.clone(),
            kind: SweepEventKind::Assigned.into(),
            agent: agent.clone(),
            job_id: assign.job_id.clone(),
            message: format!("{} points", assign.points.len()),
            ..Default::default()
        });
    }
    for agent in jobs.iter().map(|(a, _)| a).collect::<std::collections::BTreeSet<_>>() {
        dispatch::send_assignments(coord, agent)?;
    }
    Ok(id)
}

/// Cancels every unfinished job of sweep `id` and tells their agents; the sweep ends once what was
/// already uploaded is parsed (`parse::complete_if_done`).
pub fn cancel(coord: &Coordinator, id: &str) -> Result<(), ScheduleError> {
    let jobs = coord.store().jobs_of_sweep(id)?;
    if coord.store().sweep(id)?.is_none() {
        return Err(ScheduleError::NotFound(format!("unknown sweep {id:?}")));
    }
    for j in jobs.iter().filter(|j| !j.terminal()) {
        let ended = coord.store().end_job(&j.id, JobState::Cancelled, "cancelled by the user")?;
        if let Some(a) = coord.agents().get(&j.agent).filter(|_| ended) {
            let cancel = tracefleet_proto::v1::CancelJob { job_id: j.id.clone(), reason: "sweep cancelled".into() };
            let msg = tracefleet_proto::v1::CoordinatorMessage {
                msg: Some(tracefleet_proto::v1::coordinator_message::Msg::Cancel(cancel)),
            };
            let _ = a.tx.try_send(msg);
        }
    }
    Ok(())
}
