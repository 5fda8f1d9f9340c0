#!/usr/bin/env bash
# Run upstream's NetworkPolicy e2e specs (k8s.io/kubernetes test/e2e/network/netpol,
# the release pinned in hack/conformance/go/go.mod) against the local real
# cluster of hack/cluster (see docs in hack/conformance/README.md).
#
#   hack/conformance/run.sh [FOCUS]
#
# FOCUS is a Ginkgo regex over full spec names (default: every
# [Feature:NetworkPolicy] spec, i.e. 45 after the default SKIP). e2e.test runs
# inside the control-plane network namespace (nsenter --net) with the
# cluster's admin kubeconfig; it creates its own namespaces, agnhost pods and
# Services, and deletes them afterwards.
#
# Env knobs:
#   CLUSTER_DIR=/tmp/kube-npm-cluster  cluster state dir (cluster.env, admin.kubeconfig)
#   SMOKE=1                 run 3 fast, telling specs instead (deny-all ingress,
#                           allow from a namespace selector, deny egress by pod selector)
#   SKIP=regex              specs to leave out (default: \[Feature:SCTPConnectivity\];
#                           SCTP needs the sctp kernel module in the node namespaces)
#   PROCS=1                 >1 runs specs in parallel through the ginkgo CLI
#   REPORT_DIR=dir          JUnit and log dir (default /tmp/kube-npm-conformance/<UTC time>)
#   LOAD_IMAGE=1            import the agnhost image into every node first
#                           (hack/cluster/load-image.sh); 0 if it is there already
#   GINKGO_TIMEOUT=3h       whole-suite timeout (Ginkgo's own default is 1h)
#   VERBOSE=1               stream every spec's steps and logs (--ginkgo.v)
#   KEEP_NAMESPACES=1       keep a failed spec's namespaces for debugging
#   E2E_FLAGS="..."         extra flags for e2e.test
# Leaves behind: REPORT_DIR (junit_01.xml, e2e.log). Exit code = e2e.test's.
# The LAST stdout line is a summary: result, specs passed/failed/skipped, probe
# execs that failed for infrastructure reasons (exec_errors), duration.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../.." && pwd)"
log() { printf '[conformance/run] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

CLUSTER_DIR="${CLUSTER_DIR:-/tmp/kube-npm-cluster}"
PROCS="${PROCS:-1}"
GINKGO_TIMEOUT="${GINKGO_TIMEOUT:-3h}"
SKIP="${SKIP-\[Feature:SCTPConnectivity\]}"

# Three specs that are quick (one TCP port each) and between them show
# ingress isolation, a namespaceSelector peer and egress isolation. The
# context name "between server and client should" picks the TCP variant only.
SMOKE_FOCUS="NetworkPolicy between server and client should (support a 'default-deny-ingress' policy|enforce policy to allow traffic only from a different namespace, based on NamespaceSelector|deny egress from pods based on PodSelector) \[Feature:NetworkPolicy\]"
if [[ $# -gt 0 ]]; then
  FOCUS="$1"
elif [[ "${SMOKE:-0}" == 1 ]]; then
  FOCUS="${SMOKE_FOCUS}"
else
  FOCUS='\[Feature:NetworkPolicy\]'
fi

[[ -f "${CLUSTER_DIR}/cluster.env" ]] || die "${CLUSTER_DIR}/cluster.env is missing: bring the cluster up first (hack/cluster/up.sh)"
# Take only what we need from cluster.env, without letting it change this shell.
eval "$(
  # shellcheck disable=SC1091
  . "${CLUSTER_DIR}/cluster.env" >/dev/null
  printf 'ENV_KUBECONFIG=%q\nENV_CP_NS=%q\n' "${KUBECONFIG:-}" "${CP_NS:-}"
)"
KCFG="${ENV_KUBECONFIG:-${CLUSTER_DIR}/admin.kubeconfig}"
CP_NS="${ENV_CP_NS:-kc-cp}"
[[ -f "${KCFG}" ]] || die "kubeconfig ${KCFG} is missing"
[[ -e "/var/run/netns/${CP_NS}" ]] || die "network namespace ${CP_NS} is missing (/var/run/netns/${CP_NS})"

need="e2e.test"
((PROCS > 1)) && need+=" ginkgo"
BIN_DIR="$(ONLY="${need}" "${HERE}/build.sh" | tail -n1)"

if [[ "${LOAD_IMAGE:-1}" == 1 ]]; then
  archive="$("${HERE}/agnhost-image.sh" | tail -n1)"
  loader="${REPO}/hack/cluster/load-image.sh"
  [[ -x "${loader}" ]] || die "${loader} is missing: cannot import ${archive} into the nodes (or set LOAD_IMAGE=0)"
  log "importing $(cat "${archive}.ref") into the nodes"
  "${loader}" "${archive}" "$(cat "${archive}.ref")" >&2
fi

REPORT_DIR="${REPORT_DIR:-/tmp/kube-npm-conformance/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "${REPORT_DIR}"
REPORT_DIR="$(cd "${REPORT_DIR}" && pwd)"

# e2e.test's own flags. skeleton provider: no cloud, no SSH to nodes.
# Short node/system-pod waits: this cluster is either up or broken, and the
# defaults (30 min, 10 min) would only delay the verdict.
e2e_flags=(
  --kubeconfig="${KCFG}"
  --provider=skeleton
  --node-os-distro=debian
  --report-dir="${REPORT_DIR}"
  --e2e-output-dir="${REPORT_DIR}"
  --dump-logs-on-failure=false
  --disable-log-dump=true
  --node-schedulable-timeout=2m
  --system-pods-startup-timeout=5m
)
[[ "${KEEP_NAMESPACES:-0}" == 1 ]] && e2e_flags+=(--delete-namespace-on-failure=false)
# shellcheck disable=SC2206
[[ -n "${E2E_FLAGS:-}" ]] && e2e_flags+=(${E2E_FLAGS})

if ((PROCS > 1)); then
  ginkgo_flags=(--procs="${PROCS}" --timeout="${GINKGO_TIMEOUT}" --no-color --focus="${FOCUS}")
  [[ -n "${SKIP}" ]] && ginkgo_flags+=(--skip="${SKIP}")
  [[ "${VERBOSE:-0}" == 1 ]] && ginkgo_flags+=(-v)
  cmd=("${BIN_DIR}/ginkgo" "${ginkgo_flags[@]}" "${BIN_DIR}/e2e.test" -- "${e2e_flags[@]}")
else
  cmd=("${BIN_DIR}/e2e.test" "${e2e_flags[@]}" --ginkgo.timeout="${GINKGO_TIMEOUT}" --ginkgo.no-color --ginkgo.focus="${FOCUS}")
  [[ -n "${SKIP}" ]] && cmd+=(--ginkgo.skip="${SKIP}")
  [[ "${VERBOSE:-0}" == 1 ]] && cmd+=(--ginkgo.v)
fi

log "focus: ${FOCUS}"
log "skip:  ${SKIP:-<none>}"
log "report dir: ${REPORT_DIR}"
printf '%q ' "${cmd[@]}" >"${REPORT_DIR}/command.txt"
start=${SECONDS}
set +e
# Run from the report dir: e2e.test writes stray files into its cwd.
(cd "${REPORT_DIR}" && exec nsenter --net="/var/run/netns/${CP_NS}" -- "${cmd[@]}") 2>&1 | tee "${REPORT_DIR}/e2e.log" >&2
rc=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))

# Ginkgo's closing lines: "Ran 3 of 7391 Specs in 95.1 seconds" and
# "FAIL! -- 1 Passed | 2 Failed | 0 Pending | 7388 Skipped" (Skipped counts the
# specs the focus left out too, so it is recomputed as in-focus skips).
ran_line="$(grep -E '^Ran [0-9]+ of [0-9]+ Specs' "${REPORT_DIR}/e2e.log" | tail -n1 || true)"
sum_line="$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "${REPORT_DIR}/e2e.log" | tail -n1 || true)"
passed="$(sed -n 's/.*[^0-9]\([0-9][0-9]*\) Passed.*/\1/p' <<<" ${sum_line}")"
failed="$(sed -n 's/.*[^0-9]\([0-9][0-9]*\) Failed.*/\1/p' <<<" ${sum_line}")"
ran="$(awk '{ print $2 }' <<<"${ran_line}")"
junit="${REPORT_DIR}/junit_01.xml"
# Specs in focus that skipped themselves at run time carry a reason after
# "skipped"; the ones the focus left out carry the bare word.
skipped="?"
[[ -f "${junit}" ]] && skipped="$(grep -cE '<skipped message="skipped[^"]' "${junit}" || true)"
# A probe is an exec of /agnhost connect in the client pod, and the specs
# count ANY failed probe as "blocked": an exec that never reached the pod
# (API server or kubelet down) looks like enforcement. Count those so a run
# on a failing cluster is not mistaken for a verdict on policy.
# (The same log line with "command terminated with exit code" is a probe
# that ran and failed: a real result.)
exec_errors="$(grep 'unexpected error trying to use websockets for pod exec' "${REPORT_DIR}/e2e.log" \
  | grep -vc 'command terminated with exit code' || true)"
((exec_errors == 0)) || log "WARNING: ${exec_errors} probe execs failed to reach their pod (grep 'for pod exec' ${REPORT_DIR}/e2e.log): results are not about policy"
verdict=PASS
((rc == 0)) || verdict=FAIL
printf 'conformance: %s rc=%d ran=%s passed=%s failed=%s skipped=%s exec_errors=%s duration=%ds report=%s\n' \
  "${verdict}" "${rc}" "${ran:-?}" "${passed:-?}" "${failed:-?}" "${skipped}" "${exec_errors}" "${elapsed}" "${REPORT_DIR}"
exit "${rc}"
