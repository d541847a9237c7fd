#!/usr/bin/env bash
# One chronik-load scenario against a fresh broker pinned to its own cores, the generator
# pinned to the others: the generator's JSON lines, then the CPU seconds each side used
# (from /proc and time) and the broker's peak resident memory, so figures can be given per
# core.
#
#   tools/bench_load.sh [chronik-load flags...]     e.g. --acks all --size 1024 --seconds 10
#   CHRONIK_BIN=/tmp/chronik-old tools/bench_load.sh ...   # another chronik build
#   BROKER=tansu tools/bench_load.sh ...                   # the comparison broker (tools/tansu.sh)
#   SHARDS=4 tools/bench_load.sh ...                       # chronik on cores 0-3
#   WARMUP_SECONDS=3 tools/bench_load.sh ...               # leave a fresh broker's start out
#   BROKER_ARGS="--config ret.toml" tools/bench_load.sh ... # more chronik flags
#   BROKER_LOG=/tmp/b.log RUST_LOG=chronik_shards::runtime=trace tools/bench_load.sh ...
#                                                          # keep the broker's log (commits)
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/bench_lib.sh
broker_kind=${BROKER:-chronik}
shards=${SHARDS:-1}
# CHRONIK_BIN: a broker binary to measure instead of this tree's (to compare two builds).
if [ -z "${CHRONIK_BIN:-}" ] && [ -z "${CHRONIK_PREBUILT:-}" ]; then
  cargo build --release --bin chronik --bin chronik-load >/dev/null 2>&1
fi
bin=${CHRONIK_BIN:-$bin}
port=19400
broker_cores="0-$((shards - 1))"
case "$broker_kind" in
  chronik)
    taskset -c "$broker_cores" "$bin" --data-dir "$work/data" --listen "127.0.0.1:$port" \
      --shards "$shards" ${BROKER_ARGS:-} >"$work/broker.log" 2>&1 &
    ;;
  tansu)
    tansu=$(tools/tansu.sh)
    taskset -c "$broker_cores" "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
      >"$work/broker.log" 2>&1 &
    ;;
  *) echo "BROKER is chronik or tansu" >&2; exit 2 ;;
esac
broker=$!
pids+=("$broker")
wait_port "$port"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Time the hypervisor took from this machine's cores (all of them). On the project's VMs it
# comes in stalls of 5-20 ms of both cores while the disk is busy (tools/limits.sh), and
# every request due during one waits it out: a latency tail with stolen time is the host's.
stolen() { awk '/^cpu / {print $9}' /proc/stat; }
generator_cores="$shards-$(( $(nproc) - 1 ))"
[ "$shards" -lt "$(nproc)" ] || generator_cores=0-$(( $(nproc) - 1 ))
# WARMUP_SECONDS: the generator's --warmup; the broker's CPU and the stolen time are then
# counted from its end too (the generator's CPU, from /usr/bin/time, covers the whole run).
warmup=${WARMUP_SECONDS:-0}
/usr/bin/time -f "generator_cpu_s=%U+%S" taskset -c "$generator_cores" \
  target/release/chronik-load --bootstrap "127.0.0.1:$port" --quiet --warmup "$warmup" "$@" \
  2>"$work/time.txt" &
generator=$!
pids+=("$generator")
sleep "$warmup"
before=$(ticks "$broker")
stolen_before=$(stolen)
wait "$generator"
after=$(ticks "$broker")
stolen_after=$(stolen)
awk -v a="$after" -v b="$before" -v hz="$(getconf CLK_TCK)" \
  'BEGIN { printf "broker_cpu_s=%.2f\n", (a - b) / hz }'
awk -v a="$stolen_after" -v b="$stolen_before" -v hz="$(getconf CLK_TCK)" \
  'BEGIN { printf "machine_stolen_s=%.2f\n", (a - b) / hz }'
grep generator_cpu_s "$work/time.txt"
awk '/VmHWM/ { printf "broker_peak_rss_mib=%.0f\n", $2 / 1024 }' "/proc/$broker/status"
if [ -n "${BROKER_LOG:-}" ]; then cp "$work/broker.log" "$BROKER_LOG"; fi
