//! Which of an agent's GPUs the jobs sent to it hold, GPU by GPU, so that the coordinator sends a job only
//! when GPUs of the kind its sweep selects are free.
//!
//! Counting GPUs alone is wrong on a host with GPUs of several kinds: two sweeps for its H100s would count
//! as filling a host of one H100 and one A100, and a sweep for the A100 would wait at the coordinator
//! while the A100 idles and the second H100 job waits at the agent. A job's GPUs are the ones its agent
//! reported it holds (`JobProgress.gpus`, `Hello.job_gpus`); for a job that has not said yet (waiting for
//! GPUs at the agent, or an older agent) they are guessed with the agent's own rule. Jobs not sent yet
//! follow the agent's rule too (`acquire_gpus`): GPUs of one kind among the free ones its selector
//! matches ([`tracefleet_common::gpus::pick`]), and a job that cannot start holds back only the later
//! jobs that could take the same GPUs, never those for other GPUs.

use tracefleet_common::glob::selects_gpu;
use tracefleet_common::gpus::{most_of_one_kind, pick, usable};
use tracefleet_proto::v1::{AssignJob, HostInventory};

/// One agent's GPUs while the coordinator decides what to send it.
#[derive(Debug)]
pub struct Capacity {
    /// (index, name) of each GPU, in the inventory's order; one unnamed slot for a host without GPUs,
    /// which runs one job at a time whatever its selector.
    gpus: Vec<(u32, Option<String>)>,
    /// Held by a job sent already.
    held: Vec<bool>,
    /// Matched by a job that could not be sent: later jobs leave these to it.
    promised: Vec<bool>,
}

impl Capacity {
    /// All GPUs of `inventory` free.
    pub fn of(inventory: &HostInventory) -> Self {
        let gpus: Vec<(u32, Option<String>)> = if inventory.gpus.is_empty() {
            vec![(0, None)]
        } else {
            inventory.gpus.iter().map(|g| (g.index, Some(g.name.clone()))).collect()
        };
        let n = gpus.len();
        Capacity { gpus, held: vec![false; n], promised: vec![false; n] }
    }

    fn gpu_less(&self) -> bool {
        matches!(self.gpus[..], [(_, None)])
    }

    /// Positions of the GPUs the job's selector matches (all for an empty one; none for a selector that
    /// does not compile, which the agent refuses with its reason).
    fn eligible(&self, job: &AssignJob) -> Vec<usize> {
        (0..self.gpus.len())
            .filter(|&i| match &self.gpus[i].1 {
                None => true,
                Some(name) => selects_gpu(&job.gpu_glob, name).unwrap_or(false),
            })
            .collect()
    }

    fn name(&self, i: usize) -> &str {
        self.gpus[i].1.as_deref().unwrap_or("")
    }

    /// GPUs the job holds: its tensor-parallel size, at most the GPUs of one kind it may use (the agent
    /// refuses a job that needs more, saying so, which is better than it waiting here for ever), one on a
    /// host without GPUs.
    fn need(&self, job: &AssignJob, eligible: &[usize]) -> usize {
        if self.gpu_less() {
            1
        } else {
            super::job_gpus(job).min(most_of_one_kind(eligible.iter().map(|&i| self.name(i))))
        }
    }

    /// `n` GPUs of one kind among the positions `among`, as positions.
    fn pick(&self, among: &[usize], n: usize) -> Option<Vec<usize>> {
        let picked = pick(among.iter().map(|&i| (i as u32, self.name(i))), n)?;
        Some(picked.into_iter().map(|i| i as usize).collect())
    }

    /// Counts the GPUs a job the agent has already says it holds (GPU indexes; unknown ones are ignored).
    pub fn hold_reported(&mut self, gpus: &[u32]) {
        for (i, (index, _)) in self.gpus.iter().enumerate() {
            if gpus.contains(index) {
                self.held[i] = true;
            }
        }
    }

    /// Counts a job the agent has already whose GPUs it has not reported (it waits for them there, or the
    /// agent is older): it holds the GPUs it would take among the free ones it may use (as many as are
    /// free where it could not have all). Call after [`Self::hold_reported`] for the jobs that did report.
    pub fn hold(&mut self, job: &AssignJob) {
        let eligible = self.eligible(job);
        let need = self.need(job, &eligible);
        let free: Vec<usize> = eligible.into_iter().filter(|&i| !self.held[i]).collect();
        let taken = self.pick(&free, need).unwrap_or_else(|| free.into_iter().take(need).collect());
        for i in taken {
            self.held[i] = true;
        }
    }

    /// Takes the GPUs for a job not yet sent, in the order jobs wait: true (GPUs held) when enough of one
    /// kind among those its selector matches are free and not left to an earlier job; false otherwise,
    /// and its GPUs are then left to it by the jobs after it.
    pub fn take(&mut self, job: &AssignJob) -> bool {
        let eligible = self.eligible(job);
        let need = self.need(job, &eligible);
        // Only kinds with `need` GPUs can hold it: it waits for (and holds back) those alone.
        let eligible: Vec<usize> = if self.gpu_less() {
            eligible
        } else {
            usable(eligible.iter().map(|&i| (i as u32, self.name(i))), need).into_iter().map(|i| i as usize).collect()
        };
        let free: Vec<usize> = eligible.iter().copied().filter(|&i| !self.held[i] && !self.promised[i]).collect();
        match self.pick(&free, need) {
            Some(taken) => {
                for i in taken {
                    self.held[i] = true;
                }
                true
            }
            None => {
                for i in eligible {
                    self.promised[i] = true;
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracefleet_proto::v1::assign_job::Backend;
    use tracefleet_proto::v1::{CommandBackend, GpuInfo, VllmBackend};

    fn host(gpus: &[&str]) -> HostInventory {
        HostInventory {
            gpus: (0..)
                .zip(gpus)
                .map(|(index, n)| GpuInfo { index, name: (*n).to_string(), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn job(glob: &str, tp: u32) -> AssignJob {
        let backend = if tp > 1 {
            Backend::Vllm(VllmBackend { tensor_parallel: tp, ..Default::default() })
        } else {
            Backend::Command(CommandBackend::default())
        };
        AssignJob { gpu_glob: glob.into(), backend: Some(backend), ..Default::default() }
    }

    #[test]
    fn a_job_for_one_kind_does_not_wait_behind_jobs_for_another() {
        let mut c = Capacity::of(&host(&["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"]));
        assert!(c.take(&job("*H100*", 1)));
        assert!(!c.take(&job("*H100*", 1)), "the H100 is held");
        assert!(c.take(&job("*A100*", 1)), "the A100 is free, whatever waits for the H100");
        assert!(!c.take(&job("*A100*", 1)));
    }

    #[test]
    fn a_waiting_job_is_not_overtaken_by_a_later_one_for_the_same_gpus() {
        let mut c = Capacity::of(&host(&["H100", "H100", "H100"]));
        c.hold(&job("", 1));
        assert!(!c.take(&job("", 4)), "capped at the three it may use, and one is held");
        assert!(!c.take(&job("", 1)), "two are free, but left to the job before");
        let mut c = Capacity::of(&host(&["H100", "H100", "A100"]));
        c.hold(&job("H100", 1));
        assert!(!c.take(&job("H100", 2)));
        assert!(c.take(&job("A100", 1)));
    }

    #[test]
    fn the_gpus_an_agent_reports_are_the_ones_held() {
        // A job for any GPU runs on the H100 (the agent said so): the A100 is free for an A100 job, though
        // a guess would have put the first job on GPU 0.
        let mut c = Capacity::of(&host(&["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"]));
        c.hold_reported(&[1]);
        assert!(c.take(&job("*A100*", 1)));
        let mut c = Capacity::of(&host(&["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"]));
        c.hold(&job("", 1));
        assert!(!c.take(&job("*A100*", 1)), "unreported, the job is guessed on the lowest GPU");
    }

    #[test]
    fn a_tensor_parallel_job_takes_gpus_of_one_kind() {
        let mut c = Capacity::of(&host(&["A100", "A100", "H100", "H100"]));
        c.hold_reported(&[0]);
        assert!(c.take(&job("", 2)), "the two H100s, not the free A100 and an H100");
        assert!(c.take(&job("*A100*", 1)), "the A100 left free");
        assert!(!c.take(&job("", 1)));
        // Three free GPUs of three kinds hold no pair of one kind.
        let mut c = Capacity::of(&host(&["A100", "H100", "A100", "L4"]));
        c.hold_reported(&[2]);
        assert!(!c.take(&job("", 2)));
        let mut c = Capacity::of(&host(&["A100", "H100", "A100", "H100"]));
        assert!(c.take(&job("", 2)), "the A100s");
        assert!(c.take(&job("*H100*", 2)), "the H100s");
        // A pair waiting for the H100s does not hold the lone A100 back from a job for it.
        let mut c = Capacity::of(&host(&["A100", "H100", "H100"]));
        c.hold_reported(&[1]);
        assert!(!c.take(&job("", 2)));
        assert!(c.take(&job("*A100*", 1)));
    }

    #[test]
    fn a_host_without_gpus_runs_one_job_at_a_time_and_an_unmatched_job_is_sent_to_be_refused() {
        let mut c = Capacity::of(&host(&[]));
        assert!(c.take(&job("", 1)));
        assert!(!c.take(&job("", 1)));
        let mut c = Capacity::of(&host(&["A100"]));
        c.hold(&job("", 1));
        assert!(c.take(&job("*H100*", 1)), "no GPU it may use: the agent says why");
        assert!(c.take(&job("[", 1)), "a selector that does not compile: the agent says why");
    }
}
