#!/usr/bin/env bash
# Start a real etcd + kube-apiserver on 127.0.0.1 for tests.
#
#   hack/controlplane/up.sh DIR
#
# DIR gets: certificates and keys (pki/), the etcd data (etcd-data/),
# etcd.log, kube-apiserver.log, etcd.pid, kube-apiserver.pid, kubeconfig
# (cluster-admin via a bearer token in group system:masters) and
# controlplane.env (ports, URLs, token, bin dir; shell syntax).
#
# Env:
#   KUBE_NPM_BIN_DIR   folder with kube-apiserver, etcd, kubectl (default:
#                      the last stdout line of build.sh, which builds once)
#   ETCD_PORT, ETCD_PEER_PORT, APISERVER_PORT
#                      fixed ports (default: free ports picked at random)
#   CRDS_DIR           CRDs applied once ready (default: <repo>/crds)
#   READY_TIMEOUT      seconds to wait for etcd and /readyz (default 120)
#   KEEP_ON_FAILURE=1  leave the processes running when start-up fails
#
# On failure the tail of the logs goes to stderr and the exit code is non-zero.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${HERE}/../.." && pwd)"

log() { printf '[controlplane/up] %s\n' "$*" >&2; }

[[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
CRDS_DIR="${CRDS_DIR:-${REPO_ROOT}/crds}"

for t in openssl curl base64; do
  command -v "${t}" >/dev/null || { log "ERROR: ${t} is required"; exit 1; }
done

if [[ -z "${KUBE_NPM_BIN_DIR:-}" ]]; then
  KUBE_NPM_BIN_DIR="$("${HERE}/build.sh" | tail -n1)"
fi
BIN="${KUBE_NPM_BIN_DIR}"
for b in etcd kube-apiserver kubectl; do
  [[ -x "${BIN}/${b}" ]] || { log "ERROR: ${BIN}/${b} not found or not executable"; exit 1; }
done

# Alive and not a zombie (a reparented child may wait long for its reaper).
alive() {
  local state
  [[ -r "/proc/$1/stat" ]] || return 1
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "${state}" && "${state}" != Z && "${state}" != X ]]
}

for f in etcd.pid kube-apiserver.pid; do
  if [[ -s "${DIR}/${f}" ]] && alive "$(cat "${DIR}/${f}")"; then
    log "ERROR: ${DIR}/${f} names a running process; run down.sh ${DIR} first"
    exit 1
  fi
done

STARTED=0
show_logs() {
  local f
  for f in "${DIR}/etcd.log" "${DIR}/kube-apiserver.log" "${DIR}/crds.log"; do
    [[ -s "${f}" ]] || continue
    printf '\n===== tail -n 40 %s =====\n' "${f}" >&2
    tail -n 40 "${f}" >&2
  done
}
stop_all() {
  local f pid
  for f in kube-apiserver.pid etcd.pid; do
    [[ -s "${DIR}/${f}" ]] || continue
    pid="$(cat "${DIR}/${f}")"
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${pid}" 2>/dev/null || true
    rm -f "${DIR}/${f}"
  done
}
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    log "FAILED (exit ${rc}); logs are in ${DIR}"
    show_logs
    if ((STARTED)) && [[ "${KEEP_ON_FAILURE:-0}" != 1 ]]; then
      stop_all
    fi
  fi
  exit "${rc}"
}
trap on_exit EXIT

# ---------------------------------------------------------------- ports
port_in_use() {
  if command -v ss >/dev/null; then
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
PICKED=" "
# free_port VAR: set VAR to a free port unless it is already set.
free_port() {
  local p
  [[ -n "${!1:-}" ]] && return 0
  for _ in $(seq 1 200); do
    # Below Linux's ephemeral range (32768+) so outgoing sockets don't race us.
    p=$((20000 + RANDOM % 12000))
    [[ "${PICKED}" == *" ${p} "* ]] && continue
    port_in_use "${p}" && continue
    PICKED+="${p} "
    printf -v "$1" '%s' "${p}"
    return 0
  done
  log "ERROR: no free port found"
  return 1
}

# ---------------------------------------------------------------- pki
PKI="${DIR}/pki"
mkdir -p "${PKI}"
chmod 700 "${PKI}"
if [[ ! -s "${PKI}/apiserver.crt" ]]; then
  log "generating certificates in ${PKI}"
  (
    cd "${PKI}"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=kube-npm-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
    # Service-account token signing key pair.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f apiserver.csr apiserver.ext ca.srl
    chmod 600 ./*.key
  )
fi
if [[ ! -s "${PKI}/tokens.csv" ]]; then
  TOKEN="$(openssl rand -hex 32)"
  # token,user,uid,"group1,group2"
  printf '%s,kube-npm-admin,kube-npm-admin,"system:masters"\n' "${TOKEN}" >"${PKI}/tokens.csv"
  chmod 600 "${PKI}/tokens.csv"
fi
TOKEN="$(cut -d, -f1 "${PKI}/tokens.csv" | head -n1)"

# ---------------------------------------------------------------- start
DEADLINE=$((SECONDS + READY_TIMEOUT))

# wait_for NAME PIDFILE CMD... : run CMD until it succeeds, the process dies
# or the deadline passes.
wait_for() {
  local name="$1" pidfile="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "${pidfile}")" 2>/dev/null; then
      log "${name} exited during start-up"
      return 1
    fi
    if ((SECONDS >= DEADLINE)); then
      log "${name} not ready after ${READY_TIMEOUT}s"
      return 1
    fi
    sleep 0.25
  done
}

start_etcd() {
  mkdir -p "${DIR}/etcd-data"
  chmod 700 "${DIR}/etcd-data"
  local unsafe=()
  # etcd >= 3.5: skip fsync, the data is throw-away.
  if "${BIN}/etcd" --help 2>&1 | grep -q -- '--unsafe-no-fsync'; then unsafe=(--unsafe-no-fsync); fi
  "${BIN}/etcd" \
    --name=kube-npm-test \
    --data-dir="${DIR}/etcd-data" \
    --listen-client-urls="http://127.0.0.1:${ETCD_PORT}" \
    --advertise-client-urls="http://127.0.0.1:${ETCD_PORT}" \
    --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster="kube-npm-test=http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster-state=new \
    --log-level=warn \
    "${unsafe[@]+"${unsafe[@]}"}" \
    </dev/null >>"${DIR}/etcd.log" 2>&1 &
  echo $! >"${DIR}/etcd.pid"
  STARTED=1
  wait_for etcd "${DIR}/etcd.pid" curl -fsS -m 2 "http://127.0.0.1:${ETCD_PORT}/health"
}

start_apiserver() {
  "${BIN}/kube-apiserver" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --secure-port="${APISERVER_PORT}" \
    --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
    --cert-dir="${PKI}" \
    --tls-cert-file="${PKI}/apiserver.crt" \
    --tls-private-key-file="${PKI}/apiserver.key" \
    --client-ca-file="${PKI}/ca.crt" \
    --token-auth-file="${PKI}/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range=10.96.0.0/16 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${PKI}/sa.pub" \
    --service-account-signing-key-file="${PKI}/sa.key" \
    --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true \
    --profiling=false \
    --v=1 \
    </dev/null >>"${DIR}/kube-apiserver.log" 2>&1 &
  echo $! >"${DIR}/kube-apiserver.pid"
  STARTED=1
  wait_for kube-apiserver "${DIR}/kube-apiserver.pid" \
    curl -fsS -m 5 --cacert "${PKI}/ca.crt" -H "Authorization: Bearer ${TOKEN}" \
    "https://127.0.0.1:${APISERVER_PORT}/readyz"
}

FIXED_PORTS=0
[[ -n "${ETCD_PORT:-}${ETCD_PEER_PORT:-}${APISERVER_PORT:-}" ]] && FIXED_PORTS=1
started_ok=0
for attempt in 1 2 3; do
  free_port ETCD_PORT
  free_port ETCD_PEER_PORT
  free_port APISERVER_PORT
  log "attempt ${attempt}: etcd on 127.0.0.1:${ETCD_PORT} (peer ${ETCD_PEER_PORT}), kube-apiserver on 127.0.0.1:${APISERVER_PORT}"
  t0=${SECONDS}
  if start_etcd && start_apiserver; then
    started_ok=1
    break
  fi
  # Retry with other ports only if a port was taken in the meantime.
  if ((FIXED_PORTS)) || ! grep -qi 'address already in use' "${DIR}/etcd.log" "${DIR}/kube-apiserver.log" 2>/dev/null; then
    break
  fi
  log "a port was taken; retrying with other ports"
  stop_all
  rm -rf "${DIR}/etcd-data"
  for f in etcd.log kube-apiserver.log; do
    if [[ -f "${DIR}/${f}" ]]; then mv -f "${DIR}/${f}" "${DIR}/${f}.attempt${attempt}"; fi
  done
  unset ETCD_PORT ETCD_PEER_PORT APISERVER_PORT
  DEADLINE=$((SECONDS + READY_TIMEOUT))
done
((started_ok)) || exit 1
log "ready in $((SECONDS - t0))s"

SERVER="https://127.0.0.1:${APISERVER_PORT}"
umask 077
cat >"${DIR}/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-npm-test
  cluster:
    server: ${SERVER}
    certificate-authority-data: $(base64 -w0 "${PKI}/ca.crt")
users:
- name: kube-npm-admin
  user:
    token: ${TOKEN}
contexts:
- name: kube-npm-test
  context:
    cluster: kube-npm-test
    user: kube-npm-admin
current-context: kube-npm-test
EOF
cat >"${DIR}/controlplane.env" <<EOF
KUBE_NPM_BIN_DIR='${BIN}'
KUBECONFIG='${DIR}/kubeconfig'
APISERVER_URL='${SERVER}'
APISERVER_PORT=${APISERVER_PORT}
ETCD_URL='http://127.0.0.1:${ETCD_PORT}'
ETCD_PORT=${ETCD_PORT}
ETCD_PEER_PORT=${ETCD_PEER_PORT}
ETCD_PID=$(cat "${DIR}/etcd.pid")
APISERVER_PID=$(cat "${DIR}/kube-apiserver.pid")
TOKEN='${TOKEN}'
EOF
umask 022

# ---------------------------------------------------------------- CRDs
shopt -s nullglob
crd_files=("${CRDS_DIR}"/*.yaml "${CRDS_DIR}"/*.yml)
shopt -u nullglob
if ((${#crd_files[@]} > 0)); then
  log "applying ${#crd_files[@]} file(s) from ${CRDS_DIR}"
  kc=("${BIN}/kubectl" --kubeconfig="${DIR}/kubeconfig")
  args=()
  for f in "${crd_files[@]}"; do args+=(-f "${f}"); done
  names="$("${kc[@]}" apply --server-side --field-manager=kube-npm-e2e -o name "${args[@]}" 2>>"${DIR}/crds.log")"
  printf '%s\n' "${names}" >>"${DIR}/crds.log"
  crds=()
  while IFS= read -r n; do
    [[ "${n}" == customresourcedefinition.apiextensions.k8s.io/* ]] && crds+=("${n}")
  done <<<"${names}"
  if ((${#crds[@]} > 0)); then
    remaining=$((DEADLINE - SECONDS)); ((remaining >= 30)) || remaining=30
    "${kc[@]}" wait --for=condition=Established --timeout="${remaining}s" "${crds[@]}" >>"${DIR}/crds.log" 2>&1
    log "${#crds[@]} CRD(s) established"
  fi
fi

log "up: ${SERVER} (KUBECONFIG=${DIR}/kubeconfig)"
printf '%s\n' "${DIR}/kubeconfig"
