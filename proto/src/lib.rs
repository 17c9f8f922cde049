//! Wire types of tracefleet, generated from the `.proto` files under `proto/proto`.
//!
//! The package is versioned (`tracefleet.v1`); every message is documented in its `.proto` file.

/// `tracefleet.v1`: inventory, control, upload and sweep messages.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tracefleet.v1.rs"));
}
