#!/usr/bin/env bash
# Images for eventplug's test cluster, built without a container daemon from files on this
# machine (nothing is pulled from anywhere):
#   - pause:   busybox-static's `sleep`, the sandbox image of every pod;
#   - testbox: busybox-static (sh, httpd, nc, wget, ...) plus curl and its libraries, for tests.
# Both are OCI layouts made with umoci, cached under ~/.cache/eventplug/images/<tag>/, and pushed
# with skopeo to the cluster's registry (plain HTTP on the node's bridge address). Their tags are
# derived from their contents, so a changed image gets a new name.
#
# Sourced by cluster.sh; run on its own (`tests/cluster/images.sh push`) it (re)builds the images
# and pushes them to a running cluster's registry, printing the test image's name.
set -euo pipefail

IMAGES_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${CACHE_ROOT:=${EVENTPLUG_CLUSTER_CACHE_DIR:-$HOME/.cache/eventplug}}"
: "${REGISTRY:=198.18.0.1:5000}"
IMAGE_CACHE="$CACHE_ROOT/images"

# What goes into the test image besides busybox: curl (with verified TLS) and its libraries.
TESTBOX_BINARIES=(/usr/bin/curl)

_image_inputs() {
  local f
  for f in "${TESTBOX_BINARIES[@]}"; do
    printf '%s\n' "$f"
    ldd "$f" | awk '/=> \// {print $3} /^\t\// {print $1}'
  done
}

_images_tag() {
  { cat "$IMAGES_HERE/images.sh" /bin/busybox; _image_inputs | sort -u | xargs cat; } | sha256sum | cut -c1-12
}

IMAGES_TAG="$(_images_tag)"
TEST_IMAGE="$REGISTRY/eventplug/testbox:$IMAGES_TAG"
PAUSE_IMAGE="$REGISTRY/eventplug/pause:$IMAGES_TAG"
IMAGES_LAYOUT="$IMAGE_CACHE/$IMAGES_TAG/oci"

_busybox_rootfs() { # DIR [APPLET...]: busybox with links for the given applets (all by default)
  local dir=$1 a
  shift
  mkdir -p "$dir/bin" "$dir/usr/bin" "$dir/etc" "$dir/tmp" "$dir/root" "$dir/proc" "$dir/sys" "$dir/dev"
  chmod 1777 "$dir/tmp"
  cp /bin/busybox "$dir/bin/busybox"
  local applets=("$@")
  ((${#applets[@]})) || mapfile -t applets < <(/bin/busybox --list)
  for a in "${applets[@]}"; do
    [[ "$a" == busybox || -e "$dir/bin/$a" ]] || ln -s busybox "$dir/bin/$a"
  done
  ln -sf ../../bin/env "$dir/usr/bin/env"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

_layout_add() { # LAYOUT REF ROOTFS ENTRYPOINT...
  local layout=$1 ref=$2 rootfs=$3
  shift 3
  umoci new --image "$layout:$ref"
  umoci insert --image "$layout:$ref" "$rootfs" /
  local args=() a
  for a in "$@"; do args+=(--config.entrypoint "$a"); done
  umoci config --image "$layout:$ref" --config.workingdir / --config.env PATH=/bin:/usr/bin "${args[@]}"
}

# Builds both images into the cache, unless they are there already. Safe to run concurrently: each
# build works in a folder of its own and the first to finish puts its layout in place.
images_build() {
  [[ -f "$IMAGES_LAYOUT/complete" ]] && return 0
  mkdir -p "$IMAGE_CACHE/$IMAGES_TAG"
  local work f
  work="$(mktemp -d "$IMAGE_CACHE/$IMAGES_TAG/work.XXXXXX")"
  _busybox_rootfs "$work/pause" sleep sh
  _busybox_rootfs "$work/testbox"
  for f in $(_image_inputs | sort -u); do
    mkdir -p "$work/testbox$(dirname "$f")"
    cp -L "$f" "$work/testbox$f"
  done
  umoci init --layout "$work/oci"
  _layout_add "$work/oci" pause "$work/pause" /bin/sleep 2147483647
  _layout_add "$work/oci" testbox "$work/testbox" /bin/sh
  umoci gc --layout "$work/oci"
  touch "$work/oci/complete"
  mv -T "$work/oci" "$IMAGES_LAYOUT" 2>/dev/null || [[ -f "$IMAGES_LAYOUT/complete" ]] ||
    { echo "images.sh: could not put the image layout in $IMAGES_LAYOUT" >&2; return 1; }
  rm -rf --one-file-system "$work"
}

# Pushes both images to the cluster's registry.
images_push() {
  local ref
  for ref in pause testbox; do
    skopeo --insecure-policy copy -q --dest-tls-verify=false \
      "oci:$IMAGES_LAYOUT:$ref" "docker://$REGISTRY/eventplug/$ref:$IMAGES_TAG" >&2
  done
}

# Builds the images if needed and pushes those the registry does not have yet.
images_ensure() {
  images_build
  local ref
  for ref in pause testbox; do
    curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://$REGISTRY/v2/eventplug/$ref/manifests/$IMAGES_TAG" && continue
    skopeo --insecure-policy copy -q --dest-tls-verify=false \
      "oci:$IMAGES_LAYOUT:$ref" "docker://$REGISTRY/eventplug/$ref:$IMAGES_TAG" >&2
  done
}

# Puts the pause image into containerd ahead of the first pod.
images_import_pause() {
  ctr --address "$CONTAINERD_SOCK" --namespace k8s.io images pull --plain-http "$PAUSE_IMAGE" >/dev/null
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  case "${1:-push}" in
    build) images_build ;;
    push) images_ensure ;;
    *)
      echo "usage: $0 [build|push]" >&2
      exit 2
      ;;
  esac
  echo "$TEST_IMAGE"
fi
