#!/usr/bin/env bash
# A two-node Ray cluster on this machine, on loopback only, around one command:
#
#   sudo scripts/local_cluster.sh CMD [ARGS...]
#
# runs CMD inside private network and PID namespaces (unshare -n -p -f --mount-proc: the only
# interface is lo, so nothing the cluster opens is reachable from outside or reaches out)
# where a Ray head (127.0.0.1:6390) and one worker node run, one CPU and 4 shard slots each;
# when CMD ends, everything in the namespace ends with it. $SDRINDEX_RAY holds the address.
# Ray left to itself listens on the external interface (../shared/notes/ray.md), hence the
# namespace. The README's cluster section shows the build / serve / query commands to run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SDRINDEX_IN_CLUSTER_NS:-}" ]; then
  [ "$#" -ge 1 ] || { echo "usage: sudo $0 CMD [ARGS...]" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "$0: needs root for unshare -n (a private network namespace)" >&2; exit 2; }
  [ -x .venv/bin/ray ] || { echo "$0: no .venv/bin/ray: .venv/bin/pip install -e '.[cluster]'" >&2; exit 2; }
  exec unshare -n -p -f --mount-proc env SDRINDEX_IN_CLUSTER_NS=1 bash "$0" "$@"
fi
ip link set lo up
tmp=$(mktemp -d /tmp/sdrindex-ray-XXXXXX)
trap '.venv/bin/ray stop --force >/dev/null 2>&1 || true' EXIT
slots='{"sdrindex_shard_slot": 4}'
.venv/bin/ray start --head --port=6390 --node-ip-address=127.0.0.1 --num-cpus=1 \
  --include-dashboard=false --disable-usage-stats --temp-dir="$tmp" --resources="$slots" >/dev/null
.venv/bin/ray start --address=127.0.0.1:6390 --node-ip-address=127.0.0.1 --num-cpus=1 \
  --disable-usage-stats --resources="$slots" >/dev/null
echo "local_cluster: two Ray nodes up on 127.0.0.1:6390" >&2
export PATH="$PWD/.venv/bin:$PATH" SDRINDEX_RAY=127.0.0.1:6390
"$@"
