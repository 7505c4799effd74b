#!/usr/bin/env bash
# Regenerates the OLM bundle (bundle/, bundle.Dockerfile) from config/manifests with operator-sdk.
# Deterministic on purpose: `make test` regenerates it and fails if the committed one differs.
# Usage: hack/bundle.sh OPERATOR_SDK VERSION IMG DISPATCHER_IMG RECEIVER_IMG
set -euo pipefail
sdk=$1 version=$2 img=$3 dimg=$4 rimg=$5
cd "$(dirname "$0")/.."
rm -rf bundle/manifests bundle/metadata
./hack/render.sh config/manifests "$img" "$dimg" "$rimg" |
  "$sdk" generate bundle -q --overwrite --package kafkachannel --version "$version" \
    --channels alpha --default-channel alpha --output-dir bundle
csv=bundle/manifests/kafkachannel.clusterserviceversion.yaml
# createdAt would make every regeneration differ; the data plane images the manager deploys are
# related images of the bundle (for mirroring in disconnected clusters).
sed -i '/^    createdAt: /d' "$csv"
if ! grep -q '^  relatedImages:' "$csv"; then
  printf '  relatedImages:\n  - image: %s\n    name: manager\n  - image: %s\n    name: dispatcher\n  - image: %s\n    name: receiver\n' \
    "$img" "$dimg" "$rimg" >> "$csv"
fi
