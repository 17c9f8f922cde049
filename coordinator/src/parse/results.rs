//! A sweep's results: the tables of `coord ingest` (same writer), merged across batch sizes and machines,
//! plus `manifest.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use prost::Message;
use tracefleet_common::aggregate::{Aggregate, SeriesKey, mode_label};
use tracefleet_common::checks;
use tracefleet_common::summary::TraceSummary;
use tracefleet_common::sweep::Placement;
use tracefleet_common::tables;
use tracefleet_common::telemetry::StepTelemetry;
use tracefleet_proto::decode_stored;
use tracefleet_proto::v1::{AssignJob, HostInventory, SweepEvent, SweepSpec, SweepState};

use crate::state::Coordinator;
use crate::store::{JobState, now_ms};

/// Kernels and ops listed per series in the manifest's `others`.
const OTHERS_LISTED: usize = 10;

/// Ends the sweep if every job has ended and every uploaded trace is parsed: writes the results, then
/// marks the sweep completed (or failed when no job succeeded). Safe to call any time, from any thread.
pub fn complete_if_done(coord: &Arc<Coordinator>, sweep_id: &str) -> anyhow::Result<()> {
    let (sweep, jobs, uploads) = {
        let s = coord.store();
        let Some(sweep) = s.sweep(sweep_id)? else { return Ok(()) };
        (sweep, s.jobs_of_sweep(sweep_id)?, s.uploads_of_sweep(sweep_id)?)
    };
    if sweep.state != SweepState::Running || jobs.iter().any(|j| !j.terminal()) {
        return Ok(());
    }
    if uploads.iter().any(|u| u.complete && !u.parsed) {
        return Ok(());
    }
    if !coord.begin_completion(sweep_id) {
        return Ok(());
    }
    // Whatever happens below, the sweep can be completed again later.
    let _completing = Completing(coord, sweep_id);
    let r = match write_results(coord, sweep_id) {
        Err(e) if storage_full(&e) => {
            // Not the sweep's fault: it stays running and the results are written again once there is
            // room (the watchdog retries sweeps listed here).
            coord.results_pending(sweep_id, true);
            return Err(e.context("the disk is full; the results will be written again when there is room"));
        }
        r => r,
    };
    coord.results_pending(sweep_id, false);
    let spec: SweepSpec = decode_stored(&sweep.spec).unwrap_or_default();
    let each = spec.placement() == tracefleet_proto::v1::Placement::Each;
    let failures = coord.store().point_failures(sweep_id)?;
    let per_point = crate::parse::outcome::traces_per_point(Some(&spec), spec.profile_steps);
    let points = super::outcome::outcomes(&jobs, &uploads, &failures, coord.cfg.point_retries, each, per_point);
    let no_data = !points.iter().any(|p| p.state == super::outcome::PointState::Done);
    let state = if jobs.iter().any(|j| j.state == JobState::Cancelled) {
        SweepState::Cancelled
    } else if r.is_err() || no_data {
        SweepState::Failed
    } else {
        SweepState::Completed
    };
    if let Err(e) = coord.store().finish_sweep(sweep_id, state) {
        // The database could not record the end (a full disk): try again later.
        coord.results_pending(sweep_id, true);
        return Err(anyhow::Error::new(e).context("recording the sweep's end; it will be tried again"));
    }
    coord.publish(SweepEvent {
        sweep_id: sweep_id.to_string(),
        kind: state.end_event().unwrap_or_default().into(),
        message: match &r {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("{e:#}"),
        },
        ..Default::default()
    });
    r.map(|_| ())
}

/// Whether an error comes from a full disk or quota (ENOSPC, EDQUOT): the condition passes, so the work is
/// tried again rather than failed.
pub(crate) fn storage_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let sqlite_full = c
            .downcast_ref::<rusqlite::Error>()
            .is_some_and(|r| r.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull));
        let io_full = c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
                || matches!(io.raw_os_error(), Some(28 | 122)) // ENOSPC, EDQUOT on Linux
        });
        sqlite_full || io_full
    })
}

/// Ends a sweep's completion when dropped, however the completion went.
struct Completing<'a>(&'a Coordinator, &'a str);

impl Drop for Completing<'_> {
    fn drop(&mut self) {
        self.0.end_completion(self.1);
    }
}

/// The settings of the sweep's backend that shape what ran (a command backend's command included).
fn backend_settings(spec: &SweepSpec) -> serde_json::Value {
    use tracefleet_proto::v1::sweep_spec::Backend;
    match &spec.backend {
        Some(Backend::Vllm(v)) => serde_json::json!({
            "cuda_graphs": v.cuda_graphs,
            "dtype": if v.dtype.is_empty() { "auto" } else { &v.dtype },
            "max_model_len": v.max_model_len,
            "gpu_memory_utilization": v.gpu_memory_utilization,
            "tensor_parallel": v.tensor_parallel.max(1),
            "python": v.python,
        }),
        Some(Backend::Torch(t)) => serde_json::json!({
            "dtype": t.dtype, "attention": t.attention, "python": t.python,
        }),
        Some(Backend::Command(c)) => serde_json::json!({ "run": c.run }),
        Some(Backend::Replay(r)) => serde_json::json!({ "dir": r.dir, "delay_ms": r.delay_ms }),
        None => serde_json::Value::Null,
    }
}

/// A stored step telemetry (protobuf); `None` when it does not decode (it is informative, not essential).
fn telemetry_of(bytes: &[u8]) -> Option<StepTelemetry> {
    tracefleet_proto::v1::StepTelemetry::decode(bytes).ok().map(Into::into)
}

/// Writes the result files of a sweep from the stored summaries; returns the results folder.
fn write_results(coord: &Coordinator, sweep_id: &str) -> anyhow::Result<PathBuf> {
    let (sweep, jobs, agents, dir, data_dir, failures, uploads) = {
        let s = coord.store();
        let sweep = s.sweep(sweep_id)?.context("unknown sweep")?;
        let failures = s.point_failures(sweep_id)?;
        let uploads = s.uploads_of_sweep(sweep_id)?;
        let (jobs, agents) = (s.jobs_of_sweep(sweep_id)?, s.agents()?);
        (sweep, jobs, agents, s.results_dir(sweep_id), s.dir().to_path_buf(), failures, uploads)
    };
    let spec: SweepSpec = decode_stored(&sweep.spec).context("decoding the stored sweep spec")?;
    let each = Placement::from(spec.placement()) == Placement::Each;
    let gives = crate::parse::outcome::traces_per_point(Some(&spec), spec.profile_steps);
    let outcomes = super::outcome::outcomes(&jobs, &uploads, &failures, coord.cfg.point_retries, each, gives);
    drop(uploads);
    // A failed point gives no data: the traces its failed run left (a job that died partway) are listed,
    // not counted, so that the tables hold the points reported done and no others.
    let failed_points: std::collections::HashMap<(String, String), String> = outcomes
        .iter()
        .filter(|o| o.state == super::outcome::PointState::Failed)
        .map(|o| ((o.point.clone(), o.agent.clone()), super::outcome::headline(&o.error)))
        .collect();
    let points: BTreeMap<String, tracefleet_proto::v1::Point> =
        spec.points.iter().map(|p| (p.point_id.clone(), p.clone())).collect();

    // A tensor-parallel sweep's traces are its ranks' (their distributedInfo says which).
    let tensor_parallel = match &spec.backend {
        Some(tracefleet_proto::v1::sweep_spec::Backend::Vllm(v)) => v.tensor_parallel.max(1),
        _ => 1,
    };
    let mut agg = Aggregate::default();
    let mut per_point: BTreeMap<(String, String), Vec<serde_json::Value>> = BTreeMap::new();
    let mut throttled = Vec::new();
    // Traces with events not counted (`LeftOut`): a warning each, beside the tables' own.
    let mut left_out: Vec<serde_json::Value> = Vec::new();
    // Summaries are read one at a time: memory holds the aggregate, not the sweep's traces.
    crate::store::Store::for_each_summary(&data_dir, sweep_id, |u, json| {
        let Some(p) = points.get(&u.key.point_id) else { return Ok(()) };
        if !u.parse_error.is_empty() {
            // Refused: listed with its point and why, counted apart from the traces read (its summary is
            // empty, and it is in no table).
            per_point.entry((u.key.point_id.clone(), u.key.host.clone())).or_default().push(serde_json::json!({
                "trace": u.key.trace_name,
                "raw_bytes": u.raw_size,
                "sha256": u.sha256,
                "refused": u.parse_error,
            }));
            return Ok(());
        }
        if let Some(why) = failed_points.get(&(u.key.point_id.clone(), u.key.host.clone())) {
            per_point.entry((u.key.point_id.clone(), u.key.host.clone())).or_default().push(serde_json::json!({
                "trace": u.key.trace_name,
                "raw_bytes": u.raw_size,
                "sha256": u.sha256,
                "not_counted": format!("its point failed: {why}"),
            }));
            return Ok(());
        }
        let summary: TraceSummary = serde_json::from_slice(json).context("decoding a stored trace summary")?;
        let series = SeriesKey {
            host: u.key.host.clone(),
            gpu: if summary.gpu.is_empty() { u.gpu.clone() } else { summary.gpu.clone() },
            mode: p.mode().known(),
            batch_size: p.batch_size,
            input_len: p.input_len,
            tp: summary.world_size.filter(|&n| n > 1).unwrap_or(1).max(tensor_parallel),
            // Without distributedInfo, the rank the file name gives (vLLM names them rankN.*).
            rank: if summary.world_size.is_some_and(|n| n > 1) || tensor_parallel > 1 {
                summary.rank.or_else(|| tracefleet_common::layout::rank_hint(&u.key.trace_name)).unwrap_or(0)
            } else {
                0
            },
        };
        for st in &summary.steps {
            agg.add_step(&series, &u.key.trace_name, st);
        }
        let telemetry = u.telemetry.as_deref().and_then(telemetry_of);
        if let Some(t) = telemetry.as_ref().filter(|t| t.throttled()) {
            throttled.push(serde_json::json!({
                "point": u.key.point_id, "host": u.key.host, "trace": u.key.trace_name, "reasons": t.reason_names(),
            }));
        }
        if let Some(why) = summary.left_out.describe() {
            left_out.push(serde_json::json!({
                "kind": "left_out",
                "point": u.key.point_id,
                "host": u.key.host,
                "trace": u.key.trace_name,
                "message": format!("{}:{}: {why}", u.key.host, u.key.trace_name),
            }));
        }
        per_point.entry((u.key.point_id.clone(), u.key.host.clone())).or_default().push(serde_json::json!({
            "trace": u.key.trace_name,
            "raw_bytes": u.raw_size,
            "sha256": u.sha256,
            "steps": summary.steps.len(),
            "left_out": (!summary.left_out.is_empty()).then_some(&summary.left_out),
            "telemetry": telemetry.as_ref().map(|t| serde_json::json!({
                "samples": t.samples,
                "sm_clock_mhz": [t.sm_clock_mhz_min, t.sm_clock_mhz_max],
                "mem_clock_mhz": [t.mem_clock_mhz_min, t.mem_clock_mhz_max],
                "temperature_c_max": t.temperature_c_max,
                "power_w_mean": (t.power_w_mean * 10.0).round() / 10.0,
                "power_w_max": (t.power_w_max * 10.0).round() / 10.0,
                "throttle_reasons": t.reason_names(),
                "throttled": t.throttled(),
                "window_us": t.window_us.round(),
            })),
        }));
        if let Some(t) = telemetry {
            agg.add_telemetry(&series, &u.key.trace_name, t);
        }
        Ok(())
    })?;
    // Write into a fresh folder, then move it into place: readers never see half a result.
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    tables::write_results(&tmp, &agg, tables::Layout { per_host: each, ..Default::default() })
        .with_context(|| format!("writing {}", tmp.display()))?;

    let used: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j.agent.as_str()).collect();
    let agents_json: Vec<serde_json::Value> = agents
        .iter()
        .filter(|(name, _, _)| used.contains(name.as_str()))
        .map(|(name, inv, _)| {
            let inv = HostInventory::decode(&inv[..]).unwrap_or_default();
            let mut v = tracefleet_agent::inventory::to_json(&inv);
            v["name"] = name.as_str().into();
            v
        })
        .collect();
    let jobs_json: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            let a: AssignJob = decode_stored(&j.assign).unwrap_or_default();
            serde_json::json!({
                "job": j.id, "agent": j.agent, "state": j.state.as_str(), "error": j.error,
                "points": a.points.iter().map(|p| p.point_id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let points_json: Vec<serde_json::Value> = per_point
        .iter()
        .map(|((point, host), traces)| {
            let p = points.get(point);
            serde_json::json!({
                "point": point,
                "host": host,
                "mode": p.map(|p| mode_label::name(p.mode().known())),
                "batch_size": p.map(|p| p.batch_size),
                "input_len": p.map(|p| p.input_len),
                // Traces read, and refused (their files list why).
                "traces": traces.iter().filter(|t| t.get("refused").is_none() && t.get("not_counted").is_none()).count(),
                "refused": traces.iter().filter(|t| t.get("refused").is_some()).count(),
                "not_counted": traces.iter().filter(|t| t.get("not_counted").is_some()).count(),
                "files": traces,
            })
        })
        .collect();
    let mut warnings = serde_json::to_value(checks::warnings(&agg))?;
    if let Some(list) = warnings.as_array_mut() {
        list.extend(left_out);
    }
    let manifest = serde_json::json!({
        "sweep": {
            "id": sweep.id,
            "name": sweep.name,
            "placement": Placement::from(spec.placement()).name(),
            "profile_steps": spec.profile_steps,
            "points": spec.points.iter().map(|p| serde_json::json!({
                "point": p.point_id, "mode": mode_label::name(p.mode().known()), "batch_size": p.batch_size,
                "input_len": p.input_len, "output_len": p.output_len,
            })).collect::<Vec<_>>(),
            "source": spec.source,
            "mode": mode_label::name(spec.mode().known()),
            "backend": spec.backend_name,
            "backend_settings": backend_settings(&spec),
            "model": spec.model,
            "warmup_steps": spec.warmup_steps,
            "agent_selector": { "hosts": spec.agents, "gpu": spec.gpu_glob, "labels": spec.labels },
        },
        "versions": { "coordinator": env!("CARGO_PKG_VERSION") },
        "started_ms": sweep.created_ms,
        "finished_ms": now_ms(),
        "agents": agents_json,
        "jobs": jobs_json,
        "points": points_json,
        // Traces recorded while the GPU slowed itself down (power cap, thermal, hardware): their times are
        // not comparable with the others (steps.csv flags their rows too).
        "throttled_traces": throttled,
        // Steps the tables cannot be trusted for as they stand, and what `others` holds per series (kernels
        // and ops with the most time): a classification that does not fit a model shows here first.
        "warnings": warnings,
        "others": checks::others_listing(&agg, OTHERS_LISTED),
        // Every point (per agent under `each`): done, failed, missing (its job ended without a readable
        // trace) or pending, with the attempts and why.
        "point_status": outcomes,
        // `host` only for an `each` sweep's points, whose failures are counted per host.
        "point_failures": failures.iter().map(|f| {
            let mut v = serde_json::json!({
                "point": f.point,
                "attempts": f.attempts,
                "failed": f.attempts > coord.cfg.point_retries,
                "error": f.error,
            });
            if !f.host.is_empty() {
                v["host"] = f.host.clone().into();
            }
            v
        }).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&manifest)?;
    std::fs::write(tmp.join("manifest.json"), text + "\n")?;
    // Models, Vidur profiles and the report, from the tables just written. A full disk is retried like
    // the tables; any other failure leaves the tables in place and is said in the log and in
    // `derived_error.txt` beside them (`coord report DIR` writes them again).
    if let Err(e) = tracefleet_common::derived::write_derived(&tmp, &dir) {
        let e = anyhow::Error::new(e).context(format!("writing the models and report of {}", dir.display()));
        if storage_full(&e) {
            return Err(e);
        }
        tracing::error!(sweep = sweep_id, "{e:#}");
        std::fs::write(tmp.join("derived_error.txt"), format!("{e:#}\n"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving results into {}", dir.display()))?;
    Ok(dir)
}
