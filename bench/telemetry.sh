#!/usr/bin/env bash
# What telemetry costs: hello/merge (examples/hello) on two nodes, one with
# `--telemetry on` (the default: metrics, latency windows, usage metering,
# traces) and one with `--telemetry off`, against nginx returning the same
# bytes, in one run. The two nodes run side by side, each pinned to CPU 1
# with one executor thread, and are measured alternately (on, off, on,
# off, ...) so that drift of this shared machine hits both alike; the
# median run of each is reported.
#
# With --instructions, also counts the instructions per call under callgrind
# (valgrind), which does not depend on the machine's noise: one node per
# setting serves 500 and then 3500 calls from one keep-alive client, and the
# difference of the two runs' totals / 3000 is the cost of one call (all
# threads: HTTP, hand-off, the function, telemetry).
#
# usage: bench/telemetry.sh [--runs N] [--duration S] [--connections N] [--instructions]
# Needs: build/fnmesh (make build), wrk and nginx (scripts/deps.sh bench), valgrind.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${FNMESH_BIN:-$ROOT/build/fnmesh}
RUNS=5 DURATION=6 CONNS=32 INSTR=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    --connections) CONNS=$2; shift 2;;
    --instructions) INSTR=1; shift;;
    -h|--help) sed -n '2,17p' "$0"; exit 0;;
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
median() { # label column -> the median of that column over the label's runs
  awk -v l="$1" '$1==l' "$TMP/runs" | sort -k"$2","$2"n | awk -v c="$2" '{a[NR]=$c} END{print a[int((NR+1)/2)]}'
}
on=$(median telemetry-on 2) off=$(median telemetry-off 2)
con=$(median telemetry-on 5) coff=$(median telemetry-off 5)
echo
awk -v on="$on" -v off="$off" 'BEGIN{printf "telemetry costs %.1f %% of throughput (on %d req/s vs off %d req/s, medians)\n", (off-on)/off*100, on, off}'
awk -v on="$con" -v off="$coff" 'BEGIN{printf "telemetry costs %.1f %% of CPU per request (on %.2f us vs off %.2f us, medians)\n", (on-off)/off*100, on, off}'
# the node that recorded really did: its stats saw the calls
curl -fs -H 'Authorization: Bearer bench' "http://127.0.0.1:$PORT_on/system/v1/stats?window=5m&deployment=hello" \
  | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); f=[x for x in d["functions"] if x["function"]=="merge"][0]["5m"]; print("telemetry-on recorded %d calls of hello/merge in the last 5 min, p99 %s us" % (f["calls"], f["p99_us"]))'

# instructions per call under callgrind: total(3500 calls) - total(500 calls), / 3000
callgrind_total() { # N telemetry-setting -> total instructions of a whole node run
  local n=$1 mode=$2 port d; port=$(free_port); d="$TMP/cg-$mode-$n"
  mkdir -p "$d"
  FNMESH_ADMIN_TOKEN=bench valgrind --tool=callgrind --callgrind-out-file="$d/out" "$BIN" serve \
    --listen "127.0.0.1:$port" --data "$d/data" --threads 1 --log-level warn --telemetry "$mode" 2>"$d/log" &
  local pid=$!
  for _ in $(seq 1 300); do curl -fs -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.2; done
  deploy_dir "$port" hello "$ROOT/examples/hello"
  /usr/bin/python3 - "$port" "$n" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    c.request("POST", "/fn/hello/merge", body=b'["hello","world"]', headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.read() == b'"helloworld"'
PY
  kill -TERM "$pid"; wait "$pid"
  awk '/Collected/{gsub(",","",$4); print $4}' "$d/log"
}
if [ "$INSTR" = 1 ]; then
  command -v valgrind >/dev/null || { echo "--instructions needs valgrind" >&2; exit 2; }
  echo
  for mode in on off; do
    a=$(callgrind_total 500 "$mode"); b=$(callgrind_total 3500 "$mode")
    eval "IR_$mode=$(( (b - a) / 3000 ))"
  done
  awk -v on="$IR_on" -v off="$IR_off" 'BEGIN{printf "instructions per call (callgrind): telemetry on %d, off %d: telemetry costs %.1f %%\n", on, off, (on-off)/off*100}'
fi
