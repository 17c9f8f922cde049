//! Both binaries log through `tracing`: `--log-format json` gives one JSON object per line with the
//! level and the component (the module that logged); a bad format or `RUST_LOG` is refused up front.

use std::process::Command;

use tracefleet_tests::bin;
use tracefleet_tests::procs::Coord;

#[test]
fn coord_serve_logs_json_lines_with_level_and_component() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--log-format", "json"]).expect("coord");
    let v: serde_json::Value = serde_json::from_str(&coord.serving_line).expect("a JSON line");
    assert_eq!(v["level"], "INFO", "{v}");
    assert!(v["target"].as_str().is_some_and(|t| t.starts_with("tracefleet_coordinator::")), "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
    let message = v["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("coord serving on {}", coord.addr)), "{v}");
}

#[test]
fn text_lines_name_their_component() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    assert!(
        coord.serving_line.contains(" INFO tracefleet_coordinator::cli::serve: coord serving on "),
        "{}",
        coord.serving_line
    );
}

#[test]
fn a_bad_log_format_or_filter_is_refused() {
    for (bin_name, args, env, want) in [
        ("coord", vec!["--log-format", "xml", "status"], None, "unknown log format `xml`; expected text or json"),
        ("agent", vec!["--log-format", "xml", "--print-inventory"], None, "unknown log format `xml`"),
        ("coord", vec!["status", "--coordinator", "127.0.0.1:1"], Some("tracefleet=[["), "RUST_LOG"),
    ] {
        let mut cmd = Command::new(bin(bin_name));
        cmd.args(&args);
        if let Some(f) = env {
            cmd.env("RUST_LOG", f);
        }
        let o = cmd.output().expect("runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{bin_name} {args:?}: {err}");
    }
}
