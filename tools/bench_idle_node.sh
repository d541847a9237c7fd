#!/usr/bin/env bash
# Idle cost of many partitions on one node: a fresh one-shard broker, one topic of
# PARTITIONS partitions (one 100-byte message written to each), no traffic; prints the
# broker's CPU over WINDOW_S seconds once SETTLE_S seconds passed, its resident memory, and
# how long creating the topic and writing the first messages took.
# Environment: PARTITIONS=10000 SETTLE_S=15 WINDOW_S=10 SHARDS=1
set -euo pipefail
cd "$(dirname "$0")/.."
partitions=${PARTITIONS:-10000} settle=${SETTLE_S:-15} window=${WINDOW_S:-10}
shards=${SHARDS:-1}
source tools/bench_lib.sh
# The release binaries (CHRONIK_PREBUILT=1: use those already built).
[ -n "${CHRONIK_PREBUILT:-}" ] || cargo build --release --bin chronik --bin chronik-load >/dev/null 2>&1
port=19420
taskset -c "0-$((shards - 1))" "$bin" --data-dir "$work/data" --listen "127.0.0.1:$port" \
  --shards "$shards" >"$work/broker.log" 2>&1 &
broker=$!
pids+=("$broker")
wait_port "$port"
started=$(date +%s.%N)
target/release/chronik-load --bootstrap "127.0.0.1:$port" --topic idle \
  --partitions "$partitions" --batch 1 --size 100 --messages "$partitions" --quiet | grep '^{'
awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "topic created and written in %.1f s\n", b - a }'
sleep "$settle"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(ticks "$broker")
sleep "$window"
used_ms=$(( ($(ticks "$broker") - before) * 1000 / $(getconf CLK_TCK) ))
echo "idle CPU: ${used_ms} ms in ${window} s ($(( used_ms / window / 10 )).$(( used_ms / window % 10 ))% of a core) with $partitions partitions"
awk '/VmRSS/ { printf "resident memory: %.0f MiB\n", $2 / 1024 }' "/proc/$broker/status"
