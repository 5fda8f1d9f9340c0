#!/usr/bin/env bash
# Pack (once) the agnhost binary from ./build.sh as an OCI image archive under
# the exact reference that upstream's e2e.test expects (read from the pinned
# module's test/utils/image/manifest.go, e.g.
# registry.k8s.io/e2e-test-images/agnhost:2.59), so that nodes without any
# registry can run the NetworkPolicy e2e pods (imagePullPolicy IfNotPresent).
#
# The image: /agnhost (static, CGO off), ENTRYPOINT ["/agnhost"] CMD ["pause"]
# like upstream's. The netpol tests exec /agnhost directly (serve-hostname,
# connect, porter) and need no shell; busybox-static is added as /bin/sh and
# its applets (wget, nc, ip, ...) only to help a human debug a pod with
# `kubectl exec -- sh` (upstream's agnhost has a shell too).
#
# The archive is an OCI image layout tar whose index carries both
# org.opencontainers.image.ref.name (the tag) and io.containerd.image.name
# (the full reference): `ctr -n k8s.io images import ARCHIVE` (containerd 1.6)
# names the image with the latter, no --base-name needed.
#
# Env knobs:
#   WITH_SHELL=1|0        add busybox-static (default 1; needs package busybox-static)
#   KUBE_NPM_CACHE=/dir   cache root (default ~/.cache/kube-npm)
# Needs: umoci, jq, tar; root (umoci unpack keeps file owners).
# Cached under <cache>/conformance/<k8s version>/images/ with a stamp; nothing
# else is left behind. Progress goes to stderr; the LAST stdout line is the
# archive path. The image reference is written next to it (<archive>.ref).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WITH_SHELL="${WITH_SHELL:-1}"
# Bump when the image recipe changes in a way the key below does not see.
IMAGE_REV=1

log() { printf '[conformance/agnhost-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for bin in umoci jq tar sha256sum; do
  command -v "${bin}" >/dev/null || die "${bin} is missing (apt-get install -y umoci jq)"
done
[[ "$(id -u)" == 0 ]] || die "needs root (umoci unpack/repack as root keeps file owners)"
BUSYBOX=""
if [[ "${WITH_SHELL}" == 1 ]]; then
  BUSYBOX="$(command -v busybox || true)"
  [[ -n "${BUSYBOX}" ]] || die "WITH_SHELL=1 needs busybox (apt-get install -y busybox-static), or set WITH_SHELL=0"
  # A dynamically linked busybox would not run in an image without libc.
  if ldd "${BUSYBOX}" >/dev/null 2>&1; then
    die "${BUSYBOX} is dynamically linked: install busybox-static, or set WITH_SHELL=0"
  fi
fi

BIN_DIR="$(ONLY=agnhost "${HERE}/build.sh" | tail -n1)"
AGNHOST="${BIN_DIR}/agnhost"
[[ -x "${AGNHOST}" ]] || die "build.sh gave no agnhost in ${BIN_DIR}"
K8S_VERSION="$(basename "$(dirname "${BIN_DIR}")")"

# The reference e2e.test uses: configs[Agnhost] = Config{list.PromoterE2eRegistry, "agnhost", "2.59"}
# in the module's manifest.go, with the default PromoterE2eRegistry.
K8S_DIR="$(cd "${HERE}/go" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
MANIFEST="${K8S_DIR}/test/utils/image/manifest.go"
[[ -f "${MANIFEST}" ]] || die "cannot find ${MANIFEST} (module k8s.io/kubernetes not downloaded?)"
TAG="$(sed -n 's/.*configs\[Agnhost\] *= *Config{list\.PromoterE2eRegistry, *"agnhost", *"\([^"]*\)"}.*/\1/p' "${MANIFEST}")"
REGISTRY="$(sed -n 's/.*PromoterE2eRegistry: *"\([^"]*\)",.*/\1/p' "${MANIFEST}" | head -n1)"
[[ -n "${TAG}" && -n "${REGISTRY}" ]] || die "cannot read agnhost's registry/tag from ${MANIFEST}"
REF="${REGISTRY}/agnhost:${TAG}"

OUT_DIR="$(dirname "${BIN_DIR}")/images"
ARCHIVE="${OUT_DIR}/agnhost-${TAG}.oci.tar"
KEY="$({ sha256sum "${AGNHOST}" | cut -d' ' -f1; cat "${BASH_SOURCE[0]}"; echo "${REF} shell=${WITH_SHELL} rev=${IMAGE_REV}";
  [[ -z "${BUSYBOX}" ]] || sha256sum "${BUSYBOX}" | cut -d' ' -f1; } | sha256sum | cut -c1-16)"
STAMP="${ARCHIVE}.stamp"

if [[ -f "${ARCHIVE}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${KEY}" ]]; then
  log "up to date: ${REF} (${K8S_VERSION})"
else
  mkdir -p "${OUT_DIR}"
  tmp="$(mktemp -d "${OUT_DIR}/pack.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
  layout="${tmp}/layout" bundle="${tmp}/bundle"
  log "packing ${REF} from ${AGNHOST}"
  umoci init --layout "${layout}"
  umoci new --image "${layout}:${TAG}"
  umoci unpack --image "${layout}:${TAG}" "${bundle}" >/dev/null
  root="${bundle}/rootfs"
  install -m 0755 "${AGNHOST}" "${root}/agnhost"
  # runc creates the mount points kubelet needs (/etc/hosts, resolv.conf,
  # /dev, /proc, /sys, the service account dir); /tmp is for agnhost's own files.
  install -d -m 1777 "${root}/tmp"
  if [[ -n "${BUSYBOX}" ]]; then
    install -d "${root}/bin"
    install -m 0755 "${BUSYBOX}" "${root}/bin/busybox"
    for applet in $("${BUSYBOX}" --list); do
      [[ -e "${root}/bin/${applet}" ]] || ln -s busybox "${root}/bin/${applet}"
    done
  fi
  umoci repack --image "${layout}:${TAG}" "${bundle}"
  umoci config --image "${layout}:${TAG}" \
    --config.entrypoint /agnhost --config.cmd pause \
    --config.env PATH=/bin:/usr/bin:/sbin:/usr/sbin \
    --author kube-npm --created "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  umoci gc --layout "${layout}"
  # Give containerd the full reference: without io.containerd.image.name,
  # ctr 1.6 would name the image after the bare tag ("2.59").
  jq --arg ref "${REF}" --arg tag "${TAG}" \
    '.manifests |= map(select(.annotations["org.opencontainers.image.ref.name"] == $tag)
      | .annotations["io.containerd.image.name"] = $ref)' \
    "${layout}/index.json" >"${tmp}/index.json"
  [[ "$(jq '.manifests | length' "${tmp}/index.json")" == 1 ]] || die "unexpected index.json in ${layout}"
  mv -f "${tmp}/index.json" "${layout}/index.json"
  tar -C "${layout}" --sort=name --owner=0 --group=0 --numeric-owner -cf "${tmp}/image.tar" .
  mv -f "${tmp}/image.tar" "${ARCHIVE}"
  printf '%s\n' "${REF}" >"${ARCHIVE}.ref"
  printf '%s\n' "${KEY}" >"${STAMP}"
  log "wrote ${ARCHIVE} ($(du -h "${ARCHIVE}" | cut -f1)) as ${REF}"
fi
printf '%s\n' "${ARCHIVE}"
