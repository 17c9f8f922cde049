//! What a results directory holds besides its tables, derived from the tables as written: the latency
//! models (`models.json`), Vidur-style profiles (`vidur/`) and the report (`report.html`).
//!
//! Everything here reads the directory back ([`crate::results::Results`]) rather than the in-memory
//! aggregate, so a sweep's end, `coord ingest` and `coord report DIR` give the same files from the same
//! tables, and data flows one way: traces → aggregate → tables → derived outputs.

use std::path::{Path, PathBuf};

use crate::latency;
use crate::report::{self, ReportError};
use crate::results::{Results, ResultsError};

/// Why the derived outputs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DerivedError {
    /// The tables could not be read back.
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A file could not be written.
    #[error("writing into {dir}: {source}")]
    Io {
        /// The results directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl DerivedError {
    /// The I/O error underneath, if any (a full disk is retried by the coordinator).
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            DerivedError::Io { source, .. }
            | DerivedError::Results(ResultsError::Io { source, .. })
            | DerivedError::Report(ReportError::Io { source, .. }) => Some(source),
            _ => None,
        }
    }
}

/// Reads the tables in `dir` and writes the derived outputs beside them; returns the paths written.
/// `final_dir` is where the directory will be read from (the coordinator writes into a temporary folder
/// and moves it into place): the report names that one.
pub fn write_derived(dir: &Path, final_dir: &Path) -> Result<Vec<PathBuf>, DerivedError> {
    let mut results = Results::read(dir)?;
    results.dir = final_dir.to_path_buf();
    let io = |source| DerivedError::Io { dir: dir.to_path_buf(), source };
    let models = latency::build(&results);
    let mut written = vec![latency::write_models(dir, &models).map_err(io)?];
    written.extend(latency::vidur::write_vidur(dir, &results).map_err(io)?);
    written.push(report::write(dir, &results, &models)?);
    Ok(written)
}
