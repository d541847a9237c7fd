# Shared by the benchmark scripts (source it after `cd` to the repository root): a scratch
# directory, the nodes started into it stopped by PID on exit, and starting a 3-node
# cluster with disjoint cores.
bin=target/release/chronik
work=$(mktemp -d "${TMPDIR:-/tmp}/chronik-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_port PORT: until something accepts connections on 127.0.0.1:PORT (20 s at most).
wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; return 1
}

# start_cluster SHARDS BASE_PORT: nodes 1-3 with Kafka ports BASE..BASE+2 and peer ports
# BASE+1000.., each pinned to its own cores; waits until every one listens.
start_cluster() {
  local shards=$1 base=$2 nodes="" i
  for i in 1 2 3; do
    nodes+="${nodes:+,}$i=127.0.0.1:$((base + i - 1))/127.0.0.1:$((base + 1000 + i - 1))"
  done
  for i in 1 2 3; do
    "$bin" --node-id "$i" --data-dir "$work/node$i" --shards "$shards" \
      --first-core $(( (i - 1) * shards )) --cluster-nodes "$nodes" >"$work/node$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do wait_port $((base + i - 1)); done
}
