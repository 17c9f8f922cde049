//! CPU time and peak memory of processes, from /proc (Linux), for the benchmarks.

/// CPU seconds (user + system) of a process (`"self"` or a pid).
pub fn cpu_seconds(pid: &str) -> f64 {
    stat_seconds(pid, 11, 12)
}

/// CPU seconds (user + system) of this process's children that have ended and been waited for, summed
/// (`cutime` + `cstime`). A short-lived child's own `/proc` entry is gone once it is waited for, so the
/// difference of this around a child's run is its CPU time (to a clock tick, 10 ms).
pub fn children_cpu_seconds() -> f64 {
    stat_seconds("self", 13, 14)
}

/// Two clock-tick fields of `/proc/PID/stat` (counted after the command name), summed, in seconds.
fn stat_seconds(pid: &str, a: usize, b: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = f.get(a).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(b).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports clock ticks of 1/100 s on every platform tracefleet supports.
    ticks / 100.0
}

/// Peak resident memory (`VmHWM`) of a process, bytes.
pub fn peak_rss(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0)
        * 1024
}
