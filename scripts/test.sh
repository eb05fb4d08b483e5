#!/usr/bin/env bash
# Sets up what the tests need, then runs every test: the event-handler stand-in (Go, against
# nginx), eventplug's cluster images, the Rust workspace (unit, integration and end-to-end tests
# with nginx, the C plugin, `eventplug new` projects and real pods), then the AssemblyScript SDK
# and examples with the real compiler through `eventplug test`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Stage marks for .ci/run's timeline (no-ops outside CI).
ci_mark() { [[ -z "${EVENTPLUG_CI_TIMELINE:-}" ]] || printf '%s %s %s\n' "$(date +%s)" "$1" "$2" >>"$EVENTPLUG_CI_TIMELINE"; }
bash scripts/setup.sh
# The event-handler stand-in that the operator's pods run: built with Debian's Go, then tested
# end to end against nginx (seconds).
ci_mark 180 "event-handler stand-in: build, unit tests, end to end with nginx"
bash tests/stand-ins/event-handler/test.sh
# The shared test cluster (docs/testing.md): built on first use (minutes, with progress), then
# started in seconds; left running for the next run to reuse.
ci_mark 1200 "cluster: build the Kubernetes binaries (cold: about 10 min; cached: 0 s)"
bash tests/cluster/cluster.sh build
ci_mark 120 "cluster: up"
bash tests/cluster/cluster.sh up
# eventplug's images for the cluster's pods (docs/testing.md): the sidecar holds the release
# binary, so it is built first; the harness tests in `cargo test --workspace` then find both
# images in the cache and the registry.
ci_mark 900 "eventplug release build + its cluster images (sidecar, event-handler stand-in)"
cargo build --release -p eventplug
bash tests/cluster/eventplug-images.sh push
ci_mark 900 "cargo test --no-run (workspace debug build, and the operator binary its tests run)"
cargo test --workspace --all-targets --no-run
cargo build -p eventplug-operator --bin eventplug-operator
ci_mark 600 "cargo test (workspace)"
cargo test --workspace --all-targets
ci_mark 900 "eventplug build + SDK and example tests (npm)"
cargo build --bin eventplug
EVENTPLUG_BIN="${CARGO_TARGET_DIR:-$(pwd)/target}/debug/eventplug" bash scripts/test-sdk.sh
