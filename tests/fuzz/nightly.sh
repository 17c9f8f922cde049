#!/usr/bin/env bash
# The fuzz targets of tests/tests/fuzz.rs for longer than CI gives them (default an hour each), in a
# release build. A failure prints the seed that reproduces it; add the input to tests/fuzz/corpus/.
#   tests/fuzz/nightly.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes="${1:-60}"
TRACEFLEET_FUZZ_MS=$((minutes * 60 * 1000)) cargo test --release --locked -p tracefleet-tests --test fuzz -- --test-threads 2
