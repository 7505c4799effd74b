#!/usr/bin/env bash
# Assembles OLM's two images from the binaries of build-bins.sh and pushes them to REGISTRY
# (plain http), FROM scratch like hack/image/build.sh, with no engine:
#   olm: /bin/olm, /bin/catalog, /bin/package-server, /bin/copy-content, /bin/cpb and a static
#        busybox: the bundle-unpack Job runs `/bin/cp -Rv /bin/cpb /util/cpb` in this image.
#   opm: /bin/opm and the same busybox. operator-sdk's registry pod runs `sh -c "opm serve ..."`
#        in its index image and gunzips the catalog in an init container (`sh`, `gzip`, `cat`);
#        the unpack Job runs `opm alpha bundle extract`. One image serves all three. Its label
#        operators.operatorframework.io.index.configs.v1 is what makes operator-sdk treat it as a
#        file-based catalog (the image holds no catalog: operator-sdk mounts one from ConfigMaps).
# busybox comes from Debian's busybox-static package (apt-get download, no install).
#
# Usage: hack/olm/images.sh CRANE BINDIR CACHE OLM_REF OPM_REF
set -euo pipefail
crane=$1 bindir=$2 cache=$3 olmref=$4 opmref=$5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

busybox=$cache/busybox
if [ ! -x "$busybox" ]; then
  (cd "$work" && apt-get download busybox-static >/dev/null 2>&1) ||
    { echo "apt-get download busybox-static failed (Debian's package is the shell of the images)" >&2; exit 1; }
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/deb"
  install -m 0755 "$work/deb/bin/busybox" "$busybox"
fi

mktar() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .; }

# base: CA bundle, nonroot user, /tmp, busybox with the applets the pods call.
r=$work/base
mkdir -p "$r/bin" "$r/etc/ssl/certs" "$r/tmp"
cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$r/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$r/etc/group"
chmod 1777 "$r/tmp"
install -m 0755 "$busybox" "$r/bin/busybox"
for a in sh cp cat gzip ls mkdir; do ln -s busybox "$r/bin/$a"; done
mktar "$r" "$work/base.tar"

image() { # image REF LAYERDIR ENTRYPOINT LABEL...
  local ref=$1 dir=$2 ep=$3; shift 3
  mktar "$dir" "$work/layer.tar"
  local labels=(); for l in "$@"; do labels+=(-l "$l"); done
  "$crane" append --insecure --oci-empty-base -f "$work/base.tar" -f "$work/layer.tar" -t "$ref" >/dev/null 2>&1
  "$crane" mutate --insecure "$ref" --set-platform linux/amd64 --entrypoint "$ep" --user 65532:65532 \
    --workdir / --env PATH=/bin "${labels[@]}" >/dev/null 2>&1
  echo "pushed $ref"
}

o=$work/olm; mkdir -p "$o/bin"
for b in olm catalog package-server copy-content cpb; do install -m 0755 "$bindir/$b" "$o/bin/$b"; done
image "$olmref" "$o" /bin/olm org.opencontainers.image.title=olm

p=$work/opm; mkdir -p "$p/bin" "$p/configs"
install -m 0755 "$bindir/opm" "$p/bin/opm"
image "$opmref" "$p" /bin/opm org.opencontainers.image.title=opm \
  operators.operatorframework.io.index.configs.v1=/configs
