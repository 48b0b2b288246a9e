#!/bin/sh
# Starts a node in the foreground with every folder of examples/ deployed.
# usage: run-node.sh BINARY HOST:PORT DATA_DIR
set -eu
BIN=$1 LISTEN=$2 DATA=$3
URL="http://$LISTEN"
mkdir -p "$DATA"
"$BIN" serve --listen "$LISTEN" --data "$DATA" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID; exit 0' INT TERM
i=0
until curl -fs "$URL/readyz" >/dev/null 2>&1; do
  i=$((i + 1))
  if [ $i -gt 100 ] || ! kill -0 $PID 2>/dev/null; then
    echo "fnmesh did not become ready on $URL" >&2
    kill -TERM $PID 2>/dev/null || true
    exit 1
  fi
  sleep 0.1
done
TOKEN_FILE="$DATA/admin.token"
for d in examples/*/; do
  FNMESH_DATA="$DATA" "$BIN" deploy --url "$URL" "$d" || true
done
cat <<MSG

  fnmesh is running at $URL   (pid $PID, Ctrl-C to stop)
  admin token: ${FNMESH_ADMIN_TOKEN:+\$FNMESH_ADMIN_TOKEN}${FNMESH_ADMIN_TOKEN:-$TOKEN_FILE}

  try:
    curl -d '["a","b"]' $URL/fn/hello/merge
    curl '$URL/fn/hello/greet?name=Ada'
    curl -d '{"jsonrpc":"2.0","method":"hello.merge","params":["a","b"],"id":1}' $URL/rpc
    build/fnmesh invoke hello/merge a b
    build/fnmesh ls

MSG
wait $PID
