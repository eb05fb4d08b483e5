#!/usr/bin/env bash
# eventplug's test cluster: a real single-node Kubernetes 1.20 on this machine, where pods run.
#
#   tests/cluster/cluster.sh up       build (first time only) and start the cluster, or reuse it
#   tests/cluster/cluster.sh down     stop everything `up` started and remove its state
#   tests/cluster/cluster.sh status   show the components; exit 0 only when the cluster is healthy
#   tests/cluster/cluster.sh env      print `export KUBECONFIG=...` etc., for `eval "$(... env)"`
#   tests/cluster/cluster.sh build    only install the packages and build the binaries
#   tests/cluster/cluster.sh packages only install the Debian packages the cluster needs
#
# The control plane and node run from binaries built from Debian's `kubernetes` source package
# (cached under ~/.cache/eventplug/kubernetes-<version>/), with Debian's etcd, containerd, runc and
# CNI plugins. Everything runs as root and stays on this machine: components listen on loopback or
# on the cluster's own bridge (198.18.0.1, pods 198.18.0.0/24, services 198.18.1.0/24). All state
# lives in one folder (/var/lib/eventplug-cluster by default); docs/testing.md explains the layout.
#
# Settings (environment): EVENTPLUG_CLUSTER_STATE_DIR (state, default /var/lib/eventplug-cluster),
# EVENTPLUG_CLUSTER_CACHE_DIR (caches, default ~/.cache/eventplug), EVENTPLUG_KUBE_DEB_VERSION
# (the Debian source version to build), EVENTPLUG_KUBELET_V (kubelet's log verbosity).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# --- fixed layout ------------------------------------------------------------------------------
KUBE_DEB_VERSION="${EVENTPLUG_KUBE_DEB_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
KUBE_VERSION="v${KUBE_DEB_VERSION##*really}"
KUBE_VERSION="${KUBE_VERSION%%-*}"
CACHE_ROOT="${EVENTPLUG_CLUSTER_CACHE_DIR:-$HOME/.cache/eventplug}"
BIN_CACHE="$CACHE_ROOT/kubernetes-$KUBE_DEB_VERSION"
BIN="$BIN_CACHE/bin"
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# How the binaries are built; a cache built another way is rebuilt. Nothing in the cluster may
# talk to anything beyond this machine, so the build leaves out the in-tree cloud providers (the
# `providerless` tag) and kubelet's cloud image-credential helpers and cadvisor's cloud detection
# (imports removed, see build_binaries), which would otherwise ask cloud metadata servers
# (169.254.169.254). `dockerless` leaves out dockershim (the runtime is containerd), whose
# cadvisor part would otherwise spend 5 s of every kubelet start looking for a Docker daemon.
BUILD_RECIPE="tags=providerless,dockerless kubelet-without=cloud-credentials,cloudinfo vendor=debian-reflect2,debian-json-iterator"

STATE="${EVENTPLUG_CLUSTER_STATE_DIR:-/var/lib/eventplug-cluster}"
C="$STATE/cluster"          # one cluster's life: created by `up`, removed by `down`
LOCK="$STATE/lock"          # kept, so that `up` and `down` never run at the same time
LAST_LOGS="$STATE/last-logs" # the logs of the cluster that `down` removed last
PKI="$C/pki"
CONF="$C/etc"
PIDS="$C/pids"
LOGS="$C/logs"

NODE_NAME="eventplug-node"
BRIDGE="eplug0"
NODE_IP="198.18.0.1"
POD_CIDR="198.18.0.0/24"
SVC_CIDR="198.18.1.0/24"
API_SVC_IP="198.18.1.1"
API_PORT=6443
API_URL="https://$NODE_IP:$API_PORT"
ETCD_PORT=23790
ETCD_PEER_PORT=23800
REGISTRY="$NODE_IP:5000"
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
KCM_PORT=10257
SCHED_PORT=10259
PROXY_HEALTHZ_PORT=10256
PROXY_METRICS_PORT=10249
CGROUP="eventplug"          # cgroup (v1) parent of every process the cluster runs
CONTAINERD_SOCK="$C/containerd/containerd.sock"

# Debian packages the cluster needs (kubectl is not among them: Debian's kubernetes-client
# conflicts with the kubectl these machines carry).
PACKAGES=(golang-go make rsync dpkg-dev golang-github-modern-go-reflect2-dev
  golang-github-json-iterator-go-dev etcd-server containerd runc containernetworking-plugins
  iptables conntrack umoci skopeo docker-registry busybox-static openssl curl iproute2)

# Sysctls that kubelet, kube-proxy or the CNI bridge plugin change: saved by `up`, put back by
# `down`.
SYSCTLS=(net/ipv4/ip_forward net/ipv4/conf/all/route_localnet net/bridge/bridge-nf-call-iptables
  net/bridge/bridge-nf-call-ip6tables vm/overcommit_memory vm/panic_on_oom kernel/panic
  kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

# --- helpers -----------------------------------------------------------------------------------
log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf 'cluster.sh: error: %s\n' "$*" >&2
  exit 1
}
now_ms() { date +%s%3N; }
have_pkg() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

# poll_until TIMEOUT_S WHAT LOGFILE PIDNAME CMD...: run CMD until it succeeds; fail clearly when
# the deadline passes or when the process recorded as PIDNAME (if not "-") has died.
poll_until() {
  local timeout=$1 what=$2 logf=$3 pidname=$4
  shift 4
  local deadline=$(($(now_ms) + timeout * 1000)) out
  until out="$("$@" 2>&1)"; do
    if [[ "$pidname" != - ]] && ! pid_alive "$pidname"; then
      tail_log "$logf"
      die "$what: $pidname exited before becoming ready (log: $logf)"
    fi
    if (($(now_ms) >= deadline)); then
      tail_log "$logf"
      die "$what did not happen within ${timeout}s (log: $logf)${out:+; the last attempt said: $out}"
    fi
    sleep 0.2
  done
}

tail_log() {
  [[ -f "$1" ]] || return 0
  printf -- '--- last lines of %s\n' "$1" >&2
  tail -n 25 "$1" >&2 || true
  printf -- '---\n' >&2
}

require_root() { [[ $EUID -eq 0 ]] || die "must run as root (it starts kubelet, containerd and a bridge)"; }

require_cgroup_v1() {
  local fstype
  fstype="$(stat -fc %T /sys/fs/cgroup 2>/dev/null || true)"
  if [[ "$fstype" == cgroup2fs ]]; then
    die "this host uses cgroup v2 (unified hierarchy at /sys/fs/cgroup); the test cluster's kubelet 1.20 \
with cgroupfs is set up for cgroup v1 only"
  fi
  for sub in cpu cpuacct cpuset memory pids freezer devices; do
    [[ -f "/sys/fs/cgroup/$sub/cgroup.procs" ]] ||
      die "cgroup v1 controller '$sub' is not mounted at /sys/fs/cgroup/$sub (cgroup v1 is required)"
  done
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do have_pkg "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian packages: ${missing[*]}"
  mkdir -p "$CACHE_ROOT"
  local alog="$CACHE_ROOT/apt-install.log"
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >"$alog" 2>&1 || {
    tail_log "$alog"
    die "installing ${missing[*]} failed (log: $alog)"
  }
}

# --- building the binaries ---------------------------------------------------------------------
bins_complete() {
  local b
  grep -qxF "recipe=$BUILD_RECIPE" "$BIN_CACHE/complete" 2>/dev/null || return 1
  for b in "${KUBE_BINS[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

# Downloads Debian's source package with a private apt source list and private lists/cache, so
# the system's own package lists stay as they are.
fetch_source() {
  local dl="$CACHE_ROOT/downloads/kubernetes-$KUBE_DEB_VERSION" apt="$CACHE_ROOT/apt"
  if [[ -f "$dl/complete" ]]; then
    echo "$dl"
    return 0
  fi
  log "downloading Debian's kubernetes source package $KUBE_DEB_VERSION"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dl"
  cat >"$apt/sources.list" <<'EOF'
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm-updates main
deb-src http://deb.debian.org/debian-security bookworm-security main
EOF
  local opts=(-o APT::Sandbox::User=root -o Dir::Etc::sourceparts=/nonexistent -o "Dir::Etc::sourcelist=$apt/sources.list"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  apt-get "${opts[@]}" -qq update >&2
  (cd "$dl" && apt-get "${opts[@]}" -qq source --download-only "kubernetes=$KUBE_DEB_VERSION") >&2 ||
    die "could not download kubernetes=$KUBE_DEB_VERSION from Debian's mirror (a newer Debian \
revision replaces an old one: set EVENTPLUG_KUBE_DEB_VERSION or update KUBE_DEB_VERSION in $0)"
  touch "$dl/complete"
  echo "$dl"
}

build_binaries() {
  bins_complete && return 0
  local dl work src gopath start pid blog f p
  dl="$(fetch_source)"
  start=$(now_ms)
  mkdir -p "$BIN_CACHE"
  rm -rf --one-file-system "$BIN_CACHE"/work.* # left by an interrupted build (builds hold the lock)
  work="$(mktemp -d "$BIN_CACHE/work.XXXXXX")"
  gopath="$work/gopath"
  src="$gopath/src/k8s.io/kubernetes"
  blog="$BIN_CACHE/build.log"
  mkdir -p "$gopath/src/k8s.io"
  log "unpacking the source (with Debian's patches) into $src"
  (cd "$work" && dpkg-source --no-check -x "$dl"/kubernetes_*.dsc "$src") >"$BIN_CACHE/unpack.log" 2>&1 ||
    {
      tail_log "$BIN_CACHE/unpack.log"
      die "unpacking the source failed"
    }
  # The vendored reflect2 crashes with Go >= 1.18 at the first custom resource; Debian's copies of
  # reflect2 and json-iterator (which uses it) work.
  for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    [[ -d "/usr/share/gocode/src/$p" ]] || die "/usr/share/gocode/src/$p is missing"
    rm -rf --one-file-system "${src:?}/vendor/$p"
    cp -rL "/usr/share/gocode/src/$p" "$src/vendor/$p"
  done
  # Imports that kubelet links only for their side effects and that would reach beyond this
  # machine: the cloud image-credential helpers and cadvisor's cloud detection.
  local drop=(k8s.io/kubernetes/pkg/credentialprovider/{aws,azure,gcp}
    github.com/google/cadvisor/utils/cloudinfo/{aws,azure,gce})
  for p in "${drop[@]}"; do
    for f in cmd/kubelet/app/plugins.go cmd/kubelet/app/options/globalflags.go pkg/kubelet/cadvisor/cadvisor_linux.go; do
      sed -i "\\#^[[:space:]]*_ \"$p\"\$#d" "$src/$f"
    done
    if grep -rlF --include='*.go' --exclude='*_test.go' "\"$p\"" "$src/cmd/kubelet" "$src/pkg/kubelet" >&2; then
      die "could not remove the import of $p from kubelet's source (files above)"
    fi
  done
  cat >"$work/version.env" <<EOF
KUBE_GIT_VERSION='$KUBE_VERSION'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_MAJOR='$(echo "${KUBE_VERSION#v}" | cut -d. -f1)'
KUBE_GIT_MINOR='$(echo "${KUBE_VERSION#v}" | cut -d. -f2)'
EOF
  log "building ${KUBE_BINS[*]} $KUBE_VERSION (takes about 10 minutes on 2 cores; log: $blog)"
  (
    cd "$src"
    exec env GO111MODULE=off GOPATH="$gopath" GOCACHE="$work/gocache" GOFLAGS="-v -tags=providerless,dockerless" CGO_ENABLED=0 \
      KUBE_GIT_VERSION_FILE="$work/version.env" HOME="$work/home" \
      make WHAT="$(printf 'cmd/%s ' "${KUBE_BINS[@]}")"
  ) >"$blog" 2>&1 &
  pid=$!
  # Progress: wait for the build to end, waking every 20 s to report.
  while kill -0 "$pid" 2>/dev/null; do
    timeout 20 tail --pid="$pid" -f /dev/null || true
    if kill -0 "$pid" 2>/dev/null; then
      log "  building: $((($(now_ms) - start) / 1000))s, $(grep -c '^k8s.io/\|^vendor/\|/vendor/' "$blog" || true) packages compiled"
    fi
    if (($(now_ms) - start > 3600 * 1000)); then
      kill "$pid" || true
      die "the kubernetes build did not finish within 60 minutes (log: $blog)"
    fi
  done
  if ! wait "$pid"; then
    tail_log "$blog"
    die "the kubernetes build failed (log: $blog)"
  fi
  rm -rf --one-file-system "$BIN.new"
  mkdir -p "$BIN.new"
  for p in "${KUBE_BINS[@]}"; do cp "$src/_output/bin/$p" "$BIN.new/$p"; done
  rm -rf --one-file-system "$BIN"
  mv "$BIN.new" "$BIN"
  printf 'source=%s\nrecipe=%s\nbuilt=%s\nseconds=%s\n' "$KUBE_DEB_VERSION" "$BUILD_RECIPE" \
    "$(date -u +%FT%TZ)" "$((($(now_ms) - start) / 1000))" >"$BIN_CACHE/complete"
  rm -rf --one-file-system "$work"
  log "built the kubernetes binaries in $((($(now_ms) - start) / 1000))s into $BIN"
}

# --- process control ---------------------------------------------------------------------------
cgroup_mounts() {
  local d
  for d in /sys/fs/cgroup/*; do
    [[ -f "$d/cgroup.procs" ]] && echo "$d"
  done
  return 0
}

setup_cgroups() {
  local d
  for d in $(cgroup_mounts); do
    mkdir -p "$d/$CGROUP/daemons"
    if [[ -f "$d/cpuset.cpus" ]]; then
      cat "$d/cpuset.cpus" >"$d/$CGROUP/cpuset.cpus"
      cat "$d/cpuset.mems" >"$d/$CGROUP/cpuset.mems"
      cat "$d/cpuset.cpus" >"$d/$CGROUP/daemons/cpuset.cpus"
      cat "$d/cpuset.mems" >"$d/$CGROUP/daemons/cpuset.mems"
    fi
  done
}

# start NAME EXE ARGS...: start a daemon in its own session, in the cluster's cgroups, logging to
# $LOGS/NAME.log; its pid and executable are recorded in $PIDS/NAME.pid.
start() {
  local name=$1 exe=$2
  shift 2
  local logf="$LOGS/$name.log" d
  local procs=()
  for d in $(cgroup_mounts); do procs+=("$d/$CGROUP/daemons/cgroup.procs"); done
  (
    for d in "${procs[@]}"; do echo "$BASHPID" >"$d"; done
    # A clean environment: no proxies, no cloud credentials or metadata lookups, HOME of its own.
    exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$C/home" LANG=C.UTF-8 \
      AWS_EC2_METADATA_DISABLED=true setsid "$exe" "$@" </dev/null >>"$logf" 2>&1 9>&-
  ) &
  local pid=$! real
  real="$(readlink -f "$exe")"
  echo "$pid $real" >"$PIDS/$name.pid"
  # The subshell becomes the daemon when it execs; until then /proc/PID/exe is bash.
  local deadline=$(($(now_ms) + 5000))
  until [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$real" ]]; do
    # (bash, then env, then setsid, then the daemon)
    if [[ ! -d "/proc/$pid" ]] || (($(now_ms) >= deadline)); then
      tail_log "$logf"
      die "$name did not start (log: $logf)"
    fi
    sleep 0.05
  done
}

pid_alive() {
  local f="$PIDS/$1.pid" pid exe
  [[ -f "$f" ]] || return 1
  read -r pid exe <"$f"
  [[ -d "/proc/$pid" ]] || return 1
  local now
  now="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  # A rebuilt binary replaced under a running daemon shows as "PATH (deleted)".
  [[ "${now% (deleted)}" == "$exe" ]]
}

# stop GRACE NAME...: SIGTERM to each, wait up to GRACE seconds for all of them (the cluster's
# state is thrown away, so nothing needs a long shutdown), then SIGKILL; only the recorded
# processes, and only while their executables are still the ones recorded.
stop() {
  local grace=$1 name pid exe deadline
  shift
  local pids=()
  for name in "$@"; do
    [[ -f "$PIDS/$name.pid" ]] || continue
    read -r pid exe <"$PIDS/$name.pid"
    if pid_alive "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  deadline=$(($(now_ms) + grace * 1000))
  for pid in "${pids[@]}"; do
    local left=$(((deadline - $(now_ms)) / 100))
    ((left > 0)) && timeout "$((left / 10)).$((left % 10))" tail -s 0.1 --pid="$pid" -f /dev/null && continue
    kill -KILL "$pid" 2>/dev/null || true
    timeout 10 tail -s 0.1 --pid="$pid" -f /dev/null || log "pid $pid survived SIGKILL"
  done
  for name in "$@"; do rm -f "$PIDS/$name.pid"; done
}

# Every process left in the cluster's cgroups (container processes, shims, daemons).
cgroup_pids() {
  local d
  for d in $(cgroup_mounts); do
    if [[ -d "$d/$CGROUP" ]]; then find "$d/$CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -un
}

kill_cgroups() {
  local pids deadline=$(($(now_ms) + 20000)) d
  local freezer=/sys/fs/cgroup/freezer/$CGROUP
  while pids="$(cgroup_pids)" && [[ -n "$pids" ]]; do
    (($(now_ms) < deadline)) || die "processes left in cgroup $CGROUP would not die: ${pids//$'\n'/ }"
    log "killing processes left in cgroup /$CGROUP: ${pids//$'\n'/ }"
    # Frozen, they cannot fork while being killed.
    if [[ -f "$freezer/freezer.state" ]]; then echo FROZEN >"$freezer/freezer.state" 2>/dev/null || true; fi
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    if [[ -f "$freezer/freezer.state" ]]; then echo THAWED >"$freezer/freezer.state" 2>/dev/null || true; fi
    sleep 0.2
  done
  for d in $(cgroup_mounts); do
    if [[ -d "$d/$CGROUP" ]]; then find "$d/$CGROUP" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
  for d in $(cgroup_mounts); do
    [[ -d "$d/$CGROUP" ]] && die "could not remove cgroup $d/$CGROUP"
  done
  return 0
}

# --- network -----------------------------------------------------------------------------------
ip2int() {
  local IFS=. a b c d
  read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}
# cidr_overlap A/N B/M: true if the two blocks share an address.
cidr_overlap() {
  local a=${1%/*} n=${1#*/} b=${2%/*} m=${2#*/}
  [[ "$1" == */* ]] || n=32
  [[ "$2" == */* ]] || m=32
  local k=$((n < m ? n : m))
  local mask=$(((0xffffffff << (32 - k)) & 0xffffffff))
  ((($(ip2int "$a") & mask) == ($(ip2int "$b") & mask)))
}

# Refuses to start when any route or address on this machine (other than the cluster's own
# bridge) covers the pod or service range.
check_ranges_free() {
  local line dst dev
  while read -r line; do
    dst="${line%% *}"
    [[ "$dst" == default || "$dst" == broadcast || "$dst" == local || "$dst" == unreachable ]] &&
      dst="$(awk '{print $2}' <<<"$line")"
    [[ "$dst" =~ ^[0-9.]+(/[0-9]+)?$ ]] || continue
    [[ "$dst" == 0.0.0.0/0 ]] && continue
    dev="$(sed -n 's/.* dev \([^ ]*\).*/\1/p' <<<"$line")"
    [[ "$dev" == "$BRIDGE" ]] && continue
    for r in "$POD_CIDR" "$SVC_CIDR"; do
      cidr_overlap "$dst" "$r" && die "$r is already routed on this machine ($line); the test \
cluster needs it for itself"
    done
  done < <(ip -4 route show table all | sed 's/^\(broadcast\|local\|unicast\|unreachable\|blackhole\) //')
  while read -r dev addr; do
    [[ "$dev" == "$BRIDGE" ]] && continue
    for r in "$POD_CIDR" "$SVC_CIDR"; do
      cidr_overlap "$addr" "$r" && die "$dev has address $addr inside $r; the test cluster needs it"
    done
  done < <(ip -4 -o addr show | awk '{print $2, $4}')
  return 0
}

check_ports_free() {
  local port line
  for port in $ETCD_PORT $ETCD_PEER_PORT $API_PORT 5000 $KUBELET_PORT $KUBELET_HEALTHZ_PORT \
    $KCM_PORT $SCHED_PORT $PROXY_HEALTHZ_PORT $PROXY_METRICS_PORT; do
    line="$(ss -Htlnp "sport = :$port" | head -n1)"
    [[ -z "$line" ]] || die "port $port is already in use: $line"
  done
}

save_sysctls() {
  local s
  : >"$C/sysctl.saved"
  for s in "${SYSCTLS[@]}"; do
    [[ -f "/proc/sys/$s" ]] && printf '%s %s\n' "$s" "$(cat "/proc/sys/$s")" >>"$C/sysctl.saved"
  done
  return 0
}

restore_sysctls() {
  local s v
  [[ -f "$C/sysctl.saved" ]] || return 0
  while read -r s v; do
    [[ "$(cat "/proc/sys/$s" 2>/dev/null)" == "$v" ]] || echo "$v" >"/proc/sys/$s" 2>/dev/null ||
      log "could not restore /proc/sys/$s to $v"
  done <"$C/sysctl.saved"
}

setup_network() {
  if [[ ! -f /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    modprobe br_netfilter 2>/dev/null || true
    [[ -f /proc/sys/net/bridge/bridge-nf-call-iptables ]] ||
      die "br_netfilter is not available (no /proc/sys/net/bridge); pod -> Service -> pod needs it"
  fi
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  echo 1 >/proc/sys/net/ipv4/ip_forward
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Pods talk to each other, to Services and to this machine, never further: forwarded traffic
  # that enters or leaves through the cluster's bridge must stay on it.
  iptables -t mangle -N EVENTPLUG-FORWARD
  iptables -t mangle -A EVENTPLUG-FORWARD -i "$BRIDGE" -o "$BRIDGE" -j RETURN
  iptables -t mangle -A EVENTPLUG-FORWARD -i "$BRIDGE" -j DROP
  iptables -t mangle -A EVENTPLUG-FORWARD -o "$BRIDGE" -j DROP
  iptables -t mangle -I FORWARD -j EVENTPLUG-FORWARD
}

# Removes the jumps to, then the chains named KUBE-* (kubelet's and kube-proxy's) and
# EVENTPLUG-* (ours), in both address families.
remove_iptables_chains() {
  local cmd table script
  for cmd in iptables ip6tables; do
    command -v "$cmd-save" >/dev/null || continue
    for table in filter nat mangle raw; do
      script="$("$cmd-save" -t "$table" 2>/dev/null | awk '
        /^:(KUBE-|EVENTPLUG-)/ { chains[++n] = substr($1, 2) }
        /^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE-|EVENTPLUG-)/ { sub(/^-A/, "-D"); print }
        END { for (i = 1; i <= n; i++) print "-F " chains[i]; for (i = 1; i <= n; i++) print "-X " chains[i] }
      ')" || continue
      [[ -n "$script" ]] || continue
      printf '*%s\n%s\nCOMMIT\n' "$table" "$script" | "$cmd-restore" --noflush ||
        log "could not remove the $cmd $table chains"
    done
  done
}

# --- configuration -----------------------------------------------------------------------------
cert() { # cert NAME SUBJECT EXTENSIONS
  local name=$1 subj=$2 ext=$3
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' \
    "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  mkdir -p "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=eventplug-test-cluster-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
  local server="extendedKeyUsage=serverAuth" client="extendedKeyUsage=clientAuth"
  cert apiserver "/CN=kube-apiserver" "$server
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$NODE_IP,IP:$API_SVC_IP"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  cert admin "/O=system:masters/CN=admin" "$client"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  cert kubelet-serving "/CN=$NODE_NAME" "$server
subjectAltName=DNS:$NODE_NAME,IP:127.0.0.1,IP:$NODE_IP"
  cert kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  cert kube-scheduler "/CN=system:kube-scheduler" "$client"
  cert kube-proxy "/CN=system:kube-proxy" "$client"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

kubeconfig() { # kubeconfig NAME CERT
  cat >"$CONF/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: eventplug
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: eventplug
  context:
    cluster: eventplug
    user: $1
    namespace: default
current-context: eventplug
EOF
  chmod 600 "$CONF/$1.kubeconfig"
}

write_configs() {
  mkdir -p "$CONF" "$C/containerd/certs.d" "$C/cni/net.d" "$C/cni/ipam" "$C/kubelet" \
    "$C/kubelet-plugins" "$C/registry" "$C/etcd" "$C/podlogs/pods" "$C/podlogs/containers"
  chmod 700 "$C/etcd"
  kubeconfig admin admin
  kubeconfig kubelet kubelet
  kubeconfig kube-controller-manager kube-controller-manager
  kubeconfig kube-scheduler kube-scheduler
  kubeconfig kube-proxy kube-proxy

  cat >"$CONF/containerd.toml" <<EOF
version = 2
root = "$C/containerd/root"
state = "$C/containerd/state"
temp = "$C/containerd/tmp"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$C/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$C/containerd/certs.d"
EOF
  mkdir -p "$C/containerd/tmp"
  # The local registry serves its own name and stands in, as a mirror, for the public registries
  # (so that nothing is ever fetched from outside this machine).
  local host
  for host in "$REGISTRY" docker.io registry.k8s.io k8s.gcr.io gcr.io quay.io ghcr.io public.ecr.aws; do
    mkdir -p "$C/containerd/certs.d/$host"
    cat >"$C/containerd/certs.d/$host/hosts.toml" <<EOF
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
  done

  cat >"$C/cni/net.d/10-eventplug.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "eventplug-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$C/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "198.18.0.10", "rangeEnd": "198.18.0.250", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SVC_CIDR"}]
      }
    }
  ]
}
EOF

  echo "# no DNS in the eventplug test cluster" >"$CONF/resolv.conf"
  cat >"$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
cgroupsPerQOS: true
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
resolvConf: $CONF/resolv.conf
volumePluginDir: $C/kubelet-plugins
syncFrequency: 10s
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1Mi"
  nodefs.inodesFree: "1"
  imagefs.available: "1Mi"
evictionPressureTransitionPeriod: 5s
nodeStatusUpdateFrequency: 1s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF

  cat >"$CONF/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $CONF/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
clusterCIDR: $POD_CIDR
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

  cat >"$CONF/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $C/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
}

# --- kubelet's pod logs ------------------------------------------------------------------------
# kubelet 1.20 writes container logs to /var/log/pods and links them from /var/log/containers;
# both are bind-mounted from the cluster folder while it runs, so that they go with it.
mount_pod_logs() {
  local d
  for d in pods containers; do
    if [[ ! -d "/var/log/$d" ]]; then
      mkdir -p "/var/log/$d"
      echo "/var/log/$d" >>"$C/created-dirs"
    fi
    mountpoint -q "/var/log/$d" && die "/var/log/$d is already a mount point; another kubelet?"
    mount --bind "$C/podlogs/$d" "/var/log/$d"
  done
}

# --- up ----------------------------------------------------------------------------------------
# One `up`, `down` or `build` at a time (fd 9 holds the lock; the daemons do not inherit it).
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$LOCK"
  if ! flock -n 9; then
    log "waiting for another cluster.sh up/down/build to finish (lock $LOCK)"
    flock -w 3600 9 || die "gave up waiting for the lock $LOCK after an hour"
  fi
}

kubectl_() { kubectl --kubeconfig "$CONF/admin.kubeconfig" --request-timeout=10s "$@"; }
api_ready() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$API_URL/readyz" >/dev/null
}
node_ready() {
  [[ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# A cluster that `up` finished, whose processes all run, whose API server answers and whose node
# is Ready. A busy machine can make the API server slow: give it 30 s before calling it broken.
healthy() {
  [[ -f "$C/up" ]] || return 1
  local n deadline=$(($(now_ms) + 30000))
  for n in etcd registry kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    pid_alive "$n" || return 1
  done
  until api_ready && node_ready; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.5
  done
}

probe_pod() {
  local start manifest="$CONF/probe-pod.yaml"
  start=$(now_ms)
  cat >"$manifest" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: eventplug-probe
  namespace: default
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - name: probe
    image: $TEST_IMAGE
    command: ["sh", "-c", "curl -sSf --max-time 10 --cacert /var/run/secrets/kubernetes.io/serviceaccount/ca.crt -H \"Authorization: Bearer \$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/api/v1/namespaces/default/pods/eventplug-probe -o /dev/null -w 'probe: %{http_code}\n'"]
EOF
  kubectl_ create clusterrolebinding eventplug-probe --clusterrole=view \
    --serviceaccount=default:default >/dev/null
  # The namespace's service account and its token appear a moment after the controller manager
  # starts; pod creation is refused until then.
  poll_until 60 "creating the probe pod" "$LOGS/kube-controller-manager.log" kube-controller-manager \
    kubectl_ apply -f "$manifest"
  poll_until 90 "the probe pod (pod -> kubernetes Service -> API server with its token) to finish" \
    "$LOGS/kubelet.log" kubelet probe_done
  if [[ "$(kubectl_ get pod eventplug-probe -o jsonpath='{.status.phase}')" != Succeeded ]]; then
    kubectl_ logs eventplug-probe >&2 || true
    die "the probe pod failed to reach the API server through the kubernetes Service (its log is above; \
kubectl --kubeconfig $CONF/admin.kubeconfig describe pod eventplug-probe)"
  fi
  kubectl_ delete pod eventplug-probe --wait=false >/dev/null
  kubectl_ delete clusterrolebinding eventplug-probe >/dev/null
  log "probe pod reached the API server through the kubernetes Service ($((($(now_ms) - start) / 1000))s)"
}
probe_done() {
  local phase
  phase="$(kubectl_ get pod eventplug-probe -o jsonpath='{.status.phase}')"
  [[ "$phase" == Succeeded || "$phase" == Failed ]]
}

cmd_up() {
  require_root
  require_cgroup_v1
  # A healthy cluster is reused at once (`up` touches $C/up only once everything is ready); else
  # wait for whoever holds the lock, and look again.
  local n
  for n in first second; do
    if healthy; then
      # shellcheck source=tests/cluster/images.sh
      source "$HERE/images.sh"
      images_ensure
      log "the cluster is already up (KUBECONFIG=$CONF/admin.kubeconfig)"
      return 0
    fi
    [[ $n == second ]] || take_lock
  done
  local t0 t1 d
  t0=$(now_ms)
  # shellcheck disable=SC2016
  trap '(($? == 0)) || [[ ! -d "$PIDS" ]] || log "up failed; what it started is left for inspection (cluster.sh status; logs in $LOGS); cluster.sh down or the next up removes it"' EXIT
  install_packages
  command -v kubectl >/dev/null || die "kubectl is not on PATH (the cluster scripts use it)"
  build_binaries
  if [[ -e "$C" ]] || ip link show "$BRIDGE" >/dev/null 2>&1 || [[ -d "/sys/fs/cgroup/pids/$CGROUP" ]]; then
    log "cleaning up what a previous cluster left behind"
    teardown
  fi
  t1=$(now_ms)
  check_ranges_free
  check_ports_free
  mkdir -p "$C" "$PIDS" "$LOGS" "$C/home"
  save_sysctls
  # shellcheck source=tests/cluster/images.sh
  source "$HERE/images.sh"
  images_build
  make_pki
  write_configs
  setup_cgroups
  setup_network
  mount_pod_logs
  # containerd's shims and CNI keep a little outside the state folder; remember whether those
  # folders were there before, so that `down` removes them only if the cluster made them.
  for d in /var/lib/cni /run/containerd; do [[ -e "$d" ]] || echo "$d" >>"$C/created-dirs"; done

  log "starting etcd"
  start etcd /usr/bin/etcd --name eventplug --data-dir "$C/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "eventplug=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new
  log "starting the registry on $REGISTRY"
  start registry /usr/bin/docker-registry serve "$CONF/registry.yml"
  poll_until 30 "etcd to answer on 127.0.0.1:$ETCD_PORT" "$LOGS/etcd.log" etcd \
    curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

  log "starting kube-apiserver on $API_URL"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" --insecure-port=0 \
    --cert-dir="$C/apiserver" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --authorization-mode=Node,RBAC --service-cluster-ip-range="$SVC_CIDR" \
    --enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --enable-aggregator-routing=true --allow-privileged=true --profiling=false
  poll_until 30 "registry to answer on $REGISTRY" "$LOGS/registry.log" registry \
    curl -sf --max-time 2 "http://$REGISTRY/v2/"
  images_push
  poll_until 60 "kube-apiserver to be ready ($API_URL/readyz)" "$LOGS/kube-apiserver.log" kube-apiserver api_ready

  log "starting kube-controller-manager, kube-scheduler and containerd"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$CONF/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CONF/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$CONF/kube-controller-manager.kubeconfig" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --controllers='*,-nodeipam' --service-cluster-ip-range="$SVC_CIDR" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 --cert-dir="$C/kcm" --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$CONF/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$CONF/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$CONF/kube-scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --port=0 \
    --cert-dir="$C/scheduler" --profiling=false
  start containerd /usr/bin/containerd --config "$CONF/containerd.toml"
  poll_until 30 "containerd to answer on $CONTAINERD_SOCK" "$LOGS/containerd.log" containerd \
    ctr --address "$CONTAINERD_SOCK" version
  images_import_pause

  log "starting kubelet and kube-proxy"
  start kubelet "$BIN/kubelet" --config="$CONF/kubelet.yaml" --kubeconfig="$CONF/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$C/kubelet" --cert-dir="$C/kubelet/pki" \
    --container-runtime=remote --container-runtime-endpoint="unix://$CONTAINERD_SOCK" \
    --image-service-endpoint="unix://$CONTAINERD_SOCK" --containerd="$CONTAINERD_SOCK" ${EVENTPLUG_KUBELET_V:+--v=$EVENTPLUG_KUBELET_V}
  start kube-proxy "$BIN/kube-proxy" --config="$CONF/kube-proxy.yaml"
  # Give the node its pod range as soon as it registers: kubelet then reports Ready at once
  # instead of at its next status update (the controller manager's IPAM is off).
  poll_until 60 "node $NODE_NAME to register" "$LOGS/kubelet.log" kubelet kubectl_ get node "$NODE_NAME"
  kubectl_ patch node "$NODE_NAME" --type merge \
    -p "{\"spec\":{\"podCIDR\":\"$POD_CIDR\",\"podCIDRs\":[\"$POD_CIDR\"]}}" >/dev/null
  poll_until 60 "node $NODE_NAME to be Ready" "$LOGS/kubelet.log" kubelet node_ready
  poll_until 30 "kube-proxy to be healthy (127.0.0.1:$PROXY_HEALTHZ_PORT)" "$LOGS/kube-proxy.log" kube-proxy \
    curl -sf --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
  probe_pod
  trap - EXIT
  touch "$C/up"
  log "cluster up in $((($(now_ms) - t1) / 1000))s (whole command $((($(now_ms) - t0) / 1000))s)"
  log "use it with: eval \"\$($0 env)\"; kubectl get nodes"
}

# --- down --------------------------------------------------------------------------------------
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
running_tasks() { ctr_ tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING" { print $1 }'; }

# Stops everything a cluster started, whether it is healthy, half-started or was killed.
teardown() {
  local t0 n steps="" ts
  t0=$(now_ms)
  ts=$t0
  step() { # record how long the step that just ended took
    steps+=" $1 $((($(now_ms) - ts) / 1000))s"
    ts=$(now_ms)
  }
  # Controllers first, so that nothing re-creates the pods deleted next.
  stop 2 kube-controller-manager kube-scheduler
  if pid_alive kube-apiserver && pid_alive kubelet && api_ready 2>/dev/null; then
    # Deleting the pods lets kubelet stop them, unmount their volumes and release their
    # addresses through CNI; whatever is left after 20 s is taken down by force below.
    kubectl_ delete pods --all-namespaces --all --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    local deadline=$(($(now_ms) + 20000))
    while (($(now_ms) < deadline)) && [[ -n "$(running_tasks)" ]]; do sleep 0.2; done
  fi
  step pods
  stop 2 kube-proxy kubelet
  step kubelet
  if pid_alive containerd; then
    local t
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in $(ctr_ tasks ls -q 2>/dev/null); do
      timeout 10 ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true
    done
  fi
  stop 15 containerd
  step containerd
  stop 2 kube-apiserver registry etcd
  step control-plane
  kill_cgroups
  step cgroups
  # Shim sockets live outside the state folder (/run/containerd/s); remove the ones of our tasks.
  local a
  for a in "$C"/containerd/state/io.containerd.runtime.v2.task/*/*/address; do
    [[ -f "$a" ]] || continue
    a="$(cat "$a")"
    a="${a#unix://}"
    if [[ "$a" == /run/containerd/s/* ]]; then rm -f "$a"; fi
  done
  if [[ -x "$BIN/kube-proxy" ]]; then
    timeout 60 "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  remove_iptables_chains
  step iptables
  # Unmount kubelet's, containerd's and the pod-log mounts, deepest first.
  local m
  for _ in 1 2 3 4 5; do
    m="$(findmnt -rn -o TARGET | awk -v c="$C/" 'index($0, c) == 1 || $0 == "/var/log/pods" || $0 == "/var/log/containers"' | sort -r)"
    [[ -n "$m" ]] || break
    while read -r n; do
      n="$(printf '%b' "$n")"
      umount "$n" 2>/dev/null || umount -l "$n" 2>/dev/null || log "could not unmount $n"
    done <<<"$m"
  done
  step mounts
  # Veth pairs die with their network namespaces; drop any left on the bridge, then the bridge.
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    for n in $(ip -o link show master "$BRIDGE" | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$n" 2>/dev/null || true
    done
    ip link del "$BRIDGE"
  fi
  # CNI's result cache (the IP leases themselves are in $C/cni/ipam): the pod network's entries,
  # and those of containerd's loopback network for the cluster's sandboxes.
  rm -f /var/lib/cni/results/eventplug-pods-* 2>/dev/null || true
  local sb
  for sb in "$C"/containerd/{root,state}/io.containerd.grpc.v1.cri/sandboxes/*; do
    if [[ -d "$sb" ]]; then rm -f /var/lib/cni/results/*-"$(basename "$sb")"-* 2>/dev/null || true; fi
  done
  if [[ -f "$C/created-dirs" ]]; then
    while read -r n; do
      if [[ -d "$n" ]]; then find "$n" -depth -type d -empty -delete 2>/dev/null || true; fi
    done <"$C/created-dirs"
  fi
  restore_sysctls
  if [[ -e "$C" ]]; then
    m="$(findmnt -rn -o TARGET | awk -v c="$C/" 'index($0, c) == 1' || true)"
    [[ -z "$m" ]] || die "refusing to delete $C: still mounted: $m"
    if [[ -d "$LOGS" ]]; then
      rm -rf --one-file-system "$LAST_LOGS"
      cp -r "$LOGS" "$LAST_LOGS"
    fi
    rm -rf --one-file-system "$C"
  fi
  step files
  log "stopped the cluster and removed its state in $((($(now_ms) - t0) / 1000))s:$steps (logs kept in $LAST_LOGS)"
}

cmd_down() {
  require_root
  take_lock
  teardown
}

# --- status, env -------------------------------------------------------------------------------
cmd_status() {
  local ok=0 n pid exe
  if [[ ! -d "$C" ]]; then
    echo "no cluster (state folder $C does not exist)"
    return 1
  fi
  for n in etcd registry kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if pid_alive "$n"; then
      read -r pid exe <"$PIDS/$n.pid"
      printf '%-24s running (pid %s, log %s)\n' "$n" "$pid" "$LOGS/$n.log"
    else
      printf '%-24s NOT running (log %s)\n' "$n" "$LOGS/$n.log"
      ok=1
    fi
  done
  if [[ -f "$PKI/ca.crt" ]] && api_ready; then echo "api server              ready at $API_URL"; else
    echo "api server              NOT ready at $API_URL"
    ok=1
  fi
  if [[ -f "$PKI/ca.crt" ]] && node_ready; then echo "node $NODE_NAME      Ready"; else
    echo "node $NODE_NAME      NOT Ready"
    ok=1
  fi
  [[ -f "$C/up" ]] || {
    echo "'up' has not completed"
    ok=1
  }
  return $ok
}

cmd_env() {
  # shellcheck source=tests/cluster/images.sh
  source "$HERE/images.sh"
  printf 'export KUBECONFIG=%q\n' "$CONF/admin.kubeconfig"
  printf 'export EVENTPLUG_CLUSTER_STATE_DIR=%q\n' "$STATE"
  printf 'export EVENTPLUG_CLUSTER_NODE_IP=%q\n' "$NODE_IP"
  printf 'export EVENTPLUG_CLUSTER_API_SERVER=%q\n' "$API_URL"
  printf 'export EVENTPLUG_CLUSTER_REGISTRY=%q\n' "$REGISTRY"
  printf 'export EVENTPLUG_CLUSTER_TEST_IMAGE=%q\n' "$TEST_IMAGE"
  printf 'export EVENTPLUG_CLUSTER_CA=%q\n' "$PKI/ca.crt"
  printf 'export EVENTPLUG_CLUSTER_KUBECTL=%q\n' "kubectl --kubeconfig $CONF/admin.kubeconfig"
  printf 'export EVENTPLUG_CLUSTER_CONTAINERD=%q\n' "$CONTAINERD_SOCK"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  build)
    require_root
    take_lock
    install_packages
    build_binaries
    ;;
  packages)
    require_root
    install_packages
    ;;
  *)
    echo "usage: $0 up|down|status|env|build|packages" >&2
    exit 2
    ;;
esac
