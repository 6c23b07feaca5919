#!/usr/bin/env bash
# `make demo`: a local control plane, the operator under its own ServiceAccount
# and config/rbac, the samples applied, and what each sample group may do.
# Leaves everything running for you to explore; `make demo-down` stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR=${DEMO_DIR:-.dev/demo}
# shellcheck source=hack/operator-lib.sh
. hack/operator-lib.sh

if [ "${1:-}" = down ]; then
  if [ -d "$DIR" ]; then
    DIR=$(cd "$DIR" && pwd)
    stop_operator
    hack/control-plane.sh down "$DIR"
  fi
  exit 0
fi

# openssl: hack/control-plane.sh makes the control plane's certificates
hack/ensure-commands.sh openssl
cargo build --quiet
[ -f "$DIR/pids" ] && { DIR=$(cd "$DIR" && pwd); stop_operator; hack/control-plane.sh down "$DIR"; }
rm -rf "$DIR" && mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
# shellcheck disable=SC1090
. "$(hack/control-plane.sh up "$DIR")"
install_operator
start_operator "${CARGO_TARGET_DIR:-target}/debug/teamaccess" 18080

kubectl apply -f config/samples/namespaces.yaml >/dev/null
kubectl apply -k config/samples
kubectl wait --for=condition=Ready teamaccess --all --timeout=60s >/dev/null

echo
echo "\$ kubectl get teamaccess"
kubectl get teamaccess
echo
echo "\$ kubectl get teamaccess payments -o jsonpath='{.status.conditions}'   (abridged)"
kubectl get teamaccess payments -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'

# What a member of each sample group may do, as the API server decides it.
checks=("list pods" "get pods --subresource=log" "create deployments.apps" "get secrets"
        "create pods --subresource=exec" "create rolebindings.rbac.authorization.k8s.io" "delete resourcequotas")
labels=("list pods" "pods/log" "create deploy" "get secrets" "exec" "create RB" "delete quota")
namespaces=$(kubectl get ns -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}' | tr ' ' '\n' | grep -E '^(payments|orders|data)-' | sort)
while IFS='|' read -r group label; do
  echo
  echo "== $label ($group)"
  printf '%-18s' namespace
  for l in "${labels[@]}"; do printf '%-14s' "$l"; done
  echo
  for ns in $namespaces; do
    printf '%-18s' "$ns"
    for c in "${checks[@]}"; do
      # shellcheck disable=SC2086
      answer=$(kubectl auth can-i $c -n "$ns" --as=someone@example.com --as-group="$group" 2>/dev/null || true)
      printf '%-14s' "${answer:-no}"
    done
    echo
  done
done <<'GROUPS'
0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a|payments-developers (Writer in dev, Reader in prod)
5c2d8e1f-7a3b-4c9d-8e6f-0a1b2c3d4e5f|platform-oncall (Reader; Admin in payments-prod until 2030-01-01)
9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a|data-engineers (Admin in sandbox, Writer in pipelines)
GROUPS

cat <<MSG

The operator is running under its ServiceAccount (log: $DIR/operator.log,
metrics: http://127.0.0.1:18080/metrics). Try:
  source $DIR/env
  kubectl label ns orders-prod team=payments env=prod --overwrite   # onboarded at once
  kubectl delete rolebinding -n payments-dev teamaccess-payments   # drift: recreated
  kubectl get events -n default --field-selector reason=DriftCorrected
Stop it all with: make demo-down
MSG
