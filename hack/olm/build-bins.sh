#!/usr/bin/env bash
# Builds OLM's binaries (olm, catalog, package-server, copy-content, cpb) and opm from the Go module
# proxy into OUT, each from a throwaway module that requires only that project, so neither
# project's dependency versions are raised by the other's (minimal version selection would).
# Static (CGO_ENABLED=0): the images are FROM scratch. opm needs the containers_image_openpgp tag
# (no gpgme) and json1 (its sqlite index); OLM's upstream Makefile builds with the same pair.
#
# Usage: hack/olm/build-bins.sh OUT OLM_VERSION OPM_VERSION GO_VERSION_LINE
set -euo pipefail
out=$1 olm=$2 opm=$3 gover=$4
mkdir -p "$out"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
build() { # build NAME MODULE VERSION PKG...
  local name=$1 mod=$2 ver=$3; shift 3
  local d; d=$(mktemp -d)
  printf 'module olmtools\n\ngo %s\n' "$gover" > "$d/go.mod"
  # go get on the packages (not just the module) records every dependency they import.
  local pkgs=(); for pkg in "$@"; do pkgs+=("$mod/$pkg@$ver"); done
  (cd "$d" && go get "${pkgs[@]}")
  for pkg in "$@"; do
    local bin=${pkg##*/}
    [ -x "$out/$bin" ] && continue
    echo "building $bin ($mod $ver)"
    (cd "$d" && go build -trimpath -tags containers_image_openpgp,json1 -ldflags '-s -w' -o "$out/$bin" "$mod/$pkg")
  done
  rm -rf "$d"
}
build olm github.com/operator-framework/operator-lifecycle-manager "$olm" \
  cmd/olm cmd/catalog cmd/copy-content cmd/package-server util/cpb
build opm github.com/operator-framework/operator-registry "$opm" cmd/opm
