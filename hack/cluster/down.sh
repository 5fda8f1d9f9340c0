#!/usr/bin/env bash
# Take down what hack/cluster/up.sh started, and leave the host as it was:
# - node daemons (kube-proxy, kubelet), then every pod: tasks killed and
#   removed through each node's containerd (shims exit and remove their
#   sockets under /run/containerd/s), then containerd; stragglers in the
#   cluster's cgroups are SIGKILLed and the cgroups removed;
# - control plane (kube-scheduler, kube-controller-manager, kube-apiserver, etcd);
# - every mount under $CLUSTER_DIR (kubelet's root bind mount, volumes,
#   container rootfs, pod netns), the kc-* network namespaces;
# - the host sysctls kubelet changed (values recorded by up.sh);
# - hard-coded paths outside $CLUSTER_DIR: libcni's cache
#   (/var/lib/cni/results/kc-n*), /var/log/containers links into $CLUSTER_DIR,
#   /var/lib/kubelet/device-plugins (if up.sh found no /var/lib/kubelet),
#   our shims' sockets under /run/containerd/s.
# Safe to run twice and after a failed up.sh.
#
# Env: CLUSTER_DIR (default /tmp/kube-npm-cluster), NODE_COUNT (default 2; nodes
#      found in $CLUSTER_DIR/n*/ or as kc-n* namespaces are taken down too),
#      KEEP_LOGS=1 keeps $CLUSTER_DIR/**.log (default: $CLUSTER_DIR is removed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=down
# shellcheck source=lib/common.sh
source "${HERE}/lib/common.sh"
[[ "$(id -u)" == 0 ]] || die "must run as root"
T_START="$(date +%s.%N)"
if [[ -d "${CLUSTER_DIR}" ]]; then CLUSTER_DIR="$(cd "${CLUSTER_DIR}" && pwd)"; fi

# Nodes: configured count, state dirs and namespaces alike.
nodes="$(
  {
    node_names
    for d in "${CLUSTER_DIR}"/n[0-9]*; do if [[ -d "${d}" ]]; then echo "kc-n${d##*/n}"; fi; done
    for f in /var/run/netns/kc-n[0-9]*; do if [[ -e "${f}" ]]; then basename "${f}"; fi; done
  } | sort -u
)"

# ---------------------------------------------------------------- nodes
phase pods
for n in ${nodes}; do
  D="${CLUSTER_DIR}/n${n#kc-n}"
  stop_pidfile "${D}/kube-proxy.pid" 10
  stop_pidfile "${D}/kubelet.pid" 10
  sock="${D}/containerd/containerd.sock"
  if [[ -S "${sock}" ]] && [[ -s "${D}/containerd.pid" ]] && alive "$(cat "${D}/containerd.pid")"; then
    ctr_=(timeout 20 ctr --address "${sock}" -n k8s.io)
    ids="$("${ctr_[@]}" tasks ls -q 2>/dev/null || true)"
    for id in ${ids}; do "${ctr_[@]}" tasks kill -a -s SIGKILL "${id}" >/dev/null 2>&1 || true; done
    # containerd's CRI removes some exited tasks itself: delete what is left.
    for _ in $(seq 1 20); do
      ids="$("${ctr_[@]}" tasks ls -q 2>/dev/null || true)"
      [[ -n "${ids}" ]] || break
      for id in ${ids}; do "${ctr_[@]}" tasks rm -f "${id}" >/dev/null 2>&1 || true; done
      sleep 0.25
    done
    for id in $("${ctr_[@]}" containers ls -q 2>/dev/null || true); do
      "${ctr_[@]}" containers rm "${id}" >/dev/null 2>&1 || true
    done
  fi
done
phase containerd
for n in ${nodes}; do
  D="${CLUSTER_DIR}/n${n#kc-n}"
  stop_pidfile "${D}/containerd.pid" 15
done

# Anything left in the cluster's cgroups (containers whose shim died, shims).
cgroup_procs() {
  local h
  for h in /sys/fs/cgroup/*/"${CGROUP_PARENT}"; do
    if [[ -d "${h}" ]]; then find "${h}" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -un
}
for _ in 1 2 3 4 5; do
  pids="$(cgroup_procs)"
  [[ -n "${pids}" ]] || break
  log "killing leftover processes in the cluster cgroups: $(tr '\n' ' ' <<<"${pids}")"
  for p in ${pids}; do kill -KILL "${p}" 2>/dev/null || true; done
  sleep 0.5
done
# Our shims (started by our containerds) that outlived them.
for n in ${nodes}; do
  sock="${CLUSTER_DIR}/n${n#kc-n}/containerd/containerd.sock"
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' 2>/dev/null <"${p}/cmdline" || true)"
    if [[ "${cmd}" == *containerd-shim* && "${cmd}" == *" -address ${sock} "* ]]; then
      log "killing leftover shim ${p#/proc/}"
      kill -KILL "${p#/proc/}" 2>/dev/null || true
    fi
  done
done
# Shim sockets: /run/containerd/s/sha256(<containerd address>/<ns>/<id>)
# (containerd 1.6 puts them there whatever its state dir). A shim removes its
# own on a clean exit; these are the ones of killed shims.
for n in ${nodes}; do
  D="${CLUSTER_DIR}/n${n#kc-n}"
  sock="${D}/containerd/containerd.sock"
  for t in "${D}"/containerd/state/io.containerd.runtime.v2.task/*/*; do
    [[ -d "${t}" ]] || continue
    ns="$(basename "$(dirname "${t}")")"
    h="$(printf '%s' "${sock}/${ns}/$(basename "${t}")" | sha256sum | cut -d' ' -f1)"
    rm -f "/run/containerd/s/${h}"
  done
done
# containerd 1.6 and ctr also make /run/containerd/{s,fifo,runc/k8s.io}:
# removed when up.sh found no /run/containerd and they are empty.
if [[ -f "${CLUSTER_DIR}/preexisting-paths" ]] && ! grep -qx /run/containerd "${CLUSTER_DIR}/preexisting-paths" &&
  [[ -d /run/containerd ]]; then
  find /run/containerd -depth -type d -empty -delete 2>/dev/null || true
fi

# cgroups, deepest first.
phase cgroups
for h in /sys/fs/cgroup/*/"${CGROUP_PARENT}"; do
  [[ -d "${h}" ]] || continue
  find "${h}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  [[ ! -d "${h}" ]] || log "WARNING: could not remove cgroup ${h}"
done

# ---------------------------------------------------------------- control plane
phase control-plane
for d in kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop_pidfile "${CLUSTER_DIR}/${d}.pid" 10
done

# ---------------------------------------------------------------- mounts
phase mounts
# Mount points under CLUSTER_DIR, deepest first (/proc/self/mounts escapes
# spaces as \040; our paths have none).
for _ in 1 2 3; do
  mps="$(awk -v d="${CLUSTER_DIR}" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r -u)"
  [[ -n "${mps}" ]] || break
  while IFS= read -r m; do
    umount "${m}" 2>/dev/null || umount -l "${m}" 2>/dev/null || log "WARNING: cannot unmount ${m}"
  done <<<"${mps}"
done

# ---------------------------------------------------------------- namespaces
phase netns
for ns in ${nodes} "${CP_NS}" "${FAB_NS}"; do
  if [[ -e "/var/run/netns/${ns}" ]]; then
    # A process still in the namespace would keep it (and its addresses) alive.
    # Not ours to kill (ours were stopped above by pid file): e.g. a kubectl
    # someone runs there. Deleting the name is safe; the namespace lives on
    # until they exit.
    for p in $(ip netns pids "${ns}" 2>/dev/null || true); do
      log "WARNING: pid ${p} ($(tr '\0' ' ' 2>/dev/null <"/proc/${p}/cmdline" | cut -c1-80)) is still in ${ns}"
    done
    ip netns del "${ns}" || log "WARNING: ip netns del ${ns} failed"
  fi
done

# ---------------------------------------------------------------- host leftovers
phase host
if [[ -s "${CLUSTER_DIR}/host-sysctls" ]]; then
  while IFS='=' read -r k v; do
    [[ -n "${k}" ]] || continue
    if [[ "$(sysctl -n "${k}")" != "${v}" ]]; then
      sysctl -qw "${k}=${v}" && log "restored ${k}=${v}"
    fi
  done <"${CLUSTER_DIR}/host-sysctls"
  rm -f "${CLUSTER_DIR}/host-sysctls"
fi
rm -f /var/lib/cni/results/kc-n[0-9]*-* 2>/dev/null || true
# containerd's loopback results (cni-loopback-<sandbox id>-lo): those that
# appeared since up.sh started.
if [[ -f "${CLUSTER_DIR}/preexisting-cni-results" ]]; then
  for f in /var/lib/cni/results/cni-loopback-*; do
    [[ -e "${f}" ]] || continue
    grep -qxF "$(basename "${f}")" "${CLUSTER_DIR}/preexisting-cni-results" && continue
    if [[ "${f}" -nt "${CLUSTER_DIR}/preexisting-cni-results" ]]; then rm -f "${f}"; fi
  done
fi
if ! grep -qx /var/lib/cni "${CLUSTER_DIR}/preexisting-paths" 2>/dev/null && [[ -d /var/lib/cni ]]; then
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
fi
if [[ -d /var/log/containers ]]; then
  for l in /var/log/containers/*; do
    [[ -L "${l}" ]] || continue
    t="$(readlink "${l}")"
    if [[ "${t}" == "${CLUSTER_DIR}/"* ]]; then rm -f "${l}"; fi
  done
  if ! grep -qx /var/log/containers "${CLUSTER_DIR}/preexisting-paths" 2>/dev/null; then
    rmdir /var/log/containers 2>/dev/null || true
  fi
fi
if [[ -f "${CLUSTER_DIR}/preexisting-paths" ]] && ! grep -qx /var/lib/kubelet "${CLUSTER_DIR}/preexisting-paths"; then
  # Only kubelet's hard-coded device-plugins dir (our kubelets' sockets).
  rm -rf /var/lib/kubelet/device-plugins
  if [[ -d /var/lib/kubelet ]]; then
    rmdir /var/lib/kubelet 2>/dev/null || log "WARNING: /var/lib/kubelet not empty; left in place"
  fi
fi

# ---------------------------------------------------------------- files
phase files
if [[ -d "${CLUSTER_DIR}" ]]; then
  if grep -q " ${CLUSTER_DIR}[/ ]" /proc/self/mounts; then
    log "WARNING: mounts remain under ${CLUSTER_DIR}; not removing it"
  elif [[ ! -e "${CLUSTER_DIR}/.kube-npm-cluster" ]]; then
    log "WARNING: ${CLUSTER_DIR} has no .kube-npm-cluster marker (not made by up.sh?); not removing it"
  elif [[ "${KEEP_LOGS:-0}" == 1 ]]; then
    find "${CLUSTER_DIR}" -mindepth 1 -depth ! -name '*.log' ! -name .kube-npm-cluster \
      \( -type d -empty -delete -o ! -type d -delete \) 2>/dev/null || true
  else
    rm -rf "${CLUSTER_DIR}"
  fi
fi
phase end
log "down in $(awk -v a="${T_START}" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
