#!/usr/bin/env bash
# Regenerates everything generated (CRD, RBAC, deepcopy) and fails if that changed a file:
# generated files are never hand-edited, and the committed ones must match their sources.
set -euo pipefail
make=${1:-make}
paths=(api config/crd config/rbac)
before=$(mktemp -d); trap 'rm -rf "$before"' EXIT
for p in "${paths[@]}"; do mkdir -p "$before/$p"; cp -r "$p/." "$before/$p/"; done
$make -s manifests generate >/dev/null
status=0
for p in "${paths[@]}"; do
  if ! diff -r "$before/$p" "$p" >/dev/null; then
    echo "generated files in $p were out of date; they have been regenerated: review and commit them" >&2
    diff -r "$before/$p" "$p" | head -40 >&2 || true
    status=1
  fi
done
exit $status
