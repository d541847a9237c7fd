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
  'kafka-python>=2.2,<4' 'confluent-kafka>=2.6,<3'

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
