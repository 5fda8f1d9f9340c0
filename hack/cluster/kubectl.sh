#!/usr/bin/env bash
# kubectl against the local cluster (hack/cluster/up.sh), run in the
# control-plane network namespace where https://192.168.250.10:6443 is reachable:
#   hack/cluster/kubectl.sh get nodes -o wide
# Env: CLUSTER_DIR (default /tmp/kube-npm-cluster).
set -euo pipefail
CLUSTER_DIR="${CLUSTER_DIR:-/tmp/kube-npm-cluster}"
[[ -s "${CLUSTER_DIR}/cluster.env" ]] || { echo "kubectl.sh: ${CLUSTER_DIR}/cluster.env missing: is the cluster up (hack/cluster/up.sh)?" >&2; exit 1; }
# shellcheck disable=SC1091
source "${CLUSTER_DIR}/cluster.env"
exec nsenter --net="/var/run/netns/${CP_NS}" -- "${KUBECTL}" --kubeconfig "${KUBECONFIG}" "$@"
