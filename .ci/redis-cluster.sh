#!/usr/bin/env bash
# A 6-node Redis Cluster on loopback (3 primaries, 3 replicas), for CI and developers:
#
#   .ci/redis-cluster.sh start [PORT_BASE]   # ports PORT_BASE .. PORT_BASE+5 (default 7100)
#   .ci/redis-cluster.sh stop  [PORT_BASE]
#
# start installs redis-server when missing, starts the nodes (no persistence, data in a
# directory of their own under ${TMPDIR:-/tmp}), creates the cluster, waits until every
# node says cluster_state:ok and prints the URL to export:
#   OBITOX_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:PORT_BASE
# stop shuts down exactly those nodes (by port) and removes their directory.
set -euo pipefail

action="${1:-}"
base="${2:-7100}"
dir="${TMPDIR:-/tmp}/obitox-redis-cluster-$base"
ports=()
for i in 0 1 2 3 4 5; do ports+=($((base + i))); done

node_ok() { redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }
answers() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]; }

case "$action" in
  start)
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
    fi
    mkdir -p "$dir"
    for port in "${ports[@]}"; do
      if answers "$port"; then continue; fi
      mkdir -p "$dir/$port"
      redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
        --cluster-node-timeout 2000 --save "" --appendonly no \
        --dir "$dir/$port" --logfile "$dir/$port/redis.log" --pidfile "$dir/$port/redis.pid"
    done
    for port in "${ports[@]}"; do
      for _ in $(seq 1 50); do answers "$port" && break; sleep 0.1; done
      answers "$port" || { echo "redis-server on port $port did not start" >&2; exit 1; }
    done
    # Create the cluster only on fresh nodes: a node restarted after a crash (or a
    # failover test) rejoins the cluster it knows from its nodes.conf by itself.
    fresh() { redis-cli -h 127.0.0.1 -p "$base" cluster info | grep -q '^cluster_known_nodes:1'; }
    if fresh; then
      hosts=()
      for port in "${ports[@]}"; do hosts+=("127.0.0.1:$port"); done
      redis-cli --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log"
    fi
    for port in "${ports[@]}"; do
      for _ in $(seq 1 300); do node_ok "$port" && break; sleep 0.1; done
      node_ok "$port" || { echo "node $port never reached cluster_state:ok" >&2; exit 1; }
    done
    # Replicas attach a moment after the slots are assigned: a failover test needs them.
    replicas() { redis-cli -h 127.0.0.1 -p "$base" cluster nodes | grep -cE ' (myself,)?slave ' || true; }
    for _ in $(seq 1 300); do [ "$(replicas)" -ge 3 ] && break; sleep 0.1; done
    [ "$(replicas)" -ge 3 ] || { echo "the replicas never attached" >&2; exit 1; }
    echo "OBITOX_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:$base"
    ;;
  stop)
    for port in "${ports[@]}"; do
      redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop [PORT_BASE]" >&2
    exit 2
    ;;
esac
