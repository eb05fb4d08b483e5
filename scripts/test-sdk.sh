#!/usr/bin/env bash
# Builds the AssemblyScript SDK and every AssemblyScript example with the real asc and runs their
# tests (`npm test`: asbuild, then `eventplug test --build build/test.wasm`).
#
# Needs node 20+ and npm, and `eventplug` on PATH (or EVENTPLUG_BIN naming the binary). Installs the
# npm dependencies with `npm ci` from the committed package-lock.json files, from the npm cache
# (~/.npm) when it already holds them. When the Teleport reference tables sit beside the repository
# (../shared) and protoc is installed, it also checks that the generated SDK files are up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

fail() {
  echo "test-sdk: $*" >&2
  exit 1
}

if [ -n "${EVENTPLUG_BIN:-}" ]; then
  [ -x "$EVENTPLUG_BIN" ] || fail "EVENTPLUG_BIN=$EVENTPLUG_BIN is not an executable"
  PATH="$(cd "$(dirname "$EVENTPLUG_BIN")" && pwd):$PATH"
fi
command -v eventplug >/dev/null ||
  fail "eventplug is not on PATH: build it (cargo build --release) and put its folder on PATH, or set EVENTPLUG_BIN"
eventplug test --help >/dev/null 2>&1 || fail "$(command -v eventplug) has no 'test' subcommand: rebuild it"
command -v node >/dev/null || fail "node is missing: install Node.js 20 or newer"
command -v npm >/dev/null || fail "npm is missing: install Node.js 20 or newer"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || fail "node $(node --version) is too old: AssemblyScript 0.28 needs Node.js 20 or newer"

examples=(trace modify skip count redact alert)
npm_ci() {
  (cd "$1" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) || fail "npm ci failed in $1"
}

echo "== sdk/assemblyscript: npm ci"
npm_ci sdk/assemblyscript

if [ -d ../shared/reference ] && command -v protoc >/dev/null && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "== sdk/assemblyscript: generated files are up to date"
  (cd sdk/assemblyscript && npm run --silent generate >/dev/null) || fail "npm run generate failed in sdk/assemblyscript"
  generated=(sdk/assemblyscript/assembly/generated sdk/fixture-templates.json sdk/prototype-fields.json)
  if ! git diff --quiet -- "${generated[@]}" || [ -n "$(git ls-files --others --exclude-standard -- "${generated[@]}")" ]; then
    git status --short -- "${generated[@]}" >&2
    fail "the generated SDK files differ from the output of 'npm run generate' (above): commit them"
  fi
else
  echo "== sdk/assemblyscript: generated files not checked (needs ../shared/reference, protoc and a git checkout)"
fi

echo "== sdk/assemblyscript: npm test"
(cd sdk/assemblyscript && npm test) || fail "the SDK's tests failed"

echo "== sdk/assemblyscript: a refused config stops the plugin from loading"
set +e
refusal=$(eventplug run --plugin sdk/assemblyscript/build/release.wasm --plugin-config '{"reject": true}' </dev/null 2>&1)
status=$?
set -e
[ "$status" -eq 2 ] || fail "a refused config: expected exit code 2 from eventplug run, got $status: $refusal"
[[ "$refusal" == *"rejected as the config asks"* ]] || fail "a refused config: the plugin's message is missing: $refusal"

for example in "${examples[@]}"; do
  dir=examples/$example
  [ -f "$dir/package.json" ] || fail "$dir/package.json is missing"
  dependency=$(node -p "require('$root/$dir/package.json').dependencies['eventplug-sdk']")
  [ "$dependency" = "file:../../sdk/assemblyscript" ] ||
    fail "$dir/package.json must depend on \"eventplug-sdk\": \"file:../../sdk/assemblyscript\" (has \"$dependency\")"
  echo "== $dir: npm ci"
  npm_ci "$dir"
  echo "== $dir: npm test"
  (cd "$dir" && npm test) || fail "the tests of $dir failed"
done

echo "test-sdk: the SDK and ${#examples[@]} examples built and passed their tests"
