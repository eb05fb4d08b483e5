#!/usr/bin/env bash
# End-to-end test of the event-handler stand-in: builds it (gofmt, go vet and its unit tests
# first), starts Debian's nginx as fluentd (plain HTTP and mTLS with HTTP/2 on loopback, every
# request's body logged) and checks what event-handler's contract says: one POST per event in
# order, session events on their own URL, keep-alive over plain HTTP, the ca/cert/key files
# checked even for an http:// URL, flags over the TOML over the environment, the cursor advanced
# only after a 200 so a restart resumes, 5 tries and a non-zero exit when fluentd is down, a retry
# that recovers when fluentd comes back, mTLS. Every wait is for a condition, with a deadline.
#
#   bash tests/stand-ins/event-handler/test.sh     (EVENTPLUG_KEEP_TEST_DIR=1 keeps its folder)
# Checks read `A && B || fail ...`: fail when either part does not hold.
# shellcheck disable=SC2015
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/eventplug-standin-test.XXXXXX")"
BIN="$WORK/teleport-plugin"
NGINX_DIR="$WORK/nginx"
NGINX_PID=""
STANDIN_PIDS=()
PASSED=0

log() { printf '[stand-in test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now_ms() { date +%s%3N; }

show() { # FILE...: print the last lines of each file that exists
  local f
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    printf -- '--- %s\n' "$f" >&2
    tail -n 30 "$f" >&2
  done
}

fail() {
  printf 'stand-in test: FAILED: %s\n' "$*" >&2
  show "$WORK"/*.log "$NGINX_DIR/error.log" "$NGINX_DIR/startup.log" "$NGINX_DIR/received.log"
  printf 'stand-in: %d passed, 1 failed\n' "$PASSED"
  exit 1
}

pass() {
  PASSED=$((PASSED + 1))
  printf 'ok %d - %s\n' "$PASSED" "$*"
}

cleanup() {
  local pid
  for pid in "${STANDIN_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  nginx_stop 2>/dev/null || true
  if [[ -n "${EVENTPLUG_KEEP_TEST_DIR:-}" ]]; then
    log "kept $WORK"
  else
    rm -rf --one-file-system "$WORK"
  fi
}
trap cleanup EXIT

# wait_until SECONDS WHAT CMD...: run CMD until it succeeds; fail naming WHAT after the deadline.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$(($(now_ms) + seconds * 1000))
  until "$@"; do
    (($(now_ms) < deadline)) || fail "$what did not happen within ${seconds}s"
    sleep 0.05
  done
}

alive() { kill -0 "$1" 2>/dev/null; }

# wait_log PID LOG PATTERN SECONDS: until LOG has a line matching PATTERN; fails at once if the
# process PID ends first.
wait_log() {
  local pid=$1 file=$2 pattern=$3 seconds=$4
  local deadline=$(($(now_ms) + seconds * 1000))
  until grep -q -- "$pattern" "$file" 2>/dev/null; do
    alive "$pid" || { grep -q -- "$pattern" "$file" 2>/dev/null && return 0; fail "the stand-in (log $file) ended before logging '$pattern'"; }
    (($(now_ms) < deadline)) || fail "the stand-in did not log '$pattern' within ${seconds}s (log $file)"
    sleep 0.05
  done
}

# wait_exit PID SECONDS: waits for the background stand-in PID to end; its exit code in EXIT_CODE.
wait_exit() {
  local pid=$1 seconds=$2
  wait_until "$seconds" "the stand-in (pid $pid) exiting" eval '! alive '"$pid"
  EXIT_CODE=0
  wait "$pid" || EXIT_CODE=$?
}

# standin LOG VAR=VALUE... -- ARG...: runs the stand-in in the background with only PATH and the
# given environment (none of the caller's FDFWD_* variables); its pid in STANDIN_PID.
standin() {
  local logf=$1
  shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  env -i PATH="$PATH" "${envs[@]}" "$BIN" "$@" >"$logf" 2>&1 &
  STANDIN_PID=$!
  STANDIN_PIDS+=("$STANDIN_PID")
}

# standin_run SECONDS LOG VAR=VALUE... -- ARG...: runs it to its end; exit code in EXIT_CODE.
standin_run() {
  local seconds=$1
  shift
  standin "$@"
  wait_exit "$STANDIN_PID" "$seconds"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- nginx as fluentd ----------------------------------------------------------------------------
# Two front servers proxy to a backend on a unix socket that answers 200: proxying makes nginx read
# each body, so the front server's access log can write it ($request_body), with what shows how it
# came (protocol, connection and its request count, content type, client certificate).
nginx_config() {
  cat >"$NGINX_DIR/nginx.conf" <<EOF
worker_processes 1;
$([[ $EUID -eq 0 ]] && echo 'user root;')
error_log $NGINX_DIR/error.log warn;
pid $NGINX_DIR/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $NGINX_DIR/tmp/body;
  proxy_temp_path $NGINX_DIR/tmp/proxy;
  fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
  uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
  scgi_temp_path $NGINX_DIR/tmp/scgi;
  client_body_buffer_size 1m;
  log_format bodies escape=json '{"port":"\$server_port","status":"\$status","uri":"\$request_uri",'
    '"protocol":"\$server_protocol","connection":"\$connection","requests":"\$connection_requests",'
    '"type":"\$content_type","client":"\$ssl_client_s_dn","body":"\$request_body"}';
  server {
    listen 127.0.0.1:$HTTP_PORT;
    location / {
      access_log $NGINX_DIR/received.log bodies;
      proxy_pass http://unix:$NGINX_DIR/backend.sock;
    }
  }
  server {
    listen 127.0.0.1:$TLS_PORT ssl http2;
    ssl_certificate $WORK/pki/server.crt;
    ssl_certificate_key $WORK/pki/server.key;
    ssl_client_certificate $WORK/pki/ca.crt;
    ssl_verify_client on;
    location / {
      access_log $NGINX_DIR/received.log bodies;
      proxy_pass http://unix:$NGINX_DIR/backend.sock;
    }
  }
  server {
    listen unix:$NGINX_DIR/backend.sock;
    location / { return 200 "ok"; }
  }
}
EOF
}

# nginx_spawn: starts nginx; 0 once it holds its ports (it writes its pid file after binding), 2
# when a port was taken, a failure for anything else.
nginx_spawn() {
  rm -f "$NGINX_DIR/nginx.pid" "$NGINX_DIR/backend.sock"
  nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -g 'daemon off;' >/dev/null 2>"$NGINX_DIR/startup.log" &
  NGINX_PID=$!
  local deadline=$(($(now_ms) + 20000))
  until [[ "$(cat "$NGINX_DIR/nginx.pid" 2>/dev/null)" == "$NGINX_PID" ]]; do
    if ! alive "$NGINX_PID"; then
      wait "$NGINX_PID" || true
      NGINX_PID=""
      grep -q 'Address already in use' "$NGINX_DIR/startup.log" && return 2
      fail "nginx exited at start"
    fi
    (($(now_ms) < deadline)) || fail "nginx did not bind its ports within 20s"
    sleep 0.02
  done
}

nginx_start() {
  command -v nginx >/dev/null || fail "nginx is missing (Debian nginx-light; scripts/setup.sh installs it)"
  mkdir -p "$NGINX_DIR/tmp"
  local rc
  for _ in 1 2 3 4 5; do
    HTTP_PORT="$(free_port)" TLS_PORT="$(free_port)"
    nginx_config
    rc=0
    nginx_spawn || rc=$?
    ((rc == 0)) && return 0
  done
  fail "nginx found its ports taken 5 times"
}

# nginx_resume: nginx again on the same ports (the stand-in under test knows them); waits out a
# process that took one meanwhile, for a while.
nginx_resume() {
  local deadline=$(($(now_ms) + 20000)) rc
  while true; do
    rc=0
    nginx_spawn || rc=$?
    ((rc == 0)) && return 0
    (($(now_ms) < deadline)) || fail "another process holds nginx's ports $HTTP_PORT/$TLS_PORT since it stopped"
    sleep 0.2
  done
}

nginx_stop() {
  [[ -n "$NGINX_PID" ]] || return 0
  kill -TERM "$NGINX_PID" 2>/dev/null || true # the master stops its worker before it exits
  wait "$NGINX_PID" 2>/dev/null || true
  NGINX_PID=""
}

# received PORT [STATUS]: one line per request nginx logged on PORT (with STATUS, default 200):
# uri, uid of the body, protocol, connection, its request number, content type, client DN, body.
received() {
  python3 - "$NGINX_DIR/received.log" "$1" "${2:-200}" <<'EOF'
import json, sys
path, port, status = sys.argv[1:]
try:
    lines = open(path).read().splitlines()
except FileNotFoundError:
    lines = []
for line in lines:
    e = json.loads(line)
    if e["port"] != port or e["status"] != status:
        continue
    uid = json.loads(e["body"]).get("uid", "") if e["body"] else ""
    print("\t".join([e["uri"], uid, e["protocol"], e["connection"], e["requests"], e["type"], e["client"], e["body"]]))
EOF
}

count_received() { received "$@" | wc -l; }
has_received() { (($(count_received "$1") >= $2)); }

# uids FROM TO: the uids of generated events FROM..TO, one a line.
uids() { local n; for ((n = $1; n <= $2; n++)); do printf '00000000-0000-4000-8000-%012d\n' "$n"; done; }

cursor() { cat "$1/stand-in-cursor" 2>/dev/null || echo none; }

# --- build, certificates, nginx ------------------------------------------------------------------
log "building the stand-in (gofmt, go vet, unit tests, then the binary)"
bash "$HERE/build.sh" --check "$BIN" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; fail "build.sh"; }
grep -E '^(ok|FAIL|---)' "$WORK/build.log" || true
pass "build.sh --check: gofmt, go vet and the unit tests pass, the binary is built"

mkdir -p "$WORK/pki"
(
  cd "$WORK/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=stand-in test CA" -keyout ca.key -out ca.crt
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  for name in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=$([[ $name == server ]] && echo 127.0.0.1 || echo event-handler)" -keyout "$name.key" -out "$name.csr"
    openssl x509 -req -days 2 -CAcreateserial -in "$name.csr" -CA ca.crt -CAkey ca.key -extfile "$name.ext" -out "$name.crt"
  done
) >"$WORK/openssl.log" 2>&1 || fail "openssl could not make the test certificates"

nginx_start
H="http://127.0.0.1:$HTTP_PORT"
S="https://127.0.0.1:$TLS_PORT"
log "nginx (fluentd) on $H and $S"

# The chart's TOML shape: keys the stand-in ignores included; its identity file does not exist.
chart_toml() { # FILE STORAGE URL SESSION_URL
  cat >"$1" <<EOF
storage = "$2"
timeout = "10s"
batch = 20
window-size = "24h"
debug = false

[teleport]
addr = "teleport.example.com:443"
identity = "/var/lib/teleport/plugins/event-handler/teleport-identity/auth_id"
refresh.enabled = true

[forward.fluentd]
url = "$3"
session-url = "$4"
EOF
}

# --- the files given for ca/cert/key must exist, also for http:// --------------------------------
standin_run 20 "$WORK/missing-ca.log" -- start --fluentd-url "$H/test.log" --fluentd-session-url "$H/session" \
  --storage "$WORK/s0" --generate 1 --fluentd-ca "$WORK/missing-ca.crt"
((EXIT_CODE != 0)) && grep -q 'missing-ca.crt: no such file' "$WORK/missing-ca.log" ||
  fail "--fluentd-ca naming a missing file with an http:// URL: exit $EXIT_CODE"
standin_run 20 "$WORK/missing-cert.log" FDWRD_FLUENTD_CERT="$WORK/missing.crt" -- start --fluentd-url "$H/test.log" \
  --fluentd-session-url "$H/session" --storage "$WORK/s0" --generate 1
((EXIT_CODE != 0)) && grep -q 'FDWRD_FLUENTD_CERT' "$WORK/missing-cert.log" ||
  fail "FDWRD_FLUENTD_CERT naming a missing file: exit $EXIT_CODE"
(($(count_received "$HTTP_PORT") == 0)) || fail "a stand-in with a missing TLS file sent something"
pass "a missing ca/cert file (flag or FDWRD_* env) stops the stand-in before it sends, with an http:// URL"

# --- 5 events in order; the flag beats the TOML and the environment ------------------------------
cat >"$WORK/events.jsonl" <<'EOF'
{"ei":0,"event":"user.login","uid":"e0000000-0000-4000-8000-000000000001","code":"T1000I","time":"2024-02-23T18:56:50.628Z","cluster_name":"teleport.example.com","user":"alice","success":true,"method":"local","addr.remote":"10.0.0.1:50332"}
{"ei":0,"event":"user.login","uid":"e0000000-0000-4000-8000-000000000002","code":"T1000W","time":"2024-02-23T18:56:51.000Z","cluster_name":"teleport.example.com","user":"bob","success":false,"error":"invalid credentials","method":"local"}

{"ei":3,"event":"print","uid":"e0000000-0000-4000-8000-000000000003","sid":"5d3b7c1e-0000-4000-8000-00000000abcd","time":"2024-02-23T18:56:52.000Z","data":"bHMK","bytes":3,"ms":12,"offset":40}
{"ei":0,"event":"session.start","uid":"e0000000-0000-4000-8000-000000000004","sid":"5d3b7c1e-0000-4000-8000-00000000abcd","time":"2024-02-23T18:56:53.000Z","user":"alice"}
{"ei":0,"event":"user.login","uid":"e0000000-0000-4000-8000-000000000005","code":"T1000I","time":"2024-02-23T18:56:54.000Z","cluster_name":"teleport.example.com","user":"carol","success":true,"method":"local"}
EOF
chart_toml "$WORK/one.toml" "$WORK/s1" "$H/toml.log" "$H/session"
standin "$WORK/one.log" FDFWD_FLUENTD_URL="$H/env.log" -- start --config "$WORK/one.toml" \
  --fluentd-url "$H/flag.log" --events "$WORK/events.jsonl"
one=$STANDIN_PID
wait_log "$one" "$WORK/one.log" 'all 5 events delivered' 20
wait_until 10 "nginx logging 5 requests" has_received "$HTTP_PORT" 5
alive "$one" || fail "the stand-in did not stay running after delivering everything"
received "$HTTP_PORT" >"$WORK/one.received"
cut -f1 "$WORK/one.received" | paste -sd' ' >"$WORK/one.uris"
[[ "$(cat "$WORK/one.uris")" == "/flag.log /flag.log /session.5d3b7c1e-0000-4000-8000-00000000abcd.log /flag.log /flag.log" ]] ||
  fail "the 5 requests' URIs: $(cat "$WORK/one.uris")"
diff <(cut -f8 "$WORK/one.received") <(grep -v '^$' "$WORK/events.jsonl") >&2 ||
  fail "nginx did not get the 5 events' bodies in the file's order"
pass "5 events, one POST each, in order, bodies as in the file; the print event on <session-url>.<sid>.log"
pass "--fluentd-url beats the TOML's [forward.fluentd] url and FDFWD_FLUENTD_URL; the TOML gives session-url and storage"
[[ "$(cut -f6 "$WORK/one.received" | sort -u)" == application/json ]] || fail "Content-Type: $(cut -f6 "$WORK/one.received" | sort -u)"
[[ "$(cut -f3 "$WORK/one.received" | sort -u)" == HTTP/1.1 ]] || fail "protocol over http://: $(cut -f3 "$WORK/one.received" | sort -u)"
[[ "$(cut -f4 "$WORK/one.received" | sort -u | wc -l)" == 1 && "$(cut -f5 "$WORK/one.received" | paste -sd' ')" == "1 2 3 4 5" ]] ||
  fail "the 5 requests did not share one kept-alive connection: $(cut -f4,5 "$WORK/one.received" | paste -sd' ')"
pass "Content-Type application/json, HTTP/1.1 with keep-alive (one connection) over http://"
[[ "$(cursor "$WORK/s1")" == 5 ]] || fail "cursor after 5 events: $(cursor "$WORK/s1")"
kill -TERM "$one"
wait_exit "$one" 10
((EXIT_CODE == 0)) || fail "the idling stand-in exited $EXIT_CODE on SIGTERM"
pass "it idles after 'all 5 events delivered' (cursor 5) and exits 0 on SIGTERM"

# --- the TOML beats the environment -----------------------------------------------------------------
chart_toml "$WORK/two.toml" "$WORK/s2" "$H/toml.log" "$H/session"
standin_run 30 "$WORK/two.log" FDFWD_FLUENTD_URL="$H/env.log" FDFWD_STORAGE="$WORK/s2-env" -- \
  start --config "$WORK/two.toml" --generate 2 --exit-on-last-event
((EXIT_CODE == 0)) || fail "TOML + env run: exit $EXIT_CODE"
wait_until 10 "nginx logging 7 requests" has_received "$HTTP_PORT" 7
[[ "$(received "$HTTP_PORT" | tail -n 2 | cut -f1 | paste -sd' ')" == "/toml.log /toml.log" ]] ||
  fail "with FDFWD_FLUENTD_URL and the TOML's url, the requests went to: $(received "$HTTP_PORT" | tail -n 2 | cut -f1 | paste -sd' ')"
[[ "$(cursor "$WORK/s2")" == 2 && ! -e "$WORK/s2-env" ]] || fail "storage: the TOML's should win over FDFWD_STORAGE"
pass "the TOML beats the environment (url and storage), as kong 0.7.1 resolves them"

# --- cursor, 5 tries, recovery ----------------------------------------------------------------------
gen=(start --fluentd-url "$H/gen.log" --fluentd-session-url "$H/session" --storage "$WORK/s3" --exit-on-last-event)
standin_run 30 "$WORK/gen-5.log" -- "${gen[@]}" --generate 5
((EXIT_CODE == 0)) || fail "--generate 5: exit $EXIT_CODE"
wait_until 10 "nginx logging 12 requests" has_received "$HTTP_PORT" 12
diff <(received "$HTTP_PORT" | awk -F'\t' '$1 == "/gen.log" {print $2}') <(uids 1 5) >&2 || fail "generated events 1-5"
pass "--generate 5: 5 user.login events with unique uids, in order; cursor $(cursor "$WORK/s3")"

nginx_stop
standin_run 60 "$WORK/gen-down.log" -- "${gen[@]}" --generate 10 --retry-base 20ms --retry-max 100ms
((EXIT_CODE != 0)) || fail "with fluentd down the stand-in exited 0"
grep -q 'resuming at event 6 of 10' "$WORK/gen-down.log" || fail "the second run did not resume at event 6"
[[ "$(grep -c 'event 6: try [1-4] of 5 failed' "$WORK/gen-down.log")" == 4 ]] &&
  grep -q 'giving up on event 6 after 5 tries' "$WORK/gen-down.log" || fail "not 5 tries of event 6 before giving up"
[[ "$(cursor "$WORK/s3")" == 5 ]] || fail "cursor after failing: $(cursor "$WORK/s3")"
pass "fluentd down: resumes at event 6 from the cursor, 5 tries, exit $EXIT_CODE, cursor still 5"

standin "$WORK/gen-back.log" -- "${gen[@]}" --generate 10 --retry-base 1s --retry-max 2s
back=$STANDIN_PID
wait_log "$back" "$WORK/gen-back.log" 'event 6: try 1 of 5 failed' 20
nginx_resume
wait_exit "$back" 60
((EXIT_CODE == 0)) && grep -q 'all 10 events delivered' "$WORK/gen-back.log" ||
  fail "after fluentd came back during its retries: exit $EXIT_CODE"
wait_until 10 "nginx logging 17 requests" has_received "$HTTP_PORT" 17
diff <(received "$HTTP_PORT" | awk -F'\t' '$1 == "/gen.log" {print $2}') <(uids 1 10) >&2 ||
  fail "fluentd did not get events 1-10 exactly once each, in order"
[[ "$(cursor "$WORK/s3")" == 10 ]] || fail "cursor after recovering: $(cursor "$WORK/s3")"
pass "fluentd back during the retries: events 6-10 delivered, 1-10 each once and in order, cursor 10"

# --- mTLS ---------------------------------------------------------------------------------------------
tls=(start --fluentd-url "$S/tls.log" --fluentd-session-url "$S/session" --fluentd-ca "$WORK/pki/ca.crt"
  --exit-on-last-event --generate 3)
standin_run 30 "$WORK/tls.log" -- "${tls[@]}" --storage "$WORK/s4" --fluentd-cert "$WORK/pki/client.crt" \
  --fluentd-key "$WORK/pki/client.key"
((EXIT_CODE == 0)) || fail "mTLS run: exit $EXIT_CODE"
wait_until 10 "nginx logging 3 requests over TLS" has_received "$TLS_PORT" 3
received "$TLS_PORT" >"$WORK/tls.received"
diff <(cut -f2 "$WORK/tls.received") <(uids 1 3) >&2 || fail "events over mTLS"
[[ "$(cut -f3,7 "$WORK/tls.received" | sort -u)" == "HTTP/2.0	CN=event-handler" ]] ||
  fail "TLS requests: $(cut -f3,7 "$WORK/tls.received" | sort -u)"
pass "mTLS with --fluentd-ca/cert/key: 3 events over HTTP/2 with the client certificate"
standin_run 30 "$WORK/tls-nocert.log" -- "${tls[@]}" --storage "$WORK/s5" --retry-base 10ms --retry-max 50ms
((EXIT_CODE != 0)) && grep -q 'giving up on event 1 after 5 tries.*400' "$WORK/tls-nocert.log" ||
  fail "without a client certificate: exit $EXIT_CODE"
[[ "$(cursor "$WORK/s5")" == none ]] || fail "cursor written without a 200"
pass "without a client certificate fluentd answers 400: not counted, 5 tries, exit $EXIT_CODE, no cursor"

printf 'stand-in: %d passed, 0 failed\n' "$PASSED"
