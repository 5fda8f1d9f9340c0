# Shared by the scripts that build Kubernetes binaries from Go modules (hack/controlplane,
# hack/cluster, hack/conformance build.sh). Sourced; the caller defines log() and is_current NAME
# (true when NAME's binary and stamp are current) and keeps the names still to build in `need`.

# build_lock DIR: serialise concurrent builds of one cached version (flock on DIR/.lock, held on fd
# 9 until the caller exits), then drop from `need` what another build made current meanwhile.
build_lock() {
  exec 9>"$1/.lock"
  if command -v flock >/dev/null; then
    log "waiting for build lock $1/.lock"
    flock 9
  fi
  local still=() b
  for b in "${need[@]}"; do is_current "${b}" || still+=("${b}"); done
  need=("${still[@]+"${still[@]}"}")
}

# k8s_version_ldflags VERSION: the -X flags (leading space) that make a binary built from the
# module report VERSION, as a release build does; without them it calls itself v0.0.0-master.
k8s_version_ldflags() {
  local v="$1" major minor build_date pkg out=""
  minor="${v#v}"; major="${minor%%.*}"; minor="${minor#*.}"; minor="${minor%%.*}"
  build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    out+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    out+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  done
  printf '%s' "${out}"
}
