# shellcheck shell=bash disable=SC2034
# Shared settings and helpers of hack/cluster/*.sh (sourced, not run).
# Layout of the cluster (see docs/adr/0012-real-cluster.md):
#   netns kc-fab  bridge br0, the underlay switch (no address)
#   netns kc-cp   192.168.250.10: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
#   netns kc-nK   192.168.250.K (K=1..NODE_COUNT): containerd, kubelet, kube-proxy; pods 10.244.K.0/24
# Everything on disk lives under $CLUSTER_DIR, except the few paths kubelet,
# containerd and libcni hard-code (listed in down.sh, which removes them).

CLUSTER_DIR="${CLUSTER_DIR:-/tmp/kube-npm-cluster}"
NODE_COUNT="${NODE_COUNT:-2}"
CP_NS=kc-cp
FAB_NS=kc-fab
CP_IP=192.168.250.10
UNDERLAY_PREFIX=192.168.250
POD_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
PAUSE_REF=registry.k8s.io/pause:3.10.1
# The cgroup (in every hierarchy) under which node K's kubelet puts its pods.
CGROUP_PARENT=kube-npm-cluster

node_names() { local k; for ((k = 1; k <= NODE_COUNT; k++)); do printf 'kc-n%d\n' "${k}"; done; }
node_ip() { printf '%s.%s\n' "${UNDERLAY_PREFIX}" "${1#kc-n}"; }
node_pod_cidr() { printf '10.244.%s.0/24\n' "${1#kc-n}"; }

log() { printf '[cluster/%s %s] %s\n' "${LOG_TAG:-?}" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run a command in a network namespace only (not a new mount namespace like
# `ip netns exec`, which remounts /sys and hides the cgroup mounts from runc).
in_ns() { local ns="$1"; shift; nsenter --net="/var/run/netns/${ns}" -- "$@"; }

# Alive and not a zombie.
alive() {
  local state
  [[ -r "/proc/$1/stat" ]] || return 1
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "${state}" && "${state}" != Z && "${state}" != X ]]
}

# start_daemon NAME NS LOGFILE PIDFILE CMD...: start CMD detached (own session)
# in network namespace NS, stdout+stderr to LOGFILE, its pid in PIDFILE.
start_daemon() {
  local name="$1" ns="$2" logf="$3" pidf="$4"
  shift 4
  # The pid written is the daemon's own: bash execs nsenter, which execs CMD.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "${pidf}" \
    nsenter --net="/var/run/netns/${ns}" -- "$@" </dev/null >>"${logf}" 2>&1 &
  local i
  for i in $(seq 1 50); do [[ -s "${pidf}" ]] && break; sleep 0.1; done
  [[ -s "${pidf}" ]] || die "${name}: no pid file ${pidf}"
  log "started ${name} (pid $(cat "${pidf}")) in ${ns}, log ${logf}"
}

# stop_pidfile PIDFILE [TIMEOUT]: SIGTERM, then SIGKILL after TIMEOUT s.
stop_pidfile() {
  local pidf="$1" t="${2:-10}" pid i
  [[ -s "${pidf}" ]] || { rm -f "${pidf}"; return 0; }
  pid="$(cat "${pidf}")"
  if alive "${pid}"; then
    kill -TERM "${pid}" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do alive "${pid}" || break; sleep 0.1; done
    if alive "${pid}"; then kill -KILL "${pid}" 2>/dev/null || true; sleep 0.2; fi
  fi
  rm -f "${pidf}"
}

# Phase timer: phase NAME starts a phase (ending the previous one).
PHASE_NAME=""
PHASE_T0=0
phase() {
  local now
  now="$(date +%s.%N)"
  if [[ -n "${PHASE_NAME}" ]]; then
    log "phase ${PHASE_NAME}: $(awk -v a="${PHASE_T0}" -v b="${now}" 'BEGIN{printf "%.1f", b-a}')s"
  fi
  PHASE_NAME="$1"
  PHASE_T0="${now}"
}
