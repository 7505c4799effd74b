#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver + etcd) from the Go module proxy, because
# setup-envtest's download site cannot be reached on machines that only see package registries.
# Binaries land in setup-envtest's layout under $1 (default: a per-user cache outside the clone,
# so a fresh clone on the same machine reuses them). Idempotent: an existing build is kept.
set -euo pipefail
hack=$(cd "$(dirname "$0")" && pwd)

K8S_VERSION=${K8S_VERSION:-1.35.4}
ETCD_VERSION=${ETCD_VERSION:-3.6.5}
DEST=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/kafkachannel/envtest/k8s/${K8S_VERSION}-linux-amd64}
mkdir -p "$DEST"

log() { printf '[envtest] %s\n' "$*" >&2; }
# quiet runs a noisy step, showing its output only when it fails.
quiet() { local out; if ! out=$("$@" 2>&1); then printf '%s\n' "$out" >&2; log "failed: $*"; return 1; fi; }

if [[ -x "$DEST/kube-apiserver" && -x "$DEST/etcd" ]]; then
  log "found kube-apiserver and etcd in $DEST"
  exit 0
fi

# On a machine with internet the usual download is much faster; try it first, quietly.
if [[ -z "${ENVTEST_BUILD_ONLY:-}" ]] && command -v setup-envtest >/dev/null 2>&1; then
  if dir=$(setup-envtest use "$K8S_VERSION" -p path 2>/dev/null); then
    cp "$dir"/kube-apiserver "$dir"/etcd "$DEST"/ && { log "downloaded with setup-envtest"; exit 0; }
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ ! -x "$DEST/etcd" ]]; then
  log "building etcd v${ETCD_VERSION} from the Go module proxy (about 2 minutes on 2 cores, once per machine)"
  mkdir -p "$work/etcd" && cd "$work/etcd"
  printf 'module envtest/etcd\n\ngo 1.25\n' > go.mod
  quiet go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}"
  go build -trimpath -o "$DEST/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$DEST/etcd.tmp" "$DEST/etcd"
fi

if [[ ! -x "$DEST/kube-apiserver" ]]; then
  log "building kube-apiserver v${K8S_VERSION} from the Go module proxy (8-11 minutes on 2 cores, once per machine)"
  K8S_VERSION=$K8S_VERSION "$hack/build-k8s.sh" "$DEST" kube-apiserver
fi
log "built into $DEST"
