//! Running a workload process: its stdout is a line-oriented JSON channel (`point_started`, `trace`,
//! `point_failed`, `log`), its stderr is kept (the last lines) for error reports, and it is killed when
//! the job is cancelled.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{WorkloadError, WorkloadEvent};

/// Lines of stderr kept for reports.
pub const STDERR_TAIL_LINES: usize = 40;

/// Parses one line of the protocol; `None` for lines that are not events (they are logged).
pub fn parse_event(line: &str) -> Option<WorkloadEvent> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
    match v.get("event")?.as_str()? {
        "point_started" => Some(WorkloadEvent::PointStarted(s("point"))),
        "trace" => {
            // "start"/"end": Unix seconds (float) around the profiled step.
            let secs = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).filter(|x| x.is_finite() && *x > 0.0);
            let window_ns = match (secs("start"), secs("end")) {
                (Some(a), Some(b)) if b >= a => Some(((a * 1e9) as u64, (b * 1e9) as u64)),
                _ => None,
            };
            Some(WorkloadEvent::TraceFinished { point_id: s("point"), path: s("path").into(), window_ns })
        }
        "point_failed" => {
            Some(WorkloadEvent::PointFailed { point_id: s("point"), error: s("error"), stderr_tail: s("traceback") })
        }
        "log" => Some(WorkloadEvent::Log(s("message"))),
        "ready" => Some(WorkloadEvent::Log("driver ready".into())),
        _ => None,
    }
}

/// Runs `cmd` to its end, forwarding its events; `label` names it in errors.
pub fn run(
    mut cmd: Command,
    label: &str,
    events: &mpsc::Sender<WorkloadEvent>,
    cancel: &watch::Receiver<bool>,
) -> Result<(), WorkloadError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| WorkloadError {
        message: format!("could not start {label} ({:?}): {e}", cmd.get_program()),
        stderr_tail: String::new(),
    })?;
    supervise(child, label, events, cancel)
}

/// Follows a started workload (stdout and stderr piped) to its end, forwarding its events; kills it when
/// the job is cancelled.
pub fn supervise(
    mut child: Child,
    label: &str,
    events: &mpsc::Sender<WorkloadEvent>,
    cancel: &watch::Receiver<bool>,
) -> Result<(), WorkloadError> {
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let stderr = child.stderr.take();
    let t = tail.clone();
    let label_err = label.to_string();
    let err_thread = std::thread::spawn(move || {
        let Some(stderr) = stderr else { return };
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            tracing::info!("[{label_err}] {line}");
            let mut q = t.lock().unwrap_or_else(|e| e.into_inner());
            q.push_back(line);
            while q.len() > STDERR_TAIL_LINES {
                q.pop_front();
            }
        }
    });
    let stdout = child.stdout.take();
    let ev = events.clone();
    let label_out = label.to_string();
    let out_thread = std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match parse_event(&line) {
                Some(e) => {
                    let _ = ev.blocking_send(e);
                }
                None => tracing::info!("[{label_out}] {line}"),
            }
        }
    });
    let status = loop {
        if *cancel.borrow() {
            let _ = child.kill();
        }
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(WorkloadError { message: format!("waiting for {label}: {e}"), stderr_tail: String::new() });
            }
        }
    };
    let _ = out_thread.join();
    let _ = err_thread.join();
    if status.success() || *cancel.borrow() {
        return Ok(());
    }
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n");
    Err(WorkloadError { message: format!("{label} exited with {status}"), stderr_tail: tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines() {
        assert_eq!(
            parse_event(r#"{"event": "trace", "point": "p", "path": "/x/trace_0.json", "step": 0}"#),
            Some(WorkloadEvent::TraceFinished {
                point_id: "p".into(),
                path: "/x/trace_0.json".into(),
                window_ns: None
            })
        );
        assert_eq!(
            parse_event(r#"{"event": "trace", "point": "p", "path": "/t.json", "start": 1.5, "end": 2.0}"#),
            Some(WorkloadEvent::TraceFinished {
                point_id: "p".into(),
                path: "/t.json".into(),
                window_ns: Some((1_500_000_000, 2_000_000_000))
            })
        );
        assert!(matches!(
            parse_event(r#"{"event": "trace", "point": "p", "path": "/t.json", "start": 3.0, "end": 2.0}"#),
            Some(WorkloadEvent::TraceFinished { window_ns: None, .. })
        ));
        assert_eq!(
            parse_event(r#"{"event": "point_started", "point": "p"}"#),
            Some(WorkloadEvent::PointStarted("p".into()))
        );
        assert!(matches!(
            parse_event(r#"{"event":"point_failed","point":"p","error":"OOM"}"#),
            Some(WorkloadEvent::PointFailed { .. })
        ));
        assert_eq!(parse_event("Loading checkpoint shards: 100%"), None);
        assert_eq!(parse_event(r#"{"event": "unknown"}"#), None);
    }

    #[test]
    fn a_failing_process_reports_its_stderr_tail() {
        let (tx, _rx) = mpsc::channel(8);
        let (_c, cancel) = watch::channel(false);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo '{\"event\":\"log\",\"message\":\"hi\"}'; echo boom >&2; exit 3"]);
        let e = run(cmd, "test workload", &tx, &cancel).expect_err("fails");
        assert!(e.message.contains("test workload exited with exit status: 3"), "{}", e.message);
        assert_eq!(e.stderr_tail, "boom");
        let e = run(Command::new("/nonexistent/python"), "driver", &tx, &cancel).expect_err("no program");
        assert!(e.message.starts_with("could not start driver"), "{}", e.message);
    }
}
