#!/usr/bin/env bash
# The loaded-machine check: `make test` RUNS times in a row (default 3) on a fresh clone of the
# current commit while a CPU hog keeps every core busy, as on a shared CI machine.
#
#   hack/test-stress.sh            # or: make test-stress [RUNS=3] [HOGS=<cores>]
#
# It stops at the first failing run and leaves that run's log in the clone's bin/test.log.
set -euo pipefail
runs=${RUNS:-3}
hogs=${HOGS:-$(nproc)}
src=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
dir=$(mktemp -d -t kafkachannel-stress.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
git clone -q "$src" "$dir/repo"
echo "stress: fresh clone of $(git -C "$dir/repo" rev-parse --short HEAD) in $dir/repo; $hogs CPU hogs; $runs runs"
for _ in $(seq "$hogs"); do yes >/dev/null & pids+=($!); done
for i in $(seq "$runs"); do
  start=$(date +%s)
  if make -C "$dir/repo" test >"$dir/run-$i.log" 2>&1; then
    echo "stress: run $i passed in $(( $(date +%s) - start )) s"
  else
    echo "stress: run $i FAILED after $(( $(date +%s) - start )) s; last lines of $dir/run-$i.log:"
    grep -E '^(--- FAIL|FAIL|panic)' "$dir/run-$i.log" | head -20 || true
    tail -20 "$dir/run-$i.log"
    exit 1
  fi
done
echo "stress: all $runs runs passed under load"
rm -rf "$dir"
