#!/usr/bin/env bash
# Idle cost of many replicated partitions: 3 nodes (S shards each, disjoint cores), one topic
# of P partitions with replication factor 3, no traffic; prints each node's CPU time over
# the measuring window (from /proc/PID/stat) once the groups had time to go quiet. Needs:
#   cargo build --release --bin chronik --example produce_load
# Settings (environment): SHARDS=1 PARTITIONS=4000 SETTLE_S=15 WINDOW_S=10
set -euo pipefail
cd "$(dirname "$0")/.."
shards=${SHARDS:-1} partitions=${PARTITIONS:-4000} settle=${SETTLE_S:-15} window=${WINDOW_S:-10}
bin=target/release/chronik
work=$(mktemp -d "${TMPDIR:-/tmp}/chronik-idle.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
nodes=1=127.0.0.1:29192/127.0.0.1:30192,2=127.0.0.1:29193/127.0.0.1:30193,3=127.0.0.1:29194/127.0.0.1:30194
for i in 1 2 3; do
  "$bin" --node-id "$i" --data-dir "$work/node$i" --shards "$shards" \
    --first-core $(( (i - 1) * shards )) --cluster-nodes "$nodes" >"$work/node$i.log" 2>&1 &
  pids+=($!)
done
for port in 29192 29193 29194; do
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
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
