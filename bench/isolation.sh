#!/usr/bin/env bash
# Thread vs process isolation, side by side with nginx in one run:
# merge(a, b) of examples/hello served by a node with --isolation thread
# (JavaScript on the executor thread) and by one with --isolation process
# (JavaScript in sandboxed worker processes), and the Lua merge both ways.
#
#   servers pinned to CPU 1 (taskset; worker processes inherit it), wrk on CPU 0
#   wrk -t1 -c32 -d${DURATION}s --latency, keep-alive, loopback only
#   2 s warm-up, RUNS measured runs per target, median req/s run reported
#   CPU µs/request = utime+stime delta of the server and its worker processes
#
# usage: bench/isolation.sh [--runs N] [--duration S] [--connections N]
# Needs: build/fnmesh (make build), wrk and nginx (scripts/deps.sh bench).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${FNMESH_BIN:-$ROOT/build/fnmesh}
RUNS=3 DURATION=10 CONNS=32
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    --connections) CONNS=$2; shift 2;;
    -h|--help) sed -n '2,13p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BIN" ] || { echo "build first: $BIN missing" >&2; exit 2; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx (scripts/deps.sh bench)" >&2; exit 2; }

TMP=$(mktemp -d -t fnmesh-bench.XXXXXX)
. "$HERE/lib.sh"
write_wrk_scripts
start_nginx
mkdir -p "$TMP/mlua"
printf 'return { merge = function(a, b) return a .. b end }\n' > "$TMP/mlua/merge.lua"
for mode in thread process; do
  start_node "$mode" --isolation "$mode"
  port_var=PORT_$mode
  deploy_dir "${!port_var}" hello "$ROOT/examples/hello"
  deploy_dir "${!port_var}" mlua "$TMP/mlua"
  [ "$(curl -s -d '["hello","world"]' "http://127.0.0.1:${!port_var}/fn/hello/merge")" = '"helloworld"' ] \
    || { echo "merge ($mode) does not answer \"helloworld\"" >&2; exit 1; }
done

echo "wrk -t1 -c$CONNS -d${DURATION}s x$RUNS (median), servers on CPU 1, wrk on CPU 0" >&2
for target in "nginx $NGINX_PID http://127.0.0.1:$NPORT/fn/hello/merge" \
              "js-thread $PID_thread http://127.0.0.1:$PORT_thread/fn/hello/merge" \
              "js-process $PID_process http://127.0.0.1:$PORT_process/fn/hello/merge" \
              "lua-thread $PID_thread http://127.0.0.1:$PORT_thread/fn/mlua/merge" \
              "lua-process $PID_process http://127.0.0.1:$PORT_process/fn/mlua/merge"; do
  set -f; set -- $target; set +f
  for _ in $(seq 1 "$RUNS"); do measure "$1" "$2" "$3" "$TMP/post.lua"; done
done

echo
summarise
echo
echo "worker processes of the process-isolation node:"
ps --ppid "$PID_process" -o pid=,rss=,args= | awk '{printf "  pid %s  %6.1f MiB  %s %s\n", $1, $2/1024, $3, $4}'
