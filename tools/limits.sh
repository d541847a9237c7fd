#!/usr/bin/env bash
# This machine's limits, measured the same day as a benchmark, so that BENCHMARKS.md can
# state every broker figure beside them: disk sequential O_DIRECT write and read, 4 KiB
# write+fdatasync (latency and IOPS), loopback TCP, and memory copy bandwidth. Prints a
# Markdown table. Installs fio and iperf3 with apt when they are missing.
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
rm -f "$scratch/f1" "$scratch/f2"

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
echo "| loopback TCP, one stream | iperf3 -t 5 | $loopback Gbit/s |"
echo "| memory copy (kernel zero page to user) | dd bs=1M | $memcpy |"
