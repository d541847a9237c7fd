#!/usr/bin/env bash
# One chronik-load scenario against a fresh one-shard broker pinned to core 0, the generator
# pinned to the other cores: the generator's JSON line, plus the CPU seconds each side used
# (from /proc and time), so figures can be given per core.
#
#   tools/bench_load.sh [chronik-load flags...]     e.g. --acks all --size 1024 --seconds 10
#   CHRONIK_BIN=/tmp/chronik-old tools/bench_load.sh ...   # another broker build
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/bench_lib.sh
# CHRONIK_BIN: a broker binary to measure instead of this tree's (to compare two builds).
if [ -z "${CHRONIK_BIN:-}" ]; then
  cargo build --release --bin chronik --bin chronik-load >/dev/null 2>&1
fi
bin=${CHRONIK_BIN:-$bin}
port=19400
taskset -c 0 "$bin" --data-dir "$work/data" --listen "127.0.0.1:$port" --shards 1 \
  >"$work/broker.log" 2>&1 &
broker=$!
pids+=("$broker")
wait_port "$port"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(ticks "$broker")
others=$(seq -s, 1 $(( $(nproc) - 1 )))
/usr/bin/time -f "generator_cpu_s=%U+%S" taskset -c "${others:-0}" target/release/chronik-load \
  --bootstrap "127.0.0.1:$port" --quiet "$@" 2>"$work/time.txt"
after=$(ticks "$broker")
awk -v a="$after" -v b="$before" -v hz="$(getconf CLK_TCK)" \
  'BEGIN { printf "broker_cpu_s=%.2f\n", (a - b) / hz }' 
grep generator_cpu_s "$work/time.txt"
