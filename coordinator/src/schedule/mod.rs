//! Points → jobs → agents. One job per agent holds all of that agent's points, so one warm engine serves
//! many points; points go largest first so the longest work starts earliest. `dispatch` hands jobs out as
//! agents have room, retries failed points and moves the work of lost agents.

pub mod dispatch;

use tracefleet_proto::v1::assign_job::Backend as JobBackend;
use tracefleet_proto::v1::sweep_spec::Backend as SpecBackend;
use tracefleet_proto::v1::{AssignJob, Point, SweepSpec};

/// How points are spread over agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Each point once, over all matching agents.
    Spread,
    /// Every point on every matching agent.
    Each,
}

/// Work of a point, for ordering: batch size times tokens per sequence.
fn weight(p: &Point) -> u64 {
    let tokens = if p.mode == "prefill" { p.input_len.max(1) } else { 1 };
    u64::from(p.batch_size) * u64::from(tokens)
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

/// The jobs of a sweep: (agent, assignment). `agents` is sorted and not empty.
pub fn plan(sweep_id: &str, spec: &SweepSpec, agents: &[String], placement: Placement) -> Vec<(String, AssignJob)> {
    let mut points = spec.points.clone();
    points.sort_by(|a, b| weight(b).cmp(&weight(a)).then_with(|| a.point_id.cmp(&b.point_id)));
    let mut per_agent: Vec<Vec<Point>> = vec![Vec::new(); agents.len()];
    match placement {
        Placement::Each => {
            for v in &mut per_agent {
                *v = points.clone();
            }
        }
        Placement::Spread => {
            // Greedy: each point (largest first) to the agent with the least work so far.
            let mut load = vec![0u64; agents.len()];
            for p in points {
                let i = (0..agents.len()).min_by_key(|&i| (load[i], i)).unwrap_or(0);
                load[i] += weight(&p).max(1);
                per_agent[i].push(p);
            }
        }
    }
    agents
        .iter()
        .zip(per_agent)
        .filter(|(_, pts)| !pts.is_empty())
        .enumerate()
        .map(|(k, (agent, pts))| {
            (
                agent.clone(),
                AssignJob {
                    job_id: format!("{sweep_id}-j{k}"),
                    sweep_id: sweep_id.to_string(),
                    points: pts,
                    profile_steps: spec.profile_steps,
                    warmup_steps: spec.warmup_steps,
                    profiler: spec.profiler,
                    gpu: spec.gpu,
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
        Point { point_id: format!("bs{bs}"), mode: "decode".into(), batch_size: bs, input_len: 128, output_len: 0 }
    }

    #[test]
    fn spread_gives_each_point_once_and_balances() {
        let spec = SweepSpec { points: [1, 8, 32, 128, 2, 4].map(point).to_vec(), ..Default::default() };
        let agents: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
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
        let agents: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let jobs = plan("s", &spec, &agents, Placement::Each);
        assert_eq!(jobs.len(), 2);
        assert!(jobs.iter().all(|(_, j)| j.points.len() == 2));
    }
}
