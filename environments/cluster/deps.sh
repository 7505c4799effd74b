#!/usr/bin/env bash
# Installs the Debian packages the node needs (container runtime, CNI plugins, netfilter tools)
# when any is missing. Needs root, like the node itself.
source "$(dirname "$0")/lib.sh"

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  [[ $(dpkg-query -W -f '${Status}' "$p" 2>/dev/null) == *"ok installed"* ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
[[ $EUID -eq 0 ]] || die "the Debian packages ${missing[*]} are missing and installing them needs root"
log "installing Debian packages: ${missing[*]}"
# The packages' own services must not start: this cluster runs its own containerd, and a
# second one on the standard socket would be another runtime on the machine nobody asked for.
policy=/usr/sbin/policy-rc.d
had_policy=0; [[ -e $policy ]] && had_policy=1
[[ $had_policy == 1 ]] || { printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; }
trap '[[ $had_policy == 1 ]] || rm -f "$policy"' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } ||
  die "apt-get could not install ${missing[*]}"
log "installed ${missing[*]}"
