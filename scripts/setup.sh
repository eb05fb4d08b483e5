#!/usr/bin/env bash
# Installs what building and testing eventplug needs and is not already here:
#   protoc and the protobuf well-known types (build), clang-14 + lld-14 (the C example plugin),
#   nginx and openssl (the fluentd stand-in with mTLS in the sidecar tests), wrk (benchmarks),
#   node and npm (the AssemblyScript SDK; Node.js 20 or newer, which this machine kind ships),
#   docker-registry and skopeo (the OCI tests' registry and inspector), PyPI's oras (interop tests),
#   Go with Debian's kong and go-toml sources (the event-handler stand-in, tests/stand-ins/),
#   buildah (the images, built from their Dockerfiles without a daemon), PyPI's helm-python-sdk
#   (the real Helm engine, for the chart) and kubernetes-validate (offline schema checks).
# Safe to run again: it installs only what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/struct.proto ] || need+=(libprotobuf-dev)
command -v clang-14 >/dev/null || need+=(clang-14)
command -v wasm-ld-14 >/dev/null || [ -x /usr/lib/llvm-14/bin/wasm-ld ] || need+=(lld-14)
command -v nginx >/dev/null || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
command -v wrk >/dev/null || need+=(wrk)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v buildah >/dev/null || need+=(buildah)
command -v python3 >/dev/null || need+=(python3 python3-pip)
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/alecthomas/kong ] || need+=(golang-github-alecthomas-kong-dev)
[ -d /usr/share/gocode/src/github.com/pelletier/go-toml ] || need+=(golang-github-pelletier-go-toml-dev)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root to install: apt-get install ${need[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# oras (PyPI) for the OCI interop tests, pinned.
if ! python3 -c 'import oras.version, sys; sys.exit(oras.version.__version__ != "0.2.43")' 2>/dev/null; then
  echo "setup: installing oras==0.2.43 (pip)"
  python3 -m pip install --quiet oras==0.2.43 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages oras==0.2.43
fi

# kubernetes-validate (PyPI): the operator's native-sidecar rendering checked against the schemas
# of Kubernetes versions the test cluster does not run, offline, pinned.
if [[ "$(kubernetes-validate --version 2>/dev/null)" != *"1.37.0"* ]]; then
  echo "setup: installing kubernetes-validate==1.37.0 (pip)"
  python3 -m pip install --quiet kubernetes-validate==1.37.0 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate==1.37.0
fi

# helm-python-sdk (PyPI): the official Helm v4 engine, bound through ctypes (there is no helm
# binary in the reachable registries), for the chart's lint, render, install and upgrade; pinned.
if ! python3 -c 'import helm_python, sys; sys.exit(helm_python.__version__ != "0.2.2")' 2>/dev/null; then
  echo "setup: installing helm-python-sdk==0.2.2 (pip, about 75 MB)"
  python3 -m pip install --quiet helm-python-sdk==0.2.2 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages helm-python-sdk==0.2.2
fi

command -v cargo >/dev/null || { echo "setup: cargo is missing: install the Rust toolchain (rustc 1.95)" >&2; exit 1; }
echo "setup: ready"
