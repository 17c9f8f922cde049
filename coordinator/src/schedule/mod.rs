//! Points → jobs → agents. One job per GPU slot of an agent holds all the points that slot gets, so one
//! warm engine serves many points and an agent with several GPUs runs a sweep on all of them at once;
//! points go largest first so the longest work starts earliest. `dispatch` hands jobs out as agents have
//! room, retries failed points and moves the work of lost agents.

mod capacity;
pub mod dispatch;
mod submit;

pub use submit::{cancel, submit};

/// What can go wrong while scheduling: the state store, or a stored assignment that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A stored assignment does not decode.
    #[error("decoding a stored assignment: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The request cannot be carried out as given (a sweep without points, say).
    #[error("{0}")]
    Invalid(String),
    /// No connected agent matches a sweep's selector.
    #[error("{0}")]
    NoAgent(String),
    /// No such sweep.
    #[error("{0}")]
    NotFound(String),
}

use tracefleet_common::sweep::Placement;
use tracefleet_proto::v1::assign_job::Backend as JobBackend;
use tracefleet_proto::v1::sweep_spec::Backend as SpecBackend;
use tracefleet_proto::v1::{AssignJob, Mode, Point, SweepSpec};

/// Work of a point, for ordering: batch size times tokens per sequence.
fn weight(p: &Point) -> u64 {
    let tokens = if p.mode() == Mode::Prefill { p.input_len.max(1) } else { 1 };
    u64::from(p.batch_size) * u64::from(tokens)
}

/// GPUs one job of the sweep holds: its vLLM tensor-parallel size, else 1.
pub fn gpus_per_job(spec: &SweepSpec) -> usize {
    match &spec.backend {
        Some(SpecBackend::Vllm(v)) => v.tensor_parallel.max(1) as usize,
        _ => 1,
    }
}

/// GPUs a job holds (see [`gpus_per_job`]).
pub fn job_gpus(job: &AssignJob) -> usize {
    match &job.backend {
        Some(JobBackend::Vllm(v)) => v.tensor_parallel.max(1) as usize,
        _ => 1,
    }
}

/// The job backend of a sweep's backend.
pub fn job_backend(spec: &SweepSpec) -> Option<JobBackend> {
    Some(match spec.backend.clone()? {
        SpecBackend::Replay(r) => JobBackend::Replay(r),
        SpecBackend::Torch(t) => JobBackend::Torch(t),
        SpecBackend::Vllm(v) => JobBackend::Vllm(v),
        SpecBackend::Command(c) => JobBackend::Command(c),
    })
}

/// The jobs of a sweep: (agent, assignment). `agents` is sorted and not empty: each agent's name and
/// its GPU slots (its GPUs, at least 1), i.e. how many jobs it runs at once. Each slot gets at most one
/// job of the sweep; `Spread` gives every point to one slot of one agent (balanced by work), `Each` gives
/// every point to every agent, spread over that agent's slots.
pub fn plan(
    sweep_id: &str,
    spec: &SweepSpec,
    agents: &[(String, usize)],
    placement: Placement,
) -> Vec<(String, AssignJob)> {
    let mut points = spec.points.clone();
    points.sort_by(|a, b| weight(b).cmp(&weight(a)).then_with(|| a.point_id.cmp(&b.point_id)));
    // Bins: (agent index, points), one per slot.
    let bins_of = |agents: &[(usize, usize)]| -> Vec<(usize, Vec<Point>)> {
        agents.iter().flat_map(|&(a, slots)| (0..slots.max(1)).map(move |_| (a, Vec::new()))).collect()
    };
    let spread = |bins: &mut Vec<(usize, Vec<Point>)>, points: &[Point]| {
        // Greedy: each point (largest first) to the bin with the least work so far.
        let mut load = vec![0u64; bins.len()];
        for p in points {
            let i = (0..bins.len()).min_by_key(|&i| (load[i], i)).unwrap_or(0);
            load[i] += weight(p).max(1);
            bins[i].1.push(p.clone());
        }
    };
    let indexed: Vec<(usize, usize)> = agents.iter().enumerate().map(|(i, (_, slots))| (i, *slots)).collect();
    let bins = match placement {
        Placement::Spread => {
            let mut bins = bins_of(&indexed);
            spread(&mut bins, &points);
            bins
        }
        Placement::Each => indexed
            .iter()
            .flat_map(|&agent| {
                let mut bins = bins_of(&[agent]);
                spread(&mut bins, &points);
                bins
            })
            .collect(),
    };
    bins.into_iter()
        .filter(|(_, pts)| !pts.is_empty())
        .enumerate()
        .map(|(k, (a, pts))| {
            (
                agents[a].0.clone(),
                AssignJob {
                    job_id: format!("{sweep_id}-j{k}"),
                    sweep_id: sweep_id.to_string(),
                    points: pts,
                    profile_steps: spec.profile_steps,
                    warmup_steps: spec.warmup_steps,
                    profiler: spec.profiler,
                    gpu: spec.gpu,
                    gpu_glob: spec.gpu_glob.clone(),
                    backend: job_backend(spec),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(bs: u32) -> Point {
        Point {
            point_id: format!("bs{bs}"),
            mode: Mode::Decode.into(),
            batch_size: bs,
            input_len: 128,
            output_len: 0,
            ..Default::default()
        }
    }

    #[test]
    fn spread_gives_each_point_once_and_balances() {
        let spec = SweepSpec { points: [1, 8, 32, 128, 2, 4].map(point).to_vec(), ..Default::default() };
        let agents: Vec<(String, usize)> = ["a", "b", "c"].map(|a| (a.to_string(), 1)).to_vec();
        let jobs = plan("s", &spec, &agents, Placement::Spread);
        let mut all: Vec<String> = jobs.iter().flat_map(|(_, j)| j.points.iter().map(|p| p.point_id.clone())).collect();
        all.sort();
        assert_eq!(all, ["bs1", "bs128", "bs2", "bs32", "bs4", "bs8"]);
        assert_eq!(jobs.len(), 3);
        // The largest point is first on its agent and alone with the smallest remaining work.
        assert_eq!(jobs[0].1.points[0].point_id, "bs128");
    }

    #[test]
    fn each_puts_every_point_everywhere() {
        let spec = SweepSpec { points: [1, 8].map(point).to_vec(), ..Default::default() };
        let agents: Vec<(String, usize)> = ["a", "b"].map(|a| (a.to_string(), 1)).to_vec();
        let jobs = plan("s", &spec, &agents, Placement::Each);
        assert_eq!(jobs.len(), 2);
        assert!(jobs.iter().all(|(_, j)| j.points.len() == 2));
    }

    #[test]
    fn an_agent_with_several_gpus_gets_one_job_per_gpu() {
        // 16 decode points on one agent with 2 GPUs: two jobs, every point once, balanced by work.
        let sizes = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256];
        let spec = SweepSpec { points: sizes.map(point).to_vec(), ..Default::default() };
        let jobs = plan("s", &spec, &[("gpu-host".to_string(), 2)], Placement::Spread);
        assert_eq!(jobs.len(), 2);
        assert!(jobs.iter().all(|(a, _)| a == "gpu-host"));
        assert_eq!(jobs.iter().map(|(_, j)| j.job_id.as_str()).collect::<Vec<_>>(), ["s-j0", "s-j1"]);
        let work = |j: &AssignJob| j.points.iter().map(weight).sum::<u64>();
        let (a, b) = (work(&jobs[0].1), work(&jobs[1].1));
        assert_eq!(a + b, sizes.iter().map(|&s| s as u64).sum::<u64>());
        assert!(a.abs_diff(b) <= 16, "balanced: {a} vs {b}");
        // Fewer points than slots: no empty job. `Each` with 2 agents of 2 GPUs: each point once per agent.
        let one = SweepSpec { points: vec![point(8)], ..Default::default() };
        assert_eq!(plan("s", &one, &[("h".to_string(), 4)], Placement::Spread).len(), 1);
        let two = SweepSpec { points: [1, 8, 32].map(point).to_vec(), ..Default::default() };
        let jobs = plan("s", &two, &[("a".to_string(), 2), ("b".to_string(), 2)], Placement::Each);
        assert_eq!(jobs.len(), 4);
        for agent in ["a", "b"] {
            let mut got: Vec<u32> = jobs
                .iter()
                .filter(|(a, _)| a == agent)
                .flat_map(|(_, j)| j.points.iter().map(|p| p.batch_size))
                .collect();
            got.sort_unstable();
            assert_eq!(got, [1, 8, 32], "{agent}");
        }
    }
}
