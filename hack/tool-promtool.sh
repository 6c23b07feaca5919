#!/usr/bin/env bash
# Prints the path of promtool (Prometheus's rule checker and rule unit-test
# runner), building it once into the tool cache. Used by `make test`
# (TEAMACCESS_PROMTOOL) for config/prometheus/.
set -euo pipefail
PROMTOOL_VERSION=${PROMTOOL_VERSION:-v0.316.0}
exec "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh" promtool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION"
