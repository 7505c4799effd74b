#!/usr/bin/env bash
# Renders a kustomize directory with the three image names wired in: the manager's container
# image, and the DISPATCHER_IMAGE / RECEIVER_IMAGE it writes into the data plane Deployments.
# The samples' subscriber image (cmd/eventdisplay) is renamed too when EVENTDISPLAY_IMG is given.
# Usage: hack/render.sh DIR MANAGER_IMG DISPATCHER_IMG RECEIVER_IMG [EVENTDISPLAY_IMG]
set -euo pipefail
dir=$1 img=$2 dimg=$3 rimg=$4 eimg=${5:-ghcr.io/kafkachannel/kafkachannel-eventdisplay:v0.1.0}
root=$(cd "$(dirname "$0")/.." && pwd)
overlay="$root/bin/render-overlay"
rm -rf "$overlay" && mkdir -p "$overlay"
rel=$(realpath --relative-to="$overlay" "$root/$dir")
cat > "$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $rel
images:
- name: ghcr.io/kafkachannel/kafkachannel-manager
  newName: "${img%:*}"
  newTag: "${img##*:}"
- name: ghcr.io/kafkachannel/kafkachannel-eventdisplay
  newName: "${eimg%:*}"
  newTag: "${eimg##*:}"
patches:
- target: {kind: Deployment, name: kafkachannel-manager}
  patch: |-
    - op: replace
      path: /spec/template/spec/containers/0/env/2/value
      value: "$dimg"
    - op: replace
      path: /spec/template/spec/containers/0/env/3/value
      value: "$rimg"
YAML
${KUBECTL:-kubectl} kustomize "$overlay"
