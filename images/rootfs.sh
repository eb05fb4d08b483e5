#!/usr/bin/env bash
# Builds the root filesystem of one of eventplug's images from a release binary and the named
# Debian files it needs, for the image's Dockerfile (`FROM scratch` + `COPY rootfs/ /`):
#   - the binary, its line tables stripped (symbols stay, so a backtrace still names functions);
#   - the shared libraries it links (glibc, at the paths ldd resolves: x86_64 or aarch64 alike);
#   - Debian's CA bundle (/etc/ssl/certs/ca-certificates.crt, package ca-certificates), for
#     registries and servers reached over HTTPS;
#   - /etc/passwd and /etc/group with the non-root user 65532 (`nonroot`, as distroless names it);
#     no shell, no package manager.
#
#   images/rootfs.sh sidecar|operator BINARY OUT     writes OUT/rootfs (replacing it)
#
# Then, from the repository's root:
#   buildah bud -f images/sidecar.Dockerfile OUT     (or docker build -f … OUT)
set -euo pipefail

die() {
  echo "rootfs.sh: error: $*" >&2
  exit 1
}
[[ $# -eq 3 ]] || die "usage: images/rootfs.sh sidecar|operator BINARY OUT"
image=$1 binary=$2 out=$3
NONROOT=65532
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
case "$image" in
  sidecar) name=eventplug ;;
  operator) name=eventplug-operator ;;
  *) die "no image named $image (sidecar or operator)" ;;
esac
[[ -x "$binary" ]] || die "$binary is not an executable: build it (cargo build --release -p $name)"
[[ -f "$CA_BUNDLE" ]] || die "$CA_BUNDLE is missing: apt-get install ca-certificates"
command -v objcopy >/dev/null || die "objcopy is missing: apt-get install binutils"

rootfs="$out/rootfs"
rm -rf --one-file-system "$rootfs"
mkdir -p "$rootfs"/{etc/ssl/certs,tmp,usr/local/bin,proc,sys,dev,home/nonroot}
chmod 1777 "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n' "$NONROOT" "$NONROOT" >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:%d:\n' "$NONROOT" >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
cp -L "$CA_BUNDLE" "$rootfs$CA_BUNDLE"
objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/$name"
# The binary links glibc dynamically: the libraries go in at the paths ldd resolved.
for lib in $(ldd "$binary" | awk '/=> \// {print $3} /^\t\// {print $1}' | sort -u); do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
case "$image" in
  sidecar)
    # The module cache: an emptyDir is mounted at /var/cache/eventplug in the injected pod; the
    # cache makes its own folder below it private, which it cannot do to a volume's root.
    mkdir -p "$rootfs/etc/eventplug" "$rootfs/var/cache/eventplug"
    chmod 0700 "$rootfs/var/cache/eventplug"
    ;;
  operator)
    mkdir -p "$rootfs/etc/eventplug-operator"
    ;;
esac
# Ownership is the Dockerfile's (`COPY --chown` for the folders the user writes); as root the
# tree is also owned here, for a root filesystem used as it is.
if [[ $EUID -eq 0 ]]; then
  chown -R 0:0 "$rootfs"
  chown "$NONROOT:$NONROOT" "$rootfs/home/nonroot"
  [[ "$image" != sidecar ]] || chown "$NONROOT:$NONROOT" "$rootfs/var/cache/eventplug"
fi
# It runs in the root filesystem it is given: the libraries resolve and it starts.
if [[ $EUID -eq 0 ]]; then
  chroot --userspec="$NONROOT:$NONROOT" "$rootfs" "/usr/local/bin/$name" --version >/dev/null ||
    die "$name does not run in its image's root filesystem (a library missing?)"
fi
