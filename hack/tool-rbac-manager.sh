#!/usr/bin/env bash
# Builds FairwindsOps rbac-manager, the peer `make bench` measures against,
# from the source tarball kept beside the repository (its module is not on the
# Go module proxy; its dependencies are). Caches the binary and its CRD
# outside the repository, keyed by version; prints the binary's absolute path
# on stdout (logs go to stderr). The CRD sits beside it as 2_crd.yaml.
#
#   RBAC_MANAGER_VERSION=v1.9.5 hack/tool-rbac-manager.sh
#
# Source: ${RBAC_MANAGER_SRC:-../shared/peers/rbac-manager-$VERSION-src.tar.gz}
# (relative to the repository root). Its code is never copied into the repository.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION=${RBAC_MANAGER_VERSION:-v1.9.5}
SRC=${RBAC_MANAGER_SRC:-../shared/peers/rbac-manager-$VERSION-src.tar.gz}
CACHE_ROOT=${TEAMACCESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teamaccess}
DIR="$CACHE_ROOT/tools/rbac-manager-$VERSION"
BIN="$DIR/bin/rbac-manager"
log() { echo "[tool-rbac-manager] $*" >&2; }

if [ -x "$BIN" ] && [ -s "$DIR/bin/2_crd.yaml" ]; then
  echo "$BIN"
  exit 0
fi

[ -f "$SRC" ] || { log "source tarball $SRC not found (set RBAC_MANAGER_SRC)"; exit 1; }
command -v go >/dev/null || { log "needs Go (https://go.dev/dl/) to build rbac-manager $VERSION"; exit 1; }

mkdir -p "$DIR"
# Extract and build in scratch folders and move the result into place, so an
# interrupted build never leaves a half-written binary that the check above accepts.
work=$(mktemp -d "${TMPDIR:-/tmp}/rbac-manager-src.XXXXXX")
partial=$(mktemp -d "$DIR/.partial.XXXXXX")
trap 'rm -rf "$work" "$partial"' EXIT
tar -xzf "$SRC" -C "$work"
src=$(find "$work" -mindepth 2 -maxdepth 2 -name go.mod -printf '%h\n' | head -1)
[ -n "$src" ] && [ -f "$src/deploy/2_crd.yaml" ] || { log "$SRC holds no go.mod with deploy/2_crd.yaml beside it"; exit 1; }

log "building rbac-manager $VERSION from $SRC (a few minutes on first use)"
start=$(date +%s)
(cd "$src" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod \
  go build -trimpath -ldflags "-s -w" -o "$partial/rbac-manager" ./cmd/manager) >&2
cp "$src/deploy/2_crd.yaml" "$partial/2_crd.yaml"
rm -rf "$DIR/bin"
mv -T "$partial" "$DIR/bin"
log "built in $(( $(date +%s) - start ))s"
echo "$BIN"
