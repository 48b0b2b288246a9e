#!/usr/bin/env bash
# Cluster mode over loopback: a real nats-server with JetStream and two
# fnmesh nodes (A on CPU 1, B on CPU 0), wrk on CPU 0.
#
#   1. call overhead, one connection: hello/merge on node A run on A
#      (X-Fnmesh-Route: local) vs sent to B over NATS and answered back
#      (X-Fnmesh-Route: remote); the p50 difference is the cross-node cost.
#   2. throughput, 32 connections: one single-node fnmesh (no cluster) vs
#      node A with B behind NATS taking A's overflow (auto routing).
#
# On a 2-core machine B shares CPU 0 with wrk and NATS: the point is the
# overhead, not scaling. Prints medians of --runs runs side by side.
#
# usage: bench/cluster.sh [--runs N] [--duration S]
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${FNMESH_BIN:-$ROOT/build/fnmesh}
RUNS=3 DURATION=5 CONNS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    -h|--help) sed -n '2,14p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BIN" ] || { echo "build first: $BIN missing" >&2; exit 2; }
command -v nats-server >/dev/null || { echo "nats-server missing: scripts/deps.sh test" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk missing: scripts/deps.sh bench" >&2; exit 2; }
TMP=$(mktemp -d -t fnmesh-cluster.XXXXXX)
. "$HERE/lib.sh"
write_wrk_scripts

NPORT_NATS=$(free_port)
mkdir -p "$TMP/js"
nats-server -js -a 127.0.0.1 -p "$NPORT_NATS" -sd "$TMP/js" 2>"$TMP/nats.log" &
PIDS+=($!)
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$NPORT_NATS") 2>/dev/null && break; sleep 0.1; done
NATS_URL="nats://127.0.0.1:$NPORT_NATS"

start_node a --cluster "$NATS_URL" --node-id a
# B on the other CPU (start_node pins to CPU 1: start it by hand)
PORT_b=$(free_port)
FNMESH_ADMIN_TOKEN=bench taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT_b" --data "$TMP/data-b" \
  --threads 1 --log-level warn --cluster "$NATS_URL" --node-id b 2>"$TMP/b.log" &
PID_b=$!; PIDS+=("$PID_b")
wait_url "http://127.0.0.1:$PORT_b/readyz" || { echo "fnmesh (b) did not start" >&2; exit 1; }
start_node single
deploy_dir "$PORT_a" hello "$ROOT/examples/hello"
deploy_dir "$PORT_single" hello "$ROOT/examples/hello"
for _ in $(seq 1 50); do
  curl -fs -o /dev/null -H 'X-Fnmesh-Route: local' -X POST -d '[{},{}]' \
    "http://127.0.0.1:$PORT_b/fn/hello/merge" && break; sleep 0.1
done
for _ in $(seq 1 50); do  # A sees B's heartbeat
  curl -fs -H 'Authorization: Bearer bench' "http://127.0.0.1:$PORT_a/system/v1/cluster" |
    grep -q '"id": *"b"' && break; sleep 0.1
done

route_script() { # NAME ROUTE
  { echo 'wrk.method = "POST"'
    echo "wrk.body = '[{\"a\":1},{\"b\":2}]'"
    echo 'wrk.headers["Content-Type"] = "application/json"'
    [ -n "$2" ] && echo "wrk.headers[\"X-Fnmesh-Route\"] = \"$2\""
    cat "$TMP/report.lua"; } > "$TMP/$1.lua"
}
route_script local local
route_script remote remote
route_script auto ""

URL_A="http://127.0.0.1:$PORT_a/fn/hello/merge"
echo "1. call overhead (1 connection), $RUNS x ${DURATION}s" >&2
CONNS=1
for _ in $(seq 1 "$RUNS"); do
  measure local "$PID_a" "$URL_A" "$TMP/local.lua"
  measure remote "$PID_a" "$URL_A" "$TMP/remote.lua"
done
mv "$TMP/runs" "$TMP/runs.latency"
echo "2. throughput (32 connections), $RUNS x ${DURATION}s" >&2
CONNS=32
for _ in $(seq 1 "$RUNS"); do
  measure single-node "$PID_single" "http://127.0.0.1:$PORT_single/fn/hello/merge" "$TMP/auto.lua"
  measure a+b-nats "$PID_a" "$URL_A" "$TMP/auto.lua"
done

echo
echo "cross-node call overhead (1 connection; CPU us/req is node A's):"
mv "$TMP/runs" "$TMP/runs.tput"; cp "$TMP/runs.latency" "$TMP/runs"
summarise
awk '$1=="local"{l[++nl]=$3} $1=="remote"{r[++nr]=$3}
  END{n=nl; m=nr; for(i=1;i<=n;i++)for(j=i+1;j<=n;j++)if(l[j]<l[i]){t=l[i];l[i]=l[j];l[j]=t}
      for(i=1;i<=m;i++)for(j=i+1;j<=m;j++)if(r[j]<r[i]){t=r[i];r[i]=r[j];r[j]=t}
      printf "p50 overhead of a cross-node call: %d us (median local %d us, remote %d us)\n",
      r[int((m+1)/2)]-l[int((n+1)/2)], l[int((n+1)/2)], r[int((m+1)/2)]}' "$TMP/runs"
echo
echo "throughput (32 connections; CPU us/req is the node wrk talks to):"
cp "$TMP/runs.tput" "$TMP/runs"
summarise
served_by_b=$(curl -fs -H 'Authorization: Bearer bench' "http://127.0.0.1:$PORT_b/system/v1/stats" |
  /usr/bin/python3 -c 'import json,sys; print(sum(f["total"]["invocations"] for f in json.load(sys.stdin)["functions"]))')
echo "calls node B ran for A (forwarded over NATS, all runs): $served_by_b"
