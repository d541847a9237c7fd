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
bin=target/release/chronik
load=target/release/examples/produce_load
work=$(mktemp -d "${TMPDIR:-/tmp}/chronik-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; return 1
}
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
nodes=1=127.0.0.1:29092/127.0.0.1:30092,2=127.0.0.1:29093/127.0.0.1:30093,3=127.0.0.1:29094/127.0.0.1:30094
for i in 1 2 3; do
  "$bin" --node-id "$i" --data-dir "$work/node$i" --shards "$shards" \
    --first-core $(( (i - 1) * shards )) --cluster-nodes "$nodes" >"$work/node$i.log" 2>&1 &
  pids+=($!)
done
for port in 29092 29093 29094; do wait_port "$port"; done
load_runs 127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094 cluster
