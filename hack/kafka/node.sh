#!/usr/bin/env bash
# Apache Kafka on the real cluster's node, outside the cluster, as a managed Kafka would be
# (make cluster-kafka, cluster-kafka-down). One KRaft node (broker and controller) runs as a
# JVM on the host; pods reach it at the node's address, which is also what the broker
# advertises: a client connects to the bootstrap address, then to the advertised one, so
# 127.0.0.1 would send every pod to itself. In the cluster, the Service kafka.kafka (no
# selector, one EndpointSlice to the node's address) gives it the name the default Kafka
# Secret (config/dataplane/kafka-secret.yaml) and the kind sample use.
#
# Usage: hack/kafka/node.sh up|down DIR
# Env: KAFKA_VERSION, CACHE_DIR (the dist from make kafka-dist), KAFKA_NODE_ADDRESS (default:
# the node's InternalIP), KAFKA_NODE_PORT (19092; the controller listens on it + 1, loopback
# only), KUBECTL (kubectl with the cluster's KUBECONFIG), KAFKA_HEAP (512m).
set -euo pipefail
cmd=$1 dir=$(realpath -m "$2")
version=${KAFKA_VERSION:-4.4.0}
home=${CACHE_DIR:-$HOME/.cache/kafkachannel}/kafka-$version
port=${KAFKA_NODE_PORT:-19092}
ctrl=$((port + 1))
kubectl=${KUBECTL:-kubectl}
say() { printf '==> %s\n' "$*"; }
alive() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

service() { # the in-cluster name of the Kafka outside it
  cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: kafka}
---
apiVersion: v1
kind: Service
metadata: {name: kafka, namespace: kafka}
spec:
  ports:
  - {name: client, port: 9092, targetPort: $port, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kafka-node
  namespace: kafka
  labels: {kubernetes.io/service-name: kafka, endpointslice.kubernetes.io/managed-by: kafkachannel-cluster-kafka}
addressType: IPv4
ports:
- {name: client, port: $port, protocol: TCP}
endpoints:
- addresses: ["$1"]
YAML
}

case $cmd in
down)
  if alive; then
    pid=$(cat "$dir/pid")
    say "stopping Apache Kafka (pid $pid)"
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
  $kubectl delete --ignore-not-found --wait=false -n kafka service/kafka endpointslice/kafka-node >/dev/null 2>&1 || true
  exit 0
  ;;
up) ;;
*) echo "usage: $0 up|down DIR" >&2; exit 2 ;;
esac

addr=${KAFKA_NODE_ADDRESS:-$($kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')}
[ -n "$addr" ] || { echo "no node address: is the cluster up (KUBECONFIG)? or set KAFKA_NODE_ADDRESS" >&2; exit 1; }
case $addr in 127.*|localhost) echo "KAFKA_NODE_ADDRESS=$addr: pods cannot reach the host's loopback; use the node's address" >&2; exit 1 ;; esac
[ -d "$home/libs" ] || { echo "no Apache Kafka $version in $home: run make kafka-dist" >&2; exit 1; }
command -v java >/dev/null || { echo "java is missing (Apache Kafka needs Java 17+)" >&2; exit 1; }

if alive && [ "$(cat "$dir/address" 2>/dev/null)" = "$addr:$port" ]; then
  say "Apache Kafka $version already running at $addr:$port (pid $(cat "$dir/pid"))"
else
  alive && "$0" down "$dir"
  if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then
    echo "port $port on $addr is taken: set KAFKA_NODE_PORT" >&2; exit 1
  fi
  rm -rf "$dir" && mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl
listeners=PLAINTEXT://$addr:$port,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://$addr:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=4
PROPS
  for role in server:INFO:SYSTEM_OUT tools:WARN:SYSTEM_ERR; do
    IFS=: read -r name level target <<<"$role"
    printf 'status = warn\nappender.console.type = Console\nappender.console.name = CONSOLE\nappender.console.target = %s\nappender.console.layout.type = PatternLayout\nappender.console.layout.pattern = [%%d] %%p %%m (%%c)%%n\nrootLogger.level = %s\nrootLogger.appenderRef.console.ref = CONSOLE\nlogger.state.name = state.change.logger\nlogger.state.level = WARN\n' \
      "$target" "$level" > "$dir/log4j2-$name.properties"
  done
  java_args=(-Xms64m "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true -cp "$home/libs/*")
  say "formatting Apache Kafka $version storage in $dir"
  java "${java_args[@]}" -Dlog4j2.configurationFile="$dir/log4j2-tools.properties" kafka.tools.StorageTool format \
    --cluster-id a2Fma2FjaGFubmVsbm9kZQ --config "$dir/server.properties" --ignore-formatted >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; exit 1; }
  say "starting Apache Kafka $version on $addr:$port (log $dir/server.log)"
  setsid nohup java "${java_args[@]}" -Dlog4j2.configurationFile="$dir/log4j2-server.properties" -Dkafka.logs.dir="$dir" \
    kafka.Kafka "$dir/server.properties" >"$dir/server.log" 2>&1 </dev/null &
  echo $! > "$dir/pid"
  echo "$addr:$port" > "$dir/address"
  for i in $(seq 360); do
    alive || { echo "Apache Kafka exited; its log ends with:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
    grep -q 'Kafka Server started' "$dir/server.log" && break
    [ "$i" = 360 ] && { echo "Apache Kafka did not start within 180 s; its log ends with:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
    sleep 0.5
  done
  say "Apache Kafka $version up at $addr:$port (pid $(cat "$dir/pid"))"
fi
service "$addr" | $kubectl apply -f - >/dev/null
say "in the cluster: kafka.kafka.svc.cluster.local:9092 -> $addr:$port"
