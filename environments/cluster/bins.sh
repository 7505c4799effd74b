#!/usr/bin/env bash
# Builds what the node runs, once per machine, into the per-user cache beside the envtest binaries:
# kubelet, kube-controller-manager, kube-scheduler and kube-proxy at the envtest version (the same
# throwaway-module recipe as kube-apiserver, hack/build-k8s.sh), CoreDNS, the CNCF distribution
# registry and crane. kube-apiserver and etcd come from `make envtest`. Everything is cached:
# a second run only checks. Cold on 2 busy cores: about 8 minutes for the Kubernetes parts,
# 10 for CoreDNS.
source "$(dirname "$0")/lib.sh"

[[ -x "$ENVTEST_ASSETS/kube-apiserver" && -x "$ENVTEST_ASSETS/etcd" ]] ||
  die "kube-apiserver and etcd are missing in $ENVTEST_ASSETS: run make envtest first"
need_crane

K8S_VERSION=$K8S_VERSION "$REPO/hack/build-k8s.sh" "$NODE_BIN" kube-scheduler kube-proxy kube-controller-manager kubelet

# stop_heartbeat PID ends a progress loop quietly (its current sleep ends by itself within a
# minute; killing it too would make the loop's shell print "Terminated").
stop_heartbeat() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# go_install builds a module's command (one with no replace directives) into a versioned file.
go_install() {
  local dest=$1 pkg=$2 what=$3
  [[ -x $dest ]] && return 0
  log "building $what from the Go module proxy (once per machine: $4)"
  local d start=$SECONDS hb
  d=$(mktemp -d)
  # A line a minute, so a ten-minute build does not look like a hang.
  (while sleep 60 >/dev/null 2>&1; do log "still building $what ($(((SECONDS - start) / 60)) min)"; done) &
  hb=$!
  CGO_ENABLED=0 GOBIN=$d go install -trimpath -ldflags '-s -w' "$pkg" || { stop_heartbeat "$hb"; rm -rf "$d"; die "building $what failed"; }
  stop_heartbeat "$hb"
  mkdir -p "$(dirname "$dest")"
  mv "$d"/* "$dest"; rm -rf "$d"
  log "built $what in $((SECONDS - start)) s"
}
go_install "$CRANE" "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION" "crane $CRANE_VERSION" "under a minute"
go_install "$REGISTRY_BIN" "github.com/distribution/distribution/v3/cmd/registry@v$REGISTRY_VERSION" \
  "the distribution registry v$REGISTRY_VERSION" "about 3 minutes"
go_install "$COREDNS_BIN" "github.com/coredns/coredns@v$COREDNS_VERSION" "CoreDNS v$COREDNS_VERSION" "about 10 minutes"
log "node binaries ready: $NODE_BIN, $COREDNS_BIN, $REGISTRY_BIN"
