#!/usr/bin/env bash
# Regenerates the OLM bundle (bundle/, bundle.Dockerfile) from config/manifests with operator-sdk.
# Deterministic on purpose: `make test` regenerates it and fails if the committed one differs.
# With OUT, the bundle and its bundle.Dockerfile go to OUT instead (make test-olm builds bundles
# of other versions and registries there without touching the committed one).
# Usage: hack/bundle.sh OPERATOR_SDK VERSION IMG DISPATCHER_IMG RECEIVER_IMG [OUT]
set -euo pipefail
sdk=$1 version=$2 img=$3 dimg=$4 rimg=$5
root=$(cd "$(dirname "$0")/.." && pwd)
out=${6:-$root}
mkdir -p "$out" && cd "$out"
[ "$out" = "$root" ] || cp "$root/PROJECT" "$out/" # operator-sdk reads the project layout label from it
rm -rf bundle/manifests bundle/metadata
# --extra-service-accounts: the dispatcher's and receiver's ClusterRoles go into the CSV's
# clusterPermissions for their ServiceAccounts, which OLM binds in the namespace it installs
# into; as plain manifests their bindings would name kafkachannel-system wherever it installs.
"$root/hack/render.sh" config/manifests "$img" "$dimg" "$rimg" |
  "$sdk" generate bundle -q --overwrite --package kafkachannel --version "$version" \
    --channels alpha --default-channel alpha --output-dir bundle \
    --extra-service-accounts kafkachannel-dispatcher,kafkachannel-receiver
csv=bundle/manifests/kafkachannel.clusterserviceversion.yaml
# createdAt would make every regeneration differ; the data plane images the manager deploys are
# related images of the bundle (for mirroring in disconnected clusters).
sed -i '/^    createdAt: /d' "$csv"
if ! grep -q '^  relatedImages:' "$csv"; then
  printf '  relatedImages:\n  - image: %s\n    name: manager\n  - image: %s\n    name: dispatcher\n  - image: %s\n    name: receiver\n' \
    "$img" "$dimg" "$rimg" >> "$csv"
fi
