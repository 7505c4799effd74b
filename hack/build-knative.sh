#!/usr/bin/env bash
# Builds Knative Eventing's controller (knative.dev/eventing/cmd/controller) at a pinned version
# from the Go module proxy, in a throwaway module outside the clone, for the Knative peer test
# (make test-knative). Nothing from Knative is copied into this repository: the test reads
# Knative's CRD YAMLs from the module cache copy of knative.dev/eventing@$KNATIVE_VERSION.
# Prints the binary's path on stdout. Idempotent: an existing build is kept.
set -euo pipefail

KNATIVE_VERSION=${KNATIVE_VERSION:-v0.47.0}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kafkachannel}
DEST=${1:-$CACHE_DIR/knative/$KNATIVE_VERSION}
mkdir -p "$DEST"

log() { printf '[knative] %s\n' "$*" >&2; }
quiet() { local out; if ! out=$("$@" 2>&1); then printf '%s\n' "$out" >&2; log "failed: $*"; return 1; fi; }

# The module's source (and its config/core/resources CRDs) must be in the module cache even when
# the binary is already built: the test reads the CRDs from there.
src=$(go mod download -json "knative.dev/eventing@$KNATIVE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
if [[ -z "$src" ]]; then log "go mod download knative.dev/eventing@$KNATIVE_VERSION gave no directory"; exit 1; fi
printf '%s\n' "$src" > "$DEST/source-dir"

if [[ -x "$DEST/controller" ]]; then
  log "found $DEST/controller"
  echo "$DEST/controller"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
start=$(date +%s)
# Requiring only knative.dev/eventing makes minimal version selection pick exactly the versions
# of its own go.mod (it has no replace directives), so this builds what Knative released.
printf 'module knativepeer/build\n\ngo 1.24\n\nrequire knative.dev/eventing %s\n' "$KNATIVE_VERSION" > go.mod
printf '//go:build tools\n\npackage tools\n\nimport _ "knative.dev/eventing/cmd/controller"\n' > tools.go
log "resolving modules of knative.dev/eventing@$KNATIVE_VERSION"
quiet go mod tidy

# One build-time patch, so that the controller can run beside other processes on one machine:
# knative.dev/pkg serves its health probes on the constant port 8080 of every interface, which
# the local stack cannot promise to be free. A patched copy of knative.dev/pkg (outside the
# clone, deleted after the build) reads the port from KNATIVE_PROBES_PORT, 8080 when unset.
pkgdir=$(go list -m -f '{{.Dir}}' knative.dev/pkg)
cp -r "$pkgdir" pkg && chmod -R u+w pkg
sed -i 's/^const HealthCheckDefaultPort = 8080$/var HealthCheckDefaultPort = probesPort()/' pkg/injection/health_check.go
grep -q '^var HealthCheckDefaultPort = probesPort()$' pkg/injection/health_check.go ||
  { log "knative.dev/pkg's injection/health_check.go no longer declares HealthCheckDefaultPort = 8080; update the patch"; exit 1; }
cat > pkg/injection/probes_port_localstack.go <<'GO'
package injection

import (
	"os"
	"strconv"
)

// probesPort is KNATIVE_PROBES_PORT, or 8080.
func probesPort() int {
	if p, err := strconv.Atoi(os.Getenv("KNATIVE_PROBES_PORT")); err == nil && p > 0 {
		return p
	}
	return 8080
}
GO
printf '
replace knative.dev/pkg => ./pkg
' >> go.mod
log "patched knative.dev/pkg ($(basename "$pkgdir")): health probe port from KNATIVE_PROBES_PORT"
log "compiling knative.dev/eventing/cmd/controller (the slow step; several minutes on 2 cores)"
go build -trimpath -ldflags "-s -w" -o "$DEST/controller.tmp" knative.dev/eventing/cmd/controller
mv "$DEST/controller.tmp" "$DEST/controller"
log "built $DEST/controller in $(( $(date +%s) - start ))s"
echo "$DEST/controller"
