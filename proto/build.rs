//! Generates the Rust types of `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/tracefleet/v1/inventory.proto",
        "proto/tracefleet/v1/control.proto",
        "proto/tracefleet/v1/upload.proto",
        "proto/tracefleet/v1/sweeps.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
