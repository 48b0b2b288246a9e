#!/usr/bin/env bash
# Side-by-side HTTP benchmark: fnmesh serving merge(a, b) (examples/hello,
# and the same function in Lua, Python and C) against nginx returning the same bytes ("helloworld"), in one run.
#
#   servers pinned to CPU 1 (taskset), wrk pinned to CPU 0
#   wrk -t1 -c32 -d${DURATION}s --latency, keep-alive, loopback only
#   2 s warm-up, RUNS measured runs per target, median req/s run reported
#   CPU µs/request = server utime+stime delta / requests (all its threads)
#
# Then: RSS of a node with 100 deployed JS functions (100 deployments).
#
# usage: bench/merge.sh [--runs N] [--duration S] [--connections N] [--no-rss]
# Needs: build/fnmesh (make build), wrk and nginx (scripts/deps.sh bench).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${FNMESH_BIN:-$ROOT/build/fnmesh}
RUNS=3 DURATION=10 CONNS=32 DO_RSS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    --connections) CONNS=$2; shift 2;;
    --no-rss) DO_RSS=0; shift;;
    -h|--help) sed -n '2,15p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BIN" ] || { echo "build first: $BIN missing" >&2; exit 2; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx (scripts/deps.sh bench)" >&2; exit 2; }

TMP=$(mktemp -d -t fnmesh-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_url() { for _ in $(seq 1 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
# utime+stime of a process and its children (nginx's worker), all threads
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}

cat > "$TMP/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("WRK requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
LUA
cat > "$TMP/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '["hello","world"]'
wrk.headers["Content-Type"] = "application/json"
LUA
cat "$TMP/report.lua" >> "$TMP/post.lua"

# measure LABEL PID URL SCRIPT -> appends "label req/s p50 p99 cpu_us" to results
HZ=$(getconf CLK_TCK)
measure() {
  local label=$1 pid=$2 url=$3 script=$4 i line best=()
  taskset -c 0 wrk -t1 -c"$CONNS" -d2s -s "$script" "$url" >/dev/null 2>&1   # warm-up
  local rows=()
  for i in $(seq 1 "$RUNS"); do
    local t0; t0=$(cpu_ticks "$pid")
    line=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "$url" 2>/dev/null | grep '^WRK')
    local t1; t1=$(cpu_ticks "$pid")
    local req dur p50 p99 err
    req=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line"); dur=$(sed -E 's/.*duration_us=([0-9]+).*/\1/' <<<"$line")
    p50=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line"); p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
    err=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
    local rps=$(( req * 1000000 / dur ))
    local cpu; cpu=$(awk -v d="$((t1 - t0))" -v hz="$HZ" -v r="$req" 'BEGIN{printf "%.2f", d/hz*1e6/r}')
    rows+=("$rps $p50 $p99 $cpu $err")
    echo "  $label run $i: $rps req/s, p50 ${p50}us, p99 ${p99}us, ${cpu} us CPU/req, $err errors" >&2
  done
  # median by req/s
  local med; med=$(printf '%s\n' "${rows[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  echo "$label $med" >> "$TMP/results"
}

# nginx
NPORT=$(free_port)
mkdir -p "$TMP/nginx"
cat > "$TMP/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  default_type application/json;
  client_body_temp_path $TMP/nginx;
  server { listen 127.0.0.1:$NPORT; location / { return 200 '"helloworld"'; } }
}
CONF
taskset -c 1 nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
wait_url "http://127.0.0.1:$NPORT/" || { echo "nginx did not start" >&2; exit 1; }

# fnmesh
FPORT=$(free_port)
FNMESH_ADMIN_TOKEN=bench taskset -c 1 "$BIN" serve --listen "127.0.0.1:$FPORT" --data "$TMP/data" \
  --threads 1 --log-level warn 2>"$TMP/fnmesh.log" &
FN_PID=$!; PIDS+=("$FN_PID")
wait_url "http://127.0.0.1:$FPORT/readyz" || { echo "fnmesh did not start" >&2; exit 1; }
tar czf "$TMP/hello.tgz" -C "$ROOT/examples/hello" .
curl -fs -X PUT -H 'Authorization: Bearer bench' -H 'Content-Type: application/gzip' \
  --data-binary @"$TMP/hello.tgz" "http://127.0.0.1:$FPORT/system/v1/deployments/hello" >/dev/null \
  || { echo "deploy failed" >&2; exit 1; }
[ "$(curl -s -d '["hello","world"]' "http://127.0.0.1:$FPORT/fn/hello/merge")" = '"helloworld"' ] \
  || { echo "merge does not answer \"helloworld\"" >&2; exit 1; }

# the same merge(a, b) in the other runtimes
mkdir -p "$TMP/mpy" "$TMP/mlua" "$TMP/mc"
printf 'def merge(a, b):\n    return a + b\n' > "$TMP/mpy/merge.py"
printf 'return { merge = function(a, b) return a .. b end }\n' > "$TMP/mlua/merge.lua"
cat > "$TMP/mc/merge.c" <<'C'
#include <fnmesh.h>
#include <string.h>
FM_EXPORT(merge, "a", "b") {
    size_t la = 0, lb = 0;
    const char *a = fm_get_string(fm_arg(ctx, 0), &la), *b = fm_get_string(fm_arg(ctx, 1), &lb);
    char buf[512];
    if (!a || !b || la + lb > sizeof(buf)) return fm_error(ctx, "two short strings, please");
    memcpy(buf, a, la);
    memcpy(buf + la, b, lb);
    return fm_string(ctx, buf, la + lb);
}
C
for d in mpy mlua mc; do
  tar czf "$TMP/$d.tgz" -C "$TMP/$d" .
  curl -fs -X PUT -H 'Authorization: Bearer bench' --data-binary @"$TMP/$d.tgz" \
    "http://127.0.0.1:$FPORT/system/v1/deployments/$d" >/dev/null || echo "deploy $d failed" >&2
done

echo "wrk -t1 -c$CONNS -d${DURATION}s x$RUNS (median), servers on CPU 1, wrk on CPU 0" >&2
measure nginx "$NGINX_PID" "http://127.0.0.1:$NPORT/fn/hello/merge" "$TMP/post.lua"
measure fnmesh-post "$FN_PID" "http://127.0.0.1:$FPORT/fn/hello/merge" "$TMP/post.lua"
measure fnmesh-get "$FN_PID" "http://127.0.0.1:$FPORT/fn/hello/merge?a=hello&b=world" "$TMP/report.lua"
measure fnmesh-lua "$FN_PID" "http://127.0.0.1:$FPORT/fn/mlua/merge" "$TMP/post.lua"
measure fnmesh-python "$FN_PID" "http://127.0.0.1:$FPORT/fn/mpy/merge" "$TMP/post.lua"
measure fnmesh-c "$FN_PID" "http://127.0.0.1:$FPORT/fn/mc/merge" "$TMP/post.lua"

echo
printf '%-14s %10s %8s %8s %12s %8s\n' target "req/s" "p50" "p99" "CPU us/req" ratio
NG=$(awk '$1=="nginx"{print $2}' "$TMP/results")
while read -r label rps p50 p99 cpu err; do
  printf '%-14s %10s %6sus %6sus %12s %8s\n' "$label" "$rps" "$p50" "$p99" "$cpu" \
    "$(awk -v a="$rps" -v b="$NG" 'BEGIN{printf "%.2f", a/b}')"
done < "$TMP/results"

if [ "$DO_RSS" = 1 ]; then
  kill -TERM "$FN_PID"; wait "$FN_PID" 2>/dev/null
  RPORT=$(free_port)
  FNMESH_ADMIN_TOKEN=bench "$BIN" serve --listen "127.0.0.1:$RPORT" --data "$TMP/rss" --log-level warn 2>"$TMP/rss.log" &
  RSS_PID=$!; PIDS+=("$RSS_PID")
  wait_url "http://127.0.0.1:$RPORT/readyz"
  base=$(awk '/VmRSS/{print $2}' "/proc/$RSS_PID/status")
  for i in $(seq 1 100); do
    mkdir -p "$TMP/fn$i"
    printf 'export function f%d(a, b) { return a + b + %d; }\n' "$i" "$i" > "$TMP/fn$i/index.js"
    tar czf "$TMP/fn$i.tgz" -C "$TMP/fn$i" .
    curl -fs -X PUT -H 'Authorization: Bearer bench' --data-binary @"$TMP/fn$i.tgz" \
      "http://127.0.0.1:$RPORT/system/v1/deployments/fn$i" >/dev/null || echo "deploy fn$i failed" >&2
  done
  for i in $(seq 1 100); do curl -fs -d '[1,2]' "http://127.0.0.1:$RPORT/fn/fn$i/f$i" >/dev/null; done
  sleep 1
  rss=$(awk '/VmRSS/{print $2}' "/proc/$RSS_PID/status")
  echo
  echo "RSS: idle node $((base / 1024)) MB; with 100 deployed JS functions (100 deployments, each warm on $(nproc) executor threads, each called once): $((rss / 1024)) MB"
fi
