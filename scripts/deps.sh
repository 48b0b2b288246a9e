#!/bin/sh
# Installs the Debian packages fnmesh needs to build, run and test, when
# they are missing. Non-interactive; safe to run again.
set -eu

BUILD="build-essential cmake pkg-config esbuild libh2o-evloop-dev libssl-dev libwslay-dev
libjavascriptcoregtk-4.1-dev libjansson-dev libsqlite3-dev libarchive-dev
libcurl4-openssl-dev libluajit2-5.1-dev libjs-mustache
libpython3.11-dev libnats-dev libseccomp-dev libmimalloc-dev"
TEST="libcmocka-dev curl python3 valgrind prometheus nats-server"
BENCH="wrk nginx-light"

want="$BUILD"
case "${1:-build}" in
  test) want="$BUILD $TEST" ;;
  bench) want="$BUILD $TEST $BENCH" ;;
esac

missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
