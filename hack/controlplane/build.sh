#!/usr/bin/env bash
# Build (once) the binaries of a real control plane for the e2e tests:
# kube-apiserver and kubectl from the k8s.io/kubernetes release pinned in
# hack/controlplane/go/go.mod, and etcd from the same module graph when the
# system's etcd is missing or too old.
#
# Binaries are cached under
#   ${KUBE_NPM_CACHE:-$HOME/.cache/kube-npm}/controlplane/<k8s version>/bin/
# with one stamp file per binary, so a second run only checks stamps.
#
# Overrides (nothing is built for a binary given this way):
#   KUBE_APISERVER=/path/kube-apiserver  ETCD=/path/etcd  KUBECTL=/path/kubectl
#   KUBEBUILDER_ASSETS=/dir   (holding kube-apiserver, etcd, kubectl)
#   ETCD_MIN_VERSION=3.5.13   (older system etcd => build etcd)
#
# All progress goes to stderr; the LAST line on stdout is the bin dir, which
# holds kube-apiserver, etcd and kubectl (files or symlinks).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/k8s-build.sh
source "${HERE}/../lib/k8s-build.sh"
GOMOD_DIR="${HERE}/go"
# Bump when the way binaries are built changes, to invalidate caches.
BUILD_REV=1
ETCD_MIN_VERSION="${ETCD_MIN_VERSION:-3.5.13}"

log() { printf '[controlplane/build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Version of a module as required in our go.mod.
mod_version() {
  awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "${GOMOD_DIR}/go.mod"
}

K8S_VERSION="$(mod_version k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version go.etcd.io/etcd/server/v3)"
[[ -n "${K8S_VERSION}" && -n "${ETCD_VERSION}" ]] || die "cannot read pinned versions from ${GOMOD_DIR}/go.mod"

CACHE_ROOT="${KUBE_NPM_CACHE:-${HOME}/.cache/kube-npm}/controlplane"
VERSION_DIR="${CACHE_ROOT}/${K8S_VERSION}"
BIN_DIR="${VERSION_DIR}/bin"

# Key of a build: sources + build recipe. A stamp holding this key next to a
# binary means the binary is complete and current.
build_key() {
  { cat "${GOMOD_DIR}/go.mod" "${GOMOD_DIR}/go.sum"; echo "rev=${BUILD_REV}"; } | sha256sum | cut -c1-16
}

# "3.4.23" >= "3.5.13" ?
version_ge() {
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

etcd_version_of() {
  "$1" --version 2>/dev/null | awk '/^etcd Version:/ { print $3; exit }'
}

resolve_override() { # name envvar -> prints path or nothing
  local name="$1" var="$2" path=""
  if [[ -n "${!var:-}" ]]; then
    path="${!var}"
  elif [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    path="${KUBEBUILDER_ASSETS}/${name}"
  fi
  if [[ -n "${path}" ]]; then
    [[ -x "${path}" ]] || die "${path} (from ${var} or KUBEBUILDER_ASSETS) is not an executable file"
    printf '%s\n' "$(cd "$(dirname "${path}")" && pwd)/$(basename "${path}")"
  fi
}

APISERVER_PATH="$(resolve_override kube-apiserver KUBE_APISERVER)"
KUBECTL_PATH="$(resolve_override kubectl KUBECTL)"
ETCD_PATH="$(resolve_override etcd ETCD)"

if [[ -z "${ETCD_PATH}" ]]; then
  sys_etcd="$(command -v etcd || true)"
  if [[ -n "${sys_etcd}" ]]; then
    v="$(etcd_version_of "${sys_etcd}")"
    if [[ -n "${v}" ]] && version_ge "${v}" "${ETCD_MIN_VERSION}"; then
      ETCD_PATH="${sys_etcd}"
      log "using system etcd ${v} (${sys_etcd})"
    else
      log "system etcd ${v:-?} (${sys_etcd}) is older than ${ETCD_MIN_VERSION}: using etcd ${ETCD_VERSION} built from source"
    fi
  fi
fi

KEY="$(build_key)"
is_current() { [[ -x "${BIN_DIR}/$1" && -f "${BIN_DIR}/.$1.stamp" && "$(cat "${BIN_DIR}/.$1.stamp")" == "${KEY}" ]]; }

need=()
[[ -n "${APISERVER_PATH}" ]] || is_current kube-apiserver || need+=(kube-apiserver)
[[ -n "${KUBECTL_PATH}" ]] || is_current kubectl || need+=(kubectl)
[[ -n "${ETCD_PATH}" ]] || is_current etcd || need+=(etcd)

if ((${#need[@]} > 0)); then
  command -v go >/dev/null || die "go is required to build ${need[*]} (or pass KUBE_APISERVER/ETCD/KUBECTL or KUBEBUILDER_ASSETS)"
  mkdir -p "${BIN_DIR}"
  build_lock "${VERSION_DIR}"
fi

if ((${#need[@]} > 0)); then
  tmp="$(mktemp -d "${VERSION_DIR}/build.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
  k8s_x="$(k8s_version_ldflags "${K8S_VERSION}")"
  export CGO_ENABLED="${CGO_ENABLED:-0}"
  # go.sum is complete and committed: readonly keeps the tree untouched and
  # needs no checksum database (sum.golang.org may be unreachable).
  export GOFLAGS="${GOFLAGS:-} -mod=readonly"
  export GONOSUMDB="${GONOSUMDB:-*}" GOSUMDB="${GOSUMDB:-off}"
  cd "${GOMOD_DIR}"
  start=${SECONDS}
  k8s_pkgs=()
  for b in "${need[@]}"; do
    case "${b}" in
      kube-apiserver|kubectl) k8s_pkgs+=("k8s.io/kubernetes/cmd/${b}") ;;
    esac
  done
  if ((${#k8s_pkgs[@]} > 0)); then
    log "building ${k8s_pkgs[*]} @ ${K8S_VERSION} with $(go version | awk '{print $3}') (first build: about 8 min cold on 2 cores)"
    # One invocation for both commands shares compilation of common packages.
    go build -trimpath -ldflags "-s -w${k8s_x}" -o "${tmp}/" "${k8s_pkgs[@]}"
  fi
  for b in "${need[@]}"; do
    if [[ "${b}" == etcd ]]; then
      log "building etcd ${ETCD_VERSION}"
      go build -trimpath -ldflags "-s -w" -o "${tmp}/etcd" go.etcd.io/etcd/server/v3
    fi
  done
  for b in "${need[@]}"; do
    mv -f "${tmp}/${b}" "${BIN_DIR}/${b}"
    printf '%s\n' "${KEY}" >"${BIN_DIR}/.${b}.stamp"
  done
  log "built ${need[*]} in $((SECONDS - start))s into ${BIN_DIR}"
fi

# Overrides: present the chosen binaries together in one folder of symlinks,
# keyed by their paths, so callers always get a single bin dir.
if [[ -n "${APISERVER_PATH}${KUBECTL_PATH}${ETCD_PATH}" ]]; then
  a="${APISERVER_PATH:-${BIN_DIR}/kube-apiserver}"
  c="${KUBECTL_PATH:-${BIN_DIR}/kubectl}"
  e="${ETCD_PATH:-${BIN_DIR}/etcd}"
  sel="$(printf '%s\n' "${a}" "${c}" "${e}" | sha256sum | cut -c1-12)"
  OUT_DIR="${CACHE_ROOT}/selected-${sel}/bin"
  mkdir -p "${OUT_DIR}"
  ln -sfn "${a}" "${OUT_DIR}/kube-apiserver"
  ln -sfn "${c}" "${OUT_DIR}/kubectl"
  ln -sfn "${e}" "${OUT_DIR}/etcd"
else
  OUT_DIR="${BIN_DIR}"
fi

for b in kube-apiserver kubectl etcd; do
  [[ -x "${OUT_DIR}/${b}" ]] || die "${OUT_DIR}/${b} is missing"
done
printf '%s\n' "${OUT_DIR}"
