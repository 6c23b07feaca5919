#!/usr/bin/env bash
# A real control plane on loopback for tests and demos: etcd, kube-apiserver
# and kube-controller-manager, built by hack/build-control-plane.sh.
#
#   hack/control-plane.sh up DIR     start one with its state in DIR; prints DIR/env
#   hack/control-plane.sh down DIR   stop it (by PID, reverse order)
#
# DIR/env exports KUBECONFIG (admin) and the TEAMACCESS_TEST_* variables that
# the integration tests read.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "[control-plane] $*" >&2; }

free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 30000))
    # nothing answers on a free port; taken ports are also remembered here so
    # two calls in one start never return the same one
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && [[ " ${TAKEN:-} " != *" $p "* ]]; then
      TAKEN="${TAKEN:-} $p"
      echo "$p"
      return
    fi
  done
  log "no free port found"; return 1
}

pki() {
  local d=$1/pki
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=teamaccess-test-ca" 2>/dev/null
    cat >san.cnf <<CNF
[ext]
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth
CNF
    cat >client.cnf <<CNF
[ext]
extendedKeyUsage=clientAuth
CNF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile san.cnf -extensions ext 2>/dev/null
    for who in "admin:/O=system:masters/CN=teamaccess-test-admin" "kcm:/CN=system:kube-controller-manager"; do
      name=${who%%:*}
      openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "${who#*:}" 2>/dev/null
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" -days 3650 -extfile client.cnf -extensions ext 2>/dev/null
    done
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

kubeconfig() { # file server user-cert user-key
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: teamaccess-test
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 <"$DIR/pki/ca.crt")
users:
- name: user
  user:
    client-certificate-data: $(base64 -w0 <"$3")
    client-key-data: $(base64 -w0 <"$4")
contexts:
- name: teamaccess-test
  context: {cluster: teamaccess-test, user: user}
current-context: teamaccess-test
KC
}

start() { # name cmd...
  local name=$1; shift
  "$@" >"$DIR/logs/$name.log" 2>&1 &
  echo "$name $!" >>"$DIR/pids"
}

wait_for() { # description seconds command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      log "timed out waiting for $what; last log lines:"
      tail -n 20 "$DIR"/logs/*.log >&2
      return 1
    fi
    sleep 0.3
  done
}

# jsonpath prints "null" for a ClusterRole with no rules
view_aggregated() { local r; r=$("$@" get clusterrole view -o jsonpath='{.rules[0].verbs}') && [ -n "$r" ] && [ "$r" != null ]; }

up() {
  local t0=$SECONDS
  BIN=$("$here/build-control-plane.sh")
  mkdir -p "$DIR/logs"
  : >"$DIR/pids"
  pki "$DIR"
  local etcd_port peer_port api_port kcm_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); kcm_port=$(free_port)

  start etcd "$BIN/etcd" --name=teamaccess --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="teamaccess=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn

  # one audit event per request (at ResponseComplete), metadata only: enough to
  # count who wrote what, without request bodies
  cat >"$DIR/audit-policy.yaml" <<POL
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
POL
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$DIR/pki" --tls-cert-file="$DIR/pki/apiserver.crt" --tls-private-key-file="$DIR/pki/apiserver.key" \
    --client-ca-file="$DIR/pki/ca.crt" --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$DIR/pki/sa.pub" --service-account-signing-key-file="$DIR/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
    --enable-admission-plugins=OwnerReferencesPermissionEnforcement \
    --audit-policy-file="$DIR/audit-policy.yaml" --audit-log-path="$DIR/audit.log" --audit-log-maxsize=0 \
    --profiling=false
  local server="https://127.0.0.1:$api_port"
  kubeconfig "$DIR/admin.kubeconfig" "$server" "$DIR/pki/admin.crt" "$DIR/pki/admin.key"
  kubeconfig "$DIR/kcm.kubeconfig" "$server" "$DIR/pki/kcm.crt" "$DIR/pki/kcm.key"
  local kc=("$BIN/kubectl" --kubeconfig="$DIR/admin.kubeconfig")
  wait_for "kube-apiserver /readyz" 120 "${kc[@]}" get --raw /readyz

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$DIR/kcm.kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --controllers=clusterrole-aggregation-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller \
    --service-account-private-key-file="$DIR/pki/sa.key" --root-ca-file="$DIR/pki/ca.crt" \
    --use-service-account-credentials=true
  # the aggregation controller fills view/edit/admin; until it runs they have no rules
  wait_for "the view ClusterRole to be aggregated" 120 view_aggregated "${kc[@]}"

  cat >"$DIR/env" <<ENV
export KUBECONFIG="$DIR/admin.kubeconfig"
export TEAMACCESS_TEST_KUBECONFIG="$DIR/admin.kubeconfig"
export TEAMACCESS_TEST_AUDIT_LOG="$DIR/audit.log"
export TEAMACCESS_TEST_KUBECTL="$BIN/kubectl"
export PATH="$BIN:\$PATH"
ENV
  log "ready in $((SECONDS - t0))s at $server"
  echo "$DIR/env"
}

down() {
  [ -f "$DIR/pids" ] || { log "nothing running in $DIR"; return 0; }
  local pids
  # reverse start order: controller-manager, apiserver, etcd
  pids=$(tac "$DIR/pids" | awk '{print $2}')
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -f "$DIR/pids"
  log "stopped"
}

cmd=${1:-}; DIR=${2:-}
case "$cmd" in
  up|down) [ -n "$DIR" ] || { echo "usage: $0 up|down DIR" >&2; exit 2; }
           mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd); "$cmd" ;;
  *) echo "usage: $0 up|down DIR" >&2; exit 2 ;;
esac
