//! The coordinator's shared state: settings, the state store, connected agents, progress events,
//! metrics counters, upload slots and the parse queue. Everything above it (parse, schedule, server, cli)
//! reaches the state through here; nothing here imports them, so data and imports flow one way:
//! store → state → parse → schedule → server → cli.

mod metrics;
mod parse_queue;
mod tls_files;
mod tokens;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, broadcast, mpsc};
use tracefleet_proto::v1::{CoordinatorMessage, HostInventory, SweepEvent};

pub use metrics::{Metrics, ParseSource};
pub use parse_queue::{ParseQueue, parse_cost};
pub use tls_files::TlsFiles;
pub use tokens::OperatorTokens;

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
    /// Longest time between two commits of an upload that is receiving bytes.
    pub commit_every: Duration,
    /// How long an upload stream may take to send its first message.
    pub upload_first_message_timeout: Duration,
    /// How long an upload stream may stay silent between two messages.
    pub upload_idle_timeout: Duration,
    /// Upload streams one agent may have open at once.
    pub max_uploads_per_agent: usize,
    /// How long an agent not heard from is remembered (listed by `coord status`).
    pub agent_expiry: Duration,
    /// Heartbeat interval asked of agents.
    pub heartbeat_ms: u32,
    /// Memory the parse workers may use together (estimated per trace from its size).
    pub parse_memory_bytes: u64,
    /// Times a failed point is run again before it is reported as failed.
    pub point_retries: u32,
    /// How long an agent may be away before its unfinished points go to other agents.
    pub reassign_after_ms: u64,
    /// Times the parse pool tries to read its stored copy of a trace (a read error of the coordinator's
    /// disk: EIO, too many open files, a file gone) before it records the failure as the trace's result.
    pub parse_read_attempts: u32,
    /// Wait before a parse is tried again after a storage or read error; doubled after each failed read.
    pub parse_retry_delay: Duration,
    /// Mutual TLS: the coordinator's certificate and key, and the CA of client certificates; plain
    /// HTTP/2 with nobody identified without (`--insecure`).
    pub tls: Option<TlsFiles>,
    /// Operator tokens (`--operator-tokens`), accepted besides operator certificates.
    pub operator_tokens: Option<Arc<OperatorTokens>>,
}

impl Config {
    /// Uploads in flight at once.
    pub const MAX_INFLIGHT_UPLOADS: usize = 256;
    /// Raw bytes between two commits of an upload.
    pub const COMMIT_EVERY_BYTES: u64 = 8 << 20;
    /// Longest time between two commits of an upload, ms.
    pub const COMMIT_EVERY_MS: u64 = 1000;
    /// Time allowed for an upload stream's first message, ms.
    pub const UPLOAD_FIRST_MESSAGE_MS: u64 = 10_000;
    /// Time allowed between two messages of an upload stream, ms.
    pub const UPLOAD_IDLE_MS: u64 = 60_000;
    /// Upload streams one agent may have open at once (agents run 2 by default).
    pub const MAX_UPLOADS_PER_AGENT: usize = 16;
    /// Hours an agent not heard from is remembered.
    pub const AGENT_EXPIRY_HOURS: u64 = 168;
    /// Largest agent inventory (encoded `HostInventory`) accepted in a hello, bytes.
    pub const MAX_INVENTORY_BYTES: usize = 64 << 10;
    /// Heartbeat interval asked of agents, ms.
    pub const HEARTBEAT_MS: u32 = 2000;
    /// Parse memory budget, MiB.
    pub const PARSE_MEMORY_MB: u64 = 384;
    /// Retries of a failed point.
    pub const POINT_RETRIES: u32 = 2;
    /// How long an agent may be away before its points move, ms.
    pub const REASSIGN_AFTER_MS: u64 = 30_000;
    /// Reads of a stored trace before a read error is its result: with [`Self::PARSE_RETRY_DELAY`]
    /// doubling, about a minute of waits (2 + 4 + 8 + 16 + 32 s), long enough for a transient fault
    /// (a remount, a burst of open files) to clear, short enough for a sweep to end.
    pub const PARSE_READ_ATTEMPTS: u32 = 6;
    /// First wait before a parse is tried again.
    pub const PARSE_RETRY_DELAY: Duration = Duration::from_secs(2);

    /// Defaults for a data dir.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            parse_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_inflight_uploads: Self::MAX_INFLIGHT_UPLOADS,
            commit_every_bytes: Self::COMMIT_EVERY_BYTES,
            commit_every: Duration::from_millis(Self::COMMIT_EVERY_MS),
            upload_first_message_timeout: Duration::from_millis(Self::UPLOAD_FIRST_MESSAGE_MS),
            upload_idle_timeout: Duration::from_millis(Self::UPLOAD_IDLE_MS),
            max_uploads_per_agent: Self::MAX_UPLOADS_PER_AGENT,
            agent_expiry: Duration::from_secs(Self::AGENT_EXPIRY_HOURS * 3600),
            heartbeat_ms: Self::HEARTBEAT_MS,
            parse_memory_bytes: Self::PARSE_MEMORY_MB << 20,
            point_retries: Self::POINT_RETRIES,
            reassign_after_ms: Self::REASSIGN_AFTER_MS,
            parse_read_attempts: Self::PARSE_READ_ATTEMPTS,
            parse_retry_delay: Self::PARSE_RETRY_DELAY,
            tls: None,
            operator_tokens: None,
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
    /// The GPUs (indexes) each of its running jobs holds, as it reported them (a job waiting for its GPUs
    /// at the agent is not here).
    pub gpus: HashMap<String, Vec<u32>>,
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
    /// Upload streams open now, per agent (host).
    uploads_per_agent: Arc<Mutex<HashMap<String, usize>>>,
    /// Traces waiting to be parsed.
    pub parse_queue: ParseQueue,
    /// Sweeps whose results are being written.
    completing: Mutex<HashSet<String>>,
    /// Sweeps whose results could not be written for lack of disk space (tried again by the watchdog).
    results_pending: Mutex<HashSet<String>>,
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
            uploads_per_agent: Arc::default(),
            parse_queue: ParseQueue::default(),
            completing: Mutex::new(HashSet::new()),
            results_pending: Mutex::new(HashSet::new()),
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

    /// Notes (or clears) that a sweep's results wait for disk space.
    pub(crate) fn results_pending(&self, sweep: &str, pending: bool) {
        let mut p = relock(&self.results_pending);
        if pending {
            p.insert(sweep.to_string());
        } else {
            p.remove(sweep);
        }
    }

    /// Sweeps whose results wait for disk space.
    pub(crate) fn pending_results(&self) -> Vec<String> {
        relock(&self.results_pending).iter().cloned().collect()
    }

    pub(crate) fn active_uploads(&self) -> MutexGuard<'_, HashSet<UploadKey>> {
        relock(&self.active_uploads)
    }

    /// One of `host`'s upload slots (at most `max_uploads_per_agent` at once), given back on drop;
    /// `None` when all are taken.
    pub(crate) fn agent_upload_slot(&self, host: &str) -> Option<AgentUploadSlot> {
        let mut m = relock(&self.uploads_per_agent);
        let n = m.entry(host.to_string()).or_insert(0);
        if *n >= self.cfg.max_uploads_per_agent {
            return None;
        }
        *n += 1;
        Some(AgentUploadSlot { map: self.uploads_per_agent.clone(), host: host.to_string() })
    }
}

/// An agent's upload slot (see [`Coordinator::agent_upload_slot`]).
pub(crate) struct AgentUploadSlot {
    map: Arc<Mutex<HashMap<String, usize>>>,
    host: String,
}

impl Drop for AgentUploadSlot {
    fn drop(&mut self) {
        let mut m = relock(&self.map);
        if let Some(n) = m.get_mut(&self.host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.host);
            }
        }
    }
}
