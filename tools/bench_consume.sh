#!/usr/bin/env bash
# Consume throughput: a fresh one-shard broker pinned to core 0 is filled with MESSAGES
# messages of 1 KiB over 16 partitions, then chronik-load reads them all back from offset
# 0 (pinned to the other cores). Prints the consume JSON line and the broker's CPU seconds
# during the read.
#
#   tools/bench_consume.sh cache    # caches big enough to hold it all: served from memory
#   tools/bench_consume.sh disk     # the default caches: served from the WAL (O_DIRECT)
# Environment: MESSAGES (1000000 for cache, 2000000 for disk), CHRONIK_BIN (a broker binary).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/bench_lib.sh
# The release binaries (CHRONIK_PREBUILT=1: use those already built).
[ -n "${CHRONIK_PREBUILT:-}" ] || cargo build --release --bin chronik --bin chronik-load >/dev/null 2>&1
bin=${CHRONIK_BIN:-$bin}   # another broker build, to compare
where=${1:-disk}
port=19410
config="$work/chronik.toml"
case "$where" in
  cache)
    messages=${MESSAGES:-1000000}
    # (kept while nobody reads: entry_cache_unread_ms = 0)
    printf 'entry_cache_bytes_max = 134217728\nentry_cache_shard_bytes_max = 4294967296\nentry_cache_unread_ms = 0\n' >"$config"
    ;;
  disk)
    messages=${MESSAGES:-2000000}
    : >"$config"
    ;;
  *) echo "cache or disk" >&2; exit 2 ;;
esac
taskset -c 0 "$bin" --data-dir "$work/data" --listen "127.0.0.1:$port" --shards 1 \
  --config "$config" >"$work/broker.log" 2>&1 &
broker=$!
pids+=("$broker")
wait_port "$port"
others=1-$(( $(nproc) - 1 ))
load() { taskset -c "$others" target/release/chronik-load --bootstrap "127.0.0.1:$port" \
  --topic c --partitions 16 --size 1024 --batch 16 --quiet "$@"; }
load --acks all --messages "$messages" | grep '^{'
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(ticks "$broker")
load --mode consume --seconds 120 | grep '^{'
after=$(ticks "$broker")
awk -v a="$after" -v b="$before" -v hz="$(getconf CLK_TCK)" \
  'BEGIN { printf "broker_cpu_s=%.2f\n", (a - b) / hz }'
awk '/VmHWM/ { printf "broker_peak_rss_mib=%.0f\n", $2 / 1024 }' "/proc/$broker/status"
