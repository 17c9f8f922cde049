//! `agent`: the tracefleet agent that runs on every GPU host.

fn main() -> std::process::ExitCode {
    tracefleet_agent::cli::main()
}
