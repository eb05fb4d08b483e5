#!/usr/bin/env bash
# Sets up what the tests need, then runs every test: the Helm chart offline, the event-handler
# stand-in (Go, against nginx), eventplug's images, the Rust workspace (unit, integration and
# end-to-end tests with nginx, the C plugin, `eventplug new` projects, real pods and the chart
# installed), the AssemblyScript SDK and examples with the real compiler through `eventplug
# test`, then the Kubernetes demo.
set -euo pipefail
cd "$(dirname "$0")/.."
# Stage marks for .ci/run's timeline (no-ops outside CI).
ci_mark() { [[ -z "${EVENTPLUG_CI_TIMELINE:-}" ]] || printf '%s %s %s\n' "$(date +%s)" "$1" "$2" >>"$EVENTPLUG_CI_TIMELINE"; }
bash scripts/setup.sh
# The Helm chart, offline: lint, renders with default and non-default values checked against the
# Kubernetes 1.25 and 1.33 schemas, values.schema.json, RBAC, the CRDs and the values table
# (seconds; the chart is installed for real by tests/harness/tests/chart.rs).
ci_mark 120 "chart: helm lint, render, schema checks (helm-python-sdk, kubernetes-validate)"
python3 tests/chart/check.py
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
ci_mark 900 "eventplug release build + its images (sidecar, operator, event-handler stand-in)"
cargo build --release -p eventplug -p eventplug-operator
bash tests/cluster/eventplug-images.sh push
ci_mark 1200 "cargo test --no-run (workspace debug build)"
cargo test --workspace --all-targets --no-run
ci_mark 600 "cargo test (workspace)"
cargo test --workspace --all-targets
ci_mark 900 "eventplug build + SDK and example tests (npm)"
cargo build --bin eventplug
EVENTPLUG_BIN="${CARGO_TARGET_DIR:-$(pwd)/target}/debug/eventplug" bash scripts/test-sdk.sh
# The README's first command, on the examples the SDK tests just built: the chart, the two
# EventPlugins, the sample events; it fails when a redacted field reaches fluentd.
ci_mark 600 "the Kubernetes demo (scripts/demo.sh's path)"
cargo build --release -p eventplug-harness --bin eventplug-demo
"${CARGO_TARGET_DIR:-$(pwd)/target}/release/eventplug-demo" \
  --redact examples/redact/build/release.wasm \
  --skip examples/skip/build/release.wasm \
  --events examples/events/sample.jsonl
