#!/usr/bin/env bash
# Build (once) the Prometheus server used by test/e2e/prometheus.test.ts to scrape the sandbox and
# run every query of the shipped Grafana dashboard. Built from the Go module proxy: the module
# github.com/prometheus/prometheus pinned in hack/prometheus/go/go.mod (v0.316.0 = Prometheus 3.16.0).
#
# The binary is cached under
#   ${KUBE_NPM_CACHE:-$HOME/.cache/kube-npm}/prometheus/<module version>/bin/prometheus
# with a stamp file (hash of go.mod, go.sum and this recipe), so a second run only checks the stamp.
#
# Built with -tags remove_all_sd: no service-discovery plugins (the test uses static_configs), which
# keeps the cloud SDKs out of the build. No web UI assets are embedded (no builtinassets tag): the
# HTTP API (/api/v1/*) works without them; only the browser UI answers 404s.
#
# Env knobs:
#   PROMETHEUS=/path/prometheus   use this binary; nothing is built (checked to run)
#   NO_BUILD=1                    never build: print the cached binary, or fail naming this script
#                                 (the e2e test uses it: it must not start a build of many minutes)
#   KUBE_NPM_CACHE=/dir           cache root (default ~/.cache/kube-npm)
#
# Leaves behind: the cached binary and its stamp; nothing running. Progress goes to stderr; the
# LAST line on stdout is the path of the prometheus binary.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GOMOD_DIR="${HERE}/go"
# Bump when the way the binary is built changes, to invalidate caches.
BUILD_REV=1
BUILD_TAGS="remove_all_sd"

log() { printf '[prometheus/build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -n "${PROMETHEUS:-}" ]]; then
  [[ -x "${PROMETHEUS}" ]] || die "PROMETHEUS=${PROMETHEUS} is not an executable file"
  "${PROMETHEUS}" --version >/dev/null 2>&1 || die "PROMETHEUS=${PROMETHEUS} does not run (--version failed)"
  printf '%s\n' "$(cd "$(dirname "${PROMETHEUS}")" && pwd)/$(basename "${PROMETHEUS}")"
  exit 0
fi

PROM_VERSION="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" { print $3; exit }
  $1 == "github.com/prometheus/prometheus" && $2 ~ /^v/ { print $2; exit }' "${GOMOD_DIR}/go.mod")"
[[ -n "${PROM_VERSION}" ]] || die "cannot read the pinned github.com/prometheus/prometheus version from ${GOMOD_DIR}/go.mod"

VERSION_DIR="${KUBE_NPM_CACHE:-${HOME}/.cache/kube-npm}/prometheus/${PROM_VERSION}"
BIN_DIR="${VERSION_DIR}/bin"
BIN="${BIN_DIR}/prometheus"
STAMP="${BIN_DIR}/.prometheus.stamp"

build_key() {
  { cat "${GOMOD_DIR}/go.mod" "${GOMOD_DIR}/go.sum"; echo "rev=${BUILD_REV} tags=${BUILD_TAGS}"; } | sha256sum | cut -c1-16
}
KEY="$(build_key)"
is_current() { [[ -x "${BIN}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${KEY}" ]]; }

if ! is_current && [[ "${NO_BUILD:-}" == 1 ]]; then
  die "prometheus ${PROM_VERSION} is not built (no current ${BIN}): run \`bash hack/prometheus/build.sh\` (cold: about 4.7 CPU-minutes, ~3 min on 2 idle cores), or set PROMETHEUS=/path/prometheus"
fi

if ! is_current; then
  command -v go >/dev/null || die "go is required to build prometheus ${PROM_VERSION} (or pass PROMETHEUS=/path/prometheus)"
  mkdir -p "${BIN_DIR}"
  # Serialise concurrent builds of this version (held on fd 9 until exit); another run may have
  # finished the build while we waited.
  exec 9>"${VERSION_DIR}/.lock"
  if command -v flock >/dev/null; then
    log "waiting for build lock ${VERSION_DIR}/.lock"
    flock 9
  fi
fi

if ! is_current; then
  tmp="$(mktemp -d "${VERSION_DIR}/build.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
  export CGO_ENABLED="${CGO_ENABLED:-0}"
  # go.sum is complete and committed: readonly keeps the tree untouched and needs no checksum
  # database (sum.golang.org may be unreachable).
  export GOFLAGS="${GOFLAGS:-} -mod=readonly"
  export GONOSUMDB="${GONOSUMDB:-*}" GOSUMDB="${GOSUMDB:-off}"
  # What `prometheus --version` prints (github.com/prometheus/common/version), as a release has it.
  semver="${PROM_VERSION#v0.}"
  semver="$((${semver%%.*} / 100)).$((${semver%%.*} % 100)).${semver#*.}"
  ver_pkg=github.com/prometheus/common/version
  ldflags="-s -w -X ${ver_pkg}.Version=${semver} -X ${ver_pkg}.Revision=module-${PROM_VERSION}"
  ldflags+=" -X ${ver_pkg}.Branch=HEAD -X ${ver_pkg}.BuildUser=kube-npm -X ${ver_pkg}.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
  cd "${GOMOD_DIR}"
  start=${SECONDS}
  log "building github.com/prometheus/prometheus/cmd/prometheus @ ${PROM_VERSION} (Prometheus ${semver}) with $(go version | awk '{print $3}'), tags ${BUILD_TAGS} (cold: about 4.7 CPU-minutes, ~3 min on 2 idle cores)"
  go build -trimpath -tags "${BUILD_TAGS}" -ldflags "${ldflags}" -o "${tmp}/prometheus" github.com/prometheus/prometheus/cmd/prometheus
  "${tmp}/prometheus" --version >/dev/null 2>&1 || die "the built ${tmp}/prometheus does not run (--version failed)"
  mv -f "${tmp}/prometheus" "${BIN}"
  printf '%s\n' "${KEY}" >"${STAMP}"
  log "built prometheus ${semver} in $((SECONDS - start))s into ${BIN} ($(du -h "${BIN}" | cut -f1))"
fi

printf '%s\n' "${BIN}"
