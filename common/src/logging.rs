//! Logging for both binaries: `tracing` events written by `tracing-subscriber`, one line each, with a
//! timestamp, the level and the component (the module that logged: `tracefleet_coordinator::parse`,
//! `tracefleet_agent::control`, ...), so the coordinator's and the agent's lines stay apart even when
//! `coord sweep --local` runs both in one process.
//!
//! What is logged is chosen by `RUST_LOG` (`tracing-subscriber`'s `EnvFilter` syntax, e.g.
//! `RUST_LOG=debug` or `RUST_LOG=tracefleet_agent=debug,info`); `info` when unset. `--log-format json`
//! writes one JSON object per line (`timestamp`, `level`, `target`, `fields`) for log collectors.
//!
//! What a command answers (tables, summaries, `coord status`) is its output, not a log: it goes to stdout
//! or stderr as plain text.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-11-29T22:41:07.123Z  INFO tracefleet_agent::control: connected to ...`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Neither `text` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format `{0}`; expected text or json")]
pub struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, UnknownLogFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.into())),
        }
    }
}

/// An invalid `RUST_LOG`.
#[derive(Debug, thiserror::Error)]
#[error("RUST_LOG: {0}")]
pub struct BadFilter(#[from] tracing_subscriber::filter::FromEnvError);

/// Installs the global subscriber writing to `writer` (stderr, or a writer that keeps progress bars
/// intact); `ansi` colours the level in text lines. A second call in the same process (tests running
/// several commands) leaves the first in place.
///
/// # Errors
/// `RUST_LOG` is set but does not parse.
pub fn init<W>(format: LogFormat, writer: W, ansi: bool) -> Result<(), BadFilter>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder().with_default_directive(tracing::Level::INFO.into()).from_env()?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(true);
    // Err only when a subscriber is already set: keep it.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!(
            "xml".parse::<LogFormat>().map_err(|e| e.to_string()),
            Err("unknown log format `xml`; expected text or json".into())
        );
    }
}
