#!/usr/bin/env bash
# Builds the AssemblyScript SDK and every AssemblyScript example with the real asc and runs their
# tests (`npm test`: asbuild, then `eventplug test --build build/test.wasm`).
#
# Needs node 20+ and npm, `eventplug` on PATH (or EVENTPLUG_BIN naming the binary), and protoc with
# the protobuf well-known types (bash scripts/setup.sh installs them). Installs the npm dependencies
# with `npm ci` from the committed package-lock.json files, from the npm cache (~/.npm) when it
# already holds them. First checks that the generated SDK files are what `npm run generate` makes
# from the committed inputs (proto/ and sdk/assemblyscript/reference/), and fails when it cannot.
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

echo "== sdk/assemblyscript: generated files are up to date"
command -v protoc >/dev/null ||
  fail "protoc is missing, so the generated SDK files cannot be checked: install protobuf-compiler and libprotobuf-dev (bash scripts/setup.sh does)"
(cd sdk/assemblyscript && npm run --silent generate:check) ||
  fail "the generated SDK files are not what 'npm run generate' makes (above): run it in sdk/assemblyscript and commit the result"

echo "== sdk/assemblyscript: npm test"
(cd sdk/assemblyscript && npm test) || fail "the SDK's tests failed"

# expect_refused_config PLUGIN CONFIG MESSAGE: `eventplug run` does not load PLUGIN with CONFIG, and
# says MESSAGE.
expect_refused_config() {
  local refusal status
  set +e
  refusal=$(eventplug run --plugin "$1" --plugin-config "$2" </dev/null 2>&1)
  status=$?
  set -e
  [ "$status" -eq 2 ] || fail "$1 with the config $2: expected exit code 2 from eventplug run, got $status: $refusal"
  [[ "$refusal" == *"$3"* ]] || fail "$1 with the config $2: the plugin's message ($3) is missing: $refusal"
}

echo "== sdk/assemblyscript: a refused config stops the plugin from loading"
expect_refused_config sdk/assemblyscript/build/release.wasm '{"reject": true}' "rejected as the config asks"

# Each edit aborts the call (so `eventplug test` cannot run it): one event per edit, each must fail.
echo "== sdk/assemblyscript: an edit of a key that identifies the event aborts the call"
identity_edits=(event:set uid:set time:set ei:set code:set sid:set uid:remove time:nested)
events=""
for edit in "${identity_edits[@]}"; do
  key=${edit%%:*}
  how=${edit#*:}
  events+='{"sdk_check":"edit-identity","sdk_key":"'$key'","sdk_edit":"'$how'","event":"user.login",'
  events+='"uid":"identity-'$key-$how'","time":"2024-02-23T18:56:50Z","ei":0,"code":"T1000I","sid":"s-1"}'$'\n'
done
report=$(printf '%s' "$events" | eventplug run --plugin sdk/assemblyscript/build/release.wasm 2>&1 >/dev/null) ||
  fail "eventplug run failed on the identity edits: $report"
refused=$(grep 'identifies the event' <<<"$report" | grep -o '^event [0-9]*' | sort -u | wc -l || true)
[ "$refused" -eq "${#identity_edits[@]}" ] ||
  fail "identity edits: expected ${#identity_edits[@]} events to fail naming the key that identifies the event, $refused did: $report"

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
  # The SDK's asc transform names the SDK in every module, for `eventplug push` and `inspect`.
  sdk_section=$(node -e '
    const sections = WebAssembly.Module.customSections(
      new WebAssembly.Module(require("fs").readFileSync(process.argv[1])), "eventplug.sdk");
    process.stdout.write(sections.map((s) => Buffer.from(s).toString()).join(","));' "$dir/build/release.wasm")
  expected="eventplug-sdk $(node -p "require('$root/sdk/assemblyscript/package.json').version")"
  [ "$sdk_section" = "$expected" ] ||
    fail "$dir/build/release.wasm: its eventplug.sdk section is \"$sdk_section\", not \"$expected\""
done

echo "== examples/redact: a config naming a key that identifies the event is refused"
expect_refused_config examples/redact/build/release.wasm '{"fields": ["addr.remote", ["uid"]]}' '"uid", which identifies the event'

echo "test-sdk: the SDK and ${#examples[@]} examples built and passed their tests"
