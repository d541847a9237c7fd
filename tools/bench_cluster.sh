#!/usr/bin/env bash
# Replicated against single-node produce throughput on one machine, the same load each time:
# a single node with S shards, then 3 nodes with S shards each, pinned to disjoint cores
# (replication factor 3). Needs the release binaries:
#   cargo build --release --bin chronik --example produce_load
# Settings (environment): SHARDS=4 MESSAGES=1000000 SIZE=1024 PARTITIONS=12 RUNS=2 ACKS=all
set -euo pipefail
cd "$(dirname "$0")/.."
shards=${SHARDS:-4} messages=${MESSAGES:-1000000} size=${SIZE:-1024}
partitions=${PARTITIONS:-12} runs=${RUNS:-2} acks=${ACKS:-all}
load=target/release/examples/produce_load
# shellcheck source=tools/bench_lib.sh
source tools/bench_lib.sh
load_runs() {
  for run in $(seq "$runs"); do
    "$load" --bootstrap "$1" --topic "$2$run" --partitions "$partitions" \
      --messages "$messages" --size "$size" --acks "$acks"
  done
}
echo "== $(nproc) cores; single node, $shards shards"
"$bin" --data-dir "$work/single" --listen 127.0.0.1:19092 --shards "$shards" \
  >"$work/single.log" 2>&1 &
pids=($!)
wait_port 19092
load_runs 127.0.0.1:19092 single
kill -TERM "${pids[0]}"; wait "${pids[0]}" || true; pids=()
echo "== 3 nodes x $shards shards, replication factor 3"
start_cluster "$shards" 29092
load_runs 127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094 cluster
