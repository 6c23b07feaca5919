#!/usr/bin/env bash
# Builds the Helm CLI from its Go module into a versioned cache folder outside
# the repository, once; prints the binary's absolute path on stdout (logs go
# to stderr). Tests find it through TEAMACCESS_HELM.
#
#   HELM_VERSION=v3.22.0 hack/tool-helm.sh
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE_ROOT=${TEAMACCESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teamaccess}
DIR="$CACHE_ROOT/tools/helm-$HELM_VERSION"
BIN="$DIR/bin/helm"
log() { echo "[tool-helm] $*" >&2; }

if [ -x "$BIN" ] && "$BIN" version --short >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

major=${HELM_VERSION#v}; major=${major%%.*}
module=helm.sh/helm/v$major/cmd/helm

# Build into a scratch bin and move it into place, so an interrupted build
# never leaves a half-written binary that the check above would accept.
mkdir -p "$DIR"
partial=$(mktemp -d "$DIR/.partial.XXXXXX")
trap 'rm -rf "$partial"' EXIT
log "building $module@$HELM_VERSION (a few minutes on first use)"
start=$(date +%s)
GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$partial" \
  go install -trimpath -ldflags "-s -w" "$module@$HELM_VERSION" >&2
mkdir -p "$DIR/bin"
mv -f "$partial/helm" "$BIN"
log "built in $(( $(date +%s) - start ))s: $("$BIN" version --short)"
echo "$BIN"
