//! Helpers for tracefleet's integration tests: where the workspace, its fixtures and its binaries are.
//!
//! Tests run the real `coord` and `agent` binaries as separate processes. Cargo only builds a
//! package's own binaries for its tests, so [`bin`] runs `cargo build --bin NAME` once per test process
//! (a no-op when it is up to date), so a test never runs a stale binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// A path under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    workspace().join("fixtures").join(rel)
}

static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Path of a workspace binary (`coord`, `agent`) of the profile the tests run under, built if missing.
pub fn bin(name: &str) -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("."));
    let profile_dir =
        exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| workspace().join("target/debug"));
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace()).args(["build", "--bin", name]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status();
        assert!(status.is_ok_and(|s| s.success()), "could not build the {name} binary");
        built.push(name.to_string());
    }
    path
}

/// Reads a JSON file that may be zstd-compressed (`.zst`).
pub fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path)?;
    let text = if path.extension().is_some_and(|e| e == "zst") { zstd::decode_all(&bytes[..])? } else { bytes };
    Ok(serde_json::from_slice(&text)?)
}

pub mod bench;
pub mod pki;
pub mod procs;
pub mod procstat;
pub mod proxy;
pub mod sweeps;
