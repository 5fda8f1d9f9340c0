#!/usr/bin/env bash
# Build kube-npm's container image from the repository's Dockerfile without a Docker engine or a
# reachable registry (#11): buildah, with a local Debian bookworm + Node 20 base (hack/image/base.sh)
# passed as both BUILD_BASE and RUNTIME_BASE, then export it as an archive that
# `ctr -n k8s.io images import` (containerd 1.6) loads under its name.
#
#   hack/image/build.sh [TAG]      TAG defaults to dev-<git short sha>
#
# Env knobs:
#   STORAGE_DRIVER=          containers-storage driver; default storage.conf's: overlay (the root
#                            fs is ext4 and the kernel has overlayfs, so layers are shared, not
#                            copied as vfs would; other drivers are untested)
#   ARCHIVE_FORMAT=oci-archive   or docker-archive; `ctr -n k8s.io images import` of containerd
#                            1.6.20 loads both under their name; oci-archive has gzip layers
#                            (~1/3 of the docker-archive, whose layers are plain tar)
#   OUT_DIR=${KUBE_NPM_CACHE:-$HOME/.cache/kube-npm}/image/out   where the archive goes
#   NO_CACHE=1               rebuild every step (buildah bud --no-cache)
#   BUILD_CA_FILE=FILE       extra CA certificates for the build stage's npm ci (a TLS-inspecting
#                            proxy between here and the npm registry); default: $NODE_EXTRA_CA_CERTS,
#                            else npm's cafile setting. BUILD_CA_FILE= (empty) for none. Only the
#                            build stage sees it; the runtime stage starts from the clean base.
#   plus base.sh's knobs (NODE_VERSION, NPM_VERSION, DEBIAN_MIRROR, ...)
# Leaves behind: the images localhost/kube-npm-base:<hash> and localhost/kube-npm:TAG and the
# intermediate layers (--layers, so an unchanged step is not run again) in containers-storage,
# and the archive. Installs buildah and debootstrap from Debian when missing.
#
# Progress goes to stderr; the LAST stdout line is the archive path.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../.." && pwd)"
log() { printf '[image/build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# set -e stops silently otherwise: name the command that failed.
trap 'die "unexpected failure at line ${LINENO}: ${BASH_COMMAND}"' ERR

[[ "$(id -u)" == 0 ]] || die "needs root (containers-storage under /var/lib/containers, chroot isolation)"
# containers-storage's default driver (overlay here: ext4 root, kernel overlayfs) unless given.
SD=(${STORAGE_DRIVER:+--storage-driver "${STORAGE_DRIVER}"})
ARCHIVE_FORMAT="${ARCHIVE_FORMAT:-oci-archive}"
OUT_DIR="${OUT_DIR:-${KUBE_NPM_CACHE:-${HOME}/.cache/kube-npm}/image/out}"
case "${ARCHIVE_FORMAT}" in docker-archive | oci-archive) ;; *) die "ARCHIVE_FORMAT must be docker-archive or oci-archive" ;; esac

TAG="${1:-dev-$(git -C "${REPO}" rev-parse --short HEAD)}"
IMAGE="localhost/kube-npm:${TAG}"

need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  log "installing ${need[*]} from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2 \
    || die "apt-get install ${need[*]} failed (try apt-get update first)"
fi

start=$SECONDS
BASE="$(bash "${HERE}/base.sh" | tail -n1)"
[[ -n "${BASE}" ]] || die "base.sh printed no image name"
base_s=$((SECONDS - start))

# The build stage's base: the base plus this machine's CA file when npm needs one to reach the
# registry (npm 10.8 then dies with "Exit handler never called!" and exit code 0 after
# SELF_SIGNED_CERT_IN_CHAIN, leaving an empty node_modules). The runtime stage copies only /src
# files from the build stage, so the CA and its NODE_EXTRA_CA_CERTS do not reach the image.
if [[ -z "${BUILD_CA_FILE+set}" ]]; then
  BUILD_CA_FILE="${NODE_EXTRA_CA_CERTS:-}"
  if [[ -z "${BUILD_CA_FILE}" ]] && command -v npm >/dev/null; then
    BUILD_CA_FILE="$(npm config get cafile 2>/dev/null || true)"
    [[ "${BUILD_CA_FILE}" == null || "${BUILD_CA_FILE}" == undefined ]] && BUILD_CA_FILE=""
  fi
fi
BUILD_BASE="${BASE}"
if [[ -n "${BUILD_CA_FILE}" ]]; then
  [[ -r "${BUILD_CA_FILE}" ]] || die "BUILD_CA_FILE ${BUILD_CA_FILE} is not readable"
  BUILD_BASE="localhost/kube-npm-build-base:$({ echo "${BASE}"; cat "${BUILD_CA_FILE}"; } | sha256sum | cut -c1-16)"
  if ! buildah "${SD[@]}" inspect --type image "${BUILD_BASE}" >/dev/null 2>&1; then
    log "build stage base ${BUILD_BASE}: ${BASE} + CA file ${BUILD_CA_FILE}"
    ca=/usr/local/share/ca-certificates/kube-npm-build-ca.crt
    ctr="$(buildah "${SD[@]}" from --pull=never "${BASE}")"
    buildah "${SD[@]}" copy --quiet "${ctr}" "${BUILD_CA_FILE}" "${ca}" >/dev/null
    buildah "${SD[@]}" config --env "NODE_EXTRA_CA_CERTS=${ca}" "${ctr}"
    buildah "${SD[@]}" commit --quiet --rm "${ctr}" "${BUILD_BASE}" >/dev/null
  fi
fi

# --isolation chroot: no systemd and cgroup v1 here, so no OCI runtime with cgroups is needed for
#   RUN steps. --network host: the RUN steps reach the npm registry (npm ci) and Debian's archive
#   (apt-get) through the host's own network; nothing gets configured in the root namespace.
# --layers: each step is cached, keyed on its base and instruction (COPY: on the files), so a
#   rebuild after a source change reruns only `npm run build` onwards, not npm ci or apt-get.
# --pull=never: the base exists locally only; a pull would try docker.io.
log "building ${IMAGE} from ${BUILD_BASE} (build stage) and ${BASE} (runtime stage)"
bud_start=$SECONDS
buildah "${SD[@]}" bud \
  --isolation chroot --network host --layers --pull=never \
  ${NO_CACHE:+--no-cache} \
  --build-arg "BUILD_BASE=${BUILD_BASE}" --build-arg "RUNTIME_BASE=${BASE}" \
  -f "${REPO}/Dockerfile" -t "${IMAGE}" "${REPO}" >&2 \
  || die "buildah bud failed (output above)"
bud_s=$((SECONDS - bud_start))

mkdir -p "${OUT_DIR}"
ARCHIVE="${OUT_DIR}/kube-npm-${TAG}.tar"
rm -f "${ARCHIVE}"
# The name inside the archive is what ctr import tags the image with.
buildah "${SD[@]}" push --quiet "${IMAGE}" "${ARCHIVE_FORMAT}:${ARCHIVE}:${IMAGE}" >&2 \
  || die "buildah push to ${ARCHIVE_FORMAT}:${ARCHIVE} failed"

# One line per tag of the image: keep the first (no `| head`: its early exit fails the pipe).
size="$(buildah "${SD[@]}" images --format '{{.Size}}' "${IMAGE}")"
size="${size%%$'\n'*}"
log "image ${IMAGE}: ${size} uncompressed; ${ARCHIVE_FORMAT} $(du -h "${ARCHIVE}" | cut -f1) (${ARCHIVE})"
log "times: base ${base_s} s, buildah bud ${bud_s} s, total $((SECONDS - start)) s"
log "load into containerd: ctr -n k8s.io images import ${ARCHIVE}"
printf '%s\n' "${ARCHIVE}"
