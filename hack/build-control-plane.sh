#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from their Go
# modules and caches them outside the repository. Prints the bin directory.
#
# Why wrapper modules: k8s.io/kubernetes and etcd's server module both carry
# `replace` lines that point into their own source trees (./staging, ../api),
# so `go install module@version` refuses them. A tiny module that requires the
# top module and pins every replaced module to its published tag builds the
# same code.
#
# The cache key is the versions, the Go version and a hash of this script, so a
# change to how we build never reuses stale binaries.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.14}
# staging modules are tagged v0.<minor>.<patch>
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
CACHE_ROOT=${TEAMACCESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teamaccess}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
GO_VERSION=$(go env GOVERSION)
SCRIPT_HASH=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_${GO_VERSION}_${SCRIPT_HASH}"
BIN="$CACHE_ROOT/$KEY/bin"

want=(kube-apiserver kube-controller-manager kubectl etcd)
have_all() { for b in "${want[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }

if have_all; then
  echo "$BIN"
  exit 0
fi

log() { echo "[build-control-plane] $*" >&2; }
work=$(mktemp -d "$CACHE_ROOT/.build.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE_ROOT"; mktemp -d "$CACHE_ROOT/.build.XXXXXX"; })
trap 'rm -rf "$work"' EXIT
mkdir -p "$BIN.partial"

# Writes a wrapper go.mod in $1 for module $2@$3; every `replace X => ./path`
# or `=> ../path` of the upstream go.mod becomes `replace X => X <tag>`, with
# the tag given by the function named in $4.
wrapper() {
  local dir=$1 mod=$2 ver=$3 tagfn=$4
  mkdir -p "$dir"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "$mod@$ver" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module teamaccess.dev/hack/$(basename "$dir")"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//').0"
    echo
    echo "require $mod $ver"
    echo
    # replace lines, alone or inside a replace ( ... ) block
    sed -n 's/^[[:space:]]*\(replace[[:space:]]\+\)\?\([^[:space:]]\+\)[[:space:]]\+=>[[:space:]]\+\.\{1,2\}\/.*/\2/p' "$gomod" |
      while read -r m; do
        local t
        t=$($tagfn "$m") || continue
        echo "replace $m => $m $t"
      done
  } >"$dir/go.mod"
}
k8s_tag() { echo "$STAGING_VERSION"; }
etcd_tag() { case $1 in go.etcd.io/etcd) return 1 ;; go.etcd.io/tests/*) return 1 ;; *) echo "$ETCD_VERSION" ;; esac; }

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

start=$(date +%s)
log "kubernetes $K8S_VERSION: resolving modules"
wrapper "$work/k8s" k8s.io/kubernetes "$K8S_VERSION" k8s_tag
cat >"$work/k8s/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
(cd "$work/k8s" && { go mod tidy >&2 || GOSUMDB=off go mod tidy >&2; })
for c in kube-apiserver kube-controller-manager kubectl; do
  log "building $c"
  (cd "$work/k8s" && go build -trimpath -ldflags "$ldflags" -o "$BIN.partial/$c" "k8s.io/kubernetes/cmd/$c")
done

log "etcd $ETCD_VERSION: resolving modules"
wrapper "$work/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" etcd_tag
cat >"$work/etcd/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
(cd "$work/etcd" && { go mod tidy >&2 || GOSUMDB=off go mod tidy >&2; })
log "building etcd"
(cd "$work/etcd" && go build -trimpath -ldflags "-s -w" -o "$BIN.partial/etcd" go.etcd.io/etcd/server/v3)

rm -rf "$BIN" && mv "$BIN.partial" "$BIN"
log "built in $(($(date +%s) - start))s into $BIN"
echo "$BIN"
