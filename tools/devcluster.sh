#!/usr/bin/env bash
# Runs a local multi-node chronik cluster for development: one broker process per node,
# all on 127.0.0.1, each with its own config, data directory, log and pid file under DIR.
# Run with --help for the commands. Relative --dir paths are taken from the caller's cwd.
set -euo pipefail

unset CDPATH
ORIG_PWD=$(pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN="$ROOT/target/release/chronik"
PROBE="$ROOT/tools/kafka_metadata_probe.py"
PROG=tools/devcluster.sh
START_WAIT_S=60
STOP_WAIT_S=30

usage() {
  cat <<EOF
usage:
  $PROG start --nodes N [--dir DIR] [--base-port P] [--shards S]
      Writes DIR/node-I.toml for nodes I = 1..N (Kafka port P+I-1, peer port P+1000+I-1;
      defaults: DIR=./devcluster, P=9092, S=1), builds target/release/chronik if it is
      missing, starts every node in the background (log DIR/node-I.log, pid DIR/node-I.pid)
      and waits up to ${START_WAIT_S}s until each node's Metadata lists all N brokers.
      The last line printed is bootstrap=HOST:PORT,...
  $PROG start-node I [--dir DIR]
      Restarts node I with its existing DIR/node-I.toml and waits until it lists all brokers.
  $PROG stop [--dir DIR]
      SIGTERMs every node whose DIR/node-*.pid is alive, waits up to ${STOP_WAIT_S}s (then
      SIGKILL), and removes the pid files.
  $PROG status [--dir DIR]
      One line per node: running or not.
  $PROG -h | --help
EOF
}

die() { echo "devcluster: $*" >&2; exit 1; }
usage_error() { echo "devcluster: $*" >&2; echo "run '$PROG --help' for usage" >&2; exit 2; }

# abs_path PATH: PATH made absolute against the caller's original working directory.
abs_path() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$ORIG_PWD/$1" ;;
  esac
}

# is_uint VALUE: whether VALUE is a non-empty string of decimal digits.
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

# toml_str VALUE: VALUE as a TOML basic string (quotes and backslashes escaped).
toml_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# pid_alive PID: whether PID is a live chronik process (a reused pid or a zombie is not).
pid_alive() {
  local pid=$1
  is_uint "$pid" && [ "$pid" -gt 0 ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    # A zombie has an empty cmdline; another program that got the pid lacks "chronik".
    grep -qa chronik "/proc/$pid/cmdline" 2>/dev/null || return 1
  fi
  return 0
}

# read_pid FILE: the pid stored in FILE, or nothing.
read_pid() { if [ -f "$1" ]; then tr -dc '0-9' <"$1" || true; fi; }

# toml_value FILE KEY: the first `KEY = "value"` string value in FILE.
toml_value() { sed -n "s/^$2[[:space:]]*=[[:space:]]*\"\\(.*\\)\".*/\\1/p" "$1" | head -n 1; }

# toml_ids FILE: the broker ids of the [[cluster.nodes]] tables in FILE, sorted, one a line.
toml_ids() { sed -n 's/^id[[:space:]]*=[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$1" | sort -n; }

# node_indices DIR SUFFIX: the I of every DIR/node-I.SUFFIX, numerically sorted.
node_indices() {
  local f base
  for f in "$1"/node-*."$2"; do
    [ -e "$f" ] || continue
    base=${f##*/node-}
    base=${base%."$2"}
    if is_uint "$base"; then echo "$base"; fi
  done | sort -n
}

# port_in_use PORT: whether something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_binary() {
  if [ ! -x "$BIN" ]; then
    command -v cargo >/dev/null 2>&1 || die "$BIN is missing and cargo is not on PATH"
    echo "building $BIN (cargo build --release)"
    cargo build --release
    [ -x "$BIN" ] || die "cargo build --release did not produce $BIN"
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is needed for $PROBE"
}

# probe ADDR: the broker ids (sorted, space separated) that ADDR's Metadata lists; the
# probe's error goes to stderr and the status is non-zero when it fails.
probe() {
  local out
  if command -v timeout >/dev/null 2>&1; then
    out=$(timeout 10 python3 "$PROBE" "$1") || return 1
  else
    out=$(python3 "$PROBE" "$1") || return 1
  fi
  printf '%s\n' "$out" | sort -n | tr '\n' ' ' | sed 's/ *$//'
}

# launch DIR I: starts node I from DIR/node-I.toml in the background and writes its pid file.
LAUNCHED_PID=
launch() {
  local dir=$1 i=$2
  local log="$dir/node-$i.log"
  echo "=== devcluster: starting node $i at $(date '+%Y-%m-%d %H:%M:%S') ===" >>"$log"
  nohup "$BIN" --config "$dir/node-$i.toml" >>"$log" 2>&1 </dev/null &
  LAUNCHED_PID=$!
  echo "$LAUNCHED_PID" >"$dir/node-$i.pid"
}

# node_line DIR I PID: the line that describes a started node.
node_line() {
  local cfg="$1/node-$2.toml"
  echo "node $2: kafka $(toml_value "$cfg" listen) peer $(toml_value "$cfg" peer_listen) pid $3 log $1/node-$2.log"
}

print_log_tails() {
  local dir=$1 i
  shift
  for i in "$@"; do
    echo "----- tail of $dir/node-$i.log -----" >&2
    tail -n 30 "$dir/node-$i.log" >&2 2>/dev/null || echo "(no log)" >&2
  done
}

# wait_ready DIR EXPECTED NODE...: waits until every NODE is alive and its Metadata lists
# exactly the broker ids EXPECTED (sorted, space separated); on failure prints the logs and
# exits 1.
wait_ready() {
  local dir=$1 expected=$2
  shift 2
  local -a pending=("$@") still=()
  local deadline=$((SECONDS + START_WAIT_S)) i pid addr got err
  declare -A last_error=()
  echo "waiting up to ${START_WAIT_S}s for node(s) ${pending[*]} to list brokers: $expected"
  while :; do
    still=()
    for i in "${pending[@]}"; do
      pid=$(read_pid "$dir/node-$i.pid")
      if ! pid_alive "$pid"; then
        echo "devcluster: node $i (pid $pid) exited during startup" >&2
        print_log_tails "$dir" "$i"
        die "startup failed; stop the other nodes with: $PROG stop --dir $dir"
      fi
      addr=$(toml_value "$dir/node-$i.toml" listen)
      err=$(mktemp)
      if got=$(probe "$addr" 2>"$err"); then
        if [ "$got" = "$expected" ]; then
          echo "node $i: ready, lists brokers $got"
        else
          last_error[$i]="lists brokers '$got'"
          still+=("$i")
        fi
      else
        last_error[$i]=$(tail -n 1 "$err")
        still+=("$i")
      fi
      rm -f "$err"
    done
    if [ ${#still[@]} -eq 0 ]; then return 0; fi
    pending=("${still[@]}")
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "devcluster: timed out after ${START_WAIT_S}s waiting for node(s) ${pending[*]}" >&2
      for i in "${pending[@]}"; do
        echo "node $i: ${last_error[$i]:-no answer}" >&2
      done
      print_log_tails "$dir" "$@"
      die "startup failed; stop the nodes with: $PROG stop --dir $dir"
    fi
    sleep 1
  done
}

cmd_start() {
  local nodes="" dir=devcluster base=9092 shards=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) [ $# -ge 2 ] || usage_error "--nodes needs a value"; nodes=$2; shift 2 ;;
      --nodes=*) nodes=${1#*=}; shift ;;
      --dir) [ $# -ge 2 ] || usage_error "--dir needs a value"; dir=$2; shift 2 ;;
      --dir=*) dir=${1#*=}; shift ;;
      --base-port) [ $# -ge 2 ] || usage_error "--base-port needs a value"; base=$2; shift 2 ;;
      --base-port=*) base=${1#*=}; shift ;;
      --shards) [ $# -ge 2 ] || usage_error "--shards needs a value"; shards=$2; shift 2 ;;
      --shards=*) shards=${1#*=}; shift ;;
      *) usage_error "start: unexpected argument '$1'" ;;
    esac
  done
  [ -n "$nodes" ] || usage_error "start needs --nodes N"
  is_uint "$nodes" && [ "$nodes" -ge 1 ] || usage_error "--nodes must be a positive integer, got '$nodes'"
  is_uint "$base" && [ "$base" -ge 1 ] || usage_error "--base-port must be a positive integer, got '$base'"
  is_uint "$shards" && [ "$shards" -ge 1 ] || usage_error "--shards must be a positive integer, got '$shards'"
  nodes=$((10#$nodes)) base=$((10#$base)) shards=$((10#$shards))
  [ $((base + 1000 + nodes - 1)) -le 65535 ] ||
    usage_error "ports run past 65535 (peer ports go up to base port + 1000 + nodes - 1)"
  [ -n "$dir" ] || usage_error "--dir must not be empty"
  dir=$(abs_path "$dir")

  # Refuse before touching anything if any node of a cluster in DIR is still running.
  local i pid
  if [ -d "$dir" ]; then
    for i in $(node_indices "$dir" pid); do
      pid=$(read_pid "$dir/node-$i.pid")
      if pid_alive "$pid"; then
        die "node $i is already running (pid $pid, $dir/node-$i.pid); run: $PROG stop --dir $dir"
      fi
    done
  fi
  for ((i = 1; i <= nodes; i++)); do
    for port in $((base + i - 1)) $((base + 1000 + i - 1)); do
      if port_in_use "$port"; then die "port 127.0.0.1:$port (node $i) is already in use"; fi
    done
  done

  ensure_binary
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)

  local cluster="" kafka peer
  for ((i = 1; i <= nodes; i++)); do
    cluster+="[[cluster.nodes]]
id = $i
kafka = \"127.0.0.1:$((base + i - 1))\"
peer = \"127.0.0.1:$((base + 1000 + i - 1))\"
"
  done
  for ((i = 1; i <= nodes; i++)); do
    kafka="127.0.0.1:$((base + i - 1))"
    peer="127.0.0.1:$((base + 1000 + i - 1))"
    mkdir -p "$dir/node-$i"
    cat >"$dir/node-$i.toml" <<EOF
node_id = $i
data_dir = $(toml_str "$dir/node-$i")
listen = "$kafka"
peer_listen = "$peer"
shards = $shards
first_core = $(( (i - 1) * shards ))

[cluster]
name = "devcluster"

$cluster
EOF
  done

  local -a all=()
  for ((i = 1; i <= nodes; i++)); do
    rm -f "$dir/node-$i.pid"
    launch "$dir" "$i"
    node_line "$dir" "$i" "$LAUNCHED_PID"
    all+=("$i")
  done

  wait_ready "$dir" "$(seq 1 "$nodes" | tr '\n' ' ' | sed 's/ *$//')" "${all[@]}"

  local bootstrap=""
  for ((i = 1; i <= nodes; i++)); do
    bootstrap+="${bootstrap:+,}127.0.0.1:$((base + i - 1))"
  done
  echo "bootstrap=$bootstrap"
}

cmd_start_node() {
  local node="" dir=devcluster
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) [ $# -ge 2 ] || usage_error "--dir needs a value"; dir=$2; shift 2 ;;
      --dir=*) dir=${1#*=}; shift ;;
      -*) usage_error "start-node: unexpected argument '$1'" ;;
      *) [ -z "$node" ] || usage_error "start-node: unexpected argument '$1'"; node=$1; shift ;;
    esac
  done
  [ -n "$node" ] || usage_error "start-node needs the node number I"
  is_uint "$node" && [ "$node" -ge 1 ] || usage_error "node number must be a positive integer, got '$node'"
  node=$((10#$node))
  dir=$(abs_path "$dir")
  local cfg="$dir/node-$node.toml"
  [ -f "$cfg" ] || die "$cfg does not exist; create the cluster with: $PROG start --nodes N --dir $dir"
  dir=$(cd "$dir" && pwd)
  cfg="$dir/node-$node.toml"

  local pid
  pid=$(read_pid "$dir/node-$node.pid")
  if pid_alive "$pid"; then die "node $node is already running (pid $pid, $dir/node-$node.pid)"; fi

  local tables ids
  tables=$(grep -c '^\[\[cluster\.nodes\]\]' "$cfg" || true)
  [ "$tables" -ge 1 ] || die "$cfg has no [[cluster.nodes]] tables"
  ids=$(toml_ids "$cfg" | tr '\n' ' ' | sed 's/ *$//')
  [ "$(wc -w <<<"$ids")" -eq "$tables" ] ||
    die "$cfg has $tables [[cluster.nodes]] tables but ids '$ids'"
  local addr
  addr=$(toml_value "$cfg" listen)
  [ -n "$addr" ] || die "$cfg has no listen address"
  if port_in_use "${addr##*:}"; then die "port $addr (node $node) is already in use"; fi

  ensure_binary
  launch "$dir" "$node"
  wait_ready "$dir" "$ids" "$node"
  node_line "$dir" "$node" "$LAUNCHED_PID"
}

# parse_dir_only CMD ARGS...: the --dir value of a command that takes only --dir.
parse_dir_only() {
  local cmd=$1 dir=devcluster
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) [ $# -ge 2 ] || usage_error "--dir needs a value"; dir=$2; shift 2 ;;
      --dir=*) dir=${1#*=}; shift ;;
      *) usage_error "$cmd: unexpected argument '$1'" ;;
    esac
  done
  abs_path "$dir"
}

cmd_stop() {
  local dir
  dir=$(parse_dir_only stop "$@")
  if [ ! -d "$dir" ]; then
    echo "no cluster directory $dir; nothing to stop"
    return 0
  fi
  local i pid
  local -a indices=() signalled=()
  mapfile -t indices < <(node_indices "$dir" pid)
  if [ ${#indices[@]} -eq 0 ]; then
    echo "no pid files in $dir; nothing to stop"
    return 0
  fi
  declare -A pids=()
  for i in "${indices[@]}"; do
    pid=$(read_pid "$dir/node-$i.pid")
    if pid_alive "$pid"; then
      if kill -TERM "$pid" 2>/dev/null; then
        echo "node $i: sent SIGTERM to pid $pid"
        pids[$i]=$pid
        signalled+=("$i")
      fi
    else
      echo "node $i: not running${pid:+ (stale pid $pid)}"
    fi
  done

  local deadline=$((SECONDS + STOP_WAIT_S)) remaining
  while :; do
    remaining=0
    for i in "${signalled[@]}"; do
      if pid_alive "${pids[$i]}"; then remaining=$((remaining + 1)); fi
    done
    if [ "$remaining" -eq 0 ]; then break; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      for i in "${signalled[@]}"; do
        if pid_alive "${pids[$i]}"; then
          echo "devcluster: warning: node $i (pid ${pids[$i]}) did not exit within ${STOP_WAIT_S}s; sending SIGKILL" >&2
          kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
      done
      sleep 1
      break
    fi
    sleep 0.2
  done
  for i in "${signalled[@]}"; do
    if pid_alive "${pids[$i]}"; then
      echo "devcluster: warning: node $i (pid ${pids[$i]}) is still alive" >&2
    else
      echo "node $i: stopped"
    fi
  done
  for i in "${indices[@]}"; do
    rm -f "$dir/node-$i.pid"
  done
}

cmd_status() {
  local dir
  dir=$(parse_dir_only status "$@")
  [ -d "$dir" ] || die "no cluster directory $dir"
  local i pid addr
  local -a indices=()
  mapfile -t indices < <({ node_indices "$dir" toml; node_indices "$dir" pid; } | sort -n -u)
  [ ${#indices[@]} -gt 0 ] || die "no nodes in $dir"
  for i in "${indices[@]}"; do
    pid=$(read_pid "$dir/node-$i.pid")
    addr=""
    if [ -f "$dir/node-$i.toml" ]; then addr=$(toml_value "$dir/node-$i.toml" listen); fi
    if pid_alive "$pid"; then
      echo "node $i: running pid $pid kafka ${addr:-?} log $dir/node-$i.log"
    else
      echo "node $i: not running${pid:+ (stale pid file, pid $pid)} kafka ${addr:-?}"
    fi
  done
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
for arg in "$@"; do
  case "$arg" in -h | --help) usage; exit 0 ;; esac
done
command=$1
shift
case "$command" in
  start) cmd_start "$@" ;;
  start-node) cmd_start_node "$@" ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  *) usage_error "unknown command '$command'" ;;
esac
