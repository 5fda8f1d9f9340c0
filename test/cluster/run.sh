#!/usr/bin/env bash
# `npm run test:cluster`: kube-npm on a real local cluster, end to end (issue #11).
#   1. builds the image without a Docker engine (hack/image/build.sh: buildah, local Debian base);
#   2. builds upstream's e2e.test and agnhost from Go modules (hack/conformance/build.sh);
#   3. brings up the real cluster: control plane + 2 kubelet/containerd/kube-proxy nodes, each in its
#      own network namespace (hack/cluster/up.sh, docs/adr/0012-real-cluster.md);
#   4. loads the images into both nodes' containerd;
#   5. test/cluster/realcluster.test.ts: installs kube-npm with kubectl apply -k (config/default +
#      an image override) and runs the rollout / delete / drain checks under probes;
#   6. upstream's NetworkPolicy e2e tests against it (hack/conformance/run.sh);
#   7. tears everything down (also on failure), leaving nothing in the root namespace.
# Env:
#   SMOKE=1          step 6 runs a 3-test subset (what .ci/run uses); default: every NetworkPolicy test
#   KEEP_CLUSTER=1   leave the cluster up at the end (hack/cluster/down.sh removes it)
#   CLUSTER_DIR      the cluster's state dir (default /tmp/kube-npm-cluster)
#   KNPM_TAG         the image tag (default dev-<git short sha>)
# Exit code: the first failing step's.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CLUSTER_DIR="${CLUSTER_DIR:-/tmp/kube-npm-cluster}"
TAG="${KNPM_TAG:-dev-$(git rev-parse --short HEAD)}"
IMAGE="localhost/kube-npm:${TAG}"
IMAGE_NEXT="localhost/kube-npm:${TAG}-next"

declare -a timings=()
phase_start=0
phase() { phase_start=$SECONDS; printf '\n[test:cluster] === %s\n' "$1" >&2; }
phase_end() { timings+=("$(printf '%-34s %5d s' "$1" $((SECONDS - phase_start)))"); }
summary() {
  local rc=$?
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
    phase 'down'
    bash hack/cluster/down.sh || rc=$((rc == 0 ? 1 : rc))
    phase_end 'cluster down'
  else
    printf '[test:cluster] KEEP_CLUSTER=1: the cluster stays up; bash hack/cluster/down.sh removes it\n' >&2
  fi
  printf '\n[test:cluster] timings:\n' >&2
  printf '  %s\n' "${timings[@]}" >&2
  printf '[test:cluster] exit %d after %d s\n' "${rc}" "${SECONDS}" >&2
  exit "${rc}"
}

phase 'image (buildah, local base)'
archive="$(bash hack/image/build.sh "${TAG}" | tail -n1)"
[[ -s "${archive}" ]] || { echo "[test:cluster] hack/image/build.sh printed no archive (got '${archive}')" >&2; exit 1; }
phase_end 'image build'

phase 'upstream e2e.test + agnhost (Go modules)'
bash hack/conformance/build.sh >/dev/null
agnhost_archive="$(bash hack/conformance/agnhost-image.sh | tail -n1)"
phase_end 'e2e.test + agnhost build'

trap summary EXIT
phase 'cluster up'
bash hack/cluster/up.sh
phase_end 'cluster up'

phase 'load images'
bash hack/cluster/load-image.sh "${archive}" "${IMAGE}"
bash hack/cluster/load-image.sh "${archive}" "${IMAGE_NEXT}"
bash hack/cluster/load-image.sh "${agnhost_archive}"
phase_end 'load images'

phase 'install + real operations (test/cluster/realcluster.test.ts)'
KNPM_IMAGE="${IMAGE}" KNPM_IMAGE_NEXT="${IMAGE_NEXT}" npx mocha --timeout 0 test/cluster/realcluster.test.ts
phase_end 'install + operations'

phase "upstream NetworkPolicy e2e ($([[ "${SMOKE:-0}" == 1 ]] && echo smoke subset || echo all))"
bash hack/conformance/run.sh
phase_end 'upstream NetworkPolicy e2e'
