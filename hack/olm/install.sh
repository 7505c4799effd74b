#!/usr/bin/env bash
# Installs OLM from its own release manifests in the Go module cache
# (deploy/upstream/quickstart/olm.yaml and the CRDs of deploy/chart/crds of
# github.com/operator-framework/operator-lifecycle-manager at OLM_VERSION), with the images built
# here instead of quay.io's. The chart's CRDs, not the quickstart's crds.yaml: v0.38.0's quickstart
# lacks the OLMConfig CRD, which olm-operator watches.
# The manifests change as follows:
#   - the olm image for olm-operator, catalog-operator, packageserver and the -util-image;
#   - the opm image for the catalog operator's -opmImage (bundle unpack) and -configmapServerImage;
#   - the operatorhub.io CatalogSource is left out: its image is on quay.io, which no one here reaches;
#   - the packageserver CSV is left out unless PACKAGESERVER=1: it serves packagemanifests (which
#     operator-sdk run bundle does not use) as an aggregated API, and an aggregated API that is
#     not Available breaks discovery for every client of the cluster and leaves namespaces stuck
#     in Terminating: on a shared cluster that is not a risk to take for an unused API.
# `uninstall` deletes what `install` applied.
# Usage: hack/olm/install.sh install|uninstall OLM_VERSION OLM_IMG OPM_IMG
set -euo pipefail
action=$1 version=$2 olmimg=$3 opmimg=$4
kubectl=${KUBECTL:-kubectl}
mod=$(go mod download -json "github.com/operator-framework/operator-lifecycle-manager@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
dir=$mod/deploy/upstream/quickstart
crds=$mod/deploy/chart/crds
[ -f "$dir/olm.yaml" ] || { echo "no $dir/olm.yaml in the module cache" >&2; exit 1; }
[ -f "$crds/0000_50_olm_00-olmconfigs.crd.yaml" ] || { echo "no OLMConfig CRD in $crds" >&2; exit 1; }

render() {
  # Documents are split on ---; the catalog operator gets -opmImage after its configmap flag.
  # The quickstart's catalog-operator arguments are single-dash (-namespace, -util-image, ...),
  # which the cobra flags of v0.38.0's catalog read as shorthands and reject ("unknown
  # shorthand flag: 'n' in -namespace"); they become double-dash here.
  sed -e "s#quay.io/operator-framework/olm@sha256:[0-9a-f]*#$olmimg#g" \
      -e "s#^\( *\)- '-namespace'#\1- --namespace#" \
      -e "s#^\( *\)- -util-image#\1- --util-image#" \
      -e "s#^\( *\)- -configmapServerImage=.*#\1- --configmapServerImage=$opmimg\n\1- --opmImage=$opmimg#" \
      "$dir/olm.yaml" |
    awk -v ps="${PACKAGESERVER:-0}" 'BEGIN{RS="\n---\n"; ORS="\n---\n"}
      /name: operatorhubio-catalog/ {next}
      ps != "1" && /kind: ClusterServiceVersion/ && /name: packageserver/ {next}
      {print}'
}

case $action in
install)
  start=$(date +%s)
  $kubectl apply --server-side -f "$crds" >/dev/null
  $kubectl wait --for=condition=Established -f "$crds" --timeout=2m >/dev/null
  render | $kubectl apply --server-side -f - >/dev/null
  $kubectl -n olm rollout status deploy/olm-operator --timeout=5m
  $kubectl -n olm rollout status deploy/catalog-operator --timeout=5m
  if [ "${PACKAGESERVER:-0}" = 1 ]; then
    # packageserver is a CSV that olm-operator itself installs.
    for _ in $(seq 150); do
      phase=$($kubectl -n olm get csv packageserver -o jsonpath='{.status.phase}' 2>/dev/null || true)
      [ "$phase" = Succeeded ] && break
      sleep 2
    done
    [ "$phase" = Succeeded ] || { echo "packageserver CSV is '$phase', not Succeeded" >&2; $kubectl -n olm get csv,pods >&2; exit 1; }
  fi
  echo "OLM $version installed in $(( $(date +%s) - start )) s"
  ;;
uninstall)
  render | $kubectl delete --ignore-not-found -f - >/dev/null || true
  $kubectl delete --ignore-not-found -f "$crds" >/dev/null || true
  ;;
*) echo "usage: $0 install|uninstall VERSION OLM_IMG OPM_IMG" >&2; exit 2 ;;
esac
