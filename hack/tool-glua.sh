#!/usr/bin/env bash
# Prints the path of glua, the command-line interpreter of gopher-lua: the Lua
# (5.1 semantics) that Argo CD runs resource health checks in. Built once into
# the tool cache. Used by `make test` (TEAMACCESS_GLUA) for config/gitops/.
set -euo pipefail
GLUA_VERSION=${GLUA_VERSION:-v1.1.2}
exec "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh" glua github.com/yuin/gopher-lua/cmd/glua "$GLUA_VERSION"
