#!/usr/bin/env bash
# Builds the event-handler stand-in with Debian's Go, offline, in GOPATH mode: a throwaway GOPATH
# whose src/ links Debian's packaged sources of kong and go-toml (/usr/share/gocode/src) beside a
# copy of this folder; no module proxy, no network.
#
#   build.sh [OUT]          build a static binary (default: ~/.cache/eventplug/stand-ins/teleport-plugin)
#   build.sh --check [OUT]  first gofmt, go vet and the unit tests (main_test.go), then the same
#
# Needs the Debian packages golang-go, golang-github-alecthomas-kong-dev (kong 0.7.1) and
# golang-github-pelletier-go-toml-dev (go-toml 1.9.4); scripts/setup.sh installs them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GOCODE=/usr/share/gocode/src
DEPS=(github.com/alecthomas/kong github.com/pelletier/go-toml)
PKG=eventplug.dev/stand-ins/teleport-plugin

die() {
  echo "build.sh: error: $*" >&2
  exit 1
}

command -v go >/dev/null || die "go is missing: apt-get install golang-go (or run scripts/setup.sh)"
for dep in "${DEPS[@]}"; do
  [[ -d "$GOCODE/$dep" ]] || die "$GOCODE/$dep is missing: apt-get install golang-github-alecthomas-kong-dev \
golang-github-pelletier-go-toml-dev (or run scripts/setup.sh)"
done

check=false
[[ "${1:-}" == --check ]] && check=true && shift
out="${1:-$HOME/.cache/eventplug/stand-ins/teleport-plugin}"
[[ "$out" == /* ]] || out="$PWD/$out"

work="$(mktemp -d "${TMPDIR:-/tmp}/eventplug-standin-build.XXXXXX")"
trap 'rm -rf --one-file-system "$work"' EXIT
for dep in "${DEPS[@]}"; do
  mkdir -p "$work/gopath/src/$(dirname "$dep")"
  ln -s "$GOCODE/$dep" "$work/gopath/src/$dep"
done
mkdir -p "$work/gopath/src/$PKG"
cp "$HERE"/*.go "$work/gopath/src/$PKG/"

export GO111MODULE=off GOPATH="$work/gopath" GOCACHE="$work/cache" GOPROXY=off GOFLAGS='' CGO_ENABLED=0
cd "$work/gopath/src/$PKG"

if $check; then
  unformatted="$(gofmt -l .)"
  [[ -z "$unformatted" ]] || die "not gofmt-formatted (run gofmt -w on them): $unformatted"
  go vet .
  go test -count=1 .
fi
mkdir -p "$(dirname "$out")"
go build -ldflags='-s -w' -o "$out" .
echo "$out"
