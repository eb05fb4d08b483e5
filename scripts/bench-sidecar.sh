#!/usr/bin/env bash
# Side-by-side benchmark of the sidecar against nginx proxying the same requests to the same
# upstream: nginx standing in for fluentd (TLS, client certificates required, every body logged).
#   latency:    1 connection, sequential, as one event-handler job sends; p50/p99 added
#   throughput: many connections; requests/s
# Usage: bash scripts/bench-sidecar.sh [LATENCY_PLUGIN.wasm [THROUGHPUT_PLUGIN.wasm]]
# Defaults: the redact example (examples/redact/build/release.wasm, with its config) for latency,
# examples/wat/forward.wat (forwards unchanged) for throughput. Prints a summary at the end.
# EVENTPLUG_BIN=/path/to/eventplug measures that binary instead of building this checkout's (to
# compare two versions side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh >/dev/null
if [ -n "${EVENTPLUG_BIN:-}" ]; then
  bin=$EVENTPLUG_BIN
else
  cargo build --release --quiet --bin eventplug
  bin="${CARGO_TARGET_DIR:-$root/target}/release/eventplug"
fi
latency_plugin="${1:-examples/redact/build/release.wasm}"
latency_config='{"fields": ["addr.remote", "user_agent", "mfa_device"]}'
throughput_plugin="${2:-examples/wat/forward.wat}"
[ -f "$latency_plugin" ] || { echo "bench: $latency_plugin is missing: build it (cd examples/redact && npm install && npm run asbuild)" >&2; exit 1; }
duration="${BENCH_DURATION:-10s}"
events="$root/examples/events/sample.jsonl"

source "$root/scripts/bench-common.sh"
cd "$work"
bench_certificates

fluentd=$(port); backend=$(port); proxy=$(port); sidecar=$(port)
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
  log_format bodies escape=json '{"uri":"\$request_uri","body":"\$request_body"}';
  server {   # fluentd stand-in
    listen 127.0.0.1:$fluentd ssl;
    ssl_certificate $work/server.crt; ssl_certificate_key $work/server.key;
    ssl_client_certificate $work/ca.crt; ssl_verify_client on;
    client_body_buffer_size 1m;
    location / { access_log $work/received.log bodies; proxy_pass http://127.0.0.1:$backend; }
  }
  server { listen 127.0.0.1:$backend; location / { return 200 "ok"; } }
  upstream fluentd { server 127.0.0.1:$fluentd; keepalive 64; }
  server {   # nginx proxying, the comparison
    listen 127.0.0.1:$proxy;
    location / {
      proxy_pass https://fluentd;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $work/client.crt; proxy_ssl_certificate_key $work/client.key;
      proxy_ssl_trusted_certificate $work/ca.crt; proxy_ssl_verify on; proxy_ssl_name localhost;
    }
  }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_port "$fluentd"; wait_port "$proxy"

# Builds with an admin listener take its address (port 0: any); older ones have none.
admin_line=""
if "$bin" serve --help | grep -q -- --addresses-file; then admin_line='admin: {address: "127.0.0.1:0"}'; fi
sidecar_config() {
  cat > "$work/sidecar.yaml" <<CONF
apiVersion: eventplug.dev/v1alpha1
kind: SidecarConfig
listen: {address: "127.0.0.1:$sidecar"}
$admin_line
upstream:
  auditUrl: https://127.0.0.1:$fluentd/test.log
  ca: $work/ca.crt
  cert: $work/client.crt
  key: $work/client.key
delivery: {shutdownGrace: 0s}
plugins:
  - name: bench
    module: $1
    config: $2
    limits: {concurrency: 4}
CONF
}

run_wrk() { # name port connections threads
  EVENT_FILE="$events" wrk -t"$4" -c"$3" -d"$duration" --latency -s "$root/tests/bench/post-event.lua" "http://127.0.0.1:$2" > "$work/$1.txt"
  local errors; errors=$(grep -E "Non-2xx|Socket errors" "$work/$1.txt" || true)
  [ -z "$errors" ] || { echo "bench: $1 had errors: $errors" >&2; cat "$work/$1.txt" >&2; exit 1; }
}
field() { awk -v k="$2" '$1==k {print $2}' "$work/$1.txt"; }
rps() { awk '/Requests\/sec/ {print $2}' "$work/$1.txt"; }

start_sidecar() {
  sidecar_config "$root/$1" "$2"
  EVENTPLUG_LOG=warn "$bin" serve --config "$work/sidecar.yaml" 2>"$work/sidecar.log" & sidecar_pid=$!; pids+=($sidecar_pid)
  wait_port "$sidecar"
}
stop_sidecar() { kill -TERM "$sidecar_pid"; wait "$sidecar_pid" || true; }

start_sidecar "$latency_plugin" "$latency_config"
run_wrk latency-nginx "$proxy" 1 1
run_wrk latency-sidecar "$sidecar" 1 1
stop_sidecar

start_sidecar "$throughput_plugin" "null"
run_wrk throughput-nginx "$proxy" 64 2
run_wrk throughput-sidecar "$sidecar" 64 2
rss=$(awk '/VmRSS/ {print $2, $3}' "/proc/$sidecar_pid/status")
stop_sidecar

received=$(wc -l < "$work/received.log")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), duration $duration per run"
echo "latency, 1 connection (nginx proxy | sidecar with $(basename "$(dirname "$(dirname "$latency_plugin")")")):"
echo "  p50 $(field latency-nginx 50%) | $(field latency-sidecar 50%)"
echo "  p99 $(field latency-nginx 99%) | $(field latency-sidecar 99%)"
echo "  req/s $(rps latency-nginx) | $(rps latency-sidecar)"
echo "throughput, 64 connections (nginx proxy | sidecar with $(basename "$throughput_plugin")):"
echo "  req/s $(rps throughput-nginx) | $(rps throughput-sidecar)"
echo "  p99 $(field throughput-nginx 99%) | $(field throughput-sidecar 99%)"
echo "sidecar RSS after the throughput run (4 instances): $rss"
echo "events received by the fluentd stand-in: $received"
