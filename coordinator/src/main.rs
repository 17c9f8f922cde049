//! `coord`: the tracefleet coordinator and command-line interface.

fn main() -> std::process::ExitCode {
    tracefleet_coordinator::cli::main()
}
