#!/usr/bin/env bash
# The quick demo, without Kubernetes: builds eventplug and the bundled C plugin, then runs the
# plugin on the bundled sample audit events. Forwarded events go to stdout, plugin logs, effects
# and the summary to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash examples/c-filter/build.sh >&2
cargo build --release --quiet --bin eventplug
cargo run --release --quiet --bin eventplug -- run \
  --plugin examples/c-filter/build/c-filter.wasm \
  --plugin-config '{"drop": ["role.created"]}' \
  < examples/events/sample.jsonl
