#!/usr/bin/env bash
# In-process mesh calls per second, one core: a JavaScript function awaits
# fnmesh.call(...) N times in a row (sequential) and in waves of 100
# (concurrent), against JavaScript, Lua, Python and C callees (N/10 for the
# worker-process runtimes), and calls fnmesh.callSync(...) 5N times in a row
# (JavaScript and Lua callees); plus HTTP GET of each with wrk (server on
# CPU 1, wrk on CPU 0), side by side with nginx in the same run (ratio
# column: the HTTP -> Python target is 0.4x nginx).
#
# usage: bench/mesh.sh [--calls N] [--duration S]
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${FNMESH_BIN:-$ROOT/build/fnmesh}
CALLS=200000 DURATION=8
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    -h|--help) sed -n '2,11p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BIN" ] || { echo "build first: $BIN missing" >&2; exit 2; }
TMP=$(mktemp -d -t fnmesh-mesh.XXXXXX)
. "$HERE/lib.sh"
start_node mesh
URL="http://127.0.0.1:$PORT_mesh"

deploy() { # name dir -> http status
  tar czf "$TMP/$1.tgz" -C "$2" .
  curl -s -o "$TMP/$1.out" -w '%{http_code}' -X PUT -H 'Authorization: Bearer bench' \
    --data-binary @"$TMP/$1.tgz" "$URL/system/v1/deployments/$1"
}
mkdir -p "$TMP/caller" "$TMP/mbjs" "$TMP/mblua"
cat > "$TMP/caller/index.js" <<'JS'
export async function seq(n, target) {
  const t0 = Date.now(); let acc = 0;
  for (let i = 0; i < n; i++) acc = await fnmesh.call(target, acc, 1);
  if (acc !== n) throw new Error("wrong sum " + acc);
  return Math.round(n / ((Date.now() - t0) / 1000));
}
export function sync(n, target) {
  const t0 = Date.now(); let acc = 0;
  for (let i = 0; i < n; i++) acc = fnmesh.callSync(target, acc, 1);
  if (acc !== n) throw new Error("wrong sum " + acc);
  return Math.round(n / ((Date.now() - t0) / 1000));
}
export async function par(n, target) {
  const t0 = Date.now(); let done = 0;
  for (let i = 0; i < n; i += 100) {
    const ps = []; for (let k = 0; k < 100; k++) ps.push(fnmesh.call(target, k, 1));
    done += (await Promise.all(ps)).length;
  }
  return Math.round(done / ((Date.now() - t0) / 1000));
}
JS
echo '{"timeout_ms": 120000}' > "$TMP/caller/fnmesh.json"
echo 'export const add = (a, b) => a + b;' > "$TMP/mbjs/index.js"
printf 'return { add = function(a, b) return a + b end }\n' > "$TMP/mblua/index.lua"
mkdir -p "$TMP/mbpy" "$TMP/mbc"
printf 'def add(a, b):\n    return a + b\n' > "$TMP/mbpy/index.py"
printf '#include <fnmesh.h>\nFM_EXPORT(add, "a", "b") { return fm_int64(ctx, fm_get_int(fm_arg(ctx, 0)) + fm_get_int(fm_arg(ctx, 1))); }\n' > "$TMP/mbc/index.c"
deploy mbjs "$TMP/mbjs" >/dev/null
deploy mblua "$TMP/mblua" >/dev/null
deploy mbpy "$TMP/mbpy" >/dev/null
deploy mbc "$TMP/mbc" >/dev/null
deploy caller "$TMP/caller" >/dev/null

printf '%-34s %14s\n' "mesh call from JS" "calls/s"
for t in mbjs mblua mbpy mbc; do
  case $t in mbjs) name="JS -> JS";; mblua) name="JS -> Lua";; mbpy) name="JS -> Python (worker)";; mbc) name="JS -> C (worker)";; esac
  n=$CALLS
  case $t in mbpy|mbc) n=$((CALLS / 10));; esac
  s=$(curl -s -d "[$n, \"$t/add\"]" "$URL/fn/caller/seq")
  p=$(curl -s -d "[$n, \"$t/add\"]" "$URL/fn/caller/par")
  printf '%-34s %14s\n' "$name, sequential" "$s"
  printf '%-34s %14s\n' "$name, 100 at a time" "$p"
  case $t in mbjs|mblua)
    y=$(curl -s -d "[$((n * 5)), \"$t/add\"]" "$URL/fn/caller/sync")
    printf '%-34s %14s\n' "$name, callSync" "$y";;
  esac
done

if command -v wrk >/dev/null && command -v nginx >/dev/null; then
  # HTTP side by side with nginx in this run: ratios, not absolute figures
  CONNS=32
  write_wrk_scripts
  start_nginx
  echo
  echo "HTTP GET, wrk -t1 -c$CONNS -d${DURATION}s (server on CPU 1, wrk on CPU 0):"
  measure nginx "$NGINX_PID" "http://127.0.0.1:$NPORT/fn/add?a=1&b=2" "$TMP/report.lua"
  for t in mbjs mblua mbpy mbc; do
    measure "GET-/fn/$t/add" "$PID_mesh" "$URL/fn/$t/add?a=1&b=2" "$TMP/report.lua"
  done
  echo
  summarise
else
  echo "(HTTP part skipped: needs wrk and nginx, scripts/deps.sh bench)"
fi
