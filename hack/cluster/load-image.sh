#!/usr/bin/env bash
# Import an image archive into every node's containerd (namespace k8s.io), so
# pods can use it with imagePullPolicy IfNotPresent or Never:
#   hack/cluster/load-image.sh ARCHIVE [REF]
# ARCHIVE: an OCI image layout tarball or a docker-archive (docker save,
# skopeo copy ... docker-archive:). REF (e.g. kube-npm/agent:dev): the name pods
# use. Without REF the names recorded in the archive are kept (docker-archive
# RepoTags, OCI io.containerd.image.name / org.opencontainers.image.ref.name
# annotations; a bare tag becomes import-<date>:TAG). With REF, the archive's
# (first) image is tagged REF, replacing an existing REF, and import-* names
# are dropped.
# Env: CLUSTER_DIR (default /tmp/kube-npm-cluster). Prints the refs imported.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=load-image
# shellcheck source=lib/common.sh
source "${HERE}/lib/common.sh"
[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 ARCHIVE [REF]" >&2; exit 2; }
ARCHIVE="$1"
REF="${2:-}"
[[ -s "${ARCHIVE}" ]] || die "${ARCHIVE}: no such file"
[[ -s "${CLUSTER_DIR}/cluster.env" ]] || die "${CLUSTER_DIR}/cluster.env missing: is the cluster up?"
# shellcheck disable=SC1091
source "${CLUSTER_DIR}/cluster.env"
# load_into NODE: import (and tag) on one node; its output to stderr.
load_into() {
  local n="$1" sock out tmp nm
  sock="${CLUSTER_DIR}/n${n#kc-n}/containerd/containerd.sock"
  [[ -S "${sock}" ]] || die "${sock} missing: is ${n} up?"
  local c=(ctr --address "${sock}" -n k8s.io)
  out="$("${c[@]}" images import "${ARCHIVE}" 2>&1)" || die "import into ${n} failed: ${out}"
  if [[ -n "${REF}" ]]; then
    # Names ctr gave the archive's images ("unpacking NAME (sha256:...)").
    # An OCI ref.name of just a tag becomes import-<date>:TAG: dropped below.
    local names=()
    mapfile -t names < <(sed -n 's/^unpacking \([^ ]*\) (sha256:.*/\1/p' <<<"${out}")
    if ((${#names[@]} == 0)); then
      # No name in the archive: name its index instead.
      tmp="kube-npm.local/load-image-tmp:$$"
      out="$("${c[@]}" images import --index-name "${tmp}" "${ARCHIVE}" 2>&1)" || die "import into ${n} failed: ${out}"
      names=("${tmp}")
    fi
    "${c[@]}" images tag --force "${names[0]}" "${REF}" >/dev/null || die "tagging ${names[0]} as ${REF} on ${n} failed"
    for nm in "${names[@]}"; do
      if [[ "${nm}" != "${REF}" && ( "${nm}" == import-* || "${nm}" == kube-npm.local/load-image-tmp:* ) ]]; then
        "${c[@]}" images rm "${nm}" >/dev/null 2>&1 || true
      fi
    done
  fi
  printf '%s\n' "${out}" | sed "s/^/[${n}] /" >&2
}
t0=${SECONDS}
# All nodes at once: each import is mostly one containerd unpacking layers.
pids=()
for n in ${NODES}; do
  load_into "${n}" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "${p}" || rc=1; done
((rc == 0)) || die "importing ${ARCHIVE} failed on at least one node (see above)"
log "imported ${ARCHIVE} into ${NODES} in $((SECONDS - t0))s"
[[ -z "${REF}" ]] || printf '%s\n' "${REF}"
