#!/usr/bin/env bash
# `make test`: starts a control plane (building it on first use), runs every
# unit, CLI and integration test against it in debug builds, and stops it
# whatever the tests did. KEEP_CLUSTER=1 leaves its state directory (logs,
# audit log, kubeconfig) for a post-mortem.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- tools the tests need, installed or built here (not by hand) ---------
# openssl: hack/control-plane.sh makes the control plane's certificates.
# glua (Argo CD's Lua), promtool and helm: built once into the tool cache.
hack/ensure-commands.sh openssl
TEAMACCESS_GLUA=$(hack/tool-glua.sh)
TEAMACCESS_PROMTOOL=$(hack/tool-promtool.sh)
TEAMACCESS_HELM=$(hack/tool-helm.sh)
export TEAMACCESS_GLUA TEAMACCESS_PROMTOOL TEAMACCESS_HELM
# --- end of tools ---------------------------------------------------------

dir=$(mktemp -d "${TMPDIR:-/tmp}/teamaccess-test.XXXXXX")
cleanup() {
  local rc=$?
  hack/control-plane.sh down "$dir" || true
  if [ "$rc" -ne 0 ] || [ -n "${KEEP_CLUSTER:-}" ]; then
    echo "control plane state kept in $dir (logs/, audit.log)" >&2
  else
    rm -rf "$dir"
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

env_file=$(hack/control-plane.sh up "$dir")
# shellcheck disable=SC1090
source "$env_file"
# failpoints: test-only pauses in the write path (see Cargo.toml); inert
# unless a test sets TEAMACCESS_FAILPOINT for the operator it starts
cargo test --all-targets --features failpoints "$@"
