#!/usr/bin/env bash
# Stop what up.sh started in DIR and remove its data.
#
#   hack/controlplane/down.sh DIR
#
# kube-apiserver first, then etcd: SIGTERM, then SIGKILL after
# STOP_TIMEOUT seconds (default 10). Afterwards the etcd data, keys,
# kubeconfig and pid files are removed; the *.log files stay for post-mortem
# unless PURGE=1, which removes DIR altogether.
# Exits non-zero if a process could not be stopped.
set -euo pipefail

log() { printf '[controlplane/down] %s\n' "$*" >&2; }

[[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 DIR" >&2; exit 2; }
if [[ ! -d "$1" ]]; then
  log "${1} does not exist: nothing to stop"
  exit 0
fi
DIR="$(cd "$1" && pwd)"
STOP_TIMEOUT="${STOP_TIMEOUT:-10}"

# Alive and not a zombie (a reparented child may wait for its reaper).
alive() {
  local state
  [[ -r "/proc/$1/stat" ]] || return 1
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "${state}" && "${state}" != Z && "${state}" != X ]]
}

# Is PID still the program NAME we started (guards against a reused pid)?
is_ours() {
  local exe cmd
  exe="$(readlink "/proc/$1/exe" 2>/dev/null || true)"
  [[ "$(basename "${exe% (deleted)}")" == "$2" ]] && return 0
  cmd="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true)"
  [[ "${cmd}" == *"$2"* ]]
}

rc=0
stop() { # name
  local name="$1" pidfile="${DIR}/$1.pid" pid deadline
  [[ -s "${pidfile}" ]] || return 0
  pid="$(cat "${pidfile}")"
  if ! alive "${pid}" || ! is_ours "${pid}" "${name}"; then
    rm -f "${pidfile}"
    return 0
  fi
  log "stopping ${name} (pid ${pid})"
  kill -TERM "${pid}" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "${pid}" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "${pid}"; then
    log "${name} still running after ${STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "${pid}" || break; sleep 0.1; done
  fi
  if alive "${pid}"; then
    log "ERROR: could not stop ${name} (pid ${pid})"
    rc=1
    return 0
  fi
  rm -f "${pidfile}"
}

stop kube-apiserver
stop etcd

if ((rc == 0)); then
  if [[ "${PURGE:-0}" == 1 ]]; then
    rm -rf "${DIR}"
  else
    rm -rf "${DIR}/etcd-data" "${DIR}/pki" "${DIR}/kubeconfig" "${DIR}/controlplane.env"
  fi
fi
exit "${rc}"
