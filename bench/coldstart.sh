#!/usr/bin/env bash
# Cold starts, per runtime: how long a deploy takes to answer, and how long
# re-activating an evicted instance takes (the node's own measure of the
# cold start, functions[].cold_starts.last_ms), next to the targets.
#
# A node on CPU 1 with 2 executor threads and --idle-window 1s: after each deploy and
# after every idle second the instance on the thread that is not the
# deployment's warm one is destroyed; two calls in a row land on both
# threads, one of them re-activating the instance from the compiled code.
#
# usage: bench/coldstart.sh [--rounds N]
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${FNMESH_BIN:-$ROOT/build/fnmesh}
ROUNDS=10
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2;;
    -h|--help) sed -n '2,11p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BIN" ] || { echo "build first: $BIN missing" >&2; exit 2; }
TMP=$(mktemp -d -t fnmesh-cold.XXXXXX)
. "$HERE/lib.sh"
start_node cold --threads 2 --idle-window 1s # the later --threads wins
URL="http://127.0.0.1:$PORT_cold"

mkdir -p "$TMP/js" "$TMP/lua" "$TMP/python" "$TMP/c"
echo 'export const f = () => 1;' > "$TMP/js/index.js"
printf 'return { f = function() return 1 end }\n' > "$TMP/lua/index.lua"
printf 'def f():\n    return 1\n' > "$TMP/python/index.py"
printf '#include <fnmesh.h>\nFM_EXPORT(f) { return fm_int64(ctx, 1); }\n' > "$TMP/c/index.c"

/usr/bin/python3 - "$URL" "$TMP" "$ROUNDS" <<'PY'
import http.client, io, json, os, sys, tarfile, time, urllib.parse

url, tmp, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlparse(url)
TOKEN = {"Authorization": "Bearer bench"}


def req(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def bundle(d):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name in os.listdir(d):
            t.add(os.path.join(d, name), arcname=name)
    return buf.getvalue()


def cold(dep):
    st, data = req("GET", "/system/v1/deployments/" + dep, headers=TOKEN)
    return json.loads(data)["functions"][0]["cold_starts"]


targets = {"js": "< 1 ms", "lua": "< 1 ms", "python": "< 20 ms", "c": "< 1 ms"}
rows = []
for rt in ("js", "lua", "python", "c"):
    dep = "cold" + rt
    t0 = time.monotonic()
    st, data = req("PUT", "/system/v1/deployments/" + dep, bundle(os.path.join(tmp, rt)), TOKEN)
    deploy_ms = (time.monotonic() - t0) * 1000
    assert st in (200, 201), (st, data)
    seen, first = [], None
    for i in range(rounds):
        time.sleep(1.6)  # past the idle window: one of the two instances is gone
        before = cold(dep)["count"]
        for _ in range(2):
            t0 = time.monotonic()
            st, data = req("POST", "/fn/%s/f" % dep, b"[]", {"Content-Type": "application/json"})
            ms = (time.monotonic() - t0) * 1000
            assert st == 200 and json.loads(data) == 1, (st, data)
            if first is None:
                first = ms
        cs = cold(dep)
        if cs["count"] > before:
            seen.append(cs["last_ms"])
    seen.sort()
    p50 = seen[len(seen) // 2] if seen else None
    rows.append((rt, deploy_ms, first, len(seen), p50, seen[-1] if seen else None))

print("%-8s %11s %15s %12s %12s %12s  %s" % ("runtime", "deploy ms", "1st call ms",
                                            "re-activ.", "p50 ms", "max ms", "target"))
for rt, dms, first, n, p50, mx in rows:
    f = lambda v: "-" if v is None else "%.3f" % v
    print("%-8s %11.1f %15s %12d %12s %12s  %s" % (rt, dms, f(first), n, f(p50), f(mx),
                                                   targets[rt]))
PY
