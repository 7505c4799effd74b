#!/usr/bin/env bash
# Knative Eventing core on the real cluster (make cluster), and Knative's own channel conformance
# suite against KafkaChannel (issue 24). Everything of Knative comes from the Go module proxy:
# the controller, the webhook and the suite's test images are built in a throwaway module outside
# the clone, assembled into FROM-scratch images with crane and pushed to the cluster's registry;
# the manifests are read from the module cache copy of knative.dev/eventing@$KNATIVE_VERSION
# (config/core) and applied with their ko:// references replaced by the pushed images. Nothing
# from Knative is copied into this repository.
#
# Usage: hack/knative-cluster.sh build|install|uninstall|render|conformance [TestName...]|conformance-oidc
# KUBECONFIG and REGISTRY come from the cluster's env file (CLUSTER_ENV, default .cluster/env of
# the clone, written by make cluster) unless both are set already.
set -euo pipefail

KNATIVE_VERSION=${KNATIVE_VERSION:-v0.47.0}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kafkachannel}
OUT=${KNATIVE_CLUSTER_DIR:-$CACHE_DIR/knative/$KNATIVE_VERSION/cluster}
KUBECTL=${KUBECTL:-kubectl}
# crane is pinned in the Makefile alone; it passes CRANE (make knative-install builds it first).
CRANE=${CRANE:-}
NS=knative-eventing
root=$(cd "$(dirname "$0")/.." && pwd)
WORK=
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

if [ -z "${KUBECONFIG:-}" ] || [ -z "${REGISTRY:-}" ]; then
  env_file=${CLUSTER_ENV:-$root/.cluster/env}
  [ -f "$env_file" ] && tail -1 "$env_file" | grep -qx 'READY=1' ||
    { echo "[knative-cluster] no ready cluster at $env_file (make cluster, or CLUSTER_ENV=path)" >&2; exit 1; }
  KUBECONFIG=$(sed -n 's/^KUBECONFIG=//p' "$env_file" | tail -1)
  REGISTRY=$(sed -n 's/^REGISTRY=//p' "$env_file" | tail -1)
  export KUBECONFIG REGISTRY
fi

# || true: when make and its tee are gone (an interrupted run), a log line must not stop the
# restore that the EXIT trap still has to do.
log() { printf '[knative-cluster] %s\n' "$*" >&2 || true; }
die() { log "$*"; exit 1; }

# The images this script builds: binary name, Go package, image name in the registry.
IMAGES=(
  "controller knative.dev/eventing/cmd/controller knative-eventing-controller"
  "webhook knative.dev/eventing/cmd/webhook knative-eventing-webhook"
  "eventshub knative.dev/reconciler-test/cmd/eventshub knative-eventshub"
  "heartbeats knative.dev/eventing/cmd/heartbeats knative-heartbeats"
)
# The images the suite asks for by Go package (ko://...), named in its images file.
SUITE_IMAGES=(eventshub heartbeats)

image_ref() { printf '%s/knative/%s:%s' "$REGISTRY" "$1" "$KNATIVE_VERSION"; }

src_dir() {
  go mod download -json "knative.dev/eventing@$KNATIVE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'
}

# module writes the throwaway module that requires knative.dev/eventing alone: minimal version
# selection then picks exactly the versions of its go.mod, reconciler-test included, so the
# binaries and the suite are what Knative released.
module() {
  local mod=$OUT/module tools
  tools=$(
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for spec in "${IMAGES[@]}"; do set -- $spec; printf '\t_ "%s"\n' "$2"; done
    printf ')\n'
  )
  [ -f "$mod/go.sum" ] && [ "$(cat "$mod/tools.go")" = "$tools" ] && return 0
  mkdir -p "$mod"
  [ -f "$mod/go.mod" ] ||
    printf 'module knativeconf/build\n\ngo 1.24\n\nrequire knative.dev/eventing %s\n' "$KNATIVE_VERSION" >"$mod/go.mod"
  printf '%s\n' "$tools" >"$mod/tools.go"
  log "resolving knative.dev/eventing@$KNATIVE_VERSION"
  (cd "$mod" && go mod tidy) || die "go mod tidy failed in $mod"
}

# build compiles the images' binaries (cached in $OUT/bin) and pushes the images.
build() {
  mkdir -p "$OUT/bin"
  local pkgs=() start
  for spec in "${IMAGES[@]}"; do set -- $spec; [ -x "$OUT/bin/$1" ] || pkgs+=("$2"); done
  if [ ${#pkgs[@]} -gt 0 ]; then
    module
    start=$(date +%s)
    log "compiling ${pkgs[*]} (about 6 minutes cold on 2 busy cores)"
    (cd "$OUT/module" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags '-s -w' -o "$OUT/bin/" "${pkgs[@]}")
    log "compiled in $(( $(date +%s) - start ))s"
  fi
  push_images
}

# build_suite compiles Knative's rekt suite (knative.dev/eventing/test/rekt, tag e2e) into a test
# binary that runs from its package directory in the module cache.
build_suite() {
  [ -x "$OUT/bin/rekt.test" ] && return 0
  module
  local start; start=$(date +%s)
  # One build-time patch of the test framework, not of the tests: knative.dev/reconciler-test
  # waits for a Service with a Job running the image registry.access.redhat.com/ubi8/ubi
  # (/bin/sh and curl), a constant this cluster cannot pull. A copy of reconciler-test (outside
  # the clone) reads that image from REKT_READINESS_IMAGE, ubi8 when unset; the readiness image
  # pushed here holds the host's sh and curl.
  local rtdir
  # The module cache copy of the version Knative requires (go list -m would name the copy once
  # the replace below is in go.mod).
  rtdir=$(cd "$OUT/module" && go mod download -json "knative.dev/reconciler-test@$(go list -m -f '{{.Version}}' knative.dev/reconciler-test)" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$rtdir" ] || die "knative.dev/reconciler-test is not in the module cache"
  rm -rf "$OUT/module/reconciler-test" && cp -r "$rtdir" "$OUT/module/reconciler-test" && chmod -R u+w "$OUT/module/reconciler-test"
  sed -i 's#^const ubi8Image = "registry.access.redhat.com/ubi8/ubi"$#var ubi8Image = readinessImage()#' "$OUT/module/reconciler-test/pkg/k8s/wait.go"
  grep -q '^var ubi8Image = readinessImage()$' "$OUT/module/reconciler-test/pkg/k8s/wait.go" ||
    die "reconciler-test's pkg/k8s/wait.go no longer declares ubi8Image; update the patch"
  cat >"$OUT/module/reconciler-test/pkg/k8s/readiness_image_kafkachannel.go" <<'GO'
package k8s

import "os"

// readinessImage is REKT_READINESS_IMAGE, or the image reconciler-test names.
func readinessImage() string {
	if v := os.Getenv("REKT_READINESS_IMAGE"); v != "" {
		return v
	}
	return "registry.access.redhat.com/ubi8/ubi"
}
GO
  grep -q '^replace knative.dev/reconciler-test' "$OUT/module/go.mod" ||
    printf '\nreplace knative.dev/reconciler-test => ./reconciler-test\n' >>"$OUT/module/go.mod"
  log "compiling the rekt suite (knative.dev/eventing/test/rekt, tag e2e)"
  (cd "$OUT/module" && go test -c -tags e2e -trimpath -o "$OUT/bin/rekt.test.tmp" knative.dev/eventing/test/rekt)
  mv "$OUT/bin/rekt.test.tmp" "$OUT/bin/rekt.test"
  log "compiled in $(( $(date +%s) - start ))s"
}

# push_images assembles each binary on a base layer made here (the host's CA bundle, /etc/passwd
# naming nonroot 65532, a sticky /tmp) and pushes it; it runs as 65532.
push_images() {
  local work r
  [ -n "$CRANE" ] && [ -x "$CRANE" ] || die "no crane at '$CRANE': run this through make (make knative-install), which pins and builds it"
  work=$(mktemp -d)
  WORK=$work
  r=$work/rootfs
  mkdir -p "$r/etc/ssl/certs" "$r/home/nonroot" "$r/tmp"
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/" || die "no CA bundle: install ca-certificates"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$r/etc/group"
  chmod 1777 "$r/tmp"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$r" -cf "$work/base.tar" .
  for spec in "${IMAGES[@]}"; do
    set -- $spec
    local ref; ref=$(image_ref "$3")
    mkdir -p "$work/$1"
    install -m 0755 "$OUT/bin/$1" "$work/$1/$1"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/$1" -cf "$work/$1.tar" .
    "$CRANE" append --insecure --oci-empty-base -f "$work/base.tar" -f "$work/$1.tar" -t "$ref" >"$work/crane.log" 2>&1 &&
      "$CRANE" mutate --insecure "$ref" --set-platform linux/amd64 --entrypoint "/$1" --user 65532:65532 \
        -l org.opencontainers.image.source="https://github.com/knative/eventing" \
        -l org.opencontainers.image.version="$KNATIVE_VERSION" >>"$work/crane.log" 2>&1 ||
      { cat "$work/crane.log" >&2; die "pushing $ref failed"; }
    log "pushed $ref"
  done
  push_readiness_image "$work"
  rm -rf "$work"
}

# push_readiness_image pushes the stand-in for ubi8 in reconciler-test's readiness Job: the
# host's dash as /bin/sh and its curl, with the shared libraries ldd names, at the same paths.
push_readiness_image() {
  local work=$1 r=$1/readiness ref f
  ref=$(image_ref knative-rekt-readiness)
  mkdir -p "$r/bin" "$r/usr/bin" "$r/etc/ssl/certs" "$r/tmp"
  chmod 1777 "$r/tmp"
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
  cp "$(readlink -f /bin/sh)" "$r/bin/sh"
  cp "$(command -v curl)" "$r/usr/bin/curl" || die "no curl on this host (apt-get install curl)"
  for f in $(ldd "$r/bin/sh" "$r/usr/bin/curl" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 != "=>" && $1 !~ /:$/ {print $1}' | sort -u); do
    mkdir -p "$r$(dirname "$f")" && cp -L "$f" "$r$f"
  done
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$r" -cf "$work/readiness.tar" .
  "$CRANE" append --insecure --oci-empty-base -f "$work/readiness.tar" -t "$ref" >"$work/crane.log" 2>&1 &&
    "$CRANE" mutate --insecure "$ref" --set-platform linux/amd64 --entrypoint /bin/sh --user 65532:65532 \
      --env PATH=/usr/bin:/bin >>"$work/crane.log" 2>&1 ||
    { cat "$work/crane.log" >&2; die "pushing $ref failed"; }
  log "pushed $ref"
}

# render prints Knative's config/core manifests for a cluster without Knative's optional
# components: the controller and webhook Deployments with the pushed images; the job sink,
# request-reply and the ping source adapter (images not built here, nothing in the suite uses
# them) are left out. Any ko:// reference left afterwards is an error, so a Knative release that
# adds one is noticed instead of producing a pod that cannot pull.
render() {
  local src; src=$(src_dir)
  [ -d "$src/config/core" ] || die "no config/core in $src"
  local c=$src/config/core
  local files=("$c"/100-namespace.yaml "$c"/200-*.yaml "$c"/configmaps/*.yaml "$c"/resources/*.yaml
    "$c"/roles/*.yaml "$c"/webhooks/*.yaml "$c"/deployments/controller.yaml "$c"/deployments/webhook.yaml
    "$c"/deployments/webhook-hpa.yaml)
  local f
  for f in "${files[@]}"; do printf -- '---\n'; cat "$f"; printf '\n'; done |
    sed -e "s#ko://knative.dev/eventing/cmd/controller#$(image_ref knative-eventing-controller)#" \
        -e "s#ko://knative.dev/eventing/cmd/webhook#$(image_ref knative-eventing-webhook)#" \
        -e "s#ko://knative.dev/eventing/cmd/\([a-z_]*\)#$REGISTRY/knative/not-built-\1:$KNATIVE_VERSION#"
  # The controller reads these two ConfigMaps for the images of Knative's integration sources and
  # sinks and of EventTransform; the release ships them outside config/core. Nothing here runs
  # those, so they name images that are not built (a source of that kind would not start).
  cat <<EOF
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: eventing-integrations-images
  namespace: $NS
  labels: {app.kubernetes.io/name: knative-eventing}
data:
$(for k in timer-source aws-s3-source aws-sqs-source aws-ddb-streams-source log-sink aws-s3-sink aws-sqs-sink aws-sns-sink; do
    printf '  %s: %s/knative/not-built-%s:%s\n' "$k" "$REGISTRY" "$k" "$KNATIVE_VERSION"; done)
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: eventing-transformations-images
  namespace: $NS
  labels: {app.kubernetes.io/name: knative-eventing}
data:
  transform-jsonata: $REGISTRY/knative/not-built-transform-jsonata:$KNATIVE_VERSION
EOF
}

do_install() {
  build
  local manifests=$OUT/core.yaml
  render >"$manifests"
  if grep -n 'ko://' "$manifests" >&2; then die "unresolved ko:// references in $manifests"; fi
  log "applying knative.dev/eventing@$KNATIVE_VERSION config/core ($(grep -c '^kind:' "$manifests") objects)"
  # Server-side: Knative's CRDs are too large for the last-applied annotation. Knative's webhook
  # owns the caBundle and rules of its webhook configurations after the first apply.
  "$KUBECTL" apply --server-side --force-conflicts --field-manager=knative-cluster -f "$manifests" >/dev/null
  # Channels and the Brokers' channels default to KafkaChannel: the generic Channel tests of the
  # suite create a messaging.knative.dev/v1 Channel and expect a KafkaChannel behind it.
  "$KUBECTL" -n "$NS" patch configmap default-ch-webhook --type merge -p '{"data":{"default-ch-config":"clusterDefault:\n  apiVersion: messaging.knative.dev/v1beta1\n  kind: KafkaChannel\n"}}' >/dev/null
  "$KUBECTL" -n "$NS" rollout status deploy/eventing-controller --timeout=300s
  "$KUBECTL" -n "$NS" rollout status deploy/eventing-webhook --timeout=300s
  log "Knative Eventing $KNATIVE_VERSION is running in $NS"
}

do_uninstall() {
  local manifests=$OUT/core.yaml
  render >"$manifests"
  # Knative's Subscriptions and Channels carry finalizers that only its controller removes:
  # they go while it still runs, or their CRDs would never finish deleting.
  "$KUBECTL" delete --ignore-not-found --all-namespaces --all --timeout=120s \
    subscriptions.messaging.knative.dev,channels.messaging.knative.dev >/dev/null 2>&1 || true
  # Knative's webhook configurations go next: with the webhook gone they would refuse writes.
  "$KUBECTL" delete --ignore-not-found mutatingwebhookconfiguration sinkbindings.webhook.sources.knative.dev webhook.eventing.knative.dev >/dev/null
  "$KUBECTL" delete --ignore-not-found validatingwebhookconfiguration config.webhook.eventing.knative.dev validation.webhook.eventing.knative.dev >/dev/null
  "$KUBECTL" delete --ignore-not-found --wait=true -f "$manifests" >/dev/null
  log "Knative Eventing removed"
}

# apply_api applies this checkout's KafkaChannel CRD and the ClusterRoles aggregated into
# Knative's (the objects labelled duck.knative.dev/*), rendered as make deploy renders them and
# with kubectl's field manager as make deploy applies them: the suite judges the API of the tree
# under test, whichever operator build runs the data plane.
apply_api() {
  local rendered=$OUT/api.yaml
  "$KUBECTL" kustomize "$root/config/default" >"$rendered"
  "$KUBECTL" apply --server-side -l 'duck.knative.dev/addressable=true' -f "$rendered" >/dev/null
  "$KUBECTL" apply --server-side -l 'duck.knative.dev/channelable=true' -f "$rendered" >/dev/null
  log "applied this checkout's KafkaChannel CRD and aggregated ClusterRoles"
}

# CHANNEL_TESTS are the channel tests of knative.dev/eventing test/rekt channel_test.go that this
# cluster can run: the TLS, OIDC and authorization ones are left out (docs/knative-compatibility.md
# says why).
CHANNEL_TESTS=(TestChannelConformance TestSmoke_Channel TestSmoke_ChannelImpl TestSmoke_ChannelWithSubscription
  TestSmoke_ChannelImplWithSubscription TestChannelChain TestChannelDeadLetterSink TestChannelAsyncHandler
  TestGenericChannelDeadLetterSink TestEventTransformationForSubscriptionV1 TestBinaryEventForChannel
  TestStructuredEventForChannel TestChannelPreferHeaderCheck TestChannelDeadLetterSinkExtensions)

# conformance runs Knative's rekt channel tests against KafkaChannel v1beta1, one test (go test
# -run) at a time: each KafkaChannel gets a dispatcher pod that requests CPU, and the tests run
# all at once ask for more than a two-core node has (pods Pending on Insufficient cpu).
conformance() {
  local tests=("$@") failed=() t
  [ ${#tests[@]} -gt 0 ] || tests=("${CHANNEL_TESTS[@]}")
  build_suite
  apply_api
  local images=$OUT/images.yaml
  : >"$images"
  for spec in "${IMAGES[@]}"; do
    set -- $spec
    [[ " ${SUITE_IMAGES[*]} " == *" $1 "* ]] && printf '%s: %s\n' "$2" "$(image_ref "$3")" >>"$images"
  done
  for t in "${tests[@]}"; do
    log "running knative.dev/eventing@$KNATIVE_VERSION test/rekt $t (KafkaChannel.messaging.knative.dev v1beta1)"
    # The suite's package directory is its working directory, as under go test.
    # -test.parallel: rekt runs the steps of one timing as parallel subtests, and a step that
    # waits (Channel goes ready) can hold a slot while the step it waits for (update Channel)
    # queues; with go test's default of GOMAXPROCS slots, 2 here, such a feature only times out.
    # -teardown.on.fail: a failed test's namespace would otherwise keep its channels, and their
    # dispatchers' CPU requests, for the next test.
    (cd "$(src_dir)/test/rekt" &&
      SYSTEM_NAMESPACE=$NS REKT_READINESS_IMAGE=$(image_ref knative-rekt-readiness) \
        CHANNEL_GROUP_KIND=KafkaChannel.messaging.knative.dev CHANNEL_VERSION=v1beta1 \
        "$OUT/bin/rekt.test" -test.run "^$t\$" -test.v -test.timeout "${CONFORMANCE_TIMEOUT:-20m}" -test.parallel 64 \
        -images.producer.file="$images" -teardown.on.fail=true) || failed+=("$t")
  done
  log "${#tests[@]} tests, ${#failed[@]} failed${failed[*]:+: ${failed[*]}}"
  [ ${#failed[@]} -eq 0 ]
}

# FEATURE_CONFIGMAPS are the two config-features a feature flag must agree in: Knative's (its
# controller and the suite's prerequisites read it) and our operator's.
FEATURE_CONFIGMAPS=("$NS" "${OPERATOR_NAMESPACE:-kafkachannel-system}")
SAVED_FEATURES=()

# features_data prints the data of config-features in namespace $1 as JSON ({} when it has none).
features_data() {
  local d
  d=$("$KUBECTL" -n "$1" get configmap config-features -o jsonpath='{.data}') || die "no config-features in $1"
  [ -n "$d" ] || d='{}'
  printf '%s\n' "$d"
}

# save_features remembers both config-features' data, so restore_features can put them back
# exactly: keys that were absent are absent again, not set to an empty or default value.
save_features() {
  local n d
  for n in "${FEATURE_CONFIGMAPS[@]}"; do
    d=$(features_data "$n") || exit 1
    SAVED_FEATURES+=("$d")
  done
}

# restore_features replaces each saved config-features' data with what it was, then reads it back
# and fails if it differs: a run that leaves OIDC on changes every later test on the cluster.
restore_features() {
  local i n now ok=0
  [ ${#SAVED_FEATURES[@]} -gt 0 ] || return 0
  for i in "${!FEATURE_CONFIGMAPS[@]}"; do
    n=${FEATURE_CONFIGMAPS[$i]}
    "$KUBECTL" -n "$n" patch configmap config-features --type json \
      -p "[{\"op\":\"replace\",\"path\":\"/data\",\"value\":${SAVED_FEATURES[$i]}}]" >/dev/null || ok=1
    now=$(features_data "$n")
    if [ "$now" = "${SAVED_FEATURES[$i]}" ]; then log "config-features in $n restored"
    else log "config-features in $n NOT restored: $now, was ${SAVED_FEATURES[$i]}"; ok=1; fi
  done
  SAVED_FEATURES=()
  return $ok
}

# wait_receiver_features waits until every receiver pod logged, since $1, that it applied
# authentication-oidc: the receiver reads config-features from its mounted volume, which the
# kubelet refreshes up to a minute or so after the ConfigMap changed. Without the wait the suite's
# token features race that refresh (seen: a token for the wrong audience answered 202, 17 s
# before the receiver logged "features applied" with oidc true).
wait_receiver_features() {
  local since=$1 deadline=$((SECONDS + 180)) pods p ok
  pods=$("$KUBECTL" -n "${FEATURE_CONFIGMAPS[1]}" get pods -l app.kubernetes.io/component=receiver -o name)
  [ -n "$pods" ] || die "no receiver pod in ${FEATURE_CONFIGMAPS[1]}: is the operator deployed (make deploy)?"
  while :; do
    ok=1
    for p in $pods; do
      "$KUBECTL" -n "${FEATURE_CONFIGMAPS[1]}" logs "$p" --since-time="$since" 2>/dev/null |
        grep '"msg":"features applied"' | grep -q '"oidc":true' || ok=0
    done
    [ $ok = 1 ] && { log "the receiver applied authentication-oidc"; return 0; }
    [ $SECONDS -lt $deadline ] || die "the receiver did not apply authentication-oidc within 180 s"
    sleep 5
  done
}

# conformance_oidc runs TestChannelImplSupportsOIDC with authentication-oidc enabled in both
# config-features (with it off the suite skips its features), and restores both afterwards,
# whether the test passed, failed or was interrupted.
conformance_oidc() {
  local n rc=0 since
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  save_features
  # SIGPIPE ignored in the trap: a run killed with its process group has lost the tee its
  # output goes to, and the first write would otherwise kill the restore.
  trap 'trap "" PIPE; restore_features || true; [ -z "$WORK" ] || rm -rf "$WORK"' EXIT
  trap 'exit 130' INT TERM
  # TRANSPORT_ENCRYPTION=strict also runs the token features, which the suite skips unless
  # transport encryption is strict.
  local patch='{"data":{"authentication-oidc":"enabled"}}'
  [ -z "${TRANSPORT_ENCRYPTION:-}" ] ||
    patch='{"data":{"authentication-oidc":"enabled","transport-encryption":"'"$TRANSPORT_ENCRYPTION"'"}}'
  for n in "${FEATURE_CONFIGMAPS[@]}"; do
    "$KUBECTL" -n "$n" patch configmap config-features --type merge -p "$patch" >/dev/null
    log "config-features in $n: $patch (until the test ends)"
  done
  wait_receiver_features "$since"
  conformance TestChannelImplSupportsOIDC || rc=$?
  restore_features || rc=1
  return $rc
}

cmd=${1:-}; shift || true
case $cmd in
  build) build && build_suite ;;
  install) do_install ;;
  uninstall) do_uninstall ;;
  render) render ;;
  conformance) conformance "$@" ;;
  conformance-oidc) conformance_oidc ;;
  *) die "usage: $0 build|install|uninstall|render|conformance [TestName...]|conformance-oidc" ;;
esac
