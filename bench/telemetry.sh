#!/usr/bin/env bash
# What telemetry costs: hello/merge (examples/hello) on two nodes, one with
# `--telemetry on` (the default: metrics, latency windows, usage metering,
# traces) and one with `--telemetry off`, against nginx returning the same
# bytes, in one run. The two nodes run side by side, each pinned to CPU 1
# with one executor thread, and are measured alternately (on, off, on,
# off, ...) so that drift of this shared machine hits both alike; the
# median run of each is reported.
#
# usage: bench/telemetry.sh [--runs N] [--duration S] [--connections N]
# Needs: build/fnmesh (make build), wrk and nginx (scripts/deps.sh bench).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${FNMESH_BIN:-$ROOT/build/fnmesh}
RUNS=5 DURATION=6 CONNS=32
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    --connections) CONNS=$2; shift 2;;
    -h|--help) sed -n '2,11p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BIN" ] || { echo "build first: $BIN missing" >&2; exit 2; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx (scripts/deps.sh bench)" >&2; exit 2; }

TMP=$(mktemp -d -t fnmesh-telemetry.XXXXXX)
. "$HERE/lib.sh"
write_wrk_scripts
start_nginx
start_node on --telemetry on
start_node off --telemetry off
for n in on off; do
  port_var=PORT_$n
  deploy_dir "${!port_var}" hello "$ROOT/examples/hello"
done

echo "wrk -t1 -c$CONNS -d${DURATION}s x$RUNS alternating (median), servers on CPU 1, wrk on CPU 0" >&2
measure nginx "$NGINX_PID" "http://127.0.0.1:$NPORT/fn/hello/merge" "$TMP/post.lua"
for _ in $(seq 1 "$RUNS"); do
  measure telemetry-on "$PID_on" "http://127.0.0.1:$PORT_on/fn/hello/merge" "$TMP/post.lua"
  measure telemetry-off "$PID_off" "http://127.0.0.1:$PORT_off/fn/hello/merge" "$TMP/post.lua"
done

echo
summarise
on=$(awk '$1=="telemetry-on"' "$TMP/runs" | sort -k2,2n | awk '{a[NR]=$2} END{print a[int((NR+1)/2)]}')
off=$(awk '$1=="telemetry-off"' "$TMP/runs" | sort -k2,2n | awk '{a[NR]=$2} END{print a[int((NR+1)/2)]}')
echo
awk -v on="$on" -v off="$off" 'BEGIN{printf "telemetry costs %.1f %% of throughput (on %d req/s vs off %d req/s, medians)\n", (off-on)/off*100, on, off}'
# the node that recorded really did: its stats saw the calls
curl -fs -H 'Authorization: Bearer bench' "http://127.0.0.1:$PORT_on/system/v1/stats?window=5m&deployment=hello" \
  | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); f=[x for x in d["functions"] if x["function"]=="merge"][0]["5m"]; print("telemetry-on recorded %d calls of hello/merge in the last 5 min, p99 %s us" % (f["calls"], f["p99_us"]))'
