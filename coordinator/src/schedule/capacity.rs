//! Which of an agent's GPUs the jobs sent to it hold, GPU by GPU, so that the coordinator sends a job only
//! when GPUs of the kind its sweep selects are free.
//!
//! Counting GPUs alone is wrong on a host with GPUs of several kinds: two sweeps for its H100s would count
//! as filling a host of one H100 and one A100, and a sweep for the A100 would wait at the coordinator
//! while the A100 idles and the second H100 job waits at the agent. The rule here is the agent's own
//! (`acquire_gpus`): a job takes its GPUs among the free ones its selector matches, and a job that cannot
//! start holds back only the later jobs that could take the same GPUs, never those for other GPUs.

use tracefleet_common::glob::selects_gpu;
use tracefleet_proto::v1::{AssignJob, HostInventory};

/// One agent's GPUs while the coordinator decides what to send it.
#[derive(Debug)]
pub struct Capacity {
    /// GPU names, by position in the inventory; one unnamed slot for a host without GPUs, which runs one
    /// job at a time whatever its selector.
    names: Vec<Option<String>>,
    /// Held by a job sent already.
    held: Vec<bool>,
    /// Matched by a job that could not be sent: later jobs leave these to it.
    promised: Vec<bool>,
}

impl Capacity {
    /// All GPUs of `inventory` free.
    pub fn of(inventory: &HostInventory) -> Self {
        let names: Vec<Option<String>> = if inventory.gpus.is_empty() {
            vec![None]
        } else {
            inventory.gpus.iter().map(|g| Some(g.name.clone())).collect()
        };
        let n = names.len();
        Capacity { names, held: vec![false; n], promised: vec![false; n] }
    }

    /// Positions of the GPUs the job's selector matches (all for an empty one; none for a selector that
    /// does not compile, which the agent refuses with its reason).
    fn eligible(&self, job: &AssignJob) -> Vec<usize> {
        (0..self.names.len())
            .filter(|&i| match &self.names[i] {
                None => true,
                Some(name) => selects_gpu(&job.gpu_glob, name).unwrap_or(false),
            })
            .collect()
    }

    /// GPUs the job holds: its tensor-parallel size, at most the GPUs it may use (the agent refuses a job
    /// that needs more, saying so, which is better than it waiting here for ever), one on a host without GPUs.
    fn need(&self, job: &AssignJob, eligible: usize) -> usize {
        if self.names == [None] { 1 } else { super::job_gpus(job).min(eligible) }
    }

    /// Counts a job the agent has already: it holds its GPUs among the free ones it may use (as many as
    /// are free: where the coordinator's picture and the agent's differ, the agent's line sorts it out).
    pub fn hold(&mut self, job: &AssignJob) {
        let eligible = self.eligible(job);
        let need = self.need(job, eligible.len());
        let free: Vec<usize> = eligible.into_iter().filter(|&i| !self.held[i]).take(need).collect();
        for i in free {
            self.held[i] = true;
        }
    }

    /// Takes the GPUs for a job not yet sent, in the order jobs wait: true (GPUs held) when enough of
    /// those its selector matches are free and not left to an earlier job; false otherwise, and its GPUs
    /// are then left to it by the jobs after it.
    pub fn take(&mut self, job: &AssignJob) -> bool {
        let eligible = self.eligible(job);
        let need = self.need(job, eligible.len());
        let fit: Vec<usize> = eligible.iter().copied().filter(|&i| !self.held[i] && !self.promised[i]).collect();
        if fit.len() >= need {
            for &i in &fit[..need] {
                self.held[i] = true;
            }
            true
        } else {
            for i in eligible {
                self.promised[i] = true;
            }
            false
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
            gpus: gpus.iter().map(|n| GpuInfo { name: (*n).to_string(), ..Default::default() }).collect(),
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
