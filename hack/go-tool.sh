#!/usr/bin/env bash
# Builds one Go command with `go install PACKAGE@VERSION` into a versioned cache
# outside the repository and prints the binary's absolute path on stdout.
# Idempotent: a binary already in the cache is reused without touching the
# network. Shared by hack/tool-*.sh.
#
#   hack/go-tool.sh NAME PACKAGE VERSION
#
# Cache: ${TEAMACCESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teamaccess}/tools/NAME-VERSION/bin/NAME
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 NAME PACKAGE VERSION" >&2; exit 2; }
name=$1 pkg=$2 version=$3
CACHE_ROOT=${TEAMACCESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teamaccess}
dir="$CACHE_ROOT/tools/$name-$version"
bin="$dir/bin/$name"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "[$name] needs Go (https://go.dev/dl/) to build $pkg@$version" >&2; exit 1; }
echo "[$name] building $pkg@$version into $dir (once; cached afterwards)" >&2
mkdir -p "$CACHE_ROOT/tools"
partial=$(mktemp -d "$CACHE_ROOT/tools/.$name-$version.XXXXXX")
trap 'rm -rf "$partial"' EXIT
GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$partial/bin" go install "$pkg@$version" >&2
[ -x "$partial/bin/$name" ] || { echo "[$name] go install produced no $name binary" >&2; exit 1; }
# A rename is atomic: a concurrent run either sees the whole directory or none.
mkdir -p "$dir"
if [ ! -x "$bin" ]; then
  mv "$partial/bin" "$dir/bin.new.$$" && mv -T "$dir/bin.new.$$" "$dir/bin" 2>/dev/null || rm -rf "$dir/bin.new.$$"
fi
[ -x "$bin" ] || { echo "[$name] $bin missing after build" >&2; exit 1; }
echo "$bin"
