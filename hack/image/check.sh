#!/usr/bin/env bash
# Check an already built kube-npm image (hack/image/build.sh):
#   1. its CLI runs (usage text) and `kube-npm translate` works inside it;
#   2. `kube-npm agent --once` inside the container drives the SAME iptables backend as the network
#      namespace it runs in: two fresh namespaces, one seeded with a rule through iptables-legacy,
#      one through iptables-nft; the image's agent runs in each (podman --network ns:..., only
#      NET_ADMIN + NET_RAW, as the DaemonSet), and the host's iptables-legacy-save /
#      iptables-nft-save inside each namespace must show kube-npm's KNPM-* chains in the seeded
#      backend and not in the other. Then `agent --cleanup` in the container must remove them.
#
#   3. with ARCHIVE=path (build.sh's last line): `ctr -n k8s.io images import` loads it under the
#      image's name in a throwaway containerd, and `ctr run` starts it.
#
#   hack/image/check.sh [IMAGE]    IMAGE defaults to localhost/kube-npm:dev-<git short sha>
#
# Env knobs: ARCHIVE (above); AGENT_ARGS (more args for agent --once: AGENT_ARGS="--backend nft"
# must make the legacy case fail, which shows the check can fail); STORAGE_DRIVER (as build.sh; default: containers-storage's own).
# Needs root, podman (installed from Debian when missing), iptables (both backends), iproute2.
# Leaves nothing behind: its namespaces (knpm-img-*-PID) and temp dir are removed on exit.
# Exits non-zero when a backend does not match or a step fails; progress goes to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../.." && pwd)"
log() { printf '[image/check] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
# set -e stops silently otherwise: name the command that failed.
trap 'die "unexpected failure at line ${LINENO}: ${BASH_COMMAND}"' ERR

[[ "$(id -u)" == 0 ]] || die "needs root (network namespaces, podman)"
SD=(${STORAGE_DRIVER:+--storage-driver "${STORAGE_DRIVER}"})
IMAGE="${1:-localhost/kube-npm:dev-$(git -C "${REPO}" rev-parse --short HEAD)}"
for bin in iptables-legacy-save iptables-nft-save ip; do
  command -v "${bin}" >/dev/null || die "${bin} is missing (apt-get install iptables iproute2)"
done
if ! command -v podman >/dev/null; then
  log "installing podman from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >&2 || die "apt-get install podman failed"
fi
# Same storage as buildah, so the built image is visible. No systemd and a hybrid cgroup v1 setup
# here: cgroupfs, and runc (crun refuses hybrid mode: "cgroups in hybrid mode not supported").
PODMAN=(podman "${SD[@]}" --cgroup-manager cgroupfs --runtime runc)
# Podman's default rlimits (nofile 1048576, nproc 4194304) are above this machine's hard limits and
# root here lacks CAP_SYS_RESOURCE ("setrlimit RLIMIT_NOFILE: Operation not permitted"): ask for
# the hard nofile limit and a modest nproc (even nproc = the hard limit was refused).
nproc_hard="$(ulimit -Hu)"
[[ "${nproc_hard}" == unlimited || "${nproc_hard}" -gt 8192 ]] && nproc_hard=8192
RUN=(run --rm --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=${nproc_hard}:${nproc_hard}")
"${PODMAN[@]}" image exists "${IMAGE}" || die "no image ${IMAGE} in containers-storage (run hack/image/build.sh first)"

TMP="$(mktemp -d /tmp/knpm-img-check.XXXXXX)"
NAMESPACES=()
cleanup() {
  local ns
  for ns in "${NAMESPACES[@]}"; do ip netns delete "${ns}" 2>/dev/null || true; done
  rm -rf "${TMP}"
}
trap cleanup EXIT

# 1. The CLI: usage text, then translate a one-policy cluster (deny all ingress to x/a).
# Without a command the CLI prints its usage and exits 2: the text is what counts.
usage="$("${PODMAN[@]}" "${RUN[@]}" --network none "${IMAGE}" 2>&1 || true)"
grep -q '^kube-npm: Kubernetes NetworkPolicy manager' <<<"${usage}" || { printf '%s\n' "${usage}" >&2; die "the image's CLI does not print its usage"; }
log "CLI runs ($("${PODMAN[@]}" "${RUN[@]}" --network none --entrypoint node "${IMAGE}" --version), uid $("${PODMAN[@]}" "${RUN[@]}" --network none --entrypoint id "${IMAGE}" -u))"
cat >"${TMP}/cluster.yaml" <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.244.1.10}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {matchLabels: {app: a}}, policyTypes: [Ingress]}
EOF
chmod 0755 "${TMP}" && chmod 0644 "${TMP}/cluster.yaml"
"${PODMAN[@]}" "${RUN[@]}" --network none -v "${TMP}:/in:ro" "${IMAGE}" translate -f /in/cluster.yaml -o json \
  >"${TMP}/list.json" 2>"${TMP}/translate.err" || { cat "${TMP}/translate.err" >&2; die "translate in the image failed"; }
grep -q '"kind": "NpmRuleSet"' "${TMP}/list.json" || die "translate in the image wrote no NpmRuleSet"

# 2. Backend choice, once per backend.
knpm_chains() { # netns backend -> number of KNPM-* chains that backend's filter table holds
  ip netns exec "$1" "iptables-$2-save" -t filter 2>/dev/null | grep -c '^:KNPM-' || true
}
agent() { # netns args... (as the DaemonSet runs it: root, only NET_ADMIN + NET_RAW)
  local ns="$1"
  shift
  "${PODMAN[@]}" "${RUN[@]}" --network "ns:/var/run/netns/${ns}" --user 0:0 \
    --cap-drop all --cap-add NET_ADMIN,NET_RAW -v "${TMP}:/in:ro" "${IMAGE}" agent "$@"
}
fail=0
for backend in legacy nft; do
  other=nft
  [[ "${backend}" == nft ]] && other=legacy
  ns="knpm-img-${backend}-$$"
  ip netns add "${ns}"
  NAMESPACES+=("${ns}")
  # A node whose other components use ${backend}: one rule there (kube-npm counts rules when no
  # kubelet hint chain exists; an empty chain alone is no rule).
  ip netns exec "${ns}" "iptables-${backend}" -N SEED
  ip netns exec "${ns}" "iptables-${backend}" -A SEED -j RETURN
  # shellcheck disable=SC2086 # AGENT_ARGS: words on purpose
  agent "${ns}" --once --node-name n1 -f /in/list.json ${AGENT_ARGS:-} >"${TMP}/agent-${backend}.log" 2>&1 \
    || { cat "${TMP}/agent-${backend}.log" >&2; die "agent --once in ${ns} failed"; }
  said="$(grep -o 'backend [a-z]*: .*' "${TMP}/agent-${backend}.log" | head -n1 || true)"
  mine="$(knpm_chains "${ns}" "${backend}")"
  theirs="$(knpm_chains "${ns}" "${other}")"
  if ((mine > 0 && theirs == 0)); then
    log "OK   seeded ${backend}: ${mine} KNPM-* chains in iptables-${backend}, none in iptables-${other} (agent: ${said:-no log line})"
  else
    log "FAIL seeded ${backend}: ${mine} KNPM-* chains in iptables-${backend}, ${theirs} in iptables-${other} (agent: ${said:-no log line})"
    sed 's/^/  agent: /' "${TMP}/agent-${backend}.log" >&2
    fail=1
    continue
  fi
  agent "${ns}" --cleanup >"${TMP}/cleanup-${backend}.log" 2>&1 \
    || { cat "${TMP}/cleanup-${backend}.log" >&2; die "agent --cleanup in ${ns} failed"; }
  left="$(knpm_chains "${ns}" "${backend}")"
  if ((left == 0)); then
    log "OK   agent --cleanup removed them"
  else
    log "FAIL agent --cleanup left ${left} KNPM-* chains in iptables-${backend}"
    fail=1
  fi
done
((fail == 0)) || die "the image's agent did not follow the namespace's iptables backend"

# 3. (ARCHIVE=path) The archive loads into containerd under its name and runs there: a throwaway
#    containerd with its own root, state and socket in the temp dir, no CRI plugin, stopped and
#    removed on exit (Debian's containerd package: 1.6.20 on bookworm, as on the nodes).
if [[ -n "${ARCHIVE:-}" ]]; then
  command -v containerd >/dev/null || die "ARCHIVE given but containerd is missing (apt-get install containerd)"
  [[ -r "${ARCHIVE}" ]] || die "ARCHIVE ${ARCHIVE} is not readable"
  cdir="${TMP}/containerd"
  mkdir -p "${cdir}"
  printf '%s\n' 'version = 2' "root = \"${cdir}/root\"" "state = \"${cdir}/state\"" \
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]' \
    '[grpc]' "  address = \"${cdir}/sock\"" '[ttrpc]' "  address = \"${cdir}/sock.ttrpc\"" \
    '[debug]' "  address = \"${cdir}/debug.sock\"" '[metrics]' '  address = ""' >"${cdir}/config.toml"
  containerd --config "${cdir}/config.toml" >"${cdir}/log" 2>&1 &
  CONTAINERD_PID=$!
  stop_containerd() {
    kill "${CONTAINERD_PID}" 2>/dev/null || true
    wait "${CONTAINERD_PID}" 2>/dev/null || true
    umount -R "${cdir}/root" 2>/dev/null || true
    cleanup
  }
  trap stop_containerd EXIT
  for _ in $(seq 50); do [[ -S "${cdir}/sock" ]] && break; sleep 0.2; done
  [[ -S "${cdir}/sock" ]] || { tail -n 20 "${cdir}/log" >&2; die "the throwaway containerd did not start"; }
  CTR=(ctr -a "${cdir}/sock" -n k8s.io)
  "${CTR[@]}" images import "${ARCHIVE}" >&2 || die "ctr images import ${ARCHIVE} failed"
  "${CTR[@]}" images ls -q | grep -qx "${IMAGE}" \
    || die "ctr imported ${ARCHIVE} but not as ${IMAGE}: $("${CTR[@]}" images ls -q | tr '\n' ' ')"
  # ctr run gives the container a new network namespace holding only lo: nothing is configured.
  v="$("${CTR[@]}" run --rm "${IMAGE}" "knpm-img-check-$$" node --version)" || die "ctr run ${IMAGE} failed"
  log "OK   ctr $(ctr --version | awk '{print $3}') imported ${ARCHIVE##*/} as ${IMAGE}; node ${v} runs in it"
fi
log "PASS ${IMAGE}"
