//! What the bench binaries share: the Python baseline and reading the programs' `stats:` lines.

use anyhow::Context;

/// Python's `json.load` of a trace plus one loop over its events (less work than `coord analyze`), with a
/// `stats:` line like `coord`'s. Run as `python3 -c PYTHON_JSON_LOAD TRACE`.
pub const PYTHON_JSON_LOAD: &str = r#"
import json, sys, time, resource, os
t = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    d = json.load(f)
n = 0
dur = 0.0
for e in d["traceEvents"]:
    n += 1
    dur += e.get("dur", 0) or 0
s = time.perf_counter() - t
b = os.path.getsize(sys.argv[1])
print(f"stats: bytes={b} events={n} seconds={s:.3f} mb_per_s={b/1e6/s:.1f} peak_rss_bytes={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024}")
"#;

/// Values of `key=value` pairs on the `stats:` line of a program's output.
pub fn stat(output: &str, key: &str) -> anyhow::Result<f64> {
    let line =
        output.lines().find(|l| l.starts_with("stats:")).with_context(|| format!("no stats line in {output}"))?;
    let v = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .with_context(|| format!("no {key} in {line}"))?;
    Ok(v.parse()?)
}

/// The median (the upper one of an even count); NaN for no values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
