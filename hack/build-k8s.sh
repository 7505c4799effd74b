#!/usr/bin/env bash
# Builds Kubernetes commands (kube-apiserver, kubelet, ...) at one release from the Go module proxy:
#   hack/build-k8s.sh DEST CMD...
# `go install k8s.io/kubernetes/cmd/X@vY` fails because k8s.io/kubernetes replaces its staging
# modules with ./staging/...; a throwaway module that requires k8s.io/kubernetes and replaces each
# staging module with its published v0.<minor>.<patch> builds instead. Commands already in DEST are
# kept. Used by hack/build-envtest.sh (kube-apiserver) and environments/cluster (the node's parts).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.35.4}
DEST=${1:?usage: build-k8s.sh DEST CMD...}
shift
mkdir -p "$DEST"

log() { printf '[k8s] %s\n' "$*" >&2; }
# stop_heartbeat PID ends a progress loop quietly (its current sleep ends by itself within a
# minute; killing it too would make the loop's shell print "Terminated").
stop_heartbeat() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
quiet() { local out; if ! out=$("$@" 2>&1); then printf '%s\n' "$out" >&2; log "failed: $*"; return 1; fi; }

missing=()
for c in "$@"; do [[ -x "$DEST/$c" ]] || missing+=("$c"); done
if ((${#missing[@]} == 0)); then
  log "found $* in $DEST"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
gomod=$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
minor="0.${K8S_VERSION#1.}"
{
  printf 'module throwaway/k8s\n\ngo 1.25\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
  # Every staging module k8s replaces with ./staging/... is published at v0.<minor>.<patch>.
  sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#\t\1 => \1 v'"$minor"'#p' "$gomod"
  printf ')\n'
} > go.mod
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in "${missing[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'
} > tools.go
log "resolving modules for ${missing[*]} v${K8S_VERSION} (~250 MB of downloads on a cold machine)"
quiet go mod tidy
v="v${K8S_VERSION}"; maj=1; min="${K8S_VERSION#1.}"; min="${min%%.*}"
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$maj -X $p.gitMinor=$min"
done
for c in "${missing[@]}"; do
  start=$SECONDS
  log "compiling $c v${K8S_VERSION} (minutes on 2 cores, once per machine)"
  # A line a minute, so a seven-minute compile does not look like a hang.
  (while sleep 60 >/dev/null 2>&1; do log "still compiling $c ($(((SECONDS - start) / 60)) min)"; done) &
  hb=$!
  go build -trimpath -ldflags "$ld" -o "$DEST/$c.tmp" "k8s.io/kubernetes/cmd/$c" || { stop_heartbeat "$hb"; exit 1; }
  stop_heartbeat "$hb"
  mv "$DEST/$c.tmp" "$DEST/$c"
  log "built $c in $((SECONDS - start)) s"
done
