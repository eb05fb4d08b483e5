#!/usr/bin/env bash
# The main job on its built-in default, on Kubernetes: starts the local single-node cluster
# (tests/cluster/cluster.sh: its binaries are built the first time, about 10 minutes, with
# progress; seconds when cached), builds eventplug's images and the bundled `redact` and `skip`
# examples, installs the operator chart, pushes the examples to the cluster's registry, deploys
# event-handler (the stand-in) in the official chart's shape, applies two EventPlugins, waits for
# them to be Ready, replays the bundled sample events through event-handler and prints what
# reached fluentd. The cluster keeps running (namespace eventplug-demo) until
# `bash tests/cluster/cluster.sh down`.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$(pwd)/target}"
step() { printf '==> %s\n' "$*"; }
step "setting up (scripts/setup.sh)"
bash scripts/setup.sh
bash tests/cluster/cluster.sh packages
step "the local Kubernetes cluster"
bash tests/cluster/cluster.sh build
bash tests/cluster/cluster.sh up
step "building eventplug (release), its images and the demo"
cargo build --release --quiet -p eventplug -p eventplug-operator
cargo build --release --quiet -p eventplug-harness --bin eventplug-demo
bash tests/cluster/eventplug-images.sh push >/dev/null
step "building the redact and skip examples (AssemblyScript)"
for dir in sdk/assemblyscript examples/redact examples/skip; do
  (cd "$dir" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null)
done
for dir in examples/redact examples/skip; do
  (cd "$dir" && npm run --silent asbuild:release >/dev/null)
done
"$target/release/eventplug-demo" \
  --redact examples/redact/build/release.wasm \
  --skip examples/skip/build/release.wasm \
  --events examples/events/sample.jsonl
