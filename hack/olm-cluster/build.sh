#!/usr/bin/env bash
# Build (once) what installing kube-npm through OLM on hack/cluster needs,
# without Docker or a registry:
#   - binaries olm, catalog, cpb (OLM, the release pinned in go/go.mod) and opm
#     (operator-registry, same go.mod), built from the Go module proxy;
#   - OCI image archives (umoci) the nodes import with hack/cluster/load-image.sh:
#       olm.tar      kube-npm.local/olm:<olm version>: /bin/{olm,catalog,cpb,opm}
#                    plus static busybox (/bin/cp: OLM's bundle unpack Job runs
#                    `/bin/cp -Rv /bin/cpb /util/cpb` in the --util-image);
#       bundle.tar   kube-npm.local/kube-npm-bundle:<csv version>: config/olm's
#                    manifests/ and metadata/ at / with bundle.Dockerfile's
#                    LABELs as OCI config labels (registry+v1);
#       catalog.tar  kube-npm.local/kube-npm-catalog:<csv version>: opm and a
#                    file-based catalog in /configs (package kube-npm, channel
#                    alpha), served by `opm serve /configs -p 50051`;
#   - catalog/kube-npm/catalog.json: that FBC, rendered by `opm render` from
#     config/olm, its bundle image = the bundle's digest reference (OLM infers
#     pull policy Always for a tag, IfNotPresent for a digest, and the nodes
#     have no registry to pull from).
#
# Cache: ${KUBE_NPM_CACHE:-~/.cache/kube-npm}/olm/<olm version>/{bin,images}
# with stamp files (key = go.mod + go.sum + recipe; images also hash
# config/olm), so a second run only checks stamps.
# Env: KUBE_NPM_CACHE; BUSYBOX (default /bin/busybox, must be static).
# Needs: go, umoci, busybox-static, jq, sha256sum.
# Progress on stderr; the LAST stdout line is the cache dir holding bin/,
# crds/ (OLM's CRDs), images/ and images/env (shell: OLM_IMAGE, BUNDLE_IMAGE, BUNDLE_REF, ...).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
GOMOD_DIR="${HERE}/go"
BUNDLE_DIR="${ROOT}/config/olm"
# Bump when the way binaries or images are built changes.
BUILD_REV=1
GO_TAGS="containers_image_openpgp,netgo,osusergo"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

log() { printf '[olm-cluster/build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for t in go umoci jq sha256sum; do
  command -v "${t}" >/dev/null || die "${t} is required (apt-get install -y golang umoci jq coreutils)"
done
file -L "${BUSYBOX}" 2>/dev/null | grep -q 'statically linked' ||
  die "${BUSYBOX} is not a static busybox (apt-get install -y busybox-static)"

mod_version() {
  awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "${GOMOD_DIR}/go.mod"
}
OLM_VERSION="$(mod_version github.com/operator-framework/operator-lifecycle-manager)"
OPM_VERSION="$(mod_version github.com/operator-framework/operator-registry)"
[[ -n "${OLM_VERSION}" && -n "${OPM_VERSION}" ]] || die "cannot read pinned versions from ${GOMOD_DIR}/go.mod"
CSV="${BUNDLE_DIR}/manifests/kube-npm.clusterserviceversion.yaml"
[[ -f "${CSV}" ]] || die "${CSV} missing"
# spec.version of the CSV (the only 2-space-indented "version:" key).
BUNDLE_VERSION="$(awk '/^  version: / { print $2; exit }' "${CSV}")"
[[ -n "${BUNDLE_VERSION}" ]] || die "cannot read spec.version from ${CSV}"

CACHE_DIR="${KUBE_NPM_CACHE:-${HOME}/.cache/kube-npm}/olm/${OLM_VERSION}"
BIN_DIR="${CACHE_DIR}/bin"
IMG_DIR="${CACHE_DIR}/images"
mkdir -p "${BIN_DIR}" "${IMG_DIR}"

BIN_KEY="$({ cat "${GOMOD_DIR}/go.mod" "${GOMOD_DIR}/go.sum"; echo "rev=${BUILD_REV} tags=${GO_TAGS}"; } | sha256sum | cut -c1-16)"
BINS=(olm catalog cpb opm)
is_current() { [[ -x "${BIN_DIR}/$1" && -f "${BIN_DIR}/.$1.stamp" && "$(cat "${BIN_DIR}/.$1.stamp")" == "${BIN_KEY}" ]]; }

# Serialise concurrent runs on the same cache.
exec 9>"${CACHE_DIR}/.lock"
if command -v flock >/dev/null; then flock 9; fi

need=()
for b in "${BINS[@]}"; do is_current "${b}" || need+=("${b}"); done
if ((${#need[@]} > 0)); then
  tmp="$(mktemp -d "${CACHE_DIR}/build.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
  pkgs=()
  for b in "${need[@]}"; do
    case "${b}" in
      olm|catalog) pkgs+=("github.com/operator-framework/operator-lifecycle-manager/cmd/${b}") ;;
      cpb) pkgs+=("github.com/operator-framework/operator-lifecycle-manager/util/cpb") ;;
      opm) pkgs+=("github.com/operator-framework/operator-registry/cmd/opm") ;;
    esac
  done
  # Static binaries (the images have no libc). go.sum is committed: readonly
  # needs no checksum database (sum.golang.org is unreachable here).
  export CGO_ENABLED=0 GOTOOLCHAIN=local
  export GOFLAGS="${GOFLAGS:-} -mod=readonly"
  export GONOSUMDB="${GONOSUMDB:-*}" GOSUMDB="${GOSUMDB:-off}"
  olm_x="-X github.com/operator-framework/operator-lifecycle-manager/pkg/version.OLMVersion=${OLM_VERSION#v}"
  start=${SECONDS}
  log "building ${need[*]} (OLM ${OLM_VERSION}, operator-registry ${OPM_VERSION}) with $(go version | awk '{print $3}'); cold: ~10 min on 2 cores"
  # containers_image_openpgp: opm pulls in containers/image, whose default
  # signature backend is gpgme (cgo).
  (cd "${GOMOD_DIR}" && go build -trimpath -tags "${GO_TAGS}" -ldflags "-s -w ${olm_x}" -o "${tmp}/" "${pkgs[@]}")
  for b in "${need[@]}"; do
    mv -f "${tmp}/${b}" "${BIN_DIR}/${b}"
    printf '%s\n' "${BIN_KEY}" >"${BIN_DIR}/.${b}.stamp"
  done
  log "built ${need[*]} in $((SECONDS - start))s into ${BIN_DIR}"
fi

# OLM's CRDs, from github.com/operator-framework/api at the version OLM
# requires (as hack/olm does for its validators): run.sh applies them.
CRD_DIR="${CACHE_DIR}/crds"
api_dir="$(cd "${GOMOD_DIR}" && GOFLAGS=-mod=readonly GOSUMDB=off GOTOOLCHAIN=local go list -m -f '{{.Dir}}' github.com/operator-framework/api)"
[[ -d "${api_dir}/crds" ]] || die "no crds/ in github.com/operator-framework/api (${api_dir})"
mkdir -p "${CRD_DIR}"
cp -f "${api_dir}"/crds/*.yaml "${CRD_DIR}/"
chmod u+w "${CRD_DIR}"/*.yaml

# oci_image OUT REF CONFIG_ARGS_VAR SRC:DEST...
#   OUT: tar of an OCI layout with one image named REF (name:tag; ref.name the
#   tag, io.containerd.image.name the full REF, so `ctr images import` names it
#   REF itself: renaming an import-* name with load-image.sh REF left
#   containerd 1.6's CRI image cache pointing at the removed name, and
#   containers failed with `failed to get image from containerd "sha256:...":
#   image "docker.io/library/import-2026-12-01:v0.33.0": not found`), one layer holding
#   each SRC at DEST (a SRC dir's content goes into DEST), configured with the
#   umoci config args in the array named CONFIG_ARGS_VAR. Prints the manifest
#   digest.
oci_image() {
  local out="$1" ref="$2" cfgvar="$3[@]"
  local tag="${ref##*:}"
  shift 3
  local cfg=("${!cfgvar}") work spec src dest
  work="$(mktemp -d "${TMPDIR:-/tmp}/olmc-image.XXXXXX")"
  umoci init --layout "${work}/layout"
  umoci new --image "${work}/layout:${tag}"
  umoci unpack --image "${work}/layout:${tag}" "${work}/bundle" >/dev/null
  for spec in "$@"; do
    src="${spec%%:*}"
    dest="${work}/bundle/rootfs/${spec#*:}"
    if [[ -d "${src}" ]]; then
      mkdir -p "${dest}"
      cp -a "${src}/." "${dest}/"
    else
      mkdir -p "$(dirname "${dest}")"
      cp -a "${src}" "${dest}"
    fi
  done
  umoci repack --image "${work}/layout:${tag}" "${work}/bundle"
  umoci config --image "${work}/layout:${tag}" --os linux --architecture amd64 "${cfg[@]}"
  umoci gc --layout "${work}/layout"
  jq --arg n "${ref}" '.manifests[0].annotations["io.containerd.image.name"] = $n' \
    "${work}/layout/index.json" >"${work}/index.json"
  mv -f "${work}/index.json" "${work}/layout/index.json"
  jq -r '.manifests[0].digest' "${work}/layout/index.json"
  tar -C "${work}/layout" -cf "${out}.tmp" .
  mv -f "${out}.tmp" "${out}"
  rm -rf "${work}"
}

IMG_KEY="$({ echo "${BIN_KEY}"; cat "${HERE}/build.sh"; sha256sum "${BUSYBOX}";
  (cd "${BUNDLE_DIR}" && find manifests metadata -type f -print0 | sort -z | xargs -0 sha256sum); } | sha256sum | cut -c1-16)"
if [[ -f "${IMG_DIR}/.stamp" && "$(cat "${IMG_DIR}/.stamp")" == "${IMG_KEY}" && -s "${IMG_DIR}/env" ]]; then
  log "images current (${IMG_DIR})"
else
  start=${SECONDS}
  rm -f "${IMG_DIR}/.stamp"
  stage="$(mktemp -d "${TMPDIR:-/tmp}/olmc-stage.XXXXXX")"
  trap 'rm -rf "${stage}" "${tmp:-}"' EXIT
  # busybox applets the OLM pods use (cp in the unpack Job) or a human may
  # want in `kubectl exec` (sh, ls, cat).
  mkdir -p "${stage}/olm-bin" "${stage}/tmp"
  chmod 1777 "${stage}/tmp"
  cp "${BUSYBOX}" "${stage}/olm-bin/busybox"
  for a in sh cp ls cat; do ln -s busybox "${stage}/olm-bin/${a}"; done
  for b in "${BINS[@]}"; do cp "${BIN_DIR}/${b}" "${stage}/olm-bin/${b}"; done

  OLM_IMAGE="kube-npm.local/olm:${OLM_VERSION}"
  cfg=(--config.env PATH=/bin --config.entrypoint /bin/olm --config.user 65534)
  olm_digest="$(oci_image "${IMG_DIR}/olm.tar" "${OLM_IMAGE}" cfg "${stage}/olm-bin:/bin" "${stage}/tmp:/tmp")"
  log "olm image ${OLM_IMAGE} ${olm_digest}"

  # The bundle: bundle.Dockerfile's layout and labels (FROM scratch).
  BUNDLE_IMAGE="kube-npm.local/kube-npm-bundle:${BUNDLE_VERSION}"
  cfg=()
  while IFS= read -r l; do cfg+=(--config.label "${l}"); done < <(
    sed -n 's/^LABEL \([^=]*\)=\(.*\)$/\1=\2/p' "${BUNDLE_DIR}/bundle.Dockerfile")
  ((${#cfg[@]} > 0)) || die "no LABEL in ${BUNDLE_DIR}/bundle.Dockerfile"
  bundle_digest="$(oci_image "${IMG_DIR}/bundle.tar" "${BUNDLE_IMAGE}" cfg \
    "${BUNDLE_DIR}/manifests:/manifests" "${BUNDLE_DIR}/metadata:/metadata")"
  # name@digest (no tag): what containerd's CRI resolves, and what makes OLM's
  # unpack Job use pull policy IfNotPresent.
  BUNDLE_REF="kube-npm.local/kube-npm-bundle@${bundle_digest}"
  log "bundle image ${BUNDLE_IMAGE} = ${BUNDLE_REF}"

  # File-based catalog: `opm render` of the bundle directory (olm.package and
  # olm.bundle with its objects), its image set to the digest ref, plus the
  # package and the alpha channel (opm init).
  fbc="${stage}/configs/kube-npm"
  mkdir -p "${fbc}"
  "${BIN_DIR}/opm" init kube-npm --default-channel alpha -o json >"${stage}/pkg.json"
  "${BIN_DIR}/opm" render "${BUNDLE_DIR}" -o json >"${stage}/bundle.json"
  csv_name="$(jq -r 'select(.schema == "olm.bundle") | .name' "${stage}/bundle.json")"
  [[ -n "${csv_name}" ]] || die "opm render ${BUNDLE_DIR} gave no olm.bundle"
  {
    cat "${stage}/pkg.json"
    jq -n --arg b "${csv_name}" '{schema: "olm.channel", package: "kube-npm", name: "alpha", entries: [{name: $b}]}'
    jq --arg img "${BUNDLE_REF}" 'select(.schema == "olm.bundle") | .image = $img' "${stage}/bundle.json"
  } >"${fbc}/catalog.json"
  "${BIN_DIR}/opm" validate "${stage}/configs" || die "opm validate of the rendered catalog failed"
  mkdir -p "${IMG_DIR}/catalog"
  rm -rf "${IMG_DIR}/catalog/kube-npm"
  cp -a "${fbc}" "${IMG_DIR}/catalog/"

  CATALOG_IMAGE="kube-npm.local/kube-npm-catalog:${BUNDLE_VERSION}"
  mkdir -p "${stage}/cat-bin"
  cp "${BIN_DIR}/opm" "${stage}/cat-bin/opm"
  # opm serve keeps its cache in a temp dir: /tmp must exist.
  cfg=(--config.env PATH=/bin --config.user 65534
    --config.label operators.operatorframework.io.index.configs.v1=/configs
    --config.entrypoint /bin/opm --config.cmd serve --config.cmd /configs --config.cmd --port=50051)
  cat_digest="$(oci_image "${IMG_DIR}/catalog.tar" "${CATALOG_IMAGE}" cfg \
    "${stage}/cat-bin:/bin" "${stage}/configs:/configs" "${stage}/tmp:/tmp")"
  log "catalog image ${CATALOG_IMAGE} ${cat_digest}"

  cat >"${IMG_DIR}/env" <<EOF
OLM_VERSION=${OLM_VERSION}
OPM_VERSION=${OPM_VERSION}
BUNDLE_VERSION=${BUNDLE_VERSION}
CSV_NAME=${csv_name}
OLM_IMAGE=${OLM_IMAGE}
BUNDLE_IMAGE=${BUNDLE_IMAGE}
BUNDLE_REF=${BUNDLE_REF}
CATALOG_IMAGE=${CATALOG_IMAGE}
EOF
  printf '%s\n' "${IMG_KEY}" >"${IMG_DIR}/.stamp"
  rm -rf "${stage}"
  log "images built in $((SECONDS - start))s: $(du -sh "${IMG_DIR}"/*.tar | awk '{printf "%s %s; ", $2, $1}')"
fi
printf '%s\n' "${CACHE_DIR}"
