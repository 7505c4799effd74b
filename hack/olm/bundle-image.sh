#!/usr/bin/env bash
# Builds the bundle image that DIR/bundle.Dockerfile describes (FROM scratch, its LABELs, bundle/
# manifests and metadata at /manifests and /metadata) with crane, and pushes it to REF over plain
# http: the same content `docker build -f bundle.Dockerfile .` makes, without an engine.
# Usage: hack/olm/bundle-image.sh CRANE DIR REF
set -euo pipefail
crane=$1 dir=$2 ref=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -q '^FROM scratch$' "$dir/bundle.Dockerfile" || { echo "$dir/bundle.Dockerfile is not FROM scratch" >&2; exit 1; }
mkdir -p "$work/root"
cp -r "$dir/bundle/manifests" "$work/root/manifests"
cp -r "$dir/bundle/metadata" "$work/root/metadata"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/root" -cf "$work/layer.tar" .
labels=()
while read -r kv; do labels+=(-l "$kv"); done < <(sed -n 's/^LABEL //p' "$dir/bundle.Dockerfile")
"$crane" append --insecure --oci-empty-base -f "$work/layer.tar" -t "$ref" >/dev/null 2>&1
"$crane" mutate --insecure "$ref" --set-platform linux/amd64 "${labels[@]}" >/dev/null 2>&1
echo "pushed $ref"
