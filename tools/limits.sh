#!/usr/bin/env bash
# This machine's limits, measured the same day as a benchmark, so that BENCHMARKS.md can
# state every broker figure beside them: disk sequential O_DIRECT write and read, 4 KiB
# write+fdatasync (latency and IOPS), O_DSYNC writes the size of the WAL's group commits,
# whether the machine stalls while its disk is busy (a virtual machine whose host throttles
# it), loopback TCP, and memory copy bandwidth. Prints a Markdown table. Installs fio and
# iperf3 with apt when they are missing.
#
#   tools/limits.sh [DIR]     # DIR: a directory on the disk the broker's data uses (./data)
set -euo pipefail
dir=${1:-./data}
mkdir -p "$dir"
scratch=$(mktemp -d "$dir/limits.XXXXXX")
iperf_pid=""
cleanup() {
  [ -n "$iperf_pid" ] && kill "$iperf_pid" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

missing=()
command -v fio >/dev/null 2>&1 || missing+=(fio)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# fio JSON -> one number, with python3 (present wherever the test command ran).
fio_value() { python3 -c "import json,sys; d=json.load(sys.stdin)['jobs'][0]; print($1)"; }

seq_write=$(fio --name=seqwrite --filename="$scratch/f1" --size=1G --bs=1M --rw=write \
  --direct=1 --ioengine=io_uring --iodepth=8 --runtime=10 --time_based --output-format=json |
  fio_value "round(d['write']['bw_bytes']/2**20)")
seq_read=$(fio --name=seqread --filename="$scratch/f1" --size=1G --bs=1M --rw=read \
  --direct=1 --ioengine=io_uring --iodepth=8 --runtime=5 --time_based --output-format=json |
  fio_value "round(d['read']['bw_bytes']/2**20)")
sync4k=$(fio --name=sync4k --filename="$scratch/f2" --size=256M --bs=4k --rw=write \
  --direct=1 --ioengine=sync --fdatasync=1 --runtime=10 --time_based --output-format=json |
  fio_value "'%d IOPS; fdatasync p99 %d µs' % (d['write']['iops'], d['sync']['lat_ns']['percentile']['99.000000']/1000)")
# The WAL commits with one O_DIRECT|O_DSYNC write (no fdatasync after it): that write's
# latency, at the size of a small and of a large group commit, is the floor of acks=all.
dsync() {
  fio --name="dsync$1" --filename="$scratch/f3" --size=1G --bs="$1" --rw=write --direct=1 \
    --sync=dsync --ioengine=psync --runtime=5 --time_based --output-format=json |
    fio_value "'%d IOPS; p50 %d µs, p99 %d µs, p99.9 %d µs' % (d['write']['iops'], *(d['write']['clat_ns']['percentile'][p]/1000 for p in ('50.000000', '99.000000', '99.900000')))"
}
dsync4k=$(dsync 4k)
dsync256k=$(dsync 256k)
# The most the WAL can write durably: 1 MiB O_DSYNC writes back to back, one at a time (one
# group commit in flight) and two at a time (`commit_overlap_bytes`: at most two in flight).
durable() {
  fio --name="durable$1" --filename="$scratch/f3" --size=1G --bs=1M --rw=write --direct=1 \
    --sync=dsync --ioengine=io_uring --iodepth="$1" --runtime=5 --time_based \
    --output-format=json | fio_value "round(d['write']['bw_bytes']/2**20)"
}
durable1=$(durable 1)
durable2=$(durable 2)

# Stalls of the whole machine: a thread on another core asks to sleep 1 ms, again and again,
# and counts the sleeps that took over 4 ms, first with the disk idle, then while fio writes
# 4 KiB O_DSYNC blocks as fast as it can. On the 2-vCPU VMs of BENCHMARKS.md both cores stop
# for 5-20 ms, up to ten times a second, once the disk takes more than ~2,500 such writes a
# second (the host's accounting, not the guest's): every latency tail there includes them.
stall_probe() {
  taskset -c "$1" python3 - "$2" <<'PROBE'
import sys, time
end, stalls, longest = time.monotonic() + float(sys.argv[1]), 0, 0.0
while time.monotonic() < end:
    asked = time.monotonic()
    time.sleep(0.001)
    took = time.monotonic() - asked
    if took > 0.004:
        stalls, longest = stalls + 1, max(longest, took)
print('%.1f stalls/s over 4 ms, longest %.1f ms' % (stalls / float(sys.argv[1]), longest * 1000))
PROBE
}
last_core=$(( $(nproc) - 1 ))
stalls_idle=$(stall_probe "$last_core" 4)
stall_probe "$last_core" 5 >"$scratch/stalls" &
probe_pid=$!
taskset -c 0 fio --name=busy --filename="$scratch/f4" --size=256M --bs=4k --rw=write \
  --direct=1 --sync=dsync --ioengine=psync --runtime=5 --time_based >/dev/null
wait "$probe_pid"
stalls_busy=$(cat "$scratch/stalls")
rm -f "$scratch/f1" "$scratch/f2" "$scratch/f3" "$scratch/f4"

iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
iperf_pid=$!
sleep 0.5
loopback=$(iperf3 -c 127.0.0.1 -p 5299 -t 5 -J |
  python3 -c "import json,sys; print('%.1f' % (json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9))")
# dd copies from the kernel's zero page into a user buffer: a lower bound on memcpy.
memcpy=$(dd if=/dev/zero of=/dev/null bs=1M count=20000 2>&1 | tail -1 | sed 's/.*, //')

echo "Limits of $(hostname) on $(date -u +%Y-%m-%d): $(nproc) cores, \
$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), \
data on $(df --output=source "$dir" | tail -1)"
echo
echo "| limit | command (see tools/limits.sh) | value |"
echo "|---|---|---|"
echo "| disk, sequential O_DIRECT write, 1 MiB blocks | fio seqwrite, io_uring, iodepth 8 | $seq_write MiB/s |"
echo "| disk, sequential O_DIRECT read, 1 MiB blocks | fio seqread, io_uring, iodepth 8 | $seq_read MiB/s |"
echo "| disk, 4 KiB write + fdatasync, one at a time | fio sync4k | $sync4k |"
echo "| disk, 4 KiB O_DIRECT\\|O_DSYNC write (a small group commit), one at a time | fio dsync4k | $dsync4k |"
echo "| disk, 256 KiB O_DIRECT\\|O_DSYNC write (a large group commit), one at a time | fio dsync256k | $dsync256k |"
echo "| disk, durable sequential write: 1 MiB O_DIRECT\\|O_DSYNC writes, 1 / 2 in flight | fio durable1, durable2 | $durable1 / $durable2 MiB/s |"
echo "| machine stalls (1 ms sleeps taking over 4 ms), disk idle | stall probe | $stalls_idle |"
echo "| machine stalls while fio writes 4 KiB O_DSYNC blocks on core 0 | stall probe | $stalls_busy |"
echo "| loopback TCP, one stream | iperf3 -t 5 | $loopback Gbit/s |"
echo "| memory copy (kernel zero page to user) | dd bs=1M | $memcpy |"
