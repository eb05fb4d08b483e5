#!/usr/bin/env bash
# Builds build/c-filter.wasm with Debian's clang-14 and lld-14 (no libc, no WASI).
set -euo pipefail
cd "$(dirname "$0")"
command -v clang-14 >/dev/null || { echo "clang-14 is missing: apt-get install clang-14 lld-14" >&2; exit 1; }
mkdir -p build
clang-14 --target=wasm32 -O2 -nostdlib -Wall -Werror -Wl,--no-entry -Wl,--strip-all \
  -o build/c-filter.wasm plugin.c
echo "built $(pwd)/build/c-filter.wasm"
