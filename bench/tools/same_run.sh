#!/bin/bash
# Same-run comparison of bench/network.py between an older checkout and this one, alternating per round
# (old, new; then new, old; ...), because the machine's own speed drifts between runs (docs/throughput.md).
#
#   git worktree add /tmp/old 9d7cf39 && ln -s "$PWD/contracts/node_modules" /tmp/old/contracts/
#   bench/tools/same_run.sh /tmp/old 5 /tmp/same-run
#
# The older checkout is run with this checkout's venv and PYTHONPATH set to it (last round's package is `node`).
# OLD_ARGS are the flags that checkout's bench/network.py needs for the same measurement.
set -euo pipefail
old=${1:?older checkout}; rounds=${2:-5}; out=${3:-same-run}
here=$(cd "$(dirname "$0")/../.." && pwd)
args="--clients 12 --duration 15 --requests 150 --client-procs 2"
OLD_ARGS=${OLD_ARGS:---skip-dkg $args}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for side in $order; do
    echo "round $round: $side" >&2
    if [ "$side" = old ]; then
      (cd "$old" && PYTHONPATH="$old" "$here/.venv/bin/python" bench/network.py $OLD_ARGS > "$out/old-$round.txt" 2>&1)
    else
      (cd "$here" && .venv/bin/python bench/network.py $args > "$out/new-$round.txt" 2>&1)
    fi
  done
done
grep -H "throughput, 12 clients\|RPC latency p50" "$out"/*.txt
