#!/usr/bin/env bash
# Bring up a real local Kubernetes cluster in network namespaces:
#   kc-fab  underlay bridge br0
#   kc-cp   192.168.250.10: etcd, kube-apiserver (:6443), kube-controller-manager, kube-scheduler
#   kc-nK   192.168.250.K, node "kc-nK": containerd (own socket/root/state), kubelet,
#           kube-proxy (iptables mode), CNI bridge cni0 10.244.K.1/24 (host-local IPAM)
# Service CIDR 10.96.0.0/16 (kubernetes = 10.96.0.1 -> 192.168.250.10:6443).
# Exits 0 once every node is Ready. Design and pitfalls: docs/adr/0012-real-cluster.md.
#
# Env:
#   CLUSTER_DIR      state dir (default /tmp/kube-npm-cluster)
#   NODE_COUNT       nodes (default 2, at most 9)
#   NODE_IPTABLES    nft|legacy (default nft): the iptables backend kube-proxy and
#                    kubelet use inside the nodes (legacy: a PATH dir of
#                    iptables* -> iptables-legacy* symlinks for them only)
#   KUBE_NPM_BIN_DIR bin dir with all binaries (default: hack/cluster/build.sh)
#   READY_TIMEOUT    seconds to wait for the nodes (default 180)
#   KEEP_ON_FAILURE=1  do not run down.sh when start-up fails
#
# Leaves running: the kc-* namespaces, the daemons (pid files in $CLUSTER_DIR),
# kubelet/containerd mounts under $CLUSTER_DIR. Writes $CLUSTER_DIR/cluster.env
# and $CLUSTER_DIR/admin.kubeconfig; the only stdout line is the cluster.env path.
# Undo with hack/cluster/down.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=up
# shellcheck source=lib/common.sh
source "${HERE}/lib/common.sh"

NODE_IPTABLES="${NODE_IPTABLES:-nft}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
[[ "${NODE_IPTABLES}" == nft || "${NODE_IPTABLES}" == legacy ]] || die "NODE_IPTABLES must be nft or legacy"
((NODE_COUNT >= 1 && NODE_COUNT <= 9)) || die "NODE_COUNT must be 1..9"
[[ "$(id -u)" == 0 ]] || die "must run as root (network namespaces, cgroups, mounts)"
for t in ip nsenter setsid openssl curl containerd containerd-shim-runc-v2 runc ctr umoci flock; do
  command -v "${t}" >/dev/null || die "${t} is required (apt-get install containerd runc containernetworking-plugins umoci iproute2 util-linux curl openssl)"
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
  die "/usr/lib/cni/{bridge,host-local,loopback} missing (apt-get install containernetworking-plugins)"
[[ -d /sys/fs/cgroup/cpu ]] || die "expected cgroup v1 hierarchies under /sys/fs/cgroup (see ADR 0012)"

# Refuse if (part of) a cluster is up: down.sh first.
for ns in "${FAB_NS}" "${CP_NS}" $(node_names); do
  [[ ! -e "/var/run/netns/${ns}" ]] || die "netns ${ns} exists: run hack/cluster/down.sh first"
done
if [[ -d "${CLUSTER_DIR}" ]]; then
  # rm -rf below: only a dir made by up.sh (marker file) or an empty one.
  if [[ ! -e "${CLUSTER_DIR}/.kube-npm-cluster" && -n "$(ls -A "${CLUSTER_DIR}")" ]]; then
    die "CLUSTER_DIR=${CLUSTER_DIR} exists, is not empty and was not made by up.sh: choose another"
  fi
  for f in "${CLUSTER_DIR}"/*.pid "${CLUSTER_DIR}"/*/*.pid; do
    if [[ -s "${f}" ]] && alive "$(cat "${f}")"; then die "${f} names a running process: run hack/cluster/down.sh first"; fi
  done
  [[ ! -e "${CLUSTER_DIR}/host-sysctls" ]] || die "${CLUSTER_DIR}/host-sysctls exists (a cluster was not taken down): run hack/cluster/down.sh first"
  # Old logs and state of a previous run go away, so this run's are clean.
  if grep -q " $(cd "${CLUSTER_DIR}" && pwd)[/ ]" /proc/self/mounts; then
    die "mounts under ${CLUSTER_DIR} remain: run hack/cluster/down.sh first"
  fi
  rm -rf "${CLUSTER_DIR}"
fi
mkdir -p "${CLUSTER_DIR}"
CLUSTER_DIR="$(cd "${CLUSTER_DIR}" && pwd)"
: >"${CLUSTER_DIR}/.kube-npm-cluster"
T_START="$(date +%s.%N)"

on_exit() {
  local rc=$?
  if ((rc != 0)); then
    log "FAILED (exit ${rc}); logs in ${CLUSTER_DIR}"
    local f
    for f in "${CLUSTER_DIR}"/*.log "${CLUSTER_DIR}"/*/*.log; do
      [[ -s "${f}" ]] || continue
      printf '\n===== tail -n 15 %s =====\n' "${f}" >&2
      tail -n 15 "${f}" >&2
    done
    if [[ "${KEEP_ON_FAILURE:-0}" != 1 ]]; then
      log "running down.sh (KEEP_ON_FAILURE=1 keeps the remains)"
      CLUSTER_DIR="${CLUSTER_DIR}" NODE_COUNT="${NODE_COUNT}" KEEP_LOGS=1 bash "${HERE}/down.sh" || true
    fi
  fi
  exit "${rc}"
}
trap on_exit EXIT

# ---------------------------------------------------------------- build
phase build
if [[ -z "${KUBE_NPM_BIN_DIR:-}" ]]; then
  KUBE_NPM_BIN_DIR="$("${HERE}/build.sh" | tail -n1)"
fi
BIN="${KUBE_NPM_BIN_DIR}"
IMG_DIR="$(cd "${BIN}/.." && pwd)/images"
for b in etcd kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy; do
  [[ -x "${BIN}/${b}" ]] || die "${BIN}/${b} missing"
done
[[ -s "${IMG_DIR}/pause.oci.tar" ]] || die "${IMG_DIR}/pause.oci.tar missing (hack/cluster/build.sh)"
K8S_VERSION="$("${BIN}/kubelet" --version | awk '{print $2}')"
KUBECTL=("${BIN}/kubectl" --kubeconfig "${CLUSTER_DIR}/admin.kubeconfig")
kc() { in_ns "${CP_NS}" "${KUBECTL[@]}" "$@"; }

# ---------------------------------------------------------------- host sysctls
# kubelet sets these (global, not per network namespace) at start when
# protectKernelDefaults is false; down.sh puts the recorded values back.
phase host-sysctls
for s in vm.overcommit_memory kernel.panic kernel.panic_on_oops; do
  printf '%s=%s\n' "${s}" "$(sysctl -n "${s}")"
done >"${CLUSTER_DIR}/host-sysctls"
# Paths outside CLUSTER_DIR that kubelet creates whatever its --root-dir:
# remember whether they existed so down.sh removes only what we made.
for p in /var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd; do
  if [[ -e "${p}" ]]; then echo "${p}"; fi
done >"${CLUSTER_DIR}/preexisting-paths"
# libcni caches results under /var/lib/cni/results whatever containerd's
# config says; containerd's own loopback network is named cni-loopback.
ls /var/lib/cni/results 2>/dev/null >"${CLUSTER_DIR}/preexisting-cni-results" || true

# ---------------------------------------------------------------- network
phase network
ip netns add "${FAB_NS}"
in_ns "${FAB_NS}" ip link set lo up
in_ns "${FAB_NS}" ip link add br0 type bridge
in_ns "${FAB_NS}" ip link set br0 up
# attach NS IP: veth from the fabric bridge to eth0 in NS.
attach() {
  local ns="$1" addr="$2" port="v-${1#kc-}"
  ip netns add "${ns}"
  in_ns "${ns}" ip link set lo up
  in_ns "${ns}" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "${FAB_NS}" link add "${port}" type veth peer name eth0 netns "${ns}"
  ip -n "${FAB_NS}" link set "${port}" master br0 up
  in_ns "${ns}" ip addr add "${addr}/24" dev eth0
  in_ns "${ns}" ip link set eth0 up
}
attach "${CP_NS}" "${CP_IP}"
for n in $(node_names); do
  attach "${n}" "$(node_ip "${n}")"
  in_ns "${CP_NS}" ip route add "$(node_pod_cidr "${n}")" via "$(node_ip "${n}")"
done
for n in $(node_names); do
  for m in $(node_names); do
    [[ "${m}" == "${n}" ]] || in_ns "${n}" ip route add "$(node_pod_cidr "${m}")" via "$(node_ip "${m}")"
  done
  # Host-network pods (e.g. a node agent) reach ClusterIPs: the route only
  # lets connect() pick eth0; kube-proxy's DNAT then rewrites the target.
  in_ns "${n}" ip route add "${SERVICE_CIDR}" via "${CP_IP}"
  in_ns "${n}" sysctl -qw net.ipv4.ip_forward=1
  # Bridged pod-to-pod traffic must traverse iptables (kube-proxy, policies).
  in_ns "${n}" sysctl -qw net.bridge.bridge-nf-call-iptables=1 ||
    die "net.bridge.bridge-nf-call-iptables is not available in a network namespace (br_netfilter)"
done

# ---------------------------------------------------------------- pki
phase pki
PKI="${CLUSTER_DIR}/pki"
mkdir -p "${PKI}"
chmod 700 "${PKI}"
(
  cd "${PKI}"
  # EC P-256 keys: generating ~12 RSA keys took 3-7 s on 2 busy cores.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 3650 \
    -subj "/CN=kube-npm-cluster-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out sa.key 2>/dev/null
  openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
)
# cert NAME SUBJECT EKU [SANS]: NAME.crt/NAME.key signed by the cluster CA.
cert() {
  local name="$1" subj="$2" eku="$3" sans="${4:-}"
  (
    cd "${PKI}"
    {
      echo "basicConstraints=critical,CA:FALSE"
      echo "keyUsage=critical,digitalSignature"
      echo "extendedKeyUsage=${eku}"
      [[ -z "${sans}" ]] || echo "subjectAltName=${sans}"
    } >"${name}.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "${name}.key" -out "${name}.csr" -subj "${subj}" 2>/dev/null
    openssl x509 -req -in "${name}.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out "${name}.crt" -days 3650 -extfile "${name}.ext" 2>/dev/null
    rm -f "${name}.csr" "${name}.ext"
  )
}
# kubeconfig FILE USER_CERT_NAME: a kubeconfig for https://CP_IP:6443.
kubeconfig() {
  local file="$1" c="$2"
  (
    umask 077
    cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-npm-cluster
  cluster:
    server: https://${CP_IP}:6443
    certificate-authority-data: $(base64 -w0 "${PKI}/ca.crt")
users:
- name: ${c}
  user:
    client-certificate-data: $(base64 -w0 "${PKI}/${c}.crt")
    client-key-data: $(base64 -w0 "${PKI}/${c}.key")
contexts:
- name: kube-npm-cluster
  context:
    cluster: kube-npm-cluster
    user: ${c}
current-context: kube-npm-cluster
EOF
  )
}
cert apiserver "/CN=kube-apiserver" serverAuth \
  "IP:${CP_IP},IP:${KUBERNETES_SVC_IP},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=kube-npm-admin" clientAuth
cert kcm "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
kubeconfig "${CLUSTER_DIR}/admin.kubeconfig" admin
kubeconfig "${CLUSTER_DIR}/kcm.kubeconfig" kcm
kubeconfig "${CLUSTER_DIR}/scheduler.kubeconfig" scheduler
kubeconfig "${CLUSTER_DIR}/kube-proxy.kubeconfig" kube-proxy
for n in $(node_names); do
  cert "kubelet-${n}" "/O=system:nodes/CN=system:node:${n}" clientAuth
  cert "kubelet-serving-${n}" "/CN=${n}" serverAuth "IP:$(node_ip "${n}"),DNS:${n}"
done
chmod 600 "${PKI}"/*.key

# ---------------------------------------------------------------- control plane
phase control-plane
DEADLINE=$((SECONDS + READY_TIMEOUT))
# wait_until WHAT PIDFILE CMD...: until CMD succeeds, the daemon dies or the deadline.
wait_until() {
  local what="$1" pidf="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    [[ -z "${pidf}" ]] || alive "$(cat "${pidf}")" || die "${what}: the process exited (see its log)"
    ((SECONDS < DEADLINE)) || die "${what}: not ready after ${READY_TIMEOUT}s"
    sleep 0.5
  done
}
mkdir -p "${CLUSTER_DIR}/etcd-data"
chmod 700 "${CLUSTER_DIR}/etcd-data"
start_daemon etcd "${CP_NS}" "${CLUSTER_DIR}/etcd.log" "${CLUSTER_DIR}/etcd.pid" \
  "${BIN}/etcd" --name=kc-cp --data-dir="${CLUSTER_DIR}/etcd-data" \
  --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
  --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
  --initial-cluster=kc-cp=http://127.0.0.1:2380 --initial-cluster-state=new \
  --listen-metrics-urls=http://127.0.0.1:2381 --unsafe-no-fsync --log-level=warn
wait_until etcd "${CLUSTER_DIR}/etcd.pid" in_ns "${CP_NS}" curl -fsS -m 2 http://127.0.0.1:2379/health

start_daemon kube-apiserver "${CP_NS}" "${CLUSTER_DIR}/kube-apiserver.log" "${CLUSTER_DIR}/kube-apiserver.pid" \
  "${BIN}/kube-apiserver" \
  --bind-address=0.0.0.0 --advertise-address="${CP_IP}" --secure-port=6443 \
  --etcd-servers=http://127.0.0.1:2379 \
  --cert-dir="${PKI}" --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
  --client-ca-file="${PKI}/ca.crt" \
  --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" \
  --kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --service-cluster-ip-range="${SERVICE_CIDR}" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="${PKI}/sa.pub" \
  --service-account-signing-key-file="${PKI}/sa.key" \
  --allow-privileged=true --profiling=false --v=1
wait_until kube-apiserver "${CLUSTER_DIR}/kube-apiserver.pid" \
  in_ns "${CP_NS}" curl -fsS -m 5 --cacert "${PKI}/ca.crt" --cert "${PKI}/admin.crt" --key "${PKI}/admin.key" \
  "https://${CP_IP}:6443/readyz"

# Nodes are registered up front with their fixed pod CIDR (kcm's CIDR
# allocation is off; spec.podCIDR cannot change once set). kubelet then
# finds its Node and completes it (labels, addresses, status).
for n in $(node_names); do
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: ${n}
  labels:
    kubernetes.io/hostname: ${n}
spec:
  podCIDR: $(node_pod_cidr "${n}")
  podCIDRs: [$(node_pod_cidr "${n}")]
EOF
done

start_daemon kube-controller-manager "${CP_NS}" "${CLUSTER_DIR}/kube-controller-manager.log" \
  "${CLUSTER_DIR}/kube-controller-manager.pid" \
  "${BIN}/kube-controller-manager" \
  --kubeconfig="${CLUSTER_DIR}/kcm.kubeconfig" \
  --authentication-kubeconfig="${CLUSTER_DIR}/kcm.kubeconfig" \
  --authorization-kubeconfig="${CLUSTER_DIR}/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file="${PKI}/sa.key" \
  --root-ca-file="${PKI}/ca.crt" \
  --cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key" \
  --service-cluster-ip-range="${SERVICE_CIDR}" \
  --allocate-node-cidrs=false --v=1
start_daemon kube-scheduler "${CP_NS}" "${CLUSTER_DIR}/kube-scheduler.log" "${CLUSTER_DIR}/kube-scheduler.pid" \
  "${BIN}/kube-scheduler" \
  --kubeconfig="${CLUSTER_DIR}/scheduler.kubeconfig" \
  --authentication-kubeconfig="${CLUSTER_DIR}/scheduler.kubeconfig" \
  --authorization-kubeconfig="${CLUSTER_DIR}/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --v=1

# ---------------------------------------------------------------- nodes
phase nodes
# kube-proxy (and kubelet) find iptables through PATH: NODE_IPTABLES=legacy
# puts a dir of iptables* -> *-legacy symlinks first, for them only.
NODE_PATH="${PATH}"
if [[ "${NODE_IPTABLES}" == legacy ]]; then
  d="${CLUSTER_DIR}/iptables-legacy-bin"
  mkdir -p "${d}"
  for fam in iptables ip6tables; do
    for suf in "" -save -restore; do
      src="$(command -v "${fam}-legacy${suf}")" || die "${fam}-legacy${suf} not found (iptables package)"
      ln -sfn "${src}" "${d}/${fam}${suf}"
    done
  done
  NODE_PATH="${d}:${PATH}"
fi

cgroup_hierarchies() {
  local h
  for h in /sys/fs/cgroup/*; do
    if [[ -d "${h}" ]] && mountpoint -q "${h}"; then echo "${h}"; fi
  done
}
# Pods of node N go under /CGROUP_PARENT/N in every hierarchy (kubelet checks
# that its cgroupRoot exists in all of them; cpuset needs cpus/mems first).
make_cgroups() {
  local n="$1" h c
  for h in $(cgroup_hierarchies); do
    for c in "${h}/${CGROUP_PARENT}" "${h}/${CGROUP_PARENT}/${n}"; do
      mkdir -p "${c}"
      if [[ -f "${c}/cpuset.cpus" ]]; then
        [[ -n "$(cat "${c}/cpuset.cpus")" ]] || cat "${h}/cpuset.cpus" >"${c}/cpuset.cpus"
        [[ -n "$(cat "${c}/cpuset.mems")" ]] || cat "${h}/cpuset.mems" >"${c}/cpuset.mems"
      fi
    done
  done
}

start_node() {
  local n="$1" k="${1#kc-n}" ip
  ip="$(node_ip "${n}")"
  local D="${CLUSTER_DIR}/n${k}"
  mkdir -p "${D}"/{containerd,runc,cni/net.d,cni-ipam,kubelet,kubelet-certs,pod-logs,volume-plugins}
  make_cgroups "${n}"

  cat >"${D}/containerd/config.toml" <<EOF
# containerd of node ${n}: own root, state, sockets (never /run/containerd/containerd.sock)
version = 2
root = "${D}/containerd/root"
state = "${D}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "${D}/containerd/containerd.sock"
[ttrpc]
  address = "${D}/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${D}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_REF}"
  # No CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj (ADR 0012).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${D}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${D}/cni/net.d"
    max_conf_num = 1
EOF
  # The network name prefixes libcni's cache files (/var/lib/cni/results/kc-nK-*).
  cat >"${D}/cni/net.d/10-kc.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "${n}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${D}/cni-ipam",
        "ranges": [[{"subnet": "$(node_pod_cidr "${n}")", "gateway": "10.244.${k}.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  start_daemon "containerd(${n})" "${n}" "${D}/containerd.log" "${D}/containerd.pid" \
    env PATH="${NODE_PATH}" containerd --config "${D}/containerd/config.toml"
  wait_until "containerd(${n})" "${D}/containerd.pid" \
    ctr --address "${D}/containerd/containerd.sock" version
  ctr --address "${D}/containerd/containerd.sock" -n k8s.io images import \
    --base-name "${PAUSE_REF%:*}" "${IMG_DIR}/pause.oci.tar" >>"${D}/images.log" 2>&1 ||
    die "importing ${IMG_DIR}/pause.oci.tar into ${n} failed (see ${D}/images.log)"
  # The test image: every node has it, pods use it with IfNotPresent/Never.
  if [[ -s "${IMG_DIR}/httpd.oci.tar" ]]; then
    ctr --address "${D}/containerd/containerd.sock" -n k8s.io images import \
      --base-name kube-npm.local/httpd "${IMG_DIR}/httpd.oci.tar" >>"${D}/images.log" 2>&1 ||
      die "importing ${IMG_DIR}/httpd.oci.tar into ${n} failed (see ${D}/images.log)"
  fi

  kubeconfig "${D}/kubelet.kubeconfig" "kubelet-${n}"
  cat >"${D}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /${CGROUP_PARENT}/${n}
failCgroupV1: false
failSwapOn: false
# kubelet would refuse to start unless the host already has its preferred
# kernel sysctls; up.sh records them and down.sh restores them.
protectKernelDefaults: false
containerRuntimeEndpoint: unix://${D}/containerd/containerd.sock
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: ${PKI}/kubelet-serving-${n}.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving-${n}.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: ""
volumePluginDir: ${D}/volume-plugins
podLogsDir: ${D}/pod-logs
# Local images only: never garbage-collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
serializeImagePulls: false
EOF
  start_daemon "kubelet(${n})" "${n}" "${D}/kubelet.log" "${D}/kubelet.pid" \
    env PATH="${NODE_PATH}" "${BIN}/kubelet" \
    --config="${D}/kubelet.yaml" --kubeconfig="${D}/kubelet.kubeconfig" \
    --root-dir="${D}/kubelet" --cert-dir="${D}/kubelet-certs" \
    --hostname-override="${n}" --node-ip="${ip}" --oom-score-adj=0 --v=1

  cat >"${D}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${CLUSTER_DIR}/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: ${n}
bindAddress: 0.0.0.0
clusterCIDR: ${POD_CIDR}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
# Leave conntrack sysctls alone (nf_conntrack_max is global to the host).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  minSyncPeriod: 1s
  syncPeriod: 30s
EOF
  start_daemon "kube-proxy(${n})" "${n}" "${D}/kube-proxy.log" "${D}/kube-proxy.pid" \
    env PATH="${NODE_PATH}" "${BIN}/kube-proxy" --config="${D}/kube-proxy.yaml" --v=1
}
for n in $(node_names); do start_node "${n}"; done

# ---------------------------------------------------------------- ready
phase wait-ready
all_ready() {
  local out
  out="$(kc get nodes -o 'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null)" || return 1
  local n
  for n in $(node_names); do grep -qx "${n}=True" <<<"${out}" || return 1; done
}
DEADLINE=$((SECONDS + READY_TIMEOUT))
until all_ready; do
  for n in $(node_names); do
    k="${n#kc-n}"
    for d in containerd kubelet kube-proxy; do
      alive "$(cat "${CLUSTER_DIR}/n${k}/${d}.pid")" || die "${d} of ${n} exited (see ${CLUSTER_DIR}/n${k}/${d}.log)"
    done
  done
  for d in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    alive "$(cat "${CLUSTER_DIR}/${d}.pid")" || die "${d} exited (see ${CLUSTER_DIR}/${d}.log)"
  done
  ((SECONDS < DEADLINE)) || { kc get nodes -o wide >&2 || true; die "nodes not Ready after ${READY_TIMEOUT}s"; }
  sleep 1
done
# The default ServiceAccount (kcm) must exist before pods can be created.
wait_until "default ServiceAccount" "" kc -n default get serviceaccount default
wait_until "kube-root-ca.crt" "" kc -n default get configmap kube-root-ca.crt
phase "done"

cat >"${CLUSTER_DIR}/cluster.env" <<EOF
# Written by hack/cluster/up.sh. Use the API from the control-plane namespace:
#   nsenter --net=/var/run/netns/\${CP_NS} kubectl --kubeconfig \${KUBECONFIG} ...
CLUSTER_DIR='${CLUSTER_DIR}'
KUBECONFIG='${CLUSTER_DIR}/admin.kubeconfig'
APISERVER_URL='https://${CP_IP}:6443'
CP_NS=${CP_NS}
CP_IP=${CP_IP}
FAB_NS=${FAB_NS}
NODES="$(node_names | tr '\n' ' ' | sed 's/ $//')"
NODE_IPS="$(for n in $(node_names); do node_ip "${n}"; done | tr '\n' ' ' | sed 's/ $//')"
POD_CIDR=${POD_CIDR}
SERVICE_CIDR=${SERVICE_CIDR}
NODE_IPTABLES=${NODE_IPTABLES}
BIN_DIR='${BIN}'
IMAGES_DIR='${IMG_DIR}'
KUBECTL='${BIN}/kubectl'
K8S_VERSION=${K8S_VERSION}
TEST_IMAGE=kube-npm.local/httpd:1
PAUSE_IMAGE=${PAUSE_REF}
EOF
kc get nodes -o wide >&2
log "up in $(awk -v a="${T_START}" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s: $(node_names | tr '\n' ' ')Ready; env in ${CLUSTER_DIR}/cluster.env"
# The one stdout line: where the cluster's env is.
printf '%s\n' "${CLUSTER_DIR}/cluster.env"
