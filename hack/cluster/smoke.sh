#!/usr/bin/env bash
# Check a running local cluster (hack/cluster/up.sh) end to end, probing only
# from inside pods (kubectl exec) and pod network namespaces:
#   1. an httpd pod pinned to each node (kube-npm.local/httpd:1) becomes Ready;
#   2. each pod reaches the other node's pod over the underlay (real pod IPs);
#   3. a ClusterIP Service to the pod on the first node answers from the pod on
#      the last node (kube-proxy's DNAT);
#   4. the pod has a ServiceAccount token and kube-root-ca.crt, and an
#      in-cluster client reaches https://10.96.0.1:443 with them (verified TLS);
#   5. a privileged hostNetwork pod (as a node agent runs) starts on the first
#      node and connects to 10.96.0.1:443 from the node's network namespace.
# Leaves nothing behind: namespace kc-smoke is deleted at the end (KEEP=1 keeps it).
# Env: CLUSTER_DIR (default /tmp/kube-npm-cluster), TIMEOUT (default 90 s).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=smoke
# shellcheck source=lib/common.sh
source "${HERE}/lib/common.sh"
[[ -s "${CLUSTER_DIR}/cluster.env" ]] || die "${CLUSTER_DIR}/cluster.env missing: is the cluster up?"
# shellcheck disable=SC1091
source "${CLUSTER_DIR}/cluster.env"
TIMEOUT="${TIMEOUT:-90}"
kc() { nsenter --net="/var/run/netns/${CP_NS}" -- "${KUBECTL}" --kubeconfig "${KUBECONFIG}" "$@"; }
NS=kc-smoke
read -r -a nodes <<<"${NODES}"
first="${nodes[0]}"
last="${nodes[${#nodes[@]} - 1]}"
T0=${SECONDS}
fails=0
passes=0
check() { # check DESCRIPTION CMD...
  local d="$1"
  shift
  if "$@"; then log "ok: ${d}"; passes=$((passes + 1)); else log "FAIL: ${d}"; fails=$((fails + 1)); fi
}
cleanup() { [[ "${KEEP:-0}" == 1 ]] || kc delete namespace "${NS}" --wait=true --timeout=60s >/dev/null 2>&1 || true; }
trap cleanup EXIT

kc create namespace "${NS}" >/dev/null 2>&1 || true
for n in "${nodes[@]}"; do
  kc -n "${NS}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: web-${n}
  labels: {app: web-${n}}
spec:
  nodeName: ${n}
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: ${TEST_IMAGE}
    imagePullPolicy: Never
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
EOF
done
kc -n "${NS}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: hostnet-${first}
spec:
  nodeName: ${first}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: ${TEST_IMAGE}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    securityContext: {privileged: true}
EOF
kc -n "${NS}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: web-${first}
spec:
  selector: {app: web-${first}}
  ports: [{port: 80, targetPort: 8080}]
EOF
kc -n "${NS}" wait --for=condition=Ready --timeout="${TIMEOUT}s" pod --all >/dev/null ||
  { kc -n "${NS}" describe pods >&2; die "pods not Ready after ${TIMEOUT}s"; }
log "pods Ready after $((SECONDS - T0))s"
kc -n "${NS}" get pods -o wide >&2

ip_of() { kc -n "${NS}" get pod "web-$1" -o 'jsonpath={.status.podIP}'; }
fetch() { # fetch FROM_NODE URL: GET from inside the pod on FROM_NODE
  # Not `wget -T`: Debian's busybox-static 1.35 wget segfaults with -T.
  kc -n "${NS}" exec "web-$1" -- timeout 5 wget -q -O - "$2" 2>&1
}
for n in "${nodes[@]}"; do
  for m in "${nodes[@]}"; do
    [[ "${m}" == "${n}" ]] && continue
    check "pod on ${n} -> pod on ${m} ($(ip_of "${m}"):8080)" \
      grep -q 'kube-npm httpd' <<<"$(fetch "${n}" "http://$(ip_of "${m}"):8080/")"
  done
done
svc_ip="$(kc -n "${NS}" get service "web-${first}" -o 'jsonpath={.spec.clusterIP}')"
# kube-proxy programs the Service once its EndpointSlice exists: a few tries.
svc_ok() {
  local i
  for i in $(seq 1 20); do
    grep -q 'kube-npm httpd' <<<"$(fetch "${last}" "http://${svc_ip}:80/")" && return 0
    sleep 0.5
  done
  return 1
}
check "pod on ${last} -> Service web-${first} (${svc_ip}:80)" svc_ok

SA=/var/run/secrets/kubernetes.io/serviceaccount
check "ServiceAccount token, ca.crt and namespace mounted in the pod" \
  kc -n "${NS}" exec "web-${last}" -- sh -c "test -s ${SA}/token && test -s ${SA}/ca.crt && test \"\$(cat ${SA}/namespace)\" = ${NS}"
# An in-cluster client: from the pod's network namespace (entered from the
# host, as the pod's own busybox cannot verify TLS), curl verifies the
# apiserver with the pod's ca.crt and authenticates with the pod's token.
pod_uid="$(kc -n "${NS}" get pod "web-${last}" -o 'jsonpath={.metadata.uid}')"
sa_dir="$(find "${CLUSTER_DIR}/n${last#kc-n}/kubelet/pods/${pod_uid}/volumes/kubernetes.io~projected" -maxdepth 1 -mindepth 1 -type d | head -n1)"
netns_of_pod() {
  # The httpd process (pid 1 of the container) is in the pod's network namespace.
  local p
  for p in $(cat /sys/fs/cgroup/pids/"${CGROUP_PARENT}/${last}"/kubepods*/*pod"${pod_uid}"*/*/cgroup.procs \
    /sys/fs/cgroup/pids/"${CGROUP_PARENT}/${last}"/kubepods*/*/*pod"${pod_uid}"*/*/cgroup.procs 2>/dev/null); do
    if [[ "$(tr '\0' ' ' <"/proc/${p}/cmdline" 2>/dev/null)" == *httpd* ]]; then echo "/proc/${p}/ns/net"; return 0; fi
  done
  return 1
}
api_ok() {
  local netns out
  netns="$(netns_of_pod)" || { log "cannot find the pod's network namespace"; return 1; }
  out="$(nsenter --net="${netns}" -- curl -sS -m 5 --cacert "${sa_dir}/ca.crt" \
    -H "Authorization: Bearer $(cat "${sa_dir}/token")" \
    "https://${KUBERNETES_SVC_IP}:443/apis/authentication.k8s.io/v1/selfsubjectreviews" \
    -X POST -H 'Content-Type: application/json' \
    -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' 2>&1)"
  grep -q "system:serviceaccount:${NS}:default" <<<"${out}" || { printf '%s\n' "${out}" >&2; return 1; }
}
check "in-cluster client in pod on ${last} -> https://${KUBERNETES_SVC_IP}:443 as system:serviceaccount:${NS}:default" api_ok
hostnet_ok() {
  kc -n "${NS}" exec "hostnet-${first}" -- sh -c 'echo | timeout 5 nc 10.96.0.1 443' >/dev/null 2>&1
}
check "privileged hostNetwork pod on ${first} -> 10.96.0.1:443 (TCP)" hostnet_ok

log "smoke: ${passes} passed, ${fails} failed in $((SECONDS - T0))s"
if ((fails == 0)); then log "smoke: all checks passed"; else die "smoke: ${fails} check(s) failed"; fi
