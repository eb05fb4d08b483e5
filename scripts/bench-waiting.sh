#!/usr/bin/env bash
# How the sidecar waits and runs calls under load (docs/performance.md, "Waiting and running calls"):
#   throughput: 64 connections, forward.wat with 4 instances; requests/s and p99
#   crowd:      600 connections on a plugin of 1 instance that spins ~10 ms per call, maxWait 2s,
#               FailOpen (a busy call forwards the event unchanged): latency, and the sidecar's
#               threads sampled every 50 ms
# The upstream is nginx with TLS and client certificates, as in scripts/bench-sidecar.sh.
# Usage: bash scripts/bench-waiting.sh [EVENTPLUG_BINARY...]   (default: the release build)
# Several binaries are measured in turn, each against the same upstream, alternating BENCH_ROUNDS
# times (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ $# -eq 0 ]; then
  cargo build --release --quiet --bin eventplug
  set -- "${CARGO_TARGET_DIR:-$root/target}/release/eventplug"
fi
duration="${BENCH_DURATION:-10s}"
rounds="${BENCH_ROUNDS:-1}"
events="$root/examples/events/sample.jsonl"

source "$root/scripts/bench-common.sh"
cd "$work"
bench_certificates

fluentd=$(port); backend=$(port); sidecar=$(port)
mkdir -p tmp
cat > nginx.conf <<CONF
worker_processes auto;
user root;
error_log $work/error.log warn;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/tmp/body; proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fcgi; uwsgi_temp_path $work/tmp/uwsgi; scgi_temp_path $work/tmp/scgi;
  server {   # fluentd stand-in
    listen 127.0.0.1:$fluentd ssl;
    ssl_certificate $work/server.crt; ssl_certificate_key $work/server.key;
    ssl_client_certificate $work/ca.crt; ssl_verify_client on;
    client_body_buffer_size 1m;
    location / { proxy_pass http://127.0.0.1:$backend; }
  }
  server { listen 127.0.0.1:$backend; location / { return 200 "ok"; } }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_port "$fluentd"

# Spins about 10 ms per call (on the machine in docs/performance.md).
cat > spin.wat <<'WAT'
(module
  (memory (export "memory") 1)
  (func (export "eventplug_abi_version") (result i32) (i32.const 1))
  (func (export "eventplug_alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need (i32.add (i32.const 65536) (local.get $n)))
    (if (i32.gt_u (local.get $need) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (i32.sub (local.get $need) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1))))))
    (i32.const 65536))
  (func (export "eventplug_handle_event") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32)
    (loop $spin (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $spin (i32.lt_u (local.get $i) (i32.const 40000000))))
    (i64.const 0)))
WAT

sidecar_config() { # module limits
  cat > "$work/sidecar.yaml" <<CONF
apiVersion: eventplug.dev/v1alpha1
kind: SidecarConfig
listen: {address: "127.0.0.1:$sidecar", maxConnections: 1000}
upstream:
  auditUrl: https://127.0.0.1:$fluentd/test.log
  ca: $work/ca.crt
  cert: $work/client.crt
  key: $work/client.key
delivery: {shutdownGrace: 0s}
plugins:
  - name: bench
    module: $1
    failurePolicy: FailOpen
    limits: $2
CONF
}

start_sidecar() { # binary module limits
  sidecar_config "$2" "$3"
  EVENTPLUG_LOG=error EVENTPLUG_CACHE_DIR="$work/cache" "$1" serve --config "$work/sidecar.yaml" 2>"$work/sidecar.log" & sidecar_pid=$!; pids+=($sidecar_pid)
  wait_port "$sidecar"
}
stop_sidecar() { kill -TERM "$sidecar_pid"; wait "$sidecar_pid" || true; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$sidecar_pid/status" 2>/dev/null || echo 0; }
rss() { awk '/^VmRSS:/ {printf "%.0f MiB", $2/1024}' "/proc/$sidecar_pid/status"; }
run_wrk() { # name connections
  EVENT_FILE="$events" wrk -t2 -c"$2" -d"$duration" --timeout 30s --latency -s "$root/tests/bench/post-event.lua" "http://127.0.0.1:$sidecar" > "$work/$1.txt"
}
field() { awk -v k="$2" '$1==k {print $2}' "$work/$1.txt"; }
rps() { awk '/Requests\/sec/ {print $2}' "$work/$1.txt"; }
max_latency() { awk '$1=="Latency" {print $4; exit}' "$work/$1.txt"; }
errors() { grep -E "Non-2xx|Socket errors" "$work/$1.txt" | xargs || true; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg); $duration per run"
for round in $(seq "$rounds"); do
  n=0
  for bin in "$@"; do
    n=$((n + 1))
    name="r$round-b$n"
    start_sidecar "$bin" "$root/examples/wat/forward.wat" "{concurrency: 4}"
    run_wrk "$name-throughput" 64
    throughput_rss=$(rss)
    stop_sidecar

    start_sidecar "$bin" "$work/spin.wat" "{concurrency: 1, maxWait: 2s, timeout: 1s}"
    ( while :; do threads; sleep 0.05; done ) > "$work/$name-threads.txt" & sampler=$!
    run_wrk "$name-crowd" 600
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    peak=$(sort -n "$work/$name-threads.txt" | tail -1)
    crowd_rss=$(rss)
    stop_sidecar

    echo "round $round, $bin:"
    echo "  64 connections, forward.wat: $(rps "$name-throughput") req/s, p99 $(field "$name-throughput" 99%), RSS after $throughput_rss $(errors "$name-throughput")"
    echo "  600 connections, 1 busy instance: p50 $(field "$name-crowd" 50%), p99 $(field "$name-crowd" 99%), max $(max_latency "$name-crowd"), $(rps "$name-crowd") req/s, peak $peak threads, RSS after $crowd_rss $(errors "$name-crowd")"
  done
done
