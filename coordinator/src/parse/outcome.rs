//! What became of each point of a sweep: done, failed, missing or still pending, with why. The sweep's
//! status counts these, its manifest lists them (`point_status`), and `coord sweep` fails when any point
//! did not give data, so a sweep with failed points is never reported as a success.

use std::collections::BTreeMap;

use serde::Serialize;
use tracefleet_proto::decode_stored;
use tracefleet_proto::v1::AssignJob;

use crate::store::{JobRow, JobState, PointFailure, UploadRow};

/// How many traces a point of the sweep gives when it runs to its end: one per profiled step (torch,
/// command), or one per rank (vLLM: each rank's trace holds all the profiled steps); `None` for replay,
/// which plays what its folder holds for the batch size, whatever the profile steps.
pub fn traces_per_point(spec: Option<&tracefleet_proto::v1::SweepSpec>, profile_steps: u32) -> Option<u32> {
    use tracefleet_proto::v1::sweep_spec::Backend;
    match spec.and_then(|s| s.backend.as_ref()) {
        Some(Backend::Vllm(v)) => Some(v.tensor_parallel.max(1)),
        Some(Backend::Replay(_)) => None,
        _ => Some(profile_steps.max(1)),
    }
}

/// Where a point stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PointState {
    /// At least one of its traces was read.
    Done,
    /// It failed for the last time (after its retries), or the job holding it failed.
    Failed,
    /// Its job ended, but no trace of it could be read (none written, or every one refused).
    Missing,
    /// Its job has not ended.
    Pending,
}

impl PointState {
    /// As `manifest.json` writes it.
    pub fn name(self) -> &'static str {
        match self {
            PointState::Done => "done",
            PointState::Failed => "failed",
            PointState::Missing => "missing",
            PointState::Pending => "pending",
        }
    }
}

/// One point on one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointOutcome {
    /// The point's id.
    pub point: String,
    /// The agent that ran it last.
    pub agent: String,
    /// Where it stands.
    pub state: PointState,
    /// Runs that failed (0 when it never failed).
    pub attempts: u32,
    /// Traces read.
    pub traces: u32,
    /// Why it failed or is missing; the refused traces' reasons; empty when done.
    pub error: String,
}

/// The outcomes of a sweep's points, from its jobs, uploads and point failures, a point giving `per_point`
/// traces when it runs to its end ([`traces_per_point`]); a point failed for the last time after `1 + retries` failed runs. A point is one outcome
/// (judged by its last run, wherever a retry or a lost agent moved it), or with `each` one per agent.
/// Ordered by point (runs of digits by value: batch 2 before batch 16), agent.
pub fn outcomes(
    jobs: &[JobRow],
    uploads: &[UploadRow],
    failures: &[PointFailure],
    retries: u32,
    each: bool,
    per_point: Option<u32>,
) -> Vec<PointOutcome> {
    // Job ids are `{sweep}-j{n}`: by length, then text, is the order they were made in.
    // A moved job (a lost agent's) still holds the points it finished; the ones it did not are in a later
    // job, which overrides it below.
    let mut ordered: Vec<&JobRow> = jobs.iter().collect();
    ordered.sort_by(|a, b| (a.id.len(), &a.id).cmp(&(b.id.len(), &b.id)));
    let mut runs: BTreeMap<(String, String), &JobRow> = BTreeMap::new();
    for j in ordered {
        let Ok(a) = decode_stored::<AssignJob>(&j.assign) else { continue };
        for p in a.points {
            let agent = if each { j.agent.clone() } else { String::new() };
            runs.insert((p.point_id, agent), j);
        }
    }
    // By point and host for `each` (a point's failures on one host are not another's), by point otherwise.
    let failed: BTreeMap<(&str, &str), (u32, &str)> =
        failures.iter().map(|f| ((f.point.as_str(), f.host.as_str()), (f.attempts, f.error.as_str()))).collect();
    let mut read: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    // Complete traces, read or refused: what a point gave, against what it gives when it runs to its end.
    let mut complete: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut refused: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for u in uploads.iter().filter(|u| u.complete && !u.superseded) {
        let k = (u.key.point_id.as_str(), u.key.host.as_str());
        *complete.entry(k).or_default() += 1;
        if !u.parse_error.is_empty() {
            refused.entry(k).or_default().push(&u.parse_error);
        } else if u.parsed {
            *read.entry(k).or_default() += 1;
        }
    }
    let mut outcomes: Vec<PointOutcome> = runs
        .into_iter()
        .map(|((point, series), job)| {
            let agent = job.agent.clone();
            let traces = read.get(&(point.as_str(), agent.as_str())).copied().unwrap_or(0);
            // Failures an older coordinator recorded for an `each` sweep have no host (counted over all
            // hosts): they stand for a host only where the point gave no trace.
            let (attempts, last_error) = failed
                .get(&(point.as_str(), series.as_str()))
                .or_else(|| failed.get(&(point.as_str(), "")).filter(|_| traces == 0))
                .copied()
                .unwrap_or((0, ""));
            let gave = complete.get(&(point.as_str(), agent.as_str())).copied().unwrap_or(0);
            let refusals = refused.get(&(point.as_str(), agent.as_str())).map(|r| r.join("; ")).unwrap_or_default();
            // A point its failed job left with fewer traces than a point gives was cut short by the
            // failure: failed, not done (before, its job's failure showed nowhere in the outcome).
            let cut_short = job.state == JobState::Failed && per_point.is_some_and(|n| gave < n);
            let (state, error) = if attempts > retries {
                (PointState::Failed, last_error.to_string())
            } else if traces > 0 && !cut_short {
                (PointState::Done, refusals)
            } else if job.state == JobState::Failed && traces > 0 {
                let of = per_point.unwrap_or(gave);
                (PointState::Failed, format!("its job failed after {gave} of {of} traces: {}", headline(&job.error)))
            } else if job.state == JobState::Failed {
                (PointState::Failed, headline(&job.error))
            } else if job.state.terminal() && attempts > 0 {
                // It failed and could not be run again (no agent could take it).
                (PointState::Failed, last_error.to_string())
            } else if job.state.terminal() {
                let why = if refusals.is_empty() {
                    format!("job {} ended ({}) without a trace of it", job.id, job.state)
                } else {
                    format!("every trace was refused: {refusals}")
                };
                (PointState::Missing, why)
            } else {
                (PointState::Pending, String::new())
            };
            PointOutcome { point, agent, state, attempts, traces, error }
        })
        .collect();
    outcomes.sort_by_cached_key(|o| (natural_key(&o.point), o.agent.clone()));
    outcomes
}

/// A key that orders the runs of digits in `s` by their value: `bs2` before `bs16`.
fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((std::mem::take(&mut text), digits.parse().unwrap_or(u64::MAX)));
                digits.clear();
            }
            text.push(c);
        }
    }
    key.push((text, if digits.is_empty() { 0 } else { digits.parse().unwrap_or(u64::MAX) }));
    key
}

/// Where a workload's error ends and its stderr tail starts, as the coordinator joins them.
pub const STDERR_TAIL: &str = "\n--- stderr (tail) ---\n";

/// A workload's error in one line: its first line and, when the error carries the workload's stderr tail,
/// that tail's last line (a Python traceback's exception: `ModuleNotFoundError: No module named 'torch'`),
/// which says why where "exited with exit status: 1" does not.
pub fn headline(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    // The last exception line (`NameError: ...`, `torch.OutOfMemoryError: ...`) where there is one: the
    // lines after it are often shutdown noise (NCCL's warnings), not the cause. Else the last line.
    let lines: Vec<&str> = s
        .split_once(STDERR_TAIL)
        .map(|(_, tail)| tail.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default();
    let last = lines.iter().rev().find(|l| is_exception(l)).or(lines.last()).copied();
    match last {
        Some(last) if last != first => format!("{first}: {last}"),
        _ => first.to_string(),
    }
}

/// Whether a line is Python's report of an exception: `Name: message` or `Name` alone, the name a dotted
/// identifier ending in `Error`, `Exception`, `Interrupt` or `Exit`.
fn is_exception(line: &str) -> bool {
    let name = line.split_once(':').map_or(line, |(name, _)| name);
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && ["Error", "Exception", "Interrupt", "Exit"].iter().any(|end| name.ends_with(end))
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use tracefleet_proto::v1::Point;

    use super::*;
    use crate::store::UploadKey;

    #[test]
    fn points_are_in_the_order_of_their_numbers() {
        let mut ids =
            ["decode-bs16-in128", "decode-bs2-in128-r2", "decode-bs128-in128", "decode-bs2-in128", "decode-bs2-in64"];
        ids.sort_by_cached_key(|p| natural_key(p));
        assert_eq!(
            ids,
            ["decode-bs2-in64", "decode-bs2-in128", "decode-bs2-in128-r2", "decode-bs16-in128", "decode-bs128-in128"]
        );
    }

    #[test]
    fn a_workloads_error_in_one_line_says_why_it_exited() {
        let e = format!(
            "torch driver exited with exit status: 1{STDERR_TAIL}Traceback (most recent call last):\n  File \"d.py\", \
             line 132, in run_job\n    import torch\nModuleNotFoundError: No module named 'torch'\n"
        );
        assert_eq!(
            headline(&e),
            "torch driver exited with exit status: 1: ModuleNotFoundError: No module named 'torch'"
        );
        assert_eq!(headline("refused: no GPU\nmore"), "refused: no GPU");
        assert_eq!(headline(&format!("x{STDERR_TAIL}\n  \n")), "x", "an empty tail");
        // Shutdown noise after the exception: the exception.
        let e = format!(
            "vllm driver exited with exit status: 1{STDERR_TAIL}Traceback (most recent call last):\n  ...\n\
             torch.OutOfMemoryError: CUDA out of memory.\n[rank0]:[W1201 ProcessGroupNCCL.cpp:1479] Warning: \
             WARNING: destroy_process_group() was not called before program exit\n"
        );
        assert_eq!(headline(&e), "vllm driver exited with exit status: 1: torch.OutOfMemoryError: CUDA out of memory.");
        assert_eq!(headline(&format!("x{STDERR_TAIL}model not found\n")), "x: model not found", "no exception");
        assert_eq!(headline(""), "");
    }

    fn job(id: &str, agent: &str, points: &[&str], state: JobState, error: &str) -> JobRow {
        let a = AssignJob {
            job_id: id.into(),
            points: points.iter().map(|p| Point { point_id: p.to_string(), ..Default::default() }).collect(),
            ..Default::default()
        };
        JobRow {
            id: id.into(),
            sweep_id: "s".into(),
            agent: agent.into(),
            assign: a.encode_to_vec(),
            state,
            error: error.into(),
        }
    }

    fn upload(point: &str, host: &str, name: &str, parse_error: &str) -> UploadRow {
        UploadRow {
            key: UploadKey { sweep_id: "s".into(), point_id: point.into(), host: host.into(), trace_name: name.into() },
            raw_size: 1,
            gpu: String::new(),
            committed_raw: 1,
            stored_bytes: 1,
            complete: true,
            sha256: String::new(),
            parsed: true,
            telemetry: None,
            superseded: false,
            parse_error: parse_error.into(),
        }
    }

    fn failure(point: &str, host: &str, attempts: u32, error: &str) -> PointFailure {
        PointFailure { point: point.into(), host: host.into(), attempts, error: error.into() }
    }

    #[test]
    fn a_vllm_point_gives_a_trace_per_rank_and_the_others_one_per_profiled_step() {
        use tracefleet_proto::v1::sweep_spec::Backend;
        use tracefleet_proto::v1::{TorchBackend, VllmBackend};
        let spec = |b: Backend| tracefleet_proto::v1::SweepSpec { backend: Some(b), ..Default::default() };
        let vllm = |tp: u32| spec(Backend::Vllm(VllmBackend { tensor_parallel: tp, ..Default::default() }));
        assert_eq!(super::traces_per_point(Some(&vllm(4)), 3), Some(4));
        assert_eq!(super::traces_per_point(Some(&vllm(0)), 3), Some(1), "tensor_parallel unset: one rank");
        assert_eq!(super::traces_per_point(Some(&spec(Backend::Torch(TorchBackend::default()))), 3), Some(3));
        assert_eq!(super::traces_per_point(None, 3), Some(3));
        let replay = spec(Backend::Replay(Default::default()));
        assert_eq!(super::traces_per_point(Some(&replay), 3), None, "replay: what its folder holds");
    }

    #[test]
    fn a_point_its_failed_job_cut_short_is_failed_and_one_it_finished_is_done() {
        // Three traces a point; the driver died during "cut", after one of its traces.
        let jobs = [job(
            "s-j0",
            "a",
            &["whole", "cut", "refused"],
            JobState::Failed,
            "driver exited with 1\n--- stderr ---\nboom",
        )];
        let uploads = [
            upload("whole", "a", "t0.json", ""),
            upload("whole", "a", "t1.json", ""),
            upload("whole", "a", "t2.json", ""),
            upload("cut", "a", "t0.json", ""),
            // All three given, one refused: not cut short.
            upload("refused", "a", "t0.json", ""),
            upload("refused", "a", "t1.json", ""),
            upload("refused", "a", "t2.json", "t2.json at byte 0: empty file"),
        ];
        let got: Vec<(String, PointState, String)> = outcomes(&jobs, &uploads, &[], 2, false, Some(3))
            .into_iter()
            .map(|o| (o.point, o.state, o.error))
            .collect();
        let want = [
            ("whole", PointState::Done, ""),
            ("cut", PointState::Failed, "its job failed after 1 of 3 traces: driver exited with 1"),
            ("refused", PointState::Done, "t2.json at byte 0: empty file"),
        ];
        let mut want: Vec<(String, PointState, String)> =
            want.iter().map(|(p, s, e)| (p.to_string(), *s, e.to_string())).collect();
        want.sort_by_cached_key(|w| natural_key(&w.0));
        assert_eq!(got, want);
    }

    #[test]
    fn an_each_sweeps_point_failed_on_one_host_is_not_failed_on_another() {
        // Both hosts ran p; on a it failed three times (two retries, there), on b it gave a trace.
        let jobs = [
            job("s-j0", "a", &["p"], JobState::Done, ""),
            job("s-j1", "b", &["p"], JobState::Done, ""),
            job("s-j2", "a", &["p"], JobState::Done, ""),
            job("s-j3", "a", &["p"], JobState::Done, ""),
        ];
        let uploads = [upload("p", "b", "t0.json", "")];
        let failures = [failure("p", "a", 3, "out of memory")];
        let run = |failures: &[PointFailure]| -> Vec<(String, String, PointState, u32)> {
            outcomes(&jobs, &uploads, failures, 2, true, Some(1))
                .into_iter()
                .map(|o| (o.point, o.agent, o.state, o.attempts))
                .collect()
        };
        let want = [("p", "a", PointState::Failed, 3), ("p", "b", PointState::Done, 0)];
        let want = want.map(|(p, a, s, n)| (p.to_string(), a.to_string(), s, n));
        assert_eq!(run(&failures), want);
        // As an older coordinator recorded them, without the host: the same where the point gave nothing.
        assert_eq!(run(&[failure("p", "", 3, "out of memory")]), want);
    }

    #[test]
    fn every_point_is_done_failed_missing_or_pending_with_why() {
        let jobs = [
            job("s-j0", "a", &["ok", "retried", "gave_up", "empty", "refused"], JobState::Done, ""),
            job("s-j1", "b", &["crashed"], JobState::Failed, "driver exited with 1\n--- stderr ---\nboom"),
            job("s-j2", "b", &["waiting"], JobState::Assigned, ""),
            // "retried" failed on a and ran again on b.
            job("s-j10", "b", &["retried"], JobState::Done, ""),
            // Agent c was lost after "kept"; "moved" went on to b.
            job("s-j11", "c", &["kept", "moved"], JobState::Reassigned, "agent c lost"),
            job("s-j12", "b", &["moved"], JobState::Done, ""),
        ];
        let uploads = [
            upload("ok", "a", "t0.json", ""),
            upload("retried", "b", "t0.json", ""),
            upload("kept", "c", "t0.json", ""),
            upload("moved", "b", "t0.json", ""),
            upload("refused", "a", "t0.json", "t0.json: not a Kineto trace (no traceEvents): a JSON object"),
        ];
        let failures = [failure("retried", "", 1, "oom"), failure("gave_up", "", 3, "oom again")];
        let got: Vec<(String, PointState, String)> = outcomes(&jobs, &uploads, &failures, 2, false, Some(1))
            .into_iter()
            .map(|o| (o.point, o.state, o.error))
            .collect();
        let want = [
            ("crashed", PointState::Failed, "driver exited with 1"),
            ("empty", PointState::Missing, "job s-j0 ended (done) without a trace of it"),
            ("gave_up", PointState::Failed, "oom again"),
            ("kept", PointState::Done, ""),
            ("moved", PointState::Done, ""),
            ("ok", PointState::Done, ""),
            (
                "refused",
                PointState::Missing,
                "every trace was refused: t0.json: not a Kineto trace (no traceEvents): a JSON object",
            ),
            ("retried", PointState::Done, ""),
            ("waiting", PointState::Pending, ""),
        ];
        let want: Vec<(String, PointState, String)> =
            want.iter().map(|(p, s, e)| (p.to_string(), *s, e.to_string())).collect();
        assert_eq!(got, want);
    }
}
