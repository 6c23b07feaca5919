#!/usr/bin/env bash
# `make bench`: the operator (release build) against a real control plane at a
# few thousand managed objects, measured side by side with the alternative a
# platform team has today (render the same objects and `kubectl apply` them).
# Latencies come from the API server's audit log (server timestamps), not from
# the operator's own word. Prints a table; BENCH_NAMESPACES sets the scale.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${BENCH_NAMESPACES:-1000}
IDLE=${BENCH_IDLE_SECONDS:-30}
RESYNC=10s
command -v python3 >/dev/null || { echo "bench needs python3 to read the audit log" >&2; exit 1; }

echo "== building the release binary" >&2
cargo build --release --quiet
BIN=target/release/teamaccess
DIR=$(mktemp -d "${TMPDIR:-/tmp}/teamaccess-bench.XXXXXX")
# shellcheck source=hack/operator-lib.sh
. hack/operator-lib.sh
cleanup() { stop_operator; hack/control-plane.sh down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
# shellcheck disable=SC1090
. "$(hack/control-plane.sh up "$DIR")"
install_operator

now() { date +%s.%N; }
cpu_seconds() { # utime+stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}
rss_mb() { awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }

echo "== $N namespaces" >&2
for i in $(seq 1 "$N"); do
  printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: bench-%04d, labels: {bench: "yes"}}\n---\n' "$i"
done >"$DIR/namespaces.yaml"
kubectl apply --server-side -f "$DIR/namespaces.yaml" >/dev/null

teamaccess() { # name tier
  cat <<TA
apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata: {name: $1}
spec:
  groups: [{id: 11111111-2222-4333-8444-555555555555}, {id: 66666666-7777-4888-9999-000000000000}]
  grants: [{tier: $2, namespaceSelector: {matchLabels: {bench: "yes"}}}]
TA
}

echo "== baseline: render + kubectl apply --server-side of the same objects" >&2
{ teamaccess baseline-writers Writer; echo ---; teamaccess baseline-readers Reader; } >"$DIR/baseline.yaml"
kubectl get ns -l bench=yes -o yaml >"$DIR/ns-list.yaml"
t0=$(now)
"$BIN" render -f "$DIR/baseline.yaml" --namespaces "$DIR/ns-list.yaml" \
  --api-groups "$(kubectl api-versions | paste -sd, -)" >"$DIR/baseline-objects.yaml"
kubectl apply --server-side -f "$DIR/baseline-objects.yaml" >/dev/null
t1=$(now)
baseline_objects=$(grep -cE "^kind: (Role|RoleBinding)$" "$DIR/baseline-objects.yaml")
kubectl delete -f "$DIR/baseline-objects.yaml" --wait=false >/dev/null

echo "== operator: converge" >&2
start_operator "$BIN" 18181 --resync-period "$RESYNC" --log-format json
PID=$(cat "$DIR/operator.pid")
cpu0=$(cpu_seconds "$PID")
t2=$(now)
{ teamaccess writers Writer; echo ---; teamaccess readers Reader; } | kubectl apply -f - >/dev/null
for ta in writers readers; do
  until [ "$(kubectl get teamaccess "$ta" -o jsonpath='{.status.summary.applied}' 2>/dev/null)" = "$N" ]; do sleep 0.2; done
done
t3=$(now)
cpu1=$(cpu_seconds "$PID")
rss_converged=$(rss_mb "$PID")
managed=$(kubectl get roles,rolebindings -A -l app.kubernetes.io/managed-by=teamaccess --no-headers | wc -l)

echo "== operator: steady state for ${IDLE}s (resync every $RESYNC)" >&2
sleep 3
idle_from=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
cpu2=$(cpu_seconds "$PID")
sleep "$IDLE"
cpu3=$(cpu_seconds "$PID")
idle_to=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
rss_idle=$(rss_mb "$PID")

echo "== operator: drift and onboarding latency" >&2
for i in $(seq 1 10); do
  kubectl delete rolebinding -n "bench-$(printf %04d $((i * 37)))" teamaccess-writers >/dev/null
  sleep 0.5
done
for i in $(seq 1 10); do
  kubectl create namespace "bench-new-$i" >/dev/null
  kubectl label namespace "bench-new-$i" bench=yes >/dev/null
  sleep 0.5
done
sleep 3
peak=$(hwm_mb "$PID")
reconcile_mean=$(curl -s http://127.0.0.1:18181/metrics | awk '/^teamaccess_reconcile_duration_seconds_sum/{s=$2} /^teamaccess_reconcile_duration_seconds_count/{c=$2} END{ if (c>0) printf "%.1f", 1000*s/c; else print "n/a"}')

python3 - "$DIR/audit.log" "$idle_from" "$idle_to" <<'PY' >"$DIR/audit-results"
import json, sys, statistics
from datetime import datetime
log, idle_from, idle_to = sys.argv[1:]
def ts(s): return datetime.fromisoformat(s.replace("Z", "+00:00"))
sa = "system:serviceaccount:teamaccess-system:teamaccess"
events = [json.loads(l) for l in open(log)]
writes = {"create", "update", "patch", "delete", "deletecollection"}
f, t = ts(idle_from[:26] + "Z"), ts(idle_to[:26] + "Z")
idle_writes = [e for e in events if e["user"]["username"] == sa and e["verb"] in writes
               and e["objectRef"].get("resource") != "leases" and f <= ts(e["requestReceivedTimestamp"]) <= t]
lease_writes = [e for e in events if e["user"]["username"] == sa and e["verb"] in writes
               and e["objectRef"].get("resource") == "leases" and f <= ts(e["requestReceivedTimestamp"]) <= t]
def latency(trigger, reaction):
    out = []
    for e in events:
        if trigger(e):
            ns = e["objectRef"].get("namespace") or e["objectRef"].get("name")
            t0 = ts(e["stageTimestamp"])
            later = [ts(r["stageTimestamp"]) for r in events if reaction(r, ns) and ts(r["stageTimestamp"]) >= t0]
            if later: out.append((min(later) - t0).total_seconds() * 1000)
    return out
admin = lambda e: e["user"]["username"] != sa
rb_created = lambda r, ns: r["user"]["username"] == sa and r["verb"] == "create" and r["objectRef"].get("resource") == "rolebindings" and r["objectRef"].get("namespace") == ns and r["responseStatus"]["code"] == 201
drift = latency(lambda e: admin(e) and e["verb"] == "delete" and e["objectRef"].get("resource") == "rolebindings" and e["objectRef"].get("name") == "teamaccess-writers", rb_created)
onboard = latency(lambda e: admin(e) and e["verb"] == "patch" and e["objectRef"].get("resource") == "namespaces" and e["objectRef"].get("name", "").startswith("bench-new-"), rb_created)
med = lambda xs: f"{statistics.median(xs):.0f}" if xs else "n/a"
mx = lambda xs: f"{max(xs):.0f}" if xs else "n/a"
print(len(idle_writes), len(lease_writes), med(drift), mx(drift), len(drift), med(onboard), mx(onboard), len(onboard))
PY
read -r idle_writes lease_writes drift_med drift_max drift_n onboard_med onboard_max onboard_n <"$DIR/audit-results"

awk -v n="$N" -v objs="$managed" -v b0="$t0" -v b1="$t1" -v bo="$baseline_objects" \
    -v o0="$t2" -v o1="$t3" -v c0="$cpu0" -v c1="$cpu1" -v c2="$cpu2" -v c3="$cpu3" -v idle="$IDLE" \
    -v rssc="$rss_converged" -v rssi="$rss_idle" -v peak="$peak" -v iw="$idle_writes" -v lw="$lease_writes" \
    -v dm="$drift_med" -v dx="$drift_max" -v dn="$drift_n" -v om="$onboard_med" -v ox="$onboard_max" -v on="$onboard_n" \
    -v rm="$reconcile_mean" 'BEGIN {
  base = b1 - b0; op = o1 - o0
  printf "\nteamaccess bench: %d namespaces, 2 TeamAccess objects (Writer + Reader, 2 groups)\n", n
  printf "%-58s %12s\n", "measure", "value"
  printf "%-58s %12d\n", "managed objects (Roles + RoleBindings)", objs
  printf "%-58s %11.1fs\n", "baseline: render + kubectl apply --server-side (" bo " objects)", base
  printf "%-58s %11.1fs\n", "operator: apply TeamAccess -> all namespaces Applied", op
  printf "%-58s %11.2fx\n", "ratio operator / baseline", op / base
  printf "%-58s %9.0f/s\n", "operator throughput (objects per second)", objs / op
  printf "%-58s %11.1fs\n", "operator CPU during convergence", c1 - c0
  printf "%-58s %10.1f%%\n", "operator CPU while idle (" idle "s, resync every 10s)", 100 * (c3 - c2) / idle
  printf "%-58s %12d\n", "writes while idle, from the audit log (excluding leases)", iw
  printf "%-58s %12d\n", "lease renewals while idle", lw
  printf "%-58s %9s ms\n", "drift: RoleBinding deleted -> recreated, median (n=" dn ")", dm
  printf "%-58s %9s ms\n", "drift: max", dx
  printf "%-58s %9s ms\n", "onboarding: namespace labelled -> RoleBinding, median (n=" on ")", om
  printf "%-58s %9s ms\n", "onboarding: max", ox
  printf "%-58s %9s ms\n", "mean reconcile duration (from /metrics)", rm
  printf "%-58s %9.1f MiB\n", "RSS after convergence", rssc
  printf "%-58s %9.1f MiB\n", "RSS idle", rssi
  printf "%-58s %9.1f MiB\n", "peak RSS (VmHWM)", peak
}'
