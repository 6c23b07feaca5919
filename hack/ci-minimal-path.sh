#!/usr/bin/env bash
# Runs a command with a PATH that holds only what a fresh Debian/Ubuntu machine
# with Rust and Go has, so a script or Makefile that relies on a tool it does
# not install itself fails here, as it would for a new contributor:
#
#   hack/ci-minimal-path.sh make test
#
# The PATH is one temp directory of symlinks:
# - base system: bash, sh, coreutils, grep, sed, awk, findutils, tar, gzip,
#   make, procps and a few util-linux commands;
# - build toolchains: cargo/rustc (rustup proxies), go, and the C linker
#   that rustc calls (cc, ld);
# - commands our scripts install with apt-get when missing (openssl; podman,
#   runc, curl, file for `make image-test`): linked
#   by their standard path even while absent. A dangling link does not count
#   as a command, so the script sees the command missing, installs it, and
#   the link then works.
# Nothing else: no kubectl, helm, lua, promtool, jq, curl.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

farm=$(mktemp -d "${TMPDIR:-/tmp}/teamaccess-minpath.XXXXXX")
trap 'rm -rf "$farm"' EXIT
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

link() { # name, found on the caller's PATH and then the system's
  local name=$1 target
  # type -P: the file on PATH, also for names that are shell builtins (kill,
  # echo), since programs other than bash run the file
  target=$(PATH="$PATH:$sys_path" type -P "$name" 2>/dev/null) || return 0
  ln -sf "$target" "$farm/$name"
}

base=(bash sh grep egrep fgrep sed awk find xargs tar gzip gunzip zcat make
  ps pgrep kill flock setsid getopt hostname mount which)
# every command of coreutils, from its package file list where dpkg has one
if command -v dpkg >/dev/null 2>&1 && dpkg -L coreutils >/dev/null 2>&1; then
  mapfile -t coreutils < <(dpkg -L coreutils | grep -E '^/(usr/)?s?bin/[^/]+$' | xargs -n1 basename)
else
  coreutils=(base64 basename cat chmod chown cp cut date dd df dirname du echo env
    expr false head id install ln ls mkdir mktemp mv nproc od printf pwd readlink
    realpath rm rmdir seq sha256sum sleep sort stat tail tee test timeout touch tr
    true uname uniq wc yes)
fi
toolchain=(cargo rustc rustdoc rustup cargo-clippy clippy-driver rustfmt cargo-fmt
  go gofmt cc gcc c++ g++ ld ld.bfd as ar ranlib strip pkg-config)
for name in "${base[@]}" "${coreutils[@]}" "${toolchain[@]}"; do link "$name"; done

# installed by our scripts when missing (hack/ensure-commands.sh), at the
# path their Debian package puts them
for path in /usr/bin/openssl /usr/bin/podman /usr/sbin/runc /usr/bin/curl /usr/bin/file; do
  name=${path##*/}
  [ -e "$farm/$name" ] || ln -s "$path" "$farm/$name"
done

echo "[ci-minimal-path] PATH=$farm ($(ls "$farm" | wc -l) commands)" >&2
# not exec: the EXIT trap removes the farm afterwards
rc=0
PATH=$farm "$@" || rc=$?
exit "$rc"
