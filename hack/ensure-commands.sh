#!/usr/bin/env bash
# Makes sure each named command exists, installing its Debian/Ubuntu package
# with apt-get when it is missing (as root, or through sudo).
#
#   hack/ensure-commands.sh COMMAND[:PACKAGE]...    e.g. openssl  or  lua:lua5.1
set -euo pipefail
# apt-get and dpkg run with the system PATH, whatever PATH the caller has
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "[ensure-commands] $*" >&2; }
missing=()
for want in "$@"; do
  cmd=${want%%:*} pkg=${want#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! PATH=$sys_path command -v apt-get >/dev/null 2>&1; then
  log "missing: ${missing[*]}; install them with your package manager"; exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { log "missing: ${missing[*]}; run as root or install them"; exit 1; }
  sudo=(sudo)
fi
log "installing ${missing[*]} with apt-get"
"${sudo[@]}" env PATH="$sys_path" DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
"${sudo[@]}" env PATH="$sys_path" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
