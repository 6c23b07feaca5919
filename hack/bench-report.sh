#!/usr/bin/env bash
# `teamaccess report` at scale: a control plane of its own with N namespaces
# (default 5000), the real operator granting a Reader group in all of them and
# a Writer group in some, and hand-made RoleBindings to users in every tenth.
# Times `report --format json` under the read-only role of config/rbac-report
# and counts its requests in the API server's audit log.
#   REPORT_BENCH_NAMESPACES=5000 REPORT_BENCH_PROFILE=release hack/bench-report.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${REPORT_BENCH_NAMESPACES:-5000}
PROFILE=${REPORT_BENCH_PROFILE:-release}
RUNS=3

if [[ $PROFILE == release ]]; then
  cargo build --release --quiet
else
  cargo build --quiet
fi
BIN=${CARGO_TARGET_DIR:-target}/$([[ $PROFILE == release ]] && echo release || echo debug)/teamaccess
DIR=$(mktemp -d "${TMPDIR:-/tmp}/teamaccess-report-bench.XXXXXX")
# shellcheck source=hack/operator-lib.sh
. hack/operator-lib.sh
cleanup() { stop_operator; hack/control-plane.sh down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
# shellcheck disable=SC1090
. "$(hack/control-plane.sh up "$DIR")"
install_operator
start_operator "$BIN" 0

echo "== $N namespaces, a user RoleBinding in every tenth" >&2
python3 - "$N" "$DIR/objects" <<'PY'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
chunks = 4
files = [open(f"{out}.{i}.json", "w") for i in range(chunks)]
items = [[] for _ in range(chunks)]
for i in range(n):
    ns = f"bench-{i:05d}"
    items[i % chunks].append({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": ns, "labels": {"team": "bench"}}})
for i, f in enumerate(files):
    json.dump({"apiVersion": "v1", "kind": "List", "items": items[i]}, f)
bindings = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "hand-made", "namespace": f"bench-{i:05d}"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"user{i}@example.com"}]}
            for i in range(0, n, 10)]
json.dump({"apiVersion": "v1", "kind": "List", "items": bindings}, open(f"{out}.bindings.json", "w"))
PY
pids=()
for i in 0 1 2 3; do kubectl create -f "$DIR/objects.$i.json" >/dev/null & pids+=($!); done
# not a bare `wait`: that would wait for the operator too
wait "${pids[@]}"
kubectl create -f "$DIR/objects.bindings.json" >/dev/null

echo "== the operator grants Reader everywhere, Writer in 100 namespaces" >&2
writer=$(python3 -c "import json; print(json.dumps([f'bench-{i:05d}' for i in range(min(100, $N))]))")
kubectl apply --server-side -f - >/dev/null <<YAML
apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata: {name: bench}
spec:
  groups:
    - {id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a, name: bench-readers}
  grants:
    - {tier: Reader, namespaceSelector: {matchLabels: {team: bench}}}
    - {tier: Writer, namespaces: $writer}
YAML
for _ in $(seq 600); do
  applied=$(kubectl get teamaccess bench -o jsonpath='{.status.summary.applied}' 2>/dev/null || true)
  [[ $applied == "$N" ]] && break
  sleep 1
done
[[ $applied == "$N" ]] || { echo "the operator applied $applied of $N namespaces" >&2; exit 1; }

echo "== report under config/rbac-report" >&2
kubectl apply --server-side -k config/rbac-report >/dev/null
kubectl create serviceaccount reporter -n default >/dev/null
kubectl create clusterrolebinding reporter --clusterrole=teamaccess-report --serviceaccount=default:reporter >/dev/null
token=$(kubectl create token reporter -n default --duration=1h)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat >"$DIR/reporter.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: u, user: {token: "$token"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
KC
sleep 2
for r in $(seq "$RUNS"); do
  before=$(wc -l <"$TEAMACCESS_TEST_AUDIT_LOG")
  start=$(date +%s.%N)
  "$BIN" report --kubeconfig "$DIR/reporter.kubeconfig" --format json >"$DIR/report.json" || true
  end=$(date +%s.%N)
  sleep 1
  requests=$(tail -n +"$((before + 1))" "$TEAMACCESS_TEST_AUDIT_LOG" | grep -c '"username":"system:serviceaccount:default:reporter"' || true)
  awk -v r="$r" -v a="$start" -v b="$end" -v q="$requests" 'BEGIN { printf "run %d: %.2f s, %d requests\n", r, b - a, q }'
done
python3 - "$DIR/report.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = sum(len(g["grants"]) for g in d["groups"])
print(f"namespaces in report: {len([g for g in d['groups'] if g['namespace'] != '*'])}, grants: {rows}, findings: {len(d['findings'])}, counts: {d['counts']}")
PY
wc -c "$DIR/report.json" | awk '{printf "json output: %.1f MB\n", $1/1e6}'
