#!/usr/bin/env bash
# HTTP gateway overhead: wrk against an nginx origin directly, through nginx as a reverse
# proxy, and through Warden (per-request sessions and one Warden-Session), same run.
# Needs: nginx, wrk, a release build (cargo build --release -p warden).
# Usage: crates/http/bench/wrk.sh [seconds=10] [connections=32] [threads=2]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-10}
CONNS=${2:-32}
THREADS=${3:-2}
WARDEN=${WARDEN_BIN:-$PWD/target/release/warden}
TMP=$(mktemp -d /tmp/warden-wrk-XXXXXX)
trap 'kill $(cat "$TMP"/*.pid 2>/dev/null) 2>/dev/null || true; nginx -p "$TMP/ng" -c nginx.conf -s stop 2>/dev/null || true; rm -rf "$TMP"' EXIT

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ORIGIN=$(port); PROXY=$(port); HTTP=$(port); PG=$(port); ADMIN=$(port)

mkdir -p "$TMP/ng/logs"
cat > "$TMP/ng/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/ng/nginx.pid;
error_log $TMP/ng/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$ORIGIN;
    location / { default_type application/json; return 200 '{"id":7,"status":"paid","amount":12.5}'; }
  }
  server {
    listen 127.0.0.1:$PROXY;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer upstream-token";
    }
  }
}
EOF
nginx -p "$TMP/ng" -c nginx.conf

cat > "$TMP/warden.toml" <<EOF
[gateway]
data_dir = "$TMP/data"

[listeners]
postgres = "127.0.0.1:$PG"
http = "127.0.0.1:$HTTP"
admin = "127.0.0.1:$ADMIN"

[[connections]]
name = "billing"
protocol = "http"
upstream = "http://127.0.0.1:$ORIGIN"
headers = { Authorization = "Bearer upstream-token" }

[[rules]]
id = "read-invoices"
principals = ["group:agents"]
connections = ["billing"]
http = ["GET /invoices/**"]
effect = "allow"
EOF
KEY=$("$WARDEN" keys create --config "$TMP/warden.toml" --principal agent:bench --group agents 2>/dev/null)
WARDEN_LOG=warn "$WARDEN" serve --config "$TMP/warden.toml" > "$TMP/warden.log" 2>&1 &
echo $! > "$TMP/warden.pid"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$HTTP/" && break; sleep 0.1; done

run() {
  local name=$1; shift
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "$@")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '| %s | %s | %s | %s |\n' "$name" "$rps" "$p50" "$p99"
  grep -q "Non-2xx" <<<"$out" && { echo "non-2xx responses in $name:"; echo "$out"; } || true
}
echo "| path | req/s | p50 | p99 |"
echo "|---|---:|---:|---:|"
run "direct (nginx origin)" "http://127.0.0.1:$ORIGIN/invoices/7"
run "nginx reverse proxy" "http://127.0.0.1:$PROXY/invoices/7"
run "Warden, session per request" -H "Authorization: Bearer $KEY" "http://127.0.0.1:$HTTP/billing/invoices/7"
run "Warden, one Warden-Session" -H "Authorization: Bearer $KEY" -H "Warden-Session: bench" "http://127.0.0.1:$HTTP/billing/invoices/7"
echo "warden VmHWM: $(awk '/VmHWM/ {print $2, $3}' /proc/"$(cat "$TMP/warden.pid")"/status)"
echo "records: $("$WARDEN" audit query --config "$TMP/warden.toml" --format json 2>/dev/null | wc -l)"
