#!/usr/bin/env bash
# First start as a newcomer meets it: a fresh clone, a fresh venv, a cold numba cache.
#   bash scripts/first_start.sh [PORT]
# Clones this repository's HEAD into a temporary folder (with ../shared beside it, as CI
# has it), runs `./run.sh serve --port PORT` there and prints three times: venv and install,
# the default bundle's build, and the build's end to a /readyz 200. Loopback only; stops the
# server and removes the clone at the end.
set -euo pipefail
port="${1:-18000}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
git clone -q "$repo" "$work/sdrindex"
[ -e "$repo/../shared" ] && ln -s "$(cd "$repo/../shared" && pwd)" "$work/shared"
cd "$work/sdrindex"
log="$work/serve.log"
unset NUMBA_CACHE_DIR
t0=$(date +%s.%N)
./run.sh serve --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
pid=$!
wait_for() {  # a line in the log, or the server gone
  until grep -q "$1" "$log"; do
    kill -0 "$pid" 2>/dev/null || { echo "the server stopped:"; tail -20 "$log"; exit 1; }
    sleep 0.25
  done
}
wait_for "building the default"
t1=$(date +%s.%N)
wait_for "sdrindex serve: http"
t2=$(date +%s.%N)
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
  kill -0 "$pid" 2>/dev/null || { echo "the server stopped:"; tail -20 "$log"; exit 1; }
  sleep 0.25
done
t3=$(date +%s.%N)
grep "done in" "$log" || true
printf 'venv + install %.1f s; build %.1f s; ready %.1f s after the build\n' \
  "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$(echo "$t3 - $t2" | bc)"
