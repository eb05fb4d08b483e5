#!/usr/bin/env bash
# eventplug's own images for the test cluster, built without a container daemon from files on
# this machine (nothing is pulled from anywhere), in images.sh's way (umoci, skopeo):
#   - sidecar:       the `eventplug` binary (release build) with the glibc libraries it links,
#                    run as uid/gid 65532 (`nonroot`); `eventplug serve --config
#                    /etc/eventplug/config.yaml` by default, module cache in
#                    /var/cache/eventplug/modules (mount an emptyDir at /var/cache/eventplug: the
#                    cache makes its folder private, which it cannot do to a volume's root);
#   - sidecar-previous: the same, with EVENTPLUG_READ_API_VERSIONS=eventplug.dev/v1alpha1 in
#                    its environment: a sidecar that reads the config versions the previous
#                    release reads, for upgrade tests (an operator N against a sidecar N−1);
#   - event-handler: the event-handler stand-in (tests/stand-ins/event-handler, a static Go
#                    binary) at /usr/local/bin/teleport-plugin, where the official chart runs it.
# Tags are derived from the contents (the binary and its libraries; the stand-in's sources and
# the Go toolchain), so a changed binary gets a new name. Layouts are cached under
# ~/.cache/eventplug/images/<image>-<tag>/ (the newest three of each image are kept).
#
#   eventplug-images.sh [push]   build what is missing, push what the registry lacks, print
#                                `sidecar=<image>` and `event-handler=<image>` (stdout)
#   eventplug-images.sh build    only build the layouts (no registry needed)
#
# EVENTPLUG_BIN names the eventplug binary (default: $CARGO_TARGET_DIR/release/eventplug, built
# with `cargo build --release -p eventplug`). The registry is the test cluster's
# (tests/cluster/cluster.sh up).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE_ROOT="${EVENTPLUG_CLUSTER_CACHE_DIR:-$HOME/.cache/eventplug}"
REGISTRY="${EVENTPLUG_CLUSTER_REGISTRY:-198.18.0.1:5000}"
IMAGE_CACHE="$CACHE_ROOT/images"
EVENTPLUG_BIN="${EVENTPLUG_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/eventplug}"
STANDIN="$ROOT/tests/stand-ins/event-handler"
# The sidecar's user, as distroless images name it.
NONROOT=65532

die() {
  echo "eventplug-images.sh: error: $*" >&2
  exit 1
}
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The shared libraries a binary loads (ldd's resolved paths, the dynamic loader included).
_libraries() {
  ldd "$1" | awk '/=> \// {print $3} /^\t\// {print $1}' | sort -u
}

_sidecar_tag() {
  { cat "$HERE/eventplug-images.sh" "$EVENTPLUG_BIN"; _libraries "$EVENTPLUG_BIN" | xargs cat; } | sha256sum | cut -c1-12
}

# The stand-in's tag comes from what it is built from, so it is built only when that changes.
_standin_tag() {
  {
    cat "$HERE/eventplug-images.sh" "$STANDIN/build.sh" "$STANDIN"/*.go
    go version
    dpkg-query -W -f='${Package} ${Version}\n' golang-github-alecthomas-kong-dev golang-github-pelletier-go-toml-dev
  } | sha256sum | cut -c1-12
}

_check_binary() {
  [[ -x "$EVENTPLUG_BIN" ]] ||
    die "$EVENTPLUG_BIN is not there: build it with \`cargo build --release -p eventplug\` (or set EVENTPLUG_BIN)"
  "$EVENTPLUG_BIN" wait-ready --help >/dev/null 2>&1 ||
    die "$EVENTPLUG_BIN has no \`wait-ready\` subcommand: it is an older build; rebuild it (cargo build --release -p eventplug)"
  # A binary older than the sources it is built from would put yesterday's sidecar in the image.
  local newer
  newer="$(find "$ROOT/runtime" "$ROOT/proto" "$ROOT/Cargo.lock" -newer "$EVENTPLUG_BIN" \
    \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock -o -name '*.proto' \) -print -quit 2>/dev/null || true)"
  [[ -z "$newer" ]] || log "warning: $newer is newer than $EVENTPLUG_BIN; the image holds the older build (rebuild: cargo build --release -p eventplug)"
}

_base_rootfs() { # DIR: the folders and users every image here has
  local dir=$1
  mkdir -p "$dir/etc" "$dir/tmp" "$dir/usr/local/bin" "$dir/proc" "$dir/sys" "$dir/dev"
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n' "$NONROOT" "$NONROOT" >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%d:\n' "$NONROOT" >"$dir/etc/group"
  printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
}

# Puts a finished layout in place; safe when another build of the same tag finished first.
_install_layout() { # WORK FINAL
  touch "$1/complete"
  mv -T "$1" "$2" 2>/dev/null || [[ -f "$2/complete" ]] || die "could not put the image layout in $2"
}

# Keeps the newest three layouts of one image.
_prune() { # NAME
  local old
  # shellcheck disable=SC2012
  ls -1dt "$IMAGE_CACHE/$1"-*/ 2>/dev/null | tail -n +4 | while read -r old; do
    rm -rf --one-file-system "$old"
  done
}

build_sidecar() {
  _check_binary
  SIDECAR_TAG="$(_sidecar_tag)"
  SIDECAR_LAYOUT="$IMAGE_CACHE/sidecar-$SIDECAR_TAG/oci"
  SIDECAR_IMAGE="$REGISTRY/eventplug/sidecar:$SIDECAR_TAG"
  SIDECAR_PREVIOUS_IMAGE="$REGISTRY/eventplug/sidecar-previous:$SIDECAR_TAG"
  [[ -f "$SIDECAR_LAYOUT/complete" ]] && return 0
  local started=$SECONDS work lib
  mkdir -p "$IMAGE_CACHE/sidecar-$SIDECAR_TAG"
  work="$(mktemp -d "$IMAGE_CACHE/sidecar-$SIDECAR_TAG/work.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf --one-file-system '$work'" EXIT
  _base_rootfs "$work/rootfs"
  # Line tables are left out (symbols stay, so a backtrace still names functions): a third of
  # the size, and the image is what a pod pulls.
  objcopy --strip-debug "$EVENTPLUG_BIN" "$work/rootfs/usr/local/bin/eventplug"
  # The binary links glibc dynamically (ldd): the libraries go in at the paths ldd resolved.
  for lib in $(_libraries "$EVENTPLUG_BIN"); do
    mkdir -p "$work/rootfs$(dirname "$lib")"
    cp -L "$lib" "$work/rootfs$lib"
  done
  mkdir -p "$work/rootfs/etc/eventplug" "$work/rootfs/var/cache/eventplug" "$work/rootfs/home/nonroot"
  chown "$NONROOT:$NONROOT" "$work/rootfs/var/cache/eventplug" "$work/rootfs/home/nonroot"
  chmod 0700 "$work/rootfs/var/cache/eventplug"
  # It runs in the root filesystem it is given: the libraries resolve and it starts.
  if [[ $EUID -eq 0 ]]; then
    chroot --userspec="$NONROOT:$NONROOT" "$work/rootfs" /usr/local/bin/eventplug --version >/dev/null ||
      die "the sidecar binary does not run in its image's root filesystem (a library missing?)"
  fi
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:sidecar"
  umoci insert --image "$work/oci:sidecar" "$work/rootfs" /
  umoci config --image "$work/oci:sidecar" --config.workingdir / --config.user "$NONROOT:$NONROOT" \
    --config.env PATH=/usr/local/bin --config.env EVENTPLUG_CACHE_DIR=/var/cache/eventplug/modules \
    --config.entrypoint /usr/local/bin/eventplug \
    --config.cmd serve --config.cmd --config --config.cmd /etc/eventplug/config.yaml \
    --config.exposedports 8888/tcp --config.exposedports 9090/tcp
  # The previous release's config reading, on the same layers.
  umoci config --image "$work/oci:sidecar" --tag sidecar-previous \
    --config.env "EVENTPLUG_READ_API_VERSIONS=eventplug.dev/v1alpha1"
  umoci gc --layout "$work/oci"
  _install_layout "$work/oci" "$SIDECAR_LAYOUT"
  rm -rf --one-file-system "$work"
  trap - EXIT
  _prune sidecar
  log "built the sidecar image (tag $SIDECAR_TAG) in $((SECONDS - started))s"
}

build_event_handler() {
  command -v go >/dev/null || die "go is missing: apt-get install golang-go (or run scripts/setup.sh)"
  STANDIN_TAG="$(_standin_tag)"
  STANDIN_LAYOUT="$IMAGE_CACHE/event-handler-$STANDIN_TAG/oci"
  STANDIN_IMAGE="$REGISTRY/eventplug/event-handler:$STANDIN_TAG"
  [[ -f "$STANDIN_LAYOUT/complete" ]] && return 0
  local started=$SECONDS work
  mkdir -p "$IMAGE_CACHE/event-handler-$STANDIN_TAG"
  work="$(mktemp -d "$IMAGE_CACHE/event-handler-$STANDIN_TAG/work.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf --one-file-system '$work'" EXIT
  _base_rootfs "$work/rootfs"
  mkdir -p "$work/rootfs/var/lib/teleport/plugins/event-handler"
  bash "$STANDIN/build.sh" "$work/rootfs/usr/local/bin/teleport-plugin" >/dev/null
  [[ -z "$(_libraries "$work/rootfs/usr/local/bin/teleport-plugin" 2>/dev/null)" ]] ||
    die "the event-handler stand-in is not static (CGO_ENABLED=0 in its build.sh?)"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:event-handler"
  umoci insert --image "$work/oci:event-handler" "$work/rootfs" /
  umoci config --image "$work/oci:event-handler" --config.workingdir / --config.env PATH=/usr/local/bin \
    --config.entrypoint /usr/local/bin/teleport-plugin
  umoci gc --layout "$work/oci"
  _install_layout "$work/oci" "$STANDIN_LAYOUT"
  rm -rf --one-file-system "$work"
  trap - EXIT
  _prune event-handler
  log "built the event-handler stand-in image (tag $STANDIN_TAG) in $((SECONDS - started))s"
}

_push() { # LAYOUT REF IMAGE: unless the registry has it
  local repo=${3#*/} tag=${3##*:}
  repo=${repo%:*}
  curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REGISTRY/v2/$repo/manifests/$tag" && return 0
  curl -sf -o /dev/null --max-time 5 "http://$REGISTRY/v2/" ||
    die "the registry $REGISTRY does not answer: start the test cluster (tests/cluster/cluster.sh up)"
  local started=$SECONDS
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$1:$2" "docker://$3" >&2
  log "pushed $3 in $((SECONDS - started))s"
}

case "${1:-push}" in
  build)
    build_sidecar
    build_event_handler
    ;;
  push)
    build_sidecar
    build_event_handler
    _push "$SIDECAR_LAYOUT" sidecar "$SIDECAR_IMAGE"
    _push "$SIDECAR_LAYOUT" sidecar-previous "$SIDECAR_PREVIOUS_IMAGE"
    _push "$STANDIN_LAYOUT" event-handler "$STANDIN_IMAGE"
    ;;
  *)
    echo "usage: $0 [push|build]" >&2
    exit 2
    ;;
esac
echo "sidecar=$SIDECAR_IMAGE"
echo "sidecar-previous=$SIDECAR_PREVIOUS_IMAGE"
echo "event-handler=$STANDIN_IMAGE"
