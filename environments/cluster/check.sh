#!/usr/bin/env bash
# Proves the running cluster does what the product needs from it (make cluster-check):
#   check.sh workloads  a FROM scratch image pushed to the local registry runs as a hardened
#                       Deployment and turns Ready; its ClusterIP Service answers from another pod
#                       by its svc.cluster.local name and from the host; CoreDNS resolves
#                       kubernetes.default.svc.cluster.local; a pod over its memory limit is
#                       OOMKilled.
#   check.sh selftest   down.sh's iptables undo in network namespaces of its own (seconds, runs
#                       beside a running cluster).
#   check.sh cycle      with no cluster running: host snapshot, up, workloads, down, the host
#                       compared with the snapshot, and the same once more (a second start works).
source "$(dirname "$0")/lib.sh"
NS=cluster-check

# poll SECONDS CMD... prints CMD's output once it succeeds; at the deadline, its last output
# (stderr included) and a failure.
poll() {
  local deadline=$((SECONDS + $1)) out; shift
  until out=$("$@" 2>&1); do
    ((SECONDS < deadline)) || { printf '%s' "$out"; return 1; }
    sleep 1
  done
  printf '%s' "$out"
}

workloads() {
  grep -q '^READY=1' "$STATE/env" 2>/dev/null || die "no running cluster ($STATE/env lacks READY=1): make cluster first"
  kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=10s >/dev/null || die "node $NODE_NAME is not Ready"
  log "node $NODE_NAME Ready"

  local bin=$STATE/images/hello tag
  (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$bin" ./environments/cluster/cmd/hello)
  tag=$(sha256sum "$bin" | cut -c1-12)
  local push=$REGISTRY/kafkachannel-cluster/hello:$tag
  push_image "$push" "$bin" hello

  kc delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
  # The server pulls by 127.0.0.1:5001 (the name pushes use), the client by localhost:5001
  # (the name kind's recipe gives pods): containerd must resolve both to the local registry.
  kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: $NS}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: hello
        image: $push
        args: [serve]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
        livenessProbe: {httpGet: {path: /readyz, port: 8080}}
        resources: {limits: {memory: 32Mi, cpu: 100m}}
        securityContext:
          runAsNonRoot: true
          runAsUser: 65532
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          seccompProfile: {type: RuntimeDefault}
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: $NS}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: $NS}
spec:
  automountServiceAccountToken: false
  containers:
  - name: client
    image: localhost:${REGISTRY##*:}/kafkachannel-cluster/hello:$tag
    args: [serve]
    env: [{name: PORT, value: "8081"}]
    securityContext: {runAsNonRoot: true, runAsUser: 65532, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
YAML
  kc -n "$NS" rollout status deployment/hello --timeout=120s >/dev/null || { kc -n "$NS" describe pods >&2; die "Deployment hello did not become Ready"; }
  kc -n "$NS" wait --for=condition=Ready pod/client --timeout=120s >/dev/null || { kc -n "$NS" describe pod client >&2; die "pod client did not become Ready"; }
  log "Deployment of $push Ready (2 replicas, uid 65532, read-only root, no capabilities)"

  local out
  # kube-proxy programs a new Service's endpoints a moment after the pods turn Ready, later still
  # on a busy machine: the checks poll until their deadline.
  out=$(poll 60 kc -n "$NS" exec client -- /hello lookup kubernetes.default.svc.cluster.local) ||
    die "CoreDNS did not resolve kubernetes.default.svc.cluster.local from a pod: $out"
  [[ $out == "$KUBERNETES_SVC_IP" ]] || die "kubernetes.default.svc.cluster.local resolved to '$out', want $KUBERNETES_SVC_IP"
  log "CoreDNS: kubernetes.default.svc.cluster.local is $out"
  out=$(poll 60 kc -n "$NS" exec client -- /hello get "http://hello.$NS.svc.cluster.local/") ||
    die "Service hello did not answer pod client: $out"
  [[ $out == "hello from hello-"* ]] || die "Service hello answered '$out'"
  log "Service hello.$NS.svc.cluster.local answered pod client: $out"
  local ip
  ip=$(kc -n "$NS" get service hello -o jsonpath='{.spec.clusterIP}')
  out=$(poll 60 curl -fsS --max-time 10 "http://$ip/") || die "Service hello ($ip) did not answer the host: $out"
  log "Service hello ($ip) answered the host: $out"

  kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: oom, namespace: $NS}
spec:
  automountServiceAccountToken: false
  restartPolicy: Never
  containers:
  - name: oom
    image: $push
    args: [alloc, "64"]
    resources: {limits: {memory: 16Mi}}
    securityContext: {runAsNonRoot: true, runAsUser: 65532, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
YAML
  oom_killed() { [[ $(kc -n "$NS" get pod oom -o jsonpath='{.status.containerStatuses[0].state.terminated.reason}') == OOMKilled ]]; }
  wait_for "pod oom (growing to 64 MiB under a 16 MiB limit) to be OOMKilled" 60 oom_killed ||
    die "a pod over its memory limit was not OOMKilled: $(kc -n "$NS" get pod oom -o jsonpath='{.status.containerStatuses[0].state}')"
  log "a pod growing to 64 MiB under a 16 MiB limit: OOMKilled"
  kc delete namespace "$NS" --wait=true --timeout=60s >/dev/null
  log "workloads passed"
}

# host_snapshot prints what the cluster may change on the host, in a form that diffs cleanly.
host_snapshot() (
  # Empty listings (no iptables rules at all) are normal here, not failures.
  set +e +o pipefail
  echo "## iptables"; iptables-save | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' | sort
  echo "## ip6tables"; ip6tables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' | sort
  # Mounts and links narrowed to the kinds a node makes: other engineers' builds come and go.
  echo "## mounts"; awk '{print $5, $9}' /proc/self/mountinfo | grep -E 'kafkachannel|kubelet|containerd|netns|cni|kubepods' | sort
  echo "## links"; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^($BRIDGE|veth|cni)" | sort
  echo "## sysctls"; sysctl -e kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward \
    net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables 2>/dev/null
  echo "## cgroups"; for h in /sys/fs/cgroup/*/; do [[ -d $h$CGROUP_ROOT || -d ${h}kubepods ]] && echo "$h"; done
  echo "## paths"; for d in "$VARDIR" "$RUNDIR" /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd /opt/containerd /etc/cni; do
    [[ -e $d ]] && echo "$d"; done
  # The cluster's processes name its paths or ports (envtest runs the same kube-apiserver and etcd
  # binaries elsewhere on the machine); its containers' processes live in its cgroups, listed above.
  echo "## processes"; pgrep -af -- "$RUNDIR|$VARDIR|$STATE/|$NODE_BIN/|$REGISTRY_BIN|--secure-port $APISERVER_PORT|127.0.0.1:$ETCD_PORT" |
    grep -v -e pgrep -e check.sh | cut -d' ' -f2- | sort
  echo "## listening"; for p in "${PORTS[@]}"; do [[ -n $(ss -Hltn "sport = :$p") ]] && echo "$p"; done
  true
)

cycle() {
  [[ $EUID -eq 0 ]] || die "not root"
  [[ -f $STATE/env ]] && die "a cluster runs from $STATE: the cycle check starts and stops its own (make cluster-down first)"
  local before=$STATE/check-host-before after=$STATE/check-host-after
  mkdir -p "$STATE"
  host_snapshot > "$before"
  for round in 1 2; do
    local t=$SECONDS
    "$HERE/up.sh"
    log "round $round: up in $((SECONDS - t)) s"
    workloads
    t=$SECONDS
    "$HERE/down.sh"
    log "round $round: down in $((SECONDS - t)) s"
    host_snapshot > "$after"
    if ! diff -u "$before" "$after" >&2; then die "round $round: the host differs from before make cluster (diff above)"; fi
    log "round $round: host as before (iptables, mounts, links, sysctls, cgroups, paths, processes, ports)"
  done
  log "cycle passed"
}

# undo_case NAME FOREIGN runs, in a network namespace of its own (the host's rules untouched),
# what kubelet, kube-proxy and the bridge plugin add, then down.sh's iptables_undo, and fails
# unless iptables-save reads as before. FOREIGN=1 starts from rules and a CNI chain of someone
# else, which must stay; FOREIGN=0 from no tables at all, as on a fresh machine.
undo_case() {
  local name=$1 foreign=$2
  unshare -n bash -c '
    source "$1/lib.sh"
    d=$(mktemp -d)
    if [[ $2 == 1 ]]; then
      iptables -N CNI-FOREIGN && iptables -A INPUT -s 192.0.2.99/32 -j CNI-FOREIGN
      iptables -t nat -A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE
    fi
    iptables-save > "$d/before"
    iptables -N KUBE-FIREWALL && iptables -A INPUT -j KUBE-FIREWALL && iptables -A OUTPUT -j KUBE-FIREWALL
    iptables -t mangle -N KUBE-IPTABLES-HINT
    iptables -t nat -N KUBE-SERVICES && iptables -t nat -A OUTPUT -j KUBE-SERVICES
    iptables -t nat -N CNI-0123abcd
    iptables -t nat -A POSTROUTING -s 10.244.0.5/32 -m comment --comment "name: \"kafkachannel-cluster\" id: \"x\"" -j CNI-0123abcd
    iptables -t nat -A CNI-0123abcd -d 10.244.0.0/24 -j ACCEPT
    iptables_undo iptables-save iptables-restore "$d/before" "$d/undo"
    strip() { grep -v "^#" | sed "s/\[[0-9]*:[0-9]*\]//"; }
    diff -u <(strip < "$d/before") <(iptables-save | strip) >&2
  ' _ "$HERE" "$foreign" || die "iptables undo, $name: the rules differ from before (diff above)"
  log "iptables undo, $name: as before"
}

selftest() {
  [[ $EUID -eq 0 ]] || die "not root: the self-test uses a network namespace"
  undo_case "from no tables (a fresh machine)" 0
  undo_case "beside someone else's rules and CNI chain" 1
}

case ${1:-workloads} in
  workloads) workloads ;;
  cycle) cycle ;;
  snapshot) host_snapshot ;;
  selftest) selftest ;;
  *) die "usage: check.sh [workloads|cycle|snapshot|selftest]" ;;
esac
