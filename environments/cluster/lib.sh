# Shared settings and helpers of the real single-node cluster (sourced by the other scripts).
# One cluster per machine: it owns host-wide things (a bridge, iptables chains, kubelet's ports),
# so every name below is its own, and `up` refuses to start when any of them is taken.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/environments/cluster"
K8S_VERSION=${K8S_VERSION:-1.35.4}
COREDNS_VERSION=${COREDNS_VERSION:-1.15.0}
REGISTRY_VERSION=${REGISTRY_VERSION:-3.1.2}
# crane is pinned in the Makefile alone (CRANE_VERSION, CRANE): it passes both down.
CRANE_VERSION=${CRANE_VERSION:-}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kafkachannel}
ENVTEST_ASSETS=${ENVTEST_ASSETS:-$CACHE_DIR/envtest/k8s/${K8S_VERSION}-linux-amd64}
# The node's own binaries sit beside envtest's, outside the clone, so a fresh clone reuses them.
NODE_BIN=${NODE_BIN:-$CACHE_DIR/cluster/k8s/${K8S_VERSION}-linux-amd64}
COREDNS_BIN=$CACHE_DIR/cluster/coredns-v${COREDNS_VERSION}
# CNCF distribution, not `crane registry serve`: crane keeps manifests in memory even with --disk.
REGISTRY_BIN=$CACHE_DIR/cluster/registry-v${REGISTRY_VERSION}
CRANE=${CRANE:-}
# Pushed images outlive the cluster, as kind's registry container outlives a kind cluster.
REGISTRY_DATA=${REGISTRY_DATA:-$CACHE_DIR/cluster/registry-data}

# Per clone: kubeconfig, certificates, logs, pids. Per machine: what the runtime needs as root.
STATE=${CLUSTER_STATE:-$REPO/.cluster}
VARDIR=/var/lib/kafkachannel-cluster
RUNDIR=/run/kafkachannel-cluster
CONTAINERD_SOCK=$RUNDIR/containerd/containerd.sock
CGROUP_ROOT=/kafkachannel-cluster

NODE_NAME=kafkachannel-node
REGISTRY=127.0.0.1:5001
APISERVER_PORT=16443
ETCD_PORT=12379
ETCD_PEER_PORT=12380
# kubelet, kube-proxy (metrics, healthz), controller-manager and scheduler: the standard ports,
# checked free first, all below the ephemeral range (32768-60999) envtest takes ports from.
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PROXY_METRICS_PORT=10249
PROXY_HEALTHZ_PORT=10256
KCM_PORT=10257
SCHEDULER_PORT=10259
PORTS=("${REGISTRY##*:}" "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT"
  "$PROXY_METRICS_PORT" "$PROXY_HEALTHZ_PORT" "$KCM_PORT" "$SCHEDULER_PORT")
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
POD_CIDR=10.244.0.0/16
BRIDGE=kc0
CNI_NETWORK=kafkachannel-cluster
# The pause image is tagged by its binary's digest (up.sh), so a changed pause.go is a new image.
PAUSE_REPO=localhost:5001/kafkachannel-cluster/pause
COREDNS_IMAGE=localhost:5001/kafkachannel-cluster/coredns:v${COREDNS_VERSION}
HELLO_IMAGE=localhost:5001/kafkachannel-cluster/hello:1.0

# nftables only for `nft delete table`: iptables cannot remove the empty tables kubelet leaves.
DEBIAN_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack nftables)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# node_ip is the address other hosts (and pods, through the kubernetes Service) reach us on.
node_ip() { ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1; }

# wait_for polls a command until it succeeds or the deadline (seconds) passes.
wait_for() {
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out waiting for $what"; return 1; }
    sleep 1
  done
}

pid_alive() { [[ -f "$STATE/pids/$1.pid" ]] && kill -0 "$(cat "$STATE/pids/$1.pid")" 2>/dev/null; }

kc() { kubectl --kubeconfig "$STATE/kubeconfig" "$@"; }

# push_image REF BINARY ENTRYPOINT pushes a FROM scratch image holding one static binary at
# /ENTRYPOINT, assembled by crane with no daemon and no base to pull. Files belong to root; the
# process runs as 65532 (distroless' nonroot).
push_image() {
  local ref=$1 bin=$2 entry=$3 d
  log "pushing image $ref"
  d=$(mktemp -d)
  mkdir -p "$d/root"
  cp "$bin" "$d/root/$entry"
  chmod 755 "$d/root/$entry"
  tar --numeric-owner --owner=0 --group=0 -C "$d/root" -cf "$d/layer.tar" .
  if ! "$CRANE" append --insecure --oci-empty-base -f "$d/layer.tar" -t "$ref" >/dev/null 2>&1 ||
    ! "$CRANE" mutate --insecure --set-platform linux/amd64 --entrypoint "/$entry" --user 65532:65532 "$ref" >/dev/null 2>&1; then
    rm -rf "$d"
    die "pushing $ref to the registry failed"
  fi
  rm -rf "$d"
}

# iptables_undo SAVE RESTORE BEFORE UNDO removes the chains that are not in the BEFORE snapshot
# (iptables-save output taken by up.sh) and are Kubernetes' or CNI's, every rule that jumps to
# them or names this cluster's CNI network, pod range or bridge, and the tables that were not
# there before and are empty now. UNDO keeps the iptables-restore input it applied.
iptables_undo() {
  local save=$1 restore=$2 before=$3 undo=$4 now
  now=$($save 2>/dev/null) || return 0
  [[ -f $before ]] || before=/dev/null
  awk -v net="$CNI_NETWORK" -v cidr="${POD_CIDR%.*.*}." -v br="$BRIDGE" '
    FILENAME == ARGV[1] { if ($0 ~ /^:/) old[substr($1, 2)] = 1; next }
    /^\*/ { table = $0; tables[++nt] = table; next }
    /^:/ { c = substr($1, 2); if ((c ~ /^KUBE-/ || c ~ /^CNI-/) && !(c in old)) { ours[table, c] = 1 } next }
    /^-A / { rules[table, ++nr[table]] = $0 }
    END {
      for (i = 1; i <= nt; i++) {
        t = tables[i]; print t
        for (j = 1; j <= nr[t]; j++) {
          r = rules[t, j]; split(r, f, " "); chain = f[2]
          if ((t, chain) in ours) continue
          target = ""; for (k = 1; k < length(f); k++) if (f[k] == "-j" || f[k] == "-g") target = f[k + 1]
          if ((t, target) in ours || index(r, "\"" net "\"") || index(r, "\\\"" net "\\\"") || index(r, " " cidr) || index(r, " " br " ")) {
            sub(/^-A /, "-D ", r); print r
          }
        }
        for (k in ours) { split(k, p, SUBSEP); if (p[1] == t) print "-F " p[2] }
        for (k in ours) { split(k, p, SUBSEP); if (p[1] == t) print "-X " p[2] }
        print "COMMIT"
      }
    }' "$before" <(printf '%s\n' "$now") > "$undo"
  $restore --noflush < "$undo" || log "$restore could not apply $undo"
  # A table that did not exist before and is empty now was created for the cluster (iptables-nft
  # makes nft tables on first use); iptables cannot delete a table, nft can.
  local family=ip t; [[ $save == ip6* ]] && family=ip6
  for t in $($save 2>/dev/null | sed -n 's/^\*//p'); do
    grep -qx "\*$t" "$before" && continue
    $save -t "$t" 2>/dev/null | grep -q -e '^-A' -e '^:[^ ]* - ' && continue
    nft delete table "$family" "$t" 2>/dev/null || log "cannot delete the empty $family table $t (is nft installed?)"
  done
}

# need_crane stops a script that pushes images when it was not started by make, which pins crane.
need_crane() {
  [[ -n $CRANE && -n $CRANE_VERSION ]] || die "CRANE and CRANE_VERSION are unset: run this through make (the Makefile pins crane)"
}
