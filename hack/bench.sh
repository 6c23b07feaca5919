#!/usr/bin/env bash
# `make bench`: teamaccess side by side with FairwindsOps rbac-manager, the
# best-known peer, on the same real control plane build, in the same run.
# Every (scenario, operator) gets a FRESH control plane, and the operators
# alternate which goes first, so neither inherits the other's warm etcd or a
# quieter machine. Every figure but memory and CPU comes from the API
# server's audit log (server timestamps, filtered to the operator's own user),
# not from the operator's own word; bench/ (the bench-audit example) reads it
# with the reader the integration tests count requests with.
#
# Scenarios (BENCH_SCENARIOS=S,M,L, default all; BENCH_OPERATORS=teamaccess,rbac-manager):
#   S  100 CRs x 5 named namespaces (500 bindings) out of 100 namespaces
#   M  1,000 CRs x 10 named namespaces (10,000 bindings) out of 1,000
#   L  one CR with a selector over 2,000 namespaces (BENCH_L_NAMESPACES)
# Per run: objects applied with the operator stopped, then it starts
# (convergence); BENCH_IDLE_SECONDS (60) of steady state; BENCH_DRIFT_EVENTS
# (200) RoleBinding deletes BENCH_GAP_MS (20) apart, then a burst of
# BENCH_BURST (50) at once; BENCH_ONBOARD_EVENTS (200) namespace creates that a
# selector matches, the same gap apart.
#
# BENCH_TEAMACCESS_BIN: measure that binary instead of building the release one.
# Output: one table per scenario on stderr; the JSON's path on stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCENARIOS=${BENCH_SCENARIOS:-S,M,L}
IDLE=${BENCH_IDLE_SECONDS:-60}
DRIFT=${BENCH_DRIFT_EVENTS:-200}
BURST=${BENCH_BURST:-50}
ONBOARD=${BENCH_ONBOARD_EVENTS:-200}
GAP_MS=${BENCH_GAP_MS:-20}
L_NAMESPACES=${BENCH_L_NAMESPACES:-2000}
CONVERGE_TIMEOUT=${BENCH_CONVERGE_TIMEOUT:-900}
# both by default; one of them to debug a phase without the other's run
OPERATORS=${BENCH_OPERATORS:-teamaccess,rbac-manager}
command -v curl >/dev/null || { echo "bench needs curl to send the drift and onboarding events" >&2; exit 1; }
log() { echo "[bench] $*" >&2; }

# rbac-manager's controller-runtime manager binds :8080 for metrics and cannot
# be told otherwise; a run with 8080 taken would measure a crashed peer.
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  echo "port 8080 is in use; rbac-manager hard-codes it for its metrics, free it first" >&2
  exit 1
fi

# BENCH_TEAMACCESS_BIN measures a binary built elsewhere (another commit) as is
TA_BIN=${BENCH_TEAMACCESS_BIN:-$PWD/target/release/teamaccess}
if [ -z "${BENCH_TEAMACCESS_BIN:-}" ] && [[ ,$OPERATORS, == *,teamaccess,* ]]; then
  log "building the release binary"
  cargo build --release --quiet
fi
cargo build --release --quiet --example bench-audit --example bench-floor
AUDIT=$PWD/target/release/examples/bench-audit
FLOOR=$PWD/target/release/examples/bench-floor
FLOOR_CONCURRENCY=${BENCH_FLOOR_CONCURRENCY:-16,32,64}
RBM_BIN= RBM_CRD=
if [[ ,$OPERATORS, == *,rbac-manager,* ]]; then
  RBM_BIN=$(hack/tool-rbac-manager.sh)
  RBM_CRD=$(dirname "$RBM_BIN")/2_crd.yaml
fi

OUT_DIR=$PWD/target/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUNS=$OUT_DIR/runs-$STAMP
mkdir -p "$RUNS"

# shellcheck source=hack/operator-lib.sh
. hack/operator-lib.sh
DIR=
RBM_PID=
cleanup() {
  [ -n "$RBM_PID" ] && kill "$RBM_PID" 2>/dev/null || true
  [ -n "$DIR" ] || return 0
  stop_operator
  hack/control-plane.sh down "$DIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

utc() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }
hwm_mib() { awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_mib() { awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
gap() { sleep "$(awk -v ms="$GAP_MS" 'BEGIN{printf "%.3f", ms/1000}')"; }

# The admin's requests go straight to the API server with curl: one kubectl
# per event would cost more than the gap between events on two cores.
admin_curl() { # METHOD PATH [JSON]
  curl -sS -o /dev/null --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
    -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "$SERVER$2"
}

# Objects ----------------------------------------------------------------
ns_name() { printf 'bench-%04d' "$1"; }
GROUP=11111111-2222-4333-8444-555555555555

# the namespaces of CR i (1-based) in a named scenario: PER consecutive ones,
# wrapping around the NS namespaces
named_namespaces() { # i per ns
  local i=$1 per=$2 ns=$3 k out=()
  for ((k = 0; k < per; k++)); do out+=("$(ns_name $(( ((i - 1) * per + k) % ns + 1 )))"); done
  local IFS=,; echo "${out[*]}"
}
tier_of() { (($1 % 2)) && echo Writer || echo Reader; }
cluster_role_of() { [ "$1" = Writer ] && echo edit || echo view; }

teamaccess_named() { # name tier ns,ns
  printf 'apiVersion: teamaccess.dev/v1alpha1\nkind: TeamAccess\nmetadata: {name: %s}\nspec:\n  groups: [{id: %s}]\n  grants: [{tier: %s, namespaces: [%s]}]\n---\n' "$1" "$GROUP" "$2" "$3"
}
teamaccess_selector() { # name tier label
  printf 'apiVersion: teamaccess.dev/v1alpha1\nkind: TeamAccess\nmetadata: {name: %s}\nspec:\n  groups: [{id: %s}]\n  grants: [{tier: %s, namespaceSelector: {matchLabels: {%s: "yes"}}}]\n---\n' "$1" "$GROUP" "$2" "$3"
}
# An RBACDefinition equivalent to a TeamAccess: the same group bound to the
# tier's built-in ClusterRole (view for Reader, edit for Writer) in the same
# namespaces, one roleBindings entry per named namespace.
rbacdef_named() { # name tier ns,ns
  local cr ns
  cr=$(cluster_role_of "$2")
  printf 'apiVersion: rbacmanager.reactiveops.io/v1beta1\nkind: RBACDefinition\nmetadata: {name: %s}\nrbacBindings:\n- name: team\n  subjects: [{kind: Group, name: %s}]\n  roleBindings:\n' "$1" "$GROUP"
  for ns in ${3//,/ }; do printf '  - {clusterRole: %s, namespace: %s}\n' "$cr" "$ns"; done
  echo ---
}
rbacdef_selector() { # name tier label
  printf 'apiVersion: rbacmanager.reactiveops.io/v1beta1\nkind: RBACDefinition\nmetadata: {name: %s}\nrbacBindings:\n- name: team\n  subjects: [{kind: Group, name: %s}]\n  roleBindings:\n  - clusterRole: %s\n    namespaceSelector: {matchLabels: {%s: "yes"}}\n---\n' "$1" "$GROUP" "$(cluster_role_of "$2")" "$3"
}

# scenario_objects SCENARIO OPERATOR: the custom resources on stdout
# (sets NS_COUNT and EXPECTED_BINDINGS)
scenario_shape() {
  case $1 in
    S) NS_COUNT=100 CRS=100 PER=5 ;;
    M) NS_COUNT=1000 CRS=1000 PER=10 ;;
    L) NS_COUNT=$L_NAMESPACES CRS=1 PER=0 ;;
    *) echo "unknown scenario '$1' in BENCH_SCENARIOS (S, M or L)" >&2; exit 2 ;;
  esac
  if [ "$PER" -gt 0 ]; then EXPECTED_BINDINGS=$((CRS * PER)); else EXPECTED_BINDINGS=$NS_COUNT; fi
}
scenario_objects() { # scenario operator
  local i
  if [ "$PER" -gt 0 ]; then
    for ((i = 1; i <= CRS; i++)); do
      "${2}_named" "$(printf 'team-%04d' "$i")" "$(tier_of "$i")" "$(named_namespaces "$i" "$PER" "$NS_COUNT")"
    done
  else
    "${2}_selector" team-0001 Writer bench
  fi
}

# Operators --------------------------------------------------------------
install_rbac_manager() {
  kubectl apply --server-side -f "$RBM_CRD" >/dev/null
  kubectl wait --for=condition=Established crd/rbacdefinitions.rbacmanager.reactiveops.io --timeout=60s >/dev/null
  kubectl create namespace rbac-manager >/dev/null
  kubectl create serviceaccount rbac-manager -n rbac-manager >/dev/null
  # Its shipped ClusterRole cannot create RoleBindings that carry a
  # blockOwnerDeletion ownerReference under OwnerReferencesPermissionEnforcement
  # (our control plane enables it), so it runs as cluster-admin here.
  kubectl create clusterrolebinding rbac-manager --clusterrole=cluster-admin \
    --serviceaccount=rbac-manager:rbac-manager >/dev/null
  local token ca
  token=$(kubectl create token rbac-manager -n rbac-manager --duration=24h)
  ca=$(base64 -w0 <"$DIR/pki/ca.crt")
  cat >"$DIR/rbac-manager.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: {server: "$SERVER", certificate-authority-data: "$ca"}
users:
- name: rbac-manager
  user: {token: "$token"}
contexts:
- name: bench
  context: {cluster: bench, user: rbac-manager}
current-context: bench
KC
}

start_rbac_manager() {
  KUBECONFIG=$DIR/rbac-manager.kubeconfig "$RBM_BIN" --metrics-address "127.0.0.1:$(free_local_port)" \
    >"$DIR/operator.log" 2>&1 &
  RBM_PID=$!
  echo "$RBM_PID" >"$DIR/operator.pid"
  sleep 0.5
  kill -0 "$RBM_PID" 2>/dev/null || { cat "$DIR/operator.log" >&2; return 1; }
}

free_local_port() {
  local p
  for _ in $(seq 100); do
    # below the kernel's ephemeral range (32768+), where a port no one listens on
    # may still be the local end of a connection and refuse a bind
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  return 1
}

binding_count() { # label selector of the operator's RoleBindings
  kubectl get rolebindings -A -l "$1" -o name 2>/dev/null | wc -l
}

wait_bindings() { # selector count timeout-seconds
  local deadline=$((SECONDS + $3))
  until [ "$(binding_count "$1")" -ge "$2" ]; do
    [ $SECONDS -lt $deadline ] || { log "timed out waiting for $2 RoleBindings ($1): $(binding_count "$1")"; return 1; }
    sleep 1
  done
}

# One run: a fresh control plane, one operator, every phase ---------------
run_one() { # scenario operator
  local sc=$1 op=$2 run=$RUNS/$1-$2 label user pid apiserver kind
  # the shell functions that write each operator's custom resources
  if [ "$op" = teamaccess ]; then kind=teamaccess; else kind=rbacdef; fi
  mkdir -p "$run"
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/teamaccess-bench.XXXXXX")
  log "$sc/$op: fresh control plane"
  # shellcheck disable=SC1090
  . "$(hack/control-plane.sh up "$DIR")"
  SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  apiserver=$(awk '$1 == "kube-apiserver" {print $2}' "$DIR/pids")

  scenario_shape "$sc"
  local i
  for ((i = 1; i <= NS_COUNT; i++)); do
    printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {bench: "yes"}}\n---\n' "$(ns_name "$i")"
  done >"$DIR/namespaces.yaml"
  kubectl apply --server-side -f "$DIR/namespaces.yaml" >/dev/null

  if [ "$op" = teamaccess ]; then
    install_operator
    label=app.kubernetes.io/managed-by=teamaccess
    user=system:serviceaccount:teamaccess-system:teamaccess
  else
    install_rbac_manager
    label=rbac-manager=reactiveops
    user=system:serviceaccount:rbac-manager:rbac-manager
  fi
  scenario_objects "$sc" "$kind" >"$DIR/objects.yaml"
  log "$sc/$op: $NS_COUNT namespaces, $(grep -c '^kind:' "$DIR/objects.yaml") custom resources, operator stopped"
  kubectl apply --server-side -f "$DIR/objects.yaml" >/dev/null

  local started converged idle_from idle_to cpu_start cpu_conv cpu_i0 cpu_i1 api_i0 api_i1 rss_idle
  started=$(utc)
  if [ "$op" = teamaccess ]; then
    start_operator "$TA_BIN" "$(free_local_port)" --log-format json
  else
    start_rbac_manager
  fi
  pid=$(cat "$DIR/operator.pid")
  cpu_start=$(cpu_seconds "$pid")
  log "$sc/$op: converging to $EXPECTED_BINDINGS RoleBindings"
  wait_bindings "$label" "$EXPECTED_BINDINGS" "$CONVERGE_TIMEOUT"
  converged=$(utc)
  cpu_conv=$(cpu_seconds "$pid")

  # status writes and requeues trail the last binding; steady state starts
  # once they are done
  sleep 5
  log "$sc/$op: steady state for ${IDLE}s"
  idle_from=$(utc); cpu_i0=$(cpu_seconds "$pid"); api_i0=$(cpu_seconds "$apiserver")
  sleep "$IDLE"
  idle_to=$(utc); cpu_i1=$(cpu_seconds "$pid"); api_i1=$(cpu_seconds "$apiserver")
  rss_idle=$(rss_mib "$pid")

  log "$sc/$op: drift, $DRIFT deletes ${GAP_MS}ms apart, then $BURST at once"
  kubectl get rolebindings -A -l "$label" -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}' \
    | sort >"$DIR/bindings"
  local total step drift_from burst_from onboard_from onboard_to ns name k=0 burst_pids=()
  total=$(wc -l <"$DIR/bindings")
  drift_from=$(utc)
  # spread over the whole set, so every CR (and every part of the selector) is hit
  step=$(( total / (DRIFT + BURST) )); [ "$step" -ge 1 ] || step=1
  awk -v s="$step" 'NR % s == 0' "$DIR/bindings" | head -n $((DRIFT + BURST)) >"$DIR/drift-targets"
  while IFS=/ read -r ns name; do
    k=$((k + 1))
    if [ "$k" -le "$DRIFT" ]; then
      admin_curl DELETE "/apis/rbac.authorization.k8s.io/v1/namespaces/$ns/rolebindings/$name"
      gap
    else
      [ "$k" -eq $((DRIFT + 1)) ] && { wait_bindings "$label" "$total" 120 || true; sleep 2; burst_from=$(utc); }
      admin_curl DELETE "/apis/rbac.authorization.k8s.io/v1/namespaces/$ns/rolebindings/$name" &
      burst_pids+=($!)
    fi
  done <"$DIR/drift-targets"
  # only the curls: a bare wait would wait for the operator too
  [ ${#burst_pids[@]} -eq 0 ] || wait "${burst_pids[@]}"
  burst_from=${burst_from:-$(utc)}
  wait_bindings "$label" "$total" 120 || true
  sleep 2

  log "$sc/$op: onboarding, $ONBOARD namespaces ${GAP_MS}ms apart"
  if [ "$sc" != L ]; then
    # named scenarios: a selector CR for the new namespaces, settled first
    "${kind}_selector" onboard Writer bench-onboard | kubectl apply --server-side -f - >/dev/null
    sleep 3
  fi
  local onboard_label=bench-onboard; [ "$sc" = L ] && onboard_label=bench
  onboard_from=$(utc)
  for ((i = 1; i <= ONBOARD; i++)); do
    admin_curl POST /api/v1/namespaces \
      "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"onboard-$(printf %04d "$i")\",\"labels\":{\"$onboard_label\":\"yes\"}}}"
    gap
  done
  wait_bindings "$label" $((total + ONBOARD)) 120 || true
  sleep 2
  onboard_to=$(utc)

  cat >"$run/run.json" <<JSON
{"scenario": "$sc", "operator": "$op", "user": "$user", "namespaces": $NS_COUNT, "crs": $CRS,
 "expected_bindings": $EXPECTED_BINDINGS, "drift_events": $DRIFT, "burst": $BURST, "onboard_events": $ONBOARD,
 "gap_ms": $GAP_MS, "idle_seconds": $IDLE,
 "started": "$started", "converged_seen": "$converged", "idle_from": "$idle_from", "idle_to": "$idle_to",
 "drift_from": "$drift_from", "burst_from": "$burst_from", "onboard_from": "$onboard_from", "onboard_to": "$onboard_to",
 "cpu_convergence_s": $(awk -v a="$cpu_start" -v b="$cpu_conv" 'BEGIN{printf "%.2f", b-a}'),
 "cpu_total_s": $(cpu_seconds "$pid"),
 "cpu_idle_s": $(awk -v a="$cpu_i0" -v b="$cpu_i1" 'BEGIN{printf "%.2f", b-a}'),
 "apiserver_cpu_idle_s": $(awk -v a="$api_i0" -v b="$api_i1" 'BEGIN{printf "%.2f", b-a}'),
 "rss_idle_mib": $rss_idle, "peak_rss_mib": $(hwm_mib "$pid")}
JSON
  if [ "$op" = teamaccess ]; then stop_operator; else kill "$RBM_PID"; wait "$RBM_PID" 2>/dev/null || true; RBM_PID=; fi
  cp "$DIR/operator.log" "$run/operator.log"
  hack/control-plane.sh down "$DIR" >/dev/null 2>&1 || true
  # only this operator's requests and the admin's triggers are kept: the full log is large
  "$AUDIT" extract "$DIR/audit.log" "$run/run.json" >"$run/audit.jsonl"
  rm -rf "$DIR"; DIR=
  log "$sc/$op: done"
}

# The floor: a fresh control plane, the scenario's namespaces, and as many
# Roles and RoleBindings as the scenario's operator writes, created by
# bench/floor.rs as a ServiceAccount (not an admin: API priority and fairness
# exempts admins), once per concurrency in BENCH_FLOOR_CONCURRENCY.
floor_run() { # scenario
  local sc=$1 run=$RUNS/$1-floor per
  mkdir -p "$run"
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/teamaccess-bench.XXXXXX")
  log "$sc/floor: fresh control plane"
  # shellcheck disable=SC1090
  . "$(hack/control-plane.sh up "$DIR")"
  SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  local i
  for ((i = 1; i <= NS_COUNT; i++)); do
    printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {bench: "yes"}}\n---\n' "$(ns_name "$i")"
  done >"$DIR/namespaces.yaml"
  kubectl apply --server-side -f "$DIR/namespaces.yaml" >/dev/null
  kubectl create namespace bench-floor >/dev/null
  kubectl create serviceaccount floor -n bench-floor >/dev/null
  # what creating a Role with any rules and binding it takes, nothing more
  kubectl create clusterrole bench-floor --verb=create --resource=roles,rolebindings >/dev/null
  kubectl create clusterrole bench-floor-escalate --verb=escalate,bind --resource=roles >/dev/null
  kubectl create clusterrolebinding bench-floor --clusterrole=bench-floor --serviceaccount=bench-floor:floor >/dev/null
  kubectl create clusterrolebinding bench-floor-escalate --clusterrole=bench-floor-escalate --serviceaccount=bench-floor:floor >/dev/null
  local token ca
  token=$(kubectl create token floor -n bench-floor --duration=24h)
  ca=$(base64 -w0 <"$DIR/pki/ca.crt")
  printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster: {server: "%s", certificate-authority-data: "%s"}\nusers:\n- name: u\n  user: {token: "%s"}\ncontexts:\n- name: b\n  context: {cluster: b, user: u}\ncurrent-context: b\n' \
    "$SERVER" "$ca" "$token" >"$DIR/floor.kubeconfig"
  # named scenarios write PER bindings for each of CRS CRs over NS_COUNT
  # namespaces: the same count, spread evenly
  per=$(( EXPECTED_BINDINGS / NS_COUNT )); [ "$per" -ge 1 ] || per=1
  log "$sc/floor: $((2 * per * NS_COUNT)) objects per pass, concurrency $FLOOR_CONCURRENCY"
  KUBECONFIG=$DIR/floor.kubeconfig RUST_LOG=warn "$FLOOR" --namespaces "$NS_COUNT" --per-namespace "$per" \
    --concurrency "$FLOOR_CONCURRENCY" >"$run/floor.json"
  printf '{"scenario": "%s", "operator": "floor"}\n' "$sc" >"$run/run.json"
  hack/control-plane.sh down "$DIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"; DIR=
}

n=0
for sc in ${SCENARIOS//,/ }; do
  scenario_shape "$sc"
  # alternate which operator meets a fresh machine first
  if (( n % 2 == 0 )); then order="teamaccess rbac-manager"; else order="rbac-manager teamaccess"; fi
  for op in $order; do
    [[ ,$OPERATORS, == *,$op,* ]] || continue
    run_one "$sc" "$op"
  done
  [ -n "${BENCH_NO_FLOOR:-}" ] || floor_run "$sc"
  n=$((n + 1))
done

OUT=$OUT_DIR/bench-$STAMP.json
"$AUDIT" report "$RUNS" "$OUT" >&2
echo "$OUT"
