#!/usr/bin/env bash
# Starts the real single-node cluster in the background and writes $STATE/env (READY=1 last).
# Order: preflight, host state saved, certificates, registry (+ pause and CoreDNS images), etcd,
# kube-apiserver, containerd, controller-manager, scheduler, kubelet, kube-proxy, CoreDNS.
# down.sh undoes all of it; a failed start leaves what it started for down.sh to stop.
source "$(dirname "$0")/lib.sh"
source "$HERE/pki.sh"
start_time=$SECONDS

# --- preflight: say which piece is missing, before anything changes on the host ---
[[ $EUID -eq 0 ]] || die "not root: a kubelet and containerd need root (run as root, or use make demo, which needs none)"
need_crane
if [[ -f $STATE/env ]] && grep -q '^READY=1' "$STATE/env" && pid_alive kube-apiserver && pid_alive kubelet; then
  log "already running (KUBECONFIG=$STATE/kubeconfig); make cluster-down stops it"
  exit 0
fi
# One cluster per machine: $VARDIR/owner names the clone whose make cluster-down stops it.
if [[ -f $VARDIR/owner && $(cat "$VARDIR/owner") != "$STATE" ]]; then
  die "a cluster started from $(cat "$VARDIR/owner") runs on this machine: use its env file, or stop it there with make cluster-down"
fi
if ls "$STATE"/pids/*.pid >/dev/null 2>&1 || [[ -d $VARDIR ]]; then
  die "a previous cluster was not torn down ($STATE/pids or $VARDIR exist): run make cluster-down first"
fi
for c in kubectl openssl curl ss ip go; do
  command -v "$c" >/dev/null || die "$c not found: it is needed to start the cluster"
done
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  grep -qw memory /sys/fs/cgroup/cgroup.controllers || die "no cgroup memory controller (cgroup v2 without memory in cgroup.controllers): kubelet cannot enforce pod memory limits"
  CGROUP_V1=0
else
  awk '$1 == "memory" && $4 == 1 {ok=1} END {exit !ok}' /proc/cgroups && [[ -d /sys/fs/cgroup/memory ]] ||
    die "no cgroup memory controller (not enabled in /proc/cgroups or not mounted at /sys/fs/cgroup/memory): boot with cgroup_enable=memory"
  CGROUP_V1=1
fi
for p in "${PORTS[@]}"; do
  # Read whole, not piped into grep -q: under pipefail a writer cut off by grep's early exit
  # would turn a match into a failure.
  if [[ -n $(ss -Hltn "sport = :$p") ]]; then
    die "port $p is taken ($(ss -Hltnp "sport = :$p" | sed -n 's/.*users:((\("[^"]*"\).*/\1/p' | head -1)): this cluster needs ${PORTS[*]}; another Kubernetes node or registry may run here"
  fi
done
if grep -q '^:KUBE-' <<<"$(iptables-save 2>/dev/null)"; then
  die "iptables already holds KUBE-* chains: another Kubernetes node runs on this machine (or a previous run was not torn down: make cluster-down)"
fi
if ip link show "$BRIDGE" >/dev/null 2>&1; then die "network interface $BRIDGE exists: make cluster-down first"; fi
"$HERE/deps.sh"
for b in "$ENVTEST_ASSETS/kube-apiserver" "$ENVTEST_ASSETS/etcd" "$NODE_BIN/kubelet" "$NODE_BIN/kube-controller-manager" \
  "$NODE_BIN/kube-scheduler" "$NODE_BIN/kube-proxy" "$COREDNS_BIN" "$REGISTRY_BIN" "$CRANE"; do
  [[ -x $b ]] || die "missing $b: run make cluster-bins (make cluster does it first)"
done
IP=$(node_ip)
[[ -n $IP ]] || die "cannot tell the node's address (no default route)"

# --- host state, saved for down.sh ---
mkdir -p "$STATE"/{pids,logs,host,etc} "$VARDIR" "$RUNDIR"
echo "$STATE" > "$VARDIR/owner"
sysctl -e -q kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward \
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables \
  | sed 's/ = /=/' > "$STATE/host/sysctl"
# Paths kubelet, containerd's shims and the CNI plugins create outside their configured roots;
# down.sh removes those that did not exist before.
: > "$STATE/host/created"
for d in /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd /opt/containerd /etc/cni; do
  [[ -e $d ]] || echo "$d" >> "$STATE/host/created"
done
iptables-save > "$STATE/host/iptables"
ip6tables-save > "$STATE/host/ip6tables" 2>/dev/null || true
# NODE_IP: where pods reach services running on the host (an Apache Kafka outside the cluster).
printf 'KUBECONFIG=%s\nREGISTRY=%s\nNODE_IP=%s\n' "$STATE/kubeconfig" "$REGISTRY" "$(node_ip)" > "$STATE/env"

# start NAME CMD... runs CMD in its own session, detached from make, its pid in $STATE/pids.
start() {
  local name=$1; shift
  setsid "$@" > "$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/$name.pid"
}
# up_or_die WHAT NAME SECONDS CMD... waits for CMD, naming the log to read when it never comes up.
up_or_die() {
  local what=$1 name=$2 t=$3; shift 3
  wait_for "$what" "$t" "$@" && return 0
  pid_alive "$name" || log "$name exited; the end of $STATE/logs/$name.log:"
  tail -15 "$STATE/logs/$name.log" >&2
  die "$what did not come up in ${t}s (make cluster-down cleans up)"
}

log "certificates and kubeconfigs for $NODE_NAME at $IP"
make_pki "$IP"
kubeconfig kubeconfig admin
for c in controller-manager scheduler kube-proxy kubelet-client; do kubeconfig "$c.kubeconfig" "$c"; done

# --- local OCI registry (as kind's local-registry recipe: pods pull localhost:5001/...) ---
log "registry on $REGISTRY (data in $REGISTRY_DATA)"
mkdir -p "$REGISTRY_DATA"
cat > "$STATE/etc/registry.yaml" <<CFG
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $REGISTRY_DATA}
  delete: {enabled: true}
http: {addr: $REGISTRY}
CFG
OTEL_TRACES_EXPORTER=none start registry "$REGISTRY_BIN" serve "$STATE/etc/registry.yaml"
up_or_die "the registry" registry 20 curl -fsS "http://$REGISTRY/v2/"

pause_bin=$STATE/images/pause
mkdir -p "$STATE/images"
(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$pause_bin" ./environments/cluster/cmd/pause)
PAUSE_IMAGE=$PAUSE_REPO:$(sha256sum "$pause_bin" | cut -c1-12)
"$CRANE" manifest --insecure "$PAUSE_IMAGE" >/dev/null 2>&1 || push_image "$PAUSE_IMAGE" "$pause_bin" pause
"$CRANE" manifest --insecure "$COREDNS_IMAGE" >/dev/null 2>&1 || push_image "$COREDNS_IMAGE" "$COREDNS_BIN" coredns

# --- control plane ---
log "etcd on 127.0.0.1:$ETCD_PORT"
start etcd "$ENVTEST_ASSETS/etcd" --name default --data-dir "$VARDIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" --log-level warn
up_or_die "etcd" etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

log "kube-apiserver on $IP:$APISERVER_PORT"
P=$STATE/pki
start kube-apiserver "$ENVTEST_ASSETS/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" --secure-port "$APISERVER_PORT" --advertise-address "$IP" \
  --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" --client-ca-file "$P/ca.crt" \
  --kubelet-client-certificate "$P/apiserver-kubelet-client.crt" --kubelet-client-key "$P/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$P/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction --allow-privileged=true --profiling=false
up_or_die "kube-apiserver" kube-apiserver 90 kc get --raw /readyz

# --- container runtime: a containerd of its own (config, root, state, socket) ---
log "containerd at $CONTAINERD_SOCK"
mkdir -p "$STATE/etc/cni" "$STATE/etc/certs.d" "$VARDIR/containerd" "$RUNDIR/containerd"
for host in localhost:5001 127.0.0.1:5001; do
  mkdir -p "$STATE/etc/certs.d/$host"
  printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$REGISTRY" "$REGISTRY" \
    > "$STATE/etc/certs.d/$host/hosts.toml"
done
cat > "$STATE/etc/cni/10-$CNI_NETWORK.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$VARDIR/cni/networks",
        "ranges": [[{"subnet": "${POD_CIDR%.*.*}.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
cat > "$STATE/etc/containerd.toml" <<TOML
version = 2
root = "$VARDIR/containerd"
state = "$RUNDIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUNDIR/containerd/containerd.sock.ttrpc"
[debug]
  address = "$RUNDIR/containerd/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$VARDIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  disable_apparmor = true
  # Required here: the machine lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj,
  # and without this every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUNDIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/etc/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE/etc/certs.d"
TOML
start containerd containerd --config "$STATE/etc/containerd.toml"
up_or_die "containerd" containerd 30 ctr --address "$CONTAINERD_SOCK" version

log "kube-controller-manager and kube-scheduler"
start kube-controller-manager "$NODE_BIN/kube-controller-manager" --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false --use-service-account-credentials \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --cluster-name kafkachannel-cluster --profiling=false
start kube-scheduler "$NODE_BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false --profiling=false

# --- the node ---
# kubelet's pods live in cgroups of their own under $CGROUP_ROOT, so down.sh removes exactly those.
# A v1 cpuset child starts with no CPUs and no memory nodes; it gets its parent's.
for h in /sys/fs/cgroup/*/; do
  [[ -f $h/cgroup.procs ]] || continue
  mkdir -p "$h$CGROUP_ROOT"
  if [[ -f $h/cpuset.cpus ]]; then
    cat "$h/cpuset.cpus" > "$h$CGROUP_ROOT/cpuset.cpus"; cat "$h/cpuset.mems" > "$h$CGROUP_ROOT/cpuset.mems"
  fi
done
log "kubelet ($NODE_NAME, root dir $VARDIR/kubelet)"
mkdir -p "$VARDIR/kubelet" "$VARDIR/pod-logs"
cat > "$STATE/etc/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: $([[ $CGROUP_V1 == 1 ]] && echo false || echo true)
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$DNS_SVC_IP]
clusterDomain: cluster.local
tlsCertFile: $P/kubelet.crt
tlsPrivateKeyFile: $P/kubelet.key
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
readOnlyPort: 0
podLogsDir: $VARDIR/pod-logs
failSwapOn: false
serializeImagePulls: false
# A shared development machine runs low on disk or memory at times; evicting the cluster's own
# pods then would look like a product failure.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
YAML
start kubelet "$NODE_BIN/kubelet" --config "$STATE/etc/kubelet.yaml" --kubeconfig "$STATE/kubelet-client.kubeconfig" \
  --root-dir "$VARDIR/kubelet" --hostname-override "$NODE_NAME" --node-ip "$IP"

log "kube-proxy (iptables)"
cat > "$STATE/etc/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
nodePortAddresses: [primary]
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
# Pods reach a Service's pods on the same bridge; without br_netfilter in every kernel the reply
# would bypass the DNAT, so Service traffic is masqueraded.
iptables: {localhostNodePorts: false, masqueradeAll: true}
# Zeroes leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
start kube-proxy "$NODE_BIN/kube-proxy" --config "$STATE/etc/kube-proxy.yaml"

log "waiting for node $NODE_NAME to be Ready"
up_or_die "node Ready" kubelet 120 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
# Pods cannot be created before their namespace's default ServiceAccount exists.
up_or_die "the default ServiceAccount" kube-controller-manager 60 kc get serviceaccount default

log "CoreDNS ($DNS_SVC_IP) and the local-registry-hosting ConfigMap"
sed -e "s#@COREDNS_IMAGE@#$COREDNS_IMAGE#" -e "s#@DNS_SVC_IP@#$DNS_SVC_IP#" -e "s#@REGISTRY_HOST@#localhost:${REGISTRY##*:}#" \
  "$HERE/manifests.yaml" | kc apply -f - >/dev/null
up_or_die "CoreDNS Ready" kubelet 120 kc -n kube-system rollout status deployment/coredns --timeout=2s

echo "READY=1" >> "$STATE/env"
log "ready in $((SECONDS - start_time)) s: source $STATE/env (KUBECONFIG, REGISTRY=$REGISTRY); make cluster-down stops it"
