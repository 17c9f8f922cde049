//! Sweep files (TOML): what users write, validated with every error at once (file, line, column and a
//! hint), and expanded into points. See `docs/sweep.md`.

mod diag;
mod spec;

pub use diag::{Diagnostic, SweepErrors};
pub use spec::{
    ATTENTION, AgentSelector, Backend, GpuTable, Mode, Placement, Point, Profiler, Replay, Sweep, TorchTable,
    UnknownName, VllmTable, parse,
};
