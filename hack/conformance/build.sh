#!/usr/bin/env bash
# Build (once) upstream's e2e test binary `e2e.test` and the `agnhost` test
# image binary from the k8s.io/kubernetes release pinned in
# hack/conformance/go/go.mod (the same release as hack/controlplane/go/go.mod).
#
#   e2e.test = go test -c k8s.io/kubernetes/test/e2e   (TestMain in e2e_test.go;
#              run it directly with --ginkgo.focus, no ginkgo CLI needed)
#   agnhost  = go build k8s.io/kubernetes/test/images/agnhost (static, CGO off)
#   ginkgo   = the Ginkgo CLI at the version go.mod requires; only needed to
#              run specs in parallel (ginkgo -p --procs=N e2e.test -- ...)
#
# Binaries are cached under
#   ${KUBE_NPM_CACHE:-$HOME/.cache/kube-npm}/conformance/<k8s version>/bin/
# with one stamp file per binary, so a second run only checks stamps.
#
# Env knobs:
#   ONLY="agnhost e2e.test"       build just these (default: agnhost e2e.test ginkgo)
#   KUBE_NPM_CACHE=/dir           cache root
#
# All progress goes to stderr; the LAST line on stdout is the bin dir, which
# holds e2e.test, agnhost and ginkgo. Leaves nothing behind but the cache.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/k8s-build.sh
source "${HERE}/../lib/k8s-build.sh"
GOMOD_DIR="${HERE}/go"
# Bump when the way binaries are built changes, to invalidate caches.
BUILD_REV=1

log() { printf '[conformance/build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "${GOMOD_DIR}/go.mod")"
[[ -n "${K8S_VERSION}" ]] || die "cannot read the pinned k8s.io/kubernetes version from ${GOMOD_DIR}/go.mod"

VERSION_DIR="${KUBE_NPM_CACHE:-${HOME}/.cache/kube-npm}/conformance/${K8S_VERSION}"
BIN_DIR="${VERSION_DIR}/bin"
ALL=(agnhost ginkgo e2e.test)
read -r -a WANT <<<"${ONLY:-${ALL[*]}}"
for b in "${WANT[@]}"; do
  [[ " ${ALL[*]} " == *" ${b} "* ]] || die "ONLY=${ONLY}: unknown binary ${b} (known: ${ALL[*]})"
done

# Key of a build: sources + build recipe. A stamp holding this key next to a
# binary means the binary is complete and current.
KEY="$({ cat "${GOMOD_DIR}/go.mod" "${GOMOD_DIR}/go.sum"; echo "rev=${BUILD_REV}"; } | sha256sum | cut -c1-16)"
is_current() { [[ -x "${BIN_DIR}/$1" && -f "${BIN_DIR}/.$1.stamp" && "$(cat "${BIN_DIR}/.$1.stamp")" == "${KEY}" ]]; }

need=()
for b in "${WANT[@]}"; do is_current "${b}" || need+=("${b}"); done

if ((${#need[@]} > 0)); then
  command -v go >/dev/null || die "go is required to build ${need[*]}"
  mkdir -p "${BIN_DIR}"
  build_lock "${VERSION_DIR}"
fi

if ((${#need[@]} > 0)); then
  tmp="$(mktemp -d "${VERSION_DIR}/build.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
  k8s_x="$(k8s_version_ldflags "${K8S_VERSION}")"
  # agnhost runs in a minimal image without libc: it must be static.
  export CGO_ENABLED=0
  # go.sum is complete and committed: readonly keeps the tree untouched and
  # needs no checksum database (sum.golang.org may be unreachable).
  export GOFLAGS="${GOFLAGS:-} -mod=readonly"
  export GONOSUMDB="${GONOSUMDB:-*}" GOSUMDB="${GOSUMDB:-off}"
  cd "${GOMOD_DIR}"
  for b in "${need[@]}"; do
    start=${SECONDS}
    case "${b}" in
      agnhost)
        log "building agnhost @ ${K8S_VERSION} with $(go version | awk '{print $3}')"
        go build -trimpath -ldflags "-s -w${k8s_x}" -o "${tmp}/agnhost" k8s.io/kubernetes/test/images/agnhost
        ;;
      ginkgo)
        log "building ginkgo $(awk '$1 == "github.com/onsi/ginkgo/v2" { print $2; exit }' go.mod)"
        go build -trimpath -ldflags "-s -w" -o "${tmp}/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
        ;;
      e2e.test)
        log "building e2e.test @ ${K8S_VERSION} with $(go version | awk '{print $3}') (first build: 20-40 min on 2 cores)"
        go test -c -trimpath -ldflags "-s -w${k8s_x}" -o "${tmp}/e2e.test" k8s.io/kubernetes/test/e2e
        ;;
    esac
    mv -f "${tmp}/${b}" "${BIN_DIR}/${b}"
    printf '%s\n' "${KEY}" >"${BIN_DIR}/.${b}.stamp"
    log "built ${b} in $((SECONDS - start))s ($(du -h "${BIN_DIR}/${b}" | cut -f1))"
  done
fi

for b in "${WANT[@]}"; do
  [[ -x "${BIN_DIR}/${b}" ]] || die "${BIN_DIR}/${b} is missing"
done
printf '%s\n' "${BIN_DIR}"
