//! The run: what `manifest.json` says (sweep, GPUs with driver and CUDA, versions, hosts, jobs,
//! warnings) and the clocks the steps ran at.

use serde_json::Value;

use super::Ctx;
use crate::html::{Cell, Page, Table};

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn items<'a>(m: &'a Value, key: &str) -> &'a [Value] {
    m.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Writes the "Run" section.
pub(super) fn section(page: &mut Page, ctx: &Ctx<'_>) {
    page.section("run", "Run");
    let counted = ctx.results.steps_for_curves().count();
    let left_out = ctx.results.steps.iter().filter(|s| !s.counted()).count();
    let left_out = match left_out {
        0 => String::new(),
        n => format!(" ({n} step rows left out of the statistics: steps.csv's left_out says why)"),
    };
    page.note(&format!(
        "Results read from {}: {counted} steps in {} curve(s){left_out}.",
        ctx.results.dir.display(),
        ctx.curves.len()
    ));
    match &ctx.results.manifest {
        Some(m) => manifest(page, m),
        None => page.note("No manifest.json here (results ingested from traces): no GPU, driver or job information."),
    }
    clocks(page, ctx);
}

fn manifest(page: &mut Page, m: &Value) {
    let mut t = Table::new(["field", "value"]);
    let mut kv = |k: &str, v: String| {
        if !v.is_empty() {
            t.row(vec![Cell::text(k), Cell::text(v)]);
        }
    };
    kv("sweep", text(m.pointer("/sweep/name")));
    kv("sweep id", text(m.pointer("/sweep/id")));
    kv("model", text(m.pointer("/sweep/model")));
    kv("backend", text(m.pointer("/sweep/backend")));
    kv("mode", text(m.pointer("/sweep/mode")));
    kv("dtype", text(m.pointer("/sweep/backend_settings/dtype")));
    kv("CUDA graphs", text(m.pointer("/sweep/backend_settings/cuda_graphs")));
    kv("warm-up steps", text(m.pointer("/sweep/warmup_steps")));
    kv("profiled steps", text(m.pointer("/sweep/profile_steps")));
    kv("placement", text(m.pointer("/sweep/placement")));
    if let Some(o) = m.get("versions").and_then(Value::as_object) {
        for (k, v) in o {
            kv(&format!("{k} version"), text(Some(v)));
        }
    }
    let mut agent_versions: Vec<String> =
        items(m, "agents").iter().map(|a| text(a.get("agent_version"))).filter(|s| !s.is_empty()).collect();
    agent_versions.sort();
    agent_versions.dedup();
    kv("agent version", agent_versions.join(", "));
    if let (Some(a), Some(b)) =
        (m.get("started_ms").and_then(Value::as_f64), m.get("finished_ms").and_then(Value::as_f64))
    {
        kv("wall time", format!("{:.1} s", (b - a) / 1000.0));
    }
    kv("points", items(m, "points").len().to_string());
    page.table(&t);

    let mut gpus = Table::new(["host", "index", "GPU", "driver", "CUDA", "memory (GiB)", "uuid"]);
    for a in items(m, "agents") {
        for g in items(a, "gpus") {
            gpus.row(vec![
                Cell::text(text(a.get("host").or_else(|| a.get("name")))),
                Cell::text(text(g.get("index"))),
                Cell::text(text(g.get("name"))),
                Cell::text(text(g.get("driver_version"))),
                Cell::text(text(g.get("cuda_version"))),
                g.get("memory_bytes")
                    .and_then(Value::as_f64)
                    .map(|b| Cell::num(b / (1u64 << 30) as f64, 1))
                    .unwrap_or_else(|| Cell::text("")),
                Cell::text(text(g.get("uuid"))),
            ]);
        }
    }
    if !gpus.rows.is_empty() {
        page.heading("Hosts and GPUs");
        page.table(&gpus);
    }

    let jobs = items(m, "jobs");
    if !jobs.is_empty() {
        page.heading("Jobs");
        let mut t = Table::new(["job", "agent", "state", "points", "error"]);
        for j in jobs {
            let error = text(j.get("error"));
            let mut e = Cell::text(error.clone());
            if !error.is_empty() {
                e = e.with_class("hi");
            }
            t.row(vec![
                Cell::text(text(j.get("job"))),
                Cell::text(text(j.get("agent"))),
                Cell::text(text(j.get("state"))),
                Cell::int(items(j, "points").len() as u64),
                e,
            ]);
        }
        page.table(&t);
    }

    let failures = items(m, "point_failures");
    if !failures.is_empty() {
        page.heading("Failed points");
        let mut t = Table::new(["failure"]);
        for f in failures {
            t.row(vec![
                Cell::text(match f {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .with_class("hi"),
            ]);
        }
        page.table(&t);
    }

    let warnings = items(m, "warnings");
    page.heading("Warnings");
    if warnings.is_empty() {
        page.note("The analysis warned about nothing.");
    } else {
        let mut t = Table::new(["kind", "message"]);
        for w in warnings {
            let message = match w.get("message") {
                Some(v) => text(Some(v)),
                None => w.to_string(),
            };
            t.row(vec![Cell::text(text(w.get("kind"))), Cell::text(message)]);
        }
        page.note(&format!("{} warning(s) from the analysis (manifest.json `warnings`).", warnings.len()));
        page.table(&t);
    }
}

/// Per curve: GPU, points, steps and the SM clock range over its steps.
fn clocks(page: &mut Page, ctx: &Ctx<'_>) {
    page.heading("Curves and clocks");
    let mut t =
        Table::new(["curve", "GPU", "points", "steps", "SM clock min (MHz)", "SM clock max (MHz)", "throttled steps"]);
    for (curve, by_x) in &ctx.points {
        let steps: Vec<_> = by_x.values().flatten().collect();
        let lo = steps.iter().filter_map(|s| s.sm_clock_mhz.map(|c| c.0)).min();
        let hi = steps.iter().filter_map(|s| s.sm_clock_mhz.map(|c| c.1)).max();
        let with_telemetry = steps.iter().filter(|s| s.throttled.is_some()).count();
        let throttled = steps.iter().filter(|s| s.throttled == Some(true)).count();
        let clock = |v: Option<u32>| v.map(|v| Cell::int(u64::from(v))).unwrap_or_else(|| Cell::text("not recorded"));
        let th = if with_telemetry == 0 {
            Cell::text("not recorded")
        } else {
            let c =
                Cell { text: format!("{throttled} of {with_telemetry}"), value: Some(throttled as f64), class: None };
            if throttled > 0 { c.with_class("hi") } else { c }
        };
        t.row(vec![
            Cell::text(curve.label()),
            Cell::text(curve.gpu.clone()),
            Cell::int(by_x.len() as u64),
            Cell::int(steps.len() as u64),
            clock(lo),
            clock(hi),
            th,
        ]);
    }
    page.table(&t);
}
