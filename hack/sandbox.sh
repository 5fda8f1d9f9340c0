#!/usr/bin/env bash
# One command for a local kube-npm sandbox (docs/sandbox.md): a real kube-apiserver + etcd, nodes and
# pods as network namespaces, the operator and one agent per node, a sample workload.
#
#   bash hack/sandbox.sh [--nodes 2] [--dir DIR]
#
# Installs what is missing (idempotent; a second run only checks): the OS packages iptables, ipset,
# iproute2, conntrack (apt), npm dependencies (npm ci, if node_modules is missing), the build (if a
# source is newer than dist/), the control-plane binaries (hack/controlplane/build.sh, cached in
# ~/.cache/kube-npm). Then runs `kube-npm sandbox up` in the foreground: Ctrl-C stops and removes
# everything, as does `kube-npm sandbox down` from another shell. Needs root, Node >= 20, and Go the
# first time (to build kube-apiserver, etcd and kubectl).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[sandbox.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root: the sandbox creates network namespaces and programs iptables inside them"

need_pkgs=()
for bin in iptables:iptables ipset:ipset ip:iproute2 conntrack:conntrack curl:curl openssl:openssl modprobe:kmod; do
  command -v "${bin%%:*}" >/dev/null 2>&1 || need_pkgs+=("${bin##*:}")
done
if ((${#need_pkgs[@]} > 0)); then
  command -v apt-get >/dev/null || die "missing ${need_pkgs[*]} and no apt-get to install them"
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

command -v node >/dev/null || die "Node.js >= 20 is required"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node.js >= 20 is required (found $(node --version))"

if [[ ! -d node_modules ]]; then
  log "npm ci"
  npm ci --no-audit --no-fund >&2
fi

main=dist/operator/src/cli/main.js
if [[ ! -f "${main}" || ! -f dist/operator/src/cli/sandbox.js ]] ||
  [[ -n "$(find operator package.json tsconfig.json tsconfig.build.json -newer "${main}" -name '*.ts' -print -quit 2>/dev/null)" ]]; then
  log "npm run build"
  npm run build >&2
fi

log "control-plane binaries (hack/controlplane/build.sh; the first build takes about 8 min cold on 2 cores)"
bash hack/controlplane/build.sh >/dev/null

# main.js dispatches `sandbox` once the CLI wires it; the standalone entry works either way.
if grep -q "'./sandbox.js'" "${main}"; then
  exec node "${main}" sandbox up "$@"
fi
exec node dist/operator/src/cli/sandbox.js up "$@"
