#!/usr/bin/env bash
# The client matrix: installs every client from its package registry (as tools/test.sh does:
# the Java client, confluent-kafka, kafka-python, aiokafka, kafkajs, kcat; librdkafka comes
# with the rdkafka crate) and runs their tests against brokers and 3-node clusters the tests
# start, then prints one line per client. These tests are part of tools/test.sh as well.
set -euo pipefail
cd "$(dirname "$0")/.."
CHRONIK_SETUP_ONLY=1 tools/test.sh
declare -A tests=(
  [java]=java_client [python]=python_clients [kafkajs]=js_clients [kcat]=kcat
  [librdkafka-groups]=consumer_groups [librdkafka-transactions]=transactions
)
status=0
for client in java python kafkajs kcat librdkafka-groups librdkafka-transactions; do
  if cargo test --release --quiet --test "${tests[$client]}" >"target/compat-$client.log" 2>&1; then
    printf '%-26s pass\n' "$client"
  else
    printf '%-26s FAIL (target/compat-%s.log)\n' "$client" "$client"
    status=1
  fi
done
exit $status
