#!/usr/bin/env bash
# eventplug's images for the test cluster, built without a container daemon from files on this
# machine (nothing is pulled from anywhere):
#   - sidecar, operator: the product images, exactly as users build them: images/rootfs.sh makes
#                    the root filesystem from the release binary, and buildah (vfs storage, no
#                    daemon) builds images/<image>.Dockerfile (`FROM scratch`) on it, with the
#                    OCI annotations (source, version, revision, licenses);
#   - sidecar-previous: the sidecar's layers with EVENTPLUG_READ_API_VERSIONS=eventplug.dev/v1alpha1
#                    in its environment: a sidecar that reads the config versions the previous
#                    release reads, for upgrade tests (an operator N against a sidecar N−1);
#   - event-handler: the event-handler stand-in (tests/stand-ins/event-handler, a static Go
#                    binary) at /usr/local/bin/teleport-plugin, where the official chart runs it
#                    (a test image, made with umoci).
# Tags are derived from the contents (the binary and its libraries, the Dockerfile and scripts;
# the stand-in's sources and the Go toolchain), so a changed binary gets a new name. Layouts are
# cached under ~/.cache/eventplug/images/<image>-<tag>/ (the newest three of each image are kept).
#
#   eventplug-images.sh [push]   build what is missing, push what the registry lacks, print
#                                `sidecar=<image>`, `sidecar-previous=…`, `operator=…` and
#                                `event-handler=…` (stdout)
#   eventplug-images.sh build    only build the layouts (no registry needed)
#
# EVENTPLUG_BIN names the eventplug binary (default: $CARGO_TARGET_DIR/release/eventplug, built
# with `cargo build --release -p eventplug`), EVENTPLUG_OPERATOR_RELEASE_BIN the operator's
# (default: …/release/eventplug-operator). The registry is the test cluster's
# (tests/cluster/cluster.sh up).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE_ROOT="${EVENTPLUG_CLUSTER_CACHE_DIR:-$HOME/.cache/eventplug}"
REGISTRY="${EVENTPLUG_CLUSTER_REGISTRY:-198.18.0.1:5000}"
IMAGE_CACHE="$CACHE_ROOT/images"
EVENTPLUG_BIN="${EVENTPLUG_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/eventplug}"
OPERATOR_BIN="${EVENTPLUG_OPERATOR_RELEASE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/eventplug-operator}"
# The images' org.opencontainers.image.source.
IMAGE_SOURCE="${EVENTPLUG_IMAGE_SOURCE:-https://github.com/eventplug/eventplug}"
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

# A product image's tag comes from what is in it and how it is built.
_product_tag() { # IMAGE BINARY
  {
    cat "$HERE/eventplug-images.sh" "$ROOT/images/rootfs.sh" "$ROOT/images/$1.Dockerfile" "$2"
    _libraries "$2" | xargs cat
  } | sha256sum | cut -c1-12
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

_base_rootfs() { # DIR: the folders and users of the stand-in's image
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

# The image annotations (and labels) every product image carries.
_annotations() {
  local version revision
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
  revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  BUILD_ARGS=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$IMAGE_SOURCE")
  ANNOTATIONS=(
    --annotation "org.opencontainers.image.source=$IMAGE_SOURCE"
    --annotation "org.opencontainers.image.version=$version"
    --annotation "org.opencontainers.image.revision=$revision"
    --annotation "org.opencontainers.image.licenses=Apache-2.0"
  )
}

# Builds images/<image>.Dockerfile with buildah (no daemon) on the root filesystem images/rootfs.sh
# makes from BINARY, into an OCI layout tagged <image>. Sets LAYOUT.
_build_product() { # IMAGE BINARY TAG
  local image=$1 binary=$2 tag=$3 started=$SECONDS work
  LAYOUT="$IMAGE_CACHE/$image-$tag/oci"
  [[ -f "$LAYOUT/complete" ]] && return 0
  command -v buildah >/dev/null || die "buildah is missing: apt-get install buildah (or run scripts/setup.sh)"
  mkdir -p "$IMAGE_CACHE/$image-$tag"
  work="$(mktemp -d "$IMAGE_CACHE/$image-$tag/work.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf --one-file-system '$work'" EXIT
  bash "$ROOT/images/rootfs.sh" "$image" "$binary" "$work/context"
  _annotations
  local name="localhost/eventplug-build/$image:$tag"
  buildah --storage-driver vfs bud --quiet --format oci --layers=false \
    "${BUILD_ARGS[@]}" "${ANNOTATIONS[@]}" \
    -f "$ROOT/images/$image.Dockerfile" -t "$name" "$work/context" >/dev/null
  buildah --storage-driver vfs push --quiet "$name" "oci:$work/oci:$image" >/dev/null
  buildah --storage-driver vfs rmi "$name" >/dev/null
  if [[ "$image" == sidecar ]]; then
    # The previous release's config reading, on the same layers (a test image, tagged beside).
    umoci config --image "$work/oci:sidecar" --tag sidecar-previous \
      --config.env "EVENTPLUG_READ_API_VERSIONS=eventplug.dev/v1alpha1"
    umoci gc --layout "$work/oci"
  fi
  _install_layout "$work/oci" "$LAYOUT"
  rm -rf --one-file-system "$work"
  trap - EXIT
  _prune "$image"
  log "built the $image image (tag $tag) with buildah in $((SECONDS - started))s"
}

build_sidecar() {
  _check_binary
  SIDECAR_TAG="$(_product_tag sidecar "$EVENTPLUG_BIN")"
  SIDECAR_IMAGE="$REGISTRY/eventplug/sidecar:$SIDECAR_TAG"
  SIDECAR_PREVIOUS_IMAGE="$REGISTRY/eventplug/sidecar-previous:$SIDECAR_TAG"
  _build_product sidecar "$EVENTPLUG_BIN" "$SIDECAR_TAG"
  SIDECAR_LAYOUT=$LAYOUT
}

build_operator() {
  [[ -x "$OPERATOR_BIN" ]] ||
    die "$OPERATOR_BIN is not there: build it with \`cargo build --release -p eventplug-operator\` (or set EVENTPLUG_OPERATOR_RELEASE_BIN)"
  local newer
  newer="$(find "$ROOT/operator" "$ROOT/runtime/contract" "$ROOT/runtime/abi" "$ROOT/runtime/oci" "$ROOT/Cargo.lock" -newer "$OPERATOR_BIN" \
    \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print -quit 2>/dev/null || true)"
  [[ -z "$newer" ]] || log "warning: $newer is newer than $OPERATOR_BIN; the image holds the older build (rebuild: cargo build --release -p eventplug-operator)"
  OPERATOR_TAG="$(_product_tag operator "$OPERATOR_BIN")"
  OPERATOR_IMAGE="$REGISTRY/eventplug/operator:$OPERATOR_TAG"
  _build_product operator "$OPERATOR_BIN" "$OPERATOR_TAG"
  OPERATOR_LAYOUT=$LAYOUT
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
    build_operator
    build_event_handler
    ;;
  push)
    build_sidecar
    build_operator
    build_event_handler
    _push "$SIDECAR_LAYOUT" sidecar "$SIDECAR_IMAGE"
    _push "$SIDECAR_LAYOUT" sidecar-previous "$SIDECAR_PREVIOUS_IMAGE"
    _push "$OPERATOR_LAYOUT" operator "$OPERATOR_IMAGE"
    _push "$STANDIN_LAYOUT" event-handler "$STANDIN_IMAGE"
    ;;
  *)
    echo "usage: $0 [push|build]" >&2
    exit 2
    ;;
esac
echo "sidecar=$SIDECAR_IMAGE"
echo "sidecar-previous=$SIDECAR_PREVIOUS_IMAGE"
echo "operator=$OPERATOR_IMAGE"
echo "event-handler=$STANDIN_IMAGE"
