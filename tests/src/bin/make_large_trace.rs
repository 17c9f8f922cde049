//! Builds a large, real-shaped Kineto trace for benchmarks by repeating a fixture trace with shifted
//! timestamps and ids, so every copy is a distinct run of steps in one profiling window.
//!
//! Usage: `make-large-trace [--copies N] [--input FIXTURE] OUT.json`
//! Default input: the 8-step H200 decode trace (15 MB, 41.5k events); 16 copies give 200 MB, 660k events (compact JSON).

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut copies = 16u64;
    let mut input = tracefleet_tests::fixture("h200-llama-1b/multistep/decode_bs16_8steps.pt.trace.json.zst");
    let mut out: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--copies" => copies = args.next().context("--copies N")?.parse()?,
            "--input" => input = args.next().context("--input FILE")?.into(),
            _ if out.is_none() => out = Some(a.into()),
            _ => bail!("usage: make-large-trace [--copies N] [--input FIXTURE] OUT.json"),
        }
    }
    let out = out.context("usage: make-large-trace [--copies N] [--input FIXTURE] OUT.json")?;
    let doc = tracefleet_tests::read_json(&input)?;
    let events = doc["traceEvents"].as_array().context("fixture has no traceEvents")?;

    // Shift each copy past the previous one: by the window's span in time, by the largest id in ids.
    let ts = |e: &Value| e["ts"].as_f64();
    let first = events.iter().filter_map(ts).fold(f64::MAX, f64::min);
    let last = events.iter().filter_map(|e| Some(ts(e)? + e["dur"].as_f64().unwrap_or(0.0))).fold(f64::MIN, f64::max);
    let span = (last - first).ceil() + 1000.0;
    let id_keys = ["External id", "correlation", "Python id", "Python parent id", "Ev Idx"];
    let mut max_id = 0i64;
    for e in events {
        max_id = max_id.max(e["id"].as_i64().unwrap_or(0));
        for k in id_keys {
            max_id = max_id.max(e["args"][k].as_i64().unwrap_or(0));
        }
    }
    let id_step = max_id + 1;

    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    writeln!(w, "{{")?;
    if let Some(obj) = doc.as_object() {
        for (k, v) in obj {
            if k != "traceEvents" {
                writeln!(w, "  {}: {},", serde_json::to_string(k)?, serde_json::to_string(v)?)?;
            }
        }
    }
    writeln!(w, "  \"traceEvents\": [")?;
    let mut n = 0u64;
    for c in 0..copies {
        for e in events {
            let mut e = e.clone();
            let is_meta = e["ph"].as_str() == Some("M");
            if c > 0 && is_meta {
                continue;
            }
            if let Some(t) = ts(&e) {
                // Kineto writes microseconds with three decimals.
                let shifted = t + span * c as f64;
                e["ts"] = serde_json::from_str(&format!("{shifted:.3}"))?;
            }
            if let Some(id) = e["id"].as_i64() {
                e["id"] = Value::from(id + id_step * c as i64);
            }
            if let Some(args) = e.get_mut("args").and_then(Value::as_object_mut) {
                for k in id_keys {
                    if let Some(v) = args.get(k).and_then(Value::as_i64) {
                        args.insert(k.to_string(), Value::from(v + id_step * c as i64));
                    }
                }
            }
            if let Some(step) = e["name"]
                .as_str()
                .and_then(|n| n.strip_prefix("execute_model_step_"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                e["name"] = Value::from(format!("execute_model_step_{}", step + 8 * c));
            }
            if n > 0 {
                writeln!(w, ",")?;
            }
            write!(w, "  ")?;
            serde_json::to_writer(&mut w, &e)?;
            n += 1;
        }
    }
    writeln!(w, "\n  ]\n}}")?;
    w.flush()?;
    let bytes = std::fs::metadata(&out)?.len();
    println!("wrote {} ({} bytes, {} events, {} copies)", out.display(), bytes, n, copies);
    Ok(())
}
