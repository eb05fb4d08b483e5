#!/usr/bin/env bash
# Sets up what the tests need, then runs every test: the Rust workspace (unit, integration and
# end-to-end tests with nginx, the C plugin and `eventplug new` projects), then the AssemblyScript
# SDK and examples with the real compiler through `eventplug test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-targets
cargo build --bin eventplug
EVENTPLUG_BIN="${CARGO_TARGET_DIR:-$(pwd)/target}/debug/eventplug" bash scripts/test-sdk.sh
