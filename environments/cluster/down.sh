#!/usr/bin/env bash
# Stops the cluster up.sh started (every process by the pid it recorded) and undoes its host
# changes: pods' sandboxes, mounts, iptables rules and chains, the bridge, cgroups, sysctls and the
# directories that did not exist before. Safe to run twice, and after a start that failed half way.
source "$(dirname "$0")/lib.sh"
[[ $EUID -eq 0 ]] || die "not root: the cluster's processes and host changes belong to root"
start_time=$SECONDS

# stop NAME: SIGTERM, a grace period, then SIGKILL, for the pid up.sh recorded.
stop() {
  local f=$STATE/pids/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + ${2:-15}))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

no_running_tasks() { [[ -z $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null) ]]; }

# Pods first, while kubelet still runs: it stops their sandboxes through the CRI, which runs the
# CNI DEL that removes their iptables rules and addresses. The controllers go first so nothing
# replaces the pods.
stop kube-scheduler
stop kube-controller-manager
if pid_alive kube-apiserver && pid_alive kubelet && pid_alive containerd; then
  log "deleting pods"
  kc delete pods --all --all-namespaces --grace-period=2 --wait=false >/dev/null 2>&1 || true
  wait_for "the pods' containers to stop" 60 no_running_tasks || true
fi
log "stopping the node"
stop kube-proxy
stop kubelet
stop containerd
# Whatever still runs in the cluster's cgroups (a shim or a container kubelet did not reach)
# is the cluster's own: killed by pid.
if [[ -n $CGROUP_ROOT && -d /sys/fs/cgroup/pids$CGROUP_ROOT ]]; then
  mapfile -t pids < <(find "/sys/fs/cgroup/pids$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
  if ((${#pids[@]} > 0)); then
    log "killing leftover container processes: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
fi
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do kill -KILL "$pid" 2>/dev/null || true; done
log "stopping the control plane and the registry"
stop kube-apiserver
stop etcd
stop registry

if [[ -x $NODE_BIN/kube-proxy ]] && [[ -f $STATE/host/iptables ]]; then
  "$NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
fi

# Mounts under the cluster's directories (netns, kubelet's bind mount of its root, volumes,
# overlay snapshots), deepest first.
mounts() { awk -v a="$VARDIR" -v b="$RUNDIR" '$5 == a || index($5, a "/") == 1 || $5 == b || index($5, b "/") == 1 {print $5}' /proc/self/mountinfo | sort -r; }
for m in $(mounts); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"; done
for m in $(mounts); do umount -l "$m" 2>/dev/null || true; done

if [[ -d $STATE/host ]]; then
  iptables_undo iptables-save iptables-restore "$STATE/host/iptables" "$STATE/host/iptables.undo"
  iptables_undo ip6tables-save ip6tables-restore "$STATE/host/ip6tables" "$STATE/host/ip6tables.undo"
fi
ip link del "$BRIDGE" 2>/dev/null || true

# cgroups: kubelet's tree under the cluster's own root, leaves first.
for h in /sys/fs/cgroup/*/; do
  [[ -d $h$CGROUP_ROOT ]] && find "$h$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null
  [[ -d $h$CGROUP_ROOT ]] && log "cannot remove cgroup $h$CGROUP_ROOT"
done

if [[ -f $STATE/host/sysctl ]]; then
  while IFS= read -r kv; do sysctl -q -w "$kv" >/dev/null 2>&1 || log "cannot restore sysctl $kv"; done < "$STATE/host/sysctl"
fi
rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
if [[ -f $STATE/host/created ]]; then
  while IFS= read -r d; do [[ -n $d ]] && rm -rf "$d"; done < "$STATE/host/created"
fi
rm -rf "$VARDIR" "$RUNDIR"
rm -rf "$STATE/pids" "$STATE/host" "$STATE/env"
log "stopped and cleaned up in $((SECONDS - start_time)) s (logs kept in $STATE/logs)"
