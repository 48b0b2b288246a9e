# bench/lib.sh - shared parts of the HTTP benchmarks (sourced, not run).
#
# Servers run pinned to CPU 1 (taskset), wrk to CPU 0, keep-alive, loopback
# only. `measure` runs wrk once against a target (after a 2 s warm-up the
# first time it sees a label) and appends "label req/s p50 p99 cpu_us errors"
# to $TMP/runs; `summarise` prints the median run of every label, in the
# order the labels first ran, with its ratio to the first label.
#
# The caller sets TMP (a scratch directory), DURATION (seconds per run) and
# CONNS (connections), and gets PIDS (processes stopped at exit).

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

# wrk scripts: $TMP/report.lua (GET) and $TMP/post.lua (POST ["hello","world"])
write_wrk_scripts() {
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
}

HZ=$(getconf CLK_TCK)
# measure LABEL PID URL SCRIPT: one run, appended to $TMP/runs
measure() {
  local label=$1 pid=$2 url=$3 script=$4 line
  if ! grep -qx "$label" "$TMP/warmed" 2>/dev/null; then
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s -s "$script" "$url" >/dev/null 2>&1
    echo "$label" >> "$TMP/warmed"
  fi
  local t0; t0=$(cpu_ticks "$pid")
  line=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "$url" 2>/dev/null | grep '^WRK')
  local t1; t1=$(cpu_ticks "$pid")
  local req dur p50 p99 err
  req=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line"); dur=$(sed -E 's/.*duration_us=([0-9]+).*/\1/' <<<"$line")
  p50=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line"); p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
  err=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
  local rps=$(( req * 1000000 / dur ))
  local cpu; cpu=$(awk -v d="$((t1 - t0))" -v hz="$HZ" -v r="$req" 'BEGIN{printf "%.2f", d/hz*1e6/r}')
  echo "$label $rps $p50 $p99 $cpu $err" >> "$TMP/runs"
  echo "  $label: $rps req/s, p50 ${p50}us, p99 ${p99}us, ${cpu} us CPU/req, $err errors" >&2
}

summarise() {
  printf '%-16s %10s %8s %8s %12s %8s\n' target "req/s" "p50" "p99" "CPU us/req" ratio
  local labels first="" label med
  labels=$(awk '!seen[$1]++{print $1}' "$TMP/runs")
  for label in $labels; do
    med=$(awk -v l="$label" '$1==l' "$TMP/runs" | sort -k2,2n | awk '{a[NR]=$0} END{print a[int((NR+1)/2)]}')
    [ -z "$first" ] && first=$(awk '{print $2}' <<<"$med")
    awk -v f="$first" '{printf "%-16s %10s %6sus %6sus %12s %8.3f\n", $1, $2, $3, $4, $5, $2/f}' <<<"$med"
  done
}

# start_nginx: nginx answering '"helloworld"' on every path; sets NPORT, NGINX_PID
start_nginx() {
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
}

# start_node NAME [serve options...]: a node on CPU 1 with one executor
# thread; sets PORT_<NAME> and PID_<NAME>
start_node() {
  local name=$1; shift
  local port; port=$(free_port)
  FNMESH_ADMIN_TOKEN=bench taskset -c 1 "$BIN" serve --listen "127.0.0.1:$port" --data "$TMP/data-$name" \
    --threads 1 --log-level warn "$@" 2>"$TMP/$name.log" &
  local pid=$!; PIDS+=("$pid")
  printf -v "PORT_$name" '%s' "$port"
  printf -v "PID_$name" '%s' "$pid"
  wait_url "http://127.0.0.1:$port/readyz" || { echo "fnmesh ($name) did not start" >&2; exit 1; }
}

# deploy_dir PORT NAME DIR: deploys DIR as NAME (fails the script on error)
deploy_dir() {
  tar czf "$TMP/$2.tgz" -C "$3" .
  curl -fs -X PUT -H 'Authorization: Bearer bench' -H 'Content-Type: application/gzip' \
    --data-binary @"$TMP/$2.tgz" "http://127.0.0.1:$1/system/v1/deployments/$2" >/dev/null \
    || { echo "deploy $2 failed" >&2; exit 1; }
}
