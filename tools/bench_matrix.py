#!/usr/bin/env python3
"""Runs tools/bench_load.sh over a list of scenarios and prints one Markdown table row per
run: the generator's figures beside the broker's CPU and memory, per broker core.

    tools/bench_matrix.py produce          # acks 1/all x 1 KiB/256 B x 1/16/256 partitions
    tools/bench_matrix.py compare          # the same load on chronik and on Tansu (memory)
    tools/bench_matrix.py latency RATE     # open loop at 25/50/75% of RATE msgs/s, + plot
    tools/bench_matrix.py compare-latency RATE   # open loop at RATE on chronik and Tansu, + plot
    SECONDS_EACH=10 DISK_WRITE_MIBS=1731 tools/bench_matrix.py ...
    DISK_PROBE_DIR=./data tools/bench_matrix.py produce   # + the disk's durable write around each run

Builds the release binaries first (CHRONIK_PREBUILT=1 skips that).
Environment: SECONDS_EACH (10), WARMUP_SECONDS (0: seconds of every run left out of its
figures, chronik-load --warmup), DISK_WRITE_MIBS (the limits script's sequential write, for
the "of disk" column), BROKER and SHARDS as for bench_load.sh, OUT (where percentile files
and plots go: target/bench), DISK_PROBE_DIR (a directory on the broker's disk: fio measures
what the disk takes durably, 1 MiB O_DSYNC writes two at a time as the WAL's commits, for 3 s
before and after every run, and the row gives the run's MiB/s beside their mean: on the
project's VMs that figure moves by half within minutes, so a limit measured once an hour
says little about one run).
"""
import json
import os
import subprocess
import sys

PROBE_DIR = os.environ.get("DISK_PROBE_DIR")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS_EACH = os.environ.get("SECONDS_EACH", "10")
WARMUP = os.environ.get("WARMUP_SECONDS", "0")
DISK = float(os.environ.get("DISK_WRITE_MIBS", "0"))
OUT = os.environ.get("OUT", os.path.join(ROOT, "target", "bench"))


def durable_write_mibs():
    """What the disk takes durably right now (None without DISK_PROBE_DIR)."""
    if not PROBE_DIR:
        return None
    os.makedirs(PROBE_DIR, exist_ok=True)
    target = os.path.join(PROBE_DIR, f"probe-{os.getpid()}")
    try:
        out = subprocess.run(
            ["fio", "--name=probe", f"--filename={target}", "--size=512M", "--bs=1M", "--rw=write",
             "--direct=1", "--sync=dsync", "--ioengine=io_uring", "--iodepth=2", "--runtime=3",
             "--time_based", "--output-format=json"],
            capture_output=True, text=True, check=True).stdout
    finally:
        if os.path.exists(target):
            os.remove(target)
    return json.loads(out)["jobs"][0]["write"]["bw_bytes"] / 2**20


def run(flags, env=None, histograms=None):
    """One bench_load.sh run: (produce JSON, the side figures), with the disk probed around it."""
    before = durable_write_mibs()
    args = [os.path.join(ROOT, "tools", "bench_load.sh"), "--seconds", SECONDS_EACH] + flags
    if histograms:
        args += ["--histogram-dir", histograms]
    merged = dict(os.environ, CHRONIK_PREBUILT="1", WARMUP_SECONDS=WARMUP, **(env or {}))
    out = subprocess.run(args, env=merged, capture_output=True, text=True, check=True).stdout
    sides = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    figures = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith("{"))
    after = durable_write_mibs()
    if before is not None:
        figures["durable_mibs"] = (before + after) / 2
        figures["durable_range"] = f"{before:.0f}–{after:.0f}"
    return sides, figures


def cores(figure, warmup_included=False):
    """CPU seconds (as "a+b" or "a") over the run's measured seconds (with the warm-up: the
    generator's figure covers it)."""
    seconds = float(SECONDS_EACH) + (float(WARMUP) if warmup_included else 0.0)
    return sum(float(x) for x in figure.split("+")) / seconds


def row(name, side, figures):
    mib = side["mib_per_s"]
    broker = cores(figures["broker_cpu_s"])
    generator = cores(figures["generator_cpu_s"], warmup_included=True)
    of_disk = f"{100 * mib / DISK:.0f}%" if DISK else ""
    latency = [f"{side[k]:.2f} ms" if side[k] >= 0 else "" for k in ("p50_ms", "p99_ms", "p999_ms")]
    durable = figures.get("durable_mibs")
    of_durable = f"{100 * mib / durable:.0f}% of {figures['durable_range']}" if durable else ""
    print(f"| {name} | {side['msgs_per_s'] / 1000:.0f} k | {mib:.0f} | {of_disk} | {of_durable} | "
          + " | ".join(latency)
          + f" | {broker:.2f} | {mib / max(broker, 0.01):.0f} | {generator:.2f} | "
          f"{figures.get('broker_peak_rss_mib', '')} | {figures.get('machine_stolen_s', '')} |",
          flush=True)


HEADER = ("| scenario | msgs/s | MiB/s | of disk write | of durable write (MiB/s around the run) | p50 | p99 | p99.9 | broker CPU (cores) "
          "| MiB/s per broker core | generator CPU (cores) | broker peak RSS (MiB) "
          "| stolen by the host (CPU s) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def shape(size, partitions):
    # Batches of ~16 KiB either way; 256 partitions get smaller requests per connection.
    batch = "16" if size == 1024 else "64"
    return ["--size", str(size), "--batch", batch, "--partitions", str(partitions),
            "--connections", "4", "--topic", f"t{size}-{partitions}-{os.getpid()}"]


def produce_matrix():
    print(HEADER)
    for partitions in (1, 16, 256):
        for size in (1024, 256):
            for acks in ("1", "all"):
                sides, figures = run(shape(size, partitions) + ["--acks", acks])
                label = "1 KiB" if size == 1024 else "256 B"
                row(f"acks={acks}, {label}, {partitions} partitions", sides[0], figures)


def compare():
    print(HEADER)
    for broker in ("chronik", "tansu"):
        for size in (1024, 256):
            for acks in ("1", "all"):
                histograms = os.path.join(OUT, f"compare-{broker}-{size}-{acks}")
                sides, figures = run(shape(size, 16) + ["--acks", acks], {"BROKER": broker}, histograms)
                label = "1 KiB" if size == 1024 else "256 B"
                row(f"{broker}: acks={acks}, {label}", sides[0], figures)


def latency(maximum):
    """Producers alone at 25/50/75% of the closed-loop maximum, then end to end at 25% (the
    consumers' fetches take broker CPU too, so end to end saturates sooner)."""
    print(HEADER)
    curves = []
    for share in (25, 50, 75):
        rate = int(maximum) * share // 100
        histograms = os.path.join(OUT, f"latency-{share}")
        sides, figures = run(shape(1024, 16) + ["--acks", "all", "--rate", str(rate)], None, histograms)
        row(f"{rate // 1000} k msgs/s ({share}%): produce", sides[0], figures)
        curves.append(f"{share}% of max, produce={histograms}/produce.hgrm")
    rate = int(maximum) // 4
    histograms = os.path.join(OUT, "latency-end-to-end")
    sides, figures = run(shape(1024, 16) + ["--acks", "all", "--rate", str(rate),
                                              "--mode", "end-to-end"], None, histograms)
    row(f"{rate // 1000} k msgs/s (25%): end to end", sides[1], figures)
    curves.append(f"25% of max, end to end={histograms}/end-to-end.hgrm")
    plot = os.path.join(OUT, "latency.svg")
    subprocess.run([os.path.join(ROOT, "target", "release", "chronik-plot"), "--out", plot,
                    "--title", "acks=all, 1 KiB, 16 partitions, open loop"] + curves, check=True)
    print(f"plot: {plot}")


def compare_latency(rate):
    print(HEADER)
    curves = []
    for broker in ("chronik", "tansu"):
        histograms = os.path.join(OUT, f"compare-latency-{broker}")
        sides, figures = run(shape(1024, 16) + ["--acks", "all", "--rate", rate,
                                                  "--mode", "end-to-end"], {"BROKER": broker}, histograms)
        row(f"{broker}: {int(rate) // 1000} k msgs/s, produce", sides[0], figures)
        row(f"{broker}: {int(rate) // 1000} k msgs/s, end to end", sides[1], figures)
        curves.append(f"{broker} produce={histograms}/produce.hgrm")
        curves.append(f"{broker} end to end={histograms}/end-to-end.hgrm")
    plot = os.path.join(OUT, "compare-latency.svg")
    subprocess.run([os.path.join(ROOT, "target", "release", "chronik-plot"), "--out", plot,
                    "--title", f"acks=all, 1 KiB, 16 partitions, open loop at {int(rate) // 1000} k msgs/s",
                    "--log-y"]
                   + curves, check=True)
    print(f"plot: {plot}")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    if not os.environ.get("CHRONIK_PREBUILT"):
        subprocess.run(["cargo", "build", "--release", "--bin", "chronik", "--bin", "chronik-load",
                        "--bin", "chronik-plot"], cwd=ROOT, check=True)
    what = sys.argv[1] if len(sys.argv) > 1 else "produce"
    if what == "produce":
        produce_matrix()
    elif what == "compare":
        compare()
    elif what == "latency":
        latency(sys.argv[2])
    elif what == "compare-latency":
        compare_latency(sys.argv[2])
    else:
        sys.exit(__doc__)
