//! Durable state: an embedded SQLite database (WAL) under the data dir, and the raw trace files beside it.
//!
//! What the coordinator acknowledges is here first: an upload's committed offset is written only after its
//! bytes were synced to the trace file; a trace is "complete" only after its SHA-256 was checked. Everything
//! in memory (agent connections, the parse queue, progress) can be rebuilt from this.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use tracefleet_proto::v1::SweepState;

mod states;

pub use states::JobState;
use states::SqlSweepState;

/// A database error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("state database ({what}): {source}")]
pub struct StoreError {
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

fn ctx(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError { what, source }
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Names one uploaded trace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadKey {
    pub sweep_id: String,
    /// Point of the sweep.
    pub point_id: String,
    /// Agent (host) that produced it.
    pub host: String,
    /// File name relative to the point.
    pub trace_name: String,
}

/// An upload's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub key: UploadKey,
    /// Declared raw size.
    pub raw_size: u64,
    /// GPU named by the agent.
    pub gpu: String,
    /// Raw bytes committed.
    pub committed_raw: u64,
    /// Bytes of the stored (compressed) file that hold the committed raw bytes.
    pub stored_bytes: u64,
    /// SHA-256 checked and trace complete.
    pub complete: bool,
    /// SHA-256 (hex) once complete.
    pub sha256: String,
    /// Parsed; its summary is stored.
    pub parsed: bool,
    /// The GPU's state during the step (`StepTelemetry`, protobuf), when the agent sent it.
    pub telemetry: Option<Vec<u8>>,
    /// Set aside: its point ran again elsewhere; kept on disk, left out of results.
    pub superseded: bool,
    /// Why the trace was refused when it was parsed (empty: read, or not parsed yet).
    pub parse_error: String,
}

/// The failed runs of a point ([`Store::fail_point`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointFailure {
    pub point: String,
    /// The host, for an `each` sweep's point (its failures on other hosts are counted apart); empty for a
    /// spread sweep's, counted wherever it ran.
    pub host: String,
    /// Failed runs so far.
    pub attempts: u32,
    /// The last run's error.
    pub error: String,
}

/// A sweep row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepRow {
    pub id: String,
    pub name: String,
    /// The encoded `SweepSpec`.
    pub spec: Vec<u8>,
    /// Running until it ends.
    pub state: SweepState,
    /// Submission time, ms since the epoch.
    pub created_ms: i64,
    /// End time, 0 while running.
    pub finished_ms: i64,
}

#[cfg(test)]
impl SweepRow {
    /// A running sweep `id` with the encoded spec `spec`, for tests.
    pub(crate) fn running(id: &str, spec: Vec<u8>) -> Self {
        SweepRow { id: id.into(), name: id.into(), spec, state: SweepState::Running, created_ms: 1, finished_ms: 0 }
    }
}

/// A job row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: String,
    pub sweep_id: String,
    /// Assigned agent.
    pub agent: String,
    /// The encoded `AssignJob`.
    pub assign: Vec<u8>,
    /// Assigned until it ends.
    pub state: JobState,
    /// Failure message.
    pub error: String,
}

impl JobRow {
    /// Whether the job has ended.
    pub fn terminal(&self) -> bool {
        self.state.terminal()
    }
}

/// The state database.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
}

/// Inserts the job `make` builds from its number in the sweep (`{sweep}-j{n}`), inside `tx`: counted and
/// inserted in one transaction, the number is unique (jobs are never deleted alone).
fn insert_next_job(
    tx: &rusqlite::Transaction<'_>,
    sweep_id: &str,
    make: impl FnOnce(usize) -> Option<JobRow>,
) -> Result<Option<JobRow>> {
    let n: i64 = tx
        .query_row("SELECT COUNT(*) FROM jobs WHERE sweep_id = ?1", [sweep_id], |r| r.get(0))
        .map_err(ctx("next job"))?;
    let Some(j) = make(n as usize) else { return Ok(None) };
    tx.execute(
        "INSERT INTO jobs(id, sweep_id, agent, assign, state) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![j.id, j.sweep_id, j.agent, j.assign, j.state],
    )
    .map_err(ctx("insert job"))?;
    Ok(Some(j))
}

/// Sets a host's traces of a point aside (kept on disk, left out of results), inside `tx`, and records
/// that `job_id` no longer runs the point: its later uploads for it are refused.
/// The tables that hold a sweep's rows: those with a `sweep_id` column, read from the schema itself, so
/// that a table added later is not left behind when a sweep is deleted (one was: `superseded_points`).
fn sweep_tables(conn: &rusqlite::Connection) -> Result<Vec<String>> {
    let mut st = conn
        .prepare(
            "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND p.name = 'sweep_id' ORDER BY m.name",
        )
        .map_err(ctx("schema"))?;
    let names = st.query_map([], |r| r.get::<_, String>(0)).map_err(ctx("schema"))?;
    names.collect::<std::result::Result<Vec<_>, _>>().map_err(ctx("schema"))
}

fn supersede(tx: &rusqlite::Transaction<'_>, sweep_id: &str, point_id: &str, host: &str, job_id: &str) -> Result<()> {
    tx.execute(
        "UPDATE uploads SET superseded = 1 WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3",
        params![sweep_id, point_id, host],
    )
    .map_err(ctx("supersede"))?;
    tx.execute(
        "INSERT INTO superseded_points(sweep_id, point_id, job_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![sweep_id, point_id, job_id],
    )
    .map_err(ctx("supersede"))?;
    Ok(())
}

/// The file name (under the point's folder) of a trace: `%` and `/` percent-encoded, so that two trace
/// names never share a file (`x/y` is `x%2Fy.zst`, `x%2Fy` is `x%252Fy.zst`, `x__y` is `x__y.zst`).
pub fn stored_file_name(trace_name: &str) -> String {
    let mut out = String::with_capacity(trace_name.len() + 4);
    for c in trace_name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out.push_str(".zst");
    out
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError {
            what: "creating the data dir",
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        let conn = Connection::open(dir.join("state.db")).map_err(ctx("open"))?;
        // WAL: readers never block the writer; FULL: a commit is on disk when it returns.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(ctx("journal_mode"))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(ctx("synchronous"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS agents (
                name TEXT PRIMARY KEY, inventory BLOB NOT NULL, last_seen_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS sweeps (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, spec BLOB NOT NULL, state TEXT NOT NULL,
                created_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, sweep_id TEXT NOT NULL, agent TEXT NOT NULL, assign BLOB NOT NULL,
                state TEXT NOT NULL, error TEXT NOT NULL DEFAULT '');
             CREATE INDEX IF NOT EXISTS jobs_by_sweep ON jobs(sweep_id);
             CREATE TABLE IF NOT EXISTS uploads (
                sweep_id TEXT NOT NULL, point_id TEXT NOT NULL, host TEXT NOT NULL, trace_name TEXT NOT NULL,
                raw_size INTEGER NOT NULL, gpu TEXT NOT NULL, committed_raw INTEGER NOT NULL DEFAULT 0,
                stored_bytes INTEGER NOT NULL DEFAULT 0, complete INTEGER NOT NULL DEFAULT 0,
                sha256 TEXT NOT NULL DEFAULT '', parsed INTEGER NOT NULL DEFAULT 0, summary BLOB,
                superseded INTEGER NOT NULL DEFAULT 0, telemetry BLOB,
                PRIMARY KEY (sweep_id, point_id, host, trace_name));
             CREATE TABLE IF NOT EXISTS point_failures (
                sweep_id TEXT NOT NULL, point_id TEXT NOT NULL, host TEXT NOT NULL DEFAULT '',
                attempts INTEGER NOT NULL, error TEXT NOT NULL,
                PRIMARY KEY (sweep_id, point_id, host));
             CREATE TABLE IF NOT EXISTS superseded_points (
                sweep_id TEXT NOT NULL, point_id TEXT NOT NULL, job_id TEXT NOT NULL,
                PRIMARY KEY (sweep_id, point_id, job_id));
             CREATE TABLE IF NOT EXISTS failed_runs (
                sweep_id TEXT NOT NULL, job_id TEXT NOT NULL, point_id TEXT NOT NULL,
                PRIMARY KEY (job_id, point_id));",
        )
        .map_err(ctx("schema"))?;
        // State written before step telemetry existed gains the column (NULL: no telemetry).
        let has_telemetry: bool = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('uploads') WHERE name = 'telemetry'", [], |r| r.get(0))
            .map_err(ctx("schema"))?;
        if !has_telemetry {
            conn.execute_batch("ALTER TABLE uploads ADD COLUMN telemetry BLOB").map_err(ctx("schema"))?;
        }
        // ... and the reason a trace was refused, written since refusals are listed per point.
        let has_parse_error: bool = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('uploads') WHERE name = 'parse_error'", [], |r| r.get(0))
            .map_err(ctx("schema"))?;
        if !has_parse_error {
            conn.execute_batch("ALTER TABLE uploads ADD COLUMN parse_error TEXT NOT NULL DEFAULT ''")
                .map_err(ctx("schema"))?;
        }
        // ... and the host a point failed on, for `each` sweeps (one series per host: a point that fails on
        // one host has not failed on another). A table's key cannot be altered in place: it is rebuilt, its
        // rows kept with no host (they were counted per point, as spread sweeps still are).
        let has_failure_host: bool = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('point_failures') WHERE name = 'host'", [], |r| r.get(0))
            .map_err(ctx("schema"))?;
        if !has_failure_host {
            conn.execute_batch(
                "BEGIN;
                 ALTER TABLE point_failures RENAME TO point_failures_by_point;
                 CREATE TABLE point_failures (
                    sweep_id TEXT NOT NULL, point_id TEXT NOT NULL, host TEXT NOT NULL DEFAULT '',
                    attempts INTEGER NOT NULL, error TEXT NOT NULL,
                    PRIMARY KEY (sweep_id, point_id, host));
                 INSERT INTO point_failures(sweep_id, point_id, host, attempts, error)
                    SELECT sweep_id, point_id, '', attempts, error FROM point_failures_by_point;
                 DROP TABLE point_failures_by_point;
                 COMMIT;",
            )
            .map_err(ctx("schema"))?;
        }
        // ... the job that uploads each trace (uploads are bound to jobs), and the stored file's name
        // (empty: a row from before names were encoded injectively, whose file has the old name).
        // ... and the agent process each job was last sent to (a restarted agent runs it again as a new
        // job, so that two runs of one point are never counted together).
        let added = [("uploads", "job_id"), ("uploads", "file"), ("jobs", "sent_to")]
            .map(|(table, col)| (table, col, "TEXT NOT NULL DEFAULT ''"));
        for (table, col, decl) in added {
            let has: bool = conn
                .query_row(&format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"), [col], |r| {
                    r.get(0)
                })
                .map_err(ctx("schema"))?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {col} {decl}")).map_err(ctx("schema"))?;
            }
        }
        Ok(Self { conn, dir: dir.to_path_buf() })
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of a point's traces from one host.
    fn point_dir(&self, k: &UploadKey) -> PathBuf {
        self.dir.join("traces").join(&k.sweep_id).join(&k.host).join(&k.point_id)
    }

    /// Where the stored (zstd-framed) bytes of an upload live: [`stored_file_name`] in its point's folder,
    /// or, for a row written before names were encoded injectively, the old name (`/` as `__`).
    pub fn trace_path(&self, k: &UploadKey) -> Result<PathBuf> {
        let file: Option<String> = self
            .conn
            .query_row(
                "SELECT file FROM uploads WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND trace_name = ?4",
                params![k.sweep_id, k.point_id, k.host, k.trace_name],
                |r| r.get(0),
            )
            .optional()
            .map_err(ctx("trace path"))?;
        Ok(self.point_dir(k).join(match file {
            Some(f) if !f.is_empty() => f,
            Some(_) => format!("{}.zst", k.trace_name.replace('/', "__")),
            None => stored_file_name(&k.trace_name),
        }))
    }

    /// Where a sweep's results go.
    pub fn results_dir(&self, sweep_id: &str) -> PathBuf {
        self.dir.join("results").join(sweep_id)
    }

    /// Records an agent and its inventory.
    pub fn upsert_agent(&self, name: &str, inventory: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO agents(name, inventory, last_seen_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET inventory = excluded.inventory, last_seen_ms = excluded.last_seen_ms",
                params![name, inventory, now_ms()],
            )
            .map_err(ctx("upsert agent"))?;
        Ok(())
    }

    /// Every agent ever seen: (name, encoded inventory, last seen ms).
    pub fn agents(&self) -> Result<Vec<(String, Vec<u8>, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT name, inventory, last_seen_ms FROM agents ORDER BY name")
            .map_err(ctx("agents"))?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(ctx("agents"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(ctx("agents"))
    }

    /// Records that an agent was heard from now (its connection ends: the expiry counts from here).
    pub fn touch_agent(&self, name: &str) -> Result<()> {
        self.conn
            .execute("UPDATE agents SET last_seen_ms = ?2 WHERE name = ?1", params![name, now_ms()])
            .map_err(ctx("touch agent"))?;
        Ok(())
    }

    /// Forgets agents last heard from before `before_ms` (ms since the epoch), except those in `keep`
    /// (connected now); returns their names.
    pub fn expire_agents(&self, before_ms: i64, keep: &std::collections::HashSet<String>) -> Result<Vec<String>> {
        let old: Vec<String> = {
            let mut st =
                self.conn.prepare("SELECT name FROM agents WHERE last_seen_ms < ?1").map_err(ctx("expire agents"))?;
            let rows = st.query_map([before_ms], |r| r.get(0)).map_err(ctx("expire agents"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(ctx("expire agents"))?
        };
        let gone: Vec<String> = old.into_iter().filter(|n| !keep.contains(n)).collect();
        for n in &gone {
            self.conn.execute("DELETE FROM agents WHERE name = ?1", [n]).map_err(ctx("expire agents"))?;
        }
        Ok(gone)
    }

    /// Inserts a sweep and its jobs in one transaction.
    pub fn insert_sweep(&mut self, sweep: &SweepRow, jobs: &[JobRow]) -> Result<()> {
        let tx = self.conn.transaction().map_err(ctx("insert sweep"))?;
        tx.execute(
            "INSERT INTO sweeps(id, name, spec, state, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sweep.id, sweep.name, sweep.spec, SqlSweepState(sweep.state), sweep.created_ms],
        )
        .map_err(ctx("insert sweep"))?;
        for j in jobs {
            tx.execute(
                "INSERT INTO jobs(id, sweep_id, agent, assign, state) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![j.id, j.sweep_id, j.agent, j.assign, j.state],
            )
            .map_err(ctx("insert job"))?;
        }
        tx.commit().map_err(ctx("insert sweep"))
    }

    fn sweep_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SweepRow> {
        Ok(SweepRow {
            id: r.get(0)?,
            name: r.get(1)?,
            spec: r.get(2)?,
            state: r.get::<_, SqlSweepState>(3)?.0,
            created_ms: r.get(4)?,
            finished_ms: r.get(5)?,
        })
    }

    /// One sweep.
    pub fn sweep(&self, id: &str) -> Result<Option<SweepRow>> {
        self.conn
            .query_row(
                "SELECT id, name, spec, state, created_ms, finished_ms FROM sweeps WHERE id = ?1",
                [id],
                Self::sweep_row,
            )
            .optional()
            .map_err(ctx("sweep"))
    }

    /// Deletes a sweep's records (its rows in every table with a `sweep_id` column, and the sweep) in one
    /// transaction; the caller removes its files first. Returns whether it existed.
    pub fn delete_sweep(&mut self, id: &str) -> Result<bool> {
        let tx = self.conn.transaction().map_err(ctx("delete sweep"))?;
        for table in sweep_tables(&tx)? {
            tx.execute(&format!("DELETE FROM \"{table}\" WHERE sweep_id = ?1"), [id]).map_err(ctx("delete sweep"))?;
        }
        let n = tx.execute("DELETE FROM sweeps WHERE id = ?1", [id]).map_err(ctx("delete sweep"))?;
        tx.commit().map_err(ctx("delete sweep"))?;
        Ok(n > 0)
    }

    /// The folder of a sweep's stored traces.
    pub fn traces_dir(&self, sweep_id: &str) -> PathBuf {
        self.dir.join("traces").join(sweep_id)
    }

    /// Every sweep id, newest first.
    pub fn sweep_ids(&self) -> Result<Vec<String>> {
        let mut st =
            self.conn.prepare("SELECT id FROM sweeps ORDER BY created_ms DESC, id DESC").map_err(ctx("sweeps"))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(ctx("sweeps"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(ctx("sweeps"))
    }

    /// Sweeps still running.
    pub fn running_sweeps(&self) -> Result<Vec<SweepRow>> {
        let mut st = self
            .conn
            .prepare("SELECT id, name, spec, state, created_ms, finished_ms FROM sweeps WHERE state = ?1")
            .map_err(ctx("running sweeps"))?;
        let rows =
            st.query_map([SqlSweepState(SweepState::Running)], Self::sweep_row).map_err(ctx("running sweeps"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(ctx("running sweeps"))
    }

    /// Ends a sweep.
    pub fn finish_sweep(&self, id: &str, state: SweepState) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sweeps SET state = ?2, finished_ms = ?3 WHERE id = ?1",
                params![id, SqlSweepState(state), now_ms()],
            )
            .map_err(ctx("finish sweep"))?;
        Ok(())
    }

    fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
        Ok(JobRow {
            id: r.get(0)?,
            sweep_id: r.get(1)?,
            agent: r.get(2)?,
            assign: r.get(3)?,
            state: r.get(4)?,
            error: r.get(5)?,
        })
    }

    /// Jobs of a sweep.
    pub fn jobs_of_sweep(&self, sweep_id: &str) -> Result<Vec<JobRow>> {
        let mut st = self
            .conn
            .prepare("SELECT id, sweep_id, agent, assign, state, error FROM jobs WHERE sweep_id = ?1 ORDER BY id")
            .map_err(ctx("jobs"))?;
        let rows = st.query_map([sweep_id], Self::job_row).map_err(ctx("jobs"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(ctx("jobs"))
    }

    /// Unfinished jobs assigned to an agent.
    pub fn open_jobs_of_agent(&self, agent: &str) -> Result<Vec<JobRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT j.id, j.sweep_id, j.agent, j.assign, j.state, j.error FROM jobs j JOIN sweeps s ON s.id = j.sweep_id
                 WHERE j.agent = ?1 AND j.state = ?2 ORDER BY s.created_ms, j.rowid",
            )
            .map_err(ctx("jobs of agent"))?;
        let rows = st.query_map(params![agent, JobState::Assigned], Self::job_row).map_err(ctx("jobs of agent"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(ctx("jobs of agent"))
    }

    /// Records one more failure of a point in `job`, sets the job's partial traces of it aside (the job
    /// no longer runs it; a point that fails for the last time gives no data rather than part of a failed
    /// run's) and, while it has failed at most `retries` times, inserts the job that runs it again, all in
    /// one transaction: a failure is never recorded without its retry, nor a retry lost to a failure at
    /// the same moment. Failures are counted per point, or per point and host with `per_host` (`each`
    /// sweeps, where every host runs every point for a series of its own). `retry` makes the new job from its number in the sweep (`{sweep}-j{n}`: unique, since
    /// it is counted and inserted in the same transaction and jobs are never deleted alone); `None`: no
    /// agent can take it. Returns the attempts so far and the job inserted; `(0, None)` when nothing was
    /// recorded: the job has ended, or its failure of this point was recorded already (an agent lists its
    /// recent failures again in every hello, a report that did arrive included: it must not count twice).
    pub fn fail_point(
        &mut self,
        job: &JobRow,
        point_id: &str,
        error: &str,
        retries: u32,
        per_host: bool,
        retry: impl FnOnce(usize) -> Option<JobRow>,
    ) -> Result<(u32, Option<JobRow>)> {
        let (sweep_id, host) = (job.sweep_id.as_str(), job.agent.as_str());
        let failure_host = if per_host { host } else { "" };
        let tx = self.conn.transaction().map_err(ctx("point failure"))?;
        // A late report from a job that has ended (reassigned, cancelled) changes nothing: the point runs
        // elsewhere already.
        let state: Option<JobState> = tx
            .query_row("SELECT state FROM jobs WHERE id = ?1", [&job.id], |r| r.get(0))
            .optional()
            .map_err(ctx("point failure"))?;
        if state != Some(JobState::Assigned) {
            return Ok((0, None));
        }
        // A point runs once in a job (a retry is a new job): one failure per job and point.
        let first = tx
            .execute(
                "INSERT INTO failed_runs(sweep_id, job_id, point_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![sweep_id, job.id, point_id],
            )
            .map_err(ctx("point failure"))?;
        if first == 0 {
            return Ok((0, None));
        }
        tx.execute(
            "INSERT INTO point_failures(sweep_id, point_id, host, attempts, error) VALUES (?1, ?2, ?3, 1, ?4)
             ON CONFLICT(sweep_id, point_id, host) DO UPDATE SET attempts = attempts + 1, error = excluded.error",
            params![sweep_id, point_id, failure_host, error],
        )
        .map_err(ctx("point failure"))?;
        let attempts: u32 = tx
            .query_row(
                "SELECT attempts FROM point_failures WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3",
                params![sweep_id, point_id, failure_host],
                |r| r.get(0),
            )
            .map_err(ctx("point failure"))?;
        let inserted = if attempts <= retries { insert_next_job(&tx, sweep_id, retry)? } else { None };
        supersede(&tx, sweep_id, point_id, host, &job.id)?;
        tx.commit().map_err(ctx("point failure"))?;
        Ok((attempts, inserted))
    }

    /// Moves the unfinished `points` of an assigned job (whose agent is lost) to a new job, in one
    /// transaction: the old job ends as reassigned with `reason`, the points' traces from `host` are set
    /// aside, and the job `make` builds from its number in the sweep is inserted (none when no point is
    /// left). Returns `(false, None)` when the job had already ended (its agent reported meanwhile).
    pub fn move_job(
        &mut self,
        job_id: &str,
        sweep_id: &str,
        host: &str,
        points: &[String],
        reason: &str,
        make: impl FnOnce(usize) -> Option<JobRow>,
    ) -> Result<(bool, Option<JobRow>)> {
        let tx = self.conn.transaction().map_err(ctx("move job"))?;
        let ended = tx
            .execute(
                "UPDATE jobs SET state = ?2, error = ?3 WHERE id = ?1 AND state = ?4",
                params![job_id, JobState::Reassigned, reason, JobState::Assigned],
            )
            .map_err(ctx("move job"))?;
        if ended == 0 {
            return Ok((false, None));
        }
        for p in points {
            supersede(&tx, sweep_id, p, host, job_id)?;
        }
        let inserted = if points.is_empty() { None } else { insert_next_job(&tx, sweep_id, make)? };
        tx.commit().map_err(ctx("move job"))?;
        Ok((true, inserted))
    }

    /// Failures of a sweep's points, by point and host (empty: counted for the point wherever it ran).
    pub fn point_failures(&self, sweep_id: &str) -> Result<Vec<PointFailure>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT point_id, host, attempts, error FROM point_failures WHERE sweep_id = ?1 ORDER BY point_id, host",
            )
            .map_err(ctx("point failures"))?;
        let rows = st
            .query_map([sweep_id], |r| {
                Ok(PointFailure { point: r.get(0)?, host: r.get(1)?, attempts: r.get(2)?, error: r.get(3)? })
            })
            .map_err(ctx("point failures"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(ctx("point failures"))
    }

    /// Complete traces of a point from one host.
    pub fn complete_traces(&self, sweep_id: &str, point_id: &str, host: &str) -> Result<u32> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM uploads WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND complete = 1 AND superseded = 0",
                params![sweep_id, point_id, host],
                |r| r.get(0),
            )
            .map_err(ctx("complete traces"))
    }

    /// Jobs not ended, of every sweep, oldest sweep first.
    pub fn open_jobs(&self) -> Result<Vec<JobRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT j.id, j.sweep_id, j.agent, j.assign, j.state, j.error FROM jobs j JOIN sweeps s ON s.id = j.sweep_id
                 WHERE j.state = ?1 ORDER BY s.created_ms, j.rowid",
            )
            .map_err(ctx("open jobs"))?;
        let rows = st.query_map([JobState::Assigned], Self::job_row).map_err(ctx("open jobs"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(ctx("open jobs"))
    }

    /// One job.
    pub fn job(&self, id: &str) -> Result<Option<JobRow>> {
        self.conn
            .query_row("SELECT id, sweep_id, agent, assign, state, error FROM jobs WHERE id = ?1", [id], Self::job_row)
            .optional()
            .map_err(ctx("job"))
    }

    /// The agent process (`Hello.instance`) a job was last sent to; empty when it was never sent.
    pub fn job_sent_to(&self, id: &str) -> Result<String> {
        self.conn
            .query_row("SELECT sent_to FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(ctx("job sent to"))
    }

    /// Records that a job was sent to the agent process `instance`.
    pub fn mark_sent(&self, id: &str, instance: &str) -> Result<()> {
        self.conn
            .execute("UPDATE jobs SET sent_to = ?2 WHERE id = ?1", params![id, instance])
            .map_err(ctx("mark sent"))?;
        Ok(())
    }

    /// Ends a job (only an assigned one: a late report does not change an ended job).
    pub fn end_job(&self, id: &str, state: JobState, error: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state = ?2, error = ?3 WHERE id = ?1 AND state = ?4",
                params![id, state, error, JobState::Assigned],
            )
            .map_err(ctx("end job"))?;
        Ok(n > 0)
    }

    fn upload_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
        Ok(UploadRow {
            key: UploadKey { sweep_id: r.get(0)?, point_id: r.get(1)?, host: r.get(2)?, trace_name: r.get(3)? },
            raw_size: r.get::<_, i64>(4)? as u64,
            gpu: r.get(5)?,
            committed_raw: r.get::<_, i64>(6)? as u64,
            stored_bytes: r.get::<_, i64>(7)? as u64,
            complete: r.get(8)?,
            sha256: r.get(9)?,
            parsed: r.get(10)?,
            telemetry: r.get(11)?,
            superseded: r.get(12)?,
            parse_error: r.get(13)?,
        })
    }

    /// The columns `upload_row` reads, in its order (a query that reads more puts them after these).
    const UPLOAD_COLS: &'static str = "sweep_id, point_id, host, trace_name, raw_size, gpu, committed_raw, stored_bytes, complete, sha256, parsed, telemetry, superseded, parse_error";

    /// An upload's state.
    pub fn upload(&self, k: &UploadKey) -> Result<Option<UploadRow>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {} FROM uploads WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND trace_name = ?4",
                    Self::UPLOAD_COLS
                ),
                params![k.sweep_id, k.point_id, k.host, k.trace_name],
                Self::upload_row,
            )
            .optional()
            .map_err(ctx("upload"))
    }

    /// The upload's row for `job_id`, created at offset 0 if new. A repeated open keeps the first declared
    /// size. A trace set aside by an earlier job (the point runs again on the same host, as `job_id`)
    /// starts over: the new run's data replaces it. The caller has checked that `job_id` runs the point
    /// (a superseded job never gets here).
    pub fn open_upload(
        &self,
        k: &UploadKey,
        job_id: &str,
        raw_size: u64,
        gpu: &str,
        telemetry: Option<&[u8]>,
    ) -> Result<UploadRow> {
        let mut file = stored_file_name(&k.trace_name);
        // A data dir from before the injective names may hold a trace under this file name already (`x/y`
        // was stored as `x__y.zst`): the new one gets a name of its own.
        let taken: bool = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM uploads WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND trace_name <> ?4
                   AND file = '' AND replace(trace_name, '/', '__') || '.zst' = ?5",
                params![k.sweep_id, k.point_id, k.host, k.trace_name, file],
                |r| r.get(0),
            )
            .map_err(ctx("open upload"))?;
        if taken {
            file = format!("~{file}");
        }
        self.conn
            .execute(
                "UPDATE uploads SET raw_size = ?5, gpu = ?6, committed_raw = 0, stored_bytes = 0, complete = 0,
                 sha256 = '', parsed = 0, summary = NULL, superseded = 0, telemetry = ?7, job_id = ?8,
                 parse_error = '', file = CASE WHEN file = '' THEN file ELSE ?9 END
                 WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND trace_name = ?4 AND superseded = 1
                   AND job_id <> ?8",
                params![k.sweep_id, k.point_id, k.host, k.trace_name, raw_size as i64, gpu, telemetry, job_id, file],
            )
            .map_err(ctx("open upload"))?;
        self.conn
            .execute(
                "INSERT INTO uploads(sweep_id, point_id, host, trace_name, raw_size, gpu, telemetry, job_id, file)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                params![k.sweep_id, k.point_id, k.host, k.trace_name, raw_size as i64, gpu, telemetry, job_id, file],
            )
            .map_err(ctx("open upload"))?;
        self.upload(k)?.ok_or(StoreError { what: "open upload", source: rusqlite::Error::QueryReturnedNoRows })
    }

    /// Whether `job_id` was relieved of `point_id` (the point failed there and runs again, or the job
    /// was reassigned).
    pub fn point_superseded(&self, sweep_id: &str, point_id: &str, job_id: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM superseded_points WHERE sweep_id = ?1 AND point_id = ?2 AND job_id = ?3",
                params![sweep_id, point_id, job_id],
                |r| r.get(0),
            )
            .map_err(ctx("point superseded"))
    }

    /// Commits an offset: the caller has synced the stored file up to `stored_bytes`.
    pub fn commit_upload(&self, k: &UploadKey, committed_raw: u64, stored_bytes: u64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE uploads SET committed_raw = ?5, stored_bytes = ?6
                 WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND trace_name = ?4 AND complete = 0",
                params![k.sweep_id, k.point_id, k.host, k.trace_name, committed_raw as i64, stored_bytes as i64],
            )
            .map_err(ctx("commit upload"))?;
        Ok(())
    }

    /// Marks an upload complete with its SHA-256, in one statement that checks again what the upload's
    /// open checked: the row is not set aside, its job was not relieved of the point nor reassigned, and
    /// the sweep runs (any of these may have changed while the bytes arrived). False when it was already
    /// complete or is no longer wanted (the caller tells which from the row).
    pub fn complete_upload(&self, k: &UploadKey, sha256: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE uploads SET complete = 1, sha256 = ?5
                 WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND trace_name = ?4 AND complete = 0
                   AND superseded = 0
                   AND NOT EXISTS (SELECT 1 FROM superseded_points sp WHERE sp.sweep_id = uploads.sweep_id
                                   AND sp.point_id = uploads.point_id AND sp.job_id = uploads.job_id)
                   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = uploads.job_id AND j.state = ?6)
                   AND EXISTS (SELECT 1 FROM sweeps s WHERE s.id = uploads.sweep_id AND s.state = ?7)",
                params![
                    k.sweep_id,
                    k.point_id,
                    k.host,
                    k.trace_name,
                    sha256,
                    JobState::Reassigned,
                    SqlSweepState(SweepState::Running)
                ],
            )
            .map_err(ctx("complete upload"))?;
        Ok(n > 0)
    }

    /// Marks an upload parsed but refused (`error`: file, place, reason), with an empty summary: it counts
    /// as handled, so the sweep can end, and its point lists why it has no data. Only for the complete
    /// upload of the bytes that were parsed (`sha256`); false when the row no longer holds them.
    pub fn set_refused(&self, k: &UploadKey, sha256: &str, summary: &[u8], error: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE uploads SET parsed = 1, summary = ?5, parse_error = ?6
                 WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND trace_name = ?4 AND complete = 1
                   AND sha256 = ?7",
                params![k.sweep_id, k.point_id, k.host, k.trace_name, summary, error, sha256],
            )
            .map_err(ctx("set refused"))?;
        Ok(n > 0)
    }

    /// Stores a parsed trace's summary (JSON). Like [`Store::set_refused`], only for the complete upload of
    /// the bytes parsed: a row that started over (its point runs again here, its file rewritten under the
    /// parse) waits for its new bytes' own parse. False when nothing was stored.
    pub fn set_parsed(&self, k: &UploadKey, sha256: &str, summary: &[u8]) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE uploads SET parsed = 1, summary = ?5, parse_error = ''
                 WHERE sweep_id = ?1 AND point_id = ?2 AND host = ?3 AND trace_name = ?4 AND complete = 1
                   AND sha256 = ?6",
                params![k.sweep_id, k.point_id, k.host, k.trace_name, summary, sha256],
            )
            .map_err(ctx("set parsed"))?;
        Ok(n > 0)
    }

    /// Complete uploads not parsed yet (after a restart: the parse queue is rebuilt from here).
    pub fn unparsed(&self) -> Result<Vec<UploadKey>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {} FROM uploads WHERE complete = 1 AND parsed = 0", Self::UPLOAD_COLS))
            .map_err(ctx("unparsed"))?;
        let rows = st.query_map([], Self::upload_row).map_err(ctx("unparsed"))?;
        rows.map(|r| r.map(|u| u.key)).collect::<rusqlite::Result<_>>().map_err(ctx("unparsed"))
    }

    /// Uploads of a sweep.
    pub fn uploads_of_sweep(&self, sweep_id: &str) -> Result<Vec<UploadRow>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM uploads WHERE sweep_id = ?1 ORDER BY point_id, host, trace_name",
                Self::UPLOAD_COLS
            ))
            .map_err(ctx("uploads"))?;
        let rows = st.query_map([sweep_id], Self::upload_row).map_err(ctx("uploads"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(ctx("uploads"))
    }

    /// Calls `f` with each parsed trace of a sweep and its summary (JSON), one at a time, on a separate
    /// read-only connection: a sweep of thousands of traces is never held in memory at once, and uploads
    /// of other sweeps are not blocked meanwhile (WAL lets readers run beside the writer).
    pub fn for_each_summary(
        dir: &Path,
        sweep_id: &str,
        mut f: impl FnMut(UploadRow, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let conn = Connection::open_with_flags(
            dir.join("state.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(ctx("open reader"))?;
        let mut st = conn
            .prepare(&format!(
                "SELECT {}, summary FROM uploads WHERE sweep_id = ?1 AND parsed = 1 AND superseded = 0
                 ORDER BY point_id, host, trace_name",
                Self::UPLOAD_COLS
            ))
            .map_err(ctx("summaries"))?;
        let mut rows = st.query([sweep_id]).map_err(ctx("summaries"))?;
        while let Some(r) = rows.next().map_err(ctx("summaries"))? {
            let row = Self::upload_row(r).map_err(ctx("summaries"))?;
            let json: Vec<u8> = r.get(14).map_err(ctx("summaries"))?;
            f(row, &json)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> UploadKey {
        UploadKey { sweep_id: "s".into(), point_id: "p".into(), host: "h".into(), trace_name: "t.json".into() }
    }

    fn running_sweep() -> SweepRow {
        SweepRow {
            id: "s".into(),
            name: "n".into(),
            spec: Vec::new(),
            state: SweepState::Running,
            created_ms: 0,
            finished_ms: 0,
        }
    }

    fn job(id: &str) -> JobRow {
        JobRow {
            id: id.into(),
            sweep_id: "s".into(),
            agent: "h".into(),
            assign: Vec::new(),
            state: JobState::Assigned,
            error: String::new(),
        }
    }

    #[test]
    fn an_upload_is_not_completed_once_its_job_no_longer_runs_its_point() {
        let d = tempfile::tempdir().expect("tmp");
        let mut s = Store::open(d.path()).expect("open");
        s.insert_sweep(&running_sweep(), &[job("j1")]).expect("sweep");
        // Opened while j1 ran the point; then the point failed there and runs again as j2.
        s.open_upload(&key(), "j1", 100, "gpu", None).expect("open upload");
        s.commit_upload(&key(), 100, 10).expect("commit");
        let (attempts, retry) =
            s.fail_point(&job("j1"), "p", "boom", 2, false, |n| Some(job(&format!("j{}", n + 1)))).expect("fail");
        assert_eq!((attempts, retry.map(|j| j.id)), (1, Some("j2".to_string())));
        // The same failure reported again (listed in the agent's next hello): not counted, no second retry.
        let again =
            s.fail_point(&job("j1"), "p", "boom", 2, false, |n| Some(job(&format!("j{}", n + 1)))).expect("again");
        assert_eq!((again.0, again.1.map(|j| j.id)), (0, None));
        let failure = PointFailure { point: "p".into(), host: String::new(), attempts: 1, error: "boom".into() };
        assert_eq!(s.point_failures("s").expect("failures"), vec![failure]);
        assert!(!s.complete_upload(&key(), "ab").expect("complete"), "a superseded run's trace is not completed");
        // A late failure report from a job that has ended changes nothing.
        s.end_job("j1", JobState::Reassigned, "moved").expect("end");
        assert_eq!(s.fail_point(&job("j1"), "p", "late", 2, false, |_| None).expect("late").0, 0);
        // The new run of the point starts the row over and completes it; an ended sweep takes nothing.
        let other = UploadKey { trace_name: "u.json".into(), ..key() };
        s.open_upload(&key(), "j2", 100, "gpu", None).expect("rerun");
        assert!(s.complete_upload(&key(), "cd").expect("complete"));
        s.open_upload(&other, "j2", 100, "gpu", None).expect("open");
        s.finish_sweep("s", SweepState::Cancelled).expect("finish");
        assert!(!s.complete_upload(&other, "ef").expect("complete"), "the sweep has ended");
    }

    #[test]
    fn a_deleted_sweep_leaves_no_row_in_any_table() {
        let d = tempfile::tempdir().expect("tmp");
        let mut s = Store::open(d.path()).expect("open");
        s.insert_sweep(&running_sweep(), &[job("j1")]).expect("sweep");
        s.open_upload(&key(), "j1", 100, "gpu", None).expect("open upload");
        s.fail_point(&job("j1"), "p", "boom", 2, false, |n| Some(job(&format!("j{}", n + 1)))).expect("fail");
        let rows = |s: &Store| -> Vec<(String, i64)> {
            let tables = sweep_tables(&s.conn).expect("tables");
            tables
                .into_iter()
                .map(|t| {
                    let q = format!("SELECT COUNT(*) FROM \"{t}\" WHERE sweep_id = 's'");
                    let n = s.conn.query_row(&q, [], |r| r.get(0)).expect("count");
                    (t, n)
                })
                .collect()
        };
        let before = rows(&s);
        for t in ["uploads", "jobs", "point_failures", "failed_runs", "superseded_points"] {
            assert!(before.iter().any(|(name, n)| name == t && *n > 0), "{t} has rows of the sweep: {before:?}");
        }
        assert!(s.delete_sweep("s").expect("delete"));
        assert!(rows(&s).iter().all(|(_, n)| *n == 0), "{:?}", rows(&s));
        assert!(s.sweep("s").expect("query").is_none());
    }

    #[test]
    fn an_each_sweeps_failures_count_per_host_and_a_last_failure_sets_its_traces_aside() {
        let d = tempfile::tempdir().expect("tmp");
        let mut s = Store::open(d.path()).expect("open");
        let on = |host: &str, id: &str| JobRow { agent: host.into(), ..job(id) };
        s.insert_sweep(&running_sweep(), &[on("h", "j1"), on("g", "j2")]).expect("sweep");
        let retry = |host: &'static str| move |n: usize| Some(on(host, &format!("j{}", n + 1)));
        // p fails on h: its retry runs on h; p's failure on g is its first there, not h's second.
        assert_eq!(s.fail_point(&on("h", "j1"), "p", "oom", 1, true, retry("h")).expect("h").0, 1);
        assert_eq!(s.fail_point(&on("g", "j2"), "p", "oom", 1, true, retry("g")).expect("g").0, 1);
        // h's retry (j3) wrote a trace, then failed too: the last failure there, no retry, and its
        // partial trace is set aside rather than counted as the point's data.
        s.open_upload(&key(), "j3", 100, "gpu", None).expect("open upload");
        s.commit_upload(&key(), 100, 10).expect("commit");
        assert!(s.complete_upload(&key(), "ab").expect("complete"));
        let (attempts, retry_job) = s.fail_point(&on("h", "j3"), "p", "oom", 1, true, retry("h")).expect("h again");
        assert_eq!((attempts, retry_job), (2, None));
        assert!(s.upload(&key()).expect("query").expect("row").superseded, "the failed run's trace is set aside");
        assert!(s.point_superseded("s", "p", "j3").expect("superseded"), "its late uploads are refused");
        let failures: Vec<(String, u32)> =
            s.point_failures("s").expect("failures").into_iter().map(|f| (f.host, f.attempts)).collect();
        assert_eq!(failures, vec![("g".to_string(), 1), ("h".to_string(), 2)]);
    }

    #[test]
    fn point_failures_from_before_hosts_are_kept_as_the_points() {
        let d = tempfile::tempdir().expect("tmp");
        {
            let s = Store::open(d.path()).expect("open");
            s.conn
                .execute_batch(
                    "DROP TABLE point_failures;
                     CREATE TABLE point_failures (
                        sweep_id TEXT NOT NULL, point_id TEXT NOT NULL, attempts INTEGER NOT NULL, error TEXT NOT NULL,
                        PRIMARY KEY (sweep_id, point_id));
                     INSERT INTO point_failures VALUES ('s', 'p', 2, 'oom');",
                )
                .expect("the old table");
        }
        let s = Store::open(d.path()).expect("reopen");
        let want = PointFailure { point: "p".into(), host: String::new(), attempts: 2, error: "oom".into() };
        assert_eq!(s.point_failures("s").expect("failures"), vec![want]);
    }

    #[test]
    fn upload_lifecycle_survives_reopen() {
        let d = tempfile::tempdir().expect("tmp");
        {
            let mut s = Store::open(d.path()).expect("open");
            s.insert_sweep(&running_sweep(), &[]).expect("sweep");
            let u = s.open_upload(&key(), "j1", 100, "gpu", Some(b"tele")).expect("open upload");
            assert_eq!((u.committed_raw, u.complete), (0, false));
            s.commit_upload(&key(), 60, 10).expect("commit");
            assert!(s.complete_upload(&key(), "ab").expect("complete"));
            assert!(!s.complete_upload(&key(), "ab").expect("complete again"));
            s.commit_upload(&key(), 1, 1).expect("no effect once complete");
        }
        let s = Store::open(d.path()).expect("reopen");
        let u = s.upload(&key()).expect("query").expect("row");
        assert_eq!((u.committed_raw, u.stored_bytes, u.complete, u.raw_size), (60, 10, true, 100));
        assert_eq!(u.telemetry.as_deref(), Some(&b"tele"[..]));
        assert_eq!(s.unparsed().expect("unparsed"), vec![key()]);
        assert!(!s.set_parsed(&key(), "other bytes", b"{}").expect("parsed"), "another upload's parse");
        assert!(s.set_parsed(&key(), "ab", b"{}").expect("parsed"));
        assert!(s.unparsed().expect("unparsed").is_empty());
    }

    #[test]
    fn state_from_before_telemetry_gains_the_column() {
        let d = tempfile::tempdir().expect("tmp");
        {
            let c = Connection::open(d.path().join("state.db")).expect("db");
            c.execute_batch(
                "CREATE TABLE uploads (
                    sweep_id TEXT NOT NULL, point_id TEXT NOT NULL, host TEXT NOT NULL, trace_name TEXT NOT NULL,
                    raw_size INTEGER NOT NULL, gpu TEXT NOT NULL, committed_raw INTEGER NOT NULL DEFAULT 0,
                    stored_bytes INTEGER NOT NULL DEFAULT 0, complete INTEGER NOT NULL DEFAULT 0,
                    sha256 TEXT NOT NULL DEFAULT '', parsed INTEGER NOT NULL DEFAULT 0, summary BLOB,
                    superseded INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sweep_id, point_id, host, trace_name));
                 INSERT INTO uploads(sweep_id, point_id, host, trace_name, raw_size, gpu) VALUES ('s', 'p', 'h', 't.json', 7, 'g');",
            )
            .expect("old schema");
        }
        let s = Store::open(d.path()).expect("open old state");
        let u = s.upload(&key()).expect("query").expect("row kept");
        assert_eq!((u.raw_size, u.telemetry), (7, None));
        drop(s);
        Store::open(d.path()).expect("opening twice adds nothing");
    }
}
