#!/usr/bin/env bash
# The operator at scale on the test cluster (docs/performance.md, "The operator"): 100 EventPlugins
# over 10 event-handler Deployments with real pods, beside 5,000 unrelated ConfigMaps; prints the
# time to every EventPlugin Ready, the time for a config change of all of them to run in every
# sidecar, and the operator's memory and metrics. The operator is installed from the chart, from
# its image of the release build.
#
#   bash scripts/bench-operator.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eventplug/target}"
bash tests/cluster/cluster.sh up
cargo build --release -p eventplug -p eventplug-operator
bash tests/cluster/eventplug-images.sh push >/dev/null
cargo bench -p eventplug-harness --bench operator
