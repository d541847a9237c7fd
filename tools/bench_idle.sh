#!/usr/bin/env bash
# Idle cost of many replicated partitions: 3 nodes (S shards each, disjoint cores), one topic
# of P partitions with replication factor 3, no traffic; prints each node's CPU time over
# the measuring window (from /proc/PID/stat) once the groups had time to go quiet. Needs:
#   cargo build --release --bin chronik --example produce_load
# Settings (environment): SHARDS=1 PARTITIONS=4000 SETTLE_S=15 WINDOW_S=10
set -euo pipefail
cd "$(dirname "$0")/.."
shards=${SHARDS:-1} partitions=${PARTITIONS:-4000} settle=${SETTLE_S:-15} window=${WINDOW_S:-10}
# shellcheck source=tools/bench_lib.sh
source tools/bench_lib.sh
start_cluster "$shards" 29192
target/release/examples/produce_load --bootstrap 127.0.0.1:29192 --topic idle \
  --partitions "$partitions" --messages 1 --size 100 >/dev/null
sleep "$settle"
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=(); for pid in "${pids[@]}"; do before+=("$(cpu "$pid")"); done
sleep "$window"
for i in 0 1 2; do
  used=$(( ($(cpu "${pids[$i]}") - ${before[$i]}) * 1000 / ticks ))
  echo "node $((i + 1)): ${used} ms CPU in ${window} s ($(( used / window / 10 )).$(( used / window % 10 ))% of a core), $partitions partitions x3 idle"
done
