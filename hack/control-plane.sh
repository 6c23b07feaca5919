#!/usr/bin/env bash
# A real control plane on loopback for tests and demos: etcd, kube-apiserver
# and kube-controller-manager, built by hack/build-control-plane.sh.
#
#   hack/control-plane.sh up DIR               start one with its state in DIR; prints DIR/env
#                                              (already running there: says so, changes nothing)
#   hack/control-plane.sh down DIR             stop every process of DIR (reverse order, by PID)
#   hack/control-plane.sh stop DIR COMPONENT [SIGNAL]
#                                              stop one component (etcd, kube-apiserver,
#                                              kube-controller-manager), TERM by default
#   hack/control-plane.sh start DIR COMPONENT  start it again: the same command line, the same
#                                              data and ports; returns once it serves
#
# DIR/env exports KUBECONFIG (admin) and the TEAMACCESS_TEST_* variables that
# the integration tests read. TEAMACCESS_APISERVER_FLAGS adds flags to
# kube-apiserver (a fault test runs one with --watch-cache=false; the rig's
# own test gives it a bad flag to see a failed `up` clean up).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "[control-plane] $*" >&2; }

free_port() {
  local p
  for _ in $(seq 200); do
    # below the kernel's ephemeral range (32768+), where a port no one listens on
    # may still be the local end of a connection and refuse a bind
    p=$((20000 + RANDOM % 12000))
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

COMPONENTS=(etcd kube-apiserver kube-controller-manager)
STOP_TIMEOUT=${TEAMACCESS_STOP_TIMEOUT:-10}

pid_of() { [ -f "$DIR/pids" ] || return 0; awk -v n="$1" '$1 == n {p = $2} END {print p}' "$DIR/pids"; }

# a process of this folder, not a PID reused by something else since, and not
# a zombie that no one has reaped yet (kill -0 succeeds on those)
running() { # pid
  local pid=$1 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ "$state" != Z ] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -F "$DIR/" >/dev/null
}

component_running() { running "$(pid_of "$1")"; }

# runs the command line stored in DIR/cmd/NAME (NUL-separated, so every flag
# comes back byte for byte on a restart) and records its PID
launch() { # name
  local name=$1 argv pid
  mapfile -d '' -t argv <"$DIR/cmd/$name"
  "${argv[@]}" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  pid=$!
  # until it execs, the PID is a copy of this script, which `running` does
  # not count as the component: wait for the exec (or the exit)
  local i
  for i in $(seq 100); do
    running "$pid" || [ ! -d "/proc/$pid" ] && break
    sleep 0.05
  done
  { grep -v "^$name " "$DIR/pids" 2>/dev/null || true; echo "$name $pid"; } >"$DIR/pids.new"
  mv "$DIR/pids.new" "$DIR/pids"
}

start() { # name cmd...
  local name=$1; shift
  mkdir -p "$DIR/cmd"
  printf '%s\0' "$@" >"$DIR/cmd/$name"
  launch "$name"
}

wait_for() { # description seconds component command...
  local what=$1 secs=$2 name=$3; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! component_running "$name"; then
      log "$name exited while waiting for $what; last lines of its log:"
      tail -n 20 "$DIR/logs/$name.log" >&2
      return 1
    fi
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

# kubectl speaks to all three, so no other HTTP client is needed
etcd_healthy() { "$BIN/kubectl" --kubeconfig=/dev/null --server="http://127.0.0.1:$etcd_port" get --raw /health </dev/null | grep -F '"health":"true"' >/dev/null; }
apiserver_ready() { "$BIN/kubectl" --kubeconfig="$DIR/admin.kubeconfig" get --raw /readyz </dev/null; }
# the controller-manager's serving certificate is self-signed
kcm_healthy() { "$BIN/kubectl" --kubeconfig="$DIR/admin.kubeconfig" --server="https://127.0.0.1:$kcm_port" --insecure-skip-tls-verify=true get --raw /healthz </dev/null; }

# waits until `name` serves, after up or start
ready() { # name
  case "$1" in
    etcd) wait_for "etcd /health" 60 etcd etcd_healthy ;;
    kube-apiserver) wait_for "kube-apiserver /readyz" 120 kube-apiserver apiserver_ready ;;
    kube-controller-manager) wait_for "kube-controller-manager /healthz" 60 kube-controller-manager kcm_healthy ;;
  esac
}

# TERM (or `signal`), then KILL after STOP_TIMEOUT seconds; returns once it is gone
stop_pid() { # name pid [signal]
  local name=$1 pid=$2 signal=${3:-TERM}
  running "$pid" || return 0
  kill "-$signal" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while running "$pid"; do
    if ((SECONDS >= deadline)); then
      log "$name ($pid) still running ${STOP_TIMEOUT}s after SIG$signal: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + STOP_TIMEOUT))
    fi
    sleep 0.1
  done
}

# every control-plane process of this folder: those in DIR/pids, and any other
# whose command line names the folder (one an older script or a failed start
# left behind); an operator or kubectl pointed at DIR is not ours to stop
folder_processes() {
  local f pid exe
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    exe=
    IFS= read -r -d '' exe 2>/dev/null <"$f" || [ -n "$exe" ] || continue
    case "${exe##*/}" in etcd | kube-apiserver | kube-controller-manager) ;; *) continue ;; esac
    running "$pid" && echo "${exe##*/} $pid"
  done
}

up() {
  local t0=$SECONDS
  BIN=$("$here/build-control-plane.sh")
  local alive=() dead=() c
  for c in "${COMPONENTS[@]}"; do
    if component_running "$c"; then alive+=("$c"); else dead+=("$c"); fi
  done
  if ((${#dead[@]} == 0)) && [ -f "$DIR/env" ]; then
    log "already running in $DIR (etcd $(pid_of etcd), kube-apiserver $(pid_of kube-apiserver), kube-controller-manager $(pid_of kube-controller-manager)): changing nothing"
    echo "$DIR/env"
    return 0
  fi
  if ((${#alive[@]} > 0)); then
    log "partly running in $DIR (running: ${alive[*]}; stopped: ${dead[*]}): changing nothing."
    log "restart the stopped ones with \`$0 start $DIR COMPONENT\`, or stop it all with \`$0 down $DIR\`"
    return 1
  fi
  # from here on, a failure stops whatever this start began
  trap 'rc=$?; if [ "$rc" -ne 0 ]; then log "up failed: stopping what it started"; down; fi' EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$DIR/logs"
  : >"$DIR/pids"
  # the same CA across restarts of one folder: etcd's data (tokens, secrets)
  # was written under it
  [ -f "$DIR/pki/ca.crt" ] || pki "$DIR"
  local etcd_port peer_port api_port kcm_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
  printf 'etcd_port=%s\napi_port=%s\nkcm_port=%s\n' "$etcd_port" "$api_port" "$kcm_port" >"$DIR/ports"

  start etcd "$BIN/etcd" --name=teamaccess --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="teamaccess=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn
  ready etcd

  # one audit event per request (at ResponseComplete), metadata only: enough to
  # count who wrote what, without request bodies
  cat >"$DIR/audit-policy.yaml" <<POL
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
POL
  local extra=()
  # word splitting on purpose: a list of flags
  # shellcheck disable=SC2206
  [ -z "${TEAMACCESS_APISERVER_FLAGS:-}" ] || extra=($TEAMACCESS_APISERVER_FLAGS)
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
    --profiling=false "${extra[@]}"
  local server="https://127.0.0.1:$api_port"
  kubeconfig "$DIR/admin.kubeconfig" "$server" "$DIR/pki/admin.crt" "$DIR/pki/admin.key"
  kubeconfig "$DIR/kcm.kubeconfig" "$server" "$DIR/pki/kcm.crt" "$DIR/pki/kcm.key"
  local kc=("$BIN/kubectl" --kubeconfig="$DIR/admin.kubeconfig")
  ready kube-apiserver

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$DIR/kcm.kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --controllers=clusterrole-aggregation-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller \
    --service-account-private-key-file="$DIR/pki/sa.key" --root-ca-file="$DIR/pki/ca.crt" \
    --use-service-account-credentials=true
  # the aggregation controller fills view/edit/admin; until it runs they have no rules
  wait_for "the view ClusterRole to be aggregated" 120 kube-controller-manager view_aggregated "${kc[@]}"

  cat >"$DIR/env" <<ENV
export KUBECONFIG="$DIR/admin.kubeconfig"
export TEAMACCESS_TEST_KUBECONFIG="$DIR/admin.kubeconfig"
export TEAMACCESS_TEST_AUDIT_LOG="$DIR/audit.log"
export TEAMACCESS_TEST_KUBECTL="$BIN/kubectl"
export TEAMACCESS_TEST_ETCD="http://127.0.0.1:$etcd_port"
export PATH="$BIN:\$PATH"
ENV
  trap - EXIT INT TERM
  log "ready in $((SECONDS - t0))s at $server"
  echo "$DIR/env"
}

down() {
  local name pid any=
  # reverse start order: controller-manager, apiserver, etcd
  for name in kube-controller-manager kube-apiserver etcd; do
    pid=$(pid_of "$name")
    if running "$pid"; then any=1; stop_pid "$name" "$pid"; fi
  done
  # and anything else of this folder's, in the same order
  while read -r name pid; do
    [ -n "$pid" ] || continue
    any=1; log "also stopping $name ($pid), not in $DIR/pids"; stop_pid "$name" "$pid"
  done < <(folder_processes | sort -r)
  rm -f "$DIR/pids"
  if [ -n "$any" ]; then log "stopped"; else log "nothing running in $DIR"; fi
}

stop_component() { # name [signal]
  local name=$1 pid
  pid=$(pid_of "$name")
  if ! running "$pid"; then log "$name is not running in $DIR"; return 0; fi
  stop_pid "$name" "$pid" "${2:-TERM}"
  log "$name ($pid) stopped with SIG${2:-TERM}"
}

start_component() { # name
  local name=$1 t0=$SECONDS
  [ -f "$DIR/cmd/$name" ] || { log "no command line for $name in $DIR/cmd: was it started with \`up\`?"; return 1; }
  if component_running "$name"; then log "$name is already running in $DIR ($(pid_of "$name"))"; return 0; fi
  BIN=$("$here/build-control-plane.sh")
  # shellcheck disable=SC1091
  . "$DIR/ports"
  launch "$name"
  ready "$name"
  log "$name ($(pid_of "$name")) serving again in $((SECONDS - t0))s"
}

usage() { echo "usage: $0 up|down DIR | stop DIR COMPONENT [SIGNAL] | start DIR COMPONENT" >&2; exit 2; }

cmd=${1:-}; DIR=${2:-}
[ -n "$DIR" ] || usage
case "$cmd" in
  up | down) mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd); "$cmd" ;;
  stop | start)
    component=${3:-}
    [[ " ${COMPONENTS[*]} " == *" $component "* ]] || { echo "unknown component '$component': one of ${COMPONENTS[*]}" >&2; usage; }
    [ -d "$DIR" ] || { log "no control plane in $DIR"; exit 1; }
    DIR=$(cd "$DIR" && pwd)
    if [ "$cmd" = stop ]; then stop_component "$component" "${4:-TERM}"; else start_component "$component"; fi
    ;;
  *) usage ;;
esac
