#!/usr/bin/env bash
# Install kube-npm through OLM on the real local cluster (hack/cluster, up):
#   1. build.sh (cached): OLM/opm binaries, the OLM, bundle and catalog images;
#   2. load the images into every node (hack/cluster/load-image.sh): OLM's,
#      the catalog's, the bundle (by tag and by digest) and kube-npm's own
#      image, retagged as the image the bundle's CSV names;
#   3. OLM: its CRDs (github.com/operator-framework/api), RBAC, OLMConfig,
#      default OperatorGroups, olm-operator and catalog-operator (manifests/);
#   4. the catalog: `opm serve` Deployment + Service, a grpc CatalogSource
#      pointing at the Service's ClusterIP, waited for READY;
#   5. Namespace kube-npm-system + global OperatorGroup + Subscription to
#      kube-npm channel alpha; waits for the CSV to be Succeeded, the operator
#      Deployment Available, and the agent DaemonSet the operator creates
#      (--manage-agent-daemonset) to have a Ready pod on every node.
# Prints each phase's time; on failure exits 1 after printing the failing
# object's status, events and OLM's log tails.
#
# Env: CLUSTER_DIR (default /tmp/kube-npm-cluster); KUBE_NPM_IMAGE_ARCHIVE
# (default: newest ~/.cache/kube-npm/image/out/kube-npm-*.tar); TIMEOUT
# (seconds per wait, default 300).
# Leaves installed: namespaces olm, operators, kube-npm-system and what OLM and
# the operator created in them (the cluster's down.sh removes all of it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
CLUSTER_DIR="${CLUSTER_DIR:-/tmp/kube-npm-cluster}"
TIMEOUT="${TIMEOUT:-300}"
NS=kube-npm-system

log() { printf '[olm-cluster/run %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -s "${CLUSTER_DIR}/cluster.env" ]] || die "${CLUSTER_DIR}/cluster.env missing: start the cluster (bash hack/cluster/up.sh)"
# shellcheck disable=SC1091
source "${CLUSTER_DIR}/cluster.env"
export CLUSTER_DIR
k() { bash "${ROOT}/hack/cluster/kubectl.sh" "$@"; }
k get nodes >/dev/null || die "the API server does not answer (is the cluster up?)"
node_count="$(k get nodes --no-headers | wc -l)"

T0=${SECONDS}
PHASE_T=${SECONDS}
FIG=()
phase_done() { FIG+=("$1: $((SECONDS - PHASE_T)) s"); log "$1 done in $((SECONDS - PHASE_T)) s"; PHASE_T=${SECONDS}; }

# Diagnostics for a failed wait: the object, events of its namespace, and
# the logs of OLM and the operator.
dump() {
  local ns="$1" what="$2"
  log "---- ${what} in ${ns}:"
  k -n "${ns}" get "${what}" -o yaml 2>&1 | sed -n '/^  status:\|^status:/,$p' | head -80 >&2 || true
  log "---- pods (all namespaces):"
  k get pods -A -o wide >&2 || true
  log "---- events in ${ns}:"
  k -n "${ns}" get events --sort-by=.lastTimestamp 2>&1 | tail -25 >&2 || true
  for d in olm-operator catalog-operator; do
    log "---- olm/${d} log tail:"
    k -n olm logs "deploy/${d}" --tail=25 >&2 2>&1 || true
  done
  log "---- ${NS} operator log tail:"
  k -n "${NS}" logs deploy/kube-npm-operator --tail=25 >&2 2>&1 || true
}
fail() { # NS WHAT MESSAGE
  dump "$1" "$2"
  die "$3"
}
# wait_for DESC NS WHAT CMD...: runs CMD (a function: re-evaluated each time)
# every 2 s until it succeeds, up to TIMEOUT.
wait_for() {
  local desc="$1" ns="$2" what="$3" t=${SECONDS}
  shift 3
  until "$@"; do
    ((SECONDS - t < TIMEOUT)) || fail "${ns}" "${what}" "timed out after ${TIMEOUT}s waiting for ${desc}"
    sleep 2
  done
}
jp() { k -n "$1" get "$2" -o "jsonpath=$3" 2>/dev/null || true; }

# 1. build (cached)
CACHE="$(bash "${HERE}/build.sh" | tail -n1)"
# shellcheck disable=SC1091
source "${CACHE}/images/env"
phase_done "build.sh (cached unless sources changed)"

# 2. images into the nodes
csv_image="$(awk '$1 == "image:" { print $2; exit }' "${ROOT}/config/olm/manifests/kube-npm.clusterserviceversion.yaml")"
[[ -n "${csv_image}" ]] || die "no image: in the CSV"
# shellcheck disable=SC2012 # newest by mtime; the names are ours
archive="${KUBE_NPM_IMAGE_ARCHIVE:-$(ls -t "${HOME}"/.cache/kube-npm/image/out/kube-npm-*.tar 2>/dev/null | head -n1 || true)}"
[[ -s "${archive}" ]] || die "no kube-npm image archive (set KUBE_NPM_IMAGE_ARCHIVE; the image build writes ~/.cache/kube-npm/image/out/kube-npm-*.tar)"
L="${ROOT}/hack/cluster/load-image.sh"
# build.sh's archives carry their full names (no REF: see oci_image there).
bash "${L}" "${CACHE}/images/olm.tar" >/dev/null
bash "${L}" "${CACHE}/images/catalog.tar" >/dev/null
bash "${L}" "${CACHE}/images/bundle.tar" >/dev/null
# The unpack Job names the bundle by digest (from the catalog): a second name.
bash "${L}" "${CACHE}/images/bundle.tar" "${BUNDLE_REF}" >/dev/null
log "kube-npm image ${archive} as ${csv_image}"
bash "${L}" "${archive}" "${csv_image}" >/dev/null
phase_done "load images (olm, catalog, bundle, kube-npm) into ${node_count} nodes"

# 3. OLM
subst() {
  sed -e "s#__OLM_IMAGE__#${OLM_IMAGE}#g" -e "s#__CATALOG_IMAGE__#${CATALOG_IMAGE}#g" \
    -e "s#__CATALOG_ADDRESS__#${CATALOG_ADDRESS:-}#g" "$1"
}
k apply -f "${HERE}/manifests/00-olm-namespaces.yaml" >/dev/null
# Server-side: the CSV CRD is too large for the last-applied annotation.
for f in "${CACHE}"/crds/*.yaml; do
  k apply --server-side --force-conflicts -f - <"${f}" >/dev/null || die "applying OLM CRD ${f} failed"
done
k wait --for=condition=Established --timeout="${TIMEOUT}s" crd --all >/dev/null || die "OLM's CRDs not Established"
k apply -f "${HERE}/manifests/10-olm-rbac.yaml" >/dev/null
k apply -f "${HERE}/manifests/30-olm-config.yaml" >/dev/null
subst "${HERE}/manifests/20-olm-deployments.yaml" | k apply -f - >/dev/null
for d in olm-operator catalog-operator; do
  k -n olm rollout status "deploy/${d}" --timeout="${TIMEOUT}s" >&2 || fail olm "deploy/${d}" "OLM's ${d} did not become available"
done
phase_done "OLM install (CRDs, RBAC, olm-operator, catalog-operator Available)"

# 4. catalog
subst "${HERE}/manifests/40-kube-npm-catalog.yaml" | k apply -f - >/dev/null
k -n olm rollout status deploy/kube-npm-catalog --timeout="${TIMEOUT}s" >&2 || fail olm deploy/kube-npm-catalog "the catalog (opm serve) did not become available"
CATALOG_ADDRESS="$(jp olm svc/kube-npm-catalog '{.spec.clusterIP}'):50051"
subst "${HERE}/manifests/41-kube-npm-catalogsource.yaml" | k apply -f - >/dev/null
catalog_ready() { [[ "$(jp olm catalogsource/kube-npm-catalog '{.status.connectionState.lastObservedState}')" == READY ]]; }
wait_for "CatalogSource kube-npm-catalog READY" olm catalogsource/kube-npm-catalog catalog_ready
phase_done "catalog (opm serve) + CatalogSource READY at ${CATALOG_ADDRESS}"

# 5. subscription -> CSV -> operator -> agent DaemonSet
k apply -f "${HERE}/manifests/50-kube-npm-subscription.yaml" >/dev/null
sub_installed() { [[ -n "$(jp "${NS}" subscription/kube-npm '{.status.installedCSV}')" ]]; }
wait_for "Subscription kube-npm to name its installed CSV" "${NS}" subscription/kube-npm sub_installed
csv="$(jp "${NS}" subscription/kube-npm '{.status.installedCSV}')"
phase_done "Subscription resolved, InstallPlan applied (CSV ${csv})"
csv_phase() { jp "${NS}" "csv/${csv}" '{.status.phase}'; }
csv_settled() { local p; p="$(csv_phase)"; [[ "${p}" == Succeeded || "${p}" == Failed ]]; }
wait_for "CSV ${csv} Succeeded" "${NS}" "csv/${csv}" csv_settled
[[ "$(csv_phase)" == Succeeded ]] || fail "${NS}" "csv/${csv}" "CSV ${csv} Failed"
k -n "${NS}" wait --for=condition=Available --timeout="${TIMEOUT}s" deploy/kube-npm-operator >/dev/null ||
  fail "${NS}" deploy/kube-npm-operator "the operator Deployment is not Available"
phase_done "CSV Succeeded, operator Deployment Available"

ds_ready() {
  local want ready
  want="$(jp "${NS}" ds/kube-npm-agent '{.status.desiredNumberScheduled}')"
  ready="$(jp "${NS}" ds/kube-npm-agent '{.status.numberReady}')"
  [[ -n "${want}" && "${want}" == "${node_count}" && "${ready}" == "${want}" ]]
}
wait_for "agent DaemonSet kube-npm-agent Ready on ${node_count} nodes" "${NS}" ds/kube-npm-agent ds_ready
phase_done "agent DaemonSet (created by the operator) Ready on ${node_count} nodes"

log "---- result"
k -n "${NS}" get csv,deploy,ds,pods -o wide >&2
k -n olm get catalogsource,pods -o wide >&2
for f in "${FIG[@]}"; do log "  ${f}"; done
log "OK: kube-npm installed through OLM ${OLM_VERSION} in $((SECONDS - T0)) s"
