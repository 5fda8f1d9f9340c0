#!/usr/bin/env bash
# Build (once) everything a local real cluster (hack/cluster/up.sh) needs:
# - kube-apiserver, kubectl, etcd via hack/controlplane/build.sh;
# - kubelet, kube-controller-manager, kube-scheduler, kube-proxy from the same
#   k8s.io/kubernetes release (hack/controlplane/go/go.mod, tools.go);
# - images (OCI archives): the pause image from the Kubernetes module's own
#   build/pause/linux/pause.c (gcc -static), and a tiny test image
#   (kube-npm.local/httpd:1, Debian's busybox-static; run e.g.
#   `busybox httpd -f -p 8080 -h /www`).
#
# Cached under ${KUBE_NPM_CACHE:-$HOME/.cache/kube-npm}/cluster/<k8s version>/
#   bin/     all binaries above (the controlplane ones as symlinks), stamps
#   images/  pause.oci.tar, httpd.oci.tar (+ stamps)
# A second run only checks stamps. Progress and timings go to stderr; the LAST
# line on stdout is the bin dir (images are in <bin dir>/../images).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/k8s-build.sh
source "${HERE}/../lib/k8s-build.sh"
REPO_ROOT="$(cd "${HERE}/../.." && pwd)"
GOMOD_DIR="${REPO_ROOT}/hack/controlplane/go"
LOG_TAG=build
# shellcheck source=lib/common.sh
source "${HERE}/lib/common.sh"
# shellcheck source=lib/image.sh
source "${HERE}/lib/image.sh"
# Bump when the way things are built changes, to invalidate caches.
BUILD_REV=1
# Same for the images.
IMAGE_REV=3
T0=${SECONDS}

K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "${GOMOD_DIR}/go.mod")"
[[ -n "${K8S_VERSION}" ]] || die "cannot read the k8s.io/kubernetes version from ${GOMOD_DIR}/go.mod"
VERSION_DIR="${KUBE_NPM_CACHE:-${HOME}/.cache/kube-npm}/cluster/${K8S_VERSION}"
BIN_DIR="${VERSION_DIR}/bin"
IMG_DIR="${VERSION_DIR}/images"
mkdir -p "${BIN_DIR}" "${IMG_DIR}"

# ------------------------------------------------------------ control plane
CP_BIN="$("${REPO_ROOT}/hack/controlplane/build.sh" | tail -n1)"
for b in kube-apiserver kubectl etcd; do
  [[ -x "${CP_BIN}/${b}" ]] || die "${CP_BIN}/${b} missing (hack/controlplane/build.sh)"
  ln -sfn "$(readlink -f "${CP_BIN}/${b}")" "${BIN_DIR}/${b}"
done

# ------------------------------------------------------------ node binaries
KEY="$({ cat "${GOMOD_DIR}/go.mod" "${GOMOD_DIR}/go.sum"; echo "rev=${BUILD_REV}"; } | sha256sum | cut -c1-16)"
is_current() { [[ -x "${BIN_DIR}/$1" && -f "${BIN_DIR}/.$1.stamp" && "$(cat "${BIN_DIR}/.$1.stamp")" == "${KEY}" ]]; }
BINS=(kubelet kube-controller-manager kube-scheduler kube-proxy)
need=()
for b in "${BINS[@]}"; do is_current "${b}" || need+=("${b}"); done
if ((${#need[@]} > 0)); then
  command -v go >/dev/null || die "go is required to build ${need[*]}"
  build_lock "${VERSION_DIR}"
fi
if ((${#need[@]} > 0)); then
  tmp="$(mktemp -d "${VERSION_DIR}/build.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
  k8s_x="$(k8s_version_ldflags "${K8S_VERSION}")"
  pkgs=()
  for b in "${need[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
  # Same flags as hack/controlplane/build.sh: shared compile cache, no
  # checksum database needed (go.sum is committed).
  export CGO_ENABLED="${CGO_ENABLED:-0}"
  export GOFLAGS="${GOFLAGS:-} -mod=readonly"
  export GONOSUMDB="${GONOSUMDB:-*}" GOSUMDB="${GOSUMDB:-off}"
  log "building ${need[*]} @ ${K8S_VERSION} (cold: ~9 min on 2 cores)"
  s=${SECONDS}
  (cd "${GOMOD_DIR}" && go build -trimpath -ldflags "-s -w${k8s_x}" -o "${tmp}/" "${pkgs[@]}")
  for b in "${need[@]}"; do
    mv -f "${tmp}/${b}" "${BIN_DIR}/${b}"
    printf '%s\n' "${KEY}" >"${BIN_DIR}/.${b}.stamp"
  done
  log "built ${need[*]} in $((SECONDS - s))s"
fi

# ------------------------------------------------------------ images
for t in gcc umoci; do command -v "${t}" >/dev/null || die "${t} is required (apt-get install gcc umoci)"; done
PAUSE_C="$(go env GOMODCACHE 2>/dev/null)/k8s.io/kubernetes@${K8S_VERSION}/build/pause/linux/pause.c"
if [[ ! -f "${PAUSE_C}" ]]; then
  (cd "${GOMOD_DIR}" && GOFLAGS=-mod=readonly go mod download k8s.io/kubernetes) >&2
fi
[[ -f "${PAUSE_C}" ]] || die "pause.c not found at ${PAUSE_C}"
pause_key="$({ cat "${PAUSE_C}"; echo "ref=${PAUSE_REF} rev=${IMAGE_REV}"; } | sha256sum | cut -c1-16)"
if [[ ! -s "${IMG_DIR}/pause.oci.tar" || "$(cat "${IMG_DIR}/.pause.stamp" 2>/dev/null)" != "${pause_key}" ]]; then
  s=${SECONDS}
  w="$(mktemp -d)"
  gcc -Os -static -DVERSION="${PAUSE_REF##*:}-kube-npm" -o "${w}/pause" "${PAUSE_C}"
  strip "${w}/pause"
  oci_archive_from_files "${IMG_DIR}/pause.oci.tar" "${PAUSE_REF##*:}" '["/pause"]' "${w}/pause:/pause"
  rm -rf "${w}"
  printf '%s\n' "${pause_key}" >"${IMG_DIR}/.pause.stamp"
  log "built pause image (${PAUSE_REF}) in $((SECONDS - s))s"
fi
BUSYBOX="${BUSYBOX:-/bin/busybox}"
[[ -x "${BUSYBOX}" ]] || die "${BUSYBOX} missing (apt-get install busybox-static)"
file -L "${BUSYBOX}" 2>/dev/null | grep -q 'statically linked' || ldd "${BUSYBOX}" 2>&1 | grep -q 'not a dynamic' ||
  die "${BUSYBOX} is not static (install busybox-static)"
httpd_key="$({ sha256sum "${BUSYBOX}"; echo "rev=${IMAGE_REV}"; } | sha256sum | cut -c1-16)"
if [[ ! -s "${IMG_DIR}/httpd.oci.tar" || "$(cat "${IMG_DIR}/.httpd.stamp" 2>/dev/null)" != "${httpd_key}" ]]; then
  s=${SECONDS}
  w="$(mktemp -d)"
  # rootfs: busybox and a symlink per applet (sh, wget with ssl_client for
  # https, nc, ...), so probes can run inside pods; /www for httpd.
  mkdir -p "${w}/rootfs/bin" "${w}/rootfs/www" "${w}/rootfs/tmp"
  chmod 1777 "${w}/rootfs/tmp"
  cp "${BUSYBOX}" "${w}/rootfs/bin/busybox"
  for a in $("${BUSYBOX}" --list); do
    [[ "${a}" == busybox ]] || ln -s busybox "${w}/rootfs/bin/${a}"
  done
  printf 'kube-npm httpd\n' >"${w}/rootfs/www/index.html"
  oci_archive_from_files "${IMG_DIR}/httpd.oci.tar" 1 '["/bin/busybox","httpd","-f","-p","8080","-h","/www"]' \
    "${w}/rootfs:/"
  rm -rf "${w}"
  printf '%s\n' "${httpd_key}" >"${IMG_DIR}/.httpd.stamp"
  log "built test image kube-npm.local/httpd:1 in $((SECONDS - s))s"
fi

log "build done in $((SECONDS - T0))s: ${BIN_DIR}"
printf '%s\n' "${BIN_DIR}"
