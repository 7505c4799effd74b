#!/usr/bin/env bash
# Assembles the operator's images without a container engine or registry access (make
# docker-build with CONTAINER_TOOL=crane): each image is the base plus one layer holding a static
# binary built on the host by make. With BASE=scratch the base is one layer made here from the
# host's files: the CA bundle (Kafka over TLS, https subscribers and OIDC discovery verify
# against the system roots) and /etc/passwd and /etc/group naming the nonroot user 65532, as
# distroless/static:nonroot has them. No shell, no package manager.
#
# crane edits an image's config (entrypoint, user, labels) only in a registry, so a registry of
# its own runs on a free loopback port for the length of the build; the results are written to
# OUT/<name>.tar (docker-archive layout, which `crane push` and `docker load` both read).
#
# Usage: hack/image/build.sh CRANE BASE VERSION BINDIR OUT name=ref...
set -euo pipefail
crane=$1 base=$2 version=$3 bindir=$4 out=$5
shift 5
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
# The scratch space lives beside the output, inside the checkout, not in /tmp: a CI run once
# lost its /tmp directory to a cleaner running beside it, mid-build.
work=$(mktemp -d "$out/.work.XXXXXX")
regpid=
cleanup() { [ -n "$regpid" ] && kill "$regpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Deterministic tars: numeric root ownership, fixed times, sorted names, so the same binaries
# give the same layer digests.
mktar() { # mktar DIR FILE
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}

layers=()
if [ "$base" = scratch ]; then
  ca=/etc/ssl/certs/ca-certificates.crt
  [ -s "$ca" ] || { echo "no CA bundle at $ca: install the ca-certificates package" >&2; exit 1; }
  r=$work/rootfs
  mkdir -p "$r/etc/ssl/certs" "$r/home/nonroot" "$r/tmp"
  cp "$ca" "$r/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$r/etc/group"
  chmod 0644 "$r/etc/passwd" "$r/etc/group" "$r/etc/ssl/certs/ca-certificates.crt"
  chmod 1777 "$r/tmp"
  mktar "$r" "$work/base.tar"
  # The home directory belongs to its user, as in distroless.
  tar --delete -f "$work/base.tar" ./home/nonroot
  tar --append --mtime=@0 --owner=65532 --group=65532 --numeric-owner -C "$r" -f "$work/base.tar" ./home/nonroot
  layers+=(-f "$work/base.tar")
  from=(--oci-empty-base)
else
  from=(-b "$base")
fi

"$crane" registry serve --address 127.0.0.1:0 >"$work/registry.log" 2>&1 &
regpid=$!
for _ in $(seq 100); do
  port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "crane registry did not start:" >&2; cat "$work/registry.log" >&2; exit 1; }
reg=127.0.0.1:$port

# crane logs every blob it moves; keep that for when a step fails.
quiet() { "$@" >>"$work/crane.log" 2>&1 || { cat "$work/crane.log" >&2; return 1; }; }

revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
for spec in "$@"; do
  name=${spec%%=*} ref=${spec#*=}
  bin=$bindir/$name
  [ -x "$bin" ] || { echo "missing binary $bin (make builds it first)" >&2; exit 1; }
  mkdir -p "$work/$name"
  install -m 0755 "$bin" "$work/$name/$name"
  mktar "$work/$name" "$work/$name.tar"
  quiet "$crane" append --insecure "${from[@]}" "${layers[@]}" -f "$work/$name.tar" -t "$reg/$name:build"
  quiet "$crane" mutate --insecure "$reg/$name:build" \
    --set-platform linux/amd64 \
    --entrypoint "/$name" --user 65532:65532 --workdir / \
    -l org.opencontainers.image.title="kafkachannel-$name" \
    -l org.opencontainers.image.version="$version" \
    -l org.opencontainers.image.revision="$revision" \
    -l org.opencontainers.image.licenses=Apache-2.0 \
    -l org.opencontainers.image.source=https://github.com/kafkachannel/kafkachannel \
    -l org.opencontainers.image.base.name="$base" \
    -t "$ref" -o "$out/$name.tar"
  printf '%-13s %s  %s MiB compressed\n' "$name" "$ref" "$(( $(stat -c %s "$out/$name.tar") / 1048576 ))"
done
