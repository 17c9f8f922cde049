//! The state columns of the database: job states, and sweep states as the proto enum, stored as the lower
//! case words earlier versions wrote (`assigned`, `running`, ...), so a database from before reads the same.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use tracefleet_proto::v1::SweepState;

/// Where a job is. `Assigned` until the agent reports it (or it is cancelled or moved); the others are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Sent (or waiting to be sent) to its agent.
    Assigned,
    /// The agent reported every point done.
    Done,
    /// The agent reported the job failed.
    Failed,
    /// The sweep was cancelled before the job ended.
    Cancelled,
    /// Its agent was lost; its unfinished points went to another agent as a new job.
    Reassigned,
}

impl JobState {
    const ALL: [JobState; 5] =
        [JobState::Assigned, JobState::Done, JobState::Failed, JobState::Cancelled, JobState::Reassigned];

    /// The word in the `jobs.state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Assigned => "assigned",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Reassigned => "reassigned",
        }
    }

    /// Whether the job has ended.
    pub fn terminal(self) -> bool {
        !matches!(self, JobState::Assigned)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JobState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        JobState::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| FromSqlError::Other(format!("unknown job state {s:?}").into()))
    }
}

/// A sweep state in the `sweeps.state` column (the proto enum is foreign to this crate, so this wrapper
/// carries the SQL conversions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SqlSweepState(pub SweepState);

impl ToSql for SqlSweepState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let name = self
            .0
            .name()
            .ok_or_else(|| rusqlite::Error::ToSqlConversionFailure("an unspecified sweep state".into()))?;
        Ok(ToSqlOutput::from(name))
    }
}

impl FromSql for SqlSweepState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        SweepState::from_name(s)
            .map(SqlSweepState)
            .ok_or_else(|| FromSqlError::Other(format!("unknown sweep state {s:?}").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_round_trip_through_the_column() {
        let c = rusqlite::Connection::open_in_memory().expect("db");
        for j in JobState::ALL {
            let back: JobState = c.query_row("SELECT ?1", [j], |r| r.get(0)).expect("reads");
            assert_eq!(back, j);
        }
        let bad: rusqlite::Result<JobState> = c.query_row("SELECT 'finished'", [], |r| r.get(0));
        assert!(bad.is_err_and(|e| e.to_string().contains("unknown job state \"finished\"")));
    }
}
