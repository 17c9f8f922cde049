//! The coordinator's shared state: settings, the state store, connected agents, progress events,
//! metrics counters, upload slots and the parse queue. Everything above it (parse, schedule, server, cli)
//! reaches the state through here; nothing here imports them, so data and imports flow one way:
//! store → state → parse → schedule → server → cli.

mod metrics;
mod parse_queue;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Semaphore, broadcast, mpsc};
use tracefleet_proto::v1::{CoordinatorMessage, HostInventory, SweepEvent};

pub use metrics::Metrics;
pub use parse_queue::{ParseQueue, parse_cost};

use crate::store::{Store, UploadKey};

/// Settings of `coord serve`; every limit has a default here.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data dir: state database, traces, results.
    pub data_dir: PathBuf,
    /// Parse worker threads.
    pub parse_workers: usize,
    /// Uploads in flight at once; more get RESOURCE_EXHAUSTED with a retry hint.
    pub max_inflight_uploads: usize,
    /// Raw bytes between commits (sync + database) of an upload.
    pub commit_every_bytes: u64,
    /// Heartbeat interval asked of agents.
    pub heartbeat_ms: u32,
    /// Memory the parse workers may use together (estimated per trace from its size).
    pub parse_memory_bytes: u64,
    /// Times a failed point is run again before it is reported as failed.
    pub point_retries: u32,
    /// How long an agent may be away before its unfinished points go to other agents.
    pub reassign_after_ms: u64,
    /// TLS certificate chain and private key (PEM); plain HTTP/2 without.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl Config {
    /// Uploads in flight at once.
    pub const MAX_INFLIGHT_UPLOADS: usize = 256;
    /// Raw bytes between two commits of an upload.
    pub const COMMIT_EVERY_BYTES: u64 = 8 << 20;
    /// Heartbeat interval asked of agents, ms.
    pub const HEARTBEAT_MS: u32 = 2000;
    /// Parse memory budget, MiB.
    pub const PARSE_MEMORY_MB: u64 = 384;
    /// Retries of a failed point.
    pub const POINT_RETRIES: u32 = 2;
    /// How long an agent may be away before its points move, ms.
    pub const REASSIGN_AFTER_MS: u64 = 30_000;

    /// Defaults for a data dir.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            parse_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_inflight_uploads: Self::MAX_INFLIGHT_UPLOADS,
            commit_every_bytes: Self::COMMIT_EVERY_BYTES,
            heartbeat_ms: Self::HEARTBEAT_MS,
            parse_memory_bytes: Self::PARSE_MEMORY_MB << 20,
            point_retries: Self::POINT_RETRIES,
            reassign_after_ms: Self::REASSIGN_AFTER_MS,
            tls: None,
        }
    }
}

/// A connected agent.
pub struct AgentConn {
    /// Distinguishes reconnections of the same agent.
    pub conn_id: u64,
    /// Messages to the agent.
    pub tx: mpsc::Sender<CoordinatorMessage>,
    /// What it reported.
    pub inventory: HostInventory,
    /// Last message.
    pub last_seen: Instant,
    /// Jobs it runs.
    pub running: HashSet<String>,
    /// The agent process (`Hello.instance`).
    pub instance: String,
}

/// Takes `dir/lock` (created, with the folder, if needed) for this process: one process per data dir, or
/// two coordinators would write one database and one set of trace files. The lock (`flock`) goes with
/// the process, however it ends.
///
/// # Errors
/// Another process holds it (naming the folder), or the file cannot be created.
pub fn lock_dir(dir: &std::path::Path, who: &str) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let path = dir.join("lock");
    let f = std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "{} is in use by another {who} process (it holds {}); give this one another folder",
            dir.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display())),
    }
}

/// State shared by the services and the parse workers.
pub struct Coordinator {
    pub cfg: Config,
    store: Mutex<Store>,
    /// Connected agents by name.
    pub agents: Mutex<HashMap<String, AgentConn>>,
    /// Progress events for watchers.
    pub events: broadcast::Sender<SweepEvent>,
    pub metrics: Metrics,
    /// Upload slots (backpressure).
    pub upload_slots: Arc<Semaphore>,
    /// Uploads being written now (one writer per trace).
    pub active_uploads: Mutex<HashSet<UploadKey>>,
    /// Traces waiting to be parsed.
    pub parse_queue: ParseQueue,
    /// Sweeps whose results are being written.
    completing: Mutex<HashSet<String>>,
    next_id: AtomicU64,
    /// This process's hold on the data dir (see [`lock_dir`]).
    _lock: std::fs::File,
}

pub(crate) fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves consistent data here (every update is one statement).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Coordinator {
    /// Opens the data dir.
    pub fn open(cfg: Config) -> anyhow::Result<Arc<Self>> {
        let lock = lock_dir(&cfg.data_dir, "coord")?;
        let store = Store::open(&cfg.data_dir)
            .map_err(|e| anyhow::anyhow!("opening the state database in {}: {e}", cfg.data_dir.display()))?;
        let (events, _) = broadcast::channel(4096);
        Ok(Arc::new(Self {
            upload_slots: Arc::new(Semaphore::new(cfg.max_inflight_uploads)),
            cfg,
            store: Mutex::new(store),
            agents: Mutex::new(HashMap::new()),
            events,
            metrics: Metrics::default(),
            active_uploads: Mutex::new(HashSet::new()),
            parse_queue: ParseQueue::default(),
            completing: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            _lock: lock,
        }))
    }

    /// The state database (held briefly: every call is one statement or one transaction).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        relock(&self.store)
    }

    /// Connected agents.
    pub fn agents(&self) -> MutexGuard<'_, HashMap<String, AgentConn>> {
        relock(&self.agents)
    }

    /// A process-unique number.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes a progress event (no watcher is fine).
    pub fn publish(&self, ev: SweepEvent) {
        let _ = self.events.send(ev);
    }

    /// Marks a sweep as being completed; false when someone else is already at it.
    pub(crate) fn begin_completion(&self, sweep: &str) -> bool {
        relock(&self.completing).insert(sweep.to_string())
    }

    pub(crate) fn end_completion(&self, sweep: &str) {
        relock(&self.completing).remove(sweep);
    }

    pub(crate) fn active_uploads(&self) -> MutexGuard<'_, HashSet<UploadKey>> {
        relock(&self.active_uploads)
    }
}
