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
. "$HERE/lib.sh"
write_wrk_scripts
start_nginx
start_node main
FPORT=$PORT_main FN_PID=$PID_main
deploy_dir "$FPORT" hello "$ROOT/examples/hello"
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
for d in mpy mlua mc; do deploy_dir "$FPORT" "$d" "$TMP/$d"; done

echo "wrk -t1 -c$CONNS -d${DURATION}s x$RUNS (median), servers on CPU 1, wrk on CPU 0" >&2
for target in "nginx $NGINX_PID http://127.0.0.1:$NPORT/fn/hello/merge post" \
              "fnmesh-post $FN_PID http://127.0.0.1:$FPORT/fn/hello/merge post" \
              "fnmesh-get $FN_PID http://127.0.0.1:$FPORT/fn/hello/merge?a=hello&b=world report" \
              "fnmesh-lua $FN_PID http://127.0.0.1:$FPORT/fn/mlua/merge post" \
              "fnmesh-python $FN_PID http://127.0.0.1:$FPORT/fn/mpy/merge post" \
              "fnmesh-c $FN_PID http://127.0.0.1:$FPORT/fn/mc/merge post"; do
  set -f; set -- $target; set +f
  for _ in $(seq 1 "$RUNS"); do measure "$1" "$2" "$3" "$TMP/$4.lua"; done
done

echo
summarise

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
