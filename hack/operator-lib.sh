# Sourced by demo.sh and bench.sh: install the operator's CRD and RBAC into a
# running control plane and run the operator under its own ServiceAccount.
# Expects: DIR (control plane state dir, with env sourced), and kubectl on PATH.

# install_operator: CRD, namespace, config/rbac; writes $DIR/operator.kubeconfig
# holding only the ServiceAccount's token (a client cert there would win).
install_operator() {
  kubectl create namespace teamaccess-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl apply --server-side -f crds/ >/dev/null
  kubectl wait --for=condition=Established crd/teamaccesses.teamaccess.dev --timeout=60s >/dev/null
  kubectl apply --server-side -k config/rbac >/dev/null
  local token server ca
  token=$(kubectl create token teamaccess -n teamaccess-system --duration=24h)
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  cat >"$DIR/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: teamaccess
  cluster: {server: "$server", certificate-authority-data: "$ca"}
users:
- name: teamaccess
  user: {token: "$token"}
contexts:
- name: teamaccess
  context: {cluster: teamaccess, user: teamaccess}
current-context: teamaccess
KC
}

# start_operator BINARY HTTP_PORT [ARGS...]: runs it in the background, logs to
# $DIR/operator.log, PID in $DIR/operator.pid; waits until it leads.
start_operator() {
  local bin=$1 port=$2; shift 2
  "$bin" run --kubeconfig "$DIR/operator.kubeconfig" --http-address "127.0.0.1:$port" \
    --operator-namespace teamaccess-system "$@" >"$DIR/operator.log" 2>&1 &
  echo $! >"$DIR/operator.pid"
  for _ in $(seq 300); do
    grep -q "leading: reconciling" "$DIR/operator.log" && return 0
    kill -0 "$(cat "$DIR/operator.pid")" 2>/dev/null || { cat "$DIR/operator.log" >&2; return 1; }
    sleep 0.2
  done
  echo "the operator did not start leading; its log:" >&2
  tail -20 "$DIR/operator.log" >&2
  return 1
}

stop_operator() {
  [ -f "$DIR/operator.pid" ] || return 0
  local pid
  pid=$(cat "$DIR/operator.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$DIR/operator.pid"
}
