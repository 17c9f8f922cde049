//! The on-disk spool: finished trace files wait here, with a small JSON sidecar saying what they are,
//! until the coordinator acknowledged them. Only an acknowledged trace is deleted, so an agent restart or
//! a coordinator outage loses nothing.

mod uploader;
mod watcher;

pub use uploader::{UploadOutcome, Uploader};
pub use watcher::Watcher;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracefleet_common::telemetry::StepTelemetry;

/// What a spooled trace is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryMeta {
    pub sweep_id: String,
    /// Job that produced it.
    pub job_id: String,
    pub point_id: String,
    /// Name relative to the point (what `coord ingest` would call it).
    pub trace_name: String,
    pub host: String,
    /// GPU name, when known.
    pub gpu: String,
    /// The GPU's state while the step ran, when the agent could read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<StepTelemetry>,
}

/// One spooled trace: `<id>.trace` and `<id>.json` in the queue folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub data: PathBuf,
    pub meta_path: PathBuf,
    pub meta: EntryMeta,
}

/// The spool folder.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// This process's hold on the folder: two agents on one spool would upload each other's traces.
    _lock: std::sync::Arc<std::fs::File>,
}

impl Spool {
    /// Opens (creates) a spool under `root`.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        // Absolute: drivers announce absolute paths, which must fall under the job folders.
        let root = std::path::absolute(root)?;
        std::fs::create_dir_all(root.join("queue"))?;
        std::fs::create_dir_all(root.join("work"))?;
        std::fs::create_dir_all(root.join("failed"))?;
        let path = root.join("lock");
        let lock = std::fs::File::create(&path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "spool {} is in use by another agent process (it holds {}); give this one another --spool-dir",
                        root.display(),
                        path.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(Self { root, _lock: std::sync::Arc::new(lock) })
    }

    /// Bytes the spool holds: traces waiting for upload, refused ones kept for inspection, jobs' work
    /// folders.
    pub fn bytes(&self) -> std::io::Result<u64> {
        fn walk(dir: &Path) -> std::io::Result<u64> {
            let mut total = 0;
            for e in std::fs::read_dir(dir)? {
                let e = e?;
                let t = e.file_type()?;
                if t.is_dir() {
                    total += walk(&e.path())?;
                } else if t.is_file() {
                    total += e.metadata()?.len();
                }
            }
            Ok(total)
        }
        walk(&self.root)
    }

    /// Where a job's workload writes its files (same file system as the queue, so adding is a rename).
    pub fn work_dir(&self, job_id: &str) -> PathBuf {
        self.root.join("work").join(job_id)
    }

    /// Moves a finished file into the queue with its sidecar (sidecar first: a crash between the two
    /// leaves a sidecar without data, which `pending` ignores and removes).
    pub fn add(&self, file: &Path, meta: EntryMeta) -> std::io::Result<Entry> {
        let id = format!(
            "{}-{}-{}",
            meta.job_id,
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        );
        let q = self.root.join("queue");
        let meta_path = q.join(format!("{id}.json"));
        let data = q.join(format!("{id}.trace"));
        let tmp = q.join(format!("{id}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&meta).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &meta_path)?;
        std::fs::rename(file, &data)?;
        Ok(Entry { data, meta_path, meta })
    }

    /// Entries waiting from an earlier run, oldest first.
    pub fn pending(&self) -> std::io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.root.join("queue"))? {
            let p = e?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let data = p.with_extension("trace");
            let meta = std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<EntryMeta>(&b).ok());
            match meta {
                Some(meta) if data.exists() => out.push(Entry { data, meta_path: p, meta }),
                _ => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        out.sort_by(|a, b| a.meta_path.cmp(&b.meta_path));
        Ok(out)
    }

    /// Number of entries waiting (sidecars counted, not read: this runs with every heartbeat).
    pub fn len(&self) -> usize {
        std::fs::read_dir(self.root.join("queue"))
            .map(|rd| rd.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
            .unwrap_or(0)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes an acknowledged entry.
    pub fn remove(&self, e: &Entry) -> std::io::Result<()> {
        std::fs::remove_file(&e.data)?;
        std::fs::remove_file(&e.meta_path)
    }

    /// Moves an entry the coordinator refused for good out of the queue (kept for inspection).
    pub fn fail(&self, e: &Entry) -> std::io::Result<()> {
        let f = self.root.join("failed");
        if let Some(n) = e.data.file_name() {
            std::fs::rename(&e.data, f.join(n))?;
        }
        if let Some(n) = e.meta_path.file_name() {
            std::fs::rename(&e.meta_path, f.join(n))?;
        }
        Ok(())
    }
}
