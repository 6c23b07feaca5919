#!/usr/bin/env bash
# `make test-faults`: the fault tests. Each starts a control plane of its own
# in a temporary folder (hack/control-plane.sh) and breaks it on purpose, so
# they run one at a time: two on 2 cores would measure each other. Unlike
# `make test`, no shared control plane is started here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- tools the tests need, installed or built here (not by hand) ---------
# openssl: hack/control-plane.sh makes the control plane's certificates.
hack/ensure-commands.sh openssl
# the control plane binaries, built once into the tool cache
hack/build-control-plane.sh >/dev/null
# --- end of tools ---------------------------------------------------------

t0=$SECONDS
# failpoints: test-only pauses in the write path (see Cargo.toml)
cargo test --test faults --features failpoints "$@" -- --test-threads=1
echo "fault tests passed in $((SECONDS - t0))s" >&2
