//! Log lines and progress bars on one stderr. `coord sweep` draws its bars through the one
//! [`progress`] `MultiProgress`; every log line is written while the bars are suspended (cleared, then
//! redrawn below the line), so neither garbles the other when `--local` runs an agent and a coordinator in
//! the same process.

use std::io::{self, Write};
use std::sync::OnceLock;

use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;

static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// The process's progress bars (drawn on stderr).
pub fn progress() -> MultiProgress {
    BARS.get_or_init(MultiProgress::new).clone()
}

/// Makes [`LineWriter`]s for the log subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

/// Writes one formatted log line to stderr, with the progress bars (if any are drawn) out of its way.
#[derive(Debug)]
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match BARS.get() {
            Some(bars) => bars.suspend(|| io::stderr().write_all(buf)).map(|()| buf.len()),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
