#!/usr/bin/env bash
# A disk in memory for benchmarks that measure the broker's CPU rather than the disk: an ext4
# filesystem in a file on tmpfs (/dev/shm), loop-mounted, so O_DIRECT, O_DSYNC and
# fallocate work as on a real disk but cost no device time. The loop device's kernel worker
# does the copying (as a disk's DMA would), outside the broker's CPU figures. Needs root
# (sudo is used otherwise).
#
#   dir=$(tools/ramdisk.sh up 8)      # 8 GiB (the default), prints the mount point
#   TMPDIR=$dir BROKER_ARGS="--config benches/configs/retention-steady.toml" tools/bench_load.sh ...
#   tools/ramdisk.sh down
set -euo pipefail
mount_point=/mnt/chronik-ramdisk
image=/dev/shm/chronik-ramdisk.img
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
case "${1:-}" in
  up)
    if ! mountpoint -q "$mount_point"; then
      $sudo_cmd mkdir -p "$mount_point"
      $sudo_cmd truncate -s "${2:-8}G" "$image"
      $sudo_cmd mkfs.ext4 -q -F "$image"
      $sudo_cmd mount -o loop "$image" "$mount_point"
      $sudo_cmd chmod 1777 "$mount_point"
    fi
    echo "$mount_point"
    ;;
  down)
    if mountpoint -q "$mount_point"; then $sudo_cmd umount "$mount_point"; fi
    $sudo_cmd rm -f "$image"
    ;;
  *) echo "usage: tools/ramdisk.sh up [GiB] | down" >&2; exit 2 ;;
esac
